"""Channel establishment v2 (BOLT 2, ``option_dual_fund``) in the channel core, sans-IO.

``open_channel2`` / ``accept_channel2``, the funding built with the
interactive protocol (:mod:`.interactive_tx`), ``commitment_signed`` both
ways, then ``tx_signatures`` in BOLT 2's order; from there the channel is
a v1 channel waiting for its funding depth (``channel_ready`` as before).

The v2 messages carry the same limits as v1's, so the checks are v1's
(:func:`~.params.check_open` / :func:`~.params.check_accept`, through the
core's own handlers) applied to the equivalent v1 view: the channel's
funding is both contributions, the accepter's contribution stands where
``push_msat`` stood (the opener pays the commitment fee, as the v1
funder does), and the reserve is BOLT 2's fixed 1% (at least the dust
limits). That view is what ``state.open_channel`` holds, so everything
after establishment reads a v2 channel as it reads a v1 one.

The negotiation is kept as its inputs (our contributions, the entropy of
our serial ids and the messages received): the session is rebuilt from
them, so the channel state stays immutable values that snapshot and roll
back like the rest. What is durable before what leaves: our
``commitment_signed`` (with the negotiated transaction) and our
``tx_signatures`` are commit points of the core.

The signatures and their resumption on reconnection: :mod:`.dualfund_sign`.
RBF of the funding (``tx_init_rbf``): :mod:`.dualfund_rbf`. Shared inputs (a
splice's spend of the old funding) are :mod:`.splice`'s. Not done: ``require_confirmed_inputs`` beyond refusing to contribute. A disconnection before our
``tx_signatures`` left ends the open (nothing of ours can be spent without
them), unless the peer signs first and has our ``commitment_signed`` (its
``tx_signatures`` may have left: ending the open would strand its coins);
otherwise ``channel_reestablish`` with ``next_funding`` resumes it. An open
that ended answers a ``channel_reestablish`` naming its funding with
``tx_abort`` (BOLT 2: the peer may forget it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import p2wsh
from lnpmsg.wire import Error, Features

from . import dualfund_rbf, dualfund_sign, establish
from .errors import LocalMisuse, RemoteFault
from .inputs import (
    AcceptCommand,
    Disconnected,
    OpenCommand,
    Received,
    Reconnected,
)
from .interactive_tx import InteractiveTx, SessionState
from .interactive_parts import FundingOutput, OwnInput, OwnOutput
from .messages import AcceptChannel, ChannelReestablish, CommitmentSigned, OpenChannel, channel_type_features
from .messages_v2 import AcceptChannel2, OpenChannel2, TxAbort, TxAckRbf, TxInitRbf, TxSignatures
from .params import ChannelConfig, OpeningPolicy

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = [
    "AcceptV2Command",
    "DualFundSession",
    "FundingSignaturesNeeded",
    "FundingWitnesses",
    "InteractiveAborted",
    "OpenV2Command",
    "dispatch",
    "v2_channel_id",
]

_INTERACTIVE = (
    "TxAddInput", "TxAddOutput", "TxRemoveInput", "TxRemoveOutput", "TxComplete",
)  # fmt: skip


# ---------------------------------------------------------------- inputs and events


@dataclass(frozen=True, slots=True)
class OpenV2Command:
    """Open a dual-funded channel as its opener: our share and the wallet inputs that pay it."""

    chain_hash: bytes
    funding_sat: int
    funding_feerate_per_kw: int
    commitment_feerate_per_kw: int
    locktime: int
    local_features: int
    remote_features: int
    inputs: tuple[OwnInput, ...]
    outputs: tuple[OwnOutput, ...]
    entropy: bytes
    config: ChannelConfig = field(default_factory=ChannelConfig)
    policy: OpeningPolicy = field(default_factory=OpeningPolicy)
    channel_flags: int = 0
    type_bits: tuple[int, ...] = ()
    local_alias: int = 0
    #: both node ids: BOLT 2 breaks a tie of input totals by them (who sends tx_signatures first)
    local_node_id: bytes = b""
    remote_node_id: bytes = b""


@dataclass(frozen=True, slots=True)
class AcceptV2Command:
    """Answer a peer's ``open_channel2``, contributing ``funding_sat`` (0: nothing) from ``inputs``."""

    open_channel2: OpenChannel2
    chain_hash: bytes
    local_features: int
    remote_features: int
    funding_sat: int
    inputs: tuple[OwnInput, ...]
    outputs: tuple[OwnOutput, ...]
    entropy: bytes
    config: ChannelConfig = field(default_factory=ChannelConfig)
    policy: OpeningPolicy = field(default_factory=OpeningPolicy)
    local_alias: int = 0
    zeroconf_trusted: bool = False
    local_node_id: bytes = b""
    remote_node_id: bytes = b""


