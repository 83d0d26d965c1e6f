"""A client of a running node's control API and event stream (used by the CLI).

::

    async with ControlClient.open(data_dir) as client:
        info = await client.call("getinfo")
        async with await client.subscribe("peer.", "message.received.32769") as events:
            async for event in events:
                print(event.topic, event.data)

The client finds the node through its data dir (``control.json``, the lock
and, for ``tcp://``, the CURVE keys; see :mod:`lnpmsg.rpc.control`) and
never imports the node itself: it can run in any process on the host.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trio
import zmq

from lnpmsg.rpc.control_proto import (
    CONTROL_INFO_FILE,
    CONTROL_SOCKET_FILE,
    EVENTS_SOCKET_FILE,
    encode_request,
    parse_reply,
)
from lnpmsg.rpc.control_files import lock_held
from lnpmsg.rpc.curve import ClientKeys, CurveError, apply_client, load_client_keys
from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket

__all__ = [
    "CALL_TIMEOUT",
    "ControlCallError",
    "ControlClient",
    "ControlClientError",
    "ControlEndpoints",
    "ControlEvent",
    "ControlTimeout",
    "EventStream",
    "NoNodeRunning",
    "NodeStarting",
    "locate",
    "node_running",
]

#: seconds a call waits for its reply by default (a little over the server's own limit)
CALL_TIMEOUT = 65.0
#: seconds a new subscription may take to become live
SYNC_TIMEOUT = 5.0
#: a lifecycle stream reports the node silent after this long without an event or heartbeat
SILENT_AFTER = 15.0
#: events a subscriber buffers before ZeroMQ drops the newest (the gap shows in ``seq``)
SUBSCRIBER_HWM = 10_000


class ControlClientError(Exception):
    """Base of the control client's errors."""


class NoNodeRunning(ControlClientError):
    """No node is running with that data dir."""


class NodeStarting(ControlClientError):
    """A node holds the data dir but its control API is not up yet (it is starting)."""


class ControlTimeout(ControlClientError):
    """The node did not answer in time."""


class ControlCallError(ControlClientError):
    """The node answered with an error (``code``, ``message``, ``data`` as in the reply)."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data or {}


@dataclass(frozen=True, slots=True)
class ControlEndpoints:
    """Where a node's control and event sockets are, and the CURVE keys to use (tcp)."""

    data_dir: Path
    control: str
    events: str
    curve: ClientKeys | None = None


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """One event: its topic, its JSON (``data``, also as ``raw`` bytes), and how many of the topic were missed before it."""

    topic: str
    seq: int
    data: dict[str, Any]
    raw: bytes
    missed: int = 0


def node_running(data_dir: Path) -> bool:
    """Does a node hold the data dir's control lock (it runs, or is starting)?"""
    return lock_held(data_dir)


def locate(data_dir: Path | str) -> ControlEndpoints:
    """The endpoints of the node running with ``data_dir``; :class:`NoNodeRunning` if none."""
    data_dir = Path(data_dir).expanduser().absolute()
    if not node_running(data_dir):
        raise NoNodeRunning(f"no node is running at {data_dir} (start one with: lnpmsg node --data-dir {data_dir})")
    info_path = data_dir / CONTROL_INFO_FILE
    if not info_path.exists():
        raise NodeStarting(f"the node at {data_dir} is starting: its control API is not up yet")
    try:
        info = json.loads(info_path.read_text())
        control, events, curve = str(info["control"]), str(info["events"]), bool(info.get("curve"))
    except (OSError, ValueError, KeyError, TypeError):
        control, events, curve = f"ipc://{data_dir / CONTROL_SOCKET_FILE}", f"ipc://{data_dir / EVENTS_SOCKET_FILE}", False
    keys = None
    if curve:
        try:
            keys = load_client_keys(data_dir)
        except CurveError as exc:
            raise ControlClientError(str(exc)) from None
    return ControlEndpoints(data_dir, control, events, keys)


