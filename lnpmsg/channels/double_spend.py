"""A funding transaction double-spent before it confirmed (sans-IO).

A zero-conf channel carries payments before its funding confirms. If a block confirms another
transaction spending one of the funding's inputs, the funding can never confirm: no commitment
can ever be broadcast, and what the channel holds is not real. The channel is failed at once
(:class:`FundingDoubleSpent`, an input recorded like any other): the peer gets an ``error``, no
commitment is broadcast (:class:`~.inputs.ChannelFailed` without one), and the shell fails the
HTLCs we offered on it back upstream (nothing on chain will ever resolve them).

Only a node that has the funding transaction can see its inputs: the funder, and both sides of a
dual-funded channel. The fundee of a single-funded zero-conf channel knows only the funding's
txid: its shell looks the transaction up at the chain source (its mempool or blocks) and hands it
to the core (:class:`FundingFound`, recorded: a restart keeps it), and from then on the fundee
sees a double spend itself. When the source does not see the funding, the fundee learns of a
double spend only from the funder's ``error`` (or not at all from a funder that lies: that is the
trust zero-conf asks of it), and keeps logging that its funding is unconfirmed.

A dual-funded channel's funding may have several versions (fee bumps, :mod:`.dualfund_rbf`): a
version confirmed in place of ours is the funding, not a double spend of it. The shell adopts it
before it looks for double spends at each block; a double spend it reports otherwise (its check of
the blocks mined while the node was down, or before a peer's ``error``, may come first) that is a
version of the funding is taken as that version's confirmation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.wire import Error

from .errors import LocalMisuse
from .inputs import ChannelFailed
from .ready import is_zeroconf

if TYPE_CHECKING:
    from .state import ChannelCore, ChannelState, _Out

__all__ = [
    "DOUBLE_SPENT", "FundingDoubleSpent", "FundingFound", "conflicting_spend", "dispatch", "double_spent", "funding_wanted",
    "unconfirmed_funding",
]  # fmt: skip

#: how a channel's ``failure`` starts when its funding was double-spent (read back after a restart)
DOUBLE_SPENT = "funding double-spent"


@dataclass(frozen=True, slots=True)
class FundingDoubleSpent:
    """A block confirmed ``txid`` (internal order), which spends an input of our unconfirmed funding."""

    txid: bytes
    height: int


@dataclass(frozen=True, slots=True)
class FundingFound:
    """The fundee's shell found the funding transaction (``raw_tx``) of its unconfirmed funding at the chain source."""

    raw_tx: bytes


def _unconfirmed(state: ChannelState) -> bool:
    from .state import Phase

    established = (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING)
    return state.phase in established and not state.short_channel_id and state.funding_outpoint is not None


def unconfirmed_funding(state: ChannelState) -> Tx | None:
    """The funding transaction of an established channel whose funding has not confirmed, if we have it."""
    if not _unconfirmed(state) or not state.funding_tx:
        return None
    return Tx.parse(state.funding_tx)


def funding_wanted(state: ChannelState) -> bool:
    """A zero-conf channel's unconfirmed funding whose transaction we lack (the fundee of a single-funded one):
    the shell looks for it (:class:`FundingFound`)."""
    return _unconfirmed(state) and not state.funding_tx and is_zeroconf(state)


def conflicting_spend(funding: Tx, txs: Iterable[Tx]) -> Tx | None:
    """The first of ``txs`` (a block's) that spends an input of ``funding`` and is not it."""
    spent = {i.prevout for i in funding.inputs}
    for tx in txs:
        if tx.txid != funding.txid and any(i.prevout in spent for i in tx.inputs):
            return tx
    return None


def double_spent(state: ChannelState) -> bool:
    """The channel failed because its funding was double-spent."""
    return bool(state.failure and state.failure.startswith(DOUBLE_SPENT))


def dispatch(core: ChannelCore, item: object, out: _Out) -> bool:
    """Keep the funding on :class:`FundingFound`; fail the channel on :class:`FundingDoubleSpent` (True when handled here)."""
    s = core.state
    if isinstance(item, FundingFound):
        if not funding_wanted(s):
            raise LocalMisuse("no unconfirmed funding transaction is wanted")
        assert s.funding_outpoint is not None
        if Tx.parse(item.raw_tx).txid != s.funding_outpoint.txid:
            raise LocalMisuse("not the funding transaction")
        s.funding_tx = item.raw_tx
        return True
    if not isinstance(item, FundingDoubleSpent):
        return False
    from .state import Phase

    if s.short_channel_id:
        raise LocalMisuse("the funding confirmed: it was not double-spent")
    from .dualfund_rbf import FundingCandidateConfirmed, candidate_outpoints
    from .dualfund_rbf import dispatch as adopt

    if any(o.txid == item.txid for o in candidate_outpoints(core)):
        # another version of a bumped funding confirmed (the shell looked for double spends before it
        # adopted it: its check of the blocks mined while it was down, a peer's error): it is the funding
        return adopt(core, FundingCandidateConfirmed(item.txid), out)
    reason = (f"{DOUBLE_SPENT}: transaction {item.txid[::-1].hex()} (block {item.height}) spends an input of the funding "
              f"{s.funding_outpoint.txid_hex if s.funding_outpoint else '-'}, which can never confirm")  # fmt: skip
    out.send(Error(channel_id=s.channel_id or bytes(32), data=reason.encode()))
    out.emit(ChannelFailed(reason, None, by_peer=False))  # no commitment: it spends an output that will never exist
    s.phase = Phase.FAILED
    s.failure = reason
    return True
