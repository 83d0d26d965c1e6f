"""Events a chain source reports: blocks connected and disconnected, and what
happened to watched outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxOut

__all__ = [
    "BlockConnected",
    "BlockDisconnected",
    "BlockRef",
    "ChainEvent",
    "OutputConfirmed",
    "OutputSpent",
    "ReorgedOut",
    "TxOutInfo",
]


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block of a chain: its height and hash (internal order)."""

    height: int
    block_hash: bytes

    @property
    def hash_hex(self) -> str:
        return hash_to_hex(self.block_hash)


@dataclass(frozen=True, slots=True)
class BlockConnected:
    """A block joined the active chain. Sent after the watch events of that block."""

    height: int
    block_hash: bytes
    time: int


@dataclass(frozen=True, slots=True)
class BlockDisconnected:
    """A block left the active chain (reorg). Sent after the ``ReorgedOut`` of its events."""

    height: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class OutputConfirmed:
    """A watched output (by outpoint, or paying a watched script) confirmed."""

    outpoint: OutPoint
    txout: TxOut
    tx: Tx
    height: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class OutputSpent:
    """A watched output was spent by ``spending_tx`` (its input ``input_index``)."""

    outpoint: OutPoint
    spending_tx: Tx
    input_index: int
    height: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class ReorgedOut:
    """An earlier ``OutputConfirmed`` or ``OutputSpent`` is undone: its block left the chain."""

    event: OutputConfirmed | OutputSpent


ChainEvent: TypeAlias = (
    BlockConnected | BlockDisconnected | OutputConfirmed | OutputSpent | ReorgedOut
)


@dataclass(frozen=True, slots=True)
class TxOutInfo:
    """An unspent output as ``gettxout`` reports it."""

    outpoint: OutPoint
    txout: TxOut
    confirmations: int
    is_coinbase: bool
