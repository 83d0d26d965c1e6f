"""Fast tests of the channel monitor's decisions (no chain: transactions are fed as built)."""

from __future__ import annotations

import ast
import json
import pathlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.channels import TO_LOCAL, Htlc
from lnpmsg.channels.monitor import (
    ChannelMonitor,
    CommitmentKind,
    CommitmentSeen,
    HtlcResolved,
    MonitorUpdate,
    MonitorUpdateError,
    PaymentPreimage,
    RemoteRevocation,
    Reorged,
    UpstreamDeadline,
    decode_stream,
    decode_update,
    encode_stream,
    encode_update,
)
from lnpmsg.channels.monitor.bump import (
    FEERATE_FLOOR_PER_KW,
    INCREMENTAL_RELAY_FEERATE_PER_KW,
    MAX_FEERATE_MULTIPLIER,
    URGENT_BLOCKS,
    rebid_feerate,
    target_feerate,
)
from lnpmsg.channels.monitor.core import ANTI_REORG_DELAY
from lnpmsg.channels.monitor.deadlines import CLTV_CLAIM_BUFFER, OUTGOING_GRACE_BLOCKS
from lnpmsg.channels.monitor.status import monitor_status
from lnpmsg.testing.channels import secret
from lnpmsg.testing.monitor import ALICE, BOB, ChannelKit, State, secrets_of

BASE = 1_000
FUNDING = OutPoint(sha256(b"funding"), 1)
PREIMAGES = {i: secret(f"preimage {i}") for i in range(3)}
HTLCS = (
    Htlc(0, True, 50_000_000, sha256(PREIMAGES[0]), BASE + 40),  # Alice offers
    Htlc(1, False, 70_000_000, sha256(PREIMAGES[1]), BASE + 50),  # Bob offers
)
ONE = State(540_000_000, 340_000_000, HTLCS)
TWO = State(600_000_000, 400_000_000)


def kit(anchors: bool = False) -> ChannelKit:
    return ChannelKit(FUNDING, 1_000_000, anchors, to_self_delay=144)


def bob_records(k: ChannelKit) -> list[object]:
    return [
        k.local_record(BOB, 1, ONE), k.remote_record(BOB, 1, ONE), PaymentPreimage(PREIMAGES[0]),
        k.local_record(BOB, 2, TWO), k.remote_record(BOB, 2, TWO), k.revocation(BOB, 1), UpstreamDeadline(1, BASE + 90),
    ]  # fmt: skip


# --------------------------------------------------------------------------- updates


@pytest.mark.parametrize("anchors", [False, True])
def test_update_stream_round_trip_rebuilds_the_same_monitor(anchors: bool) -> None:
    k = kit(anchors)
    updates = k.updates(BOB, bob_records(k))
    data = encode_stream(updates)
    decoded = list(decode_stream(data))
    assert decoded == updates
    live = ChannelMonitor(secrets_of(BOB), updates)
    rebuilt = ChannelMonitor(secrets_of(BOB), decoded)
    # a preimage the channel learned is read back from the rebuilt monitor (a payments layer's last resort)
    assert rebuilt.preimage(sha256(PREIMAGES[0])) == PREIMAGES[0] and rebuilt.preimage(sha256(PREIMAGES[1])) is None
    assert live.describe() == rebuilt.describe()
    # and they act alike: the same penalty for Alice's revoked commitment
    cheat = k.signed_commitment(ALICE, 1, ONE)
    for monitor in (live, rebuilt):
        monitor.block_connected(BASE, [])
        [seen] = [e for e in monitor.block_connected(BASE + 1, [cheat]) if isinstance(e, CommitmentSeen)]
        assert seen.kind is CommitmentKind.REVOKED
    assert live.transactions_to_broadcast() == rebuilt.transactions_to_broadcast() != []


