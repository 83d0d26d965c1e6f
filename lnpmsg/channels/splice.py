"""Channel splicing (BOLT 2 "Channel Splicing", ``option_splice``, bits 62/63) in the channel core, sans-IO.

A splice replaces the funding transaction of an open channel with a new one that spends it:
funds go in (a splice-in from our wallet's coins) or out (to an address), and the channel goes
on, with the new capacity, once the new funding is deep enough on both sides. The steps:

- the channel is quiescent and we are the quiescence initiator (:mod:`.quiesce`); the shell then
  gives :class:`SpliceCommand` (our contribution, its coins or its output, the feerate) and
  ``splice_init`` leaves; the peer answers ``splice_ack`` (contributing nothing here when it is
  us: a splice we did not start adds none of our coins) or ``tx_abort``;
- the splice transaction is built with the interactive protocol (:mod:`.interactive_tx`): the
  initiator adds the shared input (the current funding output, ``shared_input_txid``, no
  ``prevtx``) and the new funding output, the old capacity with both contributions applied;
- its commitments and signatures (:mod:`.splice_sign`): ``commitment_signed`` for the new
  funding (same commitment numbers, balances moved by the contributions), then
  ``tx_signatures`` with the shared input's ``shared_input_signature``; then quiescence ends
  and the splice transaction is broadcast (:class:`~.inputs.BroadcastFunding`);
- at the channel's minimum depth (:class:`SpliceDepth`, from the shell; a zero-conf channel at
  once) ``splice_locked`` leaves; once both sent it the channel switches to the new funding (capacity, balances,
  commitments, short channel id): :class:`Spliced`.

Who refuses what: a peer's ``splice_init`` outside quiescence, from the quiescence non-initiator,
during another splice, after a ``shutdown``, or taking out more than its balance is a warning
(and a disconnection); an unacceptable feerate or a splice-out that would leave the sender below
its reserve gets ``tx_abort``. A negotiation that ends before our ``tx_signatures`` left
(``tx_abort``, a disconnection, a bad message) leaves the channel as it was
(:class:`SpliceAborted` frees our coins). Between the signatures and the lock the channel works,
each ``commitment_signed`` sent for both fundings (:mod:`.splice_batch`); no ``shutdown`` either
way then (BOLT 2: not before the splice is locked). Either side may then bump the splice's fee
(``tx_init_rbf``, :mod:`.splice_rbf`): the splice has several versions until one locks.

The negotiation is kept as its inputs, as :mod:`.dualfund` keeps its own: the interactive
session is rebuilt from them, so the state stays immutable values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import p2wsh
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.wire import Error

from . import splice_batch, splice_forgotten, splice_rbf, splice_sign
from .dualfund import printable
from .errors import LocalMisuse, RemoteFault
from .inputs import CloseChannel, Disconnected, Received, Reconnected
from .interactive_tx import InteractiveTx, SessionState
from .interactive_parts import FundingOutput, OwnInput, OwnOutput, SharedInput
from .messages import CommitmentSigned, Shutdown
from .messages_splice import SpliceAck, SpliceInit, SpliceLocked, StartBatch
from .messages_v2 import TxAbort, TxAckRbf, TxInitRbf, TxSignatures
from .quiesce import is_quiescent, local_initiator
from .script import funding_script

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = [
    "SPLICE_BITS",
    "SpliceAborted",
    "SpliceCommand",
    "SpliceDepth",
    "SpliceSession",
    "Spliced",
    "SplicedFrom",
    "check_contribution",
    "dispatch",
    "new_capacity",
    "next_keys",
    "splice_status",
]

#: option_splice (BOLT 9)
SPLICE_BITS = (62, 63)

_INTERACTIVE = ("TxAddInput", "TxAddOutput", "TxRemoveInput", "TxRemoveOutput", "TxComplete")
#: messages a pending splice lets through to the channel
_PASSING = ("WarningMessage", "ChannelReestablish", "ChannelReady")


# ---------------------------------------------------------------- inputs and events


@dataclass(frozen=True, slots=True)
class SpliceCommand:
    """Splice the quiescent channel (we are the quiescence initiator).

    ``contribution_sat``: what our balance gains (a splice-in: what ``inputs`` pay in) or, negative,
    loses (a splice-out: ``outputs`` plus our share of the fee). ``peer_supports``: the peer's
    ``init`` offers ``option_splice``.
    """

    contribution_sat: int
    feerate_per_kw: int
    locktime: int
    inputs: tuple[OwnInput, ...]
    outputs: tuple[OwnOutput, ...]
    entropy: bytes
    peer_supports: bool
    #: the chain's height when given (the shell's tip; None: unknown): the wait before a bump counts from it
    height: int | None = None


@dataclass(frozen=True, slots=True)
class SpliceDepth:
    """Input from the shell: the pending splice transaction ``txid`` is ``depth`` blocks deep at ``short_channel_id``
    (depth 0: a version seen in a block is no longer in the chain, a reorganization took it out)."""

    txid: bytes
    depth: int
    short_channel_id: int


@dataclass(frozen=True, slots=True)
class SpliceAborted:
    """Event: the splice ended before our signatures left (or, forgotten by the peer, once one of its
    inputs was spent elsewhere: :mod:`.splice_forgotten`); the channel stays on its funding.
    ``inputs``: our coins it would have spent (free them)."""

    reason: str
    inputs: tuple[OwnInput, ...]


@dataclass(frozen=True, slots=True)
class Spliced:
    """Event: both sent ``splice_locked``: the channel now runs on ``funding_outpoint``."""

    funding_outpoint: OutPoint
    capacity_sat: int
    short_channel_id: int
    #: the splice as it locked
    session: SpliceSession | None = None


@dataclass(frozen=True, slots=True)
class SplicedFrom:
    """What the channel monitor's move onto a splice's funding needs of the splice (``ChannelState.spliced_from``,
    kept from the switch on, so that a move after a restart has it too): the peer's commitments the
    old monitor knows on ``funding_outpoint`` (the funding the splice spent) from ``first_remote_number``
    on exist on the splice's funding too, each side's balance moved by its contribution.

    ``old_through``: the last of those signed on the old funding before the switch (None: the switch has
    not come); the old monitor, fed until its move, learns the later ones as the splice's (not moved)."""

    funding_outpoint: OutPoint
    first_remote_number: int | None
    our_contribution: int
    their_contribution: int
    old_through: int | None = None


