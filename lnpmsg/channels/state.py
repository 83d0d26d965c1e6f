"""The sans-IO channel state machine: one :class:`ChannelCore` per channel.

``core.receive(input, now)`` takes a command, a chain event or a received
message (:mod:`.inputs`) and returns an :class:`~.inputs.Output`: records to
persist, messages to send, events. It never does I/O and never reads a clock.

Which input is legal in which phase is a table (:data:`_LEGAL`), as h11
does it. Two error classes: :class:`~.errors.LocalMisuse` (a command that
cannot be done now: raised, nothing changes) and
:class:`~.errors.RemoteFault` (the peer broke BOLT 2: the channel fails,
sticky, an ``error`` goes out and an event carries our latest commitment to
broadcast; a ``warning`` fault only sends a warning, and the manager then
closes the connection, unless the fault keeps it: ``Output.disconnect``).

The state is one :class:`ChannelState` of immutable values. Each input that
changes it is emitted as a record (the input and ``now``); replaying the
records from a fresh core gives an identical state (:mod:`.records`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import Enum

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.wire import Error, Message, WarningMessage, WireError

from . import deadlines, double_spend, dualfund, dualfund_rbf, establish, normal, quiesce, ready, splice, splice_rbf
from .commitments import ChannelKeys, build, finalize_local
from .errors import LocalMisuse, RemoteFault
from .inputs import (
    AcceptCommand,
    BlockHeight,
    BroadcastFunding,
    ChannelClosed,
    ChannelFailed,
    Disconnected,
    Event,
    FundingDepth,
    ForceClose,
    FundingTransaction,
    Input,
    OpenCommand,
    Output,
    Received,
    Reconnected,
    Record,
)
from .messages import (
    AcceptChannel,
    ChannelReady,
    FundingCreated,
    FundingSigned,
    OpenChannel,
)
from .keys import ChannelBasepoints
from .params import ChannelConfig, ChannelSecrets, OpeningPolicy, PeerParams
from .updates import Changes, CommitSpec

__all__ = ["ChannelCore", "ChannelState", "LocalCommit", "Phase", "RemoteCommit"]


class Phase(Enum):
    """Where a channel stands."""

    NEW = "new"
    WAIT_ACCEPT = "wait_accept"  # funder: open_channel sent
    WAIT_FUNDING_TX = "wait_funding_tx"  # funder: the wallet builds the funding transaction
    WAIT_FUNDING_CREATED = "wait_funding_created"  # fundee: accept_channel sent
    WAIT_FUNDING_SIGNED = "wait_funding_signed"  # funder: funding_created sent
    WAIT_ACCEPT2 = "wait_accept_channel2"  # v2 opener: open_channel2 sent (:mod:`.dualfund`)
    INTERACTIVE = "interactive_tx"  # v2: the funding transaction is negotiated
    DUAL_SIGNING = "wait_tx_signatures"  # v2: commitments and then the funding's signatures
    AWAIT_READY = "await_ready"  # both commitments signed; waiting for depth and channel_ready
    NORMAL = "normal"
    SHUTDOWN = "shutdown"  # shutdown sent or received; HTLCs drain
    NEGOTIATING = "negotiating"  # closing_signed fee negotiation
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LocalCommit:
    """Our current commitment: its number, contents and the peer's signatures of it."""

    number: int
    spec: CommitSpec
    signature: bytes
    htlc_signatures: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class RemoteCommit:
    """A commitment of the peer's we signed: number, contents (their view), txid, their point."""

    number: int
    spec: CommitSpec
    txid: bytes
    point: bytes


