"""A splice the peer forgot after our ``tx_signatures`` left, which confirms all the same (the peer
completed it with our signatures), between two lnpmsg nodes on one embedded regtest chain: the
node takes it up from the block, locks it and its monitor follows the splice's funding; the
channel goes on on it when the peer locks it too, and closes on it (our latest commitment, on the
splice's funding) when the peer does not."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from test_channels_app import channels, only_channel, settled, wait_until, withhold
from test_channels_onchain import open_channel, two_nodes
from test_channels_splice_nodes import locked_on, pending

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.channels.messages_v2 import TxSignatures
from lnpmsg.channels.splice_forgotten import FORGOTTEN_LOCK_WAIT
from lnpmsg.channels.state import Phase


async def alice_completes_and_forgets(pair, alice, bob, cid: str):
    """Alice splices in: Bob (no coins: he signs first) sends his tx_signatures; hers are lost on the
    way, but she holds the complete transaction (broadcast). She then forgets the splice and answers
    Bob's next_funding with tx_abort: Bob keeps it, marked as forgotten by the peer. Returns Alice's
    splice as she had it (signed) and the transaction."""
    release = withhold(alice, TxSignatures)
    await channels(alice).splice(cid, 200_000)  # (returns once Alice has both signatures)
    kept = pending(alice)
    assert kept is not None and kept.signed and kept.tx is not None
    assert pending(bob) is not None and pending(bob).signatures_sent and not pending(bob).signed  # type: ignore[union-attr]
    only_channel(alice).core.state.splice = None  # Alice forgets it
    release()
    channels(bob).disconnect_peer(alice.node_id, "a reconnection")
    await wait_until(lambda: not only_channel(alice).core.state.connected and not only_channel(bob).core.state.connected, "apart")
    await bob.connect(alice.addresses[0])
    await wait_until(lambda: pending(bob) is not None and pending(bob).peer_forgot and settled(bob), "Alice's tx_abort at Bob")  # type: ignore[union-attr]
    with contextlib.suppress(ChainError):
        await pair.source.broadcast(kept.tx)  # (unless still in the mempool from Alice's broadcast)
    return kept, Tx.parse(kept.tx)


@pytest.mark.trio
async def test_a_forgotten_splice_that_confirms_is_taken_up_and_the_channel_goes_on_when_the_peer_locks_it(tmp_path: Path) -> None:
    """The splice Alice forgot is mined: Bob reads it from the block (without it he would wait on the old,
    spent funding for good) and treats it as signed. Alice, who learnt it again from the chain, locks it:
    the channel switches to the splice's funding, with the capacity it adds, and pays on it."""
    from test_channels_app import pay

    async with two_nodes(tmp_path, minimum_depth=2) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        capacity = only_channel(bob).core.state.funding_sat
        kept, splice_tx = await alice_completes_and_forgets(pair, alice, bob, cid)
        only_channel(alice).core.state.splice = kept  # (Alice took it up again)
        await pair.mine(1, alice, bob)
        await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Bob took the mined splice up")  # type: ignore[union-attr]
        assert pending(bob).tx == splice_tx.raw and pending(bob).peer_forgot  # type: ignore[union-attr]
        await pair.mine(1, alice, bob)
        await wait_until(lambda: locked_on(alice, splice_tx.txid_hex) and locked_on(bob, splice_tx.txid_hex), "spliced both ways")
        assert only_channel(bob).core.state.funding_sat == capacity + 200_000
        await pay(alice, bob, 10_000_000)
        await pair.mine(FORGOTTEN_LOCK_WAIT + 1, alice, bob)
        assert only_channel(bob).phase is Phase.NORMAL and only_channel(alice).phase is Phase.NORMAL


@pytest.mark.trio
async def test_a_forgotten_splice_that_confirms_closes_the_channel_on_it_when_the_peer_never_locks_it(tmp_path: Path) -> None:
    """The splice Alice forgot is mined: Bob takes it up, locks it (Alice, who does not know it, warns and
    disconnects) and his monitor follows the splice's funding. Without Alice's splice_locked
    FORGOTTEN_LOCK_WAIT blocks past his lock depth, Bob closes the channel: his latest commitment,
    on the splice's funding, goes on chain and his monitor resolves it."""
    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        _, splice_tx = await alice_completes_and_forgets(pair, alice, bob, cid)
        await pair.mine(1, alice, bob)
        await wait_until(lambda: pending(bob) is not None and pending(bob).locked_sent, "Bob took the splice up and locked it")  # type: ignore[union-attr]
        funding = pending(bob).outpoint  # type: ignore[union-attr]
        onchain = channels(bob).onchain
        assert onchain is not None
        key = only_channel(bob).key
        await wait_until(lambda: (w := onchain.watched.get(key)) is not None and w.monitor.setup.funding_outpoint == funding, "the monitor follows the splice")
        await pair.mine(FORGOTTEN_LOCK_WAIT - 1, alice, bob)
        assert only_channel(bob).phase is Phase.NORMAL  # (still waiting for Alice's splice_locked)
        await pair.mine(1, alice, bob)
        await wait_until(lambda: only_channel(bob).phase is Phase.FAILED, "Bob closes on the splice")
        assert "forgot the splice" in (only_channel(bob).core.state.failure or "")

        await pair.mine(1, alice, bob)
        await wait_until(lambda: (channels(bob).onchain.status(only_channel(bob)) or {}).get("state") not in (None, "open"), "the commitment mined")
        status = channels(bob).onchain.status(only_channel(bob))
        assert status["commitment"]["kind"] == "ours"
        commitment = pair.source.core.find_transaction(bytes.fromhex(status["commitment"]["txid"])[::-1])
        assert commitment is not None and commitment[0].inputs[0].prevout == funding and commitment[1] is not None
        assert splice_tx.txid == funding.txid