def test_bad_updates_are_refused_and_change_nothing() -> None:
    k = kit()
    good = encode_update(MonitorUpdate(0, k.setup(BOB)))
    for bad, reason in [
        (b"\x02" + good[1:], "version 2"),
        (good[:1] + b"\x63" + good[2:], "unknown monitor update kind"),
        (good[:-3], "truncated"),
        (good + b"\x00", "trailing"),
        (good[:56] + b"\x05" * 33 + good[89:], "invalid ChannelSetup"),  # the first basepoint
    ]:
        with pytest.raises(MonitorUpdateError, match=reason):
            decode_update(bad)
    with pytest.raises(MonitorUpdateError, match="truncated"):
        list(decode_stream(struct.pack(">I", 50) + good[:20]))

    monitor = ChannelMonitor(secrets_of(BOB))
    with pytest.raises(MonitorUpdateError, match="before ChannelSetup"):
        monitor.apply(MonitorUpdate(0, PaymentPreimage(PREIMAGES[0])))
    with pytest.raises(MonitorUpdateError, match="basepoints"):
        monitor.apply(MonitorUpdate(0, k.setup(ALICE)))
    monitor.apply(MonitorUpdate(0, k.setup(BOB)))
    with pytest.raises(MonitorUpdateError, match="expected update 1"):
        monitor.apply(MonitorUpdate(5, PaymentPreimage(PREIMAGES[0])))
    monitor.apply(MonitorUpdate(1, k.remote_record(BOB, 1, ONE)))
    before = monitor.describe()
    with pytest.raises(MonitorUpdateError, match="does not open"):
        monitor.apply(MonitorUpdate(2, RemoteRevocation(1, ALICE.commitment_secret(2))))
    assert monitor.describe() == before and monitor.next_update_id == 2


# --------------------------------------------------------------------------- fees


def test_fee_schedule_climbs_towards_the_deadline() -> None:
    estimate = 2_000
    assert target_feerate(estimate, None) == estimate == target_feerate(estimate, URGENT_BLOCKS + 50)
    rates = [target_feerate(estimate, left) for left in range(URGENT_BLOCKS, -3, -1)]
    assert rates == sorted(rates) and rates[0] == estimate
    assert rates[-1] == target_feerate(estimate, 0) == estimate * MAX_FEERATE_MULTIPLIER
    assert target_feerate(1, None) == FEERATE_FLOOR_PER_KW


def test_rebid_follows_bip125() -> None:
    assert rebid_feerate(None, 1_000) == 1_000
    assert rebid_feerate(1_000, 900) is None and rebid_feerate(1_000, 1_000) is None
    assert rebid_feerate(1_000, 1_001) == 1_000 + INCREMENTAL_RELAY_FEERATE_PER_KW
    assert rebid_feerate(10_000, 10_001) == 12_500
    assert rebid_feerate(1_000, 5_000) == 5_000


def test_penalty_is_rebid_as_the_cheaters_delay_runs_out() -> None:
    k = kit()
    monitor = ChannelMonitor(secrets_of(BOB), k.updates(BOB, bob_records(k)), feerate_per_kw=1_000)
    monitor.block_connected(BASE, [])
    cheat = k.signed_commitment(ALICE, 1, ONE)
    monitor.block_connected(BASE + 1, [cheat])
    revoked = k.commitment(ALICE, 1, ONE)
    [penalty] = monitor.transactions_to_broadcast()
    revocable = {o.outpoint for o in revoked.outputs if any(p.name == "revocation" for p in o.spendable.paths)}
    assert {i.prevout for i in penalty.inputs} == revocable and len(revocable) == 3  # to_local and both HTLCs
    assert revoked.output(TO_LOCAL).outpoint in revocable
    fees = []
    inputs_sat = sum(o.amount_sat for o in revoked.outputs if o.outpoint in revocable)
    for height in range(BASE + 2, BASE + 1 + 144):
        monitor.block_connected(height, [])  # the penalty does not confirm
        [tx] = monitor.transactions_to_broadcast()
        assert {i.prevout for i in tx.inputs} == revocable  # a replacement of the same claim
        fees.append(inputs_sat - sum(o.amount_sat for o in tx.outputs))
    assert fees == sorted(fees) and fees[-1] >= MAX_FEERATE_MULTIPLIER * fees[0] * 9 // 10
    assert len(set(fees)) > 5  # re-bid many times, each a real step


# --------------------------------------------------------------------------- going on chain


