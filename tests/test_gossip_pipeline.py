"""The parallel ingest pipeline decides exactly as the single-threaded path does.

The same input (real mainnet gossip from ../shared/data/gossip, and the
synthetic network of bench_gossip with forged, duplicated and out-of-order
messages mixed in) goes (a) through :meth:`Graph.process`, one message at a
time, signatures checked in this thread, and (b) through a running
GossipApp whose signature checks run in worker processes, in small batches
so that several are in flight while earlier ones commit. Both must reach
the same accept/ignore/reject decisions (with reasons), accept in the same
order (the events), and store the same messages.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio
import trio.testing

from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.cln_store import load_gossip_store_file, read_gossip_store
from lnpmsg.gossip.events import GossipEvent
from lnpmsg.gossip.graph import Graph, Outcome
from lnpmsg.gossip.messages import register_gossip_messages
from lnpmsg.gossip.pipeline import SPLIT_MIN, VerifyPool, pack_checks, unpack_verdicts
from lnpmsg.gossip.sign import sign_channel_update
from lnpmsg.gossip.store import GossipStore
from lnpmsg.gossip.testing import SyntheticNetwork
from lnpmsg.gossip.verify import SigCheck, SignatureVerifier, double_sha256
from lnpmsg.gossip.verify_worker import MAX_FRAME, RECORD_SIZE, take_frame, verify_blob
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.wire import CHAIN_HASH_MAINNET, DEFAULT_REGISTRY

GOSSIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "gossip"
PARTS = (str(GOSSIP / "gossip_store-part1.xz"), str(GOSSIP / "gossip_store-part2.xz"))
REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())
GOSSIP_TYPES = (b"\x01\x00", b"\x01\x01", b"\x01\x02")
#: real messages taken from the sample store (enough for every kind, small enough for a test)
REAL_MESSAGES = 2500
NOW = 1_800_000_000.0
PEER_A = b"\x02" + b"\xaa" * 32
PEER_B = b"\x03" + b"\xbb" * 32


def real_gossip(limit: int) -> list[bytes]:
    data = load_gossip_store_file(*PARTS)
    out = []
    for record in read_gossip_store(data):
        if record.msg[:2] in GOSSIP_TYPES and not record.deleted:
            out.append(record.msg)
            if len(out) == limit:
                break
    return out


def synthetic_with_trouble() -> list[bytes]:
    """bench_gossip's generator, with what a hostile or sloppy peer sends mixed in, shuffled."""
    net = SyntheticNetwork(60, 150, CHAIN_HASH_MAINNET, updates_per_channel=2, base_timestamp=int(NOW) - 1000)
    messages = list(net.messages())
    rng = random.Random(19)
    trouble = []
    for raw in rng.sample(messages, 40):
        # a flipped bit in the signed part: the signature no longer holds
        bad = bytearray(raw)
        bad[-1] ^= 1
        trouble.append(bytes(bad))
        trouble.append(raw)  # a duplicate
    # a channel_update signed by the wrong key, and one from the future
    scid = net.short_channel_id(3)
    trouble.append(sign_channel_update(b"\x11" * 32, scid, CHAIN_HASH_MAINNET, int(NOW) - 10, direction=0).encode())
    end_1, _ = net.ends(4)
    trouble.append(
        sign_channel_update(net.node_secret(end_1), net.short_channel_id(4), CHAIN_HASH_MAINNET, int(NOW) + 10**6, direction=0).encode()
    )
    out = messages + trouble
    # keep most announcements ahead of their updates, but not all: a window shuffle
    for i in range(0, len(out) - 8, 5):
        window = out[i : i + 8]
        rng.shuffle(window)
        out[i : i + 8] = window
    return out


def prepared_checks(count: int) -> tuple[SignatureVerifier, list[SigCheck]]:
    """The signature checks of the first ``count`` messages of :func:`synthetic_with_trouble`
    (valid and forged ones), as the graph prepares them, and the verifier it used."""
    verifier = SignatureVerifier()
    graph = Graph(CHAIN_HASH_MAINNET, verifier=verifier)
    checks: list[SigCheck] = []
    for raw in synthetic_with_trouble()[:count]:
        checks.extend(getattr(graph.prepare(REGISTRY.decode(raw), raw, NOW), "checks", ()))
    return verifier, checks


