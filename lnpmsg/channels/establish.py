"""Channel establishment v1 (BOLT 2) in the channel core, sans-IO.

``open_channel`` / ``accept_channel`` (the channel type negotiated and its
variations checked, the peer's limits by :func:`~.params.check_open` /
:func:`~.params.check_accept`), the funding transaction found by its script,
``funding_created`` / ``funding_signed`` with the first commitments; from
there :mod:`.ready` waits for the funding's depth. :mod:`.dualfund` runs
the same checks on its v1 view of a v2 open, through these handlers.

Functions here take the :class:`~.state.ChannelCore`, the input and the
output collector; :data:`HANDLERS` joins the core's phase table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.script import p2wsh
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.wire import Features

from . import ready
from .commitments import build, sign_remote, verify_local
from .errors import LocalMisuse, RemoteFault
from .inputs import (
    AcceptCommand,
    BroadcastFunding,
    ChannelOpened,
    FundingNeeded,
    FundingTransaction,
    OpenCommand,
)
from .messages import AcceptChannel, FundingCreated, FundingSigned, OpenChannel, channel_type_features
from .params import ANCHORS_BIT, check_accept, check_open, negotiate_channel_type, opening_tlvs, v1_channel_id
from .script import funding_script
from .updates import CommitSpec, funder_charge_sat

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = [
    "HANDLERS",
    "funding_script_of",
    "initial_specs",
    "on_accept_channel",
    "on_accept_command",
    "on_funding_created",
    "on_funding_signed",
    "on_funding_transaction",
    "on_open_command",
    "open_message",
]


def initial_specs(core: ChannelCore) -> tuple[CommitSpec, CommitSpec]:
    """The first commitments (ours, theirs): the funding, less what the funder pushed."""
    s = core.state
    funder_msat = s.funding_sat * 1000 - s.push_msat
    local_msat, remote_msat = (funder_msat, s.push_msat) if s.funder else (s.push_msat, funder_msat)
    assert s.open_channel is not None
    feerate = s.open_channel.feerate_per_kw
    local = CommitSpec((), feerate, local_msat, remote_msat)
    return local, local.flipped()


def open_message(core: ChannelCore, cmd: OpenCommand) -> OpenChannel:
    """Our open_channel for ``cmd`` (the channel type already in the state)."""
    bp = core.basepoints
    # BOLT 2 (option_channel_type ASSUMED): the opener MUST set channel_type, whatever the
    # peer's init says; type 1 is odd, so a peer that does not know it ignores it.
    tlvs = opening_tlvs(cmd.config.upfront_shutdown_script, core.state.channel_type)
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
        htlc_basepoint=bp.htlc_basepoint, first_per_commitment_point=core.secrets.commitment_point(0),
        channel_flags=cmd.channel_flags, tlvs=OpenChannel.tlv_stream(tlvs),
    )  # fmt: skip


def on_open_command(core: ChannelCore, cmd: OpenCommand, out: _Out) -> None:
    """The funder starts: the channel type chosen and checked, open_channel sent."""
    from .state import Phase

    s = core.state
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
    s.open_channel = open_message(core, cmd)
    s.local_reserve_ask_sat = s.open_channel.channel_reserve_satoshis
    s.phase = Phase.WAIT_ACCEPT
    out.send(s.open_channel)


def on_accept_command(core: ChannelCore, cmd: AcceptCommand, out: _Out) -> None:
    """The fundee answers the peer's open_channel: its limits checked, accept_channel sent."""
    from .state import Phase

    s = core.state
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
    bp = core.basepoints
    tlvs = opening_tlvs(cmd.config.upfront_shutdown_script, s.channel_type)
    s.phase = Phase.WAIT_FUNDING_CREATED
    out.send(
        AcceptChannel(
            temporary_channel_id=msg.temporary_channel_id, dust_limit_satoshis=cmd.config.dust_limit_sat,
            max_htlc_value_in_flight_msat=cmd.config.max_htlc_value_in_flight_msat,
            channel_reserve_satoshis=s.local_reserve_ask_sat, htlc_minimum_msat=cmd.config.htlc_minimum_msat,
            minimum_depth=s.minimum_depth, to_self_delay=cmd.config.to_self_delay,
            max_accepted_htlcs=cmd.config.max_accepted_htlcs, funding_pubkey=bp.funding_pubkey,
            revocation_basepoint=bp.revocation_basepoint, payment_basepoint=bp.payment_basepoint,
            delayed_payment_basepoint=bp.delayed_payment_basepoint, htlc_basepoint=bp.htlc_basepoint,
            first_per_commitment_point=core.secrets.commitment_point(0),
            tlvs=AcceptChannel.tlv_stream(tlvs),
        )
    )  # fmt: skip


