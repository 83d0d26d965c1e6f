"""Peer RPC between real nodes over loopback TCP: calls, typed errors, timeouts,
peers that vanish, handlers that raise or hang, and a peer flooding requests."""

from __future__ import annotations

import json
import random
from collections import deque
from typing import Any, Literal

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.rpc.params import ParamsError, params_checker
from lnpmsg.rpc.peer import (
    MAX_IDLE_WORKERS,
    MAX_PAYLOAD,
    CallTimeout,
    ErrorCode,
    PeerGone,
    PeerRpc,
    RemoteError,
    RpcError,
    RpcFault,
    RpcRequest,
    RpcResponse,
    RpcUnsupported,
    request_bytes,
    response_bytes,
)
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import Init, MessageRegistry


class Server:
    """A node with an RPC app and a set of methods that misbehave on purpose."""

    def __init__(self, **rpc_options: Any) -> None:
        self.node = make_node()
        self.rpc = self.node.mount(PeerRpc(**rpc_options))
        self.cancelled = 0
        self.running = 0
        rpc = self.rpc

        @rpc.method()
        async def add(peer, a: int, b: int = 0) -> int:
            await trio.lowlevel.checkpoint()  # it may wait: a worker task runs it
            return a + b

        @rpc.method()
        async def add_at_once(peer, a: int, b: int = 0) -> int:
            return a + b  # no await: it cannot wait, so it is served inline

        @rpc.method()
        async def boom_at_once(peer) -> None:
            raise KeyError("inline trouble")

        @rpc.method()
        async def echo(peer, value: Any, delay: float = 0.0) -> dict[str, Any]:
            await trio.sleep(delay)
            return {"value": value, "caller": peer.node_id.hex()}

        @rpc.method()
        async def boom(peer) -> None:
            raise KeyError("no such thing")

        @rpc.method()
        async def refuse(peer, why: str) -> None:
            raise RpcFault(why, 418)

        @rpc.method()
        async def not_json(peer) -> object:
            return object()

        @rpc.method()
        async def kind(peer, mode: Literal["a", "b"], tags: list[str] | None = None, blob: bytes = b"") -> str:
            return f"{mode}:{','.join(tags or [])}:{blob.hex()}"

        @rpc.method()
        async def hang(peer) -> None:
            self.running += 1
            try:
                await trio.sleep_forever()
            finally:
                self.running -= 1
                self.cancelled += 1

        @rpc.method(timeout=0.2)
        async def hang_briefly(peer) -> None:
            await trio.sleep_forever()

        self.stages: list[str] = []

        @rpc.method(timeout=0.2)
        async def work_then_hang(peer) -> None:
            await trio.sleep(0)  # a first suspension, then more work, then too long
            self.stages.append("started")
            try:
                await trio.sleep(30)
            finally:
                self.stages.append("cancelled")

        @rpc.method()
        async def boom_later(peer, after: float) -> None:
            await trio.sleep(after)
            raise KeyError("late trouble")

        @rpc.method(timeout=0.2)
        async def swallow_cancel(peer) -> str:
            try:
                await trio.sleep(30)
            except trio.Cancelled:  # a method that must not do this; its worker still goes on
                return "swallowed"
            return "slept"

        self.concurrent = self.most_concurrent = 0

        @rpc.method()
        async def gauge(peer, delay: float) -> int:
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
            try:
                await trio.sleep(delay)
            finally:
                self.concurrent -= 1
            return self.most_concurrent

        # methods that wait for a later request of the same peer: the reading task must go on
        self.signal = trio.Event()
        self.spinning = False

        @rpc.method()
        async def wait_for_signal(peer) -> str:
            await self.signal.wait()
            return "signalled"

        @rpc.method()
        def give_signal(peer) -> None:
            self.signal.set()

        @rpc.method()
        async def spin(peer) -> int:
            self.spinning = True
            turns = 0
            while self.spinning:  # checkpoints only, until a later request says stop
                turns += 1
                await trio.lowlevel.checkpoint()
            return turns

        @rpc.method()
        def stop_spinning(peer) -> None:
            self.spinning = False

        # plain functions: served inline, without a task
        @rpc.method()
        def sum_inline(peer, values: list[int]) -> int:
            return sum(values)

        @rpc.method()
        def refuse_inline(peer, why: str) -> None:
            raise RpcFault(why, 419)

        @rpc.method()
        def boom_inline(peer) -> None:
            raise ValueError("inline trouble")

        @rpc.method()
        def not_json_inline(peer) -> object:
            return object()

        @rpc.method()
        def forgot_async(peer):  # returns a coroutine: a mistake, answered clearly
            return add(peer, 1)


