"""Monitor updates: the records a channel gives its monitor (sans-IO), and their bytes.

A channel monitor is fed only by these records (and by blocks), so that it
can run in another process or be streamed to a watchtower: the channel app
writes each update to its log before the message that depends on it leaves,
and a monitor rebuilt from the same updates has the same state.

Records carry public data only. The secrets that sign (basepoint secrets,
the per-commitment seed) are given to the monitor apart, as
:class:`~.signer.MonitorSecrets`: a copy of the update stream alone cannot
spend anything.

Wire format of one update (all integers big-endian)::

    version:u8 (=1)  kind:u8  update_id:u64  payload

Payload fields per kind are listed in ``_SCHEMAS``; variable-length bytes are
``u16 length || bytes``; lists are ``u16 count || items``. A stream is
``u32 length || update`` repeated. Unknown versions and kinds, short or
trailing bytes, and invalid keys raise :class:`MonitorUpdateError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeAlias

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.tx import OutPoint

from ..bolt3 import Htlc
from ..errors import ChannelError
from ..keys import ChannelBasepoints, check_pubkey

__all__ = [
    "MONITOR_UPDATE_VERSION",
    "ChannelSetup",
    "DataLossDetected",
    "LocalCommitment",
    "MonitorUpdate",
    "MonitorUpdateError",
    "PaymentPreimage",
    "RemoteCommitment",
    "RemoteRevocation",
    "UpdateRecord",
    "UpstreamDeadline",
    "decode_stream",
    "decode_update",
    "encode_stream",
    "encode_update",
]

#: The format of every update written today; a decoder refuses others.
MONITOR_UPDATE_VERSION = 1
#: 483 HTLCs each way is BOLT 2's limit: an update never holds more.
MAX_HTLCS = 2 * 483
#: Bounds what one decoded update may allocate (a 966-HTLC commitment is ~70 kB).
MAX_UPDATE_SIZE = 1 << 20


class MonitorUpdateError(ChannelError):
    """An update is malformed, of an unknown version, or does not fit the monitor's state."""


@dataclass(frozen=True, slots=True)
class ChannelSetup:
    """The channel's fixed parameters; the first update of every monitor.

    ``local_to_self_delay`` delays our own outputs (the value the peer asked
    of us); ``remote_to_self_delay`` delays theirs. ``destination_script`` is
    where every sweep pays (a wallet script).
    """

    KIND: ClassVar[int] = 1
    funding_outpoint: OutPoint
    funding_sat: int
    anchors: bool
    local_is_funder: bool
    local_basepoints: ChannelBasepoints
    remote_basepoints: ChannelBasepoints
    local_to_self_delay: int
    remote_to_self_delay: int
    local_dust_limit_sat: int
    remote_dust_limit_sat: int
    obscuring_factor: int
    destination_script: bytes


@dataclass(frozen=True, slots=True)
class LocalCommitment:
    """Our commitment ``commitment_number`` as the peer signed it (``commitment_signed``).

    Balances and ``htlcs`` are from our view (``offered``: we pay);
    ``htlc_signatures`` (64-byte compact) follow the commitment's HTLC
    outputs in transaction order, as BOLT 2 sends them.
    """

    KIND: ClassVar[int] = 2
    commitment_number: int
    to_local_msat: int
    to_remote_msat: int
    feerate_per_kw: int
    htlcs: tuple[Htlc, ...]
    commitment_signature: bytes
    htlc_signatures: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RemoteCommitment:
    """Their commitment ``commitment_number`` as we signed it, at their ``per_commitment_point``.

    Balances and ``htlcs`` are from the *owner's* (their) view: ``to_local``
    is theirs, ``offered`` HTLCs are paid by them.
    """

    KIND: ClassVar[int] = 3
    commitment_number: int
    per_commitment_point: bytes
    to_local_msat: int
    to_remote_msat: int
    feerate_per_kw: int
    htlcs: tuple[Htlc, ...]


@dataclass(frozen=True, slots=True)
class RemoteRevocation:
    """The peer revoked its commitment ``commitment_number`` (``revoke_and_ack``'s secret)."""

    KIND: ClassVar[int] = 4
    commitment_number: int
    per_commitment_secret: bytes


@dataclass(frozen=True, slots=True)
class PaymentPreimage:
    """A payment preimage we know (from the peer, the next hop, or our own invoice)."""

    KIND: ClassVar[int] = 5
    preimage: bytes