@dataclass(frozen=True, slots=True)
class FundingWitnesses:
    """The wallet's witnesses for our inputs of the negotiated funding transaction (their order)."""

    witnesses: tuple[tuple[bytes, ...], ...]


@dataclass(frozen=True, slots=True)
class FundingSignaturesNeeded:
    """Event: the wallet must sign our inputs (``indices``) of the unsigned funding ``raw_tx``."""

    raw_tx: bytes
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class InteractiveAborted:
    """Event: the v2 open ended before our signatures left; our ``inputs`` may be spent elsewhere."""

    reason: str
    inputs: tuple[OwnInput, ...]


@dataclass(frozen=True, slots=True)
class DualFundSession:
    """A v2 open in progress: what rebuilds the interactive session, and the signatures."""

    initiator: bool
    feerate_per_kw: int
    locktime: int
    funding: FundingOutput
    inputs: tuple[OwnInput, ...]
    outputs: tuple[OwnOutput, ...]
    entropy: bytes
    received: tuple[Any, ...] = ()
    #: the opener's open_channel2 (its amounts and feerates)
    open2: OpenChannel2 | None = None
    #: (ours, theirs): the tie-break of the tx_signatures order (empty: the funding keys stand in)
    node_ids: tuple[bytes, bytes] = (b"", b"")
    our_witnesses: tuple[tuple[bytes, ...], ...] | None = None
    their_signatures: TxSignatures | None = None
    signatures_sent: bool = False
    #: the earlier versions of the funding while a bump's may replace them (dualfund_rbf.Candidate)
    previous: tuple[Any, ...] = ()
    #: a bump's version: the total fee of the version it replaced (it pays at least that; None: the first)
    replaces_fee_sat: int | None = None
    #: the funding (this version) was seen in a block: no bump (a new version could not confirm) until
    #: a reorganization takes it out (``FundingDepth`` 0 from the shell)
    mined: bool = False


def v2_channel_id(basepoint_a: bytes, basepoint_b: bytes) -> bytes:
    """BOLT 2: SHA256 of the lesser then the greater revocation basepoint."""
    low, high = sorted((basepoint_a, basepoint_b))
    return sha256(low + high)


