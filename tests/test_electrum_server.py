"""The Electrum server over TCP on a real embedded regtest chain: pipelined
requests, notifications on new tips, mempool changes and reorgs, and the
clients it must drop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.wallet.app import ChainApp
from lnpmsg.chain.electrum.app import ElectrumApp
from lnpmsg.chain.electrum.index import script_hash, scripthash_to_hex
from lnpmsg.chain.electrum.server import ElectrumServer, ServerLimits
from lnpmsg.chain.electrum.session import SessionLimits
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.regtest import FAUCET_SCRIPT
from lnpmsg.cli import main
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig

WAIT = 30
PAYEE = bytes([0x00, 0x14]) + bytes([7]) * 20


class Client:
    """A hand-driven Electrum client: lines of JSON out, lines of JSON in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.next_id = 0

    async def send(self, method: str, *params: Any) -> int:
        self.next_id += 1
        await self.stream.send_all(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": list(params)}).encode() + b"\n")
        return self.next_id

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(WAIT):
            while b"\n" not in self.buffer:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    raise EOFError
                self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    async def call(self, method: str, *params: Any) -> Any:
        request_id = await self.send(method, *params)
        while True:
            message = await self.receive()
            if message.get("id") == request_id:
                assert "error" not in message, message
                return message["result"]

    async def notification(self, method: str) -> list[Any]:
        while True:
            message = await self.receive()
            if message.get("method") == method:
                return message["params"]  # type: ignore[no-any-return]


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[EmbeddedChainSource]:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        yield source


async def start(nursery: trio.Nursery, source: EmbeddedChainSource, limits: ServerLimits | None = None) -> ElectrumServer:
    server = ElectrumServer(source, limits=limits)
    await nursery.start(server.run)
    return server


_OPEN: list[trio.SocketStream] = []


@pytest.fixture
async def clients() -> AsyncIterator[None]:
    """Closes the clients :func:`connect` opened. Named by every test that connects:
    pytest-trio runs only the async fixtures a test names, never an autouse one."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


async def connect(server: ElectrumServer) -> Client:
    assert server.port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    _OPEN.append(stream)
    return Client(stream)


async def test_pipelined_requests_are_all_answered(chain: EmbeddedChainSource, clients: None) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, chain)
        client = await connect(server)
        ids = [await client.send("blockchain.block.header", h % 102) for h in range(300)]
        answers = {}
        while len(answers) < len(ids):
            message = await client.receive()
            answers[message["id"]] = message["result"]
        tip = await chain.tip()
        assert answers[ids[101]] == (await trio.to_thread.run_sync(chain.core.block, tip.block_hash))[:80].hex()
        nursery.cancel_scope.cancel()


async def test_notifications_follow_mempool_blocks_and_reorgs(chain: EmbeddedChainSource, clients: None) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, chain)
        client = await connect(server)
        assert (await client.call("server.version", "test", "1.4"))[1] == "1.4"
        sh = scripthash_to_hex(script_hash(PAYEE))
        assert await client.call("blockchain.scripthash.subscribe", sh) is None
        first_tip = await client.call("blockchain.headers.subscribe")
        assert first_tip["height"] == 101
        # a payment waits: the status changes to that of one waiting transaction
        outpoint = await chain.faucet(PAYEE, 50_000)
        [_, status] = await client.notification("blockchain.scripthash.subscribe")
        history = await client.call("blockchain.scripthash.get_history", sh)
        assert [(h["tx_hash"], h["height"]) for h in history] == [(outpoint.txid_hex, 0)]
        assert history[0]["fee"] > 0
        # it confirms
        [mined] = await chain.mine(1)
        [header] = await client.notification("blockchain.headers.subscribe")
        assert header["height"] == 102
        [_, confirmed_status] = await client.notification("blockchain.scripthash.subscribe")
        assert confirmed_status != status
        assert await client.call("blockchain.scripthash.get_history", sh) == [{"height": 102, "tx_hash": outpoint.txid_hex}]
        proof = await client.call("blockchain.transaction.get_merkle", outpoint.txid_hex, 102)
        assert proof["pos"] == 1
        # a longer competing branch from 101 reorgs block 102 away: the payment waits again
        fork = await trio.to_thread.run_sync(lambda: chain.core.mine(2, parent=chain.core.block_hash(101)))
        header = (await client.notification("blockchain.headers.subscribe"))[0]
        while header["height"] != 103:
            header = (await client.notification("blockchain.headers.subscribe"))[0]
        assert header["hex"] == (await trio.to_thread.run_sync(chain.core.block, fork[-1]))[:80].hex()
        assert await client.call("blockchain.block.header", 102) != (await trio.to_thread.run_sync(chain.core.block, mined))[:80].hex()
        history = await client.call("blockchain.scripthash.get_history", sh)
        assert [(h["tx_hash"], h["height"]) for h in history] == [(outpoint.txid_hex, 0)]
        # and confirms again on the new branch
        await chain.mine(1)
        while (await client.call("blockchain.scripthash.get_history", sh)) != [{"height": 104, "tx_hash": outpoint.txid_hex}]:
            await client.notification("blockchain.scripthash.subscribe")
        nursery.cancel_scope.cancel()


async def test_transaction_get_and_broadcast_errors(chain: EmbeddedChainSource, clients: None) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, chain)
        client = await connect(server)
        outpoint = await chain.faucet(PAYEE, 10_000)
        raw = await client.call("blockchain.transaction.get", outpoint.txid_hex)
        assert await client.call("blockchain.transaction.broadcast", raw) == outpoint.txid_hex  # known: fine
        await client.send("blockchain.transaction.broadcast", "00")
        error = (await client.receive())["error"]
        assert error["code"] == 1 and "rejected" in error["message"]
        await client.send("blockchain.transaction.get", hash_to_hex(bytes(32)))
        assert "no such" in (await client.receive())["error"]["message"]
        assert (await chain.tip()).height == 101  # the chain is unharmed
        nursery.cancel_scope.cancel()


async def test_clients_that_misbehave_are_dropped_and_others_go_on(chain: EmbeddedChainSource, clients: None) -> None:
    limits = ServerLimits(send_timeout=1.0, session=SessionLimits(max_line=10_000, max_outbox=2_000_000, pause_outbox=100_000))
    async with trio.open_nursery() as nursery:
        server = await start(nursery, chain, limits)
        # a line past the limit: an error, then the server hangs up
        long_line = await connect(server)
        await long_line.stream.send_all(b'{"id": 1, "method": "server.ping", "params": ["' + b"x" * 20_000)
        assert "longer than" in (await long_line.receive())["error"]["message"]
        with pytest.raises((EOFError, trio.BrokenResourceError)):
            await long_line.receive()
        # a client that asks for megabytes and never reads: dropped, its buffers freed
        greedy = await connect(server)
        request = json.dumps({"id": 1, "method": "blockchain.block.headers", "params": [0, 2016]}).encode() + b"\n"
        with trio.move_on_after(WAIT):
            while server.clients:
                with trio.move_on_after(0.05):
                    await greedy.stream.send_all(request)
                await trio.sleep(0.01)
        assert server.clients == 0
        # the server still answers others
        polite = await connect(server)
        assert await polite.call("server.ping") is None
        assert (await polite.call("blockchain.headers.subscribe"))["height"] == 101
        assert FAUCET_SCRIPT  # the chain is still the faucet's
        nursery.cancel_scope.cancel()


async def test_the_node_app_serves_the_chain_apps_chain(tmp_path: Path, clients: None) -> None:
    node = Node(NodeKey.generate(), NodeConfig(listen=[]))
    chain_app = node.mount(ChainApp(tmp_path / "wallet", chain_dir=tmp_path / "chain"))
    electrum = node.mount(ElectrumApp(chain_app, "127.0.0.1:0"))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await chain_app.mine(3)
        client = await connect(electrum.server)  # type: ignore[arg-type]
        tip = await client.call("blockchain.headers.subscribe")
        # the index follows the chain in worker threads: a tip it reaches after
        # the subscription arrives as a notification
        while tip["height"] < 3:
            note = await client.receive()
            if note.get("method") == "blockchain.headers.subscribe":
                tip = note["params"][0]
        assert tip["height"] == 3
        info = await electrum.info()
        assert info["listen"] == f"127.0.0.1:{electrum.server.port}" and info["clients"] == 1  # type: ignore[union-attr]
        node.stop()


async def test_electrum_listen_needs_the_embedded_chain(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["node", "--data-dir", str(tmp_path), "--electrum-listen", "127.0.0.1:0", "--no-gossip"]
    assert await trio.to_thread.run_sync(main, argv) == 2
    assert "--electrum-listen needs --chain regtest" in capfd.readouterr().err
    argv = ["node", "--data-dir", str(tmp_path), "--chain", "regtest", "--electrum-listen", "127.0.0.1:port", "--no-gossip"]
    assert await trio.to_thread.run_sync(main, argv) == 2
    assert "bad --electrum-listen" in capfd.readouterr().err


async def test_an_idle_client_is_dropped(chain: EmbeddedChainSource, clients: None) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, chain, ServerLimits(idle_timeout=0.5))
        idle = await connect(server)
        assert await idle.call("server.ping") is None
        with pytest.raises((EOFError, trio.BrokenResourceError)):
            await idle.receive()  # the server hangs up after 0.5 s of silence
        assert server.clients == 0
        nursery.cancel_scope.cancel()
