"""Fee bumping of a dual-funded channel's funding (BOLT 2 ``tx_init_rbf`` / ``tx_ack_rbf``), sans-IO.

While the funding of a v2 channel is unconfirmed (and no ``channel_ready`` was sent), the
opener may propose a new version of it at a higher feerate (at least 25/24 of the last one):
``tx_init_rbf``, answered by ``tx_ack_rbf`` or ``tx_abort``. A new interactive construction
follows, then ``commitment_signed`` and ``tx_signatures`` as for the first version: the
machinery of :mod:`.dualfund` runs again, on a fresh :class:`~.dualfund.DualFundSession`.

Before an attempt starts, the current version (outpoint, signed transaction, both first
commitments, its session) is pushed onto the session's ``previous`` candidates; an attempt that
ends before our ``tx_signatures`` left (``tx_abort``, a refusal, a disconnection, an
``error``) restores the last candidate, which stays valid; one the peer aborts after our
signatures left (it lost it: its answer to our ``next_funding``) is set aside as a candidate. A completed attempt becomes the
channel's funding; the earlier ones stay candidates until one of them confirms
(:class:`FundingCandidateConfirmed`, from the shell): that one becomes the funding and the
others are forgotten (:class:`CandidatesDropped` names our coins only they spent).

Each side contributes what it contributed before, from the same coins (our change pays the
higher fee; a contribution that cannot refuses the bump): every new version therefore spends
our inputs of every earlier one. The rule that each attempt double-spends all the previous
ones is checked on the completed transaction (else ``tx_abort``), as is BOLT 2's rule that it pays
at least the total fee of the version it replaces (the interactive session's, which splice bumps
share: :attr:`~.interactive_tx.InteractiveTx.replaces_fee_sat`). Not done: a change of
either contribution (a ``funding_output_contribution`` other than the previous one is refused),
RBF of a zero-conf channel, ``require_confirmed_inputs`` with coins of ours.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.wallet.spend import dust_limit

from .errors import LocalMisuse
from .inputs import Received
from .interactive_parts import OwnInput, OwnOutput, contribution_fee, inputs_besides, own_outpoints
from .messages_v2 import TxAbort, TxAckRbf, TxInitRbf

if TYPE_CHECKING:
    from .dualfund import DualFundSession
    from .state import ChannelCore, ChannelState, _Out

__all__ = [
    "BumpCommand",
    "BumpStarted",
    "Candidate",
    "CandidatesDropped",
    "FundingCandidateConfirmed",
    "RbfAborted",
    "candidate_outpoints",
    "dispatch",
    "funding_mined",
    "handles",
    "min_feerate",
    "restore",
    "set_aside",
]

#: a block height, not a time: what a funding's locktime may be (BOLT 2 leaves it to the opener)
_LOCKTIME_THRESHOLD = 500_000_000


@dataclass(frozen=True, slots=True)
class BumpCommand:
    """The opener's bump of the unconfirmed funding to ``feerate_per_kw`` (``tx_init_rbf``)."""

    feerate_per_kw: int
    locktime: int


@dataclass(frozen=True, slots=True)
class BumpStarted:
    """Event: our ``tx_init_rbf`` left; what ended an earlier attempt is not this one's end."""

    feerate_per_kw: int


@dataclass(frozen=True, slots=True)
class FundingCandidateConfirmed:
    """Input from the shell: the funding version ``txid`` (internal order) confirmed."""

    txid: bytes


@dataclass(frozen=True, slots=True)
class Candidate:
    """A completed version of the funding, kept while a later one may replace it."""

    outpoint: OutPoint
    funding_tx: bytes
    local_commit: Any  # LocalCommit
    remote_commit: Any  # RemoteCommit
    dual: Any  # its DualFundSession (with no previous of its own)


@dataclass(frozen=True, slots=True)
class RbfAborted:
    """Event: a bump attempt ended before our signatures left; the previous version stands.
    ``inputs``: ours that only this attempt used (free them)."""

    reason: str
    inputs: tuple[OwnInput, ...]


@dataclass(frozen=True, slots=True)
class CandidatesDropped:
    """Event: a version confirmed; ``inputs`` are our coins only the other versions spent (free them)."""

    confirmed: OutPoint
    inputs: tuple[OwnInput, ...]


def min_feerate(previous_per_kw: int) -> int:
    """BOLT 2: a bump's feerate is at least 25/24 of the previous one, rounded down."""
    return previous_per_kw * 25 // 24


