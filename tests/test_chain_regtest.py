"""The embedded regtest chain on the real consensus engine (libbitcoinkernel
through pbk): no part of the kernel is mocked. Every "accepted" below is a
block the kernel connected; every "rejected" a block it refused, with the
tip left where it was and the kernel's reason surfaced."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from embit import ec
from embit.script import Script
from embit.transaction import Transaction as EmbitTx
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.mining import COINBASE_MATURITY, block_subsidy, build_block
from lnpmsg.chain.regtest import (
    BLOCK_LOG_FILE,
    FAUCET_SCRIPT,
    FAUCET_WITNESS_SCRIPT,
    RegtestChain,
)

REPO = Path(__file__).resolve().parents[1]
FIXED_TIME = 1_700_000_000


def p2wpkh(key: ec.PrivateKey) -> bytes:
    from embit import hashes

    return b"\x00\x14" + hashes.hash160(key.get_public_key().sec())


def sign_p2wpkh(unsigned: Tx, keys: list[ec.PrivateKey], amounts: list[int]) -> Tx:
    """BIP143-sign every input of ``unsigned`` (each a P2WPKH coin of ``keys[i]``)."""
    etx = EmbitTx.parse(unsigned.serialize(witness=False))
    inputs = []
    for i, (txin, key, amount) in enumerate(zip(unsigned.inputs, keys, amounts)):
        script_code = Script(b"\x76\xa9" + p2wpkh(key)[1:] + b"\x88\xac")
        sig = key.sign(etx.sighash_segwit(i, script_code, amount)).serialize() + b"\x01"
        inputs.append(
            TxIn(txin.prevout, b"", txin.sequence, (sig, key.get_public_key().sec()))
        )
    return Tx(unsigned.version, tuple(inputs), unsigned.outputs, unsigned.locktime)


@pytest.fixture
def chain(tmp_path: Path):
    with RegtestChain(tmp_path / "chain", clock=lambda: FIXED_TIME) as c:
        c.mine(101)
        yield c


@pytest.fixture
def funded(chain: RegtestChain) -> tuple[RegtestChain, ec.PrivateKey, OutPoint, int]:
    """A confirmed 1 BTC P2WPKH coin of a test key."""
    key = ec.PrivateKey(bytes([7]) * 32)
    outpoint = chain.faucet(p2wpkh(key), 100_000_000)
    chain.mine(1)
    return chain, key, outpoint, 100_000_000


def spend(
    outpoint: OutPoint, key: ec.PrivateKey, amount: int, out_amount: int, **kw: int
) -> Tx:
    unsigned = Tx(
        kw.get("version", 2),
        (TxIn(outpoint, b"", kw.get("sequence", 0xFFFFFFFD)),),
        (TxOut(out_amount, FAUCET_SCRIPT),),
        kw.get("locktime", 0),
    )
    return sign_p2wpkh(unsigned, [key], [amount])


def assert_rejected(chain: RegtestChain, txs: list[Tx], code: str) -> None:
    tip = chain.tip()
    result = chain.submit_transactions_in_block(txs)
    assert not result.accepted and not result.stored
    assert result.code == code, result.reason
    assert result.reason and result.reason.startswith(code)
    assert chain.tip() == tip
    with pytest.raises(ChainError) as info:
        result.check()
    assert code in info.value.reason


def test_mine_101_blocks_kernel_connects_them(tmp_path: Path) -> None:
    with RegtestChain(tmp_path / "c") as chain:
        assert chain.height == 0
        hashes = chain.mine(101)
        assert len(hashes) == 101 and chain.height == 101
        assert chain.block_hash(101) == hashes[-1] == chain.tip().block_hash
        assert chain.kernel_height() == 101
        block = Block.parse(chain.block(hashes[0]))
        coinbase = block.txs[0]
        assert coinbase.outputs[0].amount_sat == block_subsidy(1)
        # the first coinbase is exactly mature now
        info = chain.get_txout(coinbase.outpoint(0))
        assert (
            info is not None
            and info.confirmations == COINBASE_MATURITY + 1
            and info.is_coinbase
        )


def test_faucet_pays_and_block_confirms(chain: RegtestChain) -> None:
    script = p2wpkh(ec.PrivateKey(b"\x01" * 32))
    outpoint = chain.faucet(script, 12_345_678)
    assert outpoint.txid in chain.mempool_txids()
    assert chain.get_txout(outpoint) is None
    (block_hash,) = chain.mine(1)
    assert chain.mempool_txids() == []
    info = chain.get_txout(outpoint)
    assert (
        info is not None
        and info.txout == TxOut(12_345_678, script)
        and info.confirmations == 1
    )
    assert Block.parse(chain.block(block_hash)).txs[1].txid == outpoint.txid
    # an address works as well as a script
    op2 = chain.faucet("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", 5_000)
    chain.mine(1)
    assert chain.get_txout(op2) is not None
    with pytest.raises(ChainError):
        chain.faucet(
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", 5_000
        )  # mainnet address


def test_signed_spend_accepted_by_kernel(funded) -> None:
    chain, key, outpoint, amount = funded
    tx = spend(outpoint, key, amount, amount - 500)
    result = chain.submit_transactions_in_block([tx])
    assert result.accepted and result.height == chain.height
    assert chain.get_txout(outpoint) is None
    assert chain.get_txout(tx.outpoint(0)) is not None
    found = chain.find_transaction(tx.txid)
    assert found is not None and found[1] == chain.height


def test_double_spend_rejected_in_mempool_and_by_kernel(funded) -> None:
    chain, key, outpoint, amount = funded
    # first does not signal BIP 125 replaceability: second, paying more, is refused all the same
    first = spend(outpoint, key, amount, amount - 500, sequence=0xFFFFFFFE)
    second = spend(outpoint, key, amount, amount - 900)
    chain.broadcast(first)
    assert chain.broadcast(first) == first.txid  # idempotent
    with pytest.raises(ChainError) as info:
        chain.broadcast(second)
    assert info.value.code == "txn-mempool-conflict"
    assert str(outpoint) in info.value.reason
    chain.mine(1)
    # confirmed: the pre-check and the kernel both refuse the double spend
    with pytest.raises(ChainError) as info:
        chain.broadcast(second)
    assert info.value.code == "bad-txns-inputs-missingorspent"
    assert_rejected(chain, [second], "bad-txns-inputs-missingorspent")


def test_same_block_double_spend_rejected(funded) -> None:
    chain, key, outpoint, amount = funded
    a = spend(outpoint, key, amount, amount - 500)
    b = spend(outpoint, key, amount, amount - 700)
    assert_rejected(chain, [a, b], "bad-txns-inputs-missingorspent")


def test_bad_signature_rejected_with_kernel_reason(funded) -> None:
    chain, key, outpoint, amount = funded
    good = spend(outpoint, key, amount, amount - 500)
    sig, pub = good.inputs[0].witness
    forged = bytearray(sig)
    forged[10] ^= 1
    bad = Tx(
        2,
        (TxIn(outpoint, b"", good.inputs[0].sequence, (bytes(forged), pub)),),
        good.outputs,
    )
    with pytest.raises(ChainError) as info:
        chain.broadcast(bad)  # the mempool asks the kernel's script interpreter
    assert info.value.code == "mandatory-script-verify-flag-failed"
    assert_rejected(chain, [bad], "block-script-verify-flag-failed")
    # signed by another key
    wrong = spend(outpoint, ec.PrivateKey(b"\x09" * 32), amount, amount - 500)
    assert_rejected(chain, [wrong], "block-script-verify-flag-failed")
    # the genuine one still goes through: nothing was lost
    assert chain.submit_transactions_in_block([good]).accepted


def test_missing_input_rejected(chain: RegtestChain) -> None:
    ghost = OutPoint(b"\xab" * 32, 3)
    tx = Tx(
        2,
        (TxIn(ghost, b"", 0xFFFFFFFD, (FAUCET_WITNESS_SCRIPT,)),),
        (TxOut(1_000, FAUCET_SCRIPT),),
    )
    with pytest.raises(ChainError) as info:
        chain.broadcast(tx)
    assert info.value.code == "bad-txns-inputs-missingorspent"
    assert_rejected(chain, [tx], "bad-txns-inputs-missingorspent")


def test_output_larger_than_input_rejected(funded) -> None:
    chain, key, outpoint, amount = funded
    tx = spend(outpoint, key, amount, amount + 1)
    with pytest.raises(ChainError) as info:
        chain.broadcast(tx)
    assert info.value.code == "bad-txns-in-belowout"
    assert_rejected(chain, [tx], "bad-txns-in-belowout")


def test_timelocks_checked_before_and_by_kernel(funded) -> None:
    chain, key, outpoint, amount = funded
    height = chain.height
    late = spend(outpoint, key, amount, amount - 500, locktime=height + 5)
    with pytest.raises(ChainError) as info:
        chain.broadcast(late)
    assert info.value.code == "non-final"
    assert_rejected(chain, [late], "bad-txns-nonfinal")
    # BIP68: 10 blocks after the coin confirmed
    relative = spend(outpoint, key, amount, amount - 500, sequence=10)
    with pytest.raises(ChainError) as info:
        chain.broadcast(relative)
    assert info.value.code == "non-BIP68-final"
    assert_rejected(chain, [relative], "bad-txns-nonfinal")
    chain.mine(9)
    chain.broadcast(relative)
    chain.mine(1)
    assert chain.get_txout(relative.outpoint(0)) is not None


def test_immature_coinbase_rejected(chain: RegtestChain) -> None:
    young = Block.parse(chain.block(chain.block_hash(chain.height))).txs[0]
    tx = Tx(
        2,
        (TxIn(young.outpoint(0), b"", 0xFFFFFFFD, (FAUCET_WITNESS_SCRIPT,)),),
        (TxOut(young.outputs[0].amount_sat - 1_000, FAUCET_SCRIPT),),
    )
    with pytest.raises(ChainError) as info:
        chain.broadcast(tx)
    assert info.value.code == "bad-txns-premature-spend-of-coinbase"
    assert_rejected(chain, [tx], "bad-txns-premature-spend-of-coinbase")


def test_malformed_and_invalid_blocks(chain: RegtestChain) -> None:
    tip = chain.tip()
    for garbage in [b"", b"\x00" * 80, b"\x01" * 300]:
        with pytest.raises(ChainError) as info:
            chain.submit_block(garbage)
        assert info.value.code == "malformed"
    good = build_block(
        tip.block_hash, tip.height + 1, FIXED_TIME + 10_000, FAUCET_SCRIPT, [], 0
    )
    coinbase = good.txs[0]
    altered = Tx(
        coinbase.version,
        coinbase.inputs,
        (TxOut(1, FAUCET_SCRIPT), *coinbase.outputs[1:]),
        0,
    )
    # same header (valid proof of work), other transactions: the merkle root no longer matches
    result = chain.submit_block(Block(good.header, (altered,)).serialize())
    assert not result.accepted and result.code == "bad-txnmrklroot"
    greedy = build_block(
        tip.block_hash, tip.height + 1, FIXED_TIME + 10_000, FAUCET_SCRIPT, [], 1
    )
    result = chain.submit_block(greedy.serialize())
    assert not result.accepted and result.code == "bad-cb-amount"
    wrong_height = build_block(
        tip.block_hash, tip.height + 7, FIXED_TIME + 10_000, FAUCET_SCRIPT, [], 0
    )
    assert chain.submit_block(wrong_height.serialize()).code == "bad-cb-height"
    orphan = build_block(b"\x42" * 32, 5, FIXED_TIME, FAUCET_SCRIPT, [], 0)
    assert chain.submit_block(orphan.serialize()).code == "prev-blk-not-found"
    # submitted again: the same verdict without asking the kernel twice
    assert chain.submit_block(greedy.serialize()).code == "bad-cb-amount"
    assert chain.tip() == tip
    result = chain.submit_block(good.serialize())
    assert result.accepted and chain.tip().block_hash == good.hash


def test_restart_keeps_chain_utxos_and_mempool(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    key = ec.PrivateKey(b"\x05" * 32)
    with RegtestChain(path) as chain:
        chain.mine(101)
        outpoint = chain.faucet(p2wpkh(key), 40_000)
        chain.mine(1)
        waiting = chain.faucet(p2wpkh(key), 30_000)
        tip = chain.tip()
    with RegtestChain(path, create=False) as chain:
        assert chain.tip() == tip
        info = chain.get_txout(outpoint)
        assert info is not None and info.txout.amount_sat == 40_000
        assert chain.mempool_txids() == [waiting.txid]
        chain.mine(1)
        assert chain.get_txout(waiting) is not None


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unclean_exit_replays_block_log(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    # the kernel writes its state only on a clean close: kill the process before it
    done = _run(
        f"""
        import os
        from lnpmsg.chain.regtest import RegtestChain
        chain = RegtestChain({str(path)!r})
        chain.mine(120)
        print(chain.tip().block_hash.hex(), flush=True)
        os._exit(0)
        """
    )
    assert done.returncode == 0, done.stderr
    with RegtestChain(path) as chain:
        assert chain.height == 120
        assert chain.tip().block_hash.hex() == done.stdout.strip()
        assert chain.kernel_height() == 120  # the kernel re-validated every block


def test_second_opener_gets_lock_error(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    with RegtestChain(path) as chain:
        chain.mine(1)
        with pytest.raises(ChainError) as info:
            RegtestChain(path)
        assert info.value.code == "locked" and str(os.getpid()) in info.value.reason
        other = _run(
            f"""
            from lnpmsg.chain.errors import ChainError
            from lnpmsg.chain.regtest import RegtestChain
            try:
                RegtestChain({str(path)!r})
            except ChainError as exc:
                print(exc.code, exc.reason)
            """
        )
        assert (
            other.stdout.startswith("locked")
            and "in use by another process" in other.stdout
        )
        assert chain.height == 1  # the first opener is untouched
    with RegtestChain(path) as chain:  # released on close
        assert chain.height == 1


def test_missing_and_foreign_data_dirs(tmp_path: Path) -> None:
    with pytest.raises(ChainError) as info:
        RegtestChain(tmp_path / "nope", create=False)
    assert info.value.code == "missing"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a chain")
    with pytest.raises(ChainError) as info:
        RegtestChain(foreign)
    assert (
        info.value.code == "corrupt"
        and "not an lnpmsg chain data dir" in info.value.reason
    )
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ChainError):
        RegtestChain(afile)


def test_corrupt_block_log_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    with RegtestChain(path) as chain:
        chain.mine(5)
    log = path / BLOCK_LOG_FILE
    data = bytearray(log.read_bytes())
    data[200] ^= 0xFF
    log.write_bytes(bytes(data))
    with pytest.raises(ChainError) as info:
        RegtestChain(path)
    assert info.value.code == "corrupt" and "checksum" in info.value.reason
    assert "Move it aside and start again" in info.value.reason
    # and the lock was released by the failed open
    data[200] ^= 0xFF
    log.write_bytes(bytes(data))
    with RegtestChain(path) as chain:
        assert chain.height == 5
        tip = chain.tip()
    # the advice works: the log is rebuilt from the kernel's files (closed cleanly)
    log.write_bytes(b"garbage")
    with pytest.raises(ChainError, match="bad magic"):
        RegtestChain(path)
    log.rename(path / "blocks.log.bad")
    with RegtestChain(path) as chain:
        assert chain.tip() == tip and len(chain._log) == 6
    with RegtestChain(path) as chain:
        assert chain.tip() == tip


def test_torn_block_log_tail_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    with RegtestChain(path) as chain:
        chain.mine(3)
    log = path / BLOCK_LOG_FILE
    with open(log, "ab") as f:
        f.write(b"\x10\x00\x00")  # a record header cut short by a crash
    with RegtestChain(path) as chain:
        assert chain.height == 3
        chain.mine(1)
    with RegtestChain(path) as chain:
        assert chain.height == 4


def test_damaged_kernel_state_error_then_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    key = ec.PrivateKey(b"\x06" * 32)
    with RegtestChain(path) as chain:
        chain.mine(101)
        outpoint = chain.faucet(p2wpkh(key), 70_000)
        chain.mine(2)
        tip = chain.tip()
    current = path / "chainstate" / "CURRENT"
    current.write_text("MANIFEST-999999\n")
    with pytest.raises(ChainError) as info:
        RegtestChain(path)
    assert info.value.code == "corrupt" and "--reindex" in info.value.reason and "rebuild=True" in info.value.reason
    with RegtestChain(path, rebuild=True) as chain:
        assert chain.tip() == tip
        assert chain.get_txout(outpoint) is not None


def test_reorg_returns_transactions_to_mempool(funded) -> None:
    chain, key, outpoint, amount = funded
    fork_base = chain.tip()
    tx = spend(outpoint, key, amount, amount - 500)
    chain.broadcast(tx)
    (first,) = chain.mine(1)
    assert chain.get_txout(tx.outpoint(0)) is not None
    # a competing branch of two empty blocks from the same parent has more work
    fork = chain.mine(2, parent=fork_base.block_hash)
    assert chain.tip().block_hash == fork[-1] and chain.height == fork_base.height + 2
    assert chain.block_hash(fork_base.height + 1) != first
    assert chain.get_txout(tx.outpoint(0)) is None
    assert chain.get_txout(outpoint) is not None
    assert chain.mempool_txids() == [tx.txid]
    chain.mine(1)
    assert chain.get_txout(tx.outpoint(0)) is not None


def test_side_branch_block_is_stored_not_active(chain: RegtestChain) -> None:
    parent = chain.block_hash(chain.height - 1)
    assert parent is not None
    tip = chain.tip()
    (side,) = chain.mine(1, parent=parent)
    assert chain.tip() == tip  # equal work: the first seen stays
    assert Block.parse(chain.block(side)).header.prev_hash == parent


def test_fuzzed_transactions_and_blocks_leave_the_chain_valid(tmp_path: Path) -> None:
    """Mutated transactions either pass the mempool pre-checks or fail with
    ChainError; whatever passed, the kernel must accept in the next block."""
    with RegtestChain(tmp_path / "c", clock=lambda: FIXED_TIME) as chain:
        chain.mine(101)
        coins = [chain.faucet(FAUCET_SCRIPT, 50_000 + i) for i in range(30)]
        chain.mine(1)
        # anyone-can-spend inputs: most mutations still make a valid transaction
        templates = [
            Tx(
                2,
                (TxIn(op, b"", 0xFFFFFFFD, (FAUCET_WITNESS_SCRIPT,)),),
                (TxOut(30_000, FAUCET_SCRIPT), TxOut(10_000, FAUCET_SCRIPT)),
                chain.height,
            ).raw
            for op in coins
        ]
        tip = chain.tip()
        accepted: list[bytes] = []

        @settings(max_examples=300, deadline=None)
        @given(
            st.integers(0, 29),
            st.integers(0, 10_000),
            st.integers(0, 255),
            st.binary(max_size=200),
        )
        def fuzz(which: int, where: int, value: int, junk: bytes) -> None:
            mutated = bytearray(templates[which])
            mutated[where % len(mutated)] = value
            for data in (bytes(mutated), junk):
                try:
                    accepted.append(chain.broadcast(data))
                except ChainError:
                    pass
                try:
                    chain.submit_block(data)
                except ChainError:
                    pass

        fuzz()
        assert chain.tip() == tip
        waiting = chain.mempool_txids()
        chain.mine(1)  # never rejected: the pre-checks kept every bad one out
        assert chain.height == tip.height + 1
        assert all(chain.find_transaction(t) is not None for t in waiting)
        assert chain.mempool_txids() == []
        assert (
            len(set(accepted)) > 5
        )  # the fuzzing did reach the kernel with valid variants


def test_branch_failing_on_an_ancestor_is_rejected(funded) -> None:
    chain, key, outpoint, amount = funded
    base = chain.tip()
    t0 = chain.index.times[-1] + 100
    # a side branch whose first block overspends: stored unvalidated while it has less work
    bad_tx = spend(outpoint, key, amount, amount + 1)
    first = build_block(
        base.block_hash, base.height + 1, t0 + 1, FAUCET_SCRIPT, [bad_tx], 0, 77
    )
    chain.mine(2)  # the active chain moves ahead first
    assert chain.submit_block(first.serialize()).stored
    second = build_block(first.hash, base.height + 2, t0 + 2, FAUCET_SCRIPT, [], 0, 78)
    tip = chain.tip()
    assert chain.submit_block(second.serialize()).stored  # equal work: not tried yet
    third = build_block(second.hash, base.height + 3, t0 + 3, FAUCET_SCRIPT, [], 0, 79)
    result = chain.submit_block(
        third.serialize()
    )  # more work: the kernel tries it, and fails
    assert not result.accepted and not result.stored
    assert result.code == "bad-txns-in-belowout"
    assert chain.tip() == tip


class ForeignTx:
    """Another layer's transaction model: all the chain asks of it is serialize()."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def serialize(self) -> bytes:
        return self.raw