@dataclass(frozen=True, slots=True)
class SpliceSession:
    """A splice in progress (``ChannelState.splice``): what rebuilds its interactive session, its
    commitments and signatures, and how far its locking went."""

    initiator: bool
    feerate_per_kw: int
    locktime: int
    our_contribution: int
    their_contribution: int
    #: the peer's funding key for the new funding output (ours stays the channel's)
    remote_funding_pubkey: bytes
    shared: SharedInput
    inputs: tuple[OwnInput, ...]
    outputs: tuple[OwnOutput, ...]
    entropy: bytes
    acked: bool = False
    received: tuple[Any, ...] = ()
    #: once the transaction is complete: the new funding and our commitments on it
    outpoint: OutPoint | None = None
    tx: bytes | None = None
    local_commit: Any = None  # LocalCommit on the new funding (the peer's signature)
    remote_commit: Any = None  # RemoteCommit on the new funding (we signed)
    #: while the splice waits to lock: the peer's next commitment on it, until the peer revokes (:mod:`.splice_batch`)
    remote_next_commit: Any = None
    our_witnesses: tuple[tuple[bytes, ...], ...] | None = None
    their_signatures: TxSignatures | None = None
    signatures_sent: bool = False
    #: both signatures in: ``tx`` is the signed transaction (broadcast)
    signed: bool = False
    locked_sent: bool = False
    locked_received: bool = False
    short_channel_id: int = 0
    #: the peer's commitment number when the splice was signed: its commitments on the splice's
    #: funding are numbered from there (None: a session stored before it was recorded)
    first_remote_number: int | None = None
    #: the earlier signed versions of the splice this one bumps the fee of, oldest first (:mod:`.splice_rbf`)
    previous: tuple[Any, ...] = ()
    #: this version was seen in a block (no bump then: a new version could not confirm)
    mined: bool = False
    #: a bump's version: the total fee of the version it replaced (it pays at least that; None: the first)
    replaces_fee_sat: int | None = None
    #: blocks seen since this version was signed, counted up to the policy's ``rbf_wait_blocks``
    #: (a bump waits for them: BOLT 2's "created recently")
    blocks_waited: int = 0
    #: the peer answered our ``next_funding`` with tx_abort once our tx_signatures had left: it forgot
    #: the splice, which only it could complete with our signatures. BOLT 2 has us keep it until one
    #: of its inputs is spent by another transaction (:mod:`.splice_forgotten`)
    peer_forgot: bool = False
    #: the chain's height as known when this version's negotiation started: our command's, else (a
    #: version the peer started) a block seen meanwhile or the least it can be (:mod:`.splice_rbf`)
    height: int | None = None
    #: the chain's height when this version was signed (None: unknown, a session stored before it was
    #: recorded): ``blocks_waited`` counts from it, also the blocks mined while the node was stopped
    signed_height: int | None = None


