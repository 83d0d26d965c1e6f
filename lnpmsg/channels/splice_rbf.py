"""Fee bumping of a splice (BOLT 2 "Channel Splicing": ``tx_init_rbf`` / ``tx_ack_rbf``), sans-IO.

While a signed splice waits for its confirmations, the quiescence initiator (the splice's
initiator or not) may propose a new version of it at a higher feerate (at least 25/24 of the
last one, :func:`~.dualfund_rbf.min_feerate`): ``tx_init_rbf``, answered by ``tx_ack_rbf`` or
``tx_abort``. The sender of ``tx_init_rbf`` is the initiator of the new interactive construction
(it adds the shared input and the funding output, and pays the common fields); each version
spends the same shared input, so any two of them double-spend each other. The commitments,
signatures and broadcast of the new version are the splice's own (:mod:`.splice_sign`).

Each side contributes what it contributed to the last version, from the same coins and outputs:
what its part owes more at the new feerate (the sender also pays the common fields, the shared
input and the funding output) comes out of its change when it added coins, else out of its
channel balance (its contribution shrinks by the difference).
Not done: a change of contributions (``funding_output_contribution``) beyond that fee, and
``require_confirmed_inputs`` with coins of ours.

The versions live in the splice session: the current one is ``ChannelState.splice``, the earlier
signed ones its ``previous`` (oldest first). An attempt that ends before our ``tx_signatures``
left (``tx_abort``, a disconnection, a refusal) restores the last version; one the peer forgets after
they left stays the current one, noted (:mod:`.splice_forgotten`). Until the lock every
``commitment_signed`` goes as a batch over every signed version (:mod:`.splice_batch`); the
version that reaches the channel's depth (or that the peer locks) becomes the current one
(:func:`make_current`) and ``splice_locked`` names it; at the switch the others are dropped
(:class:`SpliceVersionsDropped` names our coins only they spent).

Refused: a bump not from the quiescence initiator, outside quiescence, after the sender's
``splice_locked``, on a zero-conf channel, or taking out more than the sender's balance (a
warning and a disconnection); a feerate below 25/24 of the last, an eleventh pending attempt, a
bump while the last version is not signed or once a version is in a block (it could not confirm),
one sooner than ``OpeningPolicy.rbf_wait_blocks`` blocks after the last version was signed (BOLT 2's
SHOULD about an attempt "created recently": time for that one to confirm; the sender waits as well),
or a contribution that cannot pay (``tx_abort``); at ``tx_complete``, a version paying less total
fee than the one it replaces (the interactive session's check,
:attr:`~.interactive_tx.InteractiveTx.replaces_fee_sat`, as for v2 opens' bumps).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.wallet.spend import dust_limit

from .dualfund_rbf import min_feerate
from .errors import LocalMisuse, RemoteFault
from .interactive_parts import OwnInput, contribution_fee, inputs_besides, own_outpoints
from .messages_v2 import TxAbort, TxAckRbf, TxInitRbf
from .quiesce import is_quiescent, local_initiator
from .ready import is_zeroconf

if TYPE_CHECKING:
    from .splice import SpliceSession
    from .state import ChannelCore, _Out

__all__ = [
    "MAX_RBF_ATTEMPTS",
    "SpliceBump",
    "SpliceTipHeight",
    "SpliceVersionsDropped",
    "blocks_since_signed",
    "bump_refusal",
    "check_bump",
    "dropped_inputs",
    "find_version",
    "make_current",
    "on_ack_rbf",
    "on_block_height",
    "on_tip_height",
    "on_bump",
    "on_init_rbf",
    "restore_previous",
    "signed_versions",
    "status",
    "update_version",
    "versions",
]

#: BOLT 2: more pending RBF attempts than this are refused (each adds a commitment to every batch)
MAX_RBF_ATTEMPTS = 10
#: a block height, not a time: what a splice's locktime may be
_LOCKTIME_THRESHOLD = 500_000_000


@dataclass(frozen=True, slots=True)
class SpliceBump:
    """Bump the fee of the pending splice to ``feerate_per_kw`` (``tx_init_rbf``); the channel is
    quiescent and we are the quiescence initiator."""

    feerate_per_kw: int
    locktime: int
    #: the chain's height when given (the shell's tip; None: unknown): the blocks since the last version
    #: was signed count from it, also those mined while the node was stopped
    height: int | None = None


@dataclass(frozen=True, slots=True)
class SpliceTipHeight:
    """Input from the shell at its start: the chain's tip is at ``height`` (no new block): the blocks
    mined while the node was stopped count for the wait before a bump of the splice's last version."""

    height: int