class ControlClient:
    """A connection to one node's control socket. Open with :meth:`open`."""

    def __init__(self, endpoints: ControlEndpoints, context: zmq.Context, nursery: trio.Nursery) -> None:  # type: ignore[type-arg]
        self.endpoints = endpoints
        self._ctx = context
        self._nursery = nursery
        self._sock = TrioSocket(context.socket(zmq.DEALER))
        self._sock.socket.setsockopt(zmq.LINGER, 0)
        if endpoints.curve is not None:
            apply_client(self._sock.socket, endpoints.curve)
        self._sock.connect(endpoints.control)
        self._waiters: dict[int | str | None, tuple[trio.Event, list[Any]]] = {}
        self._next_id = 0

    @classmethod
    @asynccontextmanager
    async def open(cls, data_dir: Path | str | None = None, *, endpoints: ControlEndpoints | None = None) -> AsyncIterator[ControlClient]:
        """Connect to the node of ``data_dir`` (or at ``endpoints``)."""
        if endpoints is None:
            if data_dir is None:
                raise ValueError("give data_dir or endpoints")
            endpoints = locate(data_dir)
        ctx = zmq.Context()
        try:
            async with trio.open_nursery() as nursery:
                client = cls(endpoints, ctx, nursery)
                nursery.start_soon(client._read_replies)
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
                    client._sock.close()
        except BaseExceptionGroup as group:
            # The caller's own error, raised in the body: give it back unwrapped.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            raise
        finally:
            ctx.destroy(linger=0)

    async def _read_replies(self) -> None:
        while True:
            try:
                parts = await self._sock.recv_multipart()
            except SocketClosedError:
                return
            try:
                request_id, result, error = parse_reply(parts[-1])
            except ValueError:
                continue
            waiter = self._waiters.get(request_id) if isinstance(request_id, int | str | None) else None
            if waiter is not None:
                waiter[1][:] = [result, error]
                waiter[0].set()

    async def call(self, method: str, params: dict[str, Any] | list[Any] | None = None, *, timeout: float = CALL_TIMEOUT) -> Any:
        """Call ``method`` and return its result; :class:`ControlCallError` for an error reply."""
        self._next_id += 1
        request_id = self._next_id
        done = trio.Event()
        slot: list[Any] = []
        self._waiters[request_id] = (done, slot)
        try:
            with trio.move_on_after(timeout):
                await self._sock.send(encode_request(request_id, method, params))
                await done.wait()
        finally:
            del self._waiters[request_id]
        if not done.is_set():
            raise ControlTimeout(f"the node at {self.endpoints.control} did not answer {method} within {timeout:g} s")
        result, error = slot
        if error is not None:
            raise ControlCallError(error["code"], error["message"], error.get("data"))
        return result

    async def send_raw(self, data: bytes, *, reply_id: int | str | None = None, timeout: float = CALL_TIMEOUT) -> tuple[Any, dict[str, Any] | None]:
        """Send ``data`` as a request, byte for byte, and return ``(result, error)`` of the
        reply with id ``reply_id`` (for testing how a node treats bad requests; one at a time)."""
        done = trio.Event()
        slot: list[Any] = []
        self._waiters[reply_id] = (done, slot)
        try:
            with trio.move_on_after(timeout):
                await self._sock.send(data)
                await done.wait()
        finally:
            del self._waiters[reply_id]
        if not done.is_set():
            raise ControlTimeout(f"no reply within {timeout:g} s")
        return slot[0], slot[1]

    async def subscribe(
        self, *topics: str, hwm: int = SUBSCRIBER_HWM, sync_timeout: float = SYNC_TIMEOUT, lifecycle: bool = False
    ) -> EventStream:
        """A stream of the events whose topic starts with any of ``topics`` ("" for all).

        Returns once the subscription is live (nothing published after this is missed
        unless the reader falls ``hwm`` events behind). ``lifecycle=True`` also yields
        ``node.stopping``, ``node.restarted`` (the node came back: ``seq`` starts again)
        and ``node.silent`` (no event, not even a heartbeat, for :data:`SILENT_AFTER` s).
        """
        stream = EventStream(self, topics or ("",), hwm, lifecycle=lifecycle)
        try:
            await stream._sync(sync_timeout)
        except BaseException:
            stream.close()
            raise
        return stream