def candidate_outpoints(core: ChannelCore) -> tuple[OutPoint, ...]:
    """Every version of the funding that may still confirm (the current one last)."""
    s = core.state
    d = s.dual
    previous = tuple(c.outpoint for c in getattr(d, "previous", ()))
    return (*previous, s.funding_outpoint) if s.funding_outpoint is not None else previous


def handles(core: ChannelCore, item: Any) -> bool:
    """Whether ``item`` is this module's (a bump, a confirmation, tx_init_rbf/tx_ack_rbf, an echoed tx_abort)."""
    from .state import Phase

    if isinstance(item, BumpCommand | FundingCandidateConfirmed):
        return True
    msg = item.message if isinstance(item, Received) else None
    if isinstance(msg, TxInitRbf | TxAckRbf):
        return True
    # the echo of a tx_abort we sent refusing a bump (any channel: the refusal did not change it)
    return isinstance(msg, TxAbort) and core.state.phase not in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING)


def dispatch(core: ChannelCore, item: Any, out: _Out) -> bool:
    """Handle one of :func:`handles`' items (True)."""
    from .state import Phase

    s = core.state
    if isinstance(item, BumpCommand):
        _bump(core, item, out)
    elif isinstance(item, FundingCandidateConfirmed):
        _confirmed(core, item.txid, out)
    else:
        msg = item.message
        if isinstance(msg, TxAbort):
            return True  # (an echo, or an abort of an attempt already ended)
        if s.awaiting_reestablish or not s.connected:
            return True  # nothing is negotiated before channel_reestablish
        opening = s.phase in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING) and not s.dual.signatures_sent  # type: ignore[union-attr]
        if isinstance(msg, TxInitRbf) and opening:
            from .dualfund import _abort

            _abort(core, out, "unexpected tx_init_rbf", send=True)  # a negotiation is under way
        elif isinstance(msg, TxInitRbf):
            _on_init_rbf(core, msg, out)
        elif s.phase is Phase.WAIT_ACCEPT2 and getattr(s.dual, "previous", ()):
            _on_ack_rbf(core, msg, out)
        elif opening:
            from .dualfund import _abort

            _abort(core, out, "unexpected tx_ack_rbf", send=True)
        else:
            out.send(TxAbort(channel_id=s.channel_id or s.temporary_channel_id or bytes(32), data=b"unexpected tx_ack_rbf"))
    return True


def _refusal(core: ChannelCore, feerate: int, *, opener: bool) -> str | None:
    """Why a bump cannot start now (None: it can)."""
    from .dualfund import DualFundSession
    from .state import Phase

    s = core.state
    d = s.dual
    if not isinstance(d, DualFundSession) or s.funding_outpoint is None:
        return "not a dual-funded channel"
    if d.initiator != opener:
        return "only the opener bumps the funding"
    if s.phase is not Phase.AWAIT_READY:
        return f"the channel is {s.phase.value}: no bump now"
    if s.short_channel_id or s.ready_sent:
        return "the funding confirmed (or channel_ready was sent)"
    if d.mined:
        return "a version of the funding is in a block: a new one could not confirm"
    if feerate < min_feerate(d.feerate_per_kw):
        return f"feerate {feerate} is below 25/24 of {d.feerate_per_kw} ({min_feerate(d.feerate_per_kw)})"
    return None


def _our_outputs(d: DualFundSession, feerate: int) -> tuple[OwnOutput, ...] | None:
    """Our change at the new feerate (the same inputs pay the difference); None when it cannot."""
    scripts = [Tx.parse(i.prevtx).outputs[i.vout].script_pubkey for i in d.inputs]
    funding = [d.funding.script or bytes(34)] if d.initiator else []  # the opener pays for the funding output
    outs = [o.script for o in d.outputs]
    extra = contribution_fee(scripts, [*funding, *outs], feerate, initiator=d.initiator) - contribution_fee(
        scripts, [*funding, *outs], d.feerate_per_kw, initiator=d.initiator
    )
    if not d.outputs:
        return None if extra > 0 else ()
    change = d.outputs[0]
    left = change.sats - extra
    if left >= dust_limit(change.script):
        return (replace(change, sats=left), *d.outputs[1:])
    # no change: what was in it must still cover the fee without its bytes
    without = contribution_fee(scripts, funding, feerate, initiator=d.initiator)
    paid = contribution_fee(scripts, [*funding, *outs], d.feerate_per_kw, initiator=d.initiator) + change.sats
    return d.outputs[1:] if paid >= without else None


