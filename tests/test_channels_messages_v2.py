"""Interactive-tx and v2 establishment messages: declarations against
csv/peer_wire.csv (parsed, not retyped), round trips, the csv's own codec
agreeing with ours, fuzzed payloads."""

from __future__ import annotations


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

from lnpmsg.channels.messages import register_channel_messages
from lnpmsg.channels.messages_v2 import (
    DUAL_FUND_MESSAGES,
    OpenChannel2,
    TxAbort,
    TxInitRbf,
    TxSignatures,
    register_dual_fund_messages,
)
from lnpmsg.wire import DEFAULT_REGISTRY, MessageRegistry, WireError

CSV = peer_wire()
BY_NAME = by_csv_name(DUAL_FUND_MESSAGES)
REGISTRY = register_dual_fund_messages(register_channel_messages(DEFAULT_REGISTRY.copy()))


def test_every_v2_message_is_declared() -> None:
    wanted = {
        "tx_add_input", "tx_add_output", "tx_remove_input", "tx_remove_output", "tx_complete",
        "tx_signatures", "tx_init_rbf", "tx_ack_rbf", "tx_abort", "open_channel2", "accept_channel2",
    }  # fmt: skip
    assert set(BY_NAME) == wanted
    assert len(DUAL_FUND_MESSAGES) == len(wanted)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_fields_match_the_csv(name: str) -> None:
    assert_declared_as_in_csv(BY_NAME[name], name, REGISTRY)


@pytest.mark.parametrize("name", sorted(BY_NAME))
@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_round_trip_and_csv_codec_agree(name: str, data: st.DataObject) -> None:
    msg = data.draw(messages(BY_NAME[name]))
    assert_round_trips(msg, REGISTRY)
    from_csv = CSV.message_class(name)
    values = field_values(msg)
    if name == "tx_signatures":
        # the csv's witness subtype is its own record type: same fields, other class
        witness = from_csv.FIELDS[2][1].element.type
        values["witnesses"] = [witness._make(w) for w in msg.witnesses]
    assert_csv_codec_agrees(msg, from_csv, values)


@pytest.mark.parametrize("cls", DUAL_FUND_MESSAGES, ids=lambda c: c.__name__)
@settings(deadline=None, max_examples=40)
@given(garbage=st.binary(max_size=800))
def test_garbage_payloads_fail_cleanly_or_round_trip(cls: type, garbage: bytes) -> None:
    assert_garbage_fails_cleanly_or_round_trips(cls, garbage)


def test_tx_signatures_layout() -> None:
    msg = TxSignatures(
        channel_id=bytes(32), txid=b"\x11" * 32,
        witnesses=[{"witness_data": b"\x02\x01a\x01b"}, {"witness_data": b"\x01\x01c"}],
        tlvs=TxSignatures.tlv_stream(shared_input_signature=b"\x05" * 64),
    )  # fmt: skip
    raw = msg.encode()
    body = raw[2 + 32 + 32 :]
    assert body[:2] == b"\x00\x02"
    assert body[2:4] == b"\x00\x05" and body[4:9] == b"\x02\x01a\x01b"
    assert body[9:11] == b"\x00\x03" and body[11:14] == b"\x01\x01c"
    assert body[14:] == b"\x00\x40" + b"\x05" * 64
    assert TxSignatures.decode(raw).witnesses[1].witness_data == b"\x01\x01c"


def test_empty_require_confirmed_inputs_and_signed_contribution() -> None:
    stream = OpenChannel2.tlv_stream(require_confirmed_inputs=())
    assert OpenChannel2.TLVS.encode(stream) == b"\x02\x00"  # type: ignore[union-attr]
    assert "require_confirmed_inputs" in OpenChannel2.TLVS.decode_stream(b"\x02\x00")  # type: ignore[union-attr]
    rbf = TxInitRbf(channel_id=bytes(32), locktime=7, feerate=541, tlvs=TxInitRbf.tlv_stream(funding_output_contribution=-5))
    raw = rbf.encode()
    assert raw.endswith(b"\x00\x08" + (-5).to_bytes(8, "big", signed=True))
    assert TxInitRbf.decode(raw).tlvs["funding_output_contribution"] == -5


def test_tx_abort_length_prefixed_data() -> None:
    raw = TxAbort(channel_id=bytes(32), data=b"too many inputs").encode()
    assert raw[:2] == (74).to_bytes(2, "big") and raw[34:36] == (15).to_bytes(2, "big")
    with pytest.raises(WireError):
        TxAbort.decode(raw[:-1])


def test_registering_is_separate_from_v1() -> None:
    v1 = register_channel_messages(MessageRegistry())
    assert v1.get(64) is None and v1.get(66) is None
    both = register_dual_fund_messages(v1)
    assert both.get(64) is OpenChannel2
    register_dual_fund_messages(both)  # twice is harmless
