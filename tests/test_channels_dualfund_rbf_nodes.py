"""Fee bumping of a dual-funded channel's funding between two lnpmsg nodes in memory, on one
embedded regtest chain: ``bumpchannelopen`` (tx_init_rbf) with only the opener's coins and with
both sides', the bump replaces the first version in the mempool (BIP 125), is mined, and the
channel opens on it, pays both ways and closes; when the *first* version is mined instead (a
block with it), the channel opens on that one; refusals come back as errors, the channel intact;
no bump while the funding is in a block, and again once a reorganization takes it out (while the
nodes run, or while they are down)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from test_channels_app import balances, chain, channels, only_channel, pay, settled, wait_until, withhold
from test_channels_dualfund_nodes import FUNDING_SAT, dual_fund_pair, fund, node, reserved
from test_channels_onchain import invalidate

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.state import Phase
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError


def _doubled(n) -> int:
    """Twice the funding's feerate, in sat/vB (BIP 125 wants more absolute fee than 25/24 gives)."""
    return -(-only_channel(n).core.state.dual.feerate_per_kw * 2 // 250)


@pytest.mark.trio
@pytest.mark.parametrize(("contribute", "mined"), [(0, "bump"), (300_000, "bump"), (300_000, "first")],
                         ids=["opener_only", "both", "first_mined"])  # fmt: skip
async def test_bump_the_funding_then_open_on_the_mined_version(tmp_path: Path, contribute: int, mined: str) -> None:
    async with dual_fund_pair(tmp_path, contribute) as (source, alice, bob):
        opened = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
        cid = opened["channel_id"]
        first = Tx.parse(only_channel(alice).core.state.funding_tx)
        # the accepter cannot bump; a feerate below 25/24 of the first is refused before anything is sent
        with pytest.raises(ChainAppError, match="only the opener"):
            await channels(bob).bumpchannelopen(cid)
        with pytest.raises(ChainAppError, match="below 25/24"):
            await channels(alice).bumpchannelopen(cid, feerate=1)
        bumped = await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice))
        second = Tx.parse(only_channel(alice).core.state.funding_tx)
        assert bumped["funding_txid"] == second.txid_hex != first.txid_hex
        assert bumped["previous_funding_txids"] == [first.txid_hex]
        listed = (await channels(bob).listchannels())["channels"][0]
        assert [c.split(":")[0] for c in listed["funding_candidates"]] == [first.txid_hex]
        assert listed["funding_outpoint"].startswith(second.txid_hex)
        assert only_channel(bob).core.state.funding_outpoint == only_channel(alice).core.state.funding_outpoint
        assert {i.prevout for i in second.inputs} == {i.prevout for i in first.inputs}
        assert len(second.inputs) == (2 if contribute else 1)
        await wait_until(lambda: source.core.find_transaction(second.txid) is not None, "the bump in the mempool")
        assert source.core.find_transaction(first.txid) is None  # BIP 125: replaced
        if mined == "first":
            result = await source.submit_transactions_in_block([first])  # a miner that saw only the first
            assert result.accepted, result
            await source.mine(1)
            confirmed = first
        else:
            await source.mine(2)
            confirmed = second
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
        # (the current version may be ready before the block's check of the versions forgot the others)
        await wait_until(lambda: all(only_channel(n).core.state.dual.previous == () for n in (alice, bob)), "the other versions forgotten")
        for n in (alice, bob):
            s = only_channel(n).core.state
            assert s.funding_outpoint.txid == confirmed.txid and s.dual.previous == (), n is alice
            assert s.funding_tx == confirmed.raw
        assert source.core.find_transaction(confirmed.txid)[1] is not None  # type: ignore[index]
        # each channel monitor follows the version that confirmed (set up on the first)
        await wait_until(lambda: all(channels(n).onchain.status(only_channel(n)) is not None and channels(n).onchain.status(
            only_channel(n))["funding"].startswith(confirmed.txid_hex) for n in (alice, bob)), "the monitors follow the funding")
        await wait_until(lambda: reserved(alice) == 0 and reserved(bob) == 0, "the funding's coins no longer reserved")
        for n in (alice, bob):  # no coin of the version that did not confirm (its change never exists)
            gone = second if confirmed is first else first
            assert all(u.outpoint.txid != gone.txid for u in n.apps["chain"].wallet.list_funds())  # type: ignore[attr-defined]
        assert balances(alice)[:2] == (FUNDING_SAT * 1000, contribute * 1000)
        await pay(alice, bob, 50_000_000)
        await pay(bob, alice, 20_000_000)
        closed = await channels(bob).closechannel(cid)
        assert closed["state"] == "closed"
        await wait_until(lambda: only_channel(alice).phase is Phase.CLOSED, "alice closed")


