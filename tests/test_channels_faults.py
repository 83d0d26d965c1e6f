"""Every "MUST fail the channel" / "MUST send an error" case of BOLT 2 this core
covers: a peer message breaking the rule fails the channel (an ``error`` goes
out, the phase is FAILED, our commitment is offered for broadcast once one is
signed) and the state is otherwise untouched."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from test_channels_pair import FUNDING_SAT, ChannelPair, features, make_secrets

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import (
    AcceptCommand,
    BroadcastFunding,
    ChannelFailed,
    Received,
    SignCommitment,
)
from lnpmsg.channels.messages import (
    AcceptChannel,
    CommitmentSigned,
    FundingCreated,
    FundingSigned,
    OpenChannel,
    RevokeAndAck,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
    UpdateFulfillHtlc,
)
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels.state import ChannelCore, Phase
from lnpmsg.wire import CHAIN_HASH_MAINNET, CHAIN_HASH_REGTEST, Error, Features

BAD_POINT = b"\x02" + b"\xff" * 32  # 02-prefixed, but not on the curve


def sent_open() -> OpenChannel:
    pair = ChannelPair(push_msat=100_000_000)
    pair.feed(pair.alice, pair.open_command())
    msg = pair.alice.outputs[0].messages[0]
    assert isinstance(msg, OpenChannel)
    return msg


def assert_failed(core: ChannelCore, messages: tuple[Any, ...], why: str) -> None:
    assert core.phase is Phase.FAILED
    errors = [m for m in messages if isinstance(m, Error)]
    assert errors and why in errors[0].data.decode(), errors


OPEN_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "other chain": ({"chain_hash": CHAIN_HASH_MAINNET}, "chain"),
    "funding too small": ({"funding_satoshis": 1000, "push_msat": 0}, "funding_satoshis"),
    "push above funding": ({"push_msat": FUNDING_SAT * 1000 + 1}, "push_msat"),
    "to_self_delay too large": ({"to_self_delay": 5000}, "to_self_delay"),
    "max_accepted_htlcs above 483": ({"max_accepted_htlcs": 484}, "483"),
    "feerate too low": ({"feerate_per_kw": 100}, "feerate_per_kw"),
    "feerate too high": ({"feerate_per_kw": 1_000_000}, "feerate_per_kw"),
    "dust limit below 354": ({"dust_limit_satoshis": 353}, "354"),
    "reserve below the dust limit": ({"channel_reserve_satoshis": 500, "dust_limit_satoshis": 600}, "less than dust"),
    "funder cannot pay the fee": ({"push_msat": FUNDING_SAT * 1000 - 1000}, "fee"),
    "both balances at the reserve": ({"channel_reserve_satoshis": 200_000, "push_msat": 0, "funding_satoshis": 200_000}, "reserve"),
    "key not on the curve": ({"htlc_basepoint": BAD_POINT}, "invalid key"),
    "unknown channel_type": ({"tlvs": OpenChannel.tlv_stream(channel_type=Features.from_bits([12, 50]).to_bytes())}, "channel_type"),
    "bad upfront script": (
        {"tlvs": OpenChannel.tlv_stream(upfront_shutdown_script=b"\x51", channel_type=Features.from_bits([12]).to_bytes())},
        "shutdown script",
    ),
    "reserve too large": ({"channel_reserve_satoshis": FUNDING_SAT // 2}, "reserve"),
}


@pytest.mark.parametrize("case", OPEN_CASES)
def test_open_channel_checks(case: str) -> None:
    changes, why = OPEN_CASES[case]
    msg = dataclasses.replace(sent_open(), **changes)
    bob = ChannelCore(make_secrets("bob"))
    out = bob.receive(AcceptCommand(msg, CHAIN_HASH_REGTEST, features(False), features(False)), 1.0)
    assert_failed(bob, out.messages, why)
    assert out.messages[0].channel_id == msg.temporary_channel_id  # type: ignore[attr-defined]


def test_static_remotekey_is_required() -> None:
    # a lenient fundee, left to the init features by an open_channel without channel_type
    bob = ChannelCore(make_secrets("bob"))
    no_type = dataclasses.replace(sent_open(), tlvs=OpenChannel.tlv_stream())
    lenient = OpeningPolicy(require_channel_type=False)
    out = bob.receive(AcceptCommand(no_type, CHAIN_HASH_REGTEST, features(False), 0, policy=lenient), 1.0)
    assert_failed(bob, out.messages, "static_remotekey")


ACCEPT_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "other temporary id": ({"temporary_channel_id": b"\x09" * 32}, "temporary_channel_id"),
    "minimum_depth too large": ({"minimum_depth": 1000}, "minimum_depth"),
    "max_accepted_htlcs above 483": ({"max_accepted_htlcs": 500}, "483"),
    "our reserve below their dust limit": ({"dust_limit_satoshis": 15_000, "channel_reserve_satoshis": 15_000}, "dust"),
    "reserve below their own dust": ({"channel_reserve_satoshis": 400, "dust_limit_satoshis": 546}, "dust"),
    "other channel_type": ({"tlvs": AcceptChannel.tlv_stream(channel_type=Features.from_bits([12, 22]).to_bytes())}, "channel_type"),
    "to_self_delay too large": ({"to_self_delay": 65000}, "to_self_delay"),
}


@pytest.mark.parametrize("case", ACCEPT_CASES)
def test_accept_channel_checks(case: str) -> None:
    changes, why = ACCEPT_CASES[case]
    pair = ChannelPair(push_msat=100_000_000, bob_config=ChannelConfig(channel_reserve_sat=10_000))
    pair.feed(pair.alice, pair.open_command())
    _, msg = pair.wire.popleft()
    pair.feed(pair.bob, AcceptCommand(msg, CHAIN_HASH_REGTEST, features(False), features(False),
                                      pair.bob_config))  # type: ignore[arg-type]  # fmt: skip
    _, accept = pair.wire.popleft()
    out = pair.feed(pair.alice, Received(dataclasses.replace(accept, **changes)))
    assert_failed(pair.alice.core, out.messages, why)


def funding_created_held() -> tuple[ChannelPair, FundingCreated]:
    """Open and accept; Alice's funding_created is held back and returned."""
    pair = ChannelPair(push_msat=100_000_000)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.hold = True
    pair.open_rest_unchecked()
    pair.hold = False
    ((_, created),) = pair.held
    assert isinstance(created, FundingCreated)
    return pair, created