def test_force_close_needed_before_htlc_deadlines() -> None:
    k = kit()
    records = [k.local_record(ALICE, 1, ONE), k.remote_record(ALICE, 1, ONE)]
    monitor = ChannelMonitor(secrets_of(ALICE), k.updates(ALICE, records))
    assert monitor.force_close_needed(BASE) == []
    # our offered H0 times out on chain a few blocks after its expiry
    assert monitor.force_close_needed(BASE + 40 + OUTGOING_GRACE_BLOCKS - 1) == []
    [reason] = monitor.force_close_needed(BASE + 40 + OUTGOING_GRACE_BLOCKS)
    assert "offered HTLC 0" in reason
    # the incoming H1 whose preimage we hold must be claimed before the peer can time it out
    assert monitor.force_close_needed(BASE + 50 - CLTV_CLAIM_BUFFER - 1)[:1] == []
    monitor.apply(MonitorUpdate(monitor.next_update_id, PaymentPreimage(PREIMAGES[1])))
    reasons = monitor.force_close_needed(BASE + 50 - CLTV_CLAIM_BUFFER)
    assert any("received HTLC 1" in r for r in reasons)
    # an upstream deadline closer than our own expiry pulls the offered HTLC's trigger in
    early = ChannelMonitor(secrets_of(ALICE), k.updates(ALICE, [*records, UpstreamDeadline(0, BASE + 40 + 10)]))
    assert early.force_close_needed(BASE + 39) == []
    assert early.force_close_needed(BASE + 40)
    # once a commitment is on chain there is nothing left to decide
    early.block_connected(BASE + 40, [k.signed_commitment(BOB, 1, ONE)])
    assert early.force_close_needed(BASE + 100) == []


def test_monitor_modules_do_no_io() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent / "lnpmsg" / "channels" / "monitor"
    forbidden = {"trio", "socket", "zmq", "stem", "time", "asyncio", "select", "sqlite3", "os", "random", "secrets",
                 "datetime"}  # fmt: skip
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module.split(".")[0]]
            assert not set(names) & forbidden, path.name


def test_their_previous_unrevoked_commitment_is_claimed_like_the_current() -> None:
    k = kit(anchors=True)
    # Bob signed his commitment 2 for us but has not revoked 1: both are valid
    records = [k.local_record(ALICE, 1, ONE), k.remote_record(ALICE, 1, ONE), k.remote_record(ALICE, 2, TWO),
               PaymentPreimage(PREIMAGES[1])]  # fmt: skip
    monitor = ChannelMonitor(secrets_of(ALICE), k.updates(ALICE, records))
    monitor.block_connected(BASE, [])
    events = monitor.block_connected(BASE + 1, [k.signed_commitment(BOB, 1, ONE)])
    [seen] = [e for e in events if isinstance(e, CommitmentSeen)]
    assert seen.kind is CommitmentKind.THEIRS_PREVIOUS and seen.commitment_number == 1
    claims = {c.what: c for c in monitor.pending_claims()}
    assert set(claims) == {"to_remote", "htlc_success:1", "htlc_timeout:0"}
    assert claims["to_remote"].earliest == BASE + 2  # anchors: to_remote waits one block
    assert claims["htlc_timeout:0"].earliest == BASE + 41  # after H0's expiry
    assert claims["htlc_success:1"].deadline == BASE + 50
    # the to_remote and the preimage claim go out at the next block, the timeout waits
    monitor.block_connected(BASE + 2, [])
    spent = {i.prevout for tx in monitor.transactions_to_broadcast() for i in tx.inputs}
    assert spent == {claims["to_remote"].outpoint, claims["htlc_success:1"].outpoint}


def test_an_htlc_missing_from_the_confirmed_commitment_fails_only_when_deep() -> None:
    k = kit()
    # our commitment still has H0 and H1; Bob's newest (unrevoked) commitment 2 has none
    records = [k.local_record(ALICE, 1, ONE), k.remote_record(ALICE, 1, ONE), k.remote_record(ALICE, 2, TWO)]
    monitor = ChannelMonitor(secrets_of(ALICE), k.updates(ALICE, records))
    monitor.block_connected(BASE, [])
    events = monitor.block_connected(BASE + 1, [k.signed_commitment(BOB, 2, TWO)])
    assert [e.kind for e in events if isinstance(e, CommitmentSeen)] == [CommitmentKind.THEIRS_CURRENT]
    for height in range(BASE + 2, BASE + ANTI_REORG_DELAY):
        assert not [e for e in monitor.block_connected(height, []) if isinstance(e, HtlcResolved)]
    resolved = [e for e in monitor.block_connected(BASE + ANTI_REORG_DELAY, []) if isinstance(e, HtlcResolved)]
    assert {(e.htlc_id, e.offered, e.preimage) for e in resolved} == {(0, True, None), (1, False, None)}
    # a reorg deeper than that takes it back
    for height in range(BASE + ANTI_REORG_DELAY, BASE, -1):
        events = monitor.block_disconnected(height)
    assert any(isinstance(e, Reorged) and isinstance(e.event, CommitmentSeen) for e in events)