def test_the_command_line_asks_the_bump_in_sat_per_vbyte() -> None:
    import argparse

    from lnpmsg.channels.commands import COMMANDS, _request, add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), default_data_dir=Path("."))
    assert "bumpchannelopen" in COMMANDS
    method, params, _ = _request(parser.parse_args(["bumpchannelopen", "ab" * 32, "--feerate", "20", "--json"]))
    assert method == "channels.bumpchannelopen" and params == {"channel": "ab" * 32, "feerate": 20}
    assert _request(parser.parse_args(["bumpchannelopen", "ab" * 32]))[1] == {"channel": "ab" * 32}
    with pytest.raises(SystemExit):
        parser.parse_args(["bumpchannelopen", "ab" * 32, "--feerate", "0"])


#: both speak dual funding, Bob puts 300k sat into the opens he accepts
POLICIES = {"alice": OpeningPolicy(dual_fund=True), "bob": OpeningPolicy(dual_fund=True, dual_fund_contribute_sat=300_000)}


@asynccontextmanager
async def opened(tmp_path: Path, network: MemoryNetwork, source) -> AsyncIterator[tuple[Any, Any, str, Tx]]:
    """Alice and Bob running (their wallets funded), Alice's v2 channel to Bob open and unconfirmed:
    (alice, bob, channel id, its funding); both stop at the end of the block."""
    alice = node(tmp_path, network, source, "alice", POLICIES["alice"], True)
    bob = node(tmp_path, network, source, "bob", POLICIES["bob"], False)
    async with running(alice, bob):
        await fund(source, alice, 3_000_000)
        await fund(source, bob, 2_000_000)
        await bob.connect(alice.addresses[0])
        cid = (await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT))["channel_id"]
        yield alice, bob, cid, Tx.parse(only_channel(alice).core.state.funding_tx)


def _again(tmp_path: Path, network: MemoryNetwork, source, old, name: str, policy: OpeningPolicy):
    """``old`` (``name``) once more, from its data directories: its key, its wallet and channels."""
    from lnpmsg.channels.app import ChannelsApp
    from lnpmsg.channels.params import ChannelConfig
    from lnpmsg.node.node import Node, NodeConfig
    from lnpmsg.wallet.app import ChainApp

    n = Node(old.key, NodeConfig(listen=["mem://"] if name == "alice" else [], network="regtest"),
             transports={"mem": network.transport()})  # fmt: skip
    n.mount(ChainApp(tmp_path / name / "wallet", source=source))
    n.mount(ChannelsApp(tmp_path / name / "channels", config=ChannelConfig(minimum_depth=2), policy=policy))
    return n


@pytest.mark.trio
async def test_the_first_version_mined_while_the_nodes_were_down_opens_the_channel(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        async with opened(tmp_path, network, source) as (alice, bob, cid, first):
            await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice))
        # the first version is mined while both nodes are down (it spends the bump's inputs: not a double spend)
        assert (await source.submit_transactions_in_block([first])).accepted
        await source.mine(1)
        # both nodes again, from their data directories
        alice, bob = (_again(tmp_path, network, source, n, name, POLICIES[name]) for name, n in (("alice", alice), ("bob", bob)))
        async with running(alice, bob):
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
            for n in (alice, bob):
                assert only_channel(n).core.state.funding_outpoint.txid == first.txid
            await wait_until(lambda: reserved(alice) == 0 and reserved(bob) == 0, "the funding's coins no longer reserved")
            await pay(alice, bob, 50_000_000)
            # the static channel backup names the version that confirmed
            from lnpmsg.channels.backup import decode_backup

            def backed_up() -> list[bytes]:
                app = channels(alice)
                return [e.funding_outpoint.txid for e in decode_backup(app.backup_path.read_bytes(), app._manager().seed)]

            await wait_until(lambda: backed_up() == [first.txid], "the backup names the first version")