@dataclass(frozen=True, slots=True)
class DataLossDetected:
    """``channel_reestablish`` proved we lost state: never broadcast our commitment.

    The peer's latest commitment number and point (option_data_loss_protect)
    let us recognise their commitment; with static_remotekey our ``to_remote``
    needs no point at all.
    """

    KIND: ClassVar[int] = 6
    remote_commitment_number: int
    remote_per_commitment_point: bytes


@dataclass(frozen=True, slots=True)
class UpstreamDeadline:
    """Our offered HTLC ``htlc_id`` forwards an incoming HTLC that expires at ``incoming_cltv_expiry``.

    The monitor asks to go on chain early enough to time the outgoing HTLC
    out before the incoming one can be timed out against us.
    """

    KIND: ClassVar[int] = 7
    htlc_id: int
    incoming_cltv_expiry: int


UpdateRecord: TypeAlias = (
    ChannelSetup | LocalCommitment | RemoteCommitment | RemoteRevocation | PaymentPreimage
    | DataLossDetected | UpstreamDeadline
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MonitorUpdate:
    """One update: its id (consecutive from 0 per channel) and record."""

    update_id: int
    record: UpdateRecord


# -- encoding ------------------------------------------------------------------

_INTS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q"}
_BASEPOINT_FIELDS = ("funding_pubkey", "revocation_basepoint", "payment_basepoint",
                     "delayed_payment_basepoint", "htlc_basepoint")  # fmt: skip

_SCHEMAS: dict[type, tuple[str, ...]] = {
    ChannelSetup: ("outpoint", "u64", "bool", "bool", "basepoints", "basepoints", "u16", "u16", "u64", "u64",
                   "u64", "bytes"),
    LocalCommitment: ("u64", "u64", "u64", "u32", "htlcs", "sig", "sigs"),
    RemoteCommitment: ("u64", "point", "u64", "u64", "u32", "htlcs"),
    RemoteRevocation: ("u64", "b32"),
    PaymentPreimage: ("b32",),
    DataLossDetected: ("u64", "point"),
    UpstreamDeadline: ("u64", "u32"),
}  # fmt: skip
_BY_KIND: dict[int, type] = {cls.KIND: cls for cls in _SCHEMAS}  # type: ignore[attr-defined]


def _put(kind: str, value: Any, out: list[bytes]) -> None:
    if kind in _INTS:
        try:
            out.append(struct.pack(">" + _INTS[kind], value))
        except struct.error as exc:
            raise MonitorUpdateError(f"{value!r} does not fit a {kind}") from exc
    elif kind == "bool":
        out.append(b"\x01" if value else b"\x00")
    elif kind == "bytes":
        _put("u16", len(value), out)
        out.append(bytes(value))
    elif kind in ("b32", "sig", "point"):
        size = {"b32": 32, "sig": 64, "point": 33}[kind]
        if len(value) != size:
            raise MonitorUpdateError(f"a {kind} is {size} bytes, got {len(value)}")
        out.append(bytes(value))
    elif kind == "outpoint":
        out.append(value.txid + struct.pack(">I", value.vout))
    elif kind == "basepoints":
        for name in _BASEPOINT_FIELDS:
            _put("point", getattr(value, name), out)
    elif kind == "htlcs":
        if len(value) > MAX_HTLCS:
            raise MonitorUpdateError(f"{len(value)} HTLCs exceed BOLT 2's {MAX_HTLCS}")
        _put("u16", len(value), out)
        for htlc in value:
            out.append(struct.pack(">QBQ", htlc.htlc_id, int(htlc.offered), htlc.amount_msat))
            out.append(htlc.payment_hash + struct.pack(">I", htlc.cltv_expiry))
    elif kind == "sigs":
        if len(value) > MAX_HTLCS:
            raise MonitorUpdateError(f"{len(value)} HTLC signatures exceed BOLT 2's {MAX_HTLCS}")
        _put("u16", len(value), out)
        for sig in value:
            _put("sig", sig, out)
    else:  # pragma: no cover - the schemas above name only these kinds
        raise AssertionError(kind)


class _Cursor:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MonitorUpdateError("truncated monitor update")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, kind: str) -> int:
        fmt = ">" + _INTS[kind]
        return int(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])