def reference(inputs: list[tuple[bytes, bytes]]) -> tuple[Graph, list[tuple[str, str, bytes]]]:
    """The single-threaded path: one message at a time, checked here."""
    graph = Graph(CHAIN_HASH_MAINNET, verifier=SignatureVerifier())
    accepted = []
    for source, raw in inputs:
        decision = graph.process(REGISTRY.decode(raw), raw, NOW, source=source)
        if decision.outcome is Outcome.ACCEPTED:
            accepted.append((decision.kind, decision.outcome.value, raw))
    return graph, accepted


async def pipelined(inputs: list[tuple[bytes, bytes]]) -> tuple[GossipApp, list[bytes]]:
    config = GossipConfig(
        relay=False,
        prune_interval=0,
        flush_interval=3600,
        verify_processes=2,
        verify_process_min=1,
        batch_size=16,
        batches_in_flight=4,
    )
    node = Node(NodeKey.generate(), NodeConfig(network="bitcoin"))
    app = node.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_MAINNET), config=config, clock=lambda: NOW))
    events: list[bytes] = []
    node.events.add_listener(lambda event: events.append(event.raw) if isinstance(event, GossipEvent) else None)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            for source, raw in inputs:
                # what the node's message handler queues for each gossip message a peer sends
                await app._inbox_send.send(("gossip", source, REGISTRY.decode(raw)))
            await app.drain()
            assert app.verify_pool is not None and app.verify_pool.checked_remote > 0
            node.stop()
            nursery.cancel_scope.cancel()
    return app, events


async def test_the_pipeline_decides_as_the_single_threaded_path_on_real_and_synthetic_gossip() -> None:
    real = real_gossip(REAL_MESSAGES)
    synthetic = synthetic_with_trouble()
    rng = random.Random(7)
    inputs = [(rng.choice((PEER_A, PEER_B)), raw) for raw in real + synthetic]
    graph, accepted = reference(inputs)
    app, events = await pipelined(inputs)
    # the same decisions, reasons included
    assert app.graph.counters.by_kind == graph.counters.by_kind
    assert app.graph.counters.reasons == graph.counters.reasons
    assert app.graph.counters.signature_checks == graph.counters.signature_checks
    # every kind of outcome happened, so the comparison means something
    outcomes = {outcome for (_, outcome) in graph.counters.by_kind}
    assert outcomes == {"accepted", "ignored", "rejected"}
    assert any("invalid" in reason for reason in graph.counters.reasons)
    # the feed: accepted messages published in acceptance order
    assert events == [raw for (_, _, raw) in accepted]
    # the store holds what was accepted
    assert set(app.graph.channels) == set(graph.channels)
    for scid in graph.channels:
        assert app.store.channel_announcement(scid) is not None


def test_checks_cross_the_process_boundary_unchanged() -> None:
    verifier, checks = prepared_checks(60)
    digest = double_sha256(b"x")
    checks.append(SigCheck(digest, b"\x01" * 63, checks[0].key, "short signature"))
    checks.append(SigCheck(digest, checks[0].signature, b"\x02" * 5, "short key"))
    blob = pack_checks(checks)
    assert len(blob) == RECORD_SIZE * len(checks)
    assert unpack_verdicts(verify_blob(SignatureVerifier(), blob), len(checks)) == verifier.verify_many(checks)
    assert not all(verifier.verify_many(checks)) and any(verifier.verify_many(checks))


async def test_a_dead_worker_falls_back_to_checking_here() -> None:
    verifier, checks = prepared_checks(80)
    expected = verifier.verify_many(checks)
    with trio.fail_after(60):
        async with VerifyPool(1, SignatureVerifier(), min_checks=1) as pool:
            assert await pool.verify(checks) == expected
            assert pool.checked_remote == len(checks)
            worker = pool._workers[0].process
            worker.kill()
            await trio.to_thread.run_sync(worker.wait)
            assert await pool.verify(checks) == expected
            assert pool.checked_remote == len(checks)