def on_accept_channel(core: ChannelCore, msg: AcceptChannel, out: _Out) -> None:
    """The funder checks accept_channel, then asks the wallet for the funding transaction."""
    from .state import Phase

    s = core.state
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
    local, _ = initial_specs(core)
    if local.to_local_msat // 1000 < funder_charge_sat(local, s.config.dust_limit_sat, anchors=s.anchors):
        raise LocalMisuse("we cannot pay the first commitment's fee")
    s.phase = Phase.WAIT_FUNDING_TX
    out.emit(FundingNeeded(p2wsh(funding_script_of(core)), s.funding_sat))


def funding_script_of(core: ChannelCore) -> bytes:
    """The 2-of-2 funding script of both funding keys (once the peer's is known)."""
    assert core.state.remote is not None
    return funding_script(core.basepoints.funding_pubkey, core.state.remote.basepoints.funding_pubkey)


def on_funding_transaction(core: ChannelCore, cmd: FundingTransaction, out: _Out) -> None:
    """The funder's funding transaction: its output found, the peer's first commitment signed."""
    from .state import Phase, RemoteCommit

    s = core.state
    tx = Tx.parse(cmd.raw_tx)
    script_pubkey = p2wsh(funding_script_of(core))
    # The output is found by its script, not assumed first (Electrum puts an OP_RETURN backup first).
    matches = [i for i, o in enumerate(tx.outputs) if o.script_pubkey == script_pubkey and o.amount_sat == s.funding_sat]
    if len(matches) != 1:
        raise LocalMisuse(f"the funding transaction has {len(matches)} outputs paying the funding script")
    s.funding_tx = cmd.raw_tx
    s.funding_outpoint = OutPoint(tx.txid, matches[0])
    _, remote_spec = initial_specs(core)
    assert s.remote is not None
    remote = build(core.keys(), remote_spec, 0, s.remote.first_per_commitment_point, local=False)
    signature, _ = sign_remote(remote, core.secrets)
    s.remote_commit = RemoteCommit(0, remote_spec, remote.tx.txid, s.remote.first_per_commitment_point)
    s.channel_id = v1_channel_id(s.funding_outpoint)
    s.phase = Phase.WAIT_FUNDING_SIGNED
    out.send(
        FundingCreated(
            temporary_channel_id=s.temporary_channel_id, funding_txid=tx.txid,
            funding_output_index=matches[0], signature=signature,
        )
    )  # fmt: skip


def on_funding_created(core: ChannelCore, msg: FundingCreated, out: _Out) -> None:
    """The fundee checks our first commitment's signature, signs the funder's: the channel is opened."""
    from .state import LocalCommit, Phase, RemoteCommit

    s = core.state
    assert s.remote is not None
    if msg.temporary_channel_id != s.temporary_channel_id:
        raise RemoteFault("funding_created for another temporary_channel_id")
    s.funding_outpoint = OutPoint(msg.funding_txid, msg.funding_output_index)
    local_spec, remote_spec = initial_specs(core)
    local = build(core.keys(), local_spec, 0, core.secrets.commitment_point(0), local=True)
    verify_local(local, msg.signature, ())
    s.local_commit = LocalCommit(0, local_spec, msg.signature, ())
    remote = build(core.keys(), remote_spec, 0, s.remote.first_per_commitment_point, local=False)
    signature, _ = sign_remote(remote, core.secrets)
    s.remote_commit = RemoteCommit(0, remote_spec, remote.tx.txid, s.remote.first_per_commitment_point)
    s.channel_id = v1_channel_id(s.funding_outpoint)
    s.phase = Phase.AWAIT_READY
    out.send(FundingSigned(channel_id=s.channel_id, signature=signature))
    out.emit(ChannelOpened(s.channel_id, s.funding_outpoint, s.minimum_depth))
    ready.send_ready_if_zero_depth(core, out)


def on_funding_signed(core: ChannelCore, msg: FundingSigned, out: _Out) -> None:
    """The funder checks our first commitment's signature: the funding may be broadcast."""
    from .state import LocalCommit, Phase

    s = core.state
    if msg.channel_id != s.channel_id:
        raise RemoteFault("funding_signed for another channel_id")
    local_spec, _ = initial_specs(core)
    local = build(core.keys(), local_spec, 0, core.secrets.commitment_point(0), local=True)
    verify_local(local, msg.signature, ())
    s.local_commit = LocalCommit(0, local_spec, msg.signature, ())
    s.phase = Phase.AWAIT_READY
    assert s.funding_tx is not None and s.funding_outpoint is not None
    out.emit(BroadcastFunding(s.funding_tx))
    out.emit(ChannelOpened(s.channel_id, s.funding_outpoint, s.minimum_depth))
    ready.send_ready_if_zero_depth(core, out)


#: The establishment rows of the core's handlers (the phases they are legal in: the core's table).
HANDLERS: dict[type, Any] = {
    OpenCommand: on_open_command,
    AcceptCommand: on_accept_command,
    AcceptChannel: on_accept_channel,
    FundingTransaction: on_funding_transaction,
    FundingCreated: on_funding_created,
    FundingSigned: on_funding_signed,
}