async def connected(server: Server):
    client = make_node(listen=False)
    rpc = client.mount(PeerRpc())
    return client, rpc


async def wait_for(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def test_calls_with_named_and_positional_typed_params():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        assert await rpc.call(peer, "add", {"a": 2, "b": 3}) == 5
        assert await rpc.call(peer, "add", [4]) == 4
        assert await rpc.call(server.node.node_id, "echo", {"value": {"x": [1, None]}}) == {
            "value": {"x": [1, None]},
            "caller": client.node_id.hex(),
        }
        assert await rpc.call(peer, "kind", {"mode": "b", "tags": ["x", "y"], "blob": "00ff"}) == "b:x,y:00ff"
        methods = {m["method"]: m for m in server.rpc.describe()}
        assert methods["add"]["params"] == {"a": "int", "b": "int = 0"}


@pytest.mark.parametrize(
    ("method", "params", "code", "text"),
    [
        ("nope", None, ErrorCode.METHOD_NOT_FOUND, "no method 'nope'"),
        ("add", {"a": "1"}, ErrorCode.INVALID_PARAMS, "param 'a' must be int, got str"),
        ("add", {}, ErrorCode.INVALID_PARAMS, "missing param(s): a"),
        ("add", {"a": 1, "c": 2}, ErrorCode.INVALID_PARAMS, "unexpected param 'c'"),
        ("add", [1, 2, 3], ErrorCode.INVALID_PARAMS, "at most 2 positional"),
        ("add", 5, ErrorCode.INVALID_PARAMS, "params must be an object or a list"),
        ("kind", {"mode": "c"}, ErrorCode.INVALID_PARAMS, "must be one of"),
        ("kind", {"mode": "a", "blob": "zz"}, ErrorCode.INVALID_PARAMS, "hex string"),
        ("boom", None, ErrorCode.FAILED, "KeyError: 'no such thing'"),
        ("refuse", {"why": "teapot"}, 418, "teapot"),
        ("not_json", None, ErrorCode.FAILED, "not JSON"),
    ],
)
async def test_remote_errors_are_typed_and_the_connection_stays(method, params, code, text):
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        with pytest.raises(RemoteError) as info:
            await rpc.call(peer, method, params)
        assert info.value.code == code and text in info.value.message and info.value.method == method
        assert await rpc.call(peer, "add", [1, 1]) == 2
        assert peer.is_ready


async def test_plain_function_methods_are_served_inline_with_the_same_errors():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        tasked: list[str] = []

        class WatchedJobs(deque):  # type: ignore[type-arg]
            def append(self, job):  # type: ignore[no-untyped-def]
                tasked.append(job.name)  # queued for a worker task
                super().append(job)

        server.rpc._jobs = WatchedJobs()
        assert await rpc.call(peer, "sum_inline", {"values": [1, 2, 3]}) == 6
        assert await rpc.call(peer, "sum_inline", [[]]) == 0
        assert server.rpc.methods["sum_inline"].inline and not server.rpc.methods["add"].inline
        assert server.rpc.methods["add_at_once"].inline and await rpc.call(peer, "add_at_once", [2, 5]) == 7
        for method, params, code, text in (
            ("sum_inline", {"values": ["x"]}, ErrorCode.INVALID_PARAMS, "must be int"),
            ("refuse_inline", {"why": "teapot"}, 419, "teapot"),
            ("boom_inline", None, ErrorCode.FAILED, "ValueError: inline trouble"),
            ("not_json_inline", None, ErrorCode.FAILED, "not JSON"),
            ("forgot_async", None, ErrorCode.FAILED, "returned an awaitable"),
            ("add_at_once", {"a": "x"}, ErrorCode.INVALID_PARAMS, "must be int"),
            ("boom_at_once", None, ErrorCode.FAILED, "KeyError: 'inline trouble'"),
        ):
            with pytest.raises(RemoteError) as info:
                await rpc.call(peer, method, params)
            assert info.value.code == code and text in info.value.message
        # many at once, all answered in order of ids
        async with trio.open_nursery() as nursery:
            results: dict[int, int] = {}

            async def one(i: int) -> None:
                results[i] = await rpc.call(peer, "sum_inline", [[i, i]])

            for i in range(100):
                nursery.start_soon(one, i)
        assert results == {i: 2 * i for i in range(100)}
        assert tasked == []  # no inline method ran as a task
        assert await rpc.call(peer, "add", [1, 2]) == 3
        assert tasked == ["add"]  # the connection's first async request: a worker
        assert await rpc.call(peer, "add", [2, 2]) == 4
        assert tasked == ["add"]  # the next ones read alone: served in the reading task
        assert peer.is_ready


@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.binary(min_size=1, max_size=255),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=0xFFFF),
)
def test_hot_path_encodings_are_the_messages_bytes(req_id, timeout_ms, method, body, code):
    assert request_bytes(req_id, timeout_ms, method, body) == RpcRequest(
        id=req_id, timeout_ms=timeout_ms, method=method, params=body
    ).encode()
    assert response_bytes(req_id, code, body) == RpcResponse(id=req_id, code=code, result=body).encode()


