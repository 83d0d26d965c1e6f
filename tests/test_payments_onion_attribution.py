"""Attribution data (option_attribution_data): the failure and success traces
of 04-onion-routing.md, parsed from the file, and the origin's checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lnpmsg.payments.onion import construct_onion, decrypt_failure_onion
from lnpmsg.payments.onion.attribution import (
    ATTRIBUTION_DATA_SIZE,
    add_attribution,
    fail_with_attribution,
    forward_with_attribution,
    verify_attribution,
)
from lnpmsg.payments.onion.failure_onion import wrap_failure_onion
from lnpmsg.payments.onion.failures import TemporaryChannelFailure

BOLTS = Path(__file__).resolve().parent.parent.parent / "shared" / "specs" / "bolts"
TEXT = (BOLTS / "04-onion-routing.md").read_text()
FAILURE_TRACE = TEXT[TEXT.index("# Test Vector") : TEXT.index("## Returning success")]
SUCCESS_TRACE = TEXT[TEXT.index("## Returning success") : TEXT.index("# References")]


def _values(pattern: str, text: str) -> dict[int, bytes]:
    return {int(k): bytes.fromhex(v) for k, v in re.findall(pattern, text)}


PUBKEYS = [bytes.fromhex(v) for v in re.findall(r"pubkey\[\d\] = 0x([0-9a-f]+)", FAILURE_TRACE)]
# the trace's hold times, in the order the reply passes the hops (the failing node first)
HOLD_TIMES = [int(v) for v in re.findall(r"htlc_hold_time\[\d\] = (\d+)", FAILURE_TRACE)]
SESSION_KEY = bytes.fromhex(re.search(r"sessionkey = 0x([0-9a-f]+)", FAILURE_TRACE).group(1))  # type: ignore[union-attr]
RAW_PACKET = bytes.fromhex(re.search(r"raw_error_packet = ([0-9a-f]+)", FAILURE_TRACE).group(1))  # type: ignore[union-attr]
FAILURE_DATA = _values(r"attribution data for node (\d): ([0-9a-f]+)", FAILURE_TRACE)
SUCCESS_DATA = _values(r"attribution data for node (\d):\s*\n([0-9a-f]+)", SUCCESS_TRACE)
SECRETS = construct_onion(SESSION_KEY, PUBKEYS, [b"\x02\x00"] * len(PUBKEYS), b"").shared_secrets


def test_the_traces_were_parsed() -> None:
    assert len(PUBKEYS) == len(HOLD_TIMES) == 5
    assert sorted(FAILURE_DATA) == sorted(SUCCESS_DATA) == [0, 1, 2, 3, 4]
    assert all(len(d) == ATTRIBUTION_DATA_SIZE for d in [*FAILURE_DATA.values(), *SUCCESS_DATA.values()])


def test_failure_trace_attribution_data_hop_by_hop() -> None:
    packet, data = RAW_PACKET, None
    for step, node in enumerate(reversed(range(5))):
        data = add_attribution(SECRETS[node], packet, HOLD_TIMES[step], data)
        assert data == FAILURE_DATA[node], f"node {node}"
        packet = wrap_failure_onion(SECRETS[node], packet)
    check = verify_attribution(SECRETS, data, packet)
    assert check.first_bad_hop is None
    assert check.hold_times == tuple(reversed(HOLD_TIMES))
    assert decrypt_failure_onion(SECRETS, packet).hop_index == 4


def test_success_trace_attribution_data_hop_by_hop() -> None:
    data = None
    for step, node in enumerate(reversed(range(5))):
        data = add_attribution(SECRETS[node], b"", HOLD_TIMES[step], data)
        assert data == SUCCESS_DATA[node], f"node {node}"
    assert data is not None
    check = verify_attribution(SECRETS, data)
    assert check == type(check)(hold_times=tuple(reversed(HOLD_TIMES)), first_bad_hop=None)


@pytest.mark.parametrize("failing", range(5))
def test_each_failing_position_verifies_and_reports_hold_times(failing: int) -> None:
    packet, data = fail_with_attribution(SECRETS[failing], TemporaryChannelFailure(), hold_time=10 + failing)
    for hop in reversed(range(failing)):
        packet, data = forward_with_attribution(SECRETS[hop], packet, data, hold_time=10 + hop)
    route = SECRETS[: failing + 1]
    check = verify_attribution(route, data, packet)
    assert check.first_bad_hop is None
    assert check.hold_times == tuple(10 + i for i in range(failing + 1))
    assert decrypt_failure_onion(route, packet).failure == TemporaryChannelFailure()


@pytest.mark.parametrize("tamperer", range(4))
def test_a_hop_that_tampers_is_named(tamperer: int) -> None:
    packet, data = fail_with_attribution(SECRETS[4], TemporaryChannelFailure(), hold_time=1)
    for hop in reversed(range(4)):
        if hop == tamperer:  # it flips a bit of the failure before wrapping it
            packet = bytes([packet[0] ^ 1]) + packet[1:]
        packet, data = forward_with_attribution(SECRETS[hop], packet, data, hold_time=1)
    check = verify_attribution(SECRETS, data, packet)
    # the HMACs of the tamperer's downstream neighbour no longer match: blame falls on the pair
    assert check.first_bad_hop == tamperer + 1
    assert len(check.hold_times) == tamperer + 1


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="attribution data has 920 bytes"):
        add_attribution(SECRETS[0], b"", 1, b"\x00" * 10)
    with pytest.raises(ValueError, match="u32"):
        add_attribution(SECRETS[0], b"", -1)
    with pytest.raises(ValueError, match="1 to 20 hops"):
        verify_attribution([], bytes(ATTRIBUTION_DATA_SIZE))
    with pytest.raises(ValueError, match="attribution data has 920 bytes"):
        verify_attribution(SECRETS, b"")