@pytest.mark.trio
async def test_a_force_close_before_the_first_version_is_mined_goes_on_chain_with_it(tmp_path: Path) -> None:
    async with dual_fund_pair(tmp_path, 300_000) as (source, alice, bob):
        cid = (await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT))["channel_id"]
        first = Tx.parse(only_channel(alice).core.state.funding_tx)
        await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice))
        await channels(alice).closechannel(cid, force=True)  # our commitment of the bump
        assert only_channel(alice).phase is Phase.FAILED
        assert (await source.submit_transactions_in_block([first])).accepted  # the first version confirms
        await wait_until(lambda: only_channel(alice).core.state.funding_outpoint.txid == first.txid, "alice follows the first")

        def committed() -> bool:  # our commitment spending the first version's output, in the mempool
            raw = only_channel(alice).core.latest_commitment_tx()
            return raw is not None and source.core.find_transaction(Tx.parse(raw).txid) is not None

        await source.mine(1)
        await wait_until(committed, "our commitment of the first version broadcast")
        commitment = Tx.parse(only_channel(alice).core.latest_commitment_tx())
        outpoint = only_channel(alice).core.state.funding_outpoint
        assert commitment.inputs[0].prevout == outpoint and outpoint.txid == first.txid
        await source.mine(1)
        assert source.core.find_transaction(commitment.txid)[1] is not None  # type: ignore[index]


@pytest.mark.trio
async def test_a_bump_the_accepter_cannot_pay_is_refused_and_the_channel_stays(tmp_path: Path) -> None:
    # Bob's 302_000 sat: just enough for his share and its fee at the first rate
    async with dual_fund_pair(tmp_path, 300_000, bob_sat=302_000) as (source, alice, bob):
        cid = (await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT))["channel_id"]
        assert only_channel(alice).core.state.funding_sat == FUNDING_SAT + 300_000
        before = only_channel(alice).core.state.funding_outpoint
        with pytest.raises(ChainAppError, match="peer aborted: our contribution cannot pay the higher fee"):
            await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice) * 20)
        for n in (alice, bob):
            assert only_channel(n).phase is Phase.AWAIT_READY and only_channel(n).core.state.funding_outpoint == before
        await source.mine(2)
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways on the first version")


@pytest.mark.trio
@pytest.mark.parametrize("asked", ["at_the_connection", "as_the_answer_is_handled"])
async def test_a_bump_asked_right_after_a_reconnection_waits_for_the_answer_to_next_funding(tmp_path: Path, asked: str) -> None:
    """Alice signs a bump's attempt first (Bob's coins are bigger); her tx_signatures never reach Bob, who
    forgets the attempt at the disconnection while she keeps it. At the reconnection her
    channel_reestablish names it (``next_funding``) and Bob answers ``tx_abort``: the attempt is set
    aside, the previous version stands. A bump asked right after the connection (before that answer),
    or while Alice handles it (the channel settled in memory, the attempt's end not yet reported),
    waits for the answer and then completes: the old attempt's end is not taken for the new one's."""
    import trio

    from lnpmsg.channels.dualfund_rbf import RbfAborted
    from lnpmsg.channels.messages_v2 import TxSignatures

    async with dual_fund_pair(tmp_path, 1_500_000, bob_sat=3_500_000) as (source, alice, bob):
        cid = (await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT))["channel_id"]
        first = only_channel(alice).core.state.funding_outpoint
        release = withhold(alice, TxSignatures)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channels(alice).bumpchannelopen, cid, _doubled(alice))  # (cut by the disconnection)
            await wait_until(lambda: only_channel(alice).core.state.dual.signatures_sent and only_channel(alice).phase is Phase.DUAL_SIGNING,
                             "alice's tx_signatures of the attempt sent (lost)")  # fmt: skip
            channels(bob).disconnect_peer(alice.node_id, "the attempt's tx_signatures were lost")
            await wait_until(lambda: not only_channel(alice).core.state.connected and not only_channel(bob).core.state.connected, "disconnected")
            nursery.cancel_scope.cancel()
        release()
        attempt = only_channel(alice).core.state.funding_outpoint
        assert attempt != first and only_channel(bob).core.state.funding_outpoint == first  # kept by Alice, forgotten by Bob

        manager = channels(alice).manager
        assert manager is not None
        handle_events = manager._on_events
        bumps: list[dict] = []

        async def bump() -> None:
            bumps.append(await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice)))

        async with trio.open_nursery() as nursery:
            if asked == "as_the_answer_is_handled":

                async def bump_first(channel: object, events: list) -> None:
                    if any(isinstance(e, RbfAborted) for e in events) and not bumps:
                        nursery.start_soon(bump)
                        await trio.testing.wait_all_tasks_blocked()  # (the bump is asked, and queued behind this job)
                    await handle_events(channel, events)

                manager._on_events = bump_first  # type: ignore[method-assign]
            await bob.connect(alice.addresses[0])
            if asked == "at_the_connection":
                nursery.start_soon(bump)
            await wait_until(lambda: bool(bumps), "the bump done")
        manager._on_events = handle_events  # type: ignore[method-assign]
        (bumped,) = bumps
        assert bumped["previous_funding_txids"][:2] == [first.txid_hex, attempt.txid_hex] or first.txid_hex in bumped["previous_funding_txids"]
        for n in (alice, bob):
            assert only_channel(n).core.state.funding_outpoint.txid_hex == bumped["funding_txid"]
        await source.mine(2)
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways on the bump")