async def test_async_methods_reuse_a_bounded_set_of_worker_tasks():
    server = Server()
    client, rpc = await connected(server)
    started: list[int] = []
    worker = server.rpc._worker

    def counting_worker():  # type: ignore[no-untyped-def]
        started.append(1)
        return worker()

    server.rpc._worker = counting_worker  # type: ignore[method-assign]
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        for i in range(20):  # one at a time: each read alone, served in the reading task
            assert await rpc.call(peer, "add", [i, 1]) == i + 1
        assert len(started) == 1  # but the first, in a worker (see Peer.hold_reading)
        async with trio.open_nursery() as nursery:  # a burst: more workers, up to the requests
            for i in range(40):
                nursery.start_soon(rpc.call, peer, "echo", {"value": i, "delay": 0.05})
        assert 1 < len(started) <= 41
        await wait_for(lambda: server.rpc._serving_total == 0)
        assert len(server.rpc._idle_workers) == MAX_IDLE_WORKERS  # the rest ended
        before = len(started)
        assert await rpc.call(peer, "add", [2, 2]) == 4
        assert len(started) == before


async def test_many_concurrent_calls_get_their_own_answers():
    server = Server()
    client, rpc = await connected(server)
    results = {}
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))

        async def one(i):
            results[i] = await rpc.call(peer, "echo", {"value": i, "delay": random.random() * 0.05})

        async with trio.open_nursery() as nursery:
            for i in range(60):  # within the per-peer bound of 64
                nursery.start_soon(one, i)
        assert {i: r["value"] for i, r in results.items()} == {i: i for i in range(60)}


async def test_server_side_timeout_answers_with_an_error():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        with pytest.raises(RemoteError) as info:
            await rpc.call(peer, "hang_briefly", timeout=10)
        assert info.value.code == ErrorCode.TIMEOUT and "within 0.2 s" in info.value.message
        assert await rpc.call(peer, "add", [1]) == 1


async def test_an_async_method_cancelled_by_its_time_limit_after_it_suspended():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        for _ in range(2):  # the worker that served the cancelled one serves the next alike
            with pytest.raises(RemoteError) as info:
                await rpc.call(peer, "work_then_hang", timeout=10)
            assert info.value.code == ErrorCode.TIMEOUT and "within 0.2 s" in info.value.message
            assert await rpc.call(peer, "echo", {"value": 1, "delay": 0.01}) == {"value": 1, "caller": client.node_id.hex()}
        assert server.stages == ["started", "cancelled"] * 2
        assert server.rpc._serving_total == 0 and len(server.rpc._deadlines) == 0