def test_bad_funding_created_signature() -> None:
    pair, created = funding_created_held()
    out = pair.feed(pair.bob, Received(dataclasses.replace(created, signature=bytes(64))))
    assert_failed(pair.bob.core, out.messages, "signature")


def test_bad_funding_signed_signature() -> None:
    pair, created = funding_created_held()
    pair.feed(pair.bob, Received(created))
    _, signed = pair.wire.popleft()
    assert isinstance(signed, FundingSigned)
    out = pair.feed(pair.alice, Received(dataclasses.replace(signed, signature=bytes(64))))
    assert_failed(pair.alice.core, out.messages, "signature")
    assert not any(isinstance(e, BroadcastFunding) for e in pair.alice.events)  # the funding never leaves


# ------------------------------------------------------------ normal operation


@pytest.fixture
def pair() -> ChannelPair:
    p = ChannelPair(push_msat=300_000_000, bob_config=ChannelConfig(max_accepted_htlcs=3, max_htlc_value_in_flight_msat=50_000_000))
    p.open()
    return p


def add_msg(p: ChannelPair, **changes: Any) -> UpdateAddHtlc:
    base: dict[str, Any] = {
        "channel_id": p.bob.core.state.channel_id, "id": p.bob.core.state.remote_next_htlc_id,
        "amount_msat": 1_000_000, "payment_hash": bytes(32), "cltv_expiry": 500, "onion_routing_packet": bytes(1366),
    }  # fmt: skip
    base.update(changes)
    return UpdateAddHtlc(**base)


def fail_with(p: ChannelPair, msg: Any, why: str, who: str = "bob") -> None:
    side = getattr(p, who)
    state = side.core.state
    out = p.feed(side, Received(msg))
    assert_failed(side.core, out.messages, why)
    failed = [e for e in out.events if isinstance(e, ChannelFailed)]
    assert failed and failed[0].commitment_tx is not None  # our latest commitment, for broadcast
    assert state.local_commit == side.core.state.local_commit


ADD_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "zero amount": ({"amount_msat": 0}, "htlc_minimum_msat"),
    "wrong id": ({"id": 5}, "expected 0"),
    "cltv is a timestamp": ({"cltv_expiry": 500_000_000}, "block height"),
    "over in flight": ({"amount_msat": 60_000_000}, "max_htlc_value_in_flight_msat"),
    "cannot afford": ({"amount_msat": FUNDING_SAT * 1000}, "afford"),
}


