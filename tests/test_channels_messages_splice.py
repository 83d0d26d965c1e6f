"""Splicing messages (splice_init, splice_ack, splice_locked): declarations against
csv/peer_wire.csv (parsed, not retyped), round trips, the csv's own codec agreeing with ours,
fuzzed payloads; and the channel app offers option_splice (optional) and owns them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_channels_messages import (
    assert_csv_codec_agrees,
    assert_declared_as_in_csv,
    assert_garbage_fails_cleanly_or_round_trips,
    assert_round_trips,
    by_csv_name,
    field_values,
)
from wire_spec_vectors import peer_wire
from wire_strategies import messages

from lnpmsg.channels.app import CHANNEL_FEATURE_BITS, ChannelsApp
from lnpmsg.channels.messages import register_channel_messages
from lnpmsg.channels.messages_splice import SPLICE_MESSAGES, SpliceInit, StartBatch, register_splice_messages
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.wire import DEFAULT_REGISTRY

CSV = peer_wire()
BY_NAME = by_csv_name(SPLICE_MESSAGES)
REGISTRY = register_splice_messages(register_channel_messages(DEFAULT_REGISTRY.copy()))


def test_every_splice_message_is_declared() -> None:
    assert set(BY_NAME) == {"splice_init", "splice_ack", "splice_locked"}
    assert len(SPLICE_MESSAGES) == 3


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_fields_match_the_csv(name: str) -> None:
    assert_declared_as_in_csv(BY_NAME[name], name, REGISTRY)


@pytest.mark.parametrize("name", sorted(BY_NAME))
@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_round_trip_and_csv_codec_agree(name: str, data: st.DataObject) -> None:
    msg = data.draw(messages(BY_NAME[name]))
    assert_round_trips(msg, REGISTRY)
    assert_csv_codec_agrees(msg, CSV.message_class(name), field_values(msg))


@pytest.mark.parametrize("cls", SPLICE_MESSAGES, ids=lambda c: c.__name__)
@settings(deadline=None, max_examples=40)
@given(garbage=st.binary(max_size=300))
def test_garbage_payloads_fail_cleanly_or_round_trip(cls: type, garbage: bytes) -> None:
    assert_garbage_fails_cleanly_or_round_trips(cls, garbage)


def test_a_splice_out_is_a_negative_contribution() -> None:
    msg = SpliceInit(channel_id=bytes(32), funding_contribution_satoshis=-50_000, funding_feerate_perkw=253,
                     locktime=0, funding_pubkey=bytes([2]) + bytes(32), tlvs=SpliceInit.tlv_stream(require_confirmed_inputs=()))  # fmt: skip
    raw = msg.encode()
    assert raw[:2] == (80).to_bytes(2, "big") and raw[34:42] == (-50_000).to_bytes(8, "big", signed=True)
    assert raw.endswith(b"\x02\x00")
    assert SpliceInit.decode(raw) == msg


def test_splicing_is_offered_and_its_messages_are_owned(tmp_path: Path) -> None:
    for policy in (OpeningPolicy(), OpeningPolicy(dual_fund=True)):
        app = ChannelsApp(tmp_path / "channels", policy=policy)
        assert app.features.has(63) and not app.features.has(62)  # option_splice, optional
        assert app.features.has(35) and not app.features.has(34)  # option_quiesce, optional
        app.setup()
        assert {m.TYPE for m in SPLICE_MESSAGES} <= set(app.handlers)  # owned
        assert {66, 67, 68, 69, 70, 71, 72, 73, 74} <= set(app.handlers)  # the interactive-tx messages a splice uses
        assert (64 in app.handlers) is policy.dual_fund  # open_channel2 only with --dual-fund
    assert 63 in CHANNEL_FEATURE_BITS and 62 not in CHANNEL_FEATURE_BITS


def test_start_batch_is_declared_as_in_the_spec_and_round_trips() -> None:
    # the csv lists start_batch_tlvs but no msgdata line for them; BOLT 2's text gives the message
    # a start_batch_tlvs stream: the fields are the csv's, the TLV stream the text's
    assert by_csv_name((StartBatch,)) == {"start_batch": StartBatch}
    assert [name for name, _ in StartBatch.FIELDS] == ["channel_id", "batch_size"]
    assert StartBatch.TLVS is not None and StartBatch.TLVS.name == "start_batch_tlvs"
    msg = StartBatch(channel_id=bytes(range(32)), batch_size=2, tlvs=StartBatch.tlv_stream(message_type=132))
    assert_round_trips(msg, REGISTRY)
    assert msg.encode()[:2] == (127).to_bytes(2, "big") and msg.encode()[34:36] == (2).to_bytes(2, "big")
