"""The channel monitor of a splice that confirmed before both sides locked it (sans-IO).

Once the splice transaction is in the chain, the funding it spends is gone: only a commitment
on the splice's funding output can still confirm. The peer may never send ``splice_locked``
(BOLT 2 sets no deadline: the channel keeps signing a commitment for each funding) and may
broadcast one of those commitments, its latest or a revoked one, at any time. So the monitor
follows the splice's funding as soon as we consider the splice locked at a confirmed depth
(``splice_locked`` sent, the splice in a block): it is fed :func:`followed_core`, the channel as
it will be after the lock (the splice's commitments, capacity and funding keys; the same
commitment numbers and revocation secrets). When the lock comes, the channel's own state is that
view and the monitor stays.

The new monitor also learns the peer's commitments on the splice's funding that it revoked before
the move (:func:`carried_commitments`, from the old monitor: the same HTLCs, the balances moved
by the contributions), so a revoked one is punished whole. What that takes of the splice is kept in
the channel state from the switch on (``ChannelState.spliced_from``, :func:`move_of`): a node that
stops between the switch and the move moves at its next start with the same knowledge.
"""

from __future__ import annotations

import copy
from dataclasses import replace

from lnpmsg.bitcoin.tx import OutPoint

from .monitor.updates import RemoteCommitment

from .splice import SpliceSession, SplicedFrom
from .splice_rbf import find_version
from .splice_sign import switch_state
from .state import ChannelCore

__all__ = ["carried_commitments", "confirmed_unlocked_splice", "followed_core", "move_of", "spent_by_splice"]


def confirmed_unlocked_splice(core: ChannelCore) -> SpliceSession | None:
    """The pending splice we locked at a confirmed depth (its ``short_channel_id`` known) that the
    channel has not switched to (the peer's ``splice_locked`` missing), or None."""
    sp = core.state.splice
    if isinstance(sp, SpliceSession) and sp.signed and sp.locked_sent and sp.short_channel_id and sp.outpoint is not None:
        return sp
    return None


def followed_core(core: ChannelCore, funding: OutPoint | None) -> ChannelCore:
    """The channel as the monitor of ``funding`` sees it: ``core`` itself, or, when ``funding`` is the
    pending splice's, a copy of it moved onto the splice (``core`` is left as it is)."""
    sp = core.state.splice
    if funding is None or funding == core.state.funding_outpoint or not isinstance(sp, SpliceSession) or sp.outpoint != funding:
        return core
    if not sp.signed or sp.local_commit is None or sp.remote_commit is None:
        return core
    view = copy.copy(core)
    view.state = copy.copy(core.state)
    switch_state(view.state, sp)
    return view


def spent_by_splice(core: ChannelCore, funding: OutPoint, spend_txid: bytes) -> bool:
    """Whether ``spend_txid``, a spend of ``funding`` (a monitor's), is a splice of the channel: a
    signed version of the pending one, or the one the channel switched to from ``funding``. Its
    monitor then moves onto the splice's funding at our lock depth; buried before that (a minimum
    depth of :data:`~.monitor.core.IRREVOCABLE_DEPTH` or more), it must not be archived meanwhile."""
    s = core.state
    if s.funding_outpoint is not None and s.funding_outpoint != funding and s.funding_outpoint.txid == spend_txid:
        return True
    return find_version(core, spend_txid) is not None


def move_of(core: ChannelCore, old: OutPoint, splice: SpliceSession | None) -> SplicedFrom | None:
    """What a monitor of ``old`` carries over to the funding it moves to: that of ``splice`` (a confirmed
    splice not switched to yet) or of the splice the channel switched to last (recorded in the state at
    the switch, so a move after a restart has it), when that splice spent ``old``; else None."""
    s = core.state
    if splice is not None and splice.outpoint != s.funding_outpoint and splice.shared.outpoint == old:
        return SplicedFrom(old, splice.first_remote_number, splice.our_contribution, splice.their_contribution)
    lock = s.spliced_from
    return lock if isinstance(lock, SplicedFrom) and lock.funding_outpoint == old else None


def carried_commitments(old: list[RemoteCommitment], move: SplicedFrom) -> list[RemoteCommitment]:
    """The peer's commitments ``old`` (known to the monitor of the funding the splice spends) that it also
    holds on the splice's funding: those numbered from the splice's signing on, balances moved as
    :func:`~.splice_sign.adjusted` moves them (but those the monitor learnt after the switch: the
    splice's already)."""
    first = move.first_remote_number or 0
    theirs, ours = move.their_contribution * 1000, move.our_contribution * 1000
    carried = []
    for record in old:
        if record.commitment_number < first:
            continue
        if move.old_through is not None and record.commitment_number > move.old_through:
            carried.append(record)
            continue
        to_local, to_remote = record.to_local_msat + theirs, record.to_remote_msat + ours
        if to_local >= 0 and to_remote >= 0:
            carried.append(replace(record, to_local_msat=to_local, to_remote_msat=to_remote))
    return carried