async def test_batches_queued_on_one_worker_get_their_own_answers() -> None:
    """Several batches written to one worker before its first answer is read: each
    caller gets the verdicts of its own checks, in order."""
    verifier, checks = prepared_checks(80)
    rng = random.Random(7)
    batches = [rng.sample(checks, rng.randrange(5, len(checks))) for _ in range(8)]
    expected = [verifier.verify_many(b) for b in batches]
    assert len({tuple(e) for e in expected}) > 1
    answers: list[list[bool]] = [[] for _ in batches]
    with trio.fail_after(60):
        async with VerifyPool(1, SignatureVerifier(), min_checks=1) as pool:

            async def one(i: int) -> None:
                answers[i] = await pool.verify(batches[i])

            async with trio.open_nursery() as nursery:
                for i in range(len(batches)):
                    nursery.start_soon(one, i)
            assert pool._workers[0].sent == pool._workers[0].answered == len(batches)
            assert pool.checked_remote == sum(len(b) for b in batches)
    assert answers == expected


async def test_a_small_batch_goes_whole_to_the_least_busy_worker_and_a_large_one_is_split() -> None:
    """Each part of a batch is a trip of its own: a batch under SPLIT_MIN checks per part
    is one frame to one worker (small batches take turns, and batches in flight together
    still reach every worker); a large one is split over them."""
    verifier, checks = prepared_checks(80)
    small = checks[: SPLIT_MIN - 1]
    large = (checks * (2 * SPLIT_MIN // len(checks) + 1))[: 2 * SPLIT_MIN]
    assert len(small) >= 64
    with trio.fail_after(60):
        async with VerifyPool(2, SignatureVerifier(), min_checks=1) as pool:
            assert await pool.verify(small) == verifier.verify_many(small)
            assert sorted(w.sent for w in pool._workers) == [0, 1]
            assert await pool.verify(small) == verifier.verify_many(small)
            assert [w.sent for w in pool._workers] == [1, 1]  # the other one's turn
            assert await pool.verify(large) == verifier.verify_many(large)
            assert [w.sent for w in pool._workers] == [2, 2]
            # Two small batches at once: one on each worker, each with its own answers.
            answers: list[list[bool]] = [[], []]

            async def one(i: int) -> None:
                answers[i] = await pool.verify(small[i:])

            async with trio.open_nursery() as nursery:
                for i in range(2):
                    nursery.start_soon(one, i)
            assert [w.sent for w in pool._workers] == [3, 3]
            assert answers == [verifier.verify_many(small[i:]) for i in range(2)]
            assert pool.checked_remote == 2 * len(small) + len(large) + len(small) + len(small) - 1


def test_answers_are_taken_whole_from_what_a_non_blocking_read_brings() -> None:
    frames = [b"", b"\x01" * 3, bytes(range(256)) * 9]
    stream = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    for step in (1, 3, 5, 700, len(stream)):
        buffer, taken = bytearray(), []
        for i in range(0, len(stream), step):
            buffer += stream[i : i + step]
            while (body := take_frame(buffer)) is not None:
                taken.append(body)
        assert taken == frames and not buffer
    with pytest.raises(ValueError, match="at most"):
        take_frame(bytearray((MAX_FRAME + 1).to_bytes(4, "big")))


@pytest.mark.parametrize("size", [400, 3000])
async def test_a_batch_on_its_way_when_the_pool_closes_is_checked_here(size: int, caplog) -> None:
    """The pool closed while a batch waits for its answer on the event loop (400 checks:
    written at once, ~15 ms to check) or is still being written or about to be read
    (3,000): it gets its worker's answer or is checked here, whichever comes, and no
    worker is said to have failed."""
    verifier, checks = prepared_checks(80)
    batch = (checks * 20)[:size]
    expected = verifier.verify_many(batch)
    answer: list[bool] = []
    with trio.fail_after(60):
        pool = VerifyPool(1, SignatureVerifier(), min_checks=1)
        await pool.start()
        worker = pool._workers[0]
        io = trio.lowlevel.current_statistics().io_statistics
        waiting_before = io.tasks_waiting_read

        async def check() -> None:
            answer.extend(await pool.verify(batch))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(check)
            while worker.sent == 0:
                await trio.sleep(0)
            if size == 400:
                # its answer is awaited on the event loop
                while trio.lowlevel.current_statistics().io_statistics.tasks_waiting_read == waiting_before:
                    await trio.sleep(0.001)
            await pool.close()
    assert answer == expected
    assert worker.process.poll() is not None and worker.process.stdout.closed
    assert "signature worker failed" not in caplog.text