def _get(kind: str, cur: _Cursor) -> Any:
    if kind in _INTS:
        return cur.int(kind)
    if kind == "bool":
        flag = cur.take(1)[0]
        if flag > 1:
            raise MonitorUpdateError(f"a bool is 0 or 1, got {flag}")
        return bool(flag)
    if kind == "bytes":
        return cur.take(cur.int("u16"))
    if kind == "b32":
        return cur.take(32)
    if kind == "sig":
        return cur.take(64)
    if kind == "point":
        return check_pubkey(cur.take(33))
    if kind == "outpoint":
        return OutPoint(cur.take(32), cur.int("u32"))
    if kind == "basepoints":
        return ChannelBasepoints(*(_get("point", cur) for _ in _BASEPOINT_FIELDS))
    if kind == "htlcs":
        count = cur.int("u16")
        if count > MAX_HTLCS:
            raise MonitorUpdateError(f"{count} HTLCs exceed BOLT 2's {MAX_HTLCS}")
        htlcs = []
        for _ in range(count):
            htlc_id, offered, amount = struct.unpack(">QBQ", cur.take(17))
            if offered > 1:
                raise MonitorUpdateError(f"an HTLC's direction is 0 or 1, got {offered}")
            htlcs.append(Htlc(htlc_id, bool(offered), amount, cur.take(32), cur.int("u32")))
        return tuple(htlcs)
    if kind == "sigs":
        count = cur.int("u16")
        if count > MAX_HTLCS:
            raise MonitorUpdateError(f"{count} HTLC signatures exceed BOLT 2's {MAX_HTLCS}")
        return tuple(cur.take(64) for _ in range(count))
    raise AssertionError(kind)  # pragma: no cover


def encode_update(update: MonitorUpdate) -> bytes:
    """The bytes of ``update`` (see the module docstring)."""
    record = update.record
    schema = _SCHEMAS.get(type(record))
    if schema is None:
        raise MonitorUpdateError(f"not a monitor record: {type(record).__name__}")
    out = [struct.pack(">BB", MONITOR_UPDATE_VERSION, type(record).KIND)]
    _put("u64", update.update_id, out)
    for kind, field in zip(schema, fields(record), strict=True):
        _put(kind, getattr(record, field.name), out)
    return b"".join(out)


def decode_update(data: bytes) -> MonitorUpdate:
    """The update in ``data`` (exactly one); :class:`MonitorUpdateError` if it is not one."""
    if len(data) > MAX_UPDATE_SIZE:
        raise MonitorUpdateError(f"a monitor update is at most {MAX_UPDATE_SIZE} bytes")
    cur = _Cursor(bytes(data))
    version = cur.int("u8")
    if version != MONITOR_UPDATE_VERSION:
        raise MonitorUpdateError(f"monitor update version {version} is not supported (this code reads 1)")
    kind = cur.int("u8")
    cls = _BY_KIND.get(kind)
    if cls is None:
        raise MonitorUpdateError(f"unknown monitor update kind {kind}")
    update_id = cur.int("u64")
    try:
        values = [_get(kind, cur) for kind in _SCHEMAS[cls]]
        record = cls(*values)
    except MonitorUpdateError:
        raise
    except (BitcoinError, ValueError, TypeError) as exc:
        raise MonitorUpdateError(f"invalid {cls.__name__}: {exc}") from exc
    if cur.pos != len(cur.data):
        raise MonitorUpdateError(f"{len(cur.data) - cur.pos} trailing bytes after a {cls.__name__}")
    return MonitorUpdate(update_id, record)


def encode_stream(updates: Iterable[MonitorUpdate]) -> bytes:
    """Updates framed as ``u32 length || update``, for a file or a socket."""
    parts = []
    for update in updates:
        body = encode_update(update)
        parts.append(struct.pack(">I", len(body)) + body)
    return b"".join(parts)


def decode_stream(data: bytes) -> Iterator[MonitorUpdate]:
    """The updates of :func:`encode_stream`'s bytes, in order (a torn last frame is an error)."""
    cur = _Cursor(bytes(data))
    while cur.pos < len(cur.data):
        size = cur.int("u32")
        if size > MAX_UPDATE_SIZE:
            raise MonitorUpdateError(f"a monitor update is at most {MAX_UPDATE_SIZE} bytes, frame says {size}")
        yield decode_update(cur.take(size))