def test_other_transaction_models_are_accepted(funded) -> None:
    chain, key, outpoint, amount = funded
    tx = spend(outpoint, key, amount, amount - 500)
    result = chain.submit_transactions_in_block([ForeignTx(tx.raw)])
    assert result.accepted and chain.get_txout(tx.outpoint(0)) is not None
    with pytest.raises(ChainError):
        chain.broadcast(object())  # type: ignore[arg-type]
    with pytest.raises(ChainError):
        chain.broadcast(ForeignTx(b"\x00"))


def test_a_faucet_call_that_fails_mines_nothing(tmp_path: Path) -> None:
    with RegtestChain(tmp_path / "chain") as chain:
        chain.mine(3)
        tip = chain.tip()
        # regtest's whole supply is ~15 000 BTC: 20 000 BTC cannot be raised
        with pytest.raises(ChainError) as info:
            chain.faucet(p2wpkh(ec.PrivateKey(b"\x02" * 32)), 20_000 * 100_000_000)
        assert info.value.code == "insufficient-funds" and "nothing was mined" in info.value.reason
        with pytest.raises(ChainError) as info:
            chain.faucet("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", 5_000)
        with pytest.raises(ChainError) as info:
            chain.faucet(p2wpkh(ec.PrivateKey(b"\x02" * 32)), 0)
        assert info.value.code == "invalid"
        assert chain.tip() == tip and chain.mempool_txids() == []
        # a request just inside the bound still works
        assert chain.faucet(FAUCET_SCRIPT, 100 * 100_000_000).vout == 0


