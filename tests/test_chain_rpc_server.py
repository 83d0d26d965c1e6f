"""The embedded chain served over Bitcoin Core's JSON-RPC: lnpmsg's own client
(BitcoindSource), a client nobody here wrote (python-bitcoinlib's
``bitcoin.rpc.Proxy``), and raw HTTP for the formats, error codes and limits."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import bitcoin  # python-bitcoinlib
import bitcoin.core
import bitcoin.rpc
import pytest
import trio

from lnpmsg.bitcoin.hashes import hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.bitcoind import BitcoindSource
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockConnected
from lnpmsg.chain.regtest import FAUCET_SCRIPT, FAUCET_WITNESS_SCRIPT, RegtestChain
from lnpmsg.chain.remote_regtest import FAUCET_ADDRESS
from lnpmsg.chain.rpc_server import ChainRpcServer

USER, PASSWORD = "alice", "s3cret"


@pytest.fixture
async def served(tmp_path):
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        server = ChainRpcServer(source, "127.0.0.1:0", user=USER, password=PASSWORD)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            yield source, server
            nursery.cancel_scope.cancel()


def auth_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def read_response(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    lines = buffer[:end].decode().split("\r\n")
    del buffer[: end + 4]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise EOFError
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return int(lines[0].split()[1]), headers, body


async def post(server: ChainRpcServer, body: bytes | str, *, auth: str | None = None, method: str = "POST", path: str = "/") -> tuple[int, dict[str, str], bytes]:
    data = body.encode() if isinstance(body, str) else body
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth or auth_header()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data
        await stream.send_all(request)
        return await read_response(stream, bytearray())


async def call(server: ChainRpcServer, method: str, *params: object) -> tuple[int, dict]:
    status, _, body = await post(server, json.dumps({"method": method, "params": list(params), "id": "t"}))
    return status, json.loads(body)


def faucet_spend(outpoint: OutPoint, amount: int, fee: int = 1_000) -> Tx:
    """Spend a faucet output (anyone can: OP_TRUE) back to the faucet."""
    return Tx(2, (TxIn(outpoint, b"", 0xFFFFFFFD, (FAUCET_WITNESS_SCRIPT,)),), (TxOut(amount - fee, FAUCET_SCRIPT),))


# -- lnpmsg's own client ------------------------------------------------------------


async def test_bitcoind_source_against_the_served_chain(served):
    source, server = served
    await source.mine(101)
    paid = await source.faucet(FAUCET_ADDRESS, 50_000)
    async with BitcoindSource(server.url, cookie_file=server.cookie_path, poll_interval=0.05) as remote:
        assert (await remote.tip()) == (await source.tip())
        assert await remote.block_hash(5) == await source.block_hash(5)
        assert await remote.block_hash(10_000) is None
        assert await remote.block(await source.block_hash(7)) == await source.block_at(7)
        with pytest.raises(ChainError) as unknown:
            await remote.block(bytes(32))
        assert unknown.value.code == "not-found"
        assert await remote.estimate_feerate(6) == await source.estimate_feerate(6)
        # a spend broadcast through RPC lands in the owner's mempool; a block confirms it
        spend = faucet_spend(paid, 50_000)
        assert await remote.broadcast(spend.raw) == spend.txid
        assert await remote.broadcast(spend.raw) == spend.txid  # again: already waiting is fine
        assert await remote.find_transaction(spend.txid) == spend.raw == await source.find_transaction(spend.txid)  # waiting
        assert await remote.find_transaction(bytes(32)) is None
        async with remote.subscribe() as events:
            await events.watch_outpoint(OutPoint(spend.txid, 0))
            await source.mine(1)
            seen = [await events.receive(), await events.receive()]
        assert type(seen[0]).__name__ == "OutputConfirmed" and type(seen[-1]) is BlockConnected and seen[-1].height == 102
        info = await remote.get_txout(OutPoint(spend.txid, 0))
        assert info is not None and info.confirmations == 1 and info.txout.amount_sat == 49_000
        assert await remote.find_transaction(spend.txid) == spend.raw  # in a block
        assert await remote.broadcast(spend.raw) == spend.txid  # confirmed: -27, success too
        with pytest.raises(ChainError) as double:
            await remote.broadcast(faucet_spend(paid, 50_000, fee=2_000).raw)
        assert double.value.code == -25 and "missingorspent" in double.value.reason


async def test_user_password_and_wrong_credentials(served):
    _, server = served
    async with BitcoindSource(server.url, user=USER, password=PASSWORD) as remote:
        assert (await remote.tip()).height == 0
    async with BitcoindSource(server.url, user=USER, password="wrong") as remote:
        with pytest.raises(ChainError) as refused:
            await remote.tip()
    assert refused.value.code == "auth"
    assert server.cookie_path.stat().st_mode & 0o777 == 0o600
    user, _, secret = server.cookie_path.read_text().partition(":")
    assert user == "__cookie__" and len(bytes.fromhex(secret)) == 32


# -- a foreign client: python-bitcoinlib -------------------------------------------------


async def test_python_bitcoinlib_proxy(served):
    source, server = served
    bitcoin.SelectParams("regtest")
    proxy = bitcoin.rpc.Proxy(service_url=f"http://{USER}:{PASSWORD}@127.0.0.1:{server.port}")

    async def run(fn, *args, **kwargs):
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    hashes = list(await run(proxy.generatetoaddress, 101, FAUCET_ADDRESS))  # internal byte order
    assert len(hashes) == 101 and hashes[-1] == (await source.tip()).block_hash
    assert await run(proxy.getblockcount) == 101
    assert await run(proxy.getbestblockhash) == hashes[-1]
    assert await run(proxy.getblockhash, 50) == hashes[49]
    block = await run(proxy.getblock, hashes[-1])  # verbosity false: hex parsed into a CBlock
    assert block.GetHash() == hashes[-1] and block.vtx[0].is_coinbase()
    header = await run(proxy.getblockheader, hashes[10], verbose=True)
    assert header["height"] == 11 and header["nextblockhash"] == hashes[11]
    assert header["confirmations"] == 91 and int.from_bytes(header["chainwork"], "big") == 2 * 12
    assert (await run(proxy.getblockheader, hashes[10])).hashPrevBlock == hashes[9]
    with pytest.raises(IndexError):
        await run(proxy.getblockhash, 5_000)  # -8 out of range, as bitcoinlib expects
    with pytest.raises(IndexError):
        await run(proxy.getblock, b"\x01" * 32)  # -5 not found

    paid = await source.faucet(FAUCET_ADDRESS, 70_000)
    spend = faucet_spend(paid, 70_000)
    ctx = bitcoin.core.CTransaction.deserialize(spend.raw)
    assert await run(proxy.sendrawtransaction, ctx) == spend.txid
    assert spend.txid in await run(proxy.getrawmempool)
    decoded = await run(proxy.getrawtransaction, spend.txid, verbose=True)
    assert decoded["tx"].GetTxid() == spend.txid and decoded["tx"].vout[0].nValue == 69_000
    assert decoded["blockhash"] is None and decoded["weight"] == spend.weight
    await run(proxy.generatetoaddress, 1, FAUCET_ADDRESS)
    out = await run(proxy.gettxout, bitcoin.core.COutPoint(spend.txid, 0))
    assert out["txout"].nValue == 69_000 and out["confirmations"] == 1
    assert out["bestblock"] == (await source.tip()).block_hash
    with pytest.raises(IndexError):
        await run(proxy.gettxout, bitcoin.core.COutPoint(paid.txid, paid.vout))  # spent
    confirmed = await run(proxy.getrawtransaction, spend.txid, verbose=True)
    assert confirmed["confirmations"] == 1 and confirmed["blockhash"] == (await source.tip()).block_hash
    fee = await run(proxy._call, "estimatesmartfee", 6)
    assert fee == {"feerate": Decimal("0.00004048"), "blocks": 6}
    with pytest.raises(bitcoin.rpc.JSONRPCError) as unknown:
        await run(proxy._call, "nosuchmethod")
    assert unknown.value.error["code"] == -32601
    with pytest.raises(bitcoin.rpc.InvalidParameterError):
        await run(proxy._call, "getblock", "zz")


# -- formats and the methods' own rules ------------------------------------------------------


async def test_block_and_mempool_calls(served):
    source, server = served
    await source.mine(101)
    status, reply = await call(server, "getblockchaininfo")
    assert status == 200 and reply["error"] is None and reply["id"] == "t"
    info = reply["result"]
    assert info["chain"] == "regtest" and info["blocks"] == 101 and info["bestblockhash"] == (await source.tip()).hash_hex
    tip = info["bestblockhash"]
    _, reply = await call(server, "getblock", tip, 2)
    block = reply["result"]
    assert block["height"] == 101 and block["confirmations"] == 1 and block["nTx"] == 1
    assert block["tx"][0]["vin"][0]["coinbase"] and block["tx"][0]["vout"][0]["value"] == 50.0
    assert block["tx"][0]["vout"][0]["scriptPubKey"]["address"] == FAUCET_ADDRESS
    # an amount is printed with eight decimals, as Core prints it
    _, _, raw_body = await post(server, json.dumps({"method": "estimatesmartfee", "params": [2], "id": 1}))
    assert b'"feerate":0.00004048' in raw_body

    paid = await source.faucet(FAUCET_ADDRESS, 80_000)
    parent = faucet_spend(paid, 80_000)
    child = faucet_spend(OutPoint(parent.txid, 0), 79_000)
    _, reply = await call(server, "testmempoolaccept", [parent.raw.hex(), child.raw.hex()])
    assert [r["allowed"] for r in reply["result"]] == [True, True]
    assert reply["result"][0]["fees"]["base"] == 0.00001
    _, reply = await call(server, "testmempoolaccept", [child.raw.hex()])
    assert reply["result"][0] == {"txid": child.txid_hex, "wtxid": hash_to_hex(child.wtxid), "allowed": False, "reject-reason": "missing-inputs"}
    assert (await call(server, "getrawmempool"))[1]["result"] == [paid.txid_hex]  # a test changes nothing
    for tx in (parent, child):
        assert (await call(server, "sendrawtransaction", tx.raw.hex()))[1]["result"] == tx.txid_hex
    _, reply = await call(server, "getmempoolentry", parent.txid_hex)
    entry = reply["result"]
    assert entry["spentby"] == [child.txid_hex] and entry["descendantcount"] == 2 and entry["ancestorcount"] == 2
    _, reply = await call(server, "gettxspendingprevout", [{"txid": parent.txid_hex, "vout": 0}, {"txid": child.txid_hex, "vout": 0}])
    assert reply["result"] == [
        {"txid": parent.txid_hex, "vout": 0, "spendingtxid": child.txid_hex},
        {"txid": child.txid_hex, "vout": 0},
    ]
    assert set((await call(server, "getrawmempool", True))[1]["result"]) == {paid.txid_hex, parent.txid_hex, child.txid_hex}
    # generateblock with an exact list: a txid from the mempool and raw hex; the rest keeps waiting
    _, reply = await call(server, "generateblock", FAUCET_ADDRESS, [paid.txid_hex, parent.raw.hex()])
    mined = reply["result"]["hash"]
    _, reply = await call(server, "getblock", mined)
    assert reply["result"]["tx"][1:] == [paid.txid_hex, parent.txid_hex]
    assert (await call(server, "getrawmempool"))[1]["result"] == [child.txid_hex]
    _, reply = await call(server, "generateblock", FAUCET_ADDRESS, [faucet_spend(paid, 80_000, 5).raw.hex()])
    assert reply["error"]["code"] == -25 and reply["error"]["message"].startswith("TestBlockValidity failed: ")
    _, reply = await call(server, "getindexinfo")
    assert reply["result"] == {"txindex": {"synced": True, "best_block_height": 102}}

    # invalidateblock: the tip goes back, its transactions wait again, a restart keeps it out
    _, reply = await call(server, "invalidateblock", mined)
    assert reply == {"result": None, "error": None, "id": "t"}
    assert (await call(server, "getblockcount"))[1]["result"] == 101
    assert set((await call(server, "getrawmempool"))[1]["result"]) == {paid.txid_hex, parent.txid_hex, child.txid_hex}
    _, reply = await call(server, "getblockheader", mined)
    assert reply["result"]["confirmations"] == -1
    assert (await call(server, "submitblock", (await source.block(bytes.fromhex(mined)[::-1])).hex()))[1]["result"] == "duplicate"


async def test_testmempoolaccept_is_a_dry_run(served):
    """testmempoolaccept (and sendrawtransaction's fee check) change nothing:
    not the mempool, not mempool.dat (whose appends are fsynced), and no
    mempool listener hears of them."""
    source, server = served
    await source.mine(101)
    paid = await source.faucet(FAUCET_ADDRESS, 80_000)
    core = source.core
    mempool_file = core.datadir / "mempool.dat"
    before = (mempool_file.read_bytes(), mempool_file.stat().st_mtime_ns, mempool_file.stat().st_ino)
    heard: list[None] = []
    core.add_mempool_listener(lambda: heard.append(None))
    parent = faucet_spend(paid, 80_000)
    child = faucet_spend(OutPoint(parent.txid, 0), 79_000)
    rival = faucet_spend(paid, 80_000, 2_000)  # spends what parent spends
    greedy = faucet_spend(OutPoint(child.txid, 0), 78_000, 40_000)
    _, reply = await call(server, "testmempoolaccept", [parent.raw.hex(), child.raw.hex(), rival.raw.hex(), greedy.raw.hex()], 0.001)
    results = reply["result"]
    assert [r["allowed"] for r in results] == [True, True, False, False]
    assert results[2]["reject-reason"] == "txn-mempool-conflict"  # the package's own parent spends it
    assert results[3]["reject-reason"] == "max-fee-exceeded"
    _, reply = await call(server, "sendrawtransaction", rival.raw.hex(), 0.00001)
    assert reply["error"]["code"] == -25 and "Fee exceeds maximum" in reply["error"]["message"]
    assert (mempool_file.read_bytes(), mempool_file.stat().st_mtime_ns, mempool_file.stat().st_ino) == before
    assert heard == [] and core.mempool_txids() == [paid.txid]
    # the same transactions are then accepted for real, in the same order
    for tx in (parent, child):
        assert (await call(server, "sendrawtransaction", tx.raw.hex()))[1]["result"] == tx.txid_hex
    assert core.mempool_txids() == [paid.txid, parent.txid, child.txid] and len(heard) == 2
    assert len(mempool_file.read_bytes()) > len(before[0])


def test_invalidated_blocks_stay_out_after_a_restart(tmp_path):
    with RegtestChain(tmp_path / "c") as chain:
        hashes = chain.mine(5)
        chain.invalidate_block(hashes[2])
        assert chain.height == 2
        again = chain.mine(1)
    with RegtestChain(tmp_path / "c") as chain:
        assert chain.height == 3 and chain.tip().block_hash == again[0]
        assert not chain.submit_block(chain.block(hashes[2])).accepted


async def test_params_by_name_batches_and_jsonrpc_2(served):
    source, server = served
    await source.mine(3)
    expected = hash_to_hex(await source.block_hash(2))
    status, _, body = await post(server, json.dumps({"method": "getblockhash", "params": {"height": 2}, "id": 1}))
    assert status == 200 and json.loads(body)["result"] == expected
    batch = [
        {"jsonrpc": "2.0", "method": "getblockcount", "id": 1},
        {"jsonrpc": "2.0", "method": "nosuch", "id": 2},
        {"jsonrpc": "2.0", "method": "getblockcount"},  # a notification: no reply
        {"method": "getblockhash", "params": [2], "id": 3},
    ]
    status, _, body = await post(server, json.dumps(batch))
    assert status == 200
    assert json.loads(body) == [
        {"jsonrpc": "2.0", "result": 3, "id": 1},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 2},
        {"result": expected, "error": None, "id": 3},
    ]
    status, _, body = await post(server, json.dumps({"jsonrpc": "2.0", "method": "getblockhash", "params": [99], "id": 5}))
    assert status == 200 and json.loads(body)["error"] == {"code": -8, "message": "Block height out of range"}
    status, _, body = await post(server, json.dumps({"jsonrpc": "2.0", "method": "ping"}))
    assert status == 204 and body == b""


@pytest.mark.parametrize(
    ("request_body", "status", "code"),
    [
        (b"{not json", 500, -32700),
        (b"[]", 400, -32600),
        (b'"text"', 400, -32600),
        (b'{"method": 5, "id": 1}', 400, -32600),
        (b'{"method": "nosuch", "id": 1}', 404, -32601),
        (b'{"method": "getblockhash", "params": ["x"], "id": 1}', 500, -3),
        (b'{"method": "getblockhash", "params": [-1], "id": 1}', 500, -8),
        (b'{"method": "getblockhash", "id": 1}', 500, -1),
        (b'{"method": "getblockcount", "params": [1], "id": 1}', 500, -1),
        (b'{"method": "getblock", "params": {"hash": "00"}, "id": 1}', 500, -8),
        (b'{"method": "getblock", "params": ["' + b"0" * 64 + b'"], "id": 1}', 500, -5),
        (b'{"method": "getrawtransaction", "params": ["' + b"0" * 64 + b'"], "id": 1}', 500, -5),
        (b'{"method": "sendrawtransaction", "params": ["00zz"], "id": 1}', 500, -22),
        (b'{"method": "submitblock", "params": ["0011"], "id": 1}', 500, -22),
        (b'{"method": "generatetoaddress", "params": [1, "bc1qnotregtest"], "id": 1}', 500, -5),
        (b'{"method": "estimatesmartfee", "params": [0], "id": 1}', 500, -8),
        (b'{"method": "getmempoolentry", "params": ["' + b"0" * 64 + b'"], "id": 1}', 500, -5),
        (b'{"method": "gettxspendingprevout", "params": [[]], "id": 1}', 500, -8),
        (b'{"method": "getblock", "params": ["' + b"0" * 64 + b'", 7], "id": 1}', 500, -8),
    ],
)
async def test_bad_requests_get_cores_errors(served, request_body, status, code):
    source, server = served
    before = await source.tip()
    got_status, _, body = await post(server, request_body)
    reply = json.loads(body)
    assert (got_status, reply["error"]["code"]) == (status, code), reply
    assert reply["result"] is None and isinstance(reply["error"]["message"], str)
    assert await source.tip() == before


async def test_http_level_refusals(served):
    source, server = served
    status, headers, body = await post(server, "{}", auth=auth_header(USER, "nope"))
    assert status == 401 and headers["www-authenticate"] == 'Basic realm="jsonrpc"' and body == b""
    status, _, _ = await post(server, "{}", auth="Bearer abc")
    assert status == 401
    status, _, _ = await post(server, "", method="GET")
    assert status == 405
    status, _, _ = await post(server, '{"method": "getblockcount"}', path="/rest/chaininfo.json")
    assert status == 404
    server.max_body = 1000
    status, headers, body = await post(server, "x" * 2000)
    assert status == 413 and headers["connection"] == "close" and b"exceeds the limit" in body
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"POST / HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        status, _, _ = await read_response(stream, bytearray())
    assert status == 431
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"NONSENSE\r\n\r\n")
        status, _, _ = await read_response(stream, bytearray())
    assert status == 400
    # after all that, the chain answers as before
    assert (await call(server, "getblockcount"))[1]["result"] == 0


async def test_keep_alive_and_a_client_that_never_reads(served):
    source, server = served
    await source.mine(20)
    server.send_timeout = 0.5
    # keep-alive: several requests on one connection
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        buffer = bytearray()
        for height in (1, 2, 3):
            body = json.dumps({"method": "getblockhash", "params": [height], "id": height}).encode()
            await stream.send_all(
                f"POST / HTTP/1.1\r\nAuthorization: {auth_header()}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            status, headers, reply = await read_response(stream, buffer)
            assert status == 200 and headers["connection"] == "keep-alive" and json.loads(reply)["id"] == height
    # a client that sends many requests for big replies and never reads them
    block_hash = hash_to_hex(await source.block_hash(20))
    body = json.dumps([{"method": "getblock", "params": [block_hash, 2], "id": i} for i in range(200)]).encode()
    request = f"POST / HTTP/1.1\r\nAuthorization: {auth_header()}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    stalled = await trio.open_tcp_stream("127.0.0.1", server.port)
    stalled.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
    async with stalled:
        with trio.move_on_after(5):
            try:
                for _ in range(50):
                    await stalled.send_all(request)
            except trio.BrokenResourceError:
                pass  # the server gave up on us: what it should do
        # meanwhile others are served, and the stalled connection is dropped
        assert (await call(server, "getblockcount"))[1]["result"] == 20
        with trio.fail_after(30):
            while server.connections > 0:
                await trio.sleep(0.05)


async def test_warming_up_until_the_chain_opens(tmp_path):
    from lnpmsg.wallet.app import ChainApp

    app = ChainApp(tmp_path / "wallet", chain_dir=tmp_path / "chain")  # never run: its chain stays closed
    server = ChainRpcServer(app, "127.0.0.1:0", user=USER, password=PASSWORD)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.run)
        with trio.fail_after(10):
            while server.port == 0:
                await trio.sleep(0.01)
        status, reply = await call(server, "getblockcount")
        assert status == 500 and reply["error"]["code"] == -28
        status, reply = await call(server, "nosuch")
        assert status == 404
        nursery.cancel_scope.cancel()


async def test_chain_app_on_bitcoind_rpc_forwards_faucet_and_mine(served, tmp_path):
    from lnpmsg.wallet.app import ChainApp

    source, server = served
    async with BitcoindSource(server.url, cookie_file=server.cookie_path, poll_interval=0.05) as remote:
        app = ChainApp(tmp_path / "wallet", source=remote)
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            paid = await app.faucet(200_000)
            assert paid["confirmed"] and paid["height"] == (await source.tip()).height
            funds = await app.listfunds()
            assert [(o["txid"], o["amount_sat"], o["confirmations"]) for o in funds["outputs"]] == [(paid["txid"], 200_000, 1)]
            mined = await app.mine(2)
            assert mined["height"] == paid["height"] + 2 and mined["tip"] == (await source.tip()).hash_hex
            # a payee of our choosing, and the coins reach the owner's chain
            address = (await app.newaddr())["address"]
            mined = await app.mine(1, address)
            block = await source.block(bytes.fromhex(mined["tip"])[::-1])
            assert address in (await call(server, "getblock", mined["tip"], 2))[1]["result"]["tx"][0]["vout"][0]["scriptPubKey"]["address"]
            assert len(block) > 80
            info = await app.getchaininfo()
            assert info["backend"] == "BitcoindSource" and info["height"] == mined["height"]
            nursery.cancel_scope.cancel()


async def test_a_reorg_by_invalidateblock_reaches_a_subscriber_over_rpc(served):
    source, server = served
    hashes = await source.mine(5)
    async with BitcoindSource(server.url, cookie_file=server.cookie_path, poll_interval=0.02) as remote:
        async with remote.subscribe(start_height=1) as events:
            with trio.fail_after(30):
                assert [(await events.receive()).block_hash for _ in range(5)] == hashes
            _, reply = await call(server, "invalidateblock", hash_to_hex(hashes[3]))
            assert reply["error"] is None
            new = await source.mine(3)
            got = []
            with trio.fail_after(30):
                while len(got) < 5:
                    got.append(await events.receive())
    assert [(type(e).__name__, e.height) for e in got] == [
        ("BlockDisconnected", 5),
        ("BlockDisconnected", 4),
        ("BlockConnected", 4),
        ("BlockConnected", 5),
        ("BlockConnected", 6),
    ]
    assert [e.block_hash for e in got[2:]] == new


async def test_slow_idle_and_surplus_clients_are_let_go(served):
    _, server = served
    server.request_timeout = 0.3
    server.idle_timeout = 0.3
    server.max_connections = 2
    # half a request, then nothing: 408 and closed
    slow = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with slow:
        await slow.send_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n")
        with trio.fail_after(10):
            status, headers, _ = await read_response(slow, bytearray())
        assert status == 408 and headers["connection"] == "close"
    # idle after a request: closed without a word
    idle = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with idle:
        body = b'{"method": "getblockcount", "id": 1}'
        await idle.send_all(f"POST / HTTP/1.1\r\nAuthorization: {auth_header()}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert (await read_response(idle, bytearray()))[0] == 200
        with trio.fail_after(10):
            assert await idle.receive_some(100) == b""
    # more clients than allowed: the surplus one gets 503, the others are served
    with trio.fail_after(10):
        while server.connections:
            await trio.sleep(0.01)
    server.idle_timeout = 30
    held = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(2)]
    with trio.fail_after(10):
        while server.connections < 2:
            await trio.sleep(0.01)
    extra = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with extra:
        status, _, body = await read_response(extra, bytearray())
    assert status == 503 and b"too many" in body
    for stream in held:
        await stream.aclose()
    with trio.fail_after(10):
        while server.connections:
            await trio.sleep(0.01)
    assert (await call(server, "getblockcount"))[1]["result"] == 0


async def test_named_params_with_cores_older_names(served):
    source, server = served
    block_hash = hash_to_hex((await source.mine(1))[0])
    for name in ("verbosity", "verbose"):
        status, _, body = await post(server, json.dumps({"method": "getblock", "params": {"blockhash": block_hash, name: 0}, "id": 1}))
        assert status == 200 and json.loads(body)["result"] == (await source.block_at(1)).hex()
    status, _, body = await post(server, json.dumps({"method": "getblock", "params": {"blockhash": block_hash, "nosuch": 1}, "id": 1}))
    assert status == 500 and json.loads(body)["error"] == {"code": -8, "message": "Unknown named parameter nosuch"}
