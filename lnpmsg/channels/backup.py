"""Static channel backups (sans-IO): what a node that lost its data dir needs to get its channel
balances back, and the channel state a restore starts from.

A channel's secrets come from the node's channel seed (``<channels>/channel_seed``) and the
channel's key (:func:`~.manager.channel_secrets`), so with the seed, the key and the static
facts of the channel -- the peer and where it listens, the channel and funding ids, the amount,
the channel type, who funded, the peer's basepoints and funding key, both sides' to_self_delay
and dust limit -- the node recognises the peer's commitment on chain and sweeps its own output
(option_static_remotekey: our to_remote pays our fixed payment basepoint). Nothing else of the
channel's history is needed, and nothing in the backup is secret. Each channel also names the
peer's ``alias`` (from its ``node_announcement`` in the gossip when the backup was made, up to 32
characters; none for a peer that announces nothing): shown, so a user restoring can tell peers
apart, never used to restore. The JSON's optional fields (``short_channel_id``,
``funding_key_index``, ``alias``) keep the format at version 1: a reader takes the fields it knows,
so older backups read here and these read in older versions. The backup a peer keeps for us
(:func:`encode_padded`, BOLT 1's 65531 bytes) carries no alias: each one would cut how many
channels fit, for a name gossip tells again.

The file is still encrypted (it tells who we have channels with, and how large they are):
``MAGIC || nonce (12) || ChaCha20-Poly1305(JSON)`` with the key
``HMAC-SHA256(channel seed, "lnpmsg channel backup v1")`` and ``MAGIC`` as associated data.
Only a node with the same channel seed reads it; a damaged or foreign file is a
:class:`BackupError` that says so.

A restored channel is :data:`~.state.Phase.FAILED`, ``behind`` (we know none of its
commitments: nothing of ours may ever be broadcast) and ``restored``: the channel app asks the
peer to close (:func:`close_request`), and the channel monitor resolves the peer's commitment as
one newer than anything it knows (``theirs_unknown``: our to_remote only).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.wire import Error, Features, ShortChannelId

from .errors import ChannelError
from .keys import ChannelBasepoints
from .messages import ChannelReestablish
from .params import ANCHORS_BIT, STATIC_REMOTEKEY_BIT, ChannelConfig, PeerParams

__all__ = ["BACKUP_FILE", "PEER_BLOB_SIZE", "BackupEntry", "BackupError", "close_request", "decode_backup", "encode_backup",
           "encode_padded", "entry_of", "restored_state", "view"]  # fmt: skip

#: the backup the channel app keeps, in its directory (rewritten whenever the set of channels changes)
BACKUP_FILE = "channels.backup"
MAGIC = b"LNPMSG-SCB\x01"
_NONCE = 12
_KEY_INFO = b"lnpmsg channel backup v1"
#: BOLT 1: a ``peer_storage`` blob has at most 65531 bytes, and SHOULD have exactly that many
PEER_BLOB_SIZE = 65531
#: the most channels one backup may hold (a bigger file is not one of ours)
MAX_CHANNELS = 100_000
#: the longest alias an entry may name (a node_announcement's 32 bytes, as text)
MAX_ALIAS = 32
_BASEPOINTS = ("funding_pubkey", "revocation_basepoint", "payment_basepoint", "delayed_payment_basepoint", "htlc_basepoint")


class BackupError(ChannelError):
    """A backup that cannot be read: not one, damaged, or made by a node with another channel seed."""


@dataclass(frozen=True, slots=True)
class BackupEntry:
    """One channel's static facts (see the module docs)."""

    key: str
    peer_id: bytes
    addresses: tuple[str, ...]
    channel_id: bytes
    funding_outpoint: OutPoint
    funding_sat: int
    anchors: bool
    funder: bool
    remote_basepoints: ChannelBasepoints
    #: the delay the peer imposes on our to_local, and the one we impose on the peer's
    remote_to_self_delay: int
    local_to_self_delay: int
    remote_dust_limit_sat: int
    local_dust_limit_sat: int
    short_channel_id: int = 0
    #: which of our funding keys the funding uses (each splice takes the next one; 0 in older backups)
    funding_key_index: int = 0
    #: the peer's alias in the gossip when the backup was made ("": none known; shown only)
    alias: str = ""

    def to_json(self) -> dict[str, Any]:
        named = {"alias": self.alias} if self.alias else {}
        return {
            "key": self.key, "peer_id": self.peer_id.hex(), "addresses": list(self.addresses),
            "channel_id": self.channel_id.hex(), "funding_txid": self.funding_outpoint.txid[::-1].hex(),
            "funding_vout": self.funding_outpoint.vout, "funding_sat": self.funding_sat,
            "channel_type": "anchors" if self.anchors else "static_remotekey", "funder": self.funder,
            "peer": {name: getattr(self.remote_basepoints, name).hex() for name in _BASEPOINTS}
            | {"to_self_delay": self.remote_to_self_delay, "dust_limit_sat": self.remote_dust_limit_sat},
            "ours": {"to_self_delay": self.local_to_self_delay, "dust_limit_sat": self.local_dust_limit_sat},
            "short_channel_id": self.short_channel_id, "funding_key_index": self.funding_key_index,
        } | named  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackupEntry:
        peer, ours = d["peer"], d["ours"]
        entry = cls(
            key=str(d["key"]), peer_id=bytes.fromhex(d["peer_id"]), addresses=tuple(str(a) for a in d["addresses"]),
            channel_id=bytes.fromhex(d["channel_id"]),
            funding_outpoint=OutPoint(bytes.fromhex(d["funding_txid"])[::-1], int(d["funding_vout"])),
            funding_sat=int(d["funding_sat"]), anchors={"anchors": True, "static_remotekey": False}[d["channel_type"]],
            funder=bool(d["funder"]),
            remote_basepoints=ChannelBasepoints(*(bytes.fromhex(peer[name]) for name in _BASEPOINTS)),
            remote_to_self_delay=int(peer["to_self_delay"]), local_to_self_delay=int(ours["to_self_delay"]),
            remote_dust_limit_sat=int(peer["dust_limit_sat"]), local_dust_limit_sat=int(ours["dust_limit_sat"]),
            short_channel_id=int(d.get("short_channel_id", 0)), funding_key_index=int(d.get("funding_key_index", 0)),
            alias=d.get("alias", ""),
        )  # fmt: skip
        if not isinstance(entry.alias, str) or len(entry.alias) > MAX_ALIAS:
            raise ValueError(f"a peer's alias is text of at most {MAX_ALIAS} characters, got {entry.alias!r}")
        if len(entry.peer_id) != 33 or len(entry.channel_id) != 32 or entry.funding_sat <= 0:
            raise ValueError("a peer id has 33 bytes, a channel id 32, and the funding is positive")
        # the store knows a channel's peer from its key (<peer id>-<16 hex digits>)
        peer_hex, _, suffix = entry.key.partition("-")
        if peer_hex != entry.peer_id.hex() or len(suffix) != 16 or not set(suffix) <= set("0123456789abcdef"):
            raise ValueError(f"channel key {entry.key!r} is not <peer id>-<16 hex digits>")
        return entry