def new_capacity(s: Any, splice: SpliceSession) -> int:
    """The new funding output's value: the old capacity and both contributions."""
    return int(s.funding_sat) + splice.our_contribution + splice.their_contribution


def splice_status(s: Any) -> dict[str, Any] | None:
    """For ``listchannels``: the pending splice (None: none)."""
    sp = s.splice
    if not isinstance(sp, SpliceSession):
        return None
    stage = "locked_sent" if sp.locked_sent else "awaiting_depth" if sp.signed else "signing" if sp.outpoint else "negotiating"
    return {
        "stage": stage,
        "initiator": "local" if sp.initiator else "remote",
        "our_contribution_sat": sp.our_contribution,
        "their_contribution_sat": sp.their_contribution,
        "new_capacity_sat": new_capacity(s, sp),
        "funding_txid": sp.outpoint.txid_hex if sp.outpoint else None,
        "feerate_per_kw": sp.feerate_per_kw,
        "peer_locked": sp.locked_received,
        #: the peer forgot it after our tx_signatures left: it ends once one of its inputs is spent elsewhere
        "peer_forgot": sp.peer_forgot,
        #: the earlier versions a fee bump replaced, still valid until one version confirms
        "previous_versions": splice_rbf.status(sp),
    }


def session(core: ChannelCore, sp: SpliceSession | None = None) -> InteractiveTx:
    """The splice's interactive session (``sp``, default: the pending one), rebuilt from the state (deterministic)."""
    s = core.state
    sp = sp if sp is not None else s.splice
    assert isinstance(sp, SpliceSession)
    ours = sp.shared.sats + sp.our_contribution if sp.initiator else sp.our_contribution
    theirs = sp.their_contribution if sp.initiator else sp.shared.sats + sp.their_contribution
    funding = FundingOutput(_new_script(core, sp), ours, theirs)
    tx = InteractiveTx(
        channel_id=s.channel_id, initiator=sp.initiator, feerate_per_kw=sp.feerate_per_kw, locktime=sp.locktime,
        dust_limit_sat=s.config.dust_limit_sat, inputs=list(sp.inputs), outputs=list(sp.outputs), funding=funding,
        entropy=sp.entropy, shared_input=sp.shared, replaces_fee_sat=sp.replaces_fee_sat,
    )  # fmt: skip
    tx.start_messages = tx.start() if sp.acked else []
    for msg in sp.received:
        tx.receive(msg)
    if sp.our_witnesses is not None and tx.state is SessionState.COMPLETE:
        tx.our_signatures(list(sp.our_witnesses))
    if sp.their_signatures is not None:
        tx.receive_signatures(sp.their_signatures)
    return tx


def next_keys(core: ChannelCore) -> tuple[Any, Any]:
    """Our secrets and basepoints with the new funding key of the splice in progress (BOLT 2: a new one per splice)."""
    return core.keyed(core.state.funding_key_index + 1)


def _new_script(core: ChannelCore, sp: SpliceSession) -> bytes:
    return p2wsh(funding_script(next_keys(core)[1].funding_pubkey, sp.remote_funding_pubkey))


