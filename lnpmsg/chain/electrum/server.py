"""The Electrum server's trio shell: it keeps the index on the chain and
carries bytes between TCP clients and their ``ElectrumSession``.

One task follows the chain: the regtest core wakes it after every block,
reorg and broadcast (listeners called from the kernel's thread, passed to
trio with ``run_sync_soon``); it reads blocks and the mempool in worker
threads (the kernel blocks), applies them to the index on the trio loop,
and tells every session what changed. Per client, a reader feeds the
session and performs its chain calls one at a time (a client that floods
requests waits for its own answers), and a writer sends what the session
queued; a client whose replies stay unsent for ``send_timeout`` seconds, or
pile up past the session's limit, is dropped.

The index is rebuilt from the chain on start (``ElectrumServer.run`` waits
for it before it listens), not persisted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from lnpmsg import __version__
from lnpmsg.bitcoin.block import Block
from lnpmsg.chain.electrum.index import ElectrumIndex, IndexMismatch
from lnpmsg.chain.electrum.session import ChainCall, ElectrumSession, ServerInfo, SessionLimits
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockRef
from lnpmsg.chain.regtest import RegtestChain

__all__ = ["DEFAULT_MAX_CLIENTS", "ElectrumServer", "ServerLimits"]

log = logging.getLogger(__name__)

#: clients served at once; more are refused (each holds an index view and buffers)
DEFAULT_MAX_CLIENTS = 100
#: blocks read from the chain per worker-thread call while catching up
_BLOCKS_PER_READ = 500
#: bytes read from a client at a time
_RECEIVE_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds of the whole server (per client: ``SessionLimits``)."""

    max_clients: int = DEFAULT_MAX_CLIENTS
    #: seconds queued replies may stay unsent before the client is dropped
    send_timeout: float = 60.0
    #: seconds a client may send nothing before it is dropped (Electrum pings every 300 s)
    idle_timeout: float = 600.0
    session: SessionLimits = SessionLimits()


