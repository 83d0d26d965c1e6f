"""``lnpmsg gossip resync`` and ``lnpmsg gossip sync --follow`` against a running
node (real sockets, real time: the node and its hand-driven peers run here,
the CLI in a worker thread, exactly as ``main(argv)`` runs from a shell); and
the lines ``--follow`` makes of successive ``gossip.progress`` results."""

from __future__ import annotations

import json
import re

import pytest
import trio

from cli_in_process import cli
from lnpmsg.cli import main
from lnpmsg.gossip.app import GossipConfig
from lnpmsg.gossip.messages import QueryChannelRange
from lnpmsg.gossip.progress_text import ResyncFollow, resync_summary
from lnpmsg.node.identity import NodeKey
from tests.test_gossip_app import REGISTRY
from tests.test_gossip_resync import GossipPeer, gossip_node, resync_ended, synced_node_peer
from tests.test_gossip_sync_records import range_reply


async def answer_ranges(peer: GossipPeer) -> None:
    """Answer every query_channel_range with no channel (a re-sync with nothing new)."""
    while True:
        await peer.answer_range()


async def test_resync_starts_one_with_the_peer_given_or_the_schedules_choice_and_says_why_not(capsys, data_dir) -> None:  # type: ignore[no-untyped-def]
    d = ("--data-dir", data_dir)
    config = GossipConfig(reply_timeout=60.0, full_syncs=1, resync_interval=1200.0)
    async with gossip_node(config, control_dir=data_dir) as (app, connect):
        code, out, err = await cli(capsys, "gossip", "resync", *d)
        assert (code, out) == (1, "") and err == "error: gossip.resync: no connected peer offers gossip_queries\n"
        code, out, _ = await cli(capsys, "gossip", "resync", "--json", *d)
        assert code == 1 and json.loads(out) == {
            "error": {"message": "gossip.resync: no connected peer offers gossip_queries", "code": -32000, "data": {"error": "ResyncRefused", "code": "no-peer"}}
        }
        first, _ = await synced_node_peer(app, connect)
        later = await connect()
        code, out, err = await cli(capsys, "gossip", "resync", "--peer", later.node_id.hex(), *d)
        assert code == 0 and err == ""
        assert out.splitlines() == [
            f"re-sync with {later.node_id.hex()} started (the peer given)",
            f"the next periodic re-sync stays due in 20 min; follow it: lnpmsg gossip sync --follow --data-dir {data_dir}",
        ]
        query = await later.next_of(QueryChannelRange.TYPE)
        # one at a time: refused while it runs, saying with whom
        code, out, _ = await cli(capsys, "gossip", "resync", "--json", *d)
        error = json.loads(out)["error"]
        assert code == 1 and error["data"] == {"error": "ResyncRefused", "code": "resync-running"}
        assert error["message"] == f"gossip.resync: a re-sync with {later.node_id.hex()} is running: one at a time"
        code, out, _ = await cli(capsys, "gossip", "stats", *d)
        assert f"re-sync:            now, with {later.node_id.hex()} (every 20 min, 0 so far, 1 asked for)\n" in out
        stranger = NodeKey.generate().node_id.hex()
        code, out, err = await cli(capsys, "gossip", "resync", "--peer", stranger, *d)
        assert code == 1 and err == f"error: gossip.resync: peer {stranger} is not connected\n"
        await later.send(range_reply(REGISTRY.decode(query), []))
        await resync_ended(app)
        code, out, _ = await cli(capsys, "gossip", "resync", "--json", *d)
        result = json.loads(out)
        assert code == 0 and (result["peer"], result["chosen"]) == (first.node_id.hex(), "schedule")
        assert 1100.0 < result["next_in"] <= 1200.0
        await first.next_of(QueryChannelRange.TYPE)


async def test_sync_follow_tells_each_re_sync_as_it_starts_and_ends(capsys, data_dir) -> None:  # type: ignore[no-untyped-def]
    d = ("--data-dir", data_dir)
    # Re-syncs every 3 s; the later peer never answers (it fails after 1 s), the first does.
    config = GossipConfig(reply_timeout=1.0, full_syncs=1, resync_interval=3.0)
    async with gossip_node(config, control_dir=data_dir) as (app, connect), trio.open_nursery() as nursery:
        first, _ = await synced_node_peer(app, connect)
        later = await connect()
        nursery.start_soon(answer_ranges, first)
        code, out, err = await cli(capsys, "gossip", "sync", "--follow", "--count", 2, *d)
        nursery.cancel_scope.cancel()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == ["gossip sync: 100% (done; 0 channels)", "gossip synced: 0 channels"], out
    assert err.startswith("following re-syncs: ") and "(every 3 s, " in err
    # Two re-syncs in a row: the least recently synced peer each time, so one with each.
    events = lines[2:]
    assert len(events) == 4, out
    by_peer = {events[0].split()[3]: events[:2], events[2].split()[3]: events[2:]}
    assert set(by_peer) == {first.node_id.hex(), later.node_id.hex()}, out
    started, ended = by_peer[later.node_id.hex()]
    assert started == f"gossip re-sync with {later.node_id.hex()} started (periodic)"
    assert re.fullmatch(rf"gossip re-sync with {later.node_id.hex()} failed: peer sent no reply within 1 s; the next in \d s", ended), ended
    started, ended = by_peer[first.node_id.hex()]
    assert started == f"gossip re-sync with {first.node_id.hex()} started (periodic)"
    assert re.fullmatch(rf"gossip re-sync with {first.node_id.hex()} done: 0 channels offered, 0 asked for \(graph: 0 channels\); the next in \d s", ended), ended
    assert "gossip sync with" not in err  # the failure is told once, as the re-sync's