@dataclass(slots=True)
class ChannelState:
    """Everything a channel knows (immutable values; the core replaces them)."""

    phase: Phase = Phase.NEW
    funder: bool = False
    chain_hash: bytes = b""
    temporary_channel_id: bytes = b""
    channel_id: bytes = b""
    config: ChannelConfig = field(default_factory=ChannelConfig)
    policy: OpeningPolicy = field(default_factory=OpeningPolicy)
    local_features: int = 0
    remote_features: int = 0
    anchors: bool = False
    channel_type: bytes | None = None
    open_channel: OpenChannel | None = None
    local_reserve_ask_sat: int = 0
    remote: PeerParams | None = None
    minimum_depth: int = 0
    funding_sat: int = 0
    push_msat: int = 0
    funding_tx: bytes | None = None
    funding_outpoint: OutPoint | None = None
    local_commit: LocalCommit | None = None
    remote_commit: RemoteCommit | None = None
    #: the peer's next commitment we signed, until it revokes the current one
    remote_next_commit: RemoteCommit | None = None
    #: the peer's point for its next commitment (when not waiting for a revocation)
    remote_next_point: bytes | None = None
    local_changes: Changes = field(default_factory=Changes)
    remote_changes: Changes = field(default_factory=Changes)
    local_next_htlc_id: int = 0
    remote_next_htlc_id: int = 0
    remote_secrets: tuple[tuple[int, bytes], ...] = ()
    ready_sent: bool = False
    ready_received: bool = False
    short_channel_id: int = 0
    #: our alias of the channel and the one the peer gave in its channel_ready (:mod:`.ready`; 0: none)
    local_alias: int = 0
    remote_alias: int = 0
    #: fundee: the first block height seen while waiting for the funding to confirm
    funding_wait_start: int | None = None
    connected: bool = True
    #: after a reconnection, until the peer's channel_reestablish arrives
    awaiting_reestablish: bool = False
    #: the peer proved we lost state: never broadcast our (stale) commitment
    behind: bool = False
    #: then, the peer's latest commitment number and point (its channel_reestablish): the monitor
    #: recognises its commitment by them
    remote_behind_number: int = 0
    remote_behind_point: bytes | None = None
    #: made from a static channel backup (:mod:`.backup`): no commitment of ours is known, the
    #: peer is asked to close with its own
    restored: bool = False
    #: our settles and fee changes a disconnection took back: proposed again after channel_reestablish
    resend_updates: tuple[object, ...] = ()
    #: a commitment_signed or revoke_and_ack we sent last, for retransmission order
    last_sent_was_commit: bool = False
    local_shutdown_script: bytes | None = None
    remote_shutdown_script: bytes | None = None
    #: the cooperative close (a close.ClosingState), once a shutdown was sent or received
    closing: object = None
    #: the cooperative close both signed (kept so that a restart can broadcast it again)
    closing_tx: bytes | None = None
    failure: str | None = None
    #: a v2 open (a dualfund.DualFundSession), kept once the channel is open: how it was funded
    dual: object = None
    #: quiescence on this connection (a quiesce.QuiesceState; None: not quiescing)
    quiesce: object = None
    #: a splice in progress (a splice.SpliceSession), until both sent splice_locked
    splice: object = None
    #: how many splices replaced the funding (then channel_reestablish names the funding locked)
    splices: int = 0
    #: which funding key the current funding uses (0: the open's; each splice takes the next one)
    funding_key_index: int = 0
    #: the last splice the channel switched to, as its monitor's move onto it needs it (a splice.SplicedFrom)
    spliced_from: object = None
    #: the short channel id before the last splice (forwards naming it are still taken; its fee policy follows)
    previous_short_channel_id: int = 0
    #: a start_batch's size and the commitment_signed of it received so far (:mod:`.splice_batch`)
    batch_size: int = 0
    batch: tuple[object, ...] = ()
    #: a splice we locked after our channel_reestablish left (it named an older lock): its splice_locked
    #: goes once the peer's channel_reestablish came (:mod:`.splice_sign`)
    splice_locked_owed: bytes | None = None


_P = Phase
_ESTABLISHED = {_P.AWAIT_READY, _P.NORMAL, _P.SHUTDOWN, _P.NEGOTIATING}
#: Input or message type -> the phases it is legal in (anything else is a fault or a misuse).
_LEGAL: dict[type, set[Phase]] = {
    OpenCommand: {_P.NEW},
    AcceptCommand: {_P.NEW},
    AcceptChannel: {_P.WAIT_ACCEPT},
    FundingTransaction: {_P.WAIT_FUNDING_TX},
    FundingCreated: {_P.WAIT_FUNDING_CREATED},
    FundingSigned: {_P.WAIT_FUNDING_SIGNED},
    FundingDepth: {_P.AWAIT_READY, _P.NORMAL, _P.SHUTDOWN, _P.NEGOTIATING},
    BlockHeight: {_P.AWAIT_READY, _P.NORMAL, _P.SHUTDOWN, _P.NEGOTIATING},
    # A retransmission may come after channel_reestablish in any established phase (then ignored).
    ChannelReady: {_P.AWAIT_READY, _P.NORMAL, _P.SHUTDOWN, _P.NEGOTIATING},
    ForceClose: _ESTABLISHED,
    **normal.legal_table(),
}
#: Messages whose sending commits to a state: their record must be durable first.
_COMMIT_POINTS = {"FundingSigned", "CommitmentSigned", "RevokeAndAck", "ClosingSigned", "ClosingComplete", "ClosingSig", "TxSignatures"}