def _shared_input(core: ChannelCore) -> SharedInput:
    s = core.state
    assert s.funding_outpoint is not None and s.remote is not None
    old = p2wsh(funding_script(core.basepoints.funding_pubkey, s.remote.basepoints.funding_pubkey))
    return SharedInput(s.funding_outpoint, s.funding_sat, old)


# ---------------------------------------------------------------- dispatch


def dispatch(core: ChannelCore, item: Any, out: _Out) -> bool:
    """The splice's inputs, and its limits on the others while a splice is pending: True when handled."""
    s = core.state
    sp = s.splice if isinstance(s.splice, SpliceSession) else None
    msg = item.message if isinstance(item, Received) else None
    if isinstance(item, SpliceCommand):
        _on_command(core, item, out)
        return True
    if isinstance(item, splice_rbf.SpliceBump):
        splice_rbf.on_bump(core, item, out)
        return True
    if isinstance(item, splice_rbf.SpliceTipHeight):
        splice_rbf.on_tip_height(core, item.height)
        return True
    if isinstance(item, SpliceDepth):
        if sp is not None:
            splice_sign.on_depth(core, item, out)
        return True
    if isinstance(item, splice_forgotten.SpliceInputSpent):
        if sp is not None:
            splice_forgotten.on_input_spent(core, sp, item.outpoint, out)
        return True
    if isinstance(item, splice_forgotten.ForgottenSpliceMined):
        if sp is not None:
            splice_forgotten.on_mined(core, sp, item.tx)
        return True
    if isinstance(item, Disconnected):
        s.batch_size, s.batch = 0, ()  # (a batch cut by the disconnection comes again whole)
        s.splice_locked_owed = None  # (the next channel_reestablish names our lock)
        if sp is not None and not splice_sign.kept(core):
            _abort(core, out, "disconnected while splicing", send=False)
        return False  # (the channel's own disconnection follows)
    if isinstance(item, Reconnected):
        splice_sign.ask_witnesses_again(core, out)
        return False  # (channel_reestablish follows)
    if msg is not None and (s.awaiting_reestablish or not s.connected):
        return False  # channel_reestablish first (reestablish.py refuses anything before it)
    if isinstance(msg, SpliceInit):
        _on_splice_init(core, msg, out)
        return True
    if isinstance(msg, SpliceLocked):
        splice_sign.on_splice_locked(core, msg, out)
        return True
    if isinstance(msg, StartBatch):
        splice_batch.on_start_batch(core, msg, out)
        return True
    if isinstance(msg, CommitmentSigned) and (s.batch_size or (sp is not None and (sp.signed or (sp.previous and sp.local_commit is not None)))):
        return splice_batch.on_commitment_signed(core, msg, out)
    if sp is None:
        if isinstance(msg, SpliceAck):
            raise RemoteFault("splice_ack without our splice_init", warning=True)
        return False
    if isinstance(msg, SpliceAck):
        _on_splice_ack(core, msg, out)
    elif isinstance(msg, TxInitRbf) and not sp.signed and not sp.signatures_sent:
        _abort(core, out, "tx_init_rbf while the splice is negotiated", send=True)
    elif isinstance(msg, TxInitRbf):
        splice_rbf.on_init_rbf(core, msg, out)
    elif isinstance(msg, TxAckRbf):
        splice_rbf.on_ack_rbf(core, msg, out)
    elif isinstance(msg, TxAbort):
        if sp.signatures_sent:
            splice_forgotten.on_tx_abort(core, sp)
            return True  # BOLT 2: our signatures left, the splice may confirm: kept, no echo
        _abort(core, out, f"peer aborted: {printable(msg.data)}", send=True, echo=True)
    elif type(msg).__name__ in _INTERACTIVE:
        if sp.outpoint is not None:
            raise RemoteFault(f"{type(msg).__name__} after the splice transaction completed", warning=True)
        _on_interactive(core, msg, out)
    elif isinstance(msg, CommitmentSigned) and sp.outpoint is not None and sp.local_commit is None:
        splice_sign.on_commitment_signed(core, msg, out)
    elif isinstance(msg, TxSignatures) and sp.outpoint is not None and not sp.signed:
        splice_sign.on_tx_signatures(core, msg, out)
    elif isinstance(msg, TxSignatures):
        return True  # a retransmission of signatures we have
    elif msg is not None and (sp.signed or sp.previous) and isinstance(msg, Shutdown):
        raise RemoteFault(f"shutdown while the splice {sp.outpoint.txid_hex} is not locked (not supported here)",  # type: ignore[union-attr]
                          warning=True)  # fmt: skip
    elif (sp.signed or sp.previous) and isinstance(item, CloseChannel):
        raise LocalMisuse(f"a splice is waiting to lock ({sp.outpoint.txid_hex}): close once both sent splice_locked")  # type: ignore[union-attr]
    elif sp.peer_forgot and not sp.signed and type(item).__name__ == "AddHtlc":  # (its answer would fail the channel)
        raise LocalMisuse("the peer forgot the pending splice, which may still confirm: no update until it ends")
    elif type(item).__name__ == "FundingWitnesses":
        splice_sign.on_witnesses(core, item, out)
    elif msg is not None and not sp.signed and not isinstance(msg, Error) and type(msg).__name__ not in _PASSING:
        if sp.signatures_sent:
            raise RemoteFault(f"unexpected {type(msg).__name__} while waiting for the splice's tx_signatures")
        _abort(core, out, f"unexpected {type(msg).__name__} during the splice", send=True)
    else:
        return False
    return True