@dataclass(frozen=True, slots=True)
class SpliceVersionsDropped:
    """Event: the splice switched to ``confirmed``; its other versions are gone. ``inputs``: our
    coins only they spent (free them)."""

    confirmed: OutPoint
    inputs: tuple[OwnInput, ...]


# ---------------------------------------------------------------- the versions


def versions(sp: SpliceSession) -> tuple[SpliceSession, ...]:
    """Every version of the splice, oldest first, the current one (``sp``) last."""
    return (*sp.previous, sp)


def signed_versions(core: ChannelCore) -> tuple[SpliceSession, ...]:
    """The versions both signed (they may confirm: each gets a commitment in every batch)."""
    from .splice import SpliceSession

    sp = core.state.splice
    if not isinstance(sp, SpliceSession):
        return ()
    return tuple(v for v in versions(sp) if v.signed)


def find_version(core: ChannelCore, txid: bytes) -> SpliceSession | None:
    """The signed version whose transaction is ``txid`` (None: none)."""
    return next((v for v in signed_versions(core) if v.outpoint is not None and v.outpoint.txid == txid), None)


def update_version(core: ChannelCore, new: SpliceSession) -> None:
    """Put ``new`` in place of the version with its outpoint."""
    from .splice import SpliceSession

    sp = core.state.splice
    assert isinstance(sp, SpliceSession)
    if new.outpoint == sp.outpoint:
        core.state.splice = replace(new, previous=sp.previous)
    else:
        core.state.splice = replace(sp, previous=tuple(new if v.outpoint == new.outpoint else v for v in sp.previous))


def make_current(core: ChannelCore, version: SpliceSession) -> SpliceSession:
    """``version`` (signed) confirmed, or the peer locked it: it is the current version, the others
    its ``previous`` until the switch, our coins only they spent freed then (an attempt our
    signatures did not leave is dropped now: it can no longer confirm, and it holds nothing; one the
    peer forgot is kept with the others: :mod:`.splice_forgotten`). Returns it."""
    from .splice import SpliceSession

    sp = core.state.splice
    assert isinstance(sp, SpliceSession)
    if version.outpoint == sp.outpoint:
        return sp
    others = tuple(v for v in versions(sp) if (v.signed or v.signatures_sent) and v.outpoint != version.outpoint)
    core.state.splice = current = replace(version, previous=others)
    return current


def dropped_inputs(sp: SpliceSession) -> tuple[OwnInput, ...]:
    """Our coins that only ``sp``'s other versions spent."""
    return inputs_besides((v.inputs for v in sp.previous), own_outpoints(sp.inputs))


def restore_previous(core: ChannelCore) -> tuple[OwnInput, ...]:
    """The current attempt ended before our signatures left: the last version stands again.
    Returns our coins only the attempt used."""
    from .splice import SpliceSession

    sp = core.state.splice
    assert isinstance(sp, SpliceSession) and sp.previous and not sp.signatures_sent
    last = sp.previous[-1]
    core.state.splice = replace(last, previous=sp.previous[:-1])
    kept = set().union(*(own_outpoints(v.inputs) for v in sp.previous))
    return tuple(i for i in sp.inputs if i.outpoint not in kept)


# ---------------------------------------------------------------- the attempt


def _fee_as(sp: SpliceSession, feerate: int, *, initiator: bool) -> int:
    """What our inputs and outputs of ``sp`` owe at ``feerate``, with the shared input, the funding
    output and the common fields when we are the initiator."""
    scripts = [Tx.parse(i.prevtx).outputs[i.vout].script_pubkey for i in sp.inputs]
    outs = [o.script for o in sp.outputs]
    if initiator:
        scripts.append(sp.shared.script)
        outs.append(sp.shared.script)  # (a P2WSH as the new funding output is)
    return contribution_fee(scripts, outs, feerate, initiator=initiator)