class _Out:
    """Collects what one input produces."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.events: list[Event] = []
        self.durable = False
        self.disconnect = False

    def send(self, msg: Message) -> None:
        self.messages.append(msg)

    def emit(self, event: Event) -> None:
        self.events.append(event)


class ChannelCore:
    """One channel's state machine. Build it with our secrets; feed it inputs.

    The funder's first input is an :class:`~.inputs.OpenCommand`, the
    fundee's an :class:`~.inputs.AcceptCommand` (with the peer's
    ``open_channel``). The shell persists each output's records (syncing
    when one is ``durable``) before it sends the output's messages. On the
    peer's disconnection it feeds :class:`~.inputs.Disconnected`; on
    peer-ready, :class:`~.inputs.Reconnected` before any message of the
    channel. After a restart (:func:`~.records.restore`), the core is as it
    was when the last record was written: feed ``Disconnected`` first.

    ``records_emitted`` counts records so far (the next record's ``seq``).
    """

    def __init__(self, secrets: ChannelSecrets) -> None:
        self.base_secrets = secrets
        self._keyed: dict[int, tuple[ChannelSecrets, ChannelBasepoints]] = {}
        self.state = ChannelState()
        self.records_emitted = 0

    def keyed(self, funding_key_index: int) -> tuple[ChannelSecrets, ChannelBasepoints]:
        """Our secrets and basepoints with the funding key of the ``funding_key_index``-th splice."""
        found = self._keyed.get(funding_key_index)
        if found is None:
            secrets = self.base_secrets.for_funding_key(funding_key_index)
            found = self._keyed[funding_key_index] = (secrets, secrets.basepoints())
        return found

    @property
    def secrets(self) -> ChannelSecrets:
        """Our secrets, with the funding key of the channel's current funding (a splice moves it on)."""
        return self.keyed(self.state.funding_key_index)[0]

    @property
    def basepoints(self) -> ChannelBasepoints:
        """Our basepoints, with the funding key of the channel's current funding."""
        return self.keyed(self.state.funding_key_index)[1]

    # ------------------------------------------------------------ driver

    def receive(self, item: Input, now: float) -> Output:
        """Apply one input at time ``now`` (seconds); see the module docstring."""
        kind = type(item.message) if isinstance(item, Received) else type(item)
        before = copy.copy(self.state)
        out = _Out()
        try:
            try:
                self._dispatch(item, kind, out)
                quiesce.after(self, out)
            except (LocalMisuse, RemoteFault):
                raise
            except (BitcoinError, WireError) as exc:
                # Bad data deep in a build or check: the peer's fault if it sent it, else the caller's.
                if isinstance(item, Received | AcceptCommand | dualfund.AcceptV2Command):
                    raise RemoteFault(f"{kind.__name__}: {exc}") from exc
                raise LocalMisuse(f"{kind.__name__}: {exc}") from exc
        except LocalMisuse:
            self.state = before
            raise
        except RemoteFault as fault:
            self.state = before
            if isinstance(item, AcceptCommand | dualfund.AcceptV2Command) and not self.state.temporary_channel_id:
                # A refused open_channel(2): the error names the channel it proposed.
                opened = item.open_channel if isinstance(item, AcceptCommand) else item.open_channel2
                self.state.temporary_channel_id = opened.temporary_channel_id
            out = _Out()
            self._fail(str(fault), out, warning=fault.warning)
            out.disconnect = fault.warning and not fault.keep_connection
        for event in out.events:
            if isinstance(event, ChannelClosed):
                self.state.closing_tx = event.raw_tx
        if self.state == before:
            return Output((), tuple(out.messages), tuple(out.events), out.disconnect)
        if any(type(m).__name__ in _COMMIT_POINTS for m in out.messages):
            out.durable = True
        if any(isinstance(e, BroadcastFunding) for e in out.events):
            out.durable = True
        record = Record(self.records_emitted, self.encode_record(item, now), out.durable)
        self.records_emitted += 1
        return Output((record,), tuple(out.messages), tuple(out.events), out.disconnect)

    def encode_record(self, item: Input, now: float) -> bytes:
        """The record of an input (the codec lives in :mod:`.records`)."""
        from .records import encode_input

        return encode_input(item, now)

    def _dispatch(self, item: Input, kind: type, out: _Out) -> None:
        state = self.state
        if state.phase in (_P.FAILED, _P.CLOSED):
            if isinstance(item, dualfund_rbf.FundingCandidateConfirmed) and state.phase is _P.FAILED:
                dualfund_rbf.dispatch(self, item, out)  # (our commitment must spend the version that confirmed)
                return
            if isinstance(item, ForceClose) and state.behind:
                raise LocalMisuse("the peer proved we lost channel state: our commitment may be revoked, wait for theirs")
            if isinstance(item, Received | Disconnected | Reconnected | BlockHeight | FundingDepth):
                dualfund.answer_when_ended(self, item, out)
                return  # nothing more to say or do on a dead channel
            raise LocalMisuse(f"the channel is {state.phase.value}")
        if quiesce.dispatch(self, item, out) or splice.dispatch(self, item, out):
            return
        if dualfund.dispatch(self, item, out) or double_spend.dispatch(self, item, out):
            return
        if isinstance(item, Received) and isinstance(item.message, Error):
            self._fail_by_peer(item.message, out)
            return
        if isinstance(item, Received) and isinstance(item.message, WarningMessage):
            return
        handled = normal.dispatch_special(self, item, out)
        if handled:
            return
        legal = _LEGAL.get(kind)
        if legal is None or state.phase not in legal:
            if isinstance(item, Received):
                raise RemoteFault(f"unexpected {kind.__name__} in phase {state.phase.value}")
            raise LocalMisuse(f"cannot {kind.__name__} in phase {state.phase.value}")
        handler = getattr(self, f"_on_{kind.__name__}", None)
        message = item.message if isinstance(item, Received) else item
        if handler is not None:
            handler(message, out)
        else:
            (establish.HANDLERS.get(kind) or normal.HANDLERS[kind])(self, message, out)
        if self.state.phase is _P.SHUTDOWN:
            from . import close

            close.maybe_negotiate(self, out)

    # ------------------------------------------------------------ failing

    def _fail(self, reason: str, out: _Out, *, warning: bool = False) -> None:
        channel_id = self.state.channel_id or self.state.temporary_channel_id or bytes(32)
        if warning:
            out.send(WarningMessage(channel_id=channel_id, data=reason.encode()))
            return
        out.send(Error(channel_id=channel_id, data=reason.encode()))
        out.emit(ChannelFailed(reason, self.latest_commitment_tx(), by_peer=False))
        self.state.phase = _P.FAILED
        self.state.failure = reason

    def _on_ForceClose(self, cmd: ForceClose, out: _Out) -> None:
        """Stop here: no more updates; our latest commitment goes on chain (no error is sent:
        the peer sees the commitment on chain, and does not race us with its own)."""
        if self.state.behind:
            raise LocalMisuse("the peer proved we lost channel state: our commitment may be revoked, wait for theirs")
        commitment = self.latest_commitment_tx()
        if commitment is None:
            raise LocalMisuse("no signed commitment to broadcast")
        self.state.phase = _P.FAILED
        self.state.failure = cmd.reason
        out.emit(ChannelFailed(cmd.reason, commitment, by_peer=False))

    def _fail_by_peer(self, error: Error, out: _Out) -> None:
        reason = error.data.decode("utf-8", "replace")
        out.emit(ChannelFailed(f"peer: {reason}", self.latest_commitment_tx(), by_peer=True))
        self.state.phase = _P.FAILED
        self.state.failure = f"peer: {reason}"

    # ------------------------------------------------------------ views

    def keys(self) -> ChannelKeys:
        """The fixed facts of both commitments (once the funding outpoint is known)."""
        s = self.state
        assert s.remote is not None and s.funding_outpoint is not None
        return ChannelKeys(
            local=self.basepoints,
            remote=s.remote.basepoints,
            funding_outpoint=s.funding_outpoint,
            funding_sat=s.funding_sat,
            local_is_funder=s.funder,
            anchors=s.anchors,
            local_to_self_delay=s.remote.to_self_delay,
            remote_to_self_delay=s.config.to_self_delay,
            local_dust_limit_sat=s.config.dust_limit_sat,
            remote_dust_limit_sat=s.remote.dust_limit_sat,
        )

    def latest_commitment_tx(self) -> bytes | None:
        """Our latest commitment, signed by both, serialized (None before funding_signed, or when
        the peer proved it revoked: broadcasting it would hand the peer every output)."""
        s = self.state
        if s.local_commit is None or s.funding_outpoint is None or s.behind:
            return None
        commitment = build(
            self.keys(), s.local_commit.spec, s.local_commit.number,
            self.secrets.commitment_point(s.local_commit.number), local=True,
        )  # fmt: skip
        return finalize_local(commitment, self.secrets, s.local_commit.signature).serialize()

    @property
    def phase(self) -> Phase:
        """The channel's phase."""
        return self.state.phase

    # ------------------------------------------------------------ establishment (v1 in establish.py)

    def _on_FundingDepth(self, event: FundingDepth, out: _Out) -> None:
        dualfund_rbf.on_funding_depth(self, event.depth)
        ready.on_funding_depth(self, event.depth, event.short_channel_id, out)

    def _on_BlockHeight(self, event: BlockHeight, out: _Out) -> None:
        splice_rbf.on_block_height(self, event.height)
        deadlines.on_block_height(self, event, out)

    def channel_ready_message(self) -> ChannelReady:
        """Our channel_ready (also retransmitted on reestablish)."""
        return ready.channel_ready_message(self)

    def _on_ChannelReady(self, msg: ChannelReady, out: _Out) -> None:
        ready.on_channel_ready(self, msg, out)