async def test_a_method_raising_after_its_first_await_gets_one_error_reply():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        for after in (0, 0.05):
            with pytest.raises(RemoteError) as info:
                await rpc.call(peer, "boom_later", {"after": after})
            assert info.value.code == ErrorCode.FAILED and "KeyError: 'late trouble'" in info.value.message
        assert await rpc.call(peer, "add", [1, 2]) == 3
        assert server.rpc._serving_total == 0 and server.rpc._serving[server.node.peers[client.node_id]] == {}


async def test_a_method_that_swallows_its_cancellation_does_not_cancel_the_next():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        assert await rpc.call(peer, "swallow_cancel") == "swallowed"  # its answer, late
        # the next requests on that worker run to their end (a fresh cancel scope)
        assert await rpc.call(peer, "echo", {"value": 2, "delay": 0.05}) == {"value": 2, "caller": client.node_id.hex()}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rpc.call, peer, "swallow_cancel")
            for i in range(3):
                nursery.start_soon(rpc.call, peer, "echo", {"value": i, "delay": 0.3})
        assert server.rpc._serving_total == 0


async def test_many_concurrent_calls_stay_within_the_bounds():
    server = Server(max_inflight_per_peer=16)
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        served: list[int] = []
        busy: list[int] = []

        async def one() -> None:
            try:
                served.append(await rpc.call(peer, "gauge", {"delay": 0.5}))
            except RemoteError as exc:
                assert exc.busy
                busy.append(exc.code)

        async with trio.open_nursery() as nursery:
            for _ in range(100):  # sent at once: the first 16 run, the others find no room
                nursery.start_soon(one)
        assert len(served) + len(busy) == 100 and len(served) >= 16 and busy
        assert server.most_concurrent == 16  # the bound, reached and never passed
        await wait_for(lambda: server.rpc._serving_total == 0)
        assert len(server.rpc._idle_workers) <= MAX_IDLE_WORKERS
        assert await rpc.call(peer, "gauge", {"delay": 0}) == 16


async def test_a_cancelled_request_leaves_the_others_on_its_worker_alone():
    # Workers serve requests under one cancel scope until one is cancelled: the
    # cancelled request alone must end, queued and later ones must still run.
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        outcomes: dict[str, object] = {}

        async def call(key: str, method: str, params: object, timeout: float = 10) -> None:
            try:
                outcomes[key] = await rpc.call(peer, method, params, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
                outcomes[key] = exc

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(call, f"brief{i}", "hang_briefly", None)
                nursery.start_soon(call, f"gave-up{i}", "hang", None, 0.3)
                nursery.start_soon(call, f"add{i}", "add", [i, 1])
        for i in range(3):
            assert outcomes[f"add{i}"] == i + 1
            brief = outcomes[f"brief{i}"]
            assert isinstance(brief, RemoteError) and brief.code == ErrorCode.TIMEOUT
            assert isinstance(outcomes[f"gave-up{i}"], CallTimeout)
        await wait_for(lambda: server.cancelled == 3)
        assert server.running == 0
        assert server.rpc._serving_total == 0 and len(server.rpc._deadlines) == 0
        assert await rpc.call(peer, "add", [5, 5]) == 10


async def test_inline_methods_answer_while_async_requests_of_the_same_peer_run():
    server = Server(max_inflight_per_peer=2)
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(lambda: rpc.call(peer, "hang", timeout=30))
            await wait_for(lambda: server.running == 2)
            # both async slots taken: an inline method still answers, an async one is busy
            assert await rpc.call(peer, "sum_inline", [[2, 3]]) == 5
            with pytest.raises(RemoteError) as info:
                await rpc.call(peer, "add", [1])
            assert info.value.busy
            nursery.cancel_scope.cancel()
        await wait_for(lambda: server.running == 0)


@pytest.mark.parametrize(("method", "started", "release"), [
    ("wait_for_signal", lambda server: True, "give_signal"),
    ("spin", lambda server: server.spinning, "stop_spinning"),
])
async def test_a_method_alone_in_flight_that_waits_lets_the_peer_s_next_request_in(method, started, release):
    # A request read alone has the reading task wait for its method's first steps
    # (its reply then leaves first); a method that waits longer must let it read on,
    # or the request it waits for would never be read.
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        for _ in range(2):
            server.signal = trio.Event()
            results: list[object] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_append_call, results, rpc, peer, method)
                await wait_for(lambda: server.rpc._serving_total == 1 and started(server))
                await rpc.call(peer, release, timeout=5)
            assert results and (results[0] == "signalled" or results[0] > 1)
        assert server.rpc._serving_total == 0
        assert await rpc.call(peer, "add", [2, 3]) == 5


