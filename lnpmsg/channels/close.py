"""Cooperative close: ``shutdown``, then ``closing_signed`` fee negotiation (BOLT 2 "Channel Close").

After both sides sent ``shutdown`` no HTLC may be added; once none is left
(both commitments empty, nothing pending) the funder proposes a fee.
Two negotiations, chosen by the peer's messages:

- with the ``fee_range`` TLV (what Electrum 4.3.4, lnd and Core Lightning
  send): a fee inside the other's range is accepted by echoing it; else the
  receiver proposes a fee inside both ranges (our preference, clamped),
  which the other must then accept; ranges that do not overlap end the
  negotiation with a warning;
- without it (older peers): each side moves to halfway between its last
  offer and the peer's until both name the same fee.

A closing transaction's signature is checked against both variants of
BOLT 3 (an output below the signer's own dust limit removed, or not).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import simple_close
from .errors import ChannelError, LocalMisuse, RemoteFault
from .inputs import ChannelClosed, CloseChannel, Input, Received
from .messages import ClosingComplete, ClosingSig, ClosingSigned, Shutdown
from .params import check_shutdown_script
from .spend import SpendPlan
from .sweeps import legacy_closing_tx

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = ["CLOSE_STATE_CLASSES", "ClosingState", "dispatch", "maybe_negotiate", "on_reestablished"]

#: option_shutdown_anysegwit (either bit) in a features int.
_ANYSEGWIT = 3 << 26


@dataclass(frozen=True, slots=True)
class ClosingState:
    """The close so far: both scripts, our fee bounds, the last offers each way."""

    local_script: bytes = b""
    remote_script: bytes = b""
    shutdown_sent: bool = False
    shutdown_received: bool = False
    feerate_per_kw: int = 1000
    max_fee_sat: int | None = None
    last_sent_fee: int | None = None
    last_received_fee: int | None = None
    #: the peer used fee_range: the range-based negotiation, else the halving one
    ranged: bool = True
    #: option_simple_close: our closing_complete, and which of the two transactions are complete
    sent_complete: object = None
    our_close_done: bool = False
    their_close_done: bool = False


CLOSE_STATE_CLASSES: list[type] = [ClosingState]


def _closing(core: ChannelCore) -> ClosingState:
    closing = core.state.closing
    return closing if isinstance(closing, ClosingState) else ClosingState()


def dispatch(core: ChannelCore, item: Input, out: _Out) -> bool:
    """Handle CloseChannel, shutdown and closing_signed."""
    from .state import Phase

    phase = core.state.phase
    if isinstance(item, CloseChannel):
        if phase not in (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN) or _closing(core).shutdown_sent:
            raise LocalMisuse(f"cannot start a close in phase {phase.value}")
        _start(core, item, out)
        return True
    if isinstance(item, Received) and isinstance(item.message, Shutdown):
        if phase not in (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN):
            raise RemoteFault(f"shutdown in phase {phase.value}")
        _on_shutdown(core, item.message, out)
        return True
    if isinstance(item, Received) and isinstance(item.message, ClosingSigned):
        if phase is not Phase.NEGOTIATING or simple_close.negotiated(core):
            raise RemoteFault(f"closing_signed in phase {phase.value}")
        _on_closing_signed(core, item.message, out)
        return True
    if isinstance(item, Received) and isinstance(item.message, ClosingComplete | ClosingSig):
        if phase is not Phase.NEGOTIATING or not simple_close.negotiated(core):
            raise RemoteFault(f"{type(item.message).__name__} in phase {phase.value}", warning=True)
        if isinstance(item.message, ClosingComplete):
            core.state.closing = simple_close.on_closing_complete(core, item.message, out)
        else:
            core.state.closing = simple_close.on_closing_sig(core, item.message, out)
        _simple_close_done(core)
        return True
    return False


def _simple_close_done(core: ChannelCore) -> None:
    """Closed once our transaction is complete and the peer's too (when it has a balance to close with)."""
    from .state import Phase

    closing = _closing(core)
    assert core.state.local_commit is not None
    theirs_sat = core.state.local_commit.spec.to_remote_msat // 1000
    expect_theirs = theirs_sat >= simple_close.dust_threshold(closing.remote_script)
    if closing.our_close_done and (closing.their_close_done or not expect_theirs):
        core.state.phase = Phase.CLOSED


def _our_script(core: ChannelCore, given: bytes = b"") -> bytes:
    config = core.state.config
    if config.upfront_shutdown_script:
        if given and given != config.upfront_shutdown_script:
            raise LocalMisuse("the close must pay our upfront_shutdown_script")
        return config.upfront_shutdown_script
    script = given or config.close_script
    if not script:
        raise LocalMisuse("no shutdown script: give one, or set ChannelConfig.close_script")
    return script