@pytest.mark.trio
async def test_no_bump_while_the_funding_is_in_a_block_and_again_once_a_reorganization_took_it_out(tmp_path: Path) -> None:
    async with dual_fund_pair(tmp_path, 300_000) as (source, alice, bob):
        cid = (await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT))["channel_id"]
        first = Tx.parse(only_channel(alice).core.state.funding_tx)
        await wait_until(lambda: source.core.find_transaction(first.txid) is not None, "the funding in the mempool")
        await source.mine(1)  # one block: below the minimum depth (2), no channel_ready
        await wait_until(lambda: all(only_channel(n).core.state.dual.mined for n in (alice, bob)), "the funding seen in a block")
        with pytest.raises(ChainAppError, match="in a block"):
            await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice))
        # the block leaves the chain (the funding goes back to the mempool); an empty block takes its place
        await invalidate(source, (await source.tip()).height)
        assert (await source.submit_transactions_in_block([])).accepted
        await wait_until(lambda: not any(only_channel(n).core.state.dual.mined for n in (alice, bob)), "the reorganization seen")
        bumped = await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice))
        second = Tx.parse(only_channel(alice).core.state.funding_tx)
        assert bumped["funding_txid"] == second.txid_hex != first.txid_hex
        await wait_until(lambda: source.core.find_transaction(second.txid) is not None, "the bump in the mempool")
        await source.mine(2)
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
        await wait_until(lambda: all(only_channel(n).core.state.dual.previous == () for n in (alice, bob)), "the first version forgotten")
        assert all(only_channel(n).core.state.funding_outpoint.txid == second.txid for n in (alice, bob))  # type: ignore[union-attr]
        await pay(alice, bob, 50_000_000)


@pytest.mark.trio
async def test_a_reorganization_while_the_nodes_were_down_is_seen_at_the_start(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        async with opened(tmp_path, network, source) as (alice, bob, cid, first):
            await wait_until(lambda: source.core.find_transaction(first.txid) is not None, "the funding in the mempool")
            await source.mine(1)
            await wait_until(lambda: all(only_channel(n).core.state.dual.mined for n in (alice, bob)), "the funding seen in a block")
        # while both nodes are down the block leaves the chain; an empty one takes its place
        await invalidate(source, (await source.tip()).height)
        assert (await source.submit_transactions_in_block([])).accepted
        alice, bob = (_again(tmp_path, network, source, n, name, POLICIES[name]) for name, n in (("alice", alice), ("bob", bob)))
        async with running(alice, bob):
            await wait_until(lambda: not any(only_channel(n).core.state.dual.mined for n in (alice, bob)), "the reorganization seen")
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: all(not only_channel(n).core.state.awaiting_reestablish for n in (alice, bob)), "reestablished")
            bumped = await channels(alice).bumpchannelopen(cid, feerate=_doubled(alice))
            second = bytes.fromhex(bumped["funding_txid"])[::-1]
            await wait_until(lambda: source.core.find_transaction(second) is not None, "the bump in the mempool")
            await source.mine(2)
            await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
            assert all(only_channel(n).core.state.funding_outpoint.txid == second for n in (alice, bob))  # type: ignore[union-attr]
