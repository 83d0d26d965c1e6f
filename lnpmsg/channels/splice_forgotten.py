"""A splice the peer forgot after our ``tx_signatures`` left (BOLT 2 ``tx_abort``), sans-IO.

The peer answers our ``next_funding`` (or anything after our signatures) with ``tx_abort``: it
never sent its own signatures and forgot the splice. It received ours, or may have, so it alone
could still complete the transaction and broadcast it: BOLT 2 has us keep the splice "until any
inputs to the negotiated tx have been spent". The splice is marked (``SpliceSession.peer_forgot``,
``listchannels``), and the shell watches its inputs but the shared one (a spend of the channel's
funding is a close, its monitor's): once one of them is spent by another transaction
:data:`FORGOTTEN_SPENT_DEPTH` blocks deep (:class:`SpliceInputSpent`) the splice can never
confirm, and the channel forgets it too (:class:`~.splice.SpliceAborted`: our coins are free, a
new splice may start).

Only a first version is marked: a bumped splice's earlier versions are still the peer's, and a
version it forgot is only kept (see docs/splicing.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.tx import OutPoint, Tx

if TYPE_CHECKING:
    from .splice import SpliceSession
    from .state import ChannelCore, _Out

__all__ = ["FORGOTTEN_SPENT_DEPTH", "SpliceInputSpent", "forgotten_inputs", "on_input_spent", "on_tx_abort"]

#: how deep the spend of an input of a splice the peer forgot must be before we forget the splice too
#: (one reorganized away would let the splice confirm, on a funding we would no longer sign for)
FORGOTTEN_SPENT_DEPTH = 6


@dataclass(frozen=True, slots=True)
class SpliceInputSpent:
    """Input from the shell: ``outpoint``, an input of the pending splice the peer forgot, was spent by
    another transaction, buried :data:`FORGOTTEN_SPENT_DEPTH` deep: the splice can never confirm."""

    outpoint: OutPoint


def on_tx_abort(core: ChannelCore, sp: SpliceSession) -> None:
    """The peer's tx_abort once our tx_signatures left: the splice is kept, marked as forgotten by the peer."""
    if not sp.signed and not sp.previous and not sp.peer_forgot:
        core.state.splice = replace(sp, peer_forgot=True)


def forgotten_inputs(sp: SpliceSession) -> tuple[OutPoint, ...]:
    """The inputs of a splice the peer forgot whose spend by another transaction ends it (the
    shared input's is a close of the channel, the monitor's): none if the peer did not forget it."""
    if not sp.peer_forgot or sp.tx is None:
        return ()
    return tuple(i.prevout for i in Tx.parse(sp.tx).inputs if i.prevout != sp.shared.outpoint)


def on_input_spent(core: ChannelCore, sp: SpliceSession, outpoint: OutPoint, out: _Out) -> None:
    """An input of the splice the peer forgot is spent elsewhere, deep: the splice ends, our coins are free."""
    from .splice import SpliceAborted

    if outpoint not in forgotten_inputs(sp) or sp.signed or sp.previous or sp.mined or sp.locked_sent:
        return
    core.state.splice = None
    out.emit(SpliceAborted(f"the peer forgot the splice and its input {outpoint} was spent by another transaction", sp.inputs))
