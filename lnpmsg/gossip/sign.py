"""Building signed gossip: our own announcements and updates, and test networks.

Signatures are compact (r||s) and low-S (libsecp256k1 only makes those),
over the same digests :mod:`lnpmsg.gossip.verify` checks. Keys are 32-byte
secrets; the signing is deterministic (RFC 6979), so the same inputs give
the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import coincurve

from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.gossip.verify import channel_announcement_digest, signed_digest
from lnpmsg.wire import Address, ShortChannelId, encode_addresses

__all__ = [
    "public_key",
    "sign_channel_announcement",
    "sign_channel_update",
    "sign_digest",
    "sign_node_announcement",
]

_ZERO_SIG = bytes(64)


def public_key(secret: bytes) -> bytes:
    """The 33-byte compressed public key of a 32-byte secret."""
    return coincurve.PrivateKey(secret).public_key.format(compressed=True)


def sign_digest(secret: bytes, digest: bytes) -> bytes:
    """A compact low-S signature of a 32-byte digest."""
    return coincurve.PrivateKey(secret).sign_recoverable(digest, hasher=None)[:64]


def sign_channel_announcement(
    node_secret_a: bytes,
    node_secret_b: bytes,
    bitcoin_secret_a: bytes,
    bitcoin_secret_b: bytes,
    short_channel_id: ShortChannelId,
    chain_hash: bytes,
    *,
    features: bytes = b"",
    node_ids: tuple[bytes, bytes] | None = None,
) -> ChannelAnnouncement:
    """A channel_announcement signed by both nodes and both funding keys.

    The nodes are put in BOLT-7 order (``node_id_1`` the lesser key), each
    with its own funding key. ``node_ids`` may give the two nodes' public
    keys (in the order of the secrets) to save deriving them.
    """
    id_a, id_b = node_ids if node_ids is not None else (public_key(node_secret_a), public_key(node_secret_b))
    pairs = sorted([(id_a, node_secret_a, bitcoin_secret_a), (id_b, node_secret_b, bitcoin_secret_b)])
    (id_1, node_1, btc_1), (id_2, node_2, btc_2) = pairs
    unsigned = ChannelAnnouncement(
        node_signature_1=_ZERO_SIG,
        node_signature_2=_ZERO_SIG,
        bitcoin_signature_1=_ZERO_SIG,
        bitcoin_signature_2=_ZERO_SIG,
        features=features,
        chain_hash=chain_hash,
        short_channel_id=short_channel_id,
        node_id_1=id_1,
        node_id_2=id_2,
        bitcoin_key_1=public_key(btc_1),
        bitcoin_key_2=public_key(btc_2),
    )
    digest = channel_announcement_digest(unsigned.encode())
    return ChannelAnnouncement(
        node_signature_1=sign_digest(node_1, digest),
        node_signature_2=sign_digest(node_2, digest),
        bitcoin_signature_1=sign_digest(btc_1, digest),
        bitcoin_signature_2=sign_digest(btc_2, digest),
        features=features,
        chain_hash=chain_hash,
        short_channel_id=short_channel_id,
        node_id_1=id_1,
        node_id_2=id_2,
        bitcoin_key_1=unsigned.bitcoin_key_1,
        bitcoin_key_2=unsigned.bitcoin_key_2,
    )


def sign_node_announcement(
    node_secret: bytes,
    timestamp: int,
    *,
    alias: str | bytes = b"",
    rgb_color: bytes = b"\x00\x00\x00",
    addresses: Iterable[Address] = (),
    features: bytes = b"",
    node_id: bytes | None = None,
) -> NodeAnnouncement:
    """A node_announcement signed by ``node_secret`` (the alias is padded to 32 bytes)."""
    alias_bytes = alias.encode("utf-8") if isinstance(alias, str) else alias
    if len(alias_bytes) > 32:
        raise ValueError(f"an alias is at most 32 bytes, got {len(alias_bytes)}")
    fields = {
        "features": features,
        "timestamp": timestamp,
        "node_id": node_id if node_id is not None else public_key(node_secret),
        "rgb_color": rgb_color,
        "alias": alias_bytes.ljust(32, b"\x00"),
        "addresses": encode_addresses(addresses),
    }
    digest = signed_digest(NodeAnnouncement(signature=_ZERO_SIG, **fields).encode())  # type: ignore[arg-type]
    return NodeAnnouncement(signature=sign_digest(node_secret, digest), **fields)  # type: ignore[arg-type]


def sign_channel_update(
    node_secret: bytes,
    short_channel_id: ShortChannelId,
    chain_hash: bytes,
    timestamp: int,
    *,
    direction: int,
    disabled: bool = False,
    cltv_expiry_delta: int = 40,
    htlc_minimum_msat: int = 1000,
    htlc_maximum_msat: int = 990_000_000,
    fee_base_msat: int = 1000,
    fee_proportional_millionths: int = 1,
    dont_forward: bool = False,
) -> ChannelUpdate:
    """A channel_update for one direction (0: we are ``node_id_1``), signed by ``node_secret``."""
    fields = {
        "chain_hash": chain_hash,
        "short_channel_id": short_channel_id,
        "timestamp": timestamp,
        "message_flags": 1 | (2 if dont_forward else 0),
        "channel_flags": (direction & 1) | (2 if disabled else 0),
        "cltv_expiry_delta": cltv_expiry_delta,
        "htlc_minimum_msat": htlc_minimum_msat,
        "fee_base_msat": fee_base_msat,
        "fee_proportional_millionths": fee_proportional_millionths,
        "htlc_maximum_msat": htlc_maximum_msat,
    }
    digest = signed_digest(ChannelUpdate(signature=_ZERO_SIG, **fields).encode())  # type: ignore[arg-type]
    return ChannelUpdate(signature=sign_digest(node_secret, digest), **fields)  # type: ignore[arg-type]
