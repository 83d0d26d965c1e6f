"""Import of Core Lightning ``gossip_store`` files.

The format (version byte, then records)::

    file   = version:u8 record*
    record = flags:u16be len:u16be crc:u32be timestamp:u32be msg[len]
    flags  : 0x8000 deleted, 0x2000 completed, 0x0800 dying

``msg`` is a whole BOLT-1 message (type first), exactly as on the wire, or
one of Core Lightning's internal records: 4101 ``channel_amount`` (the
funding amount, right after each channel_announcement), 4103
``delete_chan`` (a channel closed), 4105 ``ended``, 4106 ``chan_dying``,
4107 ``uuid``, which are skipped (``delete_chan`` removes its channel).
The CRC (CRC-32C of ``msg``, seeded with the timestamp) is advisory.

Reading (:func:`read_gossip_store`) is sans-IO: bytes in, records out.
:func:`import_gossip_store` feeds the live records through a :class:`Graph`
(so every signature is checked and every rule applied) and returns the
decisions to store; :func:`load_gossip_store_file` reads a file (``.xz``
too) from disk.
"""

from __future__ import annotations

import lzma
import os
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lnpmsg.gossip.errors import GossipError
from lnpmsg.gossip.graph import ChannelRemoved, Decision, Graph, Outcome
from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.wire import Message, WireError

__all__ = [
    "FLAG_COMPLETED",
    "FLAG_DELETED",
    "FLAG_DYING",
    "MAX_MINOR_VERSION",
    "ImportResult",
    "StoreRecord",
    "import_gossip_store",
    "load_gossip_store_file",
    "read_gossip_store",
]

FLAG_DELETED = 0x8000
#: for a push or an ended record; informational here
FLAG_COMPLETED = 0x2000
#: the channel's funding output is spent (closing soon)
FLAG_DYING = 0x0800
#: the version byte is major (3 bits) and minor (5 bits); readers accept
#: major 0 and minors up to this (later minors only add record types)
MAX_MINOR_VERSION = 16

TYPE_CHANNEL_AMOUNT = 4101
TYPE_DELETE_CHAN = 4103

_HEADER = struct.Struct(">HHII")
_GOSSIP: dict[int, type[Message]] = {256: ChannelAnnouncement, 257: NodeAnnouncement, 258: ChannelUpdate}


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """One record of a gossip_store file."""

    flags: int
    timestamp: int
    msg: bytes
    #: byte offset of the record header in the file
    offset: int

    @property
    def type(self) -> int:
        return (self.msg[0] << 8) | self.msg[1] if len(self.msg) >= 2 else -1

    @property
    def deleted(self) -> bool:
        return bool(self.flags & FLAG_DELETED)


def read_gossip_store(data: bytes, *, has_version: bool = True) -> Iterator[StoreRecord]:
    """The records of a gossip_store (``has_version=False`` for a continuation without the version byte).

    A truncated last record (a store being written) ends the iteration
    quietly; a bad version raises :class:`GossipError`.
    """
    pos = 0
    if has_version:
        if not data:
            raise GossipError("empty gossip_store (no version byte)")
        version = data[0]
        if version >> 5 != 0 or version & 0x1F > MAX_MINOR_VERSION:
            raise GossipError(f"unsupported gossip_store version {version:#04x} (major 0, minor <= {MAX_MINOR_VERSION})")
        pos = 1
    end = len(data)
    while pos + _HEADER.size <= end:
        flags, length, _crc, timestamp = _HEADER.unpack_from(data, pos)
        body = pos + _HEADER.size
        if body + length > end:
            return
        yield StoreRecord(flags, timestamp, data[body : body + length], pos)
        pos = body + length


@dataclass
class ImportResult:
    """What an import did: per message type, how many live records, and the decisions."""

    records: int = 0
    #: live (not deleted) gossip records by type name
    live: Counter[str] = field(default_factory=Counter)
    #: deleted gossip records by type name (skipped)
    deleted: Counter[str] = field(default_factory=Counter)
    #: outcomes by "type: outcome"
    outcomes: Counter[str] = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)
    removals: list[ChannelRemoved] = field(default_factory=list)
    #: records that do not decode (type and reason)
    malformed: list[str] = field(default_factory=list)
    #: messages for another chain, by network name (ignored)
    other_chains: Counter[str] = field(default_factory=Counter)
    #: channels in the graph after the import with no update within the prune horizon
    stale_channels: int = 0

    @property
    def accepted(self) -> list[Decision]:
        return [d for d in self.decisions if d.accepted]

    @property
    def rejected(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome is Outcome.REJECTED]


def import_gossip_store(records: Iterable[StoreRecord], graph: Graph, now: float) -> ImportResult:
    """Feed a store's live records through ``graph`` (all checks apply); deleted ones are skipped.

    A ``channel_amount`` record gives the capacity of the announcement
    before it; ``delete_chan`` removes its channel. Apply the result with
    ``store.apply(result.decisions, result.removals)``.
    """
    result = ImportResult()
    pending_announcement: tuple[ChannelAnnouncement, bytes, int] | None = None

    def flush(capacity: int | None) -> None:
        nonlocal pending_announcement
        if pending_announcement is not None:
            msg, raw, ts = pending_announcement
            pending_announcement = None
            _decide(result, graph, msg, raw, now, capacity_sat=capacity, first_seen=ts)

    for record in records:
        result.records += 1
        kind = record.type
        if kind == TYPE_CHANNEL_AMOUNT:
            if not record.deleted and len(record.msg) == 10:
                flush(struct.unpack_from(">Q", record.msg, 2)[0])
            continue
        flush(None)
        cls = _GOSSIP.get(kind)
        if cls is None:
            if kind == TYPE_DELETE_CHAN and not record.deleted and len(record.msg) == 10:
                change = graph.remove_channel(struct.unpack_from(">Q", record.msg, 2)[0], "deleted in the gossip_store")
                if change is not None:
                    result.removals.append(change)
            continue
        name = _name(cls)
        if record.deleted:
            result.deleted[name] += 1
            continue
        result.live[name] += 1
        try:
            msg = cls.decode(record.msg)
        except WireError as exc:
            result.malformed.append(f"{name} at offset {record.offset}: {exc}")
            continue
        if cls is ChannelAnnouncement:
            pending_announcement = (msg, record.msg, record.timestamp)  # type: ignore[assignment]
        else:
            _decide(result, graph, msg, record.msg, now)
    flush(None)
    return result


def _name(cls: type[Message]) -> str:
    return {ChannelAnnouncement: "channel_announcement", NodeAnnouncement: "node_announcement", ChannelUpdate: "channel_update"}[cls]


def _decide(
    result: ImportResult, graph: Graph, msg: Message, raw: bytes, now: float, *, capacity_sat: int | None = None, first_seen: int | None = None
) -> None:
    decision = graph.process(msg, raw, now, capacity_sat=capacity_sat, first_seen=first_seen)
    result.decisions.append(decision)
    result.outcomes[f"{decision.kind}: {decision.outcome.value}"] += 1


def load_gossip_store_file(*paths: str | os.PathLike[str]) -> bytes:
    """The bytes of a gossip_store, from one file or parts to join (``.xz`` files are decompressed)."""
    out = bytearray()
    for path in paths:
        p = Path(path)
        try:
            out += lzma.decompress(p.read_bytes()) if p.suffix == ".xz" else p.read_bytes()
        except (OSError, lzma.LZMAError) as exc:
            raise GossipError(f"cannot read gossip_store {p}: {exc}") from exc
    return bytes(out)