def _reserve(total_sat: int, *dust_limits: int) -> int:
    """BOLT 2 v2: 1% of the channel, rounded down, or the dust limit if greater (both sides' here)."""
    return max(total_sat // 100, *dust_limits)


def _session(core: ChannelCore) -> InteractiveTx:
    """The interactive session, rebuilt from the state (deterministic: same inputs, same session)."""
    d = core.state.dual
    assert isinstance(d, DualFundSession)
    tx = InteractiveTx(
        channel_id=core.state.channel_id, initiator=d.initiator, feerate_per_kw=d.feerate_per_kw,
        locktime=d.locktime, dust_limit_sat=core.state.config.dust_limit_sat, inputs=list(d.inputs),
        outputs=list(d.outputs), funding=d.funding, entropy=d.entropy, replaces_fee_sat=d.replaces_fee_sat,
    )  # fmt: skip
    tx.start_messages = tx.start()
    for msg in d.received:
        tx.receive(msg)
    if d.our_witnesses is not None:
        tx.our_signatures(list(d.our_witnesses))
    if d.their_signatures is not None:
        tx.receive_signatures(d.their_signatures)
    return tx


# ---------------------------------------------------------------- dispatch


def dispatch(core: ChannelCore, item: Any, out: _Out) -> bool:
    """The v2 inputs, and the v2 phases' handling of connection changes and errors: True when handled."""
    from .state import Phase

    s = core.state
    if dualfund_rbf.handles(core, item):
        return dualfund_rbf.dispatch(core, item, out)
    if isinstance(item, OpenV2Command | AcceptV2Command):
        if s.phase is not Phase.NEW:
            raise LocalMisuse(f"cannot open in phase {s.phase.value}")
        (_on_open if isinstance(item, OpenV2Command) else _on_accept)(core, item, out)
        return True
    msg = item.message if isinstance(item, Received) else None
    if isinstance(msg, OpenChannel2 | AcceptChannel2 | TxAbort | TxInitRbf | TxAckRbf | TxSignatures) or (
        type(msg).__name__ in _INTERACTIVE
    ):
        if s.phase not in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING):
            if isinstance(msg, TxSignatures) and s.dual is not None:
                return True  # BOLT 2: a retransmission after the channel is open is ignored
            raise RemoteFault(f"unexpected {type(msg).__name__} in phase {s.phase.value}")
    if s.phase not in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING):
        return False
    d = s.dual
    assert isinstance(d, DualFundSession)
    if isinstance(item, FundingWitnesses):
        if s.phase is not Phase.DUAL_SIGNING or d.our_witnesses is not None:
            raise LocalMisuse("no funding signatures are awaited")
        session = _session(core)
        session.our_signatures(list(item.witnesses))  # checks the count
        s.dual = replace(d, our_witnesses=tuple(tuple(w) for w in item.witnesses))
        dualfund_sign.maybe_sign(core, out)
    elif isinstance(item, Disconnected):
        if d.signatures_sent or dualfund_sign.peer_may_have_signed(core):
            s.connected = False  # the funding may confirm: resumed by channel_reestablish
        else:
            _abort(core, out, "disconnected while opening", send=False)
            s.connected = not d.previous  # a bump's attempt ended: the channel waits for the peer
    elif isinstance(item, Reconnected):
        if s.connected:
            raise LocalMisuse("already connected")
        s.connected = True
        s.awaiting_reestablish = True
        out.send(dualfund_sign.reestablish_message(core))
        dualfund_sign.ask_witnesses_again(core, out)
    elif msg is None:
        raise LocalMisuse(f"cannot {type(item).__name__} in phase {s.phase.value}")
    elif isinstance(msg, Error):
        if d.signatures_sent:
            return False  # the funding may confirm: the channel fails as an established one
        _abort(core, out, f"peer: {msg.data.decode('utf-8', 'replace')}", send=False)
        return not d.previous  # after a bump's attempt: the channel fails as an established one
    elif isinstance(msg, ChannelReestablish):
        dualfund_sign.on_reestablish(core, msg, out)
    elif isinstance(msg, TxAbort):
        # (also before the peer's channel_reestablish: an open that ended answers ours with it alone)
        if d.signatures_sent:  # BOLT 2: we keep the channel (its funding may confirm) and do not echo
            return d.previous == () or dualfund_rbf.set_aside(core, out, f"peer aborted: {printable(msg.data)}")
        _abort(core, out, f"peer aborted: {printable(msg.data)}", send=True, echo=True)
    elif s.awaiting_reestablish:
        raise RemoteFault(f"{type(msg).__name__} before channel_reestablish", warning=True, keep_connection=True)
    elif isinstance(msg, AcceptChannel2) and s.phase is Phase.WAIT_ACCEPT2:
        _on_accept_channel2(core, msg, out)
    elif type(msg).__name__ in _INTERACTIVE and s.phase is Phase.INTERACTIVE:
        _on_interactive(core, msg, out)
    elif isinstance(msg, CommitmentSigned) and s.phase is Phase.DUAL_SIGNING and s.local_commit is None:
        dualfund_sign.on_commitment_signed(core, msg, out)
    elif isinstance(msg, TxSignatures) and s.phase is Phase.DUAL_SIGNING and d.their_signatures is None:
        dualfund_sign.on_tx_signatures(core, msg, out)
    elif d.signatures_sent:
        raise RemoteFault(f"unexpected {type(msg).__name__} while waiting for tx_signatures")
    else:
        _abort(core, out, f"unexpected {type(msg).__name__} in phase {s.phase.value}", send=True)
    return True