def _attempt(core: ChannelCore, sp: SpliceSession, feerate: int, locktime: int, *, sender: bool, their_contribution: int,
             height: int | None = None) -> SpliceSession:  # fmt: skip
    """The new version's session: ``sender`` (we sent tx_init_rbf) makes us its initiator. What our
    part owes more at the new feerate (and in its new role) comes out of our change when we added
    coins, else out of our balance (our contribution shrinks). ``height``: the chain's (None: the
    least it can be, the last version's signed height and the blocks counted since)."""
    from .splice import SpliceSession, session

    ours, outputs = sp.our_contribution, sp.outputs
    extra = _fee_as(sp, feerate, initiator=sender) - _fee_as(sp, sp.feerate_per_kw, initiator=sp.initiator)
    if extra > 0:
        change = outputs[0] if sp.inputs and outputs else None
        if change is not None and change.sats - extra >= dust_limit(change.script):
            outputs = (replace(change, sats=change.sats - extra), *outputs[1:])
        else:
            ours -= extra
    # the core has no randomness: the serial ids of an attempt derive from the last version's
    entropy = sha256(sp.entropy + (len(sp.previous) + 1).to_bytes(4, "big"))
    return SpliceSession(
        sender, feerate, locktime, ours, their_contribution, sp.remote_funding_pubkey, sp.shared, sp.inputs, outputs,
        entropy, acked=not sender, previous=(*sp.previous, replace(sp, previous=())),
        replaces_fee_sat=session(core, sp).total_fee_sat(),
        height=height if height is not None else _least_height(sp, None if sender else locktime),
    )  # fmt: skip


def blocks_since_signed(sp: SpliceSession, height: int | None = None) -> int:
    """The blocks mined since the version ``sp`` was signed: those the channel counted, or, the chain
    being at ``height``, those since its signed height (the blocks mined while the node was stopped too)."""
    if height is None or sp.signed_height is None:
        return sp.blocks_waited
    return max(sp.blocks_waited, height - sp.signed_height)


def _least_height(sp: SpliceSession, claimed: int | None) -> int | None:
    """The chain's height for a version the peer starts: the least it can be (the last version's signed
    height and the blocks counted since), or the peer's locktime when higher (its tip, as a node sets it;
    one past the chain's tip is brought down at the next block: :func:`on_block_height`)."""
    floor = sp.signed_height + sp.blocks_waited if sp.signed_height is not None else None
    return max(floor or 0, claimed or 0) or None


def bump_refusal(core: ChannelCore, feerate: int, *, sender_is_local: bool, height: int | None = None) -> str | None:
    """Why the splice cannot be bumped to ``feerate`` now, whoever asks (None: it can). The
    quiescence is the caller's check (the shell checks this before quiescing). ``height``: the
    chain's, when known (the wait before a bump counts from the last version's signed height)."""
    from .splice import SpliceSession

    s = core.state
    sp = s.splice
    if not isinstance(sp, SpliceSession):
        return "no splice is pending"
    if not sp.signed:
        return "the last version of the splice is not signed yet"
    if is_zeroconf(s):
        return "option_zeroconf: a splice of a zero-conf channel is not bumped (BOLT 2)"
    if any(v.locked_sent if sender_is_local else v.locked_received for v in versions(sp)):
        return f"{'we' if sender_is_local else 'the peer'} sent splice_locked"
    if any(v.mined for v in versions(sp)):
        return "a version of the splice is in a block: a new one could not confirm"
    if len(sp.previous) >= MAX_RBF_ATTEMPTS:
        return f"{MAX_RBF_ATTEMPTS} fee bumps of the splice are pending already"
    if feerate < min_feerate(sp.feerate_per_kw):
        return f"feerate {feerate} is below 25/24 of {sp.feerate_per_kw} ({min_feerate(sp.feerate_per_kw)})"
    if (waited := blocks_since_signed(sp, height)) < (wait := s.policy.rbf_wait_blocks):
        return f"the last version of the splice was signed {waited} block(s) ago: a bump waits for {wait} (time for it to confirm)"
    return None


