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

The peer may complete it all the same (it holds our signatures). When the splice transaction is
found in a block (:class:`ForgottenSpliceMined`, with both sides' witnesses) it is taken up as
signed: the funding moved. The splice then goes on as any confirmed one: ``splice_locked`` at the
channel's minimum depth, the monitor following its funding (a revoked commitment of the peer on
it is punished, ours on it can be broadcast). No update of the channel happened since the splice
was signed (the peer's would have failed it: we waited for its ``tx_signatures``), so our
commitment on the splice is our latest, not revoked. If the peer goes on with it (its
``splice_locked``) the channel switches to it; if its ``splice_locked`` has not come
:data:`FORGOTTEN_LOCK_WAIT` blocks after our lock depth, the peer cannot (BOLT 2 has a node that
does not know the splice answer our ``splice_locked`` with a warning), and the channel is closed on
the splice's funding with that commitment (:func:`on_locked_depth`): the channel's old funding is
spent, nothing else can confirm. A taken-up splice that a reorganization took out before our lock
watches its inputs again (:func:`forgotten_inputs`).

A fee bump's version (:mod:`.splice_rbf`) the peer forgot is marked the same way and stays the
current one: the earlier versions are still signed by both and broadcast, and whichever version is
mined is the splice. An earlier one in a block double-spends the forgotten one (they share the
channel's funding as input): it becomes the current one (:func:`~.splice_rbf.make_current`), the
forgotten one is kept among the others and dropped with them at the switch, its coins freed as
theirs. The forgotten one in a block is taken up as a first version is (:func:`on_mined`): the
channel carried no update since it was signed (the peer's would have failed it, as for a first
version), so our commitment on it is our latest. A spend of one of its inputs elsewhere ends every
version spending it (:func:`on_input_spent`); ``abandonsplice`` is refused (the earlier versions
spend our coins too, and may still confirm).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.tx import SEQUENCE_RBF, OutPoint, Tx, TxIn, TxOut

if TYPE_CHECKING:
    from .splice import SpliceSession
    from .state import ChannelCore, _Out

__all__ = [
    "FORGOTTEN_LOCK_WAIT",
    "FORGOTTEN_SPENT_DEPTH",
    "ForgottenSpliceMined",
    "SpliceInputSpent",
    "abandon_spend",
    "forgotten_inputs",
    "on_input_spent",
    "on_locked_depth",
    "on_mined",
    "on_tx_abort",
]

#: how deep the spend of an input of a splice the peer forgot must be before we forget the splice too
#: (one reorganized away would let the splice confirm, on a funding we would no longer sign for)
FORGOTTEN_SPENT_DEPTH = 6

#: blocks past our lock depth that a splice the peer forgot but that confirmed waits for the peer's
#: ``splice_locked`` (a peer that took it up from the chain locks at the same depth, a few blocks late
#: at most) before the channel is closed on it
FORGOTTEN_LOCK_WAIT = 6


@dataclass(frozen=True, slots=True)
class SpliceInputSpent:
    """Input from the shell: ``outpoint``, an input of the pending splice the peer forgot, was spent by
    another transaction, buried :data:`FORGOTTEN_SPENT_DEPTH` deep: the splice can never confirm."""

    outpoint: OutPoint


@dataclass(frozen=True, slots=True)
class ForgottenSpliceMined:
    """Input from the shell: ``tx``, the transaction of the pending splice the peer forgot, as found in a
    block (both sides' witnesses in it: the peer completed it with our signatures)."""

    tx: bytes


def on_tx_abort(core: ChannelCore, sp: SpliceSession) -> None:
    """The peer's tx_abort once our tx_signatures left: the splice (or the version of it a fee bump
    made: the earlier ones stay signed by both) is kept, marked as forgotten by the peer."""
    if not sp.signed and not sp.peer_forgot:
        core.state.splice = replace(sp, peer_forgot=True)
        core.state.quiesce = None  # BOLT 2: the negotiation quiescence was for ended (tx_abort)


def forgotten_inputs(sp: SpliceSession) -> tuple[OutPoint, ...]:
    """The inputs of a splice the peer forgot whose spend by another transaction ends it (the
    shared input's is a close of the channel, the monitor's): none if the peer did not forget it, or
    while it is in a block (taken up; one a reorganization takes out is watched again)."""
    if not sp.peer_forgot or sp.tx is None or sp.mined or sp.locked_sent:
        return ()
    return tuple(i.prevout for i in Tx.parse(sp.tx).inputs if i.prevout != sp.shared.outpoint)


def on_input_spent(core: ChannelCore, sp: SpliceSession, outpoint: OutPoint, out: _Out) -> None:
    """An input of the splice the peer forgot is spent elsewhere, deep: every version spending it ends
    (a bump's earlier versions spend our coins again), our coins only they held are free; the last
    version left, if any, stands."""
    from .interactive_parts import inputs_besides, own_outpoints
    from .splice import SpliceAborted

    if outpoint not in forgotten_inputs(sp):
        return
    spends = [v.tx is not None and outpoint in {i.prevout for i in Tx.parse(v.tx).inputs} for v in sp.previous]
    left = tuple(v for v, spent in zip(sp.previous, spends) if not spent)
    dead = (*(v for v, spent in zip(sp.previous, spends) if spent), sp)
    core.state.splice = replace(left[-1], previous=left[:-1]) if left else None
    freed = inputs_besides((v.inputs for v in dead), set().union(*(own_outpoints(v.inputs) for v in left)))
    out.emit(SpliceAborted(f"the peer forgot the splice and its input {outpoint} was spent by another transaction", freed))


def on_mined(core: ChannelCore, sp: SpliceSession, tx: bytes) -> None:
    """The splice the peer forgot is in a block: it is taken up as signed, with the transaction as mined
    (its depth then goes as any signed splice's: :func:`~.splice_sign.on_depth`)."""
    if not sp.peer_forgot or sp.signed or sp.outpoint is None or Tx.parse(tx).txid != sp.outpoint.txid:
        return
    core.state.splice = replace(sp, signed=True, tx=tx)


def on_locked_depth(core: ChannelCore, sp: SpliceSession, depth: int, out: _Out) -> None:
    """A confirmed splice the peer forgot, locked by us, is ``depth`` deep: without the peer's
    ``splice_locked`` :data:`FORGOTTEN_LOCK_WAIT` blocks past our lock depth, the channel closes on it
    (our latest commitment, on the splice's funding: the monitor follows it)."""
    from lnpmsg.wire import Error

    from .inputs import ChannelFailed
    from .state import Phase

    if not sp.peer_forgot or not sp.signed or not sp.locked_sent or sp.locked_received:
        return
    if depth < max(1, core.state.minimum_depth) + FORGOTTEN_LOCK_WAIT:
        return
    s = core.state
    reason = f"the peer forgot the splice {sp.outpoint.txid_hex if sp.outpoint else '-'}, which confirmed, and did not lock it"
    out.send(Error(channel_id=s.channel_id, data=reason.encode()))
    # (the commitment on the old funding stands for ours: the channel monitor, which follows the
    # splice's funding since our lock, broadcasts our commitment on it instead)
    out.emit(ChannelFailed(reason, core.latest_commitment_tx(), by_peer=False))
    s.phase = Phase.FAILED
    s.failure = reason


def abandon_spend(sp: SpliceSession, script: bytes, feerate_per_kw: int) -> Tx:
    """The transaction (unsigned) that spends our coins in the splice the peer forgot back to ``script`` (our
    wallet's) at ``feerate_per_kw``: once it is :data:`FORGOTTEN_SPENT_DEPTH` deep the splice can never
    confirm and ends (:func:`on_input_spent`). LocalMisuse when the splice is not one the peer forgot, was
    taken up, holds no coin of ours, or they cannot pay the fee."""
    from lnpmsg.wallet.feebump import spend_weight, vsize
    from lnpmsg.wallet.spend import dust_limit

    from .errors import LocalMisuse

    if not sp.peer_forgot:
        raise LocalMisuse("the pending splice is not one the peer forgot (it may still be signed: wait for it)")
    if sp.previous:
        raise LocalMisuse("the peer forgot a fee bump of the splice: its earlier versions, signed by both, may still confirm")
    if sp.signed:
        raise LocalMisuse("the splice the peer forgot confirmed: it is taken up, not abandoned")
    ours = [i for i in sp.inputs if i.outpoint in forgotten_inputs(sp)]
    if not ours:
        raise LocalMisuse("the splice holds no coin of ours: it ends once the peer spends one of its inputs elsewhere")
    total = sum(Tx.parse(i.prevtx).outputs[i.vout].amount_sat for i in ours)
    fee = -(-vsize(spend_weight(len(ours), [script])) * feerate_per_kw // 250)  # (rates are asked per vbyte: at least that)
    if total - fee < dust_limit(script):
        raise LocalMisuse(f"our coins in the splice ({total} sat) cannot pay the fee of spending them ({fee} sat)")
    # (replaceable, BIP 125: a spend stuck at a low rate is bumped by asking again)
    return Tx(2, tuple(TxIn(i.outpoint, sequence=SEQUENCE_RBF) for i in ours), (TxOut(total - fee, script),))