def answer_when_ended(core: ChannelCore, item: object, out: _Out) -> None:
    """An open that ended before our signatures left, reached by the peer's ``channel_reestablish``
    naming its funding (``next_funding``): BOLT 2's ``tx_abort``, so that the peer may forget it."""
    s = core.state
    d = s.dual
    msg = item.message if isinstance(item, Received) else None
    if not isinstance(msg, ChannelReestablish) or not isinstance(d, DualFundSession) or d.signatures_sent:
        return
    if msg.tlvs.get("next_funding") is not None and s.channel_id:
        out.send(TxAbort(channel_id=s.channel_id, data=b"the open ended before our tx_signatures"))


def printable(data: bytes) -> str:
    """A peer's tx_abort/error data for a log or a reply: verbatim when printable ASCII, else hex."""
    # BOLT 2: data that is not printable ASCII is not printed verbatim
    return data.decode() if all(32 <= b <= 126 for b in data) else data.hex()


def _abort(core: ChannelCore, out: _Out, reason: str, *, send: bool, echo: bool = False) -> None:
    """End the open before our signatures left: tx_abort (when connected), coins freed, channel done."""
    from .state import Phase

    s = core.state
    d = s.dual
    assert isinstance(d, DualFundSession) and not d.signatures_sent
    if send and s.connected:
        channel_id = s.channel_id or s.temporary_channel_id
        out.send(TxAbort(channel_id=channel_id, data=b"echo" if echo else reason.encode()))
    if d.previous:  # a bump's attempt: the previous version of the funding stands
        return dualfund_rbf.restore(core, out, reason)
    s.phase = Phase.FAILED
    s.failure = reason
    out.emit(InteractiveAborted(reason, d.inputs))


# ---------------------------------------------------------------- opening


def _v1_view(open2: OpenChannel2, total_sat: int, accepter_sat: int, reserve_sat: int) -> OpenChannel:
    """The v1 open_channel equivalent to ``open2`` for a channel of ``total_sat`` (see the module doc)."""
    return OpenChannel(
        chain_hash=open2.chain_hash, temporary_channel_id=open2.temporary_channel_id,
        funding_satoshis=total_sat, push_msat=accepter_sat * 1000, dust_limit_satoshis=open2.dust_limit_satoshis,
        max_htlc_value_in_flight_msat=open2.max_htlc_value_in_flight_msat, channel_reserve_satoshis=reserve_sat,
        htlc_minimum_msat=open2.htlc_minimum_msat, feerate_per_kw=open2.commitment_feerate_perkw,
        to_self_delay=open2.to_self_delay, max_accepted_htlcs=open2.max_accepted_htlcs,
        funding_pubkey=open2.funding_pubkey, revocation_basepoint=open2.revocation_basepoint,
        payment_basepoint=open2.payment_basepoint, delayed_payment_basepoint=open2.delayed_payment_basepoint,
        htlc_basepoint=open2.htlc_basepoint, first_per_commitment_point=open2.first_per_commitment_point,
        channel_flags=open2.channel_flags,
        tlvs=OpenChannel.tlv_stream({k: v for k, v in open2.tlvs.items() if k != "require_confirmed_inputs"}),
    )  # fmt: skip