@pytest.mark.parametrize("case", ADD_CASES)
def test_update_add_htlc_checks(pair: ChannelPair, case: str) -> None:
    changes, why = ADD_CASES[case]
    fail_with(pair, add_msg(pair, **changes), why)


def test_too_many_htlcs(pair: ChannelPair) -> None:
    for _ in range(3):
        pair.feed(pair.bob, Received(add_msg(pair)))
    fail_with(pair, add_msg(pair), "max_accepted_htlcs")


def test_the_reserve_is_kept(pair: ChannelPair) -> None:
    # Bob has 300,000 sat; Alice asked him to keep 1% of the funding (10,000 sat).
    pair.feed(pair.alice, Received(add_msg(pair, channel_id=pair.alice.core.state.channel_id, id=0,
                                            amount_msat=290_000_001)))  # fmt: skip
    assert_failed(pair.alice.core, pair.alice.outputs[-1].messages, "reserve")


def settled_htlc(pair: ChannelPair) -> tuple[int, bytes]:
    htlc, preimage = pair.add(pair.alice, 10_000_000)
    pair.commit(pair.alice)
    return htlc, preimage


def test_settles_of_unknown_htlcs_and_wrong_preimages(pair: ChannelPair) -> None:
    _, preimage = settled_htlc(pair)
    cid = pair.alice.core.state.channel_id
    fail_with(pair, UpdateFulfillHtlc(channel_id=cid, id=7, payment_preimage=preimage), "no outgoing HTLC 7", "alice")


def test_wrong_preimage(pair: ChannelPair) -> None:
    htlc, _ = settled_htlc(pair)
    cid = pair.alice.core.state.channel_id
    fail_with(pair, UpdateFulfillHtlc(channel_id=cid, id=htlc, payment_preimage=bytes(32)), "preimage", "alice")


def test_fail_of_unknown_htlc(pair: ChannelPair) -> None:
    settled_htlc(pair)
    cid = pair.alice.core.state.channel_id
    fail_with(pair, UpdateFailHtlc(channel_id=cid, id=9, reason=b""), "no outgoing HTLC 9", "alice")


def test_malformed_without_badonion(pair: ChannelPair) -> None:
    htlc, _ = settled_htlc(pair)
    msg = UpdateFailMalformedHtlc(channel_id=pair.alice.core.state.channel_id, id=htlc, sha256_of_onion=bytes(32),
                                  failure_code=0x4001)  # fmt: skip
    fail_with(pair, msg, "BADONION", "alice")


def signed_add(pair: ChannelPair) -> CommitmentSigned:
    """Alice adds and signs; the commitment_signed is held back and returned."""
    pair.add(pair.alice, 10_000_000)
    pair.pump()
    pair.feed(pair.alice, SignCommitment())
    _, msg = pair.wire.popleft()
    assert isinstance(msg, CommitmentSigned)
    return msg


def test_bad_commitment_signature(pair: ChannelPair) -> None:
    msg = signed_add(pair)
    fail_with(pair, dataclasses.replace(msg, signature=bytes(64)), "commitment signature")


def test_wrong_number_of_htlc_signatures(pair: ChannelPair) -> None:
    msg = signed_add(pair)
    fail_with(pair, dataclasses.replace(msg, htlc_signature=()), "HTLC signatures for 1")


def test_bad_htlc_signature(pair: ChannelPair) -> None:
    msg = signed_add(pair)
    fail_with(pair, dataclasses.replace(msg, htlc_signature=(msg.signature,)), "HTLC signature 0")


def test_commitment_signed_without_changes(pair: ChannelPair) -> None:
    msg = signed_add(pair)
    pair.feed(pair.bob, Received(msg))
    pair.wire.clear()
    fail_with(pair, msg, "without any update")


def test_revocation_with_a_wrong_secret(pair: ChannelPair) -> None:
    msg = signed_add(pair)
    pair.feed(pair.bob, Received(msg))
    _, revoke = pair.wire.popleft()
    assert isinstance(revoke, RevokeAndAck)
    fail_with(pair, dataclasses.replace(revoke, per_commitment_secret=sha256(b"wrong")), "per_commitment_secret", "alice")


def test_revocation_without_a_commitment(pair: ChannelPair) -> None:
    revoke = RevokeAndAck(channel_id=pair.alice.core.state.channel_id, per_commitment_secret=bytes(32),
                          next_per_commitment_point=pair.bob.core.secrets.commitment_point(2))  # fmt: skip
    fail_with(pair, revoke, "without a commitment_signed", "alice")


