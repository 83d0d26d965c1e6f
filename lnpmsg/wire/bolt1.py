"""The BOLT-1 messages: init, error, warning, ping, pong, peer storage.

All are registered in :data:`~lnpmsg.wire.message.DEFAULT_REGISTRY`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.wire.addresses import Address, address
from lnpmsg.wire.features import Features
from lnpmsg.wire.fields import array_of, chain_hash, channel_id, u16, u16_prefixed_bytes
from lnpmsg.wire.message import DEFAULT_REGISTRY, MAX_MESSAGE_SIZE, Message, message
from lnpmsg.wire.tlv import EMPTY_TLV_STREAM, TlvSchema, TlvStream

__all__ = [
    "CHAIN_HASHES",
    "CHAIN_HASH_MAINNET",
    "CHAIN_HASH_REGTEST",
    "CHAIN_HASH_SIGNET",
    "CHAIN_HASH_TESTNET",
    "CHAIN_HASH_TESTNET4",
    "INIT_TLVS",
    "MAX_MESSAGE_SIZE",
    "MAX_PEER_STORAGE_BYTES",
    "PING_MAX_PONG_BYTES",
    "ZERO_CHANNEL_ID",
    "Error",
    "Init",
    "PeerStorage",
    "PeerStorageRetrieval",
    "Ping",
    "Pong",
    "WarningMessage",
]

#: A ping asking for more pong bytes than this gets no reply: a pong of 65532
#: bytes of ``ignored`` would not fit a message (2 type + 2 length + 65531).
PING_MAX_PONG_BYTES = 65531
#: peer_storage blobs fit a message the same way.
MAX_PEER_STORAGE_BYTES = 65531
#: An error or warning about all channels (the connection) has this channel id.
ZERO_CHANNEL_ID = bytes(32)

# Chain hashes are the genesis block hashes in the byte order of the block
# header (the reverse of how block explorers print them).
CHAIN_HASH_MAINNET = bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000")
CHAIN_HASH_TESTNET = bytes.fromhex("43497fd7f826957108f4a30fd9cec3aeba79972084e90ead01ea330900000000")
CHAIN_HASH_TESTNET4 = bytes.fromhex("43f08bdab050e35b567c864b91f47f50ae725ae2de53bcfbbaf284da00000000")
CHAIN_HASH_SIGNET = bytes.fromhex("f61eee3b63a380a477a063af32b2bbc97c9ff9f01f2c4225e973988108000000")
CHAIN_HASH_REGTEST = bytes.fromhex("06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f")

#: By network name (``bitcoin`` and ``mainnet`` are the same chain).
CHAIN_HASHES: dict[str, bytes] = {
    "bitcoin": CHAIN_HASH_MAINNET,
    "mainnet": CHAIN_HASH_MAINNET,
    "testnet": CHAIN_HASH_TESTNET,
    "testnet4": CHAIN_HASH_TESTNET4,
    "signet": CHAIN_HASH_SIGNET,
    "regtest": CHAIN_HASH_REGTEST,
}

INIT_TLVS = TlvSchema(
    {
        1: ("networks", array_of(chain_hash)),
        3: ("remote_addr", address),
    },
    name="init_tlvs",
)


@DEFAULT_REGISTRY.register
@message(type=16, tlvs=INIT_TLVS)
@dataclass(frozen=True, slots=True)
class Init(Message):
    """The first message on every connection: features, and optionally chains and the address we saw."""

    FIELDS = (("globalfeatures", u16_prefixed_bytes), ("features", u16_prefixed_bytes))
    globalfeatures: bytes = b""
    features: bytes = b""
    tlvs: TlvStream = EMPTY_TLV_STREAM

    @property
    def all_features(self) -> Features:
        """``globalfeatures | features``, as BOLT 1 says a reader must combine them."""
        return Features.from_bytes(self.globalfeatures) | Features.from_bytes(self.features)

    @property
    def networks(self) -> tuple[bytes, ...] | None:
        """The chain hashes the peer is interested in, or None when it did not say."""
        return self.tlvs.get("networks")  # type: ignore[no-any-return]

    @property
    def remote_addr(self) -> Address | None:
        """The address the peer saw us connect from, if it told us."""
        return self.tlvs.get("remote_addr")  # type: ignore[no-any-return]


@DEFAULT_REGISTRY.register
@message(type=17)
@dataclass(frozen=True, slots=True)
class Error(Message):
    """Fails the channel ``channel_id`` (all channels when it is all zero)."""

    FIELDS = (("channel_id", channel_id), ("data", u16_prefixed_bytes))
    channel_id: bytes
    data: bytes = b""

    @property
    def all_channels(self) -> bool:
        return self.channel_id == ZERO_CHANNEL_ID


@DEFAULT_REGISTRY.register
@message(type=1)
@dataclass(frozen=True, slots=True)
class WarningMessage(Message):
    """BOLT-1 ``warning``: something is wrong, but nothing is failed."""

    FIELDS = (("channel_id", channel_id), ("data", u16_prefixed_bytes))
    channel_id: bytes
    data: bytes = b""

    @property
    def all_channels(self) -> bool:
        return self.channel_id == ZERO_CHANNEL_ID


@DEFAULT_REGISTRY.register
@message(type=18)
@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Asks for a pong of ``num_pong_bytes`` zero bytes (none if more than :data:`PING_MAX_PONG_BYTES`)."""

    FIELDS = (("num_pong_bytes", u16), ("ignored", u16_prefixed_bytes))
    num_pong_bytes: int
    ignored: bytes = b""

    @property
    def wants_pong(self) -> bool:
        return self.num_pong_bytes <= PING_MAX_PONG_BYTES


@DEFAULT_REGISTRY.register
@message(type=19)
@dataclass(frozen=True, slots=True)
class Pong(Message):
    """The reply to a ping: ``ignored`` is ``num_pong_bytes`` long."""

    FIELDS = (("ignored", u16_prefixed_bytes),)
    ignored: bytes = b""


@DEFAULT_REGISTRY.register
@message(type=7)
@dataclass(frozen=True, slots=True)
class PeerStorage(Message):
    """Asks an ``option_provide_storage`` peer to keep ``blob`` (at most 65531 bytes)."""

    FIELDS = (("blob", u16_prefixed_bytes),)
    blob: bytes


@DEFAULT_REGISTRY.register
@message(type=9)
@dataclass(frozen=True, slots=True)
class PeerStorageRetrieval(Message):
    """Gives back the last ``blob`` a peer stored with us."""

    FIELDS = (("blob", u16_prefixed_bytes),)
    blob: bytes

