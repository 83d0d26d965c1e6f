"""Channel splicing between two lnpmsg nodes in memory, on one embedded regtest chain: ``splice``
in from the wallet and out to an address, the splice transaction mined and locked at the channel's
depth, payments both ways on the new funding, a restart of both nodes, a cooperative close; a
force close after a splice swept from the new funding; refusals as clear errors; a splice asked
right after a reconnection; the coins of a splice kept over a restart, held until it confirms or ends."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
from test_channels_app import FUNDING_SAT, PUSH_MSAT, balances, channels, chain, only_channel, pay, running_pair, settled, wait_until, withhold
from test_channels_app import Pair as AppPair
from test_channels_onchain import TO_SELF_DELAY, add_htlc, alice_alone, invalidate, open_channel, resolved, spent_everything, two_nodes

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.channels.splice import SpliceSession
from lnpmsg.channels.state import Phase
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError


def pending(node) -> SpliceSession | None:
    sp = only_channel(node).core.state.splice
    return sp if isinstance(sp, SpliceSession) else None


def locked_on(node, txid: str) -> bool:
    s = only_channel(node).core.state
    return s.splice is None and s.funding_outpoint is not None and s.funding_outpoint.txid_hex == txid and settled(node)


def splice_commitment(node) -> Tx:
    """The node's latest commitment on its pending splice's funding, signed (as a cheater keeps it)."""
    from lnpmsg.channels.commitments import build, finalize_local
    from lnpmsg.channels.splice import next_keys
    from lnpmsg.channels.splice_sign import splice_keys

    sp = pending(node)
    assert sp is not None and sp.local_commit is not None
    core, commit = only_channel(node).core, sp.local_commit
    built = build(splice_keys(core, sp), commit.spec, commit.number, core.secrets.commitment_point(commit.number), local=True)
    return finalize_local(built, next_keys(core)[0], commit.signature)


async def broadcast_until_resolved(pair, victim, cheater, commitment: Tx) -> dict:
    """The cheater's commitment on chain, blocks until the victim's monitor resolved it (and its last
    sweep is mined): the victim's on-chain status."""
    await pair.source.broadcast(commitment.raw)
    for _ in range(40):  # (an HTLC times out, a delayed output waits)
        await pair.mine(1, victim, cheater)
        if resolved(victim):
            break
    assert resolved(victim)
    await pair.mine(2, victim, cheater)
    return channels(victim).onchain.status(only_channel(victim))


async def punished(pair, victim, cheater, commitment: Tx, capacity_sat: int) -> None:
    """The cheater's revoked commitment on chain: the victim's monitor takes the whole channel
    (``capacity_sat``, less the fees)."""
    before = pair.wallet_sat(victim)
    status = await broadcast_until_resolved(pair, victim, cheater, commitment)
    assert status["commitment"]["txid"] == commitment.txid_hex and status["commitment"]["kind"] == "revoked"
    assert capacity_sat - 25_000 < pair.wallet_sat(victim) - before < capacity_sat


async def splice_and_revoke(pair, alice, bob, keeper=None) -> tuple[str, Tx]:
    """Alice splices 200k sat in; ``keeper`` (Alice by default) keeps its commitment on the splice's
    funding once both signed and revokes it by a payment: (the splice's txid, that commitment)."""
    keeper = alice if keeper is None else keeper
    cid = only_channel(alice).channel_id.hex()
    result = await channels(alice).splice(cid, 200_000)
    await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
    commitment = splice_commitment(keeper)
    await pay(alice, bob, 30_000_000)  # the keeper revokes the commitment it keeps
    txid = bytes.fromhex(result["splice_txid"])[::-1]
    await wait_until(lambda: pair.source.core.find_transaction(txid) is not None, "the splice in the mempool")
    return result["splice_txid"], commitment


def withhold_splice_locked(node) -> None:
    """The node's splice_locked never leaves (a peer that does not lock the splice)."""
    from lnpmsg.channels.messages_splice import SpliceLocked

    withhold(node, SpliceLocked)