def _on_open(core: ChannelCore, cmd: OpenV2Command, out: _Out) -> None:
    from .state import Phase, _Out as Scratch

    bp = core.basepoints
    # BOLT 2: the temporary id is the v2 id with a zeroed basepoint for the peer's (not known yet)
    temporary = v2_channel_id(bytes(33), bp.revocation_basepoint)
    v1 = OpenCommand(
        temporary, cmd.chain_hash, cmd.funding_sat, 0, cmd.commitment_feerate_per_kw, cmd.local_features,
        cmd.remote_features, cmd.config, cmd.policy, cmd.channel_flags, type_bits=cmd.type_bits, local_alias=cmd.local_alias,
    )  # fmt: skip
    establish.on_open_command(core, v1, Scratch())  # the v1 checks and state; its open_channel is not sent
    s = core.state
    assert s.open_channel is not None and s.channel_type is not None
    tlvs = {k: v for k, v in s.open_channel.tlvs.items()}
    open2 = OpenChannel2(
        chain_hash=cmd.chain_hash, temporary_channel_id=temporary, funding_feerate_perkw=cmd.funding_feerate_per_kw,
        commitment_feerate_perkw=cmd.commitment_feerate_per_kw, funding_satoshis=cmd.funding_sat,
        dust_limit_satoshis=cmd.config.dust_limit_sat, max_htlc_value_in_flight_msat=cmd.config.max_htlc_value_in_flight_msat,
        htlc_minimum_msat=cmd.config.htlc_minimum_msat, to_self_delay=cmd.config.to_self_delay,
        max_accepted_htlcs=cmd.config.max_accepted_htlcs, locktime=cmd.locktime, funding_pubkey=bp.funding_pubkey,
        revocation_basepoint=bp.revocation_basepoint, payment_basepoint=bp.payment_basepoint,
        delayed_payment_basepoint=bp.delayed_payment_basepoint, htlc_basepoint=bp.htlc_basepoint,
        first_per_commitment_point=core.secrets.commitment_point(0),
        second_per_commitment_point=core.secrets.commitment_point(1), channel_flags=cmd.channel_flags,
        tlvs=OpenChannel2.tlv_stream(tlvs),
    )  # fmt: skip
    s.dual = DualFundSession(
        True, cmd.funding_feerate_per_kw, cmd.locktime, FundingOutput(b"", cmd.funding_sat, 0),
        tuple(cmd.inputs), tuple(cmd.outputs), cmd.entropy, open2=open2,
        node_ids=(cmd.local_node_id, cmd.remote_node_id),
    )  # fmt: skip
    s.phase = Phase.WAIT_ACCEPT2
    out.send(open2)


def _on_accept(core: ChannelCore, cmd: AcceptV2Command, out: _Out) -> None:
    from .state import Phase, _Out as Scratch

    msg = cmd.open_channel2
    s = core.state
    if channel_type_features(msg.tlvs) is None:
        s.temporary_channel_id = msg.temporary_channel_id
        raise RemoteFault("open_channel2 without channel_type")
    if "require_confirmed_inputs" in msg.tlvs and cmd.inputs:
        raise LocalMisuse("the opener requires confirmed inputs: contribute none")
    total = msg.funding_satoshis + cmd.funding_sat
    reserve = _reserve(total, msg.dust_limit_satoshis, cmd.config.dust_limit_sat)
    v1 = _v1_view(msg, total, cmd.funding_sat, reserve)
    config = replace(cmd.config, channel_reserve_sat=reserve)
    establish.on_accept_command(
        core,
        AcceptCommand(v1, cmd.chain_hash, cmd.local_features, cmd.remote_features, config, cmd.policy,
                      cmd.local_alias, cmd.zeroconf_trusted),
        Scratch(),
    )  # fmt: skip
    assert s.remote is not None and s.channel_type is not None
    s.config = cmd.config
    bp = core.basepoints
    s.channel_id = v2_channel_id(bp.revocation_basepoint, s.remote.basepoints.revocation_basepoint)
    funding = FundingOutput(p2wsh(establish.funding_script_of(core)), cmd.funding_sat, msg.funding_satoshis)
    s.dual = DualFundSession(False, msg.funding_feerate_perkw, msg.locktime, funding, tuple(cmd.inputs), tuple(cmd.outputs),
                             cmd.entropy, node_ids=(cmd.local_node_id, cmd.remote_node_id))  # fmt: skip
    _session(core)  # our contribution must pay its way (LocalMisuse, nothing changes)
    tlvs = {"upfront_shutdown_script": cmd.config.upfront_shutdown_script, "channel_type": s.channel_type}
    s.phase = Phase.INTERACTIVE
    out.send(
        AcceptChannel2(
            temporary_channel_id=msg.temporary_channel_id, funding_satoshis=cmd.funding_sat,
            dust_limit_satoshis=cmd.config.dust_limit_sat, max_htlc_value_in_flight_msat=cmd.config.max_htlc_value_in_flight_msat,
            htlc_minimum_msat=cmd.config.htlc_minimum_msat, minimum_depth=s.minimum_depth,
            to_self_delay=cmd.config.to_self_delay, max_accepted_htlcs=cmd.config.max_accepted_htlcs,
            funding_pubkey=bp.funding_pubkey, revocation_basepoint=bp.revocation_basepoint,
            payment_basepoint=bp.payment_basepoint, delayed_payment_basepoint=bp.delayed_payment_basepoint,
            htlc_basepoint=bp.htlc_basepoint, first_per_commitment_point=core.secrets.commitment_point(0),
            second_per_commitment_point=core.secrets.commitment_point(1), tlvs=AcceptChannel2.tlv_stream(tlvs),
        )
    )  # fmt: skip