def entry_of(key: str, peer_id: bytes, state: Any, addresses: tuple[str, ...], alias: str = "") -> BackupEntry | None:
    """The backup of a channel state (None: no funding yet, or nothing left to recover); ``alias``: the
    peer's in the gossip (cut to :data:`MAX_ALIAS` characters)."""
    s = state
    if s.funding_outpoint is None or s.remote is None or not s.channel_id:
        return None
    return BackupEntry(
        key=key, peer_id=peer_id, addresses=addresses, channel_id=s.channel_id, funding_outpoint=s.funding_outpoint,
        funding_sat=s.funding_sat, anchors=s.anchors, funder=s.funder, remote_basepoints=s.remote.basepoints,
        remote_to_self_delay=s.remote.to_self_delay, local_to_self_delay=s.config.to_self_delay,
        remote_dust_limit_sat=s.remote.dust_limit_sat, local_dust_limit_sat=s.config.dust_limit_sat,
        short_channel_id=s.short_channel_id, funding_key_index=s.funding_key_index, alias=alias[:MAX_ALIAS],
    )  # fmt: skip


def view(entry: BackupEntry) -> dict[str, Any]:
    """What a listing of a backup shows of one channel: which it is, with whom (the peer's alias), how large."""
    return {"channel_id": entry.channel_id.hex(), "peer_id": entry.peer_id.hex(), "alias": entry.alias or None,
            "funding_outpoint": f"{entry.funding_outpoint.txid[::-1].hex()}:{entry.funding_outpoint.vout}",
            "capacity_sat": entry.funding_sat, "short_channel_id": str(ShortChannelId.from_int(entry.short_channel_id)) if entry.short_channel_id else None,
            "addresses": list(entry.addresses)}  # fmt: skip


def _key(seed: bytes) -> bytes:
    return hmac.new(seed, _KEY_INFO, hashlib.sha256).digest()


def encode_backup(entries: list[BackupEntry], seed: bytes, nonce: bytes) -> bytes:
    """The encrypted backup file of ``entries``; ``nonce``: 12 random bytes, new for each file."""
    if len(nonce) != _NONCE:
        raise ValueError(f"the nonce has {_NONCE} bytes")
    plain = json.dumps({"version": 1, "channels": [e.to_json() for e in entries]}, separators=(",", ":")).encode()
    return MAGIC + nonce + ChaCha20Poly1305(_key(seed)).encrypt(nonce, plain, MAGIC)


