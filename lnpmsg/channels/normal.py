"""Normal operation (BOLT 2 "Normal Operation"): HTLC updates, commitment_signed,
revoke_and_ack, update_fee, with every receiving-side check that fails the channel.

Functions here take the :class:`~.state.ChannelCore`, the input and the
output collector; :data:`LEGAL` and :data:`HANDLERS` join the core's table.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.wire.tlv import EMPTY_TLV_STREAM, TlvStream

from . import splice_batch
from .commitments import build, sign_remote, verify_local
from .errors import ChannelError, LocalMisuse, RemoteFault, ShachainError
from .fees import HTLC_OUTPUT_WEIGHT
from .inputs import (
    AddHtlc,
    ChangeFee,
    FailHtlc,
    FailMalformedHtlc,
    FulfillHtlc,
    HtlcIncoming,
    HtlcSettled,
    Input,
    SignCommitment,
)
from .keys import per_commitment_point
from .messages import (
    ONION_PACKET_SIZE,
    CommitmentSigned,
    RevokeAndAck,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
    UpdateFulfillHtlc,
)
from .shachain import FIRST_INDEX, ShachainStore
from .updates import Changes, CommitSpec, Update, funder_charge_sat, reduce

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = ["BADONION", "HANDLERS", "MAX_CLTV_EXPIRY", "dispatch_special", "legal_table"]

#: BOLT 4: update_fail_malformed_htlc's failure_code must have this bit.
BADONION = 0x8000
#: cltv_expiry at or above this is a timestamp, which BOLT 2 forbids.
MAX_CLTV_EXPIRY = 500_000_000


def _phases(*names: str) -> set[Any]:
    from .state import Phase

    return {Phase[n] for n in names}


def legal_table() -> dict[type, set[Any]]:
    """Normal operation's rows of the core's phase table."""
    updates = _phases("NORMAL", "SHUTDOWN")
    table: dict[type, set[Any]] = {kind: updates for kind in (
        FulfillHtlc, FailHtlc, FailMalformedHtlc, SignCommitment, ChangeFee,
        UpdateFulfillHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, CommitmentSigned, RevokeAndAck, UpdateFee,
    )}  # fmt: skip
    # No new HTLC once a shutdown was sent or received.
    table[AddHtlc] = _phases("NORMAL")
    table[UpdateAddHtlc] = _phases("NORMAL")
    return table


def dispatch_special(core: ChannelCore, item: Input, out: _Out) -> bool:
    """Inputs outside the phase table (reconnection, close): True when handled."""
    from . import close, reestablish

    return reestablish.dispatch(core, item, out) or close.dispatch(core, item, out)


# ------------------------------------------------------------ helpers


def _latest_remote_spec(core: ChannelCore) -> CommitSpec:
    s = core.state
    commit = s.remote_next_commit or s.remote_commit
    assert commit is not None
    return commit.spec


def _check_sender_affords(
    spec: CommitSpec, sender_is_owner: bool, sender_is_funder: bool, reserve_sat: int, dust_limit_sat: int, anchors: bool
) -> bool:
    """Whether the sender keeps its reserve and (as funder) pays the fee, in ``spec``."""
    balance = spec.to_local_msat if sender_is_owner else spec.to_remote_msat
    if sender_is_funder:
        balance -= funder_charge_sat(spec, dust_limit_sat, anchors=anchors) * 1000
    return balance >= reserve_sat * 1000


def _fee_spike_ok(spec: CommitSpec, reserve_sat: int, dust_limit_sat: int, anchors: bool) -> bool:
    """BOLT 2's fee spike buffer for the funder: at twice the feerate, with one more untrimmed
    HTLC, it still pays the fee and keeps its reserve (``spec`` is the peer's commitment)."""
    doubled = replace(spec, feerate_per_kw=2 * spec.feerate_per_kw)
    extra_fee_sat = HTLC_OUTPUT_WEIGHT * doubled.feerate_per_kw // 1000
    balance_msat = spec.to_remote_msat - (funder_charge_sat(doubled, dust_limit_sat, anchors=anchors) + extra_fee_sat) * 1000
    return balance_msat >= reserve_sat * 1000


def _find_settle(changes: Changes, htlc_id: int) -> bool:
    return any(not isinstance(u, UpdateAddHtlc | UpdateFee) and u.id == htlc_id for u in changes.all())


# ------------------------------------------------------------ our updates


def on_add(core: ChannelCore, cmd: AddHtlc, out: _Out) -> None:
    s = core.state
    remote = s.remote
    assert remote is not None
    if cmd.amount_msat <= 0 or cmd.amount_msat < remote.htlc_minimum_msat:
        raise LocalMisuse(f"amount {cmd.amount_msat} msat is below the peer's htlc_minimum_msat")
    if not 0 <= cmd.cltv_expiry < MAX_CLTV_EXPIRY:
        raise LocalMisuse("cltv_expiry must be a block height")
    if len(cmd.onion) != ONION_PACKET_SIZE or len(cmd.payment_hash) != 32:
        raise LocalMisuse("the onion is 1366 bytes and the payment hash 32")
    add = UpdateAddHtlc(
        channel_id=s.channel_id, id=s.local_next_htlc_id, amount_msat=cmd.amount_msat,
        payment_hash=cmd.payment_hash, cltv_expiry=cmd.cltv_expiry, onion_routing_packet=cmd.onion,
        tlvs=TlvStream({"blinded_path": cmd.path_key}) if cmd.path_key is not None else EMPTY_TLV_STREAM,
    )  # fmt: skip
    try:
        # The peer's next commitment, from its view: our adds are incoming to it.
        spec = reduce(_latest_remote_spec(core), s.remote_changes.acked, (*s.local_changes.proposed, add))
    except ChannelError:
        raise LocalMisuse("we cannot afford this HTLC") from None
    offered = [h for h in spec.htlcs if h.incoming]
    if len(offered) > remote.max_accepted_htlcs:
        raise LocalMisuse(f"the peer accepts at most {remote.max_accepted_htlcs} HTLCs")
    if sum(h.add.amount_msat for h in offered) > remote.max_htlc_value_in_flight_msat:
        raise LocalMisuse("the peer's max_htlc_value_in_flight_msat would be exceeded")
    if not _check_sender_affords(spec, False, s.funder, remote.channel_reserve_sat, remote.dust_limit_sat, s.anchors):
        raise LocalMisuse("we cannot afford this HTLC and keep our reserve")
    if s.funder and not _fee_spike_ok(spec, remote.channel_reserve_sat, remote.dust_limit_sat, s.anchors):
        raise LocalMisuse("this HTLC would leave no fee spike buffer (BOLT 2: twice the feerate, one more HTLC)")
    splice_batch.refuse_unaffordable(core, spec, ours=True)
    s.local_changes = s.local_changes.propose(add)
    s.local_next_htlc_id += 1
    out.send(add)


def _incoming_cross_signed(core: ChannelCore, htlc_id: int) -> UpdateAddHtlc:
    s = core.state
    assert s.local_commit is not None and s.remote_commit is not None
    add = s.local_commit.spec.htlc(True, htlc_id)
    if add is None or _latest_remote_spec(core).htlc(False, htlc_id) is None:
        raise LocalMisuse(f"no incoming HTLC {htlc_id} committed on both sides")
    if _find_settle(s.local_changes, htlc_id):
        raise LocalMisuse(f"HTLC {htlc_id} is already being settled")
    return add


def on_fulfill(core: ChannelCore, cmd: FulfillHtlc, out: _Out) -> None:
    add = _incoming_cross_signed(core, cmd.htlc_id)
    if sha256(cmd.preimage) != add.payment_hash:
        raise LocalMisuse("the preimage does not match the payment hash")
    _propose(core, UpdateFulfillHtlc(channel_id=core.state.channel_id, id=cmd.htlc_id, payment_preimage=cmd.preimage), out)


def on_fail(core: ChannelCore, cmd: FailHtlc, out: _Out) -> None:
    _incoming_cross_signed(core, cmd.htlc_id)
    _propose(core, UpdateFailHtlc(channel_id=core.state.channel_id, id=cmd.htlc_id, reason=cmd.reason), out)


def on_fail_malformed(core: ChannelCore, cmd: FailMalformedHtlc, out: _Out) -> None:
    _incoming_cross_signed(core, cmd.htlc_id)
    if not cmd.failure_code & BADONION:
        raise LocalMisuse("failure_code needs the BADONION bit")
    msg = UpdateFailMalformedHtlc(
        channel_id=core.state.channel_id, id=cmd.htlc_id, sha256_of_onion=cmd.sha256_of_onion,
        failure_code=cmd.failure_code,
    )  # fmt: skip
    _propose(core, msg, out)


def on_change_fee(core: ChannelCore, cmd: ChangeFee, out: _Out) -> None:
    s = core.state
    assert s.remote is not None
    if not s.funder:
        raise LocalMisuse("only the funder sends update_fee")
    msg = UpdateFee(channel_id=s.channel_id, feerate_per_kw=cmd.feerate_per_kw)
    spec = reduce(_latest_remote_spec(core), s.remote_changes.acked, (*s.local_changes.proposed, msg))
    if not _check_sender_affords(spec, False, True, 0, s.remote.dust_limit_sat, s.anchors):
        raise LocalMisuse(f"we cannot afford feerate {cmd.feerate_per_kw}")
    _propose(core, msg, out)


def _propose(core: ChannelCore, update: Update, out: _Out) -> None:
    core.state.local_changes = core.state.local_changes.propose(update)
    out.send(update)


def on_sign(core: ChannelCore, cmd: SignCommitment, out: _Out) -> None:
    s = core.state
    if s.remote_next_point is None or s.remote_commit is None:
        raise LocalMisuse("waiting for the peer's revoke_and_ack")
    if not (s.local_changes.proposed or s.remote_changes.acked):
        raise LocalMisuse("nothing to sign")
    spec = reduce(s.remote_commit.spec, s.remote_changes.acked, s.local_changes.proposed)
    number = s.remote_commit.number + 1
    commitment = build(core.keys(), spec, number, s.remote_next_point, local=False)
    signature, htlc_sigs = sign_remote(commitment, core.secrets)
    from .state import RemoteCommit

    point = s.remote_next_point
    s.remote_next_commit = RemoteCommit(number, spec, commitment.tx.txid, point)
    s.remote_next_point = None
    s.local_changes = Changes((), s.local_changes.proposed, s.local_changes.acked)
    s.remote_changes = Changes(s.remote_changes.proposed, s.remote_changes.signed + s.remote_changes.acked, ())
    s.last_sent_was_commit = True
    splice_batch.send_commitment(core, commitment_signed_message(core, signature, htlc_sigs), spec, number, point, out)


def commitment_signed_message(core: ChannelCore, signature: bytes, htlc_sigs: tuple[bytes, ...]) -> CommitmentSigned:
    """A commitment_signed of this channel."""
    return CommitmentSigned(channel_id=core.state.channel_id, signature=signature, htlc_signature=htlc_sigs)


# ------------------------------------------------------------ their updates


def on_update_add(core: ChannelCore, msg: UpdateAddHtlc, out: _Out) -> None:
    s = core.state
    config = s.config
    assert s.local_commit is not None and s.remote is not None
    if msg.amount_msat == 0 or msg.amount_msat < config.htlc_minimum_msat:
        raise RemoteFault(f"HTLC of {msg.amount_msat} msat is below our htlc_minimum_msat")
    if msg.id != s.remote_next_htlc_id:
        raise RemoteFault(f"HTLC id {msg.id}, expected {s.remote_next_htlc_id}")
    if msg.cltv_expiry >= MAX_CLTV_EXPIRY:
        raise RemoteFault("cltv_expiry is not a block height")
    try:
        spec = reduce(s.local_commit.spec, s.local_changes.acked, (*s.remote_changes.proposed, msg))
    except ChannelError:
        raise RemoteFault("the peer cannot afford this HTLC") from None
    incoming = [h for h in spec.htlcs if h.incoming]
    if len(incoming) > config.max_accepted_htlcs:
        raise RemoteFault(f"more than our max_accepted_htlcs ({config.max_accepted_htlcs}) HTLCs")
    if sum(h.add.amount_msat for h in incoming) > config.max_htlc_value_in_flight_msat:
        raise RemoteFault("more than our max_htlc_value_in_flight_msat in HTLCs")
    if not _check_sender_affords(spec, False, not s.funder, s.local_reserve_ask_sat, config.dust_limit_sat, s.anchors):
        raise RemoteFault("the peer cannot afford this HTLC while keeping its reserve")
    splice_batch.refuse_unaffordable(core, spec, ours=False)
    s.remote_changes = s.remote_changes.propose(msg)
    s.remote_next_htlc_id += 1


def _outgoing_cross_signed(core: ChannelCore, htlc_id: int) -> UpdateAddHtlc:
    s = core.state
    assert s.local_commit is not None and s.remote_commit is not None
    add = s.remote_commit.spec.htlc(True, htlc_id)
    if add is None or s.local_commit.spec.htlc(False, htlc_id) is None:
        raise RemoteFault(f"no outgoing HTLC {htlc_id} committed on both sides")
    if _find_settle(s.remote_changes, htlc_id):
        raise RemoteFault(f"HTLC {htlc_id} settled twice")
    return add


def on_update_fulfill(core: ChannelCore, msg: UpdateFulfillHtlc, out: _Out) -> None:
    add = _outgoing_cross_signed(core, msg.id)
    if sha256(msg.payment_preimage) != add.payment_hash:
        raise RemoteFault(f"the preimage of HTLC {msg.id} does not match its payment hash")
    core.state.remote_changes = core.state.remote_changes.propose(msg)
    # The preimage is ours now: settle upstream at once (it cannot be taken back).
    out.emit(HtlcSettled(msg.id, preimage=msg.payment_preimage))


def on_update_fail(core: ChannelCore, msg: UpdateFailHtlc, out: _Out) -> None:
    _outgoing_cross_signed(core, msg.id)
    core.state.remote_changes = core.state.remote_changes.propose(msg)


def on_update_fail_malformed(core: ChannelCore, msg: UpdateFailMalformedHtlc, out: _Out) -> None:
    _outgoing_cross_signed(core, msg.id)
    if not msg.failure_code & BADONION:
        raise RemoteFault("update_fail_malformed_htlc without the BADONION bit")
    core.state.remote_changes = core.state.remote_changes.propose(msg)


def on_update_fee(core: ChannelCore, msg: UpdateFee, out: _Out) -> None:
    s = core.state
    assert s.local_commit is not None and s.remote is not None
    if s.funder:
        raise RemoteFault("update_fee from the fundee")
    s.policy.check_feerate(msg.feerate_per_kw)
    spec = reduce(s.local_commit.spec, s.local_changes.acked, (*s.remote_changes.proposed, msg))
    if not _check_sender_affords(spec, False, True, 0, s.config.dust_limit_sat, s.anchors):
        raise RemoteFault(f"the funder cannot afford feerate {msg.feerate_per_kw}")
    s.remote_changes = s.remote_changes.propose(msg)


def on_commitment_signed(core: ChannelCore, msg: CommitmentSigned, out: _Out) -> None:
    s = core.state
    assert s.local_commit is not None
    if not (s.remote_changes.proposed or s.local_changes.acked):
        raise RemoteFault("commitment_signed without any update")
    spec = reduce(s.local_commit.spec, s.local_changes.acked, s.remote_changes.proposed)
    number = s.local_commit.number + 1
    commitment = build(core.keys(), spec, number, core.secrets.commitment_point(number), local=True)
    verify_local(commitment, msg.signature, msg.htlc_signature)
    from .state import LocalCommit

    s.local_commit = LocalCommit(number, spec, msg.signature, msg.htlc_signature)
    s.local_changes = replace(s.local_changes, acked=())
    s.remote_changes = Changes((), s.remote_changes.signed, s.remote_changes.acked + s.remote_changes.proposed)
    s.last_sent_was_commit = False
    out.send(revoke_and_ack_message(core))


def revoke_and_ack_message(core: ChannelCore) -> RevokeAndAck:
    """The revoke_and_ack for our current commitment (revoking the one before it)."""
    s = core.state
    assert s.local_commit is not None
    number = s.local_commit.number
    return RevokeAndAck(
        channel_id=s.channel_id,
        per_commitment_secret=core.secrets.commitment_secret(number - 1),
        next_per_commitment_point=core.secrets.commitment_point(number + 1),
    )


def on_revoke_and_ack(core: ChannelCore, msg: RevokeAndAck, out: _Out) -> None:
    s = core.state
    if s.remote_next_commit is None or s.remote_commit is None:
        raise RemoteFault("revoke_and_ack without a commitment_signed to answer")
    try:
        point = per_commitment_point(msg.per_commitment_secret)
    except ChannelError:
        point = b""
    if point != s.remote_commit.point:
        raise RemoteFault("per_commitment_secret does not match the revoked commitment's point")
    try:
        store = ShachainStore.restore(list(s.remote_secrets))
        store.insert(FIRST_INDEX - s.remote_commit.number, msg.per_commitment_secret)
    except ShachainError as exc:
        raise RemoteFault(f"per_commitment_secret: {exc}") from None
    s.remote_secrets = tuple(store.entries())
    s.remote_commit = s.remote_next_commit
    s.remote_next_commit = None
    s.remote_next_point = msg.next_per_commitment_point
    splice_batch.on_revoked(core)
    s.local_changes = Changes(s.local_changes.proposed, (), s.local_changes.acked + s.local_changes.signed)
    for update in s.remote_changes.signed:
        # In both commitments now, irrevocably.
        if isinstance(update, UpdateAddHtlc):
            out.emit(HtlcIncoming(update))
        elif isinstance(update, UpdateFailHtlc):
            out.emit(HtlcSettled(update.id, reason=update.reason))
        elif isinstance(update, UpdateFailMalformedHtlc):
            out.emit(HtlcSettled(update.id, failure_code=update.failure_code))
    s.remote_changes = replace(s.remote_changes, signed=())


def _handlers() -> dict[type, Any]:
    return {
        AddHtlc: on_add, FulfillHtlc: on_fulfill, FailHtlc: on_fail, FailMalformedHtlc: on_fail_malformed,
        ChangeFee: on_change_fee, SignCommitment: on_sign, UpdateAddHtlc: on_update_add,
        UpdateFulfillHtlc: on_update_fulfill, UpdateFailHtlc: on_update_fail,
        UpdateFailMalformedHtlc: on_update_fail_malformed, UpdateFee: on_update_fee,
        CommitmentSigned: on_commitment_signed, RevokeAndAck: on_revoke_and_ack,
    }  # fmt: skip


HANDLERS: dict[type, Any] = _handlers()