def lock_after_the_peer(node) -> None:
    """The node reads a splice's depth only once the peer's splice_locked came: its own lock (at the
    same block) switches the channel to the splice in one step."""
    check_splice_depths = channels(node)._check_splice_depths

    async def after_the_peers_splice_locked(height: int | None = None) -> None:
        await wait_until(lambda: pending(node) is None or pending(node).locked_received, "the peer's splice_locked")  # type: ignore[union-attr]
        await check_splice_depths(height)

    channels(node)._check_splice_depths = after_the_peers_splice_locked


def monitor_on(node, txid: str) -> bool:
    status = channels(node).onchain.status(only_channel(node))
    return status is not None and status["funding"].startswith(txid)


@pytest.mark.trio
async def test_splice_in_then_out_with_payments_a_restart_and_a_close(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = AppPair(source, tmp_path, network)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await pair.fund_connect_open(alice, bob)
            cid = only_channel(alice).channel_id.hex()
            start = balances(alice)
            # splice in 300k sat from Alice's wallet
            result = await channels(alice).splice(cid, 300_000)
            assert result["contribution_sat"] == 300_000 and result["new_capacity_sat"] == FUNDING_SAT + 300_000
            await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
            listed = (await channels(bob).listchannels())["channels"][0]
            assert listed["splice"]["stage"] == "awaiting_depth" and listed["splice"]["funding_txid"] == result["splice_txid"]
            assert listed["capacity_sat"] == FUNDING_SAT  # the old funding until the lock
            await pay(alice, bob, 7_000_000)  # while the splice is unconfirmed: a commitment for each funding
            await pay(bob, alice, 2_000_000)
            await wait_until(lambda: source.core.find_transaction(bytes.fromhex(result["splice_txid"])[::-1]) is not None, "in the mempool")
            await source.mine(2)
            await wait_until(lambda: locked_on(alice, result["splice_txid"]) and locked_on(bob, result["splice_txid"]), "spliced")
            listed = (await channels(alice).listchannels())["channels"][0]
            assert listed["capacity_sat"] == FUNDING_SAT + 300_000 and listed["splice"] is None and listed["splices"] == 1
            await wait_until(lambda: not alice.apps["chain"].wallet.reserved(), "the splice's coins no longer reserved")  # type: ignore[attr-defined]
            assert listed["short_channel_id"] != result["short_channel_id"]
            moved = 5_000_000
            assert balances(alice)[:2] == (start[0] + 300_000_000 - moved, start[1] + moved)
            assert balances(bob)[:2] == (start[1] + moved, start[0] + 300_000_000 - moved)
            await wait_until(lambda: monitor_on(alice, result["splice_txid"]) and monitor_on(bob, result["splice_txid"]), "monitors follow")
            await pay(alice, bob, 50_000_000)
            await pay(bob, alice, 20_000_000)
            # splice out 200k sat to an address of Bob's wallet, from Alice's balance
            address = bob.apps["chain"].wallet.new_address()  # type: ignore[attr-defined]
            out = await channels(alice).splice(cid, -200_000, feerate=3, address=address)
            assert out["contribution_sat"] < -200_000  # our balance pays the fee too
            splice_tx = Tx.parse(pending(alice).tx)  # type: ignore[union-attr]
            script = script_for_address(address, "bcrt")
            assert any(o.script_pubkey == script and o.amount_sat == 200_000 for o in splice_tx.outputs)
            await source.mine(2)
            await wait_until(lambda: locked_on(alice, out["splice_txid"]) and locked_on(bob, out["splice_txid"]), "spliced out")
            capacity = FUNDING_SAT + 300_000 + out["contribution_sat"]
            assert only_channel(bob).core.state.funding_sat == capacity
            before = balances(alice), balances(bob)
        # both nodes again, from their stores
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            assert (balances(alice), balances(bob)) == before
            assert only_channel(alice).core.state.funding_sat == capacity
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: settled(alice) and settled(bob), "reestablished after the restart")
            await pay(alice, bob, 10_000_000)
            closed = await channels(bob).closechannel(cid)
            assert closed["state"] == "closed"
            await wait_until(lambda: only_channel(alice).phase is Phase.CLOSED, "alice closed")
            closing = source.core.find_transaction(bytes.fromhex(closed["closing_txid"])[::-1])
            assert closing is not None and closing[0].inputs[0].prevout.txid_hex == out["splice_txid"]  # the new funding


