"""BitcoindSource against FakeBitcoind, a STAND-IN for Bitcoin Core's JSON-RPC
server (no bitcoind exists on these machines).

The stand-in replays the documented shape of Bitcoin Core's replies
(src/httprpc.cpp, src/rpc/protocol.h, the RPC help texts): JSON-RPC 1.0
objects ``{"result", "error", "id"}``, HTTP 200 on success, HTTP 500 with an
error object ``{"code", "message"}`` on failure (404 for an unknown method),
HTTP 401 with an empty body for bad credentials. Its data is real: blocks,
transactions and UTXOs come from an embedded regtest chain validated by the
kernel. A stand-in SOCKS5 proxy checks the Tor path.
"""

from __future__ import annotations

import base64
import json
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.bitcoind import BitcoindSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import OutputConfirmed
from lnpmsg.chain.regtest import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT, RegtestChain

COOKIE_USER = "__cookie__"

# Bitcoin Core RPC error codes (src/rpc/protocol.h)
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27


class RpcFailure(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message


class FakeBitcoind:
    """A stand-in bitcoind: HTTP/1.1 JSON-RPC on 127.0.0.1 over a real regtest chain."""

    def __init__(
        self, chain: RegtestChain, password: str, *, chain_name: str = "regtest"
    ) -> None:
        self.chain = chain
        self.password = password
        self.chain_name = chain_name
        self.estimate: dict[str, Any] = {
            "errors": ["Insufficient data or no feerate found"],
            "blocks": 0,
        }
        self.mempoolminfee = Decimal("0.00001000")
        self.close_after_reply = False
        self.silent = False
        self.calls: list[str] = []
        self.connections = 0
        self.port = 0

    async def serve(
        self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (
                        line.partition(":") for line in head.decode().split("\r\n")[1:]
                    )
                }
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                body, buffer = buffer[:length], buffer[length:]
                if self.silent:
                    await trio.sleep_forever()
                status, payload = self._answer(headers, body)
                extra = (
                    'WWW-Authenticate: Basic realm="jsonrpc"\r\n'
                    if status == 401
                    else ""
                )
                await stream.send_all(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                if self.close_after_reply:
                    return  # drops a kept-alive connection without saying so

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        expected = (
            "Basic "
            + base64.b64encode(f"{COOKIE_USER}:{self.password}".encode()).decode()
        )
        if headers.get("authorization") != expected:
            return 401, b""
        request = json.loads(body)
        self.calls.append(request["method"])
        try:
            result = getattr(self, "rpc_" + request["method"])(*request["params"])
        except AttributeError:
            return 404, self._error(request, RPC_METHOD_NOT_FOUND, "Method not found")
        except RpcFailure as exc:
            return 500, self._error(request, exc.code, exc.message)
        reply = {"result": result, "error": None, "id": request["id"]}
        return 200, json.dumps(reply, default=str).encode()

    @staticmethod
    def _error(request: dict[str, Any], code: int, message: str) -> bytes:
        return json.dumps(
            {
                "result": None,
                "error": {"code": code, "message": message},
                "id": request["id"],
            }
        ).encode()

    # -- the RPCs, shaped as Bitcoin Core answers them ---------------------------

    def rpc_getblockchaininfo(self) -> dict[str, Any]:
        tip = self.chain.tip()
        return {
            "chain": self.chain_name,
            "blocks": tip.height,
            "headers": tip.height,
            "bestblockhash": tip.hash_hex,
        }

    def rpc_getbestblockhash(self) -> str:
        return self.chain.tip().hash_hex

    def rpc_getblockhash(self, height: int) -> str:
        block_hash = self.chain.block_hash(height)
        if block_hash is None:
            raise RpcFailure(RPC_INVALID_PARAMETER, "Block height out of range")
        return hash_to_hex(block_hash)

    def rpc_getblock(self, hash_hex: str, verbosity: int = 1) -> str:
        assert verbosity == 0
        try:
            return self.chain.block(hash_from_hex(hash_hex)).hex()
        except ChainError:
            raise RpcFailure(RPC_INVALID_ADDRESS_OR_KEY, "Block not found") from None

    def rpc_gettxout(
        self, txid: str, n: int, include_mempool: bool = True
    ) -> dict[str, Any] | None:
        info = self.chain.get_txout(OutPoint(hash_from_hex(txid), n))
        if info is None:
            return None
        return {
            "bestblock": self.chain.tip().hash_hex,
            "confirmations": info.confirmations,
            "value": Decimal(info.txout.amount_sat) / 100_000_000,
            "scriptPubKey": {
                "hex": info.txout.script_pubkey.hex(),
                "type": "witness_v0_scripthash",
            },
            "coinbase": info.is_coinbase,
        }

    def rpc_sendrawtransaction(self, hexstring: str, maxfeerate: Any = None) -> str:
        try:
            tx = Tx.parse(bytes.fromhex(hexstring))
        except (ChainError, ValueError):
            raise RpcFailure(
                RPC_DESERIALIZATION_ERROR,
                "TX decode failed. Make sure the tx has at least one input.",
            ) from None
        if (
            self.chain.find_transaction(tx.txid) is not None
            and tx.txid not in self.chain.mempool_txids()
        ):
            raise RpcFailure(
                RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction outputs already in utxo set"
            )
        try:
            return hash_to_hex(self.chain.broadcast(tx))
        except ChainError as exc:
            # Core: missing inputs are RPC_VERIFY_ERROR, policy/consensus rejects RPC_VERIFY_REJECTED
            code = (
                RPC_VERIFY_ERROR
                if exc.code == "bad-txns-inputs-missingorspent"
                else RPC_VERIFY_REJECTED
            )
            raise RpcFailure(code, str(exc.code)) from None

    def rpc_estimatesmartfee(
        self, conf_target: int, mode: str = "economical"
    ) -> dict[str, Any]:
        return self.estimate

    def rpc_getmempoolinfo(self) -> dict[str, Any]:
        return {
            "loaded": True,
            "size": len(self.chain.mempool_txids()),
            "mempoolminfee": self.mempoolminfee,
            "minrelaytxfee": Decimal("0.00001"),
        }


class FakeSocksProxy:
    """A stand-in SOCKS5 proxy (as Tor's SocksPort): resolves names itself from a table."""

    def __init__(self, names: dict[str, int]) -> None:
        self.names = names
        self.requested: list[tuple[str, int]] = []

    async def serve(
        self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, client: trio.SocketStream) -> None:
        async with client:
            greeting = await client.receive_some(3)
            assert greeting == b"\x05\x01\x00"
            await client.send_all(b"\x05\x00")
            head = await client.receive_some(5)
            assert (
                head[:4] == b"\x05\x01\x00\x03"
            )  # CONNECT by name: the proxy resolves it
            rest = await client.receive_some(head[4] + 2)
            name, port = rest[:-2].decode(), struct.unpack(">H", rest[-2:])[0]
            self.requested.append((name, port))
            if name not in self.names:
                await client.send_all(
                    b"\x05\x04\x00\x01" + b"\x00" * 6
                )  # host unreachable
                return
            await client.send_all(
                b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack(">H", port)
            )
            upstream = await trio.open_tcp_stream("127.0.0.1", self.names[name])
            async with upstream, trio.open_nursery() as nursery:

                async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
                    while chunk := await src.receive_some(65536):
                        await dst.send_all(chunk)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, upstream)
                nursery.start_soon(pump, upstream, client)


@pytest.fixture
def chain(tmp_path: Path):
    with RegtestChain(tmp_path / "chain") as c:
        c.mine(101)
        yield c


async def start(
    nursery: trio.Nursery, chain: RegtestChain, tmp_path: Path, **kw: Any
) -> tuple[FakeBitcoind, Path]:
    fake = FakeBitcoind(chain, "s3cret", **kw)
    await nursery.start(fake.serve)
    cookie = tmp_path / ".cookie"
    cookie.write_text(f"{COOKIE_USER}:s3cret")
    return fake, cookie


async def test_chain_queries_match_the_chain(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    async with BitcoindSource(
        f"http://127.0.0.1:{fake.port}", cookie_file=cookie
    ) as src:
        tip = await src.tip()
        assert tip == chain.tip()
        assert await src.block_hash(50) == chain.block_hash(50)
        assert await src.block_hash(1_000) is None
        assert await src.block(tip.block_hash) == chain.block(tip.block_hash)
        with pytest.raises(ChainError) as info:
            await src.block(b"\x11" * 32)
        assert info.value.code == "not-found"
        outpoint = chain.faucet(FAUCET_SCRIPT, 60_000)
        assert await src.get_txout(outpoint) is None
        chain.mine(1)
        txout = await src.get_txout(outpoint)
        assert (
            txout is not None
            and txout.txout == TxOut(60_000, FAUCET_SCRIPT)
            and txout.confirmations == 1
        )
        with pytest.raises(ChainError) as info:
            await src.call("nosuchmethod")
        assert info.value.code == RPC_METHOD_NOT_FOUND
    # one kept-alive connection served every call
    assert len(fake.calls) > 5 and fake.connections == 1


async def test_broadcast_maps_core_errors(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    outpoint = chain.faucet(FAUCET_SCRIPT, 80_000)
    chain.mine(1)
    spend = Tx(
        2,
        (TxIn(outpoint, b"", 0xFFFFFFFE, (FAUCET_WITNESS_SCRIPT,)),),  # not replaceable (BIP 125)
        (TxOut(79_000, FAUCET_SCRIPT),),
    )
    conflict = Tx(2, spend.inputs, (TxOut(78_000, FAUCET_SCRIPT),))
    ghost = Tx(
        2,
        (TxIn(OutPoint(b"\x55" * 32, 0), b"", 0xFFFFFFFD, (FAUCET_WITNESS_SCRIPT,)),),
        (TxOut(1_000, FAUCET_SCRIPT),),
    )
    async with BitcoindSource(f"127.0.0.1:{fake.port}", cookie_file=cookie) as src:
        assert await src.broadcast(spend.raw) == spend.txid
        with pytest.raises(ChainError) as info:
            await src.broadcast(conflict.raw)
        assert (
            info.value.code == RPC_VERIFY_REJECTED
            and "txn-mempool-conflict" in info.value.reason
        )
        with pytest.raises(ChainError) as info:
            await src.broadcast(ghost.raw)
        assert (
            info.value.code == RPC_VERIFY_ERROR
            and "bad-txns-inputs-missingorspent" in info.value.reason
        )
        chain.mine(1)
        # already confirmed (-27) counts as success: rebroadcasting is how a node makes sure
        assert await src.broadcast(spend.raw) == spend.txid
        with pytest.raises(ChainError) as info:
            await src.call("sendrawtransaction", "00")
        assert info.value.code == RPC_DESERIALIZATION_ERROR
        with pytest.raises(ChainError) as info:
            await src.broadcast(b"\x01\x02")
        assert info.value.code == "malformed"


async def test_fee_estimates(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    async with BitcoindSource(
        f"http://127.0.0.1:{fake.port}", cookie_file=cookie
    ) as src:
        with pytest.raises(ChainError) as info:
            await src.estimate_feerate(3)
        assert (
            info.value.code == "no-estimate"
            and "Insufficient data" in info.value.reason
        )
        fake.estimate = {"feerate": Decimal("0.00012000"), "blocks": 3}
        assert await src.estimate_feerate(3) == 3_000  # 12 sat/vB
        fake.mempoolminfee = Decimal("0.00020000")
        assert (
            await src.estimate_feerate(3) == 5_000
        )  # raised to what the node's mempool accepts
        with pytest.raises(ChainError):
            await src.estimate_feerate(0)
    async with BitcoindSource(
        f"http://127.0.0.1:{fake.port}",
        cookie_file=cookie,
        fallback_feerate_per_kw=2_000,
    ) as src:
        fake.estimate = {
            "errors": ["Insufficient data or no feerate found"],
            "blocks": 0,
        }
        fake.mempoolminfee = Decimal("0.00001000")
        assert await src.estimate_feerate(6) == 2_000


async def test_auth_user_password_and_cookie_rotation(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    url = f"http://127.0.0.1:{fake.port}"
    async with BitcoindSource(url, user=COOKIE_USER, password="s3cret") as src:
        assert (await src.tip()).height == 101
    async with BitcoindSource(url, user=COOKIE_USER, password="wrong") as src:
        with pytest.raises(ChainError) as info:
            await src.tip()
        assert info.value.code == "auth"
    async with BitcoindSource(url, cookie_file=cookie) as src:
        assert (await src.tip()).height == 101
        # bitcoind restarted: new cookie; the source reads it again after the 401
        fake.password = "rotated"
        cookie.write_text(f"{COOKIE_USER}:rotated")
        assert (await src.tip()).height == 101
    with pytest.raises(ChainError):
        BitcoindSource(url)  # no credentials at all
    with pytest.raises(ChainError):
        BitcoindSource("https://127.0.0.1:1", user="a", password="b")


async def test_reconnects_after_server_drops_kept_alive_connection(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    fake.close_after_reply = True
    async with BitcoindSource(
        f"http://127.0.0.1:{fake.port}", cookie_file=cookie
    ) as src:
        for _ in range(3):
            assert (await src.tip()).height == 101
    assert fake.connections >= 3


async def test_timeout_and_refused_connection(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    fake.silent = True
    async with BitcoindSource(
        f"http://127.0.0.1:{fake.port}", cookie_file=cookie, timeout=0.3
    ) as src:
        with pytest.raises(ChainError) as info:
            await src.call("getbestblockhash")
        assert info.value.code == "timeout"
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    async with BitcoindSource(f"http://127.0.0.1:{port}", cookie_file=cookie) as src:
        with pytest.raises(ChainError) as info:
            await src.tip()
        assert info.value.code == "connection"


async def test_wrong_chain_refused(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path, chain_name="main")
    async with BitcoindSource(
        f"http://127.0.0.1:{fake.port}", cookie_file=cookie
    ) as src:
        with pytest.raises(ChainError) as info:
            await src.tip()
        assert info.value.code == "network"


async def test_through_socks5_proxy_with_unresolved_name(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    onion = "bitcoindxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.onion"
    proxy = FakeSocksProxy({onion: fake.port})
    proxy_port = await nursery.start(proxy.serve)
    async with BitcoindSource(
        f"http://{onion}:18443", cookie_file=cookie, proxy=f"127.0.0.1:{proxy_port}"
    ) as src:
        assert await src.tip() == chain.tip()
    assert proxy.requested[0] == (onion, 18443)
    async with BitcoindSource(
        "http://unknown.onion:18443",
        cookie_file=cookie,
        proxy=f"127.0.0.1:{proxy_port}",
    ) as src:
        with pytest.raises(ChainError) as info:
            await src.tip()
        assert info.value.code == "proxy" and "host unreachable" in info.value.reason


async def test_subscription_polls_new_blocks(
    chain: RegtestChain, tmp_path: Path, nursery: trio.Nursery
) -> None:
    fake, cookie = await start(nursery, chain, tmp_path)
    async with (
        BitcoindSource(
            f"http://127.0.0.1:{fake.port}", cookie_file=cookie, poll_interval=0.02
        ) as src,
        src.subscribe() as sub,
    ):
        outpoint = chain.faucet(FAUCET_SCRIPT, 33_000)
        await sub.watch_outpoint(outpoint)
        chain.mine(1)
        with trio.fail_after(10):
            while not isinstance(event := await sub.receive(), OutputConfirmed):
                pass
        assert event.outpoint == outpoint and event.height == chain.height


async def _serve_once(
    reply: bytes, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A hostile stand-in: answers every connection with ``reply`` and hangs up."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(reply)

    await trio.serve_listeners(answer, listeners)


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnotjs",
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n[1, 2]",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b'HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\n{"result": {"chain": "main"}}',
        b'HTTP/1.1 500 X\r\nContent-Length: 17\r\n\r\n{"error": "text"}',
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{",
        b"",
    ],
)
async def test_hostile_replies_are_chain_errors(
    reply: bytes, tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = await nursery.start(_serve_once, reply)
    async with BitcoindSource(
        f"http://127.0.0.1:{port}", user="u", password="p", timeout=5
    ) as src:
        with pytest.raises(ChainError):
            await src.tip()