def _start(core: ChannelCore, cmd: CloseChannel, out: _Out) -> None:
    from .state import Phase

    s = core.state
    if s.local_changes.proposed:
        raise LocalMisuse("sign our pending updates before closing")
    script = _our_script(core, cmd.script_pubkey)
    s.closing = replace(
        _closing(core), local_script=script, shutdown_sent=True,
        feerate_per_kw=cmd.feerate_per_kw, max_fee_sat=cmd.max_fee_sat,
    )  # fmt: skip
    s.phase = Phase.SHUTDOWN
    out.send(Shutdown(channel_id=s.channel_id, scriptpubkey=script))
    maybe_negotiate(core, out)


def _on_shutdown(core: ChannelCore, msg: Shutdown, out: _Out) -> None:
    from .state import Phase

    s = core.state
    assert s.remote is not None
    anysegwit = bool(s.local_features & _ANYSEGWIT) and bool(s.remote_features & _ANYSEGWIT)
    # BOLT 2 asks a warning, not a failed channel, of a script of no allowed form ("SHOULD send
    # a warning") or not the upfront one ("MAY send a warning", "MUST fail the connection"):
    # the channel stays open and the peer may send a good shutdown once reconnected
    try:
        check_shutdown_script(msg.scriptpubkey, anysegwit=anysegwit, simple_close=simple_close.negotiated(core))
    except RemoteFault as fault:
        raise RemoteFault(str(fault), warning=True) from None
    if s.remote.upfront_shutdown_script and msg.scriptpubkey != s.remote.upfront_shutdown_script:
        raise RemoteFault("shutdown script differs from the peer's upfront_shutdown_script", warning=True)
    if s.remote_changes.proposed:
        raise RemoteFault("shutdown with updates not yet signed")
    closing = _closing(core)
    if closing.shutdown_received and closing.remote_script != msg.scriptpubkey:
        raise RemoteFault("a second shutdown with another script")
    closing = replace(closing, remote_script=msg.scriptpubkey, shutdown_received=True)
    if not closing.shutdown_sent:
        try:
            script = _our_script(core)
        except LocalMisuse as exc:
            raise RemoteFault(f"cannot answer shutdown: {exc}", warning=True) from None
        closing = replace(
            closing, local_script=script, shutdown_sent=True, feerate_per_kw=s.config.closing_feerate_per_kw,
        )  # fmt: skip
        out.send(Shutdown(channel_id=s.channel_id, scriptpubkey=script))
    s.closing = closing
    s.phase = Phase.SHUTDOWN
    maybe_negotiate(core, out)


def maybe_negotiate(core: ChannelCore, out: _Out) -> None:
    """Start the fee negotiation once both shutdowns are out and no HTLC is left."""
    from .state import Phase

    s = core.state
    closing = _closing(core)
    if s.phase is not Phase.SHUTDOWN or not (closing.shutdown_sent and closing.shutdown_received):
        return
    assert s.local_commit is not None and s.remote_commit is not None
    if s.local_commit.spec.htlcs or s.remote_commit.spec.htlcs or s.remote_next_commit is not None:
        return
    if s.local_changes.all() or s.remote_changes.all():
        return
    s.phase = Phase.NEGOTIATING
    if simple_close.negotiated(core):
        s.closing = simple_close.start(core, closing, out)
        _simple_close_done(core)
    elif s.funder:
        _send(core, _preferred_fee(core), out)


def _plan(core: ChannelCore, fee_sat: int, dust_limit_sat: int) -> SpendPlan:
    s = core.state
    closing = _closing(core)
    assert s.local_commit is not None and s.funding_outpoint is not None and s.remote is not None
    spec = s.local_commit.spec
    return legacy_closing_tx(
        s.funding_outpoint, s.funding_sat,
        local_funding_pubkey=core.basepoints.funding_pubkey, remote_funding_pubkey=s.remote.basepoints.funding_pubkey,
        local_script=closing.local_script, remote_script=closing.remote_script,
        to_local_msat=spec.to_local_msat, to_remote_msat=spec.to_remote_msat,
        fee_sat=fee_sat, local_is_funder=s.funder, dust_limit_sat=dust_limit_sat,
    )  # fmt: skip


def _preferred_fee(core: ChannelCore) -> int:
    closing = _closing(core)
    weight = _plan(core, 0, core.state.config.dust_limit_sat).expected_weight()
    fee = weight * closing.feerate_per_kw // 1000
    return min(fee, closing.max_fee_sat) if closing.max_fee_sat is not None else fee