def test_anchor_penalties_split_near_the_deadline() -> None:
    """BOLT 5: with anchors a batched penalty could be pinned through an HTLC output;
    within 18 blocks of the cheater's delay each revoked output is claimed alone."""
    k = kit(anchors=True)
    monitor = ChannelMonitor(secrets_of(BOB), k.updates(BOB, bob_records(k)), feerate_per_kw=1_000)
    revoked = k.commitment(ALICE, 1, ONE)
    revocable = {o.outpoint for o in revoked.outputs if any(p.name == "revocation" for p in o.spendable.paths)}

    def penalties() -> list[int]:
        txs = monitor.transactions_to_broadcast()
        return sorted(len(tx.inputs) for tx in txs if {i.prevout for i in tx.inputs} <= revocable)

    monitor.block_connected(BASE, [])
    monitor.block_connected(BASE + 1, [k.signed_commitment(ALICE, 1, ONE)])
    assert penalties() == [3]
    deadline = BASE + 1 + 144
    for height in range(BASE + 2, deadline - 19):
        monitor.block_connected(height, [])
    assert penalties() == [3]  # the next block leaves 19 blocks
    monitor.block_connected(deadline - 19, [])
    assert penalties() == [1, 1, 1]  # the next block leaves 18


_VALID = [encode_update(u) for u in kit(True).updates(BOB, bob_records(kit(True)))]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_or_fail_clearly(data: bytes) -> None:
    try:
        decode_update(data)
    except MonitorUpdateError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_VALID), st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_mutated_updates_decode_or_fail_clearly(valid: bytes, position: int, value: int) -> None:
    mutated = bytearray(valid)
    mutated[position % len(mutated)] = value
    try:
        update = decode_update(bytes(mutated))
    except MonitorUpdateError:
        return
    assert encode_update(update) == bytes(mutated)  # one encoding per update: nothing is lost or normalised


def test_status_reports_timelocks_broadcasts_and_sweeps() -> None:
    k = kit()
    records = [k.local_record(ALICE, 1, ONE), k.remote_record(ALICE, 1, ONE), PaymentPreimage(PREIMAGES[1])]
    monitor = ChannelMonitor(secrets_of(ALICE), k.updates(ALICE, records))
    monitor.block_connected(BASE, [])
    assert monitor_status(monitor)["state"] == "open"
    monitor.force_close()
    commitment = monitor.transactions_to_broadcast()[0]
    monitor.block_connected(BASE + 1, [commitment])
    status = monitor_status(monitor)
    json.dumps(status)
    assert status["state"] == "resolving" and status["commitment"]["kind"] == "ours"
    by_what = {o["what"]: o for o in status["outputs"]}
    assert by_what["to_local"]["state"] == "awaiting_timelock" and by_what["to_local"]["spendable_at"] == BASE + 1 + 144
    assert by_what["htlc_success:1"]["state"] == "broadcast"
    assert by_what["htlc_timeout:0"]["spendable_at"] == BASE + 41
    assert status["locked_sat"] == sum(o["amount_sat"] for o in status["outputs"])
    [success] = [tx for tx in monitor.transactions_to_broadcast() if tx.txid != commitment.txid]
    monitor.block_connected(BASE + 2, [success])
    by_what = {o["what"]: o for o in monitor_status(monitor)["outputs"]}
    assert by_what["htlc_success:1"] | {"txid": None} == {
        "outpoint": by_what["htlc_success:1"]["outpoint"], "what": "htlc_success:1", "amount_sat": 70_000,
        "state": "swept", "by": "us", "height": BASE + 2, "txid": None,
    }  # fmt: skip
    assert by_what["htlc_success:1:delayed"]["spendable_at"] == BASE + 2 + 144
