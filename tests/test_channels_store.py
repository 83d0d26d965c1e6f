"""Persistence: every state change is a record; replaying records (after a
snapshot or from nothing) rebuilds the identical state; the log's framing
drops a torn tail; records that commit to a state are marked durable."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_channels_pair import ChannelPair, make_secrets

from lnpmsg.channels.codec import CodecError
from lnpmsg.channels.inputs import FailHtlc, FulfillHtlc, Record
from lnpmsg.channels.records import (
    decode_input,
    encode_snapshot,
    frame,
    parse_frames,
    restore,
    restore_snapshot,
)
from lnpmsg.channels.store import ChannelStore


def scripted_session() -> ChannelPair:
    """Open, HTLCs both ways (one trimmed), fulfil, fail, fee change."""
    pair = ChannelPair(anchors=True, push_msat=200_000_000)
    pair.open()
    a, pre_a = pair.add(pair.alice, 30_000_000)
    d, _ = pair.add(pair.alice, 300_000)
    b, pre_b = pair.add(pair.bob, 10_000_000)
    pair.pump()
    pair.commit(pair.alice)
    pair.feed(pair.bob, FulfillHtlc(a, pre_a))
    pair.feed(pair.bob, FailHtlc(d, b"x"))
    pair.feed(pair.alice, FulfillHtlc(b, pre_b))
    pair.pump()
    pair.commit(pair.bob)
    return pair


SESSION = scripted_session()


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_replay_after_each_record_gives_the_identical_state(who: str) -> None:
    side = getattr(SESSION, who)
    records = side.records
    assert len(records) == len(side.states) > 10
    for n in range(1, len(records) + 1):
        core = restore(make_secrets(who), records[:n])
        assert core.state == side.states[n - 1], f"after record {n}"
        assert core.records_emitted == n


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_snapshot_then_tail(who: str) -> None:
    side = getattr(SESSION, who)
    records = side.records
    middle = len(records) // 2
    partial = restore(make_secrets(who), records[:middle])
    snapshot = encode_snapshot(partial)
    assert restore_snapshot(make_secrets(who), snapshot).state == partial.state
    core = restore(make_secrets(who), records[middle:], snapshot)
    assert core.state == side.core.state


def test_commit_points_are_durable() -> None:
    for side in (SESSION.alice, SESSION.bob):
        for out in side.outputs:
            kinds = {type(m).__name__ for m in out.messages}
            commits = kinds & {"FundingSigned", "CommitmentSigned", "RevokeAndAck"}
            if commits:
                assert out.records and out.records[0].durable, kinds
            if kinds and kinds <= {"UpdateAddHtlc", "UpdateFulfillHtlc", "UpdateFailHtlc"}:
                assert not out.records[0].durable


def test_records_are_inputs_with_their_time() -> None:
    item, now = decode_input(SESSION.alice.records[0])
    assert type(item).__name__ == "OpenCommand" and now > 0
    with pytest.raises(CodecError):
        decode_input(b'{"@":"ChannelState"}')
    with pytest.raises(CodecError):
        decode_input(b"not json")
    with pytest.raises(CodecError):
        decode_input(b'{"@":"os.system"}')


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=400), flip=st.integers(min_value=0, max_value=399))
def test_framing_drops_a_torn_or_corrupt_tail(cut: int, flip: int) -> None:
    payloads = [b"first", b"second" * 20, b"third" * 7]
    data = b"".join(frame(i, p) for i, p in enumerate(payloads))
    bounds = [sum(len(frame(i, p)) for i, p in enumerate(payloads[:k])) for k in range(4)]
    torn = data[: min(cut, len(data))]
    frames, good = parse_frames(torn)
    assert [p for _, p in frames] == payloads[: len(frames)]
    assert good == bounds[len(frames)] and good <= len(torn)
    if flip < len(data):
        corrupt = bytearray(data)
        corrupt[flip] ^= 0x40
        frames, _ = parse_frames(bytes(corrupt))
        damaged = max(k for k in range(3) if bounds[k] <= flip)
        assert [p for _, p in frames] == payloads[:damaged]


def test_store_appends_reopens_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    side = SESSION.bob
    store = ChannelStore(tmp_path)
    log = store.open("chan-1")
    for out in side.outputs:
        log.append(out.records)
    log.close()
    with (tmp_path / "chan-1.log").open("ab") as f:
        f.write(frame(999, b"half a record")[:-3])
    log = ChannelStore(tmp_path).open("chan-1")
    assert log.dropped_bytes > 0
    assert log.records() == side.records
    assert log.restore(make_secrets("bob")).state == side.core.state
    # Appending after the cut continues on a frame boundary.
    log.append([Record(len(side.records), b"{}", durable=True)])
    log.close()
    with ChannelStore(tmp_path).open("chan-1") as again:
        assert again.records()[-1] == b"{}"
    assert store.keys() == ["chan-1"]


def test_snapshot_bounds_replay(tmp_path: Path) -> None:
    side = SESSION.alice
    log = ChannelStore(tmp_path).open("a")
    half = len(side.outputs) // 2
    for out in side.outputs[:half]:
        log.append(out.records)
    core = restore(make_secrets("alice"), log.records())
    log.write_snapshot(core)
    assert log.records() == [] and (tmp_path / "a.log").stat().st_size == 0
    for out in side.outputs[half:]:
        log.append(out.records)
    log.close()
    with ChannelStore(tmp_path).open("a") as reopened:
        assert reopened.snapshot is not None
        assert reopened.restore(make_secrets("alice")).state == side.core.state


def test_records_the_snapshot_covers_are_skipped(tmp_path: Path) -> None:
    """A crash between writing the snapshot and emptying the log leaves old records: they are skipped."""
    side = SESSION.alice
    log = ChannelStore(tmp_path).open("a")
    for out in side.outputs:
        log.append(out.records)
    core = restore(make_secrets("alice"), log.records())
    snap = frame(core.records_emitted, encode_snapshot(core))
    log.close()
    (tmp_path / "a.snap").write_bytes(snap)
    with ChannelStore(tmp_path).open("a") as reopened:
        assert reopened.records() == []
        assert reopened.restore(make_secrets("alice")).state == side.core.state


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ChannelStore(tmp_path).open("../escape")


@pytest.mark.parametrize("simple", [False, True], ids=["closing_signed", "simple_close"])
def test_a_closed_channel_replays_and_snapshots(simple: bool) -> None:
    from test_channels_close import opened, simple_pair

    from lnpmsg.channels.inputs import CloseChannel
    from lnpmsg.channels.state import Phase

    pair = simple_pair(300_000_000) if simple else opened()
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    for who in ("alice", "bob"):
        side = getattr(pair, who)
        assert side.core.phase is Phase.CLOSED
        core = restore(make_secrets(who), side.records)
        assert core.state == side.core.state
        assert restore_snapshot(make_secrets(who), encode_snapshot(core)).state == side.core.state