def _start(core: ChannelCore, feerate: int, locktime: int, outputs: tuple[OwnOutput, ...]) -> None:
    """Push the current version onto the candidates and start a fresh session for the attempt."""
    from .dualfund import _session

    s = core.state
    d = s.dual
    assert d is not None and s.funding_outpoint is not None and s.funding_tx is not None
    replaced_fee = _session(core).total_fee_sat()
    current = Candidate(s.funding_outpoint, s.funding_tx, s.local_commit, s.remote_commit, replace(d, previous=()))
    previous = (*d.previous, current)
    # the core has no randomness: the serial ids of the attempt derive from the first ones
    entropy = hashlib.sha256(d.entropy + len(previous).to_bytes(4, "big")).digest()
    s.dual = replace(d, feerate_per_kw=feerate, locktime=locktime, outputs=outputs, entropy=entropy, received=(),
                     our_witnesses=None, their_signatures=None, signatures_sent=False, previous=previous,
                     replaces_fee_sat=replaced_fee)  # fmt: skip
    s.local_commit = None
    s.remote_commit = None


def _bump(core: ChannelCore, cmd: BumpCommand, out: _Out) -> None:
    from .state import Phase

    s = core.state
    reason = _refusal(core, cmd.feerate_per_kw, opener=True)
    if reason is None and (not s.connected or s.awaiting_reestablish):
        reason = "the peer is not connected"
    if reason is None and not 0 <= cmd.locktime < _LOCKTIME_THRESHOLD:
        reason = "the locktime must be a block height"
    if reason is not None:
        raise LocalMisuse(reason)
    d = s.dual
    outputs = _our_outputs(d, cmd.feerate_per_kw)  # type: ignore[arg-type]
    if outputs is None:
        raise LocalMisuse("our inputs cannot pay the higher fee")
    _start(core, cmd.feerate_per_kw, cmd.locktime, outputs)
    s.phase = Phase.WAIT_ACCEPT2  # waiting for tx_ack_rbf, as for accept_channel2
    tlvs = {"funding_output_contribution": d.funding.our_sat} if d.funding.our_sat else {}  # type: ignore[union-attr]
    out.send(TxInitRbf(channel_id=s.channel_id, locktime=cmd.locktime, feerate=cmd.feerate_per_kw,
                       tlvs=TxInitRbf.tlv_stream(tlvs)))  # fmt: skip
    out.emit(BumpStarted(cmd.feerate_per_kw))


def _on_init_rbf(core: ChannelCore, msg: TxInitRbf, out: _Out) -> None:
    from .state import Phase

    s = core.state
    d = s.dual
    reason = _refusal(core, msg.feerate, opener=False)
    if reason is None and msg.locktime >= _LOCKTIME_THRESHOLD:
        reason = "the locktime must be a block height"
    if reason is None and msg.tlvs.get("funding_output_contribution", 0) != d.funding.their_sat:  # type: ignore[union-attr]
        reason = "a change of the contributions is not supported"
    if reason is None and "require_confirmed_inputs" in msg.tlvs and d.inputs:  # type: ignore[union-attr]
        reason = "confirmed inputs required: not supported"
    outputs = _our_outputs(d, msg.feerate) if reason is None else None  # type: ignore[arg-type]
    if reason is None and outputs is None:
        reason = "our contribution cannot pay the higher fee"
    if reason is not None or outputs is None:
        # a refusal ends this attempt only: the channel and its funding stay as they are
        out.send(TxAbort(channel_id=s.channel_id or s.temporary_channel_id or bytes(32), data=(reason or "refused").encode()))
        return
    _start(core, msg.feerate, msg.locktime, outputs)
    s.phase = Phase.INTERACTIVE
    ours = d.funding.our_sat  # type: ignore[union-attr]
    out.send(TxAckRbf(channel_id=s.channel_id, tlvs=TxAckRbf.tlv_stream({"funding_output_contribution": ours} if ours else {})))


def _on_ack_rbf(core: ChannelCore, msg: TxAckRbf, out: _Out) -> None:
    from .dualfund import _abort, _session
    from .state import Phase

    s = core.state
    d = s.dual
    if msg.tlvs.get("funding_output_contribution", 0) != d.funding.their_sat:  # type: ignore[union-attr]
        _abort(core, out, "a change of the peer's contribution is not supported", send=True)
        return
    if "require_confirmed_inputs" in msg.tlvs and d.inputs:  # type: ignore[union-attr]
        _abort(core, out, "confirmed inputs required: not supported", send=True)
        return
    s.phase = Phase.INTERACTIVE
    for m in _session(core).start_messages:
        out.send(m)