def test_mempool_file_is_fsynced_at_each_write(tmp_path: Path, monkeypatch) -> None:
    with RegtestChain(tmp_path / "chain") as chain:
        chain.mine(101)
        synced: list[str] = []
        real_fsync = os.fsync

        def recording_fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", recording_fsync)
        chain.faucet(FAUCET_SCRIPT, 20_000)  # one record appended, fsynced
        assert synced == [str(tmp_path / "chain" / "mempool.dat")]
        synced.clear()
        chain.mine(1)  # the mempool emptied: rewritten through a temp file, then the rename made durable
        mempool_synced = [p for p in synced if Path(p).name.startswith("mempool") or p == str(tmp_path / "chain")]
        assert mempool_synced == [str(tmp_path / "chain" / "mempool.dat.tmp"), str(tmp_path / "chain")]


@pytest.mark.parametrize("damage", [b"garbage" * 10, b"LNPMSG-MEMPOOL01\x05\x00\x00\x00hello", b"LNPMSG-MEMPOOL01\xff\xff\xff\xff"])
def test_damaged_mempool_file_is_set_aside_with_a_warning(tmp_path: Path, caplog, damage: bytes) -> None:
    path = tmp_path / "chain"
    with RegtestChain(path) as chain:
        chain.mine(101)
        chain.faucet(FAUCET_SCRIPT, 10_000)
        tip = chain.tip()
    (path / "mempool.dat").write_bytes(damage)
    with RegtestChain(path) as chain:
        assert chain.tip() == tip and chain.mempool_txids() == []
        chain.faucet(FAUCET_SCRIPT, 10_000)  # the chain works as before
    assert (path / "mempool.dat.corrupt-1").read_bytes() == damage
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "mempool.dat was damaged: moved it to" in warning.getMessage()
    assert "mempool.dat.corrupt-1" in warning.getMessage()