async def test_sync_follow_json_prints_a_progress_line_at_each_re_sync(capsys, data_dir) -> None:  # type: ignore[no-untyped-def]
    config = GossipConfig(reply_timeout=5.0, full_syncs=1, resync_interval=2.0)
    async with gossip_node(config, control_dir=data_dir) as (app, connect), trio.open_nursery() as nursery:
        first, _ = await synced_node_peer(app, connect)
        nursery.start_soon(answer_ranges, first)
        code, out, _ = await cli(capsys, "gossip", "sync", "--follow", "--count", 1, "--json", "--data-dir", data_dir)
        nursery.cancel_scope.cancel()
    progress = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and progress[0]["synced"] and len(progress) >= 2
    assert progress[-1]["resync"]["started"] == progress[0]["resync"]["started"] + 1
    assert progress[-1]["resync"]["last"] == first.node_id.hex()


async def test_the_default_sync_and_bad_arguments_are_as_before(capsys, data_dir) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await cli(capsys, "gossip", "sync", "--count", 1, "--data-dir", data_dir)
    assert (code, out) == (2, "") and "--count counts the re-syncs --follow tells: add --follow" in err
    code, _, err = await cli(capsys, "gossip", "resync", "--data-dir", data_dir)
    assert code == 3 and f"error: no node is running at {data_dir}" in err
    with pytest.raises(SystemExit) as exc:
        main(["gossip", "resync", "--peer", "02abc", "--data-dir", str(data_dir)])
    assert exc.value.code == 2 and "a node id is 66 hex characters" in capsys.readouterr().err
    async with gossip_node(GossipConfig(full_syncs=1, resync_interval=2.0), control_dir=data_dir) as (app, connect):
        await synced_node_peer(app, connect)
        code, out, _ = await cli(capsys, "gossip", "sync", "--data-dir", data_dir)
    assert code == 0 and out == "gossip sync: 100% (done; 0 channels)\ngossip synced: 0 channels\n"  # no following


# ------------------------------------------------------------ the lines, from progress results

A, B = "02" + "aa" * 32, "03" + "bb" * 32


def progress(resync: dict | None, peers: dict | None = None, channels: int = 5) -> dict:  # type: ignore[type-arg]
    return {"synced": True, "syncing": False, "percent": 100.0, "channels": channels, "peers": peers or {}, "resync": resync}


def resync(peer: str | None, started: int, manual: int, last: str | None, next_in: float | None = 600.0) -> dict:  # type: ignore[type-arg]
    return {"interval": 1200.0, "next_in": next_in, "peer": peer, "started": started, "manual": manual, "last": last}


def done(offered: int, wanted: int) -> dict:  # type: ignore[type-arg]
    return {"state": "done", "percent": 100.0, "channels_offered": offered, "channels_wanted": wanted, "channels_answered": wanted, "reason": None}


def test_follow_tells_starts_and_ends_even_those_between_two_looks() -> None:
    follow = ResyncFollow()
    assert follow.update(progress(resync(A, 1, 0, A))) == []  # the starting point: A's re-sync runs
    assert follow.update(progress(resync(A, 1, 0, A))) == []
    assert follow.update(progress(resync(None, 1, 0, A), {A: done(10, 2)})) == [
        f"gossip re-sync with {A} done: 10 channels offered, 2 asked for (graph: 5 channels); the next in 10 min"
    ]
    # asked for, started and failed between two looks
    failed = {"state": "failed", "reason": "peer disconnected"}
    assert follow.update(progress(resync(None, 1, 1, B), {A: done(10, 2), B: failed})) == [
        f"gossip re-sync with {B} started (asked for)",
        f"gossip re-sync with {B} failed: peer disconnected; the next in 10 min",
    ]
    assert follow.failed == {B} and follow.ended == 2
    # two periodic ones between two looks: the last is told, the other counted
    assert follow.update(progress(resync(A, 3, 1, A, next_in=1200.0), {A: {"state": "range"}, B: failed})) == [
        f"gossip re-sync with {A} started (periodic)",
        "gossip re-sync: 1 more started and ended between two looks",
    ]
    assert follow.ended == 3
    # its peer left: its record may be gone
    assert follow.update(progress(resync(None, 3, 1, A), {})) == [f"gossip re-sync with {A} ended (its record is gone); the next in 10 min"]
    assert follow.ended == 4


def test_follow_without_re_syncs_says_how_to_get_one() -> None:
    follow = ResyncFollow()
    assert "runs none periodically" in follow.intro(progress(None)) and "'lnpmsg gossip resync' starts one" in follow.intro(progress(None))
    assert follow.update(progress(None)) == [] and follow.update(progress(None)) == []
    assert follow.intro(progress(resync(None, 0, 0, None))) == "following re-syncs: next in 10 min (every 20 min, 0 so far)"
    # asked-for re-syncs only (periodic ones off): interval 0
    only_asked = {"interval": 0.0, "next_in": None, "peer": None, "started": 0, "manual": 2, "last": A}
    assert resync_summary(only_asked) == "none periodic, 2 asked for"
    assert resync_summary({**only_asked, "peer": A}) == f"now, with {A} (none periodic, 2 asked for)"