@pytest.mark.trio
async def test_abandonsplice_spends_our_coins_in_a_forgotten_splice_back_to_the_wallet_and_it_ends(tmp_path: Path, capsys) -> None:
    """Alice splices in and her tx_signatures leave first (as when the peer adds more coins than she does),
    lost on the way, before Bob's came; Bob forgets the splice and answers tx_abort. She keeps it (he
    may still complete it) and cannot splice again. ``abandonsplice`` spends her coin in it back to her
    wallet; once that is 6 deep the splice ends, its coins are free, and she splices again. Refused
    with no splice, and on Bob's side of a forgotten splice holding no coin of his."""
    from dataclasses import replace

    from test_channels_splice_rbf_nodes import channel_commands

    from lnpmsg.channels.commands import _request
    from lnpmsg.channels.splice_forgotten import FORGOTTEN_SPENT_DEPTH
    from lnpmsg.wallet.calls import ChainAppError

    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        with pytest.raises(ChainAppError, match="no splice is pending"):
            await channels(alice).abandonsplice(cid)
        release = withhold(alice, TxSignatures)
        await channels(alice).splice(cid, 200_000, feerate=2)
        release()
        sp = pending(alice)
        assert sp is not None and sp.inputs
        # (as she holds it when she signed first: Bob's tx_signatures never came; he forgot, answering tx_abort)
        only_channel(alice).core.state.splice = replace(sp, signed=False, their_signatures=None, peer_forgot=True)
        only_channel(bob).core.state.splice = only_channel(bob).core.state.quiesce = None
        with pytest.raises(ChainAppError, match="another splice is pending"):
            await channels(alice).splice(cid, 100_000)
        coins = {str(i.outpoint) for i in sp.inputs}
        before = pair.wallet_sat(alice)
        splice_txid = sp.outpoint.txid  # type: ignore[union-attr]
        assert pair.source.core.find_transaction(splice_txid) is not None  # (in the mempool: the spend must replace it)
        with pytest.raises(ChainAppError, match="refused the spend of our coins: insufficient fee"):
            await channels(alice).abandonsplice(cid, feerate=1)
        result = await channels(alice).abandonsplice(cid, feerate=10)
        assert set(result["spent"]) == coins and result["splice"]["peer_forgot"] and result["ends_at_depth"] == FORGOTTEN_SPENT_DEPTH
        assert 0 < result["fee_sat"] < 3_000
        assert pair.source.core.find_transaction(splice_txid) is None  # (replaced: BIP 125)
        again = await channels(alice).abandonsplice(cid, feerate=20)  # (a spend stuck at a low rate is bumped the same way)
        assert again["abandon_txid"] != result["abandon_txid"] and again["fee_sat"] > result["fee_sat"]
        assert pair.source.core.find_transaction(bytes.fromhex(result["abandon_txid"])[::-1]) is None
        result = again
        _request(channel_commands().parse_args(["abandonsplice", cid]))[2](result)
        assert f"spent back to the wallet by {result['abandon_txid']}" in capsys.readouterr().out
        await pair.mine(FORGOTTEN_SPENT_DEPTH - 1, alice, bob)
        assert pending(alice) is not None  # (not deep enough yet)
        await pair.mine(1, alice, bob)
        await wait_until(lambda: pending(alice) is None, "the splice ended")
        assert pair.wallet_sat(alice) == before - result["fee_sat"]  # (the coin came back to the wallet, less the fee)
        await channels(alice).splice(cid, 100_000)
        await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "the new splice signed")  # type: ignore[union-attr]


@pytest.mark.trio
async def test_abandonsplice_refuses_a_forgotten_splice_without_our_coins(tmp_path: Path) -> None:
    """Bob kept the splice Alice forgot, but it holds none of his coins: nothing of his to spend."""
    from lnpmsg.wallet.calls import ChainAppError

    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        await alice_completes_and_forgets(pair, alice, bob, cid)
        with pytest.raises(ChainAppError, match="holds no coin of ours"):
            await channels(bob).abandonsplice(cid)