def on_block_height(core: ChannelCore, height: int) -> None:
    """A block at ``height`` was mined: it counts for the wait before a bump of the signed splice's last
    version, with the blocks mined since its signed height (while the node was stopped too). A version
    whose signed height is unknown (the peer's first, no block seen while it was negotiated) takes the
    block before this one; one being negotiated notes the height."""
    from .splice import SpliceSession

    s = core.state
    sp = s.splice
    if not isinstance(sp, SpliceSession) or sp.locked_sent:
        return
    if not sp.signed:
        if not sp.signatures_sent and (sp.height is None or sp.height < height):  # (negotiated now)
            s.splice = replace(sp, height=height)
        return
    # (a new block: the version was signed before it, whatever height the peer's locktime claimed)
    since = min(sp.signed_height, height - 1) if sp.signed_height is not None else height - 1
    waited = min(s.policy.rbf_wait_blocks, max(sp.blocks_waited + 1, height - since))
    if waited > sp.blocks_waited or since != sp.signed_height:
        s.splice = replace(sp, blocks_waited=max(waited, sp.blocks_waited), signed_height=since)


def on_tip_height(core: ChannelCore, height: int) -> None:
    """At start the chain is at ``height``: the blocks mined since the last version's signed height count."""
    from .splice import SpliceSession

    s = core.state
    sp = s.splice
    if not isinstance(sp, SpliceSession) or not sp.signed or sp.locked_sent or sp.signed_height is None:
        return
    waited = min(s.policy.rbf_wait_blocks, height - sp.signed_height)
    if waited > sp.blocks_waited:
        s.splice = replace(sp, blocks_waited=waited)


def _check_ours(core: ChannelCore, attempt: SpliceSession) -> None:
    """Our contribution to ``attempt`` fits our balance and pays its way (LocalMisuse if not)."""
    from .splice import check_contribution, session

    check_contribution(core, attempt.our_contribution)
    session(core, attempt)


def check_bump(core: ChannelCore, feerate: int, locktime: int, height: int | None = None) -> None:
    """What :class:`SpliceBump` refuses but the quiescence (LocalMisuse): for the shell, before it quiesces
    (``height``: the chain's, when known)."""
    from .splice import SpliceSession

    why = bump_refusal(core, feerate, sender_is_local=True, height=height)
    if why is None and not 0 <= locktime < _LOCKTIME_THRESHOLD:
        why = "the locktime must be a block height"
    if why is not None:
        raise LocalMisuse(f"cannot bump the splice: {why}")
    sp = core.state.splice
    assert isinstance(sp, SpliceSession)
    try:
        _check_ours(core, _attempt(core, sp, feerate, locktime, sender=True, their_contribution=sp.their_contribution, height=height))
    except LocalMisuse as exc:
        raise LocalMisuse(f"cannot bump the splice: {exc}") from None


def on_bump(core: ChannelCore, cmd: SpliceBump, out: _Out) -> None:
    """Our bump: ``tx_init_rbf`` (the peer's contribution is its last one until its ``tx_ack_rbf``)."""
    from .splice import SpliceSession

    s = core.state
    if not is_quiescent(s):
        raise LocalMisuse("cannot bump the splice: the channel is not quiescent")
    if not local_initiator(s):
        raise LocalMisuse("cannot bump the splice: the peer initiated the quiescence")
    check_bump(core, cmd.feerate_per_kw, cmd.locktime, cmd.height)
    sp = s.splice
    assert isinstance(sp, SpliceSession)
    attempt = _attempt(core, sp, cmd.feerate_per_kw, cmd.locktime, sender=True, their_contribution=sp.their_contribution,
                       height=cmd.height)  # fmt: skip
    s.splice = attempt
    tlvs = {"funding_output_contribution": attempt.our_contribution} if attempt.our_contribution else {}
    out.send(TxInitRbf(channel_id=s.channel_id, locktime=cmd.locktime, feerate=cmd.feerate_per_kw, tlvs=TxInitRbf.tlv_stream(tlvs)))


