"""The node control API over real ZeroMQ sockets: calls, events, security, bad input."""

from __future__ import annotations

import json
import os
import stat

import pytest
import trio
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.app import DONE, App
from lnpmsg.pubsub.peer import PeerPubSub
from lnpmsg.rpc.control import ControlError, ControlServer
from lnpmsg.rpc.control_client import (
    ControlCallError,
    ControlClient,
    ControlEndpoints,
    ControlTimeout,
    NoNodeRunning,
    locate,
)
from lnpmsg.rpc.control_proto import (
    MAX_REQUEST_BYTES,
    ControlRequestError,
    ErrorCode,
    parse_request,
)
from lnpmsg.rpc.curve import KEYS_DIR, load_client_keys
from lnpmsg.rpc.peer import PeerRpc
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.io.zmq_trio import TrioSocket

CHAT = 32769


def controlled(data_dir, **options):
    """A node with RPC, pub/sub and the control API."""
    node = make_node()
    node.mount(PeerRpc())
    node.mount(PeerPubSub())
    node.mount(ControlServer(data_dir, **options))
    return node


async def wait_for(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def test_every_call_and_the_event_stream(data_dir):
    node, other = controlled(data_dir), make_node()
    other_rpc = other.mount(PeerRpc())

    @other_rpc.method()
    async def double(peer, x: int) -> int:
        return 2 * x

    async with running(node, other), ControlClient.open(data_dir) as client:
        info = await client.call("getinfo")
        assert info["node_id"] == node.node_id.hex() and info["addresses"] == [address_of(node)]
        assert info["control"] == f"ipc://{data_dir}/control.sock" and info["apps"] == ["pubsub", "rpc"]
        assert {"rpc.call", "pubsub.publish", "sendcustommsg"} <= set(info["methods"])
        async with await client.subscribe("peer.", f"message.received.{CHAT}") as events:
            peer = await client.call("connect", {"address": address_of(other)})
            assert peer["node_id"] == other.node_id.hex() and peer["transport"] == "tcp" and peer["outbound"]
            connected = await events.__anext__()
            assert connected.topic == "peer.connected" and connected.data["node_id"] == other.node_id.hex()
            assert connected.seq == 1 and connected.data["transport"] == "tcp"
            # a custom message from the peer arrives as an event of its type
            await other.peers[node.node_id].send(CHAT.to_bytes(2, "big") + b"hello")
            received = await events.__anext__()
            assert received.topic == f"message.received.{CHAT}"
            assert (received.data["node_id"], received.data["type"], received.data["payload"]) == (other.node_id.hex(), CHAT, b"hello".hex())
            # and one we send arrives at the peer
            got = []
            other.add_handler(CHAT + 2, lambda p, m: got.append(m.payload) or DONE)
            sent = await client.call("sendcustommsg", {"node_id": other.node_id.hex(), "type": CHAT + 2, "payload": "abcd"})
            assert sent == {"sent": True, "type": CHAT + 2, "bytes": 4}
            await wait_for(lambda: got == [b"\xab\xcd"])
            rtt = (await client.call("ping", {"node_id": other.node_id.hex()}))["rtt_ms"]
            listed = (await client.call("listpeers"))["peers"]
            assert len(listed) == 1 and listed[0]["ping_rtt_ms"] == rtt and listed[0]["apps"] == ["rpc"]
            assert listed[0]["bytes_in"] > 0 and listed[0]["bytes_out"] > 0 and listed[0]["messages_in"] >= 3
            assert "rpc (optional, bit 327)" in listed[0]["feature_names"]
            # an app's call: peer RPC through the control API
            assert await client.call("rpc.call", {"node_id": other.node_id.hex(), "method": "double", "params": {"x": 21}}) == 42
            with pytest.raises(ControlCallError) as info_error:
                await client.call("rpc.call", {"node_id": other.node_id.hex(), "method": "nope"})
            assert info_error.value.code == ErrorCode.CALL_FAILED
            assert info_error.value.data == {"error": "RemoteError", "remote_code": 1}
            assert await client.call("disconnect", {"node_id": other.node_id.hex()}) == {"disconnected": True}
            gone = await events.__anext__()
            assert gone.topic == "peer.disconnected" and gone.data["reason"]
            assert (await client.call("listpeers"))["peers"] == []
            assert events.missed == 0


async def test_sockets_and_files_are_private(data_dir):
    node = controlled(data_dir)
    async with running(node):
        for name in ("control.sock", "events.sock", "control.json", "control.lock"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert json.loads((data_dir / "control.json").read_text())["pid"] == os.getpid()
        # a second node cannot take over the data dir
        second = controlled(data_dir)
        with pytest.RaisesGroup(pytest.RaisesExc(ControlError, match="already running"), flatten_subgroups=True):
            async with running(second):
                pass
        assert (data_dir / "control.sock").exists()
    # stopped: sockets and info file gone, the lock free
    assert not (data_dir / "control.sock").exists() and not (data_dir / "control.json").exists()
    with pytest.raises(NoNodeRunning, match=f"no node is running at {data_dir}"):
        locate(data_dir)


async def test_no_node_running_is_reported_clearly(data_dir):
    with pytest.raises(NoNodeRunning, match="no node is running at"):
        locate(data_dir / "nothing-here")
    # a stale info file from a crashed node does not fool the client
    (data_dir / "control.json").write_text(json.dumps({"control": "ipc:///nonexistent", "events": "ipc:///x"}))
    (data_dir / "control.lock").write_text("")
    with pytest.raises(NoNodeRunning):
        locate(data_dir)


BAD_REQUESTS = [
    (b"not json", ErrorCode.PARSE_ERROR, "not JSON"),
    (b"\xff\xfe{}", ErrorCode.PARSE_ERROR, "not UTF-8"),
    (b"[" * 100_000, ErrorCode.PARSE_ERROR, "not JSON"),
    (b'{"method": "getinfo", "id": NaN}', ErrorCode.PARSE_ERROR, "NaN"),
    (b"[]", ErrorCode.INVALID_REQUEST, "batch"),
    (b"42", ErrorCode.INVALID_REQUEST, "JSON object"),
    (b"{}", ErrorCode.INVALID_REQUEST, "method must be"),
    (b'{"method": 5}', ErrorCode.INVALID_REQUEST, "method must be"),
    (b'{"method": "getinfo", "id": {"a": 1}}', ErrorCode.INVALID_REQUEST, "id must be"),
    (b'{"method": "getinfo", "jsonrpc": "1.0"}', ErrorCode.INVALID_REQUEST, "jsonrpc"),
    (b'{"method": "getinfo", "extra": 1}', ErrorCode.INVALID_REQUEST, "unknown request member"),
    (b'{"method": "getinfo", "params": "x"}', ErrorCode.INVALID_PARAMS, "params must be"),
    (b'{"method": "frobnicate"}', ErrorCode.METHOD_NOT_FOUND, "unknown method 'frobnicate'"),
    (b'{"method": "nosuchapp.call"}', ErrorCode.METHOD_NOT_FOUND, "unknown method"),
    (b'{"method": "connect", "params": {"address": 5}}', ErrorCode.INVALID_PARAMS, "param 'address' must be str"),
    (b'{"method": "connect", "params": {}}', ErrorCode.INVALID_PARAMS, "missing param(s): address"),
    (b'{"method": "getinfo", "params": {"verbose": true}}', ErrorCode.INVALID_PARAMS, "unexpected param 'verbose'"),
    (b'{"method": "ping", "params": {"node_id": "zz"}}', ErrorCode.INVALID_PARAMS, "not hex"),
    (b'{"method": "ping", "params": {"node_id": "02"}}', ErrorCode.INVALID_PARAMS, "33 bytes"),
    (b'{"method": "sendcustommsg", "params": ["02", 100]}', ErrorCode.INVALID_PARAMS, "custom range"),
    (b'{"method": "eventsync", "params": {"token": "a b"}}', ErrorCode.INVALID_PARAMS, "token"),
]


async def test_malformed_requests_get_clear_errors_and_the_node_carries_on(data_dir):
    node = controlled(data_dir)
    async with running(node), ControlClient.open(data_dir) as client:
        for body, code, text in BAD_REQUESTS:
            result, error = await client.send_raw(body, timeout=5)
            assert result is None and error is not None, body
            assert error["code"] == code and text in error["message"], (body, error)
        # the failing call's own error, and the request id echoed back
        result, error = await client.send_raw(b'{"id": "x7", "method": "connect", "params": {"address": "nonsense"}}', reply_id="x7", timeout=5)
        assert error["code"] == ErrorCode.CALL_FAILED and error["data"]["error"] == "AddressError"
        assert (await client.call("getinfo"))["node_id"] == node.node_id.hex()


async def test_oversized_requests(data_dir):
    node = controlled(data_dir)
    async with running(node), ControlClient.open(data_dir) as client:
        big = b'{"method": "getinfo", "params": {"pad": "' + b"x" * MAX_REQUEST_BYTES + b'"}}'
        _, error = await client.send_raw(big, timeout=5)
        assert error["code"] == ErrorCode.REQUEST_TOO_LARGE and "exceeds the limit" in error["message"]
        # beyond the hard cap ZeroMQ drops the connection without reading it all
        with pytest.raises(ControlTimeout):
            await client.send_raw(b"x" * (5 * MAX_REQUEST_BYTES), timeout=0.5)
        async with ControlClient.open(data_dir) as fresh:
            assert (await fresh.call("getinfo"))["node_id"] == node.node_id.hex()


async def test_busy_timeouts_and_failing_app_calls(data_dir):
    node = controlled(data_dir, max_inflight_per_client=2, call_timeout=0.5)
    app = App("slow")
    release = trio.Event()

    @app.control()
    async def wait() -> str:
        await release.wait()
        return "released"

    @app.control()
    async def forever() -> None:
        await trio.sleep_forever()

    @app.control()
    async def fail(reason: str) -> None:
        raise RuntimeError(reason)

    @app.control()
    async def bad_result() -> object:
        return {"x": object()}

    node.mount(app)
    async with running(node), ControlClient.open(data_dir) as client, ControlClient.open(data_dir) as other:
        async with trio.open_nursery() as nursery:
            results = []

            async def call():
                results.append(await client.call("slow.wait", timeout=5))

            nursery.start_soon(call)
            nursery.start_soon(call)
            await wait_for(lambda: node.apps["control"]._inflight_total == 2)
            with pytest.raises(ControlCallError) as busy:
                await client.call("getinfo")
            assert busy.value.code == ErrorCode.BUSY and "limit 2" in busy.value.message
            assert (await other.call("getinfo"))["node_id"] == node.node_id.hex()  # other clients are served
            release.set()
        assert results == ["released", "released"]
        with pytest.raises(ControlCallError) as timeout:
            await client.call("slow.forever")
        assert timeout.value.code == ErrorCode.TIMEOUT
        with pytest.raises(ControlCallError) as failed:
            await client.call("slow.fail", {"reason": "disk on fire"})
        assert failed.value.code == ErrorCode.CALL_FAILED and "disk on fire" in failed.value.message
        assert failed.value.data["error"] == "RuntimeError"
        with pytest.raises(ControlCallError) as not_json:
            await client.call("slow.bad_result")
        assert not_json.value.code == ErrorCode.INTERNAL_ERROR
        help_text = await client.call("help")
        assert help_text["methods"]["slow.fail"]["params"] == {"reason": "str"}
        assert (await client.call("getinfo"))["apps"] == ["pubsub", "rpc", "slow"]


async def test_a_subscriber_that_never_reads_is_dropped_by_its_high_water_mark(data_dir):
    node, sender = controlled(data_dir, events_hwm=50), make_node(listen=False)
    handled = []
    node.add_handler(CHAT, lambda peer, msg: handled.append(1) or DONE)
    ctx = zmq.Context()
    stuck = TrioSocket(ctx.socket(zmq.SUB))
    try:
        async with running(node, sender), ControlClient.open(data_dir) as client:
            stuck.socket.setsockopt(zmq.RCVHWM, 10)
            stuck.socket.setsockopt(zmq.SUBSCRIBE, b"")
            stuck.connect(locate(data_dir).events)
            async with await client.subscribe(f"message.received.{CHAT}") as events:
                await wait_for(lambda: len(node.apps["control"].publisher.subscriptions) >= 2)
                peer = await sender.connect(address_of(node))
                count = 5000
                read = []
                ended = trio.Event()

                async def reader():
                    async for event in events:
                        read.append(event)
                        if event.data["payload"] == "ff":
                            ended.set()
                            return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    for i in range(count):
                        await peer.send(CHAT.to_bytes(2, "big") + i.to_bytes(4, "big") + bytes(200))
                    await wait_for(lambda: len(handled) == count, timeout=20)  # the node handled everything
                    assert (await client.call("getinfo"))["peers"] == 1  # and still answers
                    with trio.fail_after(10):
                        while not ended.is_set():  # an end marker, repeated until the reader has it
                            await peer.send(CHAT.to_bytes(2, "big") + b"\xff")
                            await trio.sleep(0.02)
                # every event the reader did not get is accounted for as missed
                assert events.missed == read[-1].seq - len(read)
            # the stuck one holds at most its queues' worth: the rest were dropped for it alone
            stuck_got = 0
            while True:
                try:
                    stuck.socket.recv_multipart(zmq.NOBLOCK)
                    stuck_got += 1
                except zmq.Again:
                    break
            assert 0 < stuck_got < count
    finally:
        stuck.close()
        ctx.destroy(linger=0)


async def test_handler_failures_appear_on_the_error_topic(data_dir):
    node, sender = controlled(data_dir), make_node(listen=False)
    app = App("fragile")

    @app.on(CHAT)
    async def explode(peer, msg):
        raise ValueError("cannot parse that")

    node.mount(app)
    async with running(node, sender), ControlClient.open(data_dir) as client:
        async with await client.subscribe("error") as events:
            peer = await sender.connect(address_of(node))
            await peer.send(CHAT.to_bytes(2, "big") + b"?")
            event = await events.__anext__()
            assert event.topic == "error" and event.data["source"] == "app.fragile"
            assert "cannot parse that" in event.data["text"] and event.data["node_id"] == sender.node_id.hex()
        assert node.peers[sender.node_id].is_ready


async def test_stop_over_the_control_api(data_dir):
    node = controlled(data_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        async with ControlClient.open(data_dir) as client:
            assert await client.call("stop") == {"stopping": True}
    # node.run returned by itself: the nursery closed without cancelling it
    assert node.stopping and not (data_dir / "control.sock").exists()


async def test_tcp_control_with_curve_lets_only_authorised_clients_in(data_dir):
    node = controlled(data_dir, endpoint="tcp://127.0.0.1:0")
    async with running(node):
        endpoints = locate(data_dir)
        assert endpoints.control.startswith("tcp://127.0.0.1:") and endpoints.curve is not None
        assert stat.S_IMODE((data_dir / KEYS_DIR).stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / KEYS_DIR / "server.key_secret").stat().st_mode) == 0o600
        async with ControlClient.open(data_dir) as client:
            assert (await client.call("getinfo"))["curve"] is True
            async with await client.subscribe("peer.") as events:
                other = make_node()
                async with running(other):
                    await client.call("connect", {"address": address_of(other)})
                    assert (await events.__anext__()).topic == "peer.connected"
        # no keys, or keys the node does not know: no answer at all
        public, secret = zmq.curve_keypair()
        strangers = [
            ControlEndpoints(data_dir, endpoints.control, endpoints.events, None),
            ControlEndpoints(
                data_dir,
                endpoints.control,
                endpoints.events,
                type(endpoints.curve)(public, secret, load_client_keys(data_dir).server_public),
            ),
        ]
        for stranger in strangers:
            async with ControlClient.open(endpoints=stranger) as client:
                with pytest.raises(ControlTimeout):
                    await client.call("getinfo", timeout=0.5)


def test_endpoints_are_checked(data_dir):
    with pytest.raises(ControlError, match="loopback"):
        ControlServer(data_dir, endpoint="tcp://0.0.0.0:9999")
    with pytest.raises(ControlError, match="ipc:// or tcp://"):
        ControlServer(data_dir, endpoint="inproc://x")
    with pytest.raises(ControlError, match="longer than 107"):
        ControlServer(data_dir / ("x" * 120))
    with pytest.raises(ControlError, match="both"):
        ControlServer(data_dir, endpoint="tcp://127.0.0.1:0", events_endpoint=f"ipc://{data_dir}/e.sock")


@settings(deadline=None)  # a busy machine's slow example is no failure
@given(st.binary(max_size=200))
def test_request_parser_takes_any_bytes(data):
    try:
        request = parse_request(data)
    except ControlRequestError as exc:
        assert json.loads(exc.reply())["error"]["code"] == exc.code
        return
    assert isinstance(request.method, str) and request.method


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from(["id", "method", "params", "jsonrpc", "x"]), st.from_type(type(None)) | st.integers() | st.text(max_size=10) | st.lists(st.integers(), max_size=2) | st.floats()))
def test_request_parser_takes_any_object(obj):
    try:
        data = json.dumps(obj).encode()
    except ValueError:
        return
    try:
        request = parse_request(data)
    except ControlRequestError as exc:
        json.loads(exc.reply())
        return
    assert request.method == obj["method"]