def _abort(core: ChannelCore, out: _Out, reason: str, *, send: bool, echo: bool = False) -> None:
    """End the splice before our signatures left: tx_abort (when connected), coins freed, channel as it
    was (a fee bump's attempt: the last version of the splice stands again)."""
    s = core.state
    sp = s.splice
    assert isinstance(sp, SpliceSession) and not sp.signatures_sent
    if send and s.connected:
        out.send(TxAbort(channel_id=s.channel_id, data=b"echo" if echo else reason.encode()))
    if sp.previous:
        freed = splice_rbf.restore_previous(core)
    else:
        s.splice, freed = None, sp.inputs
    s.quiesce = None  # BOLT 2: the splice was the protocol quiescence was for; it ended
    out.emit(SpliceAborted(reason, freed))


def _check_usable(core: ChannelCore, *, remote: bool) -> None:
    """The common rules of splice_init (BOLT 2): quiescent, its initiator, channel_ready both ways, no
    shutdown, no other splice. The peer's breach is a warning, ours a misuse."""
    from .state import Phase

    s = core.state
    fail = (lambda why: RemoteFault(f"splice_init: {why}", warning=True)) if remote else (lambda why: LocalMisuse(f"cannot splice: {why}"))
    if s.phase is not Phase.NORMAL or s.closing is not None:
        raise fail(f"the channel is {s.phase.value}" if s.phase is not Phase.SHUTDOWN else "a shutdown was sent or received")
    if not is_quiescent(s):
        raise fail("the channel is not quiescent")
    if local_initiator(s) is remote:
        raise fail("only the quiescence initiator may splice" if remote else "the peer initiated the quiescence")
    if not (s.ready_sent and s.ready_received):
        raise fail("channel_ready was not exchanged")
    if s.splice is not None:
        raise fail("another splice is pending")
    if s.local_commit is None or s.remote_commit is None or s.remote_next_commit is not None or s.funding_outpoint is None:
        raise fail("the commitments are not settled")


def balances_sat(core: ChannelCore) -> tuple[int, int]:
    """(ours, theirs) in whole satoshis on our current commitment."""
    spec = core.state.local_commit.spec  # type: ignore[union-attr]
    return spec.to_local_msat // 1000, spec.to_remote_msat // 1000


