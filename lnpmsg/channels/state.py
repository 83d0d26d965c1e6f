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
from lnpmsg.bitcoin.script import p2wsh
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.wire import Error, Features, Message, WarningMessage, WireError

from . import deadlines, double_spend, dualfund, dualfund_rbf, normal, quiesce, ready
from .commitments import ChannelKeys, build, finalize_local, sign_remote, verify_local
from .errors import LocalMisuse, RemoteFault
from .inputs import (
    AcceptCommand,
    BlockHeight,
    BroadcastFunding,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    Disconnected,
    Event,
    FundingDepth,
    FundingNeeded,
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
    channel_type_features,
)
from .params import (
    ANCHORS_BIT,
    ChannelConfig,
    ChannelSecrets,
    OpeningPolicy,
    PeerParams,
    check_accept,
    check_open,
    negotiate_channel_type,
    opening_tlvs,
    v1_channel_id,
)
from .script import funding_script
from .updates import Changes, CommitSpec, funder_charge_sat

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
        self.secrets = secrets
        self.basepoints = secrets.basepoints()
        self.state = ChannelState()
        self.records_emitted = 0

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
                return  # nothing more to say or do on a dead channel
            raise LocalMisuse(f"the channel is {state.phase.value}")
        if quiesce.dispatch(self, item, out) or dualfund.dispatch(self, item, out) or double_spend.dispatch(self, item, out):
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
            normal.HANDLERS[kind](self, message, out)
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

    # ------------------------------------------------------------ establishment

    def _initial_specs(self) -> tuple[CommitSpec, CommitSpec]:
        s = self.state
        funder_msat = s.funding_sat * 1000 - s.push_msat
        local_msat, remote_msat = (funder_msat, s.push_msat) if s.funder else (s.push_msat, funder_msat)
        assert s.open_channel is not None
        feerate = s.open_channel.feerate_per_kw
        local = CommitSpec((), feerate, local_msat, remote_msat)
        return local, local.flipped()

    def _open_message(self, cmd: OpenCommand) -> OpenChannel:
        bp = self.basepoints
        # BOLT 2 (option_channel_type ASSUMED): the opener MUST set channel_type, whatever the
        # peer's init says; type 1 is odd, so a peer that does not know it ignores it.
        tlvs = opening_tlvs(cmd.config.upfront_shutdown_script, self.state.channel_type)
        return OpenChannel(
            chain_hash=cmd.chain_hash, temporary_channel_id=cmd.temporary_channel_id,
            funding_satoshis=cmd.funding_sat, push_msat=cmd.push_msat,
            dust_limit_satoshis=cmd.config.dust_limit_sat,
            max_htlc_value_in_flight_msat=cmd.config.max_htlc_value_in_flight_msat,
            channel_reserve_satoshis=cmd.config.reserve_for(cmd.funding_sat),
            htlc_minimum_msat=cmd.config.htlc_minimum_msat, feerate_per_kw=cmd.feerate_per_kw,
            to_self_delay=cmd.config.to_self_delay, max_accepted_htlcs=cmd.config.max_accepted_htlcs,
            funding_pubkey=bp.funding_pubkey, revocation_basepoint=bp.revocation_basepoint,
            payment_basepoint=bp.payment_basepoint, delayed_payment_basepoint=bp.delayed_payment_basepoint,
            htlc_basepoint=bp.htlc_basepoint, first_per_commitment_point=self.secrets.commitment_point(0),
            channel_flags=cmd.channel_flags, tlvs=OpenChannel.tlv_stream(tlvs),
        )  # fmt: skip

    def _on_OpenCommand(self, cmd: OpenCommand, out: _Out) -> None:
        s = self.state
        if cmd.push_msat > cmd.funding_sat * 1000:
            raise LocalMisuse("push_msat exceeds the funding amount")
        s.funder = True
        s.chain_hash, s.temporary_channel_id = cmd.chain_hash, cmd.temporary_channel_id
        s.config, s.policy = cmd.config, cmd.policy
        s.local_features, s.remote_features = cmd.local_features, cmd.remote_features
        channel_type = negotiate_channel_type(None, Features(cmd.local_features), Features(cmd.remote_features))
        channel_type = Features(channel_type.value | Features.from_bits(cmd.type_bits).value)
        try:
            ready.check_type_variations(channel_type, announce=bool(cmd.channel_flags & 1), zeroconf_trusted=None)
        except RemoteFault as exc:
            raise LocalMisuse(str(exc)) from None
        s.channel_type, s.local_alias = channel_type.to_bytes(), cmd.local_alias
        s.anchors = channel_type.has(ANCHORS_BIT)
        s.funding_sat, s.push_msat = cmd.funding_sat, cmd.push_msat
        s.open_channel = self._open_message(cmd)
        s.local_reserve_ask_sat = s.open_channel.channel_reserve_satoshis
        s.phase = _P.WAIT_ACCEPT
        out.send(s.open_channel)

    def _on_AcceptCommand(self, cmd: AcceptCommand, out: _Out) -> None:
        s = self.state
        msg = cmd.open_channel
        s.funder = False
        s.chain_hash, s.temporary_channel_id = cmd.chain_hash, msg.temporary_channel_id
        s.config, s.policy = cmd.config, cmd.policy
        s.local_features, s.remote_features = cmd.local_features, cmd.remote_features
        proposed = channel_type_features(msg.tlvs)
        if proposed is None and cmd.policy.require_channel_type:
            # BOLT 2: the receiving node MUST fail the channel if open_channel has no channel_type
            raise RemoteFault("open_channel without channel_type")
        channel_type = negotiate_channel_type(proposed, Features(cmd.local_features), Features(cmd.remote_features))
        s.channel_type = channel_type.to_bytes() if proposed is not None else None
        s.anchors = channel_type.has(ANCHORS_BIT)
        ready.check_type_variations(channel_type, announce=bool(msg.channel_flags & 1), zeroconf_trusted=cmd.zeroconf_trusted)
        s.local_alias = cmd.local_alias
        s.funding_sat, s.push_msat = msg.funding_satoshis, msg.push_msat
        s.open_channel = msg
        spec = CommitSpec((), msg.feerate_per_kw, msg.funding_satoshis * 1000 - msg.push_msat, msg.push_msat)
        initial_fee = funder_charge_sat(spec, cmd.config.dust_limit_sat, anchors=s.anchors)
        s.remote = check_open(msg, cmd.policy, cmd.config, cmd.chain_hash, initial_fee_sat=initial_fee)
        # BOLT 2: a zero-conf type MUST ask 0; any other waits for a confirmation at least (channel_ready
        # before it is for a funder we trust only: a config's 0 does not make every funder trusted)
        s.minimum_depth = 0 if ready.is_zeroconf(s) else max(cmd.config.minimum_depth, 1)
        s.local_reserve_ask_sat = cmd.config.reserve_for(msg.funding_satoshis, s.remote.dust_limit_sat)
        if s.local_reserve_ask_sat < s.remote.dust_limit_sat:
            raise RemoteFault("the reserve we ask would be below the funder's dust limit")
        bp = self.basepoints
        tlvs = opening_tlvs(cmd.config.upfront_shutdown_script, s.channel_type)
        s.phase = _P.WAIT_FUNDING_CREATED
        out.send(
            AcceptChannel(
                temporary_channel_id=msg.temporary_channel_id, dust_limit_satoshis=cmd.config.dust_limit_sat,
                max_htlc_value_in_flight_msat=cmd.config.max_htlc_value_in_flight_msat,
                channel_reserve_satoshis=s.local_reserve_ask_sat, htlc_minimum_msat=cmd.config.htlc_minimum_msat,
                minimum_depth=s.minimum_depth, to_self_delay=cmd.config.to_self_delay,
                max_accepted_htlcs=cmd.config.max_accepted_htlcs, funding_pubkey=bp.funding_pubkey,
                revocation_basepoint=bp.revocation_basepoint, payment_basepoint=bp.payment_basepoint,
                delayed_payment_basepoint=bp.delayed_payment_basepoint, htlc_basepoint=bp.htlc_basepoint,
                first_per_commitment_point=self.secrets.commitment_point(0),
                tlvs=AcceptChannel.tlv_stream(tlvs),
            )
        )  # fmt: skip

    def _on_AcceptChannel(self, msg: AcceptChannel, out: _Out) -> None:
        s = self.state
        assert s.open_channel is not None
        sent_type = channel_type_features(s.open_channel.tlvs)
        s.remote = check_accept(msg, s.open_channel, s.policy, sent_type)
        answered = channel_type_features(msg.tlvs)
        if sent_type is None and answered is not None:  # a state stored before open_channel always had one
            raise RemoteFault("accept_channel has a channel_type we did not propose")
        if sent_type is not None and answered is None and s.policy.require_channel_type:
            # BOLT 2: the receiver of accept_channel MUST fail the channel without one
            raise RemoteFault("accept_channel without channel_type")
        if ready.is_zeroconf(s) and msg.minimum_depth != 0:
            raise RemoteFault(f"a zero-conf channel_type with minimum_depth {msg.minimum_depth} (BOLT 2: 0)")
        s.minimum_depth = msg.minimum_depth
        local, _ = self._initial_specs()
        if local.to_local_msat // 1000 < funder_charge_sat(local, s.config.dust_limit_sat, anchors=s.anchors):
            raise LocalMisuse("we cannot pay the first commitment's fee")
        s.phase = _P.WAIT_FUNDING_TX
        out.emit(FundingNeeded(p2wsh(self._funding_script()), s.funding_sat))

    def _funding_script(self) -> bytes:
        assert self.state.remote is not None
        return funding_script(self.basepoints.funding_pubkey, self.state.remote.basepoints.funding_pubkey)

    def _on_FundingTransaction(self, cmd: FundingTransaction, out: _Out) -> None:
        s = self.state
        tx = Tx.parse(cmd.raw_tx)
        script_pubkey = p2wsh(self._funding_script())
        # The output is found by its script, not assumed first (Electrum puts an OP_RETURN backup first).
        matches = [i for i, o in enumerate(tx.outputs) if o.script_pubkey == script_pubkey and o.amount_sat == s.funding_sat]
        if len(matches) != 1:
            raise LocalMisuse(f"the funding transaction has {len(matches)} outputs paying the funding script")
        s.funding_tx = cmd.raw_tx
        s.funding_outpoint = OutPoint(tx.txid, matches[0])
        _, remote_spec = self._initial_specs()
        assert s.remote is not None
        remote = build(self.keys(), remote_spec, 0, s.remote.first_per_commitment_point, local=False)
        signature, _ = sign_remote(remote, self.secrets)
        s.remote_commit = RemoteCommit(0, remote_spec, remote.tx.txid, s.remote.first_per_commitment_point)
        s.channel_id = v1_channel_id(s.funding_outpoint)
        s.phase = _P.WAIT_FUNDING_SIGNED
        out.send(
            FundingCreated(
                temporary_channel_id=s.temporary_channel_id, funding_txid=tx.txid,
                funding_output_index=matches[0], signature=signature,
            )
        )  # fmt: skip

    def _on_FundingCreated(self, msg: FundingCreated, out: _Out) -> None:
        s = self.state
        assert s.remote is not None
        if msg.temporary_channel_id != s.temporary_channel_id:
            raise RemoteFault("funding_created for another temporary_channel_id")
        s.funding_outpoint = OutPoint(msg.funding_txid, msg.funding_output_index)
        local_spec, remote_spec = self._initial_specs()
        local = build(self.keys(), local_spec, 0, self.secrets.commitment_point(0), local=True)
        verify_local(local, msg.signature, ())
        s.local_commit = LocalCommit(0, local_spec, msg.signature, ())
        remote = build(self.keys(), remote_spec, 0, s.remote.first_per_commitment_point, local=False)
        signature, _ = sign_remote(remote, self.secrets)
        s.remote_commit = RemoteCommit(0, remote_spec, remote.tx.txid, s.remote.first_per_commitment_point)
        s.channel_id = v1_channel_id(s.funding_outpoint)
        s.phase = _P.AWAIT_READY
        out.send(FundingSigned(channel_id=s.channel_id, signature=signature))
        out.emit(ChannelOpened(s.channel_id, s.funding_outpoint, s.minimum_depth))
        ready.send_ready_if_zero_depth(self, out)

    def _on_FundingSigned(self, msg: FundingSigned, out: _Out) -> None:
        s = self.state
        if msg.channel_id != s.channel_id:
            raise RemoteFault("funding_signed for another channel_id")
        local_spec, _ = self._initial_specs()
        local = build(self.keys(), local_spec, 0, self.secrets.commitment_point(0), local=True)
        verify_local(local, msg.signature, ())
        s.local_commit = LocalCommit(0, local_spec, msg.signature, ())
        s.phase = _P.AWAIT_READY
        assert s.funding_tx is not None and s.funding_outpoint is not None
        out.emit(BroadcastFunding(s.funding_tx))
        out.emit(ChannelOpened(s.channel_id, s.funding_outpoint, s.minimum_depth))
        ready.send_ready_if_zero_depth(self, out)

    def _on_FundingDepth(self, event: FundingDepth, out: _Out) -> None:
        ready.on_funding_depth(self, event.depth, event.short_channel_id, out)

    def _on_BlockHeight(self, event: BlockHeight, out: _Out) -> None:
        deadlines.on_block_height(self, event, out)

    def channel_ready_message(self) -> ChannelReady:
        """Our channel_ready (also retransmitted on reestablish)."""
        return ready.channel_ready_message(self)

    def _on_ChannelReady(self, msg: ChannelReady, out: _Out) -> None:
        ready.on_channel_ready(self, msg, out)

