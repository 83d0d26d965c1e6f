"""``lnpmsg node``'s gossip app and the ``lnpmsg gossip`` commands, against real
node processes holding the real mainnet gossip of ../shared/data/gossip
(the CLI runs in a worker thread, exactly as ``main(argv)`` runs from a
shell; subscribers run as processes of their own)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio

from cli_in_process import cli
from lnpmsg.cli import main
from lnpmsg.gossip import (
    ChannelAnnouncement,
    ChannelUpdate,
    Graph,
    import_gossip_store,
    load_gossip_store_file,
    read_gossip_store,
)
from lnpmsg.gossip.commands import progress_bar
from lnpmsg.testing.processes import (
    PROCESS_WAIT,
    finish_process,
    lnpmsg_argv,
    node_processes,
    start_node_process,
)
from lnpmsg.wire import CHAIN_HASH_MAINNET

GOSSIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "gossip"
PARTS = (GOSSIP / "gossip_store-part1.xz", GOSSIP / "gossip_store-part2.xz")


def expected_graph():
    """The mainnet gossip as an in-test import sees it: accepted messages and the live channels."""
    graph = Graph(CHAIN_HASH_MAINNET)
    result = import_gossip_store(read_gossip_store(load_gossip_store_file(*PARTS)), graph, time.time())
    live = {
        str(d.message.short_channel_id): d
        for d in result.accepted
        if isinstance(d.message, ChannelAnnouncement) and d.message.short_channel_id.to_int() in graph.channels
    }
    updates = [d for d in result.accepted if isinstance(d.message, ChannelUpdate)]
    return result, live, updates


async def read_until(stream, marker: bytes) -> bytes:
    data = b""
    with trio.fail_after(PROCESS_WAIT):
        while marker not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, f"stream ended before {marker!r}: {data!r}"
            data += chunk
    return data


async def subscriber(data_dir, *args):
    """A ``gossip subscribe`` process, returned once its subscription is live."""
    process = await trio.lowlevel.open_process(
        lnpmsg_argv("gossip", "subscribe", "--data-dir", data_dir, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    await read_until(process.stderr, b"subscribed to ")
    return process


async def events_of(process) -> list[dict]:
    out = b""
    with trio.fail_after(PROCESS_WAIT):
        while chunk := await process.stdout.receive_some(1 << 16):
            out += chunk
        assert await process.wait() == 0
    return [json.loads(line) for line in out.decode().splitlines()]


async def cli_json(capsys, *argv):
    code, out, _ = await cli(capsys, *argv, "--json")
    return code, json.loads(out)


def as_synced(channels):
    """Channels without what a node that synced them cannot know alike: when the store's
    first node saw them, and (without a chain) their capacity."""
    return [{k: v for k, v in c.items() if k not in ("first_seen", "capacity_sat")} for c in channels]


async def test_import_query_subscribe_and_sync_between_node_processes(capsys, tmp_path):
    result, live, updates = expected_graph()
    assert result.outcomes == {"channel_announcement: accepted": 88, "channel_update: accepted": 4}
    assert (len(live), len(updates)) == (87, 4)  # one channel closed by a delete_chan record
    a_dir, b_dir, c_dir = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a_imports = [arg for part in PARTS for arg in ("--gossip-import", part)]
    async with node_processes() as running:
        infos = [await running.start(data_dir, *extra) for data_dir, extra in ((a_dir, a_imports), (b_dir, []), (c_dir, ["--no-gossip"]))]
        a_info, b_info, c_info = infos
        assert a_info["gossip"] == f"87 channels in {a_dir / 'gossip.sqlite3'}"
        assert b_info["gossip"].startswith("0 channels in ") and "gossip" not in c_info
        A, B, C = ("--data-dir", a_dir), ("--data-dir", b_dir), ("--data-dir", c_dir)

        # stats: the exact counts of the import
        code, stats = await cli_json(capsys, "gossip", "stats", *A)
        assert code == 0
        assert (stats["channels"], stats["channel_updates"], stats["node_announcements"]) == (87, 4, 0)
        assert stats["store"]["channels"] == 87 and stats["store"]["updates"] == 4
        assert stats["decisions"] == {"channel_announcement: accepted": 88, "channel_update: accepted": 4}
        nodes = {n.hex() for d in live.values() for n in (d.message.node_id_1, d.message.node_id_2)}
        assert stats["nodes"] == len(nodes) and stats["sync"]["synced"] is False
        code, out, _ = await cli(capsys, "gossip", "stats", *A)
        assert code == 0 and "channels:           87\n" in out and "channel updates:    4\n" in out
        assert f"nodes:              {len(nodes)} (0 announced)" in out

        # listchannels and getchannel agree with the import, field by field
        code, listed = await cli_json(capsys, "gossip", "listchannels", *A)
        channels = listed["channels"]
        assert code == 0 and [c["short_channel_id"] for c in channels] == sorted(live, key=lambda s: tuple(map(int, s.split("x"))))
        for channel in channels:
            ann = live[channel["short_channel_id"]].message
            assert (channel["node_id_1"], channel["node_id_2"]) == (ann.node_id_1.hex(), ann.node_id_2.hex())
            assert (channel["bitcoin_key_1"], channel["bitcoin_key_2"]) == (ann.bitcoin_key_1.hex(), ann.bitcoin_key_2.hex())
        for update in (d.message for d in updates):
            scid = str(update.short_channel_id)
            code, got = await cli_json(capsys, "gossip", "getchannel", scid, *A)
            assert code == 0 and got["channel"] == next(c for c in channels if c["short_channel_id"] == scid)
            policy = got["channel"]["policies"][update.channel_flags & 1]
            assert policy["timestamp"] == update.timestamp and policy["fee_base_msat"] == update.fee_base_msat
            assert policy["fee_proportional_millionths"] == update.fee_proportional_millionths
            assert policy["cltv_expiry_delta"] == update.cltv_expiry_delta
        updated = updates[0].message
        scid = str(updated.short_channel_id)
        code, out, _ = await cli(capsys, "gossip", "getchannel", scid, *A)
        assert code == 0 and out.startswith(f"channel:   {scid} (") and f"fee {updated.fee_base_msat} msat + " in out

        # paging: --after and --limit walk the same list
        paged, after = [], []
        while True:
            code, page = await cli_json(capsys, "gossip", "listchannels", "--limit", 30, *after, *A)
            paged += page["channels"]
            if len(page["channels"]) < 30:
                break
            after = ["--after", page["channels"][-1]["short_channel_id"]]
        assert paged == channels
        code, out, _ = await cli(capsys, "gossip", "listchannels", "--limit", 2, *A)
        assert code == 0 and out.endswith(f"2 channel(s); more after {channels[1]['short_channel_id']} (--after)\n")

        # a node: its channels, in listchannels --node and getnode
        ann = live[scid].message
        node_id = ann.node_id_1.hex()
        own = sorted((s for s, d in live.items() if node_id in (d.message.node_id_1.hex(), d.message.node_id_2.hex())), key=lambda s: tuple(map(int, s.split("x"))))
        code, listed = await cli_json(capsys, "gossip", "listchannels", "--node", node_id, *A)
        assert [c["short_channel_id"] for c in listed["channels"]] == own
        code, got = await cli_json(capsys, "gossip", "getnode", node_id, *A)
        assert got["node"] == {"node_id": node_id, "announced": False, "channels": own}
        code, listed = await cli_json(capsys, "gossip", "listnodes", *A)
        assert code == 0 and [n["node_id"] for n in listed["nodes"]] == sorted(nodes)

        # errors: what the graph does not hold, a node without the gossip app
        code, out, err = await cli(capsys, "gossip", "getchannel", "1x1x1", *A)
        assert code == 1 and out == "" and "error: channel 1x1x1 is not in the gossip graph" in err
        code, failure = await cli_json(capsys, "gossip", "getchannel", "1x1x1", *A)
        assert code == 1 and failure == {"error": {"message": "channel 1x1x1 is not in the gossip graph"}}
        stranger = "02" + "11" * 32
        code, out, err = await cli(capsys, "gossip", "getnode", stranger, *A)
        assert code == 1 and f"node {stranger} is not in the gossip graph" in err
        hint = f"the node at {c_dir} runs without the gossip app: start it without --no-gossip"
        for command in (["stats"], ["listchannels"], ["getchannel", scid], ["sync"]):
            code, out, err = await cli(capsys, "gossip", *command, *C)
            assert code == 1 and hint in err, command
        code, failure = await cli_json(capsys, "gossip", "subscribe", *C)
        assert code == 1 and failure["error"] == {"message": hint, "code": -32601}

        # B syncs from A; subscribers of B see the gossip arrive, filtered
        all_events = await subscriber(b_dir, "--count", 87 + 4)
        only_updates = await subscriber(b_dir, "--type", "channel_update", "--count", 4)
        one_channel = await subscriber(b_dir, "--scid", scid, "--count", 2)
        one_node = await subscriber(b_dir, "--node", node_id, "--type", "channel_announcement", "--count", len(own))
        code, out, _ = await cli(capsys, "connect", f"{a_info['node_id']}@{a_info['listen'][0]}", *B)
        assert code == 0
        code, out, _ = await cli(capsys, "gossip", "sync", "--wait", PROCESS_WAIT, *B)
        lines = out.splitlines()
        assert code == 0 and lines[-1] == "gossip synced: 87 channels", out
        assert lines[-2] == "gossip sync: 100% (done; 87 channels)" and all(line.startswith("gossip sync: ") for line in lines[:-1])
        code, out, _ = await cli(capsys, "gossip", "sync", "--json", *B)
        (progress,) = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and progress["synced"] and progress["percent"] == 100.0
        assert progress["peers"][a_info["node_id"]]["channels_answered"] == 87

        everything = await events_of(all_events)
        raws = {d.raw.hex() for d in live.values()} | {d.raw.hex() for d in updates}
        assert {e["raw"] for e in everything} == raws and len(everything) == 87 + 4
        assert all(e["source"] == a_info["node_id"] for e in everything)
        got_updates = await events_of(only_updates)
        assert {e["topic"] for e in got_updates} == {"gossip.channel_update"}
        assert sorted(e["raw"] for e in got_updates) == sorted(d.raw.hex() for d in updates)
        about_channel = await events_of(one_channel)
        assert [e["topic"] for e in about_channel] == ["gossip.channel_announcement", "gossip.channel_update"]
        assert {e["short_channel_id"] for e in about_channel} == {scid}
        assert about_channel[1]["message"]["fee_base_msat"] == updated.fee_base_msat
        about_node = await events_of(one_node)
        assert sorted(e["short_channel_id"] for e in about_node) == sorted(own)
        assert all(node_id in e["node_ids"] for e in about_node)

        # B's graph is A's (the capacities came with the import: B has no chain to look them up)
        code, b_stats = await cli_json(capsys, "gossip", "stats", *B)
        assert (b_stats["channels"], b_stats["channel_updates"], b_stats["store"]["channels"]) == (87, 4, 87)
        code, b_listed = await cli_json(capsys, "gossip", "listchannels", *B)
        assert as_synced(b_listed["channels"]) == as_synced(channels)
        assert all(c["capacity_sat"] is None for c in b_listed["channels"]) and any(c["capacity_sat"] for c in channels)

        for d in (A, B, C):
            code, out, _ = await cli(capsys, "stop", *d)
            assert code == 0
    a_log = running.finished[0][1]
    assert "importing gossip_store " in a_log and "gossip import: 100%: 186 records, 92 accepted, 5 deleted skipped, 1 channel(s) closed" in a_log

    # a restart keeps the graph (nothing imported this time)
    process, info = await start_node_process(a_dir)
    try:
        assert info["gossip"] == f"87 channels in {a_dir / 'gossip.sqlite3'}"
    finally:
        process.send_signal(signal.SIGINT)
        code, stderr = await finish_process(process)
    assert code == 0 and "importing" not in stderr


async def test_bad_imports_stop_the_start_with_a_clear_error(tmp_path):
    bad = tmp_path / "bad_store"
    bad.write_bytes(b"\xff" + bytes(20))
    cases = [
        (["--gossip-import", tmp_path / "missing.xz"], 1, "cannot start: --gossip-import: no such file: "),
        (["--gossip-import", bad], 1, "cannot start: unsupported gossip_store version 0xff"),
        (["--gossip-import", PARTS[0], "--no-gossip"], 2, "--gossip-import needs the gossip app: drop --no-gossip"),
    ]
    results = [None] * len(cases)

    async def run(i, args):
        process, info = await start_node_process(tmp_path / f"n{i}", *args)
        results[i] = (info, *await finish_process(process))

    async with trio.open_nursery() as nursery:
        for i, (args, _, _) in enumerate(cases):
            nursery.start_soon(run, i, args)
    for (args, want_code, message), (info, code, stderr) in zip(cases, results, strict=True):
        assert info is None and code == want_code and message in stderr, (args, stderr)
        assert "Traceback" not in stderr


@pytest.mark.parametrize("argv", [["getchannel", "12345"], ["getnode", "02abc"], ["listchannels", "--limit", "0"], ["subscribe", "--type", "ping"]])
def test_arguments_are_checked_before_calling(capsys, tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        main(["gossip", *argv, "--data-dir", str(tmp_path)])
    assert exc.value.code == 2 and "error: argument" in capsys.readouterr().err


async def test_without_a_node(capsys, tmp_path):
    for command in (["stats"], ["getchannel", "1x2x3"], ["sync"], ["subscribe"]):
        code, _, err = await cli(capsys, "gossip", *command, "--data-dir", tmp_path)
        assert code == 3 and f"error: no node is running at {tmp_path}" in err


def test_progress_bar():
    progress = {"percent": 50.0, "synced": False, "syncing": True, "channels": 12, "peers": {"02aa": {"state": "ids"}}}
    assert progress_bar(progress, width=10) == "[#####.....] 50% (1 peer(s) syncing; 12 channels)"
    done = {"percent": 100.0, "synced": True, "syncing": False, "channels": 87, "peers": {"02aa": {"state": "done"}}}
    assert progress_bar(done, width=4) == "[####] 100% (done; 87 channels)"
    assert progress_bar({**progress, "percent": 0.0, "syncing": False, "peers": {}}, width=4) == "[....] 0% (no peer to sync with yet; 12 channels)"


async def test_with_a_chain_announced_funding_outputs_are_looked_up(capsys, tmp_path):
    """``--chain regtest``: channels from peers must be funded on the node's chain. The
    regtest gossip of Core Lightning's test nodes names outputs this new chain lacks."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    async with node_processes() as running:
        infos = [await running.start(data_dir, *extra) for data_dir, extra in ((a_dir, ["--network", "regtest", "--gossip-import", GOSSIP / "gossip_store.simple.xz"]), (b_dir, ["--chain", "regtest"]))]
        a_info, _ = infos
        assert a_info["gossip"].startswith("1 channels in ")
        B = ("--data-dir", b_dir)
        code, _, _ = await cli(capsys, "connect", f"{a_info['node_id']}@{a_info['listen'][0]}", *B)
        assert code == 0
        code, out, _ = await cli(capsys, "gossip", "sync", "--wait", PROCESS_WAIT, *B)
        assert code == 0 and out.endswith("gossip synced: 0 channels\n")
        code, stats = await cli_json(capsys, "gossip", "stats", *B)
        assert stats["channels"] == 0 and stats["received"]["ChannelAnnouncement"] == 1
        assert stats["decisions"]["channel_announcement: ignored"] == 1
        assert [r for r in stats["reasons"] if r.startswith("channel_announcement: funding lookup failed: no block at height ")], stats["reasons"]
        for data_dir in (a_dir, b_dir):
            code, _, _ = await cli(capsys, "stop", "--data-dir", data_dir)
            assert code == 0


