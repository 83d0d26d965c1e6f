"""The program's side of an attached app: the app contract from another process.

::

    async with AttachedAppClient.attach(data_dir, "echo", types=[32902], feature_bits=[343]) as app:
        await app.serve("shout")                       # a peer RPC method
        async for event in app.events():
            if event.kind == "peer_ready":
                await app.subscribe(event.data["node_id"], "news")
            elif event.kind == "message":            # a message of an owned type
                await app.send(event.data["node_id"], event.data["type"], bytes.fromhex(event.data["payload"]))
            elif event.kind == "rpc_request":
                await app.reply(event.data["request"], result=event.data["params"])

It uses only the control client (:mod:`lnpmsg.rpc.control_client`): no node
code runs in this process. The events and calls are those of
:mod:`lnpmsg.rpc.attached`; the lease is kept by a task of the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from lnpmsg.rpc.control_client import ControlClient, ControlClientError, EventStream

__all__ = ["AppEvent", "AttachedAppClient"]

#: seconds the node waits for a sign of life before detaching the app
LEASE = 30.0


@dataclass(frozen=True, slots=True)
class AppEvent:
    """One callback of the contract: ``kind`` (``peer_ready``, ``message``, ...), its JSON
    ``data``, and how many events of that kind were lost before it (``missed``)."""

    kind: str
    data: dict[str, Any]
    missed: int = 0


class AttachedAppClient:
    """An app running in this process, attached to a node running in another one."""

    def __init__(self, client: ControlClient, name: str, stream: EventStream, info: dict[str, Any]) -> None:
        self.client = client
        self.name = name
        self.info = info
        self._stream = stream
        self._prefix = f"app.{name}."

    @classmethod
    @asynccontextmanager
    async def attach(
        cls,
        data_dir: Path | str,
        name: str,
        *,
        types: list[int] | tuple[int, ...] = (),
        feature_bits: list[int] | tuple[int, ...] = (),
        protocol: bool = False,
        lease: float = LEASE,
    ) -> AsyncIterator[AttachedAppClient]:
        """Attach to the node with ``data_dir`` for the block; detach on the way out."""
        async with ControlClient.open(data_dir) as client:
            # Subscribed before attaching: peer_ready for the peers already there is not missed.
            async with await client.subscribe(f"app.{name}.") as stream:
                params = {"name": name, "types": list(types), "feature_bits": list(feature_bits), "protocol": protocol, "lease": lease}
                info = await client.call("app.attach", params)
                app = cls(client, name, stream, info)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(app._keep_lease, lease)
                    try:
                        yield app
                    finally:
                        nursery.cancel_scope.cancel()
                        with trio.move_on_after(5) as scope:
                            scope.shield = True
                            try:
                                await client.call("app.detach", {"name": name})
                            except ControlClientError:
                                pass  # the node is gone or already let us go

    async def _keep_lease(self, lease: float) -> None:
        while True:
            await trio.sleep(lease / 3)
            await self.client.call("app.keepalive", {"name": self.name})

    async def events(self) -> AsyncIterator[AppEvent]:
        """The app's callbacks, in order (see :mod:`lnpmsg.rpc.attached` for each kind)."""
        async for event in self._stream:
            yield AppEvent(event.topic[len(self._prefix) :], event.data, event.missed)

    async def send(self, node_id: str, type: int, payload: bytes) -> None:
        """Send a message of a type the app owns to a connected peer."""
        await self.client.call("app.send", {"name": self.name, "node_id": node_id, "type": type, "payload": payload.hex()})

    async def serve(self, method: str) -> None:
        """Serve a peer RPC method: its requests arrive as ``rpc_request`` events."""
        await self.client.call("app.serve", {"name": self.name, "method": method})

    async def reply(self, request: int, result: Any = None, *, error: str | None = None, code: int = 0) -> bool:
        """Answer a ``rpc_request`` with a result, or with an error (``code`` >= 100 is the app's own)."""
        params = {"name": self.name, "request": request, "result": result, "error": error, "code": code}
        return bool((await self.client.call("app.reply", params))["answered"])

    async def subscribe(self, node_id: str, topic: str) -> None:
        """Subscribe to a peer's pub/sub topic: ``publication`` events, then ``subscription_ended``."""
        await self.client.call("app.subscribe", {"name": self.name, "node_id": node_id, "topic": topic})

    async def unsubscribe(self, node_id: str, topic: str) -> None:
        await self.client.call("app.unsubscribe", {"name": self.name, "node_id": node_id, "topic": topic})

    async def claim_channel(self, channel_id: str) -> None:
        """Route that channel's BOLT-1 errors and warnings to this app."""
        await self.client.call("app.claim_channel", {"name": self.name, "channel_id": channel_id})

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Any other control call (``rpc.call``, ``pubsub.publish``, ``listpeers``, ...)."""
        return await self.client.call(method, params)