def _on_accept_channel2(core: ChannelCore, msg: AcceptChannel2, out: _Out) -> None:
    from .state import Phase, _Out as Scratch

    s = core.state
    d = s.dual
    assert isinstance(d, DualFundSession) and s.open_channel is not None
    open2 = d.open2
    assert open2 is not None
    if msg.temporary_channel_id != s.temporary_channel_id:
        raise RemoteFault("accept_channel2 for another temporary_channel_id")
    answered = channel_type_features(msg.tlvs)
    if answered is None or answered != Features.from_bytes(s.channel_type or b""):
        raise RemoteFault("accept_channel2 must repeat our channel_type")
    total = open2.funding_satoshis + msg.funding_satoshis
    reserve = _reserve(total, msg.dust_limit_satoshis, s.config.dust_limit_sat)
    s.open_channel = _v1_view(open2, total, msg.funding_satoshis, reserve)
    s.funding_sat, s.push_msat, s.local_reserve_ask_sat = total, msg.funding_satoshis * 1000, reserve
    accept = AcceptChannel(
        temporary_channel_id=msg.temporary_channel_id, dust_limit_satoshis=msg.dust_limit_satoshis,
        max_htlc_value_in_flight_msat=msg.max_htlc_value_in_flight_msat, channel_reserve_satoshis=reserve,
        htlc_minimum_msat=msg.htlc_minimum_msat, minimum_depth=msg.minimum_depth, to_self_delay=msg.to_self_delay,
        max_accepted_htlcs=msg.max_accepted_htlcs, funding_pubkey=msg.funding_pubkey,
        revocation_basepoint=msg.revocation_basepoint, payment_basepoint=msg.payment_basepoint,
        delayed_payment_basepoint=msg.delayed_payment_basepoint, htlc_basepoint=msg.htlc_basepoint,
        first_per_commitment_point=msg.first_per_commitment_point,
        tlvs=AcceptChannel.tlv_stream({k: v for k, v in msg.tlvs.items() if k != "require_confirmed_inputs"}),
    )  # fmt: skip
    establish.on_accept_channel(core, accept, Scratch())  # v1's checks; its funding request is not ours to make
    assert s.remote is not None
    if "require_confirmed_inputs" in msg.tlvs:
        # our wallet may hand out its own unconfirmed change: rather than check each coin, decline
        _abort(core, out, "confirmed inputs required: not supported", send=True)
        return
    s.channel_id = v2_channel_id(core.basepoints.revocation_basepoint, s.remote.basepoints.revocation_basepoint)
    funding = FundingOutput(p2wsh(establish.funding_script_of(core)), open2.funding_satoshis, msg.funding_satoshis)
    s.dual = replace(d, funding=funding)
    s.phase = Phase.INTERACTIVE
    for m in _session(core).start_messages:
        out.send(m)


# ---------------------------------------------------------------- the funding transaction


def _on_interactive(core: ChannelCore, msg: Any, out: _Out) -> None:
    from .state import Phase

    s = core.state
    d = s.dual
    assert isinstance(d, DualFundSession)
    session = _session(core)
    replies = session.receive(msg)
    if session.state is SessionState.ABORTED:
        _abort(core, out, session.abort_reason or "aborted", send=True)
        return
    s.dual = replace(d, received=(*d.received, msg))
    for reply in replies:
        out.send(reply)
    if session.state is SessionState.COMPLETE:
        if (unspent := dualfund_rbf.check_double_spends(core, session.transaction)) is not None:
            _abort(core, out, unspent, send=True)
            return
        dualfund_sign.on_complete(core, session, out)
        s.phase = Phase.DUAL_SIGNING