def on_init_rbf(core: ChannelCore, msg: TxInitRbf, out: _Out) -> None:
    """The peer's bump: checked (BOLT 2), then ``tx_ack_rbf`` with our last contribution, or ``tx_abort``."""
    from .splice import SpliceSession, balances_sat, reserve_after

    s = core.state
    sp = s.splice
    assert isinstance(sp, SpliceSession)
    if not is_quiescent(s):
        raise RemoteFault("tx_init_rbf: the channel is not quiescent", warning=True)
    if local_initiator(s):
        raise RemoteFault("tx_init_rbf: only the quiescence initiator may bump the splice", warning=True)
    if any(v.locked_received for v in versions(sp)):
        raise RemoteFault("tx_init_rbf after the peer's splice_locked", warning=True)
    if is_zeroconf(s):
        raise RemoteFault("tx_init_rbf on a zero-conf channel (option_zeroconf)", warning=True)
    _, theirs = balances_sat(core)
    contribution = msg.tlvs.get("funding_output_contribution", 0)
    if contribution < 0 and -contribution > theirs:
        raise RemoteFault(f"tx_init_rbf takes {-contribution} sat out of a balance of {theirs} sat", warning=True)
    refusal = bump_refusal(core, msg.feerate, sender_is_local=False)
    if refusal is None and sp.locked_sent:  # (a splice stored before ``mined`` was)
        refusal = "a version of the splice is locked on our side: a new one could not confirm"
    if refusal is None and msg.locktime >= _LOCKTIME_THRESHOLD:
        refusal = "the locktime must be a block height"
    if refusal is None and not s.policy.min_feerate_per_kw <= msg.feerate <= s.policy.max_feerate_per_kw:
        refusal = f"feerate {msg.feerate} outside {s.policy.min_feerate_per_kw}..{s.policy.max_feerate_per_kw}"
    if refusal is None and "require_confirmed_inputs" in msg.tlvs and sp.inputs:
        refusal = "confirmed inputs required: not supported"
    capacity = s.funding_sat + contribution + sp.our_contribution
    if refusal is None and contribution < 0 and theirs + contribution < reserve_after(core, capacity, ours=False):
        refusal = "the bump would leave the sender below its reserve"
    attempt = None
    if refusal is None:
        attempt = _attempt(core, sp, msg.feerate, msg.locktime, sender=False, their_contribution=contribution)
        try:
            _check_ours(core, attempt)
        except LocalMisuse as exc:
            refusal = f"our contribution cannot follow: {exc}"
    if refusal is not None or attempt is None:
        s.quiesce = None  # the bump quiescence was for ends here; the last version stands
        out.send(TxAbort(channel_id=s.channel_id, data=(refusal or "refused").encode()))
        return
    s.splice = attempt
    ours = attempt.our_contribution
    out.send(TxAckRbf(channel_id=s.channel_id, tlvs=TxAckRbf.tlv_stream({"funding_output_contribution": ours} if ours else {})))


def on_ack_rbf(core: ChannelCore, msg: TxAckRbf, out: _Out) -> None:
    """The peer's answer to our bump: the attempt's interactive construction starts."""
    from .splice import SpliceSession, take_ack

    sp = core.state.splice
    if not isinstance(sp, SpliceSession) or not sp.previous or not sp.initiator or sp.acked:
        raise RemoteFault("tx_ack_rbf without our tx_init_rbf", warning=True)
    take_ack(core, msg.tlvs.get("funding_output_contribution", 0), sp.remote_funding_pubkey, msg.tlvs, out, "tx_ack_rbf")


def status(sp: SpliceSession) -> list[dict[str, Any]]:
    """For ``listchannels``: the splice's other versions (txid, feerate; ``peer_forgot`` for one the peer
    forgot, kept until the switch), oldest first."""
    return [{"txid": v.outpoint.txid_hex, "feerate_per_kw": v.feerate_per_kw, **({"peer_forgot": True} if v.peer_forgot else {})}
            for v in sp.previous if v.outpoint is not None]  # fmt: skip