def _our_range(core: ChannelCore) -> tuple[int, int]:
    """What fee we accept: from half our preference up to our cap (the funder) or the funder's balance."""
    s = core.state
    closing = _closing(core)
    preferred = _preferred_fee(core)
    assert s.local_commit is not None
    funder_sat = (s.local_commit.spec.to_local_msat if s.funder else s.local_commit.spec.to_remote_msat) // 1000
    high = closing.max_fee_sat if closing.max_fee_sat is not None else (2 * preferred if s.funder else funder_sat)
    return min(preferred // 2, high), min(high, funder_sat)


def _send(core: ChannelCore, fee_sat: int, out: _Out) -> None:
    s = core.state
    from .commitments import compact_signature

    plan = _plan(core, fee_sat, s.config.dust_limit_sat)
    signature = compact_signature(plan.sign(0, "local_funding", core.secrets.funding_privkey))
    low, high = _our_range(core)
    tlvs = ClosingSigned.tlv_stream(fee_range={"min_fee_satoshis": min(low, fee_sat), "max_fee_satoshis": max(high, fee_sat)})
    s.closing = replace(_closing(core), last_sent_fee=fee_sat)
    out.send(ClosingSigned(channel_id=s.channel_id, fee_satoshis=fee_sat, signature=signature, tlvs=tlvs))


def _verified_plan(core: ChannelCore, msg: ClosingSigned) -> SpendPlan:
    s = core.state
    assert s.remote is not None
    for dust in (s.remote.dust_limit_sat, s.config.dust_limit_sat):
        try:
            plan = _plan(core, msg.fee_satoshis, dust)
        except ChannelError:
            continue
        if plan.verify(0, "remote_funding", msg.signature):
            return plan
    raise RemoteFault(f"closing_signed signature does not verify at fee {msg.fee_satoshis}", warning=True)


def _finish(core: ChannelCore, plan: SpendPlan, their_sig: bytes, out: _Out) -> None:
    from .state import Phase

    ours = plan.sign(0, "local_funding", core.secrets.funding_privkey)
    tx = plan.finalize({"local_funding": ours, "remote_funding": their_sig})
    core.state.phase = Phase.CLOSED
    out.emit(ChannelClosed(tx.serialize(), plan.fee_sat))


def _on_closing_signed(core: ChannelCore, msg: ClosingSigned, out: _Out) -> None:
    plan = _verified_plan(core, msg)
    before = _closing(core)
    closing = replace(before, last_received_fee=msg.fee_satoshis, ranged="fee_range" in msg.tlvs)
    core.state.closing = closing
    fee = msg.fee_satoshis
    if fee == closing.last_sent_fee:
        _finish(core, plan, msg.signature, out)
        return
    low, high = _our_range(core)
    if closing.ranged:
        _ranged(core, msg, plan, low, high, out)
        return
    # The halving negotiation: each offer strictly between the two previous ones, until they meet.
    previous = closing.last_sent_fee if closing.last_sent_fee is not None else _preferred_fee(core)
    received = before.last_received_fee
    if closing.last_sent_fee is not None and received is not None and not min(previous, received) < fee < max(previous, received):
        raise RemoteFault(f"closing fee {fee} is not between {previous} and {received}", warning=True)
    proposal = fee if abs(previous - fee) < 2 else (previous + fee) // 2
    _send(core, proposal, out)
    if proposal == fee:
        _finish(core, plan, msg.signature, out)


def _ranged(core: ChannelCore, msg: ClosingSigned, plan: SpendPlan, low: int, high: int, out: _Out) -> None:
    """BOLT 2's fee_range rules for one received closing_signed."""
    closing = _closing(core)
    fee = msg.fee_satoshis
    sent_range = closing.last_sent_fee is not None
    if sent_range and low <= fee <= high:
        _send(core, fee, out)  # inside the range we sent: accept by echoing it
        _finish(core, plan, msg.signature, out)
        return
    theirs = msg.tlvs["fee_range"]
    overlap_low, overlap_high = max(low, theirs.min_fee_satoshis), min(high, theirs.max_fee_satoshis)
    if overlap_low > overlap_high:
        raise RemoteFault(f"closing fee ranges do not overlap: ours {low}..{high}", warning=True)
    if core.state.funder:
        if not overlap_low <= fee <= overlap_high:
            raise RemoteFault(f"closing fee {fee} is outside both fee ranges")
        _send(core, fee, out)
        _finish(core, plan, msg.signature, out)
        return
    if sent_range:
        raise RemoteFault("the funder answered with another fee than ours")
    proposal = fee if overlap_low <= fee <= overlap_high else min(max(_preferred_fee(core), overlap_low), overlap_high)
    _send(core, proposal, out)
    if proposal == fee:
        _finish(core, plan, msg.signature, out)


def on_reestablished(core: ChannelCore, out: _Out) -> None:
    """After channel_reestablish: our shutdown again; a fee negotiation starts over."""
    from .state import Phase

    s = core.state
    closing = _closing(core)
    if not closing.shutdown_sent:
        return
    out.send(Shutdown(channel_id=s.channel_id, scriptpubkey=closing.local_script))
    if s.phase is Phase.NEGOTIATING:
        s.phase = Phase.SHUTDOWN
    s.closing = replace(
        closing, shutdown_received=False, last_sent_fee=None, last_received_fee=None,
        sent_complete=None, our_close_done=False, their_close_done=False,
    )  # fmt: skip