def reserve_after(core: ChannelCore, capacity_sat: int, *, ours: bool) -> int:
    """The reserve a side keeps once spliced: the channel's, or 1% of the new capacity if higher."""
    s = core.state
    assert s.remote is not None
    kept = s.remote.channel_reserve_sat if ours else s.local_reserve_ask_sat
    return max(kept, capacity_sat // 100)


def check_contribution(core: ChannelCore, contribution_sat: int) -> None:
    """Whether our balance can give ``contribution_sat`` (LocalMisuse if not): checked before the shell
    quiesces the channel, and again by :class:`SpliceCommand`."""
    s = core.state
    if s.local_commit is None:
        raise LocalMisuse("cannot splice: the channel has no commitment")
    ours, _ = balances_sat(core)
    capacity = s.funding_sat + contribution_sat
    if contribution_sat < 0 and ours + contribution_sat < reserve_after(core, capacity, ours=True):
        raise LocalMisuse(f"a splice-out of {-contribution_sat} sat would leave our balance ({ours} sat) below the reserve")


def check_command(core: ChannelCore, cmd: SpliceCommand) -> None:
    """What :class:`SpliceCommand` refuses but the quiescence (LocalMisuse): checked before the shell
    quiesces the channel (BOLT 2 ends a quiescence only with the splice or a disconnection)."""
    from .state import Phase

    s = core.state
    if not cmd.peer_supports:
        raise LocalMisuse("the peer does not offer option_splice (feature bit 62/63)")
    if s.phase is not Phase.NORMAL or s.closing is not None:
        raise LocalMisuse(f"cannot splice: the channel is {s.phase.value}" if s.phase is not Phase.SHUTDOWN else "cannot splice: a shutdown was sent or received")
    if not (s.ready_sent and s.ready_received) or s.funding_outpoint is None or s.remote is None:
        raise LocalMisuse("cannot splice: channel_ready was not exchanged")
    if s.splice is not None:
        raise LocalMisuse("cannot splice: another splice is pending")
    check_contribution(core, cmd.contribution_sat)
    session(core, _new_session(core, cmd))  # our contribution must pay its way, our outputs above the dust limit


def _new_session(core: ChannelCore, cmd: SpliceCommand) -> SpliceSession:
    s = core.state
    return SpliceSession(
        True, cmd.feerate_per_kw, cmd.locktime, cmd.contribution_sat, 0, s.remote.basepoints.funding_pubkey,  # type: ignore[union-attr]
        _shared_input(core), tuple(cmd.inputs), tuple(cmd.outputs), cmd.entropy, height=cmd.height,
    )  # fmt: skip


def _on_command(core: ChannelCore, cmd: SpliceCommand, out: _Out) -> None:
    s = core.state
    if not cmd.peer_supports:
        raise LocalMisuse("the peer does not offer option_splice (feature bit 62/63)")
    _check_usable(core, remote=False)
    check_contribution(core, cmd.contribution_sat)
    sp = _new_session(core, cmd)
    session(core, sp)  # our contribution must pay its way (LocalMisuse: nothing changes)
    s.splice = sp
    out.send(SpliceInit(
        channel_id=s.channel_id, funding_contribution_satoshis=cmd.contribution_sat, funding_feerate_perkw=cmd.feerate_per_kw,
        locktime=cmd.locktime, funding_pubkey=next_keys(core)[1].funding_pubkey,
    ))  # fmt: skip


def _on_splice_init(core: ChannelCore, msg: SpliceInit, out: _Out) -> None:
    s = core.state
    _check_usable(core, remote=True)
    _, theirs = balances_sat(core)
    contribution = msg.funding_contribution_satoshis
    if contribution < 0 and -contribution > theirs:
        raise RemoteFault(f"splice_init takes {-contribution} sat out of a balance of {theirs} sat", warning=True)
    capacity = s.funding_sat + contribution
    refusal = None
    if not s.policy.min_feerate_per_kw <= msg.funding_feerate_perkw <= s.policy.max_feerate_per_kw:
        refusal = f"feerate {msg.funding_feerate_perkw} outside {s.policy.min_feerate_per_kw}..{s.policy.max_feerate_per_kw}"
    elif contribution < 0 and theirs + contribution < reserve_after(core, capacity, ours=False):
        refusal = "the splice-out would leave the sender below its reserve"
    elif capacity < s.config.dust_limit_sat:
        refusal = "the new capacity is below the dust limit"
    elif msg.funding_pubkey == next_keys(core)[1].funding_pubkey:
        refusal = "the funding keys must differ"
    if refusal is not None:
        s.quiesce = None  # the splice quiescence was for ends here
        out.send(TxAbort(channel_id=s.channel_id, data=refusal.encode()))
        return
    entropy = sha256(s.channel_id + msg.encode())  # (we add nothing: the serial ids are never used)
    s.splice = SpliceSession(
        False, msg.funding_feerate_perkw, msg.locktime, 0, contribution, msg.funding_pubkey, _shared_input(core), (), (),
        entropy, acked=True, height=msg.locktime or None,  # (the peer's tip, as a node sets it: see splice_rbf)
    )  # fmt: skip
    out.send(SpliceAck(channel_id=s.channel_id, funding_contribution_satoshis=0, funding_pubkey=next_keys(core)[1].funding_pubkey))


def _on_splice_ack(core: ChannelCore, msg: SpliceAck, out: _Out) -> None:
    sp = core.state.splice
    assert isinstance(sp, SpliceSession)
    if not sp.initiator or sp.acked or sp.previous:
        raise RemoteFault("splice_ack we did not ask for", warning=True)
    take_ack(core, msg.funding_contribution_satoshis, msg.funding_pubkey, msg.tlvs, out, "splice_ack")


def take_ack(core: ChannelCore, contribution: int, funding_pubkey: bytes, tlvs: Any, out: _Out, what: str) -> None:
    """The peer's answer to our splice_init or tx_init_rbf (``what``): its contribution checked, the
    interactive construction starts."""
    s = core.state
    sp = s.splice
    assert isinstance(sp, SpliceSession)
    _, theirs = balances_sat(core)
    if contribution < 0 and -contribution > theirs:
        raise RemoteFault(f"{what} takes {-contribution} sat out of a balance of {theirs} sat", warning=True)
    capacity = s.funding_sat + sp.our_contribution + contribution
    if contribution < 0 and theirs + contribution < reserve_after(core, capacity, ours=False):
        _abort(core, out, "the peer's splice-out would leave it below its reserve", send=True)
        return
    if funding_pubkey == next_keys(core)[1].funding_pubkey:
        _abort(core, out, "the funding keys must differ", send=True)
        return
    if "require_confirmed_inputs" in tlvs and sp.inputs:
        # our wallet may hand out its own unconfirmed change: rather than check each coin, decline (as v2 opens do)
        _abort(core, out, "confirmed inputs required: not supported", send=True)
        return
    s.splice = replace(sp, their_contribution=contribution, remote_funding_pubkey=funding_pubkey, acked=True)
    for m in session(core).start_messages:
        out.send(m)


def _on_interactive(core: ChannelCore, msg: Any, out: _Out) -> None:
    s = core.state
    sp = s.splice
    assert isinstance(sp, SpliceSession)
    tx = session(core)
    replies = tx.receive(msg)
    if tx.state is SessionState.ABORTED:
        _abort(core, out, tx.abort_reason or "aborted", send=True)
        return
    s.splice = replace(sp, received=(*sp.received, msg))
    for reply in replies:
        out.send(reply)
    if tx.state is SessionState.COMPLETE:
        why = _check_reserves(core, tx)
        if why is not None:
            _abort(core, out, why, send=True)
            return
        splice_sign.on_complete(core, tx, out)


def _check_reserves(core: ChannelCore, tx: InteractiveTx) -> str | None:
    """BOLT 2 at tx_complete: a side that added an output other than the funding keeps its reserve
    of the new capacity (with both contributions applied)."""
    s = core.state
    sp = s.splice
    assert isinstance(sp, SpliceSession) and tx.funding is not None
    capacity = new_capacity(s, sp)
    ours, theirs = balances_sat(core)
    for mine, balance, contribution in ((True, ours, sp.our_contribution), (False, theirs, sp.their_contribution)):
        outputs = enumerate(tx.transaction.outputs)
        added = [o for n, o in outputs if o.script_pubkey != tx.funding.script and tx.output_added_by_us(n) is mine]
        if added and balance + contribution < reserve_after(core, capacity, ours=mine):
            return f"{'our' if mine else 'the peer'}'s balance after the splice is below the reserve"
    return None