@pytest.mark.trio
async def test_a_force_close_after_a_splice_is_swept_from_the_new_funding(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        result = await channels(bob).splice(cid, -100_000)  # the fundee splices out of its pushed balance
        await pair.mine(1, alice, bob)
        await wait_until(lambda: locked_on(alice, result["splice_txid"]) and locked_on(bob, result["splice_txid"]), "spliced")
        await wait_until(lambda: monitor_on(alice, result["splice_txid"]) and monitor_on(bob, result["splice_txid"]), "monitors follow")
        before = {n: pair.wallet_sat(n) for n in (alice, bob)}
        await pair.mine(1, alice, bob)
        forced = await channels(alice).closechannel(cid, force=True)
        commitment_txid = bytes.fromhex(forced["commitment_txid"])[::-1]
        for _ in range(TO_SELF_DELAY + 6):
            await pair.mine(1, alice, bob)
            if resolved(alice) and resolved(bob):
                break
        assert resolved(alice) and resolved(bob)
        spends = await spent_everything(pair.source, commitment_txid)
        assert spends  # Alice's to_local swept after its delay
        status = channels(alice).onchain.status(only_channel(alice))
        assert status["funding"].startswith(result["splice_txid"]) and status["commitment"]["kind"] == "ours"
        gained = {n: pair.wallet_sat(n) - before[n] for n in (alice, bob)}
        a, b = balances(alice)[:2]
        assert a // 1000 - 20_000 < gained[alice] <= a // 1000 and b // 1000 - 20_000 < gained[bob] <= b // 1000


@pytest.mark.trio
async def test_refusals_are_clear_errors_and_change_nothing(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_connect_open(alice, bob)
        cid = only_channel(alice).channel_id.hex()
        before = only_channel(alice).core.state.funding_outpoint
        with pytest.raises(ChainAppError, match="reserve"):
            await channels(bob).splice(cid, -(PUSH_MSAT // 1000))
        with pytest.raises(ChainAppError, match="cannot splice in"):
            await channels(bob).splice(cid, 5_000_000)  # Bob's wallet is empty
        with pytest.raises(Exception, match="address is only for a splice-out"):
            await channels(alice).splice(cid, 10_000, address="bcrt1qxyz")
        # 300 sat is above a P2WPKH's dust threshold but below the channel's dust limit (546 sat): refused
        # before the channel quiesces (a quiescence ends only with its splice or a disconnection)
        with pytest.raises(ChainAppError, match="below the dust limit"):
            await channels(alice).splice(cid, -300, address=alice.apps["chain"].wallet.new_address())  # type: ignore[attr-defined]
        assert only_channel(alice).core.state.quiesce is None and only_channel(bob).core.state.quiesce is None
        # Bob takes no splice at 500 sat/vB (above his policy's feerate bounds): tx_abort, Alice's coins freed
        with pytest.raises(ChainAppError, match="peer aborted: feerate"):
            await channels(alice).splice(cid, 100_000, feerate=500)
        assert not alice.apps["chain"].wallet.reserved()  # type: ignore[attr-defined]
        await trio.sleep(0)
        for n in (alice, bob):
            s = only_channel(n).core.state
            assert s.funding_outpoint == before and s.splice is None and s.quiesce is None
        await pay(alice, bob, 5_000_000)  # the channel works as before


def test_the_command_line_takes_a_signed_amount() -> None:
    import argparse

    from lnpmsg.channels.commands import COMMANDS, _request, add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), default_data_dir=Path("."))
    assert "splice" in COMMANDS
    method, params, _ = _request(parser.parse_args(["splice", "103x1x0", "--amount-sat", "-200000", "--address", "bcrt1qx"]))
    assert method == "channels.splice" and params == {"channel": "103x1x0", "amount_sat": -200_000, "address": "bcrt1qx"}
    assert _request(parser.parse_args(["splice", "ab", "--amount-sat", "+5000", "--feerate", "4"]))[1] == {
        "channel": "ab", "amount_sat": 5000, "feerate": 4}
    with pytest.raises(SystemExit):
        parser.parse_args(["splice", "ab", "--amount-sat", "0"])


@pytest.mark.trio
async def test_both_nodes_restart_while_the_splice_waits_then_it_locks(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = AppPair(source, tmp_path, network)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await pair.fund_connect_open(alice, bob)
            cid = only_channel(alice).channel_id.hex()
            result = await channels(alice).splice(cid, 250_000)
            await pay(alice, bob, 3_000_000)
        splice_txid = bytes.fromhex(result["splice_txid"])[::-1]
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            for n in (alice, bob):
                assert pending(n) is not None and pending(n).signed  # type: ignore[union-attr]
            await wait_until(lambda: source.core.find_transaction(splice_txid) is not None, "the splice in the mempool")
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
            await source.mine(2)
            await wait_until(lambda: locked_on(alice, result["splice_txid"]) and locked_on(bob, result["splice_txid"]), "spliced")
            assert only_channel(alice).core.state.funding_sat == FUNDING_SAT + 250_000
            await pay(bob, alice, 1_000_000)


@pytest.mark.trio
async def test_a_commitment_on_the_splice_mined_with_it_before_the_lock_is_found_and_swept(tmp_path: Path) -> None:
    """Bob's commitment on the splice's funding confirms in the splice's own block, before either
    sent splice_locked: once the channel moves to the splice's funding, its monitors read from the
    splice's block and resolve the commitment."""
    from lnpmsg.channels.commitments import build, finalize_local
    from lnpmsg.channels.splice import next_keys
    from lnpmsg.channels.splice_sign import splice_keys

    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        result = await channels(alice).splice(cid, 200_000)
        await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
        sp = pending(bob)
        assert sp is not None and sp.local_commit is not None
        core = only_channel(bob).core
        commit = sp.local_commit
        built = build(splice_keys(core, sp), commit.spec, commit.number, core.secrets.commitment_point(commit.number), local=True)
        commitment = finalize_local(built, next_keys(core)[0], commit.signature)
        splice_tx = Tx.parse(sp.tx)  # type: ignore[arg-type]
        assert (await pair.source.submit_transactions_in_block([splice_tx, commitment])).accepted
        await pair.mine(1, alice, bob)
        await wait_until(lambda: only_channel(alice).core.state.splice is None and only_channel(bob).core.state.splice is None, "locked")
        await wait_until(lambda: monitor_on(alice, result["splice_txid"]) and monitor_on(bob, result["splice_txid"]), "monitors follow")
        for _ in range(TO_SELF_DELAY + 6):
            if resolved(alice) and resolved(bob):
                break
            await pair.mine(1, alice, bob)
        assert resolved(alice) and resolved(bob)
        status = channels(alice).onchain.status(only_channel(alice))
        assert status["commitment"]["txid"] == commitment.txid_hex and status["commitment"]["kind"] == "theirs_current"


@pytest.mark.trio
async def test_the_splice_deep_while_the_peers_are_apart_locks_on_reconnection(tmp_path: Path) -> None:
    """Both reach the splice's depth while disconnected: no splice_locked can leave; the
    channel_reestablish's my_current_funding_locked stands for it and the channel locks."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_connect_open(alice, bob)
        cid = only_channel(alice).channel_id.hex()
        result = await channels(alice).splice(cid, -150_000)
        await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
        await alice.disconnect(bob.node_id, "test: apart while the splice confirms")
        await wait_until(lambda: not only_channel(alice).core.state.connected and not only_channel(bob).core.state.connected, "apart")
        await source.mine(2)
        await wait_until(lambda: pending(alice).locked_sent and pending(bob).locked_sent, "deep enough on both")  # type: ignore[union-attr]
        assert not pending(alice).locked_received and not pending(bob).locked_received  # type: ignore[union-attr]
        if alice.peers.get(bob.node_id) is None:
            await bob.connect(alice.addresses[0])
        await wait_until(lambda: locked_on(alice, result["splice_txid"]) and locked_on(bob, result["splice_txid"]), "locked after reestablish")
        await pay(alice, bob, 2_000_000)


@pytest.mark.trio
@pytest.mark.parametrize("revoked", [False, True])
async def test_a_commitment_on_a_confirmed_splice_the_peer_never_locked_is_acted_on(tmp_path: Path, revoked: bool) -> None:
    """The splice confirms and Alice locks it, but Bob's splice_locked never reaches her: her
    monitor follows the splice's funding all the same (the old one is spent). Bob broadcasts a
    commitment on the splice's funding holding an HTLC Alice offered, his latest (Alice sweeps her
    balance and times the HTLC out) or one he revoked since (Alice takes the whole channel)."""
    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        withhold_splice_locked(bob)
        result = await channels(alice).splice(cid, 200_000)
        await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
        htlc_sat, expiry = 40_000, (await pair.source.tip()).height + 20
        await add_htlc(pair, alice, bob, cid, htlc_sat * 1000, expiry)
        commitment = splice_commitment(bob)
        assert len(commitment.outputs) == 3  # to_local, to_remote, the HTLC
        if revoked:
            await add_htlc(pair, alice, bob, cid, 30_000_000, expiry)  # Bob revokes the commitment he keeps
            assert splice_commitment(bob).txid != commitment.txid
        await wait_until(lambda: pair.source.core.find_transaction(bytes.fromhex(result["splice_txid"])[::-1]) is not None, "in the mempool")
        await pair.mine(2, alice, bob)
        await wait_until(lambda: pending(alice) is not None and pending(alice).locked_sent, "Alice locked the splice")  # type: ignore[union-attr]
        await wait_until(lambda: monitor_on(alice, result["splice_txid"]), "Alice's monitor follows the unlocked splice")
        assert pending(alice) is not None and not pending(alice).locked_received  # type: ignore[union-attr]
        before = pair.wallet_sat(alice)
        a_balance = pending(alice).local_commit.spec.to_local_msat // 1000  # type: ignore[union-attr]  # (on the splice)
        status = await broadcast_until_resolved(pair, alice, bob, commitment)
        assert status["funding"].startswith(result["splice_txid"]) and status["commitment"]["txid"] == commitment.txid_hex
        assert status["commitment"]["kind"] == ("revoked" if revoked else "theirs_current")
        gained = pair.wallet_sat(alice) - before
        capacity = FUNDING_SAT + 200_000
        if revoked:
            assert capacity - 25_000 < gained < capacity, gained  # all of it, less the fees
        else:
            assert a_balance + htlc_sat - 20_000 < gained <= a_balance + htlc_sat, (gained, a_balance)


@pytest.mark.trio
async def test_a_force_close_on_a_confirmed_splice_the_peer_never_locked_spends_the_splice(tmp_path: Path) -> None:
    """Alice locked the confirmed splice, Bob's splice_locked never came: her force close
    broadcasts her commitment on the splice's funding (the old one is spent) and sweeps it."""

    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        withhold_splice_locked(bob)
        result = await channels(alice).splice(cid, 150_000)
        await wait_until(lambda: pair.source.core.find_transaction(bytes.fromhex(result["splice_txid"])[::-1]) is not None, "in the mempool")
        await pair.mine(2, alice, bob)
        await wait_until(lambda: monitor_on(alice, result["splice_txid"]), "Alice's monitor follows the unlocked splice")
        forced = await channels(alice).closechannel(cid, force=True)
        commitment_txid = bytes.fromhex(forced["commitment_txid"])[::-1]
        for _ in range(TO_SELF_DELAY + 6):
            await pair.mine(1, alice, bob)
            if resolved(alice):
                break
        assert resolved(alice)
        found = pair.source.core.find_transaction(commitment_txid)
        assert found is not None and found[0].inputs[0].prevout.txid_hex == result["splice_txid"]
        assert await spent_everything(pair.source, commitment_txid)  # her to_local swept after its delay


@pytest.mark.trio
async def test_a_splice_refused_once_quiescent_disconnects_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """What changes while the channel quiesces (here: the check before it skipped) can refuse the splice
    after the quiescence: BOLT 2 ends a quiescence only with its operation or a disconnection, so the
    peer is disconnected at once (not at the quiescence timeout, 60 s) and the channel works again after."""
    import lnpmsg.channels.splice_side as splice_side

    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_connect_open(alice, bob)
        cid = only_channel(alice).channel_id.hex()
        monkeypatch.setattr(splice_side, "check_command", lambda core, command: None)
        with pytest.raises(ChainAppError, match="below the dust limit"):
            await channels(alice).splice(cid, -300, address=alice.apps["chain"].wallet.new_address())  # type: ignore[attr-defined]
        assert any("disconnecting" in r.getMessage() and "refused once the channel was quiescent" in r.getMessage() for r in caplog.records)
        await wait_until(lambda: not only_channel(alice).core.state.connected, "disconnected")
        assert only_channel(alice).core.state.quiesce is None and only_channel(alice).core.state.splice is None
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
        await pay(alice, bob, 1_000_000)


@pytest.mark.trio
async def test_a_commitment_on_the_splice_revoked_before_the_lock_is_punished_after_it(tmp_path: Path) -> None:
    """Bob keeps his commitment on the splice's funding, revokes it by a payment before the lock, and
    broadcasts it once both locked (Bob's splice_locked reaches Alice before she reads the splice's
    block: the channel moves to the splice in one step): Alice's monitor of the new funding knows it
    and takes everything."""
    async with two_nodes(tmp_path) as (pair, alice, bob):
        await open_channel(pair, alice, bob, "static_remotekey")
        lock_after_the_peer(alice)
        splice_txid, commitment = await splice_and_revoke(pair, alice, bob, keeper=bob)
        await pair.mine(1, alice, bob)
        await wait_until(lambda: locked_on(alice, splice_txid) and locked_on(bob, splice_txid), "spliced")
        await wait_until(lambda: monitor_on(alice, splice_txid), "Alice's monitor follows")
        await punished(pair, alice, bob, commitment, FUNDING_SAT + 200_000)


@pytest.mark.trio
async def test_the_monitor_of_an_unlocked_splice_survives_a_restart(tmp_path: Path) -> None:
    """Bob's monitor moved to the confirmed splice Alice never locked; Bob restarts; Alice's revoked
    commitment on the splice is then punished all the same."""
    async with alice_alone(tmp_path) as (pair, alice):
        bob = pair.node("bob", False)
        async with running(bob):
            await open_channel(pair, alice, bob, "static_remotekey")
            withhold_splice_locked(alice)
            splice_txid, commitment = await splice_and_revoke(pair, alice, bob)
            await pair.mine(2, alice, bob)
            await wait_until(lambda: monitor_on(bob, splice_txid), "Bob's monitor follows the unlocked splice")
            assert not pending(bob).locked_received  # type: ignore[union-attr]
        bob = pair.node("bob", False)
        async with running(bob):
            await wait_until(lambda: monitor_on(bob, splice_txid), "the monitor loaded on the splice")
            status = await broadcast_until_resolved(pair, bob, alice, commitment)
            assert status["commitment"]["txid"] == commitment.txid_hex and status["commitment"]["kind"] == "revoked"


@pytest.mark.trio
async def test_a_splice_asked_right_after_a_reconnection_waits_for_channel_reestablish(tmp_path: Path) -> None:
    """``splice`` asked the moment the peer is connected again, before the channel_reestablish
    exchange (a splice-out at a given feerate: nothing to ask the wallet or the chain first): the
    call waits for the exchange (the channel cannot quiesce before), then splices."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_connect_open(alice, bob)
        cid = only_channel(alice).channel_id.hex()
        channels(bob).disconnect_peer(alice.node_id, "a reconnection")
        await wait_until(lambda: not only_channel(alice).core.state.connected and not only_channel(bob).core.state.connected, "disconnected")
        await bob.connect(alice.addresses[0])
        s = only_channel(alice).core.state
        assert not s.connected or s.awaiting_reestablish  # (the splice is asked before the exchange)
        result = await channels(alice).splice(cid, -200_000, feerate=2)
        assert pending(alice) is not None and pending(alice).outpoint.txid_hex == result["splice_txid"]  # type: ignore[union-attr]
        await wait_until(lambda: source.core.find_transaction(bytes.fromhex(result["splice_txid"])[::-1]) is not None, "the splice broadcast")


@pytest.mark.trio
@pytest.mark.parametrize("peer", ["signed", "never_signed"])
async def test_the_coins_of_a_splice_kept_over_a_restart_stay_reserved_until_it_confirms_or_ends(tmp_path: Path, peer: str) -> None:
    """Alice splices in; her commitment_signed left and Bob signs first, so she keeps the splice
    over a restart (his tx_signatures may have left). At her start the wallet still holds the
    splice's coins (not freed as an ended attempt's). If Bob had signed (his tx_signatures lost),
    channel_reestablish completes the splice and the coins stay held until it confirms; if he
    never got her commitment_signed, he forgot the splice and answers her next_funding with
    tx_abort: the splice ends and the coins are free again."""
    import trio

    from lnpmsg.channels.interactive_parts import own_outpoints
    from lnpmsg.channels.messages import CommitmentSigned
    from lnpmsg.channels.messages_v2 import TxSignatures
    from lnpmsg.channels.splice_sign import kept

    def splice_coins(node) -> set:
        sp = pending(node)
        return own_outpoints(sp.inputs) if sp is not None else set()

    def reserved(node) -> set:
        return set(node.apps["chain"].wallet.reserved())

    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = AppPair(source, tmp_path, network)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await pair.fund_connect_open(alice, bob)
            cid = only_channel(alice).channel_id.hex()
            if peer == "signed":
                withhold(bob, TxSignatures)
            else:
                withhold(alice, CommitmentSigned)  # (from now on only the splice's)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channels(alice).splice, cid, 200_000)  # (cut by the stop)
                await wait_until(lambda: pending(alice) is not None and kept(only_channel(alice).core), "alice's commitment_signed left")
                if peer == "signed":
                    await wait_until(lambda: pending(bob) is not None and pending(bob).signatures_sent, "bob's tx_signatures sent (lost)")  # type: ignore[union-attr]
                nursery.cancel_scope.cancel()
            coins = splice_coins(alice)
            assert coins and reserved(alice) == coins and not pending(alice).signed  # type: ignore[union-attr]
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            assert pending(alice) is not None and splice_coins(alice) == coins
            assert reserved(alice) == coins  # held at the start, for the kept splice
            await bob.connect(alice.addresses[0])
            if peer == "signed":
                await wait_until(lambda: pending(alice) is not None and pending(alice).signed and settled(alice), "the splice completed")  # type: ignore[union-attr]
                assert reserved(alice) == coins  # (until it confirms)
                txid = pending(alice).outpoint.txid_hex  # type: ignore[union-attr]
                await wait_until(lambda: source.core.find_transaction(bytes.fromhex(txid)[::-1]) is not None, "the splice broadcast")
                await source.mine(2)
                await wait_until(lambda: locked_on(alice, txid) and locked_on(bob, txid), "spliced")
            else:
                await wait_until(lambda: pending(alice) is None and settled(alice) and settled(bob), "the splice ended by bob's tx_abort")
                assert only_channel(alice).core.state.splices == 0
            await wait_until(lambda: not reserved(alice), "the splice's coins no longer held")


@pytest.mark.trio
@pytest.mark.parametrize("spent", ["after", "before", "reorged"])
async def test_a_splice_the_peer_forgot_after_our_signatures_ends_once_an_input_is_spent_elsewhere(tmp_path: Path, spent: str) -> None:
    """Alice splices in; Bob (no coins: he signs first) sent his tx_signatures, lost on the way; Alice
    forgets the splice (as a node may that never signed) and answers Bob's next_funding with
    tx_abort. Bob must keep it (Alice holds his signatures: BOLT 2, until an input is spent
    elsewhere): no other splice meanwhile. Alice spends her coin elsewhere (after her tx_abort, or
    mined before it, or after it and its block reorganized out before it was deep enough, the spend
    mined again); once that is buried Bob forgets the splice too, and splices again."""
    from dataclasses import replace

    from lnpmsg.bitcoin.tx import TxIn, TxOut
    from lnpmsg.channels.messages_v2 import TxSignatures
    from lnpmsg.channels.splice_forgotten import FORGOTTEN_SPENT_DEPTH

    async with two_nodes(tmp_path) as (pair, alice, bob):
        cid = await open_channel(pair, alice, bob, "static_remotekey")
        release = withhold(bob, TxSignatures)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channels(alice).splice, cid, 200_000)  # (never signed: cut below)
            await wait_until(lambda: pending(bob) is not None and pending(bob).signatures_sent, "Bob's tx_signatures sent (lost)")  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
        release()
        splice_tx = Tx.parse(pending(alice).tx)  # type: ignore[union-attr,arg-type]
        only_channel(alice).core.state.splice = only_channel(alice).core.state.quiesce = None  # Alice forgets it

        async def spend_alices_coin() -> None:
            shared = pending(bob).shared.outpoint  # type: ignore[union-attr]
            (coin,) = [i.prevout for i in splice_tx.inputs if i.prevout != shared]
            wallet = alice.apps["chain"].wallet  # type: ignore[attr-defined]
            value = Tx.parse(await pair.source.find_transaction(coin.txid)).outputs[coin.vout].amount_sat
            spend = Tx(2, (TxIn(coin),), (TxOut(value - 1_000, script_for_address(wallet.new_address(), "bcrt")),))
            spend = replace(spend, inputs=(replace(spend.inputs[0], witness=wallet.sign_inputs(spend, [0])[0]),))
            await pair.source.broadcast(spend.raw)
            await pair.mine(1, alice, bob)
            if spent == "reorged":  # its block leaves the chain 5 deep; it is mined again in the next one
                spent_at = (await pair.source.tip()).height
                await pair.mine(FORGOTTEN_SPENT_DEPTH - 2, alice, bob)
                await invalidate(pair.source, spent_at)
                await wait_until(lambda: channels(bob).onchain.done_height == spent_at - 1, "Bob follows the reorg")  # type: ignore[union-attr]
                with contextlib.suppress(ChainError):
                    await pair.source.broadcast(spend.raw)  # (unless back in the mempool)
                await pair.mine(1, alice, bob)
                assert pair.source.core.find_transaction(spend.txid)[1] is not None  # type: ignore[index]

        channels(bob).disconnect_peer(alice.node_id, "a reconnection")
        await wait_until(lambda: not only_channel(alice).core.state.connected and not only_channel(bob).core.state.connected, "apart")
        if spent == "before":
            await spend_alices_coin()
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: pending(bob) is not None and pending(bob).peer_forgot and settled(bob), "Alice's tx_abort at Bob")  # type: ignore[union-attr]
        assert (await channels(bob).listchannels())["channels"][0]["splice"]["peer_forgot"]
        with pytest.raises(ChainAppError, match="another splice is pending"):
            await channels(bob).splice(cid, -50_000)
        if spent != "before":
            await spend_alices_coin()
        await pair.mine(FORGOTTEN_SPENT_DEPTH - 2, alice, bob)
        assert pending(bob) is not None  # (not deep enough yet)
        await pair.mine(1, alice, bob)
        await wait_until(lambda: pending(bob) is None, "Bob forgot the splice")
        result = await channels(bob).splice(cid, -50_000)
        await wait_until(lambda: pending(alice) is not None and pending(alice).signed, "the new splice signed")  # type: ignore[union-attr]
        assert result["splice_txid"] != splice_tx.txid_hex