def encode_padded(entries: list[BackupEntry], seed: bytes, nonce: bytes, size: int = PEER_BLOB_SIZE) -> tuple[bytes, int]:
    """The backup of as many of ``entries`` as fit (in their order: the caller puts first those it
    needs most) in exactly ``size`` bytes, and how many went in.

    The padding is JSON whitespace inside the encrypted text, so the blob's size tells nothing about
    how many channels it holds, and :func:`decode_backup` reads it as any backup. The peers' aliases
    are left out (see the module docs): the room is for channels.
    """
    if len(nonce) != _NONCE:
        raise ValueError(f"the nonce has {_NONCE} bytes")
    room = size - len(MAGIC) - _NONCE - 16
    parts = [json.dumps(replace(e, alias="").to_json(), separators=(",", ":")).encode() for e in entries]
    head, tail = b'{"version":1,"channels":[', b"]}"
    count, used = 0, len(head) + len(tail)
    for part in parts:
        if used + len(part) + (1 if count else 0) > room:
            break
        used += len(part) + (1 if count else 0)
        count += 1
    if used > room:
        raise ValueError(f"a backup does not fit in {size} bytes")
    plain = head + b",".join(parts[:count]) + tail
    plain += b" " * (room - len(plain))
    return MAGIC + nonce + ChaCha20Poly1305(_key(seed)).encrypt(nonce, plain, MAGIC), count


def decode_backup(data: bytes, seed: bytes) -> list[BackupEntry]:
    """The channels of a backup file; :class:`BackupError` with the reason when it is not readable."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _NONCE + 16:
        raise BackupError("not an lnpmsg channel backup (it does not start with the backup's magic bytes)")
    nonce, sealed = data[len(MAGIC) : len(MAGIC) + _NONCE], data[len(MAGIC) + _NONCE :]
    try:
        plain = ChaCha20Poly1305(_key(seed)).decrypt(nonce, sealed, MAGIC)
    except InvalidTag:
        raise BackupError("the backup does not decrypt with this node's channel seed: "
                          "it was made by a node with another seed, or it is damaged") from None  # fmt: skip
    try:
        doc = json.loads(plain)
        if doc.get("version") != 1:
            raise ValueError(f"unknown backup version {doc.get('version')!r}")
        raw = doc["channels"]
        if not isinstance(raw, list) or len(raw) > MAX_CHANNELS:
            raise ValueError("no list of channels")
        entries = [BackupEntry.from_json(d) for d in raw]
        if len({e.key for e in entries}) != len(entries) or len({e.channel_id for e in entries}) != len(entries):
            raise ValueError("a channel is in it twice")
        return entries
    except (ValueError, KeyError, TypeError, AttributeError, ChannelError, BitcoinError) as exc:
        raise BackupError(f"the backup decrypts but its contents are invalid: {exc}") from None


def restored_state(entry: BackupEntry) -> Any:
    """The state of a channel restored from ``entry``: failed, behind, restored (see the module docs).

    Only what the monitor's :class:`~.monitor.updates.ChannelSetup` needs is real; the peer's
    other limits are zero (never used: the channel never signs or builds a commitment again).
    """
    from .state import ChannelState, Phase

    bits = [STATIC_REMOTEKEY_BIT, ANCHORS_BIT] if entry.anchors else [STATIC_REMOTEKEY_BIT]
    remote = PeerParams(
        dust_limit_sat=entry.remote_dust_limit_sat, max_htlc_value_in_flight_msat=0, channel_reserve_sat=0,
        htlc_minimum_msat=0, to_self_delay=entry.remote_to_self_delay, max_accepted_htlcs=0,
        basepoints=entry.remote_basepoints,
        first_per_commitment_point=entry.remote_basepoints.payment_basepoint,  # not known; never used
    )  # fmt: skip
    return ChannelState(
        phase=Phase.FAILED, funder=entry.funder, channel_id=entry.channel_id,
        config=ChannelConfig(dust_limit_sat=entry.local_dust_limit_sat, to_self_delay=entry.local_to_self_delay),
        anchors=entry.anchors, channel_type=Features.from_bits(bits).to_bytes(), remote=remote,
        funding_sat=entry.funding_sat, funding_outpoint=entry.funding_outpoint,
        short_channel_id=entry.short_channel_id, funding_key_index=entry.funding_key_index, connected=False, behind=True, restored=True,
        failure="restored from a channel backup: waiting for the peer's commitment",
    )  # fmt: skip


def close_request(channel_id: bytes, our_point: bytes) -> tuple[ChannelReestablish, Error]:
    """What asks the peer to close a restored channel with its commitment.

    A ``channel_reestablish`` with ``next_commitment_number`` 0 (BOLT 2: not one more than the
    last ``commitment_signed`` the peer sent, so the peer "SHOULD send an error and fail the
    channel"), ``next_revocation_number`` 0 and a zero secret (what BOLT 2 asks of a node that
    received no revocation: the peer's data-loss check passes and it gets to the commitment
    number), as Electrum's ``request_force_close`` does; then an ``error`` for the channel
    (BOLT 1: its receiver MUST fail the channel) for a peer that did not take the first as a
    reason to close (one that was not waiting for a ``channel_reestablish``).
    """
    reestablish = ChannelReestablish(
        channel_id=channel_id, next_commitment_number=0, next_revocation_number=0,
        your_last_per_commitment_secret=bytes(32), my_current_per_commitment_point=our_point,
    )  # fmt: skip
    error = Error(channel_id=channel_id, data=b"restored from a static channel backup: please close with your commitment")
    return reestablish, error