def test_update_fee_rules(pair: ChannelPair) -> None:
    cid = pair.alice.core.state.channel_id
    fail_with(pair, UpdateFee(channel_id=cid, feerate_per_kw=3000), "from the fundee", "alice")


def test_update_fee_out_of_bounds() -> None:
    p = ChannelPair(push_msat=300_000_000, policy=OpeningPolicy(max_feerate_per_kw=20_000))
    p.open()
    fail_with(p, UpdateFee(channel_id=p.bob.core.state.channel_id, feerate_per_kw=50_000), "feerate_per_kw")


def test_update_fee_the_funder_cannot_afford() -> None:
    p = ChannelPair(push_msat=FUNDING_SAT * 1000 - 30_000_000, policy=OpeningPolicy(max_feerate_per_kw=90_000))
    p.open()
    fail_with(p, UpdateFee(channel_id=p.bob.core.state.channel_id, feerate_per_kw=80_000), "afford")


def test_failure_is_sticky(pair: ChannelPair) -> None:
    fail_with(pair, add_msg(pair, amount_msat=0), "htlc_minimum_msat")
    out = pair.feed(pair.bob, Received(add_msg(pair)))
    assert out.messages == () and out.records == ()



def test_open_channel_without_channel_type_is_refused_when_required() -> None:
    # BOLT 2 (option_channel_type ASSUMED): the receiving node MUST fail the channel if
    # open_channel has no channel_type (require_channel_type)
    no_type = dataclasses.replace(sent_open(), tlvs=OpenChannel.tlv_stream())
    bob = ChannelCore(make_secrets("bob"))
    out = bob.receive(AcceptCommand(no_type, CHAIN_HASH_REGTEST, features(False), features(False),
                                    policy=OpeningPolicy(require_channel_type=True)), 1.0)  # fmt: skip
    assert_failed(bob, out.messages, "without channel_type")
    assert not any(isinstance(m, AcceptChannel) for m in out.messages)
    lenient = ChannelCore(make_secrets("bob"))  # the default, for peers older than that: the init features decide
    out = lenient.receive(AcceptCommand(no_type, CHAIN_HASH_REGTEST, features(False), features(False)), 1.0)
    assert lenient.phase is Phase.WAIT_FUNDING_CREATED and "channel_type" not in out.messages[0].tlvs  # type: ignore[attr-defined]


def test_accept_channel_without_channel_type_is_refused_when_required() -> None:
    # BOLT 2: the receiver of accept_channel MUST fail the channel if it has no channel_type
    # (require_channel_type; by default the type we proposed stands)
    for policy, refused in ((OpeningPolicy(require_channel_type=True), True), (OpeningPolicy(), False)):
        pair = ChannelPair(push_msat=100_000_000, policy=policy)
        pair.feed(pair.alice, pair.open_command())
        open_msg = pair.alice.outputs[0].messages[0]
        pair.feed(pair.bob, AcceptCommand(open_msg, CHAIN_HASH_REGTEST, pair.features, pair.features, policy=policy))  # type: ignore[arg-type]
        accept = pair.bob.outputs[0].messages[0]
        assert isinstance(accept, AcceptChannel) and accept.tlvs["channel_type"] == open_msg.tlvs["channel_type"]  # type: ignore[attr-defined]
        out = pair.feed(pair.alice, Received(dataclasses.replace(accept, tlvs=AcceptChannel.tlv_stream())))
        if refused:
            assert_failed(pair.alice.core, out.messages, "accept_channel without channel_type")
        else:
            assert pair.alice.core.phase is Phase.WAIT_FUNDING_TX


def test_any_opening_tlv_comes_with_upfront_shutdown_script() -> None:
    msg = sent_open()
    assert "channel_type" in msg.tlvs and msg.tlvs["upfront_shutdown_script"] == b""
    assert msg.encode().endswith(bytes.fromhex("0000") + bytes.fromhex("0102") + Features.from_bits([12]).to_bytes())


def test_bad_data_deep_in_a_command_is_a_local_misuse() -> None:
    from lnpmsg.channels.inputs import FundingTransaction

    pair = ChannelPair(push_msat=100_000_000)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    state = pair.alice.core.state
    with pytest.raises(LocalMisuse, match="FundingTransaction"):
        pair.feed(pair.alice, FundingTransaction(b"\x02\x00"))  # not a transaction
    assert pair.alice.core.state == state