def on_funding_depth(core: ChannelCore, depth: int) -> None:
    """The funding's depth (``FundingDepth``): whether it is in a block, which stops bumps until a
    reorganization takes it out (depth 0)."""
    from .dualfund import DualFundSession

    s = core.state
    d = s.dual
    if isinstance(d, DualFundSession) and not s.ready_sent and d.mined != (depth >= 1):
        s.dual = replace(d, mined=depth >= 1)


def funding_mined(state: ChannelState) -> bool:
    """The channel's v2 funding (this version) was seen in a block: a depth of 0 then tells a
    reorganization took it out (``FundingDepth`` 0 is worth sending); False for any other channel."""
    from .dualfund import DualFundSession

    return isinstance(state.dual, DualFundSession) and state.dual.mined


def check_double_spends(core: ChannelCore, tx: Tx) -> str | None:
    """BOLT 2: an attempt spends an input of every previous one (why not, else None)."""
    spent = {i.prevout for i in tx.inputs}
    for c in getattr(core.state.dual, "previous", ()):
        if not spent & {i.prevout for i in Tx.parse(c.funding_tx).inputs}:
            return f"the new funding does not double-spend the version {c.outpoint.txid_hex}"
    return None


def restore(core: ChannelCore, out: _Out, reason: str) -> None:
    """End the attempt in progress (our signatures did not leave): the last version stands again."""
    from .state import Phase

    s = core.state
    d = s.dual
    assert d is not None and d.previous and not d.signatures_sent
    last = d.previous[-1]
    kept = set().union(*(own_outpoints(c.dual.inputs) for c in d.previous))
    s.dual = replace(last.dual, previous=d.previous[:-1])
    s.funding_outpoint, s.funding_tx = last.outpoint, last.funding_tx
    s.local_commit, s.remote_commit = last.local_commit, last.remote_commit
    s.phase = Phase.AWAIT_READY
    out.emit(RbfAborted(reason, tuple(i for i in d.inputs if i.outpoint not in kept)))


def set_aside(core: ChannelCore, out: _Out, reason: str) -> bool:
    """The peer aborted an attempt after our signatures left (it forgot it, BOLT 2's answer to our
    ``next_funding``): the previous version is the funding again, the attempt stays a candidate
    (the peer may hold both signatures: it could still confirm). True (handled)."""
    from .state import Phase

    s = core.state
    d = s.dual
    assert d is not None and d.previous and s.funding_outpoint is not None and s.funding_tx is not None
    attempt = Candidate(s.funding_outpoint, s.funding_tx, s.local_commit, s.remote_commit, replace(d, previous=()))
    last = d.previous[-1]
    s.dual = replace(last.dual, previous=(*d.previous[:-1], attempt))
    s.funding_outpoint, s.funding_tx = last.outpoint, last.funding_tx
    s.local_commit, s.remote_commit = last.local_commit, last.remote_commit
    s.phase = Phase.AWAIT_READY
    out.emit(RbfAborted(reason, ()))
    return True


def _confirmed(core: ChannelCore, txid: bytes, out: _Out) -> None:
    """A version confirmed: it is the funding; the others (and an attempt in progress) are forgotten."""
    from .dualfund import DualFundSession, _abort
    from .state import Phase

    s = core.state
    d = s.dual
    if not isinstance(d, DualFundSession) or not d.previous:
        raise LocalMisuse("no funding candidates")
    if s.phase in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING) and not d.signatures_sent:
        # BOLT 2: a previous version confirmed mid-attempt: the attempt is abandoned
        _abort(core, out, "a previous funding confirmed", send=True)
        d = s.dual
        assert isinstance(d, DualFundSession)
        if not d.previous:
            return
    versions = [*d.previous, Candidate(s.funding_outpoint, s.funding_tx, s.local_commit, s.remote_commit, replace(d, previous=()))]  # type: ignore[arg-type]
    chosen = next((c for c in versions if c.outpoint.txid == txid), None)
    if chosen is None:
        raise LocalMisuse("not a version of this channel's funding")
    dropped = inputs_besides((c.dual.inputs for c in versions), own_outpoints(chosen.dual.inputs))
    s.dual = chosen.dual
    s.funding_outpoint, s.funding_tx = chosen.outpoint, chosen.funding_tx
    s.local_commit, s.remote_commit = chosen.local_commit, chosen.remote_commit
    if s.phase in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING):
        s.phase = Phase.AWAIT_READY  # (an attempt whose signatures left: it is forgotten too)
    out.emit(CandidatesDropped(chosen.outpoint, dropped))
