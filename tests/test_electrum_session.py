"""One Electrum client session (sans-IO): requests in, responses and
notifications out; header chunks, proofs, bad input, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_electrum_index import B, SH_B, SH_C, Chain, fold, spend

from lnpmsg.bitcoin.block import BlockHeader, merkle_root
from lnpmsg.bitcoin.hashes import hash_from_hex, sha256d
from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.chain.electrum.index import ElectrumIndex
from lnpmsg.chain.electrum.session import (
    BAD_REQUEST,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ElectrumSession,
    ServerInfo,
    SessionLimits,
)


def build_index(blocks: int) -> tuple[ElectrumIndex, Chain]:
    index, chain = ElectrumIndex(), Chain()
    index.connect(chain.blocks[0])
    for _ in range(blocks):
        block = chain.next(b"\x00\x14" + bytes(20))
        chain.blocks.append(block)
        index.connect(block)
    return index, chain


@pytest.fixture(scope="module")
def long_chain() -> tuple[ElectrumIndex, Chain]:
    return build_index(2100)


def new_session(index: ElectrumIndex, **limits: Any) -> ElectrumSession:
    return ElectrumSession(index, ServerInfo("lnpmsg test", index.hashes[0]), SessionLimits(**limits))


def request(session: ElectrumSession, method: str, *params: Any, request_id: Any = 1) -> Any:
    """Send one request; return its response (a dict)."""
    calls = session.receive_data(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}).encode() + b"\n")
    assert calls == []
    lines = session.data_to_send().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def result(session: ElectrumSession, method: str, *params: Any) -> Any:
    response = request(session, method, *params)
    assert "error" not in response, response
    return response["result"]


def error_code(session: ElectrumSession, method: str, *params: Any) -> int:
    response = request(session, method, *params)
    assert "result" not in response, response
    return int(response["error"]["code"])


def test_version_negotiation() -> None:
    index, _ = build_index(1)
    assert result(new_session(index), "server.version", "electrum 4.3.4", "1.4") == ["lnpmsg test", "1.4"]
    assert result(new_session(index), "server.version", "x", ["1.2", "1.4.2"]) == ["lnpmsg test", "1.4"]
    for unsupported in ("1.5", ["1.1", "1.3"]):
        session = new_session(index)
        assert error_code(session, "server.version", "x", unsupported) == BAD_REQUEST
        assert session.closed == "unsupported protocol version"


def test_header_chunks_are_bounded_by_2016_and_the_tip(long_chain) -> None:
    index, chain = long_chain
    session = new_session(index)
    chunk = result(session, "blockchain.block.headers", 0, 5000)
    assert (chunk["count"], chunk["max"]) == (2016, 2016)
    raw = bytes.fromhex(chunk["hex"])
    assert raw == b"".join(b.header.serialize() for b in chain.blocks[:2016])
    tail = result(session, "blockchain.block.headers", 2016, 2016)
    assert tail["count"] == 2100 - 2016 + 1
    assert result(session, "blockchain.block.headers", 5000, 10) == {"count": 0, "hex": "", "max": 2016}
    assert result(session, "blockchain.block.header", 7) == chain.blocks[7].header.serialize().hex()


def test_header_checkpoint_proofs_fold_to_the_root(long_chain) -> None:
    index, chain = long_chain
    session = new_session(index)
    cp = 1000
    expected_root = merkle_root([b.hash for b in chain.blocks[: cp + 1]])
    for height in (0, 1, 517, cp):
        proof = result(session, "blockchain.block.header", height, cp)
        header = bytes.fromhex(proof["header"])
        branch = [hash_from_hex(h) for h in proof["branch"]]
        assert hash_from_hex(proof["root"]) == expected_root
        assert fold(sha256d(header), branch, height) == expected_root
    chunk = result(session, "blockchain.block.headers", 990, 11, cp)
    assert fold(chain.blocks[1000].hash, [hash_from_hex(h) for h in chunk["branch"]], 1000) == expected_root
    assert error_code(session, "blockchain.block.header", 1001, cp) == BAD_REQUEST
    assert error_code(session, "blockchain.block.header", 10, 5000) == INVALID_PARAMS


def test_transaction_merkle_and_id_from_pos() -> None:
    index, chain = build_index(1)
    txs = [spend(OutPoint(chain.blocks[1].txs[0].txid, 0), (bytes([0x51]), 1000 + n)) for n in range(4)]
    block = chain.next(bytes([0x51]), txs)
    index.connect(block)
    session = new_session(index)
    header_root = BlockHeader.parse(index.header_at(2)).merkle_root
    for pos, tx in enumerate(block.txs):
        proof = result(session, "blockchain.transaction.get_merkle", tx.txid_hex, 2)
        assert (proof["block_height"], proof["pos"]) == (2, pos)
        assert fold(tx.txid, [hash_from_hex(h) for h in proof["merkle"]], pos) == header_root
        assert result(session, "blockchain.transaction.id_from_pos", 2, pos) == tx.txid_hex
        with_proof = result(session, "blockchain.transaction.id_from_pos", 2, pos, True)
        assert with_proof["merkle"] == proof["merkle"]
    assert error_code(session, "blockchain.transaction.get_merkle", txs[0].txid_hex, 1) == BAD_REQUEST
    assert error_code(session, "blockchain.transaction.id_from_pos", 2, 5) == BAD_REQUEST


def test_scripthash_calls_and_status_notifications() -> None:
    index, chain = build_index(1)
    coinbase = chain.blocks[1].txs[0]
    session = new_session(index)
    sh_b_hex = SH_B[::-1].hex()
    assert result(session, "blockchain.scripthash.subscribe", sh_b_hex) is None
    assert result(session, "blockchain.headers.subscribe") == {"hex": index.headers[-1].hex(), "height": 1}
    tx = spend(OutPoint(coinbase.txid, 0), (B, 5000))
    changed = index.set_mempool([(tx, 100)])
    session.notify_changed(changed)
    session.notify_changed(changed)  # no change since: nothing more
    session.notify_tip()  # the tip did not move: nothing
    lines = session.data_to_send().splitlines()
    assert len(lines) == 1
    note = json.loads(lines[0])
    assert note["method"] == "blockchain.scripthash.subscribe"
    assert note["params"] == [sh_b_hex, index.status(SH_B)]
    assert result(session, "blockchain.scripthash.get_history", sh_b_hex) == [{"height": 0, "tx_hash": tx.txid_hex, "fee": 100}]
    assert result(session, "blockchain.scripthash.get_mempool", sh_b_hex) == [{"height": 0, "tx_hash": tx.txid_hex, "fee": 100}]
    assert result(session, "blockchain.scripthash.get_balance", sh_b_hex) == {"confirmed": 0, "unconfirmed": 5000}
    assert result(session, "blockchain.scripthash.listunspent", sh_b_hex) == [
        {"tx_hash": tx.txid_hex, "tx_pos": 0, "height": 0, "value": 5000}]
    block = chain.next(bytes([0x51]), [tx])
    index.connect(block)
    session.notify_tip()
    session.notify_changed(index.set_mempool([]))
    notes = [json.loads(line) for line in session.data_to_send().splitlines()]
    assert [n["method"] for n in notes] == ["blockchain.headers.subscribe", "blockchain.scripthash.subscribe"]
    assert notes[0]["params"] == [{"hex": block.header.serialize().hex(), "height": 2}]
    assert result(session, "blockchain.scripthash.unsubscribe", sh_b_hex) is True
    assert result(session, "blockchain.scripthash.unsubscribe", sh_b_hex) is False


def test_chain_calls_are_handed_to_the_shell() -> None:
    index, _ = build_index(1)
    session = new_session(index)
    txid = "ab" * 32
    [call] = session.receive_data(json.dumps({"id": 7, "method": "blockchain.transaction.get", "params": [txid]}).encode() + b"\n")
    assert (call.kind, call.arg) == ("get_transaction", hash_from_hex(txid))
    assert session.data_to_send() == b""
    session.complete(call, b"\x01\x02")
    assert json.loads(session.data_to_send()) == {"jsonrpc": "2.0", "id": 7, "result": "0102"}
    [call] = session.receive_data(b'{"id": 8, "method": "blockchain.transaction.broadcast", "params": ["00ff"]}\n')
    assert (call.kind, call.arg) == ("broadcast", b"\x00\xff")
    session.fail(call, "bad-txns-inputs-missingorspent")
    response = json.loads(session.data_to_send())
    assert response["error"]["code"] == BAD_REQUEST
    assert "bad-txns-inputs-missingorspent" in response["error"]["message"]
    # verbose transactions are refused, plainly
    assert error_code(session, "blockchain.transaction.get", txid, True) == BAD_REQUEST


def test_bad_input_gets_errors_and_the_session_goes_on() -> None:
    index, _ = build_index(1)
    session = new_session(index)
    session.receive_data(b"{not json\n")
    assert json.loads(session.data_to_send())["error"]["code"] == PARSE_ERROR
    session.receive_data(b"\xff\xfe\n")
    assert json.loads(session.data_to_send())["error"]["code"] == PARSE_ERROR
    session.receive_data(b'"just a string"\n')
    assert json.loads(session.data_to_send())["error"]["code"] == INVALID_REQUEST
    assert error_code(session, "no.such.method") == METHOD_NOT_FOUND
    assert error_code(session, "blockchain.block.header") == INVALID_PARAMS  # missing
    assert error_code(session, "blockchain.block.header", "7") == INVALID_PARAMS  # wrong type
    assert error_code(session, "blockchain.block.header", 1, 0, 0) == INVALID_PARAMS  # too many
    assert error_code(session, "blockchain.block.header", 99) == INVALID_PARAMS  # above the tip
    assert error_code(session, "blockchain.scripthash.get_history", "zz") == INVALID_PARAMS
    assert error_code(session, "blockchain.transaction.broadcast", "not hex") == INVALID_PARAMS
    assert error_code(session, "blockchain.estimatefee", 0) == INVALID_PARAMS
    session.receive_data(b'{"id": 1, "method": "blockchain.block.header", "params": {"height": 1, "bogus": 2}}\n')
    assert json.loads(session.data_to_send())["error"]["code"] == INVALID_PARAMS
    session.receive_data(b'{"id": 1, "method": "blockchain.block.header", "params": {"height": 1}}\n')
    assert json.loads(session.data_to_send())["result"] == index.header_at(1).hex()
    # a batch gets one array back, in order, errors included
    session.receive_data(b'[{"id": 1, "method": "server.ping"}, {"id": 2, "method": "nope"}]\n')
    batch = json.loads(session.data_to_send())
    assert [r["id"] for r in batch] == [1, 2] and batch[0]["result"] is None and "error" in batch[1]
    assert session.closed is None
    assert result(session, "server.ping") is None


def test_an_oversized_line_closes_the_session() -> None:
    index, _ = build_index(1)
    session = new_session(index, max_line=100)
    session.receive_data(b'{"id": 1, "method": "server.ping", "params": ["' + b"a" * 200)
    response = json.loads(session.data_to_send())
    assert response["error"]["code"] == INVALID_REQUEST and "longer than 100" in response["error"]["message"]
    assert session.closed == "request line too long"
    assert session.receive_data(b'{"id": 2, "method": "server.ping"}\n') == []
    assert session.data_to_send() == b""


def test_a_client_that_never_reads_is_dropped(long_chain) -> None:
    index, _ = long_chain
    session = new_session(index, max_outbox=1_000_000, pause_outbox=10_000_000)
    line = json.dumps({"id": 1, "method": "blockchain.block.headers", "params": [0, 2016]}).encode() + b"\n"
    for _ in range(3):  # 322 kB each; nobody drains the outbox
        session.receive_data(line)
    assert session.closed is None
    session.receive_data(line)
    assert session.closed == "the client does not read its replies"
    size = session.outbox_size
    session.notify_changed({SH_C})
    session.receive_data(line)
    assert session.outbox_size == size  # nothing more is queued for it


def test_subscriptions_per_client_are_bounded() -> None:
    index, _ = build_index(1)
    session = new_session(index, max_subscriptions=2)
    for n in range(2):
        assert result(session, "blockchain.scripthash.subscribe", f"{n:064x}") is None
    assert error_code(session, "blockchain.scripthash.subscribe", f"{9:064x}") == BAD_REQUEST
    assert result(session, "blockchain.scripthash.subscribe", f"{1:064x}") is None  # again: fine


def test_a_pipelining_client_is_paced_not_dropped(long_chain) -> None:
    index, _ = long_chain
    session = new_session(index, pause_outbox=500_000, max_outbox=1_000_000)
    line = json.dumps({"id": 1, "method": "blockchain.block.headers", "params": [0, 2016]}).encode() + b"\n"
    session.receive_data(line * 10)  # 3.2 MB of answers asked for at once
    assert session.paused and session.has_buffered_requests and session.closed is None
    answered = session.data_to_send().count(b"\n")
    assert answered == 2  # 322 kB each: answering paused past 500 kB
    while session.has_buffered_requests:
        session.receive_data(b"")
        answered += session.data_to_send().count(b"\n")
    assert answered == 10 and session.closed is None


def test_a_failing_handler_costs_one_request_not_the_session() -> None:
    index, _ = build_index(1)
    session = new_session(index)

    def broken() -> None:
        raise KeyError("boom")

    session._methods["server.ping"] = (broken, (), 0)
    response = request(session, "server.ping")
    assert response["error"]["code"] == -32603 and "KeyError" in response["error"]["message"]
    assert session.closed is None and result(session, "server.banner")


def test_server_methods_and_fees() -> None:
    index, _ = build_index(1)
    session = new_session(index)
    assert result(session, "server.banner") == "lnpmsg Electrum server (regtest)"
    assert result(session, "server.donation_address") == ""
    assert result(session, "server.peers.subscribe") == []
    features = result(session, "server.features")
    assert features["genesis_hash"] == index.hashes[0][::-1].hex()
    assert (features["protocol_min"], features["protocol_max"], features["hash_function"]) == ("1.4", "1.4", "sha256")
    # fees in BTC per kvB: 1012 sat/kw = 4048 sat/kvB; the relay floor 1 sat/vB
    assert result(session, "blockchain.estimatefee", 6) == pytest.approx(0.00004048)
    assert result(session, "blockchain.relayfee") == pytest.approx(0.00001)
    assert result(session, "mempool.get_fee_histogram") == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda m, p: json.dumps({"id": 1, "method": m, "params": p}).encode() + b"\n",
              st.sampled_from(["server.version", "blockchain.block.header", "blockchain.block.headers",
                               "blockchain.scripthash.get_history", "blockchain.transaction.get_merkle",
                               "blockchain.transaction.id_from_pos", "blockchain.estimatefee", "x"]),
              st.lists(st.one_of(st.integers(-3, 5), st.text(max_size=70), st.booleans(), st.none()), max_size=4)),
), max_size=10))
def test_any_input_gets_json_answers_and_never_raises(chunks: list[bytes]) -> None:
    index, _ = build_index(2)
    session = new_session(index, max_line=150)
    for chunk in chunks:
        for call in session.receive_data(chunk):
            session.fail(call, "refused")
    for line in session.data_to_send().splitlines():
        message = json.loads(line)
        assert isinstance(message, (dict, list))
