"""Persistence records of a channel (sans-IO): encode, decode, replay, snapshot.

A record is an input that changed the channel, with its ``now``: the core is
deterministic (RFC 6979 signatures, no clock, no randomness), so replaying
the records into a fresh core with the same secrets rebuilds the identical
state. A snapshot is the whole :class:`~.state.ChannelState`; restoring is
"snapshot, then the records after it". The secrets are never written: the
node derives them again (a backup of the log alone cannot spend anything).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lnpmsg.bitcoin.tx import OutPoint

from . import dualfund as DF
from . import dualfund_rbf as RBF
from . import inputs as I
from . import quiesce as Q
from . import splice as SP
from . import splice_forgotten as SPF
from . import splice_rbf as SPR
from .codec import Codec, CodecError
from .double_spend import FundingDoubleSpent, FundingFound
from .interactive_parts import FundingOutput, OwnInput, OwnOutput, SharedInput
from .keys import ChannelBasepoints
from .params import ChannelConfig, ChannelSecrets, OpeningPolicy, PeerParams
from .updates import Changes, CommitSpec, DirectedHtlc

__all__ = [
    "FRAME_HEADER",
    "MAX_RECORD_SIZE",
    "decode_input",
    "encode_input",
    "encode_snapshot",
    "frame",
    "parse_frames",
    "restore",
    "restore_snapshot",
]

_INPUTS: list[type] = [
    I.OpenCommand, I.AcceptCommand, I.FundingTransaction, I.FundingDepth, I.BlockHeight, I.AddHtlc, I.FulfillHtlc, I.FailHtlc,
    I.FailMalformedHtlc, I.SignCommitment, I.ChangeFee, I.CloseChannel, I.Received, I.Disconnected, I.Reconnected,
    I.ForceClose,  # appended: a record's input index never changes
    DF.OpenV2Command, DF.AcceptV2Command, DF.FundingWitnesses, Q.Quiesce, FundingDoubleSpent,
    FundingFound, RBF.BumpCommand, RBF.FundingCandidateConfirmed, SP.SpliceCommand, SP.SpliceDepth, SPR.SpliceBump,
    SPF.SpliceInputSpent, SPF.ForgottenSpliceMined, SPR.SpliceTipHeight,
]  # fmt: skip


def _codec() -> Codec:
    from .close import CLOSE_STATE_CLASSES
    from .state import ChannelState, LocalCommit, Phase, RemoteCommit

    return Codec(
        [*_INPUTS, ChannelConfig, OpeningPolicy, PeerParams, ChannelBasepoints, OutPoint, Changes, CommitSpec,
         DirectedHtlc, ChannelState, LocalCommit, RemoteCommit, Phase, _Entry, *CLOSE_STATE_CLASSES,
         DF.DualFundSession, RBF.Candidate, OwnInput, OwnOutput, FundingOutput, Q.QuiesceState,
         SP.SpliceSession, SP.SplicedFrom, SharedInput]
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Entry:
    """A record's payload: an input and its time (or, in a snapshot, the state and its record count)."""

    now: float
    input: Any


_CODEC: Codec | None = None


def _get_codec() -> Codec:
    global _CODEC
    if _CODEC is None:
        _CODEC = _codec()
    return _CODEC


def encode_input(item: I.Input, now: float) -> bytes:
    """A record's bytes for ``item`` received at ``now``."""
    return _get_codec().encode(_Entry(now, item))


def decode_input(data: bytes) -> tuple[I.Input, float]:
    """The input and time of a record (:class:`CodecError` if it is not one)."""
    entry = _get_codec().decode(data)
    if not isinstance(entry, _Entry) or type(entry.input) not in _INPUTS:
        raise CodecError("a record holds one input and its time")
    return entry.input, entry.now


def encode_snapshot(core: Any) -> bytes:
    """The whole state of ``core`` and how many records it covers."""
    return _get_codec().encode(_Entry(float(core.records_emitted), core.state))


def restore_snapshot(secrets: ChannelSecrets, data: bytes) -> Any:
    """A core in the state of a snapshot."""
    from .state import ChannelCore, ChannelState

    entry = _get_codec().decode(data)
    if not isinstance(entry, _Entry) or not isinstance(entry.input, ChannelState):
        raise CodecError("not a channel snapshot")
    core = ChannelCore(secrets)
    core.state = entry.input
    core.records_emitted = int(entry.now)
    return core


def restore(secrets: ChannelSecrets, records: Iterable[bytes], snapshot: bytes | None = None) -> Any:
    """A core rebuilt from a snapshot (or from nothing) and the records after it."""
    from .state import ChannelCore

    core = restore_snapshot(secrets, snapshot) if snapshot is not None else ChannelCore(secrets)
    for data in records:
        item, now = decode_input(data)
        core.receive(item, now)
    return core


# ---------------------------------------------------------------- framing (sans-IO)

#: A frame: payload length (u32), record sequence number (u64), CRC-32 of seq + payload (u32), payload.
FRAME_HEADER = struct.Struct(">IQI")
#: A record larger than this is refused (a torn or corrupt length must not allocate gigabytes).
MAX_RECORD_SIZE = 16 * 1024 * 1024


def frame(seq: int, payload: bytes) -> bytes:
    """One record as it goes into the log."""
    if len(payload) > MAX_RECORD_SIZE:
        raise CodecError(f"record of {len(payload)} bytes is over {MAX_RECORD_SIZE}")
    seq_bytes = seq.to_bytes(8, "big")
    return FRAME_HEADER.pack(len(payload), seq, zlib.crc32(seq_bytes + payload)) + payload


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The whole frames at the start of ``data`` and the length they cover.

    Parsing stops at the first frame that is cut short or fails its checksum:
    that is a write torn by a crash, and it and everything after are dropped.
    """
    out: list[tuple[int, bytes]] = []
    pos = 0
    size = FRAME_HEADER.size
    while pos + size <= len(data):
        length, seq, crc = FRAME_HEADER.unpack_from(data, pos)
        end = pos + size + length
        if length > MAX_RECORD_SIZE or end > len(data):
            break
        payload = data[pos + size : end]
        if zlib.crc32(seq.to_bytes(8, "big") + payload) != crc:
            break
        out.append((seq, payload))
        pos = end
    return out, pos