async def _append_call(results: list[object], rpc: PeerRpc, peer: object, method: str) -> None:
    results.append(await rpc.call(peer, method, timeout=5))


async def test_caller_timeout_cancels_the_remote_handler():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        with pytest.raises(CallTimeout, match="no response within 0.2 s"):
            await rpc.call(peer, "hang", timeout=0.2)
        await wait_for(lambda: server.cancelled == 1)
        assert server.running == 0 and await rpc.call(peer, "add", [2]) == 2


async def test_peer_gone_fails_pending_calls_at_once():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        async with trio.open_nursery() as nursery:

            async def drop():
                await wait_for(lambda: server.running == 1)
                await server.node.disconnect(client.node_id)

            nursery.start_soon(drop)
            with pytest.raises(PeerGone, match="disconnected"):
                await rpc.call(peer, "hang", timeout=30)
        await wait_for(lambda: server.running == 0 and server.rpc._serving_total == 0)  # the server stopped the orphaned handler
        with pytest.raises(PeerGone, match="not connected"):
            await rpc.call(server.node.node_id, "add", [1])


async def test_an_unmounted_app_stops_the_methods_it_serves_in_reading_tasks():
    # A request read alone runs in the peer's reading task, outside the app's
    # nursery: the app's end must stop it as it stops its workers.
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        async with trio.open_nursery() as nursery:

            async def unmount() -> None:
                await wait_for(lambda: server.running == 1)
                server.node.unmount("rpc")

            nursery.start_soon(unmount)
            with pytest.raises(CallTimeout):
                await rpc.call(peer, "hang", timeout=1)
        await wait_for(lambda: server.running == 0)
        assert server.cancelled == 1 and peer.is_ready


async def test_peer_without_rpc_is_refused_locally():
    plain = make_node()
    client, rpc = await connected(Server())
    async with running(plain, client):
        peer = await client.connect(address_of(plain))
        with pytest.raises(RpcUnsupported):
            await rpc.call(peer, "add", [1])


async def test_oversized_or_unencodable_params_fail_before_sending():
    server = Server()
    client, rpc = await connected(server)
    async with running(server.node, client):
        peer = await client.connect(address_of(server.node))
        with pytest.raises(RpcError, match="exceed"):
            await rpc.call(peer, "echo", {"value": "x" * MAX_PAYLOAD})
        with pytest.raises(RpcError, match="not JSON-able"):
            await rpc.call(peer, "echo", {"value": object()})
        with pytest.raises(RpcError, match="method name"):
            await rpc.call(peer, "x" * 256)


def _rpc_registry():
    registry = MessageRegistry()
    for cls in (RpcRequest, RpcResponse):
        registry.register(cls)
    return registry