def test_the_command_line_asks_abandonsplice_in_sat_per_vbyte() -> None:
    from test_channels_splice_rbf_nodes import channel_commands

    from lnpmsg.channels.commands import COMMANDS, _request

    parser = channel_commands()
    assert "abandonsplice" in COMMANDS
    assert _request(parser.parse_args(["abandonsplice", "103x1x0", "--feerate", "7", "--json"]))[:2] == (
        "channels.abandonsplice", {"channel": "103x1x0", "feerate": 7})  # fmt: skip
    assert _request(parser.parse_args(["abandonsplice", "ab" * 32]))[1] == {"channel": "ab" * 32}
    with pytest.raises(SystemExit):
        parser.parse_args(["abandonsplice", "ab", "--feerate", "0"])


@pytest.mark.trio
async def test_a_forgotten_splice_taken_up_before_a_restart_is_closed_on_at_the_start_once_the_wait_passed(tmp_path: Path) -> None:
    """Bob takes up the mined splice Alice forgot, locks it and his monitor follows it; he stops, and the
    wait for Alice's splice_locked passes while he is down. At his start the splice is still his (taken
    up, locked: written), its depth tells the wait passed, and he closes on the splice's funding."""
    from test_channels_onchain import alice_alone
    from test_channels_splice_nodes import monitor_on

    from lnpmsg.testing.nodes import running

    async with alice_alone(tmp_path) as (pair, alice):
        bob = pair.node("bob", False)
        async with running(bob):
            cid = await open_channel(pair, alice, bob, "static_remotekey")
            _, splice_tx = await alice_completes_and_forgets(pair, alice, bob, cid)
            await pair.mine(1, alice, bob)
            await wait_until(lambda: pending(bob) is not None and pending(bob).locked_sent, "Bob took the splice up and locked it")  # type: ignore[union-attr]
            await wait_until(lambda: monitor_on(bob, splice_tx.txid_hex), "Bob's monitor follows the splice")
        await pair.mine(FORGOTTEN_LOCK_WAIT, alice)
        bob = pair.node("bob", False)
        async with running(bob):
            sp = pending(bob)
            assert sp is not None and sp.signed and sp.peer_forgot and sp.tx == splice_tx.raw
            await wait_until(lambda: only_channel(bob).phase is Phase.FAILED, "Bob closes on the splice at his start")
            await wait_until(lambda: monitor_on(bob, splice_tx.txid_hex), "the monitor loaded on the splice")
            await pair.mine(1, alice, bob)
            await wait_until(lambda: (channels(bob).onchain.status(only_channel(bob)) or {}).get("state") not in (None, "open"), "the commitment mined")
            status = channels(bob).onchain.status(only_channel(bob))
            assert status["commitment"]["kind"] == "ours"
            found = pair.source.core.find_transaction(bytes.fromhex(status["commitment"]["txid"])[::-1])
            assert found is not None and found[0].inputs[0].prevout.txid == splice_tx.txid


def test_abandonsplice_help_teaches_when_it_applies(capsys) -> None:
    from lnpmsg.cli import main

    with pytest.raises(SystemExit):
        main(["abandonsplice", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "peer_forgot" in out and "6 blocks deep" in out and "--feerate SAT_PER_VB" in out and "holds no coin of ours" in out


@pytest.mark.trio
async def test_a_forgotten_splice_mined_while_the_node_was_stopped_is_taken_up_at_its_start(tmp_path: Path) -> None:
    """Bob keeps the splice Alice forgot and stops; it is mined while he is down. At his start he finds it
    in the last blocks, takes it up and, past his lock depth already, locks it: his monitor follows it."""
    from test_channels_onchain import alice_alone
    from test_channels_splice_nodes import monitor_on

    from lnpmsg.testing.nodes import running

    async with alice_alone(tmp_path) as (pair, alice):
        bob = pair.node("bob", False)
        async with running(bob):
            cid = await open_channel(pair, alice, bob, "static_remotekey")
            _, splice_tx = await alice_completes_and_forgets(pair, alice, bob, cid)
        await pair.mine(2, alice)
        assert pair.source.core.find_transaction(splice_tx.txid)[1] is not None  # type: ignore[index]
        bob = pair.node("bob", False)
        async with running(bob):
            await wait_until(lambda: pending(bob) is not None and pending(bob).signed and pending(bob).locked_sent, "taken up and locked at the start")  # type: ignore[union-attr]
            assert pending(bob).tx == splice_tx.raw  # type: ignore[union-attr]
            await wait_until(lambda: monitor_on(bob, splice_tx.txid_hex), "Bob's monitor follows the splice")
            assert only_channel(bob).phase is Phase.NORMAL  # (Alice's splice_locked may still come)