class EventStream:
    """Events from the node's XPUB socket; iterate with ``async for``."""

    def __init__(self, client: ControlClient, topics: tuple[str, ...], hwm: int, *, lifecycle: bool = False) -> None:
        self.client = client
        self.topics = topics
        self.lifecycle = lifecycle
        #: the node run the events come from (see the publisher's ``epoch``)
        self.epoch: int | None = None
        self._silent = False
        #: events missed so far (gaps in the per-topic ``seq``)
        self.missed = 0
        self._sock = TrioSocket(client._ctx.socket(zmq.SUB))
        self._sock.socket.setsockopt(zmq.LINGER, 0)
        self._sock.socket.setsockopt(zmq.RCVHWM, hwm)
        if client.endpoints.curve is not None:
            apply_client(self._sock.socket, client.endpoints.curve)
        for topic in topics:
            self._sock.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        if lifecycle:
            self._sock.socket.setsockopt(zmq.SUBSCRIBE, b"node.")
        self._sock.connect(client.endpoints.events)
        self._last: dict[str, int] = {}
        self._early: deque[ControlEvent] = deque()

    async def _sync(self, timeout: float) -> None:
        token = secrets.token_hex(8)
        sync_topic = f"control.sync.{token}"
        self._sock.socket.setsockopt(zmq.SUBSCRIBE, sync_topic.encode())
        try:
            with trio.fail_after(timeout):
                while True:
                    await self.client.call("eventsync", {"token": token}, timeout=timeout)
                    with trio.move_on_after(0.1):
                        while True:
                            event = await self._receive()
                            if event.topic == sync_topic:
                                return
                            if any(event.topic.startswith(t) for t in self.topics):
                                self._early.append(event)
        except trio.TooSlowError:
            raise ControlTimeout(f"the event stream at {self.client.endpoints.events} did not come up within {timeout:g} s") from None
        finally:
            if not self._sock.closed:
                self._sock.socket.setsockopt(zmq.UNSUBSCRIBE, sync_topic.encode())

    async def _receive(self) -> ControlEvent:
        while True:
            parts = await self._sock.recv_multipart()
            if len(parts) != 2:
                continue
            try:
                data = json.loads(parts[1])
                topic = parts[0].decode()
                seq = int(data.get("seq", 0))
            except (ValueError, AttributeError, TypeError):
                continue
            epoch = data.get("epoch")
            restarted = self.epoch is not None and epoch != self.epoch
            self.epoch = epoch
            if restarted:
                self._last.clear()  # a new run of the node numbers its events from 1 again
                if self.lifecycle:
                    self._early.append(self._event(topic, seq, data, parts[1]))
                    return ControlEvent("node.restarted", 0, {"epoch": epoch}, b"")
            return self._event(topic, seq, data, parts[1])

    def _event(self, topic: str, seq: int, data: dict[str, Any], raw: bytes) -> ControlEvent:
        last = self._last.get(topic)
        missed = seq - last - 1 if last is not None and seq > last + 1 else 0
        self._last[topic] = seq
        self.missed += missed
        return ControlEvent(topic, seq, data, raw, missed)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ControlEvent:
        while True:
            if self._early:
                event = self._early.popleft()
            else:
                try:
                    if not self.lifecycle:
                        return await self._receive()
                    with trio.move_on_after(SILENT_AFTER) as waited:
                        event = await self._receive()
                except SocketClosedError:
                    raise StopAsyncIteration from None
                if self.lifecycle and waited.cancelled_caught:
                    if self._silent:
                        continue
                    self._silent = True
                    return ControlEvent("node.silent", 0, {"seconds": SILENT_AFTER}, b"")
            self._silent = False
            if event.topic == "node.heartbeat" and not any(event.topic.startswith(t) for t in self.topics):
                continue  # only a sign of life
            return event

    def close(self) -> None:
        self._sock.close()

    async def aclose(self) -> None:
        await self._sock.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