def test_a_broadcast_survives_a_crash_right_after_it(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    done = _run(
        f"""
        import os, signal
        from lnpmsg.chain.regtest import RegtestChain, FAUCET_SCRIPT
        chain = RegtestChain({str(path)!r})
        chain.mine(101)
        print(chain.faucet(FAUCET_SCRIPT, 12_345).txid.hex(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert done.returncode == -9, done.stderr
    with RegtestChain(path) as chain:
        assert [t.hex() for t in chain.mempool_txids()] == [done.stdout.strip()]


def test_damaged_kernel_block_file_found_at_start_then_reindexed(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    with RegtestChain(path) as chain:
        chain.mine(101)
        outpoint = chain.faucet(FAUCET_SCRIPT, 70_000)
        chain.mine(20)
        tip = chain.tip()
    blk = path / "blocks" / "blk00000.dat"
    data = bytearray(blk.read_bytes())
    for i in range(64):  # inside a block in the middle of the file's used part
        data[20_000 + i] ^= 0xFF
    blk.write_bytes(bytes(data))
    with pytest.raises(ChainError) as info:
        RegtestChain(path)
    assert info.value.code == "corrupt"
    assert str(path / "blocks") in info.value.reason and "--reindex" in info.value.reason
    with RegtestChain(path, rebuild=True) as chain:
        assert chain.tip() == tip and chain.get_txout(outpoint) is not None
    with RegtestChain(path) as chain:  # and the rebuilt files pass the check
        assert chain.tip() == tip


def test_block_log_damaged_after_open_is_found_on_read(tmp_path: Path) -> None:
    with RegtestChain(tmp_path / "chain") as chain:
        hashes = chain.mine(3)
        with open(tmp_path / "chain" / BLOCK_LOG_FILE, "r+b") as f:
            f.seek(-10, os.SEEK_END)
            f.write(b"\xff" * 10)
        assert Block.parse(chain.block(hashes[0])).hash == hashes[0]
        with pytest.raises(ChainError) as info:
            chain.block(hashes[-1])
        assert info.value.code == "corrupt" and "checksum mismatch" in info.value.reason