class _Wakeup:
    """A level-triggered wake-up for one waiting task."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class _Client:
    def __init__(self, session: ElectrumSession) -> None:
        self.session = session
        self.to_writer = _Wakeup()
        self.sent = _Wakeup()


class ElectrumServer:
    """An Electrum protocol 1.4 server over an embedded regtest chain.

    ``await nursery.start(server.run, "127.0.0.1", 0)`` builds the index,
    listens and returns; ``server.port`` is the bound port.
    """

    def __init__(self, source: EmbeddedChainSource, *, limits: ServerLimits | None = None,
                 banner: str | None = None) -> None:
        self.source = source
        self.core: RegtestChain = source.core
        self.limits = limits or ServerLimits()
        self.index = ElectrumIndex()
        self.info = ServerInfo(f"lnpmsg {__version__}", b"")
        if banner is not None:
            self.info.banner = banner
        self.port: int | None = None
        self._clients: set[_Client] = set()
        self._chain_moved = _Wakeup()
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    # ------------------------------------------------------------ running

    async def run(self, host: str = "127.0.0.1", port: int = 0, *,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Index the chain, listen on ``host:port``, serve until cancelled; ``started(port)``."""
        self._token = trio.lowlevel.current_trio_token()
        self.core.add_listener(self._on_tip)
        self.core.add_mempool_listener(self._on_mempool)
        try:
            await self.sync()
            self.info.genesis_hash = self.index.hashes[0]
            listeners = await trio.open_tcp_listeners(port, host=host)
            if port == 0:
                # a name with several addresses would get one free port each: serve one
                for extra in listeners[1:]:
                    await extra.aclose()
                listeners = listeners[:1]
            self.port = listeners[0].socket.getsockname()[1]
            log.info("electrum: protocol 1.4 on %s:%d, index at height %d", host, self.port, self.index.height)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow)
                await nursery.start(trio.serve_listeners, self._serve_client, listeners)
                task_status.started(self.port)
        finally:
            self.core.remove_listener(self._on_tip)
            self.core.remove_mempool_listener(self._on_mempool)

    def _on_tip(self, _tip: BlockRef) -> None:
        self._wake_from_thread()

    def _on_mempool(self) -> None:
        self._wake_from_thread()

    def _wake_from_thread(self) -> None:
        assert self._token is not None
        try:
            self._token.run_sync_soon(self._chain_moved.set)
        except trio.RunFinishedError:
            pass

    async def _follow(self) -> None:
        while True:
            await self._chain_moved.wait()
            try:
                await self.sync()
            except ChainError as exc:
                log.warning("electrum: cannot follow the chain: %s", exc)
                await trio.sleep(1)
                self._chain_moved.set()

    # ------------------------------------------------------------ the index

    async def sync(self) -> None:
        """Bring the index to the chain's tip and mempool; notify the clients."""
        while True:
            changed = await self._catch_up()
            tip, entries = await trio.to_thread.run_sync(self.core.mempool_snapshot)
            if tip.block_hash == self.index.tip_hash:
                changed |= self.index.set_mempool(entries)
                self.info.feerate_per_kw = self.core.feerate_per_kw
                self._notify(changed)
                return
            self._notify(changed)  # the chain moved meanwhile: again

    async def _catch_up(self) -> set[bytes]:
        changed: set[bytes] = set()
        fork = await trio.to_thread.run_sync(self._fork_height, list(self.index.hashes[-2000:]), self.index.height)
        while self.index.height > fork:
            changed |= self.index.disconnect()
        while True:
            blocks = await trio.to_thread.run_sync(self._read_blocks, self.index.height + 1)
            if not blocks:
                return changed
            try:
                for block in blocks:
                    changed |= self.index.connect(block)
            except IndexMismatch:
                return changed  # a reorg under the read: the caller comes round again

    def _fork_height(self, recent: list[bytes], height: int) -> int:
        """(worker thread) The highest height where the chain still has our block."""
        first = height - len(recent) + 1
        for offset in range(len(recent) - 1, -1, -1):
            if self.core.block_hash(first + offset) == recent[offset]:
                return first + offset
        if first > 0:
            raise ChainError(f"the chain reorganised deeper than the index follows ({len(recent)} blocks)",
                             code="reorg-too-deep")
        return -1

    def _read_blocks(self, start: int) -> list[Block]:
        """(worker thread) Up to ``_BLOCKS_PER_READ`` blocks of the active chain from ``start``."""
        blocks = []
        for height in range(start, start + _BLOCKS_PER_READ):
            block_hash = self.core.block_hash(height)
            if block_hash is None:
                break
            blocks.append(Block.parse(self.core.block(block_hash)))
        return blocks

    def _notify(self, changed: set[bytes]) -> None:
        for client in list(self._clients):
            client.session.notify_tip()
            if changed:
                client.session.notify_changed(changed)
            client.to_writer.set()

    # ------------------------------------------------------------ clients

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        async with stream:
            if len(self._clients) >= self.limits.max_clients:
                log.info("electrum: refusing a client: %d clients already", len(self._clients))
                return
            client = _Client(ElectrumSession(self.index, self.info, self.limits.session))
            self._clients.add(client)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, stream, client, nursery.cancel_scope)
                    await self._read(stream, client)
                    client.to_writer.set()
            finally:
                self._clients.discard(client)
                if client.session.closed:
                    log.info("electrum: client %s dropped: %s", client.session.client_name, client.session.closed)

    async def _read(self, stream: trio.SocketStream, client: _Client) -> None:
        session = client.session
        while session.closed is None:
            while session.paused and session.closed is None:
                await client.sent.wait()  # back-pressure: send what is queued first
            if session.has_buffered_requests:
                data = b""  # answer what the last read brought before reading more
            else:
                data = b""
                with trio.move_on_after(self.limits.idle_timeout) as idle:
                    try:
                        data = await stream.receive_some(_RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                if idle.cancelled_caught:
                    session.close(f"the client sent nothing for {self.limits.idle_timeout:g} s")
                    return
                if not data:
                    session.close("the client hung up")
                    return
            calls = session.receive_data(data)
            client.to_writer.set()
            for call in calls:
                await self._perform(call, session)
                client.to_writer.set()

    async def _perform(self, call: ChainCall, session: ElectrumSession) -> None:
        try:
            if call.kind == "get_transaction":
                found = await trio.to_thread.run_sync(self.core.find_transaction, call.arg)
                session.complete(call, None if found is None else found[0].raw)
            else:
                session.complete(call, await self.source.broadcast(call.arg))
        except ChainError as exc:
            session.fail(call, exc.reason)

    async def _write(self, stream: trio.SocketStream, client: _Client, scope: trio.CancelScope) -> None:
        session = client.session
        while True:
            data = session.data_to_send()
            if data:
                try:
                    with trio.move_on_after(self.limits.send_timeout) as timer:
                        await stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    session.close("the client hung up")
                    break
                client.sent.set()
                if timer.cancelled_caught:
                    session.close(f"the client read nothing for {self.limits.send_timeout:g} s")
                    break
                continue
            if session.closed is not None:
                break
            await client.to_writer.wait()
        scope.cancel()