async def test_a_flooding_peer_gets_busy_errors_and_others_are_served():
    server = Server(max_inflight_per_peer=8)
    client, rpc = await connected(server)
    registry = _rpc_registry()
    async with running(server.node, client):
        flooder = await RawPeer.connect(server.node.listen_addresses[0], server.node.node_id)
        await flooder.exchange_init(Init())
        flood = 200
        for i in range(flood):
            await flooder.send(RpcRequest(id=i, timeout_ms=60_000, method=b"hang", params=b""))
        codes = []
        with trio.fail_after(10):
            while len(codes) < flood - 8:
                msg = registry.decode(await flooder.receive())
                if isinstance(msg, RpcResponse):
                    codes.append(msg.code)
        assert set(codes) == {ErrorCode.BUSY} and server.running == 8
        assert server.rpc.busy_replies == flood - 8
        # a well-behaved peer is served meanwhile, and the flooder's connection stays
        peer = await client.connect(address_of(server.node))
        assert await rpc.call(peer, "add", [40, 2]) == 42
        assert server.node.peers[flooder.key.node_id].is_ready
        await flooder.aclose()
        await wait_for(lambda: server.running == 0)


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (RpcRequest(id=1, timeout_ms=1000, method=b"\xff\xfe", params=b""), ErrorCode.BAD_REQUEST, "not UTF-8"),
        (RpcRequest(id=2, timeout_ms=1000, method=b"add", params=b"{not json"), ErrorCode.INVALID_PARAMS, "not JSON"),
        (RpcRequest(id=3, timeout_ms=1000, method=b"add", params=b"\xff"), ErrorCode.INVALID_PARAMS, "not JSON"),
        (RpcRequest(id=4, timeout_ms=1000, method=b"add", params=b"[1e999999]"), ErrorCode.INVALID_PARAMS, "must be int"),
    ],
)
async def test_malformed_requests_get_error_responses(request_, code, text):
    server = Server()
    registry = _rpc_registry()
    async with running(server.node):
        raw = await RawPeer.connect(server.node.listen_addresses[0], server.node.node_id)
        await raw.exchange_init(Init())
        await raw.send(request_)
        with trio.fail_after(5):
            while not isinstance(reply := registry.decode(await raw.receive()), RpcResponse):
                pass
        assert reply.id == request_.id and reply.code == code and text in reply.result.decode()
        await raw.aclose()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


async def _typed(peer, a: int, b: list[str] | None = None, c: dict[str, float] | None = None, d: bytes = b"") -> None:
    return None


@given(json_values)
def test_params_checker_takes_any_json_and_raises_only_params_error(value):
    check = params_checker(_typed)
    try:
        kwargs = check(value)
    except ParamsError:
        return
    assert type(kwargs["a"]) is int
    json.dumps({k: v for k, v in kwargs.items() if k != "d"})


def test_only_an_async_def_that_cannot_wait_counts_as_never_suspending():
    import functools

    from lnpmsg.rpc.peer_records import never_suspends

    async def plain(peer, x):  # type: ignore[no-untyped-def]
        def helper() -> int:
            return x

        async def later() -> None:  # defined, never awaited here
            await trio.sleep(1)

        del later
        return [helper() for _ in range(2)]

    async def awaits(peer):  # type: ignore[no-untyped-def]
        await trio.sleep(0)

    async def with_lock(peer, lock):  # type: ignore[no-untyped-def]
        async with lock:
            return 1

    async def loops(peer, stream):  # type: ignore[no-untyped-def]
        async for item in stream:
            return item

    async def comprehends(peer, stream):  # type: ignore[no-untyped-def]
        return [item async for item in stream]

    @functools.wraps(plain)
    async def wrapper(*args):  # type: ignore[no-untyped-def]
        return await plain(*args)

    def sync(peer):  # type: ignore[no-untyped-def]
        return 1

    class Service:
        async def at_once(self, peer):  # type: ignore[no-untyped-def]
            return 1

        async def waits(self, peer):  # type: ignore[no-untyped-def]
            await trio.sleep(0)

    assert never_suspends(plain) and never_suspends(Service().at_once) and not never_suspends(Service().waits)
    for fn in (awaits, with_lock, loops, comprehends, wrapper, functools.partial(plain, x=1), sync, lambda peer: plain(peer, 1)):
        assert not never_suspends(fn), fn