async def test_an_import_in_small_chunks_gives_the_same_graph_and_logs_progress(monkeypatch, caplog):
    """Long imports run in chunks between checkpoints: a chunk may not split a
    channel_announcement from its channel_amount (the capacity) record."""
    import logging

    import lnpmsg.gossip.app as gossip_app
    from lnpmsg.gossip import GossipApp, GossipStore
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.node import Node, NodeConfig

    async def import_with(chunk: int) -> list[dict]:
        monkeypatch.setattr(gossip_app, "IMPORT_CHUNK", chunk)
        node = Node(NodeKey.generate(), NodeConfig(listen=[], network="bitcoin"))
        app = node.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_MAINNET), import_at_start=PARTS))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)  # started: the import is done
            channels = await app.list_channels()
            node.stop()
        return channels

    whole = await import_with(10_000)
    monkeypatch.setattr(gossip_app, "IMPORT_LOG_INTERVAL", 0.0)
    # the first import's lines are captured too when an earlier test left logging at INFO
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lnpmsg.gossip"):
        chunked = await import_with(7)
    assert len(whole) == 87 and chunked == whole
    assert sum(c["capacity_sat"] is not None for c in whole) > 80
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("gossip import: ")]
    assert len(progress) > 10 and progress[-1].startswith("gossip import: 100%: 186 records, 92 accepted")
    percents = [float(m.split("%")[0].removeprefix("gossip import: ")) for m in progress[:-1]]
    assert percents == sorted(percents) and 0 < percents[0] < percents[-1] < 100


async def test_without_a_node_the_advice_names_only_options_the_command_has(capsys, tmp_path):
    for command in (["stats"], ["listchannels"], ["listnodes"], ["resync"]):
        code, _, err = await cli(capsys, "gossip", *command, "--data-dir", tmp_path)
        assert code == 3 and "or add --wait" in err, (command, err)
        # and the command has it: with --wait it waits for a node (here none comes)
        code, _, err = await cli(capsys, "gossip", *command, "--wait", "--timeout", "0.3", "--data-dir", tmp_path)
        assert code == 3 and "no node is running" in err, (command, err)


def test_the_sync_command_keeps_its_own_wait(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["gossip", "sync", "--wait", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2 and "expected one argument" in capsys.readouterr().err
