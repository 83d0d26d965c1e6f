"""Fee bumping of a splice between two lnpmsg nodes in memory, on one embedded regtest chain:
``bumpsplice`` by the splice's initiator or by its peer, the bump replaces the first version in
the mempool (BIP 125), is mined and locked, or the *first* version is mined instead and the
channel locks on that one; payments while both versions wait and after; a restart of both nodes
between the bump and its confirmation; refusals as clear errors (a bump waits for a block after the
last version); a version whose block a reorganization takes out (while the nodes run, or while
they are down) may be bumped again, and one the new branch mines at once is found; the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_channels_app import FUNDING_SAT, balances, chain, channels, only_channel, pay, running_pair, settled, wait_until
from test_channels_app import Pair as AppPair
from test_channels_onchain import invalidate
from test_channels_splice_nodes import locked_on, monitor_on, pending

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError

SPLICE_IN = 300_000


def first_version(node) -> Tx:
    sp = pending(node)
    assert sp is not None and sp.signed and sp.tx is not None
    return Tx.parse(sp.previous[0].tx if sp.previous else sp.tx)


async def open_and_splice(pair, alice, bob) -> tuple[str, dict]:
    """The channel open, Alice's splice-in of SPLICE_IN at 2 sat/vB signed by both: (channel id, its result)."""
    await pair.fund_connect_open(alice, bob)
    cid = only_channel(alice).channel_id.hex()
    spliced = await channels(alice).splice(cid, SPLICE_IN, feerate=2)
    await wait_until(lambda: pending(bob) is not None and pending(bob).signed, "Alice's tx_signatures at Bob")  # type: ignore[union-attr]
    return cid, spliced


async def a_block_without_the_splice(*nodes) -> None:
    """An empty block, seen by every node: the splice's last version may be bumped (it waits for one
    block by default: OpeningPolicy.rbf_wait_blocks)."""
    source = channels(nodes[0]).chain.source
    await wait_until(lambda: all((sp := pending(n)) is not None and sp.signed for n in nodes), "the last version signed by all")
    assert (await source.submit_transactions_in_block([])).accepted
    await wait_until(lambda: all(pending(n).blocks_waited >= 1 for n in nodes), "the block seen by all")  # type: ignore[union-attr]


async def splice_in_a_block(pair, alice, bob) -> tuple[str, Tx]:
    """The channel open and Alice's splice-in signed, then one block with it (below the channel's minimum
    depth, 2: not locked), seen by both: (channel id, the splice)."""
    cid, _ = await open_and_splice(pair, alice, bob)
    splice = first_version(alice)
    await wait_until(lambda: pair.source.core.find_transaction(splice.txid) is not None, "the splice in the mempool")
    await pair.source.mine(1)
    await wait_until(lambda: all(pending(n).mined for n in (alice, bob)), "the splice seen in a block")  # type: ignore[union-attr]
    return cid, splice


async def bump_signed(bumper, cid: str, *nodes) -> dict:
    """After a block without the splice, ``bumper`` bumps the splice to 6 sat/vB; returns once every
    node holds the new version signed."""
    await a_block_without_the_splice(*nodes)
    bumped = await channels(bumper).bumpsplice(cid, feerate=6)

    def signed_everywhere() -> bool:
        return all((sp := pending(n)) is not None and sp.signed and sp.outpoint.txid_hex == bumped["splice_txid"] for n in nodes)  # type: ignore[union-attr]

    await wait_until(signed_everywhere, "the bump signed by both")
    return bumped


@pytest.mark.trio
@pytest.mark.parametrize(("bumper", "mined"), [("alice", "bump"), ("bob", "bump"), ("alice", "first")])
async def test_bump_a_splice_then_lock_on_the_mined_version(tmp_path: Path, bumper: str, mined: str, capsys) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        cid, spliced = await open_and_splice(pair, alice, bob)
        start = balances(alice)[:2]
        first = first_version(alice)
        await wait_until(lambda: source.core.find_transaction(first.txid) is not None, "the splice in the mempool")
        node = alice if bumper == "alice" else bob
        with pytest.raises(ChainAppError, match="below 25/24"):
            await channels(node).bumpsplice(cid, feerate=1)
        await wait_until(lambda: pending(node).signed, "the splice signed")  # type: ignore[union-attr]
        with pytest.raises(ChainAppError, match="signed 0 block.s. ago: a bump waits for 1"):  # (BOLT 2: not "recently")
            await channels(node).bumpsplice(cid, feerate=6)
        assert only_channel(alice).core.state.quiesce is None  # refused before quiescing
        bumped = await bump_signed(node, cid, alice, bob)
        assert bumped["previous_splice_txids"] == [spliced["splice_txid"]] and bumped["feerate_per_kw"] == 1500
        command_line_output(bumped, capsys)
        second = Tx.parse(pending(alice).tx)  # type: ignore[union-attr]
        assert second.txid_hex == bumped["splice_txid"] != first.txid_hex
        listed = (await channels(bob).listchannels())["channels"][0]
        assert [v["txid"] for v in listed["splice"]["previous_versions"]] == [first.txid_hex]
        await wait_until(lambda: source.core.find_transaction(second.txid) is not None, "the bump in the mempool")
        assert source.core.find_transaction(first.txid) is None  # BIP 125: replaced
        await pay(alice, bob, 7_000_000)  # while both versions wait: a commitment for each funding
        await pay(bob, alice, 2_000_000)
        bob_version = pending(bob)
        assert bob_version is not None
        if mined == "first":
            assert (await source.submit_transactions_in_block([first])).accepted  # a miner that saw only the first
            await source.mine(1)
            confirmed = first
        else:
            await source.mine(2)
            confirmed = second
        await wait_until(lambda: locked_on(alice, confirmed.txid_hex) and locked_on(bob, confirmed.txid_hex), "spliced")
        # Alice's coins pay her part of the bump (her change shrinks): her balance gains what it did;
        # Bob's balance paid the common fields of a bump he made
        bob_paid = -bob_version.our_contribution if confirmed is second else 0
        for n in (alice, bob):
            assert only_channel(n).core.state.funding_sat == FUNDING_SAT + SPLICE_IN - bob_paid
        await wait_until(lambda: monitor_on(alice, confirmed.txid_hex) and monitor_on(bob, confirmed.txid_hex), "monitors follow")
        await wait_until(lambda: not alice.apps["chain"].wallet.reserved(), "the splice's coins no longer reserved")  # type: ignore[attr-defined]
        moved = 5_000_000
        assert balances(alice)[0] == start[0] + SPLICE_IN * 1000 - moved
        assert balances(bob)[0] == start[1] + moved - bob_paid * 1000
        await pay(alice, bob, 20_000_000)
        await pay(bob, alice, 10_000_000)


@pytest.mark.trio
async def test_both_nodes_restart_between_the_bump_and_its_confirmation(tmp_path: Path) -> None:
    async with chain(tmp_path) as source:
        pair = AppPair(source, tmp_path, MemoryNetwork())
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            cid, _ = await open_and_splice(pair, alice, bob)
            bumped = await bump_signed(alice, cid, alice, bob)
            await pay(alice, bob, 3_000_000)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            for n in (alice, bob):
                sp = pending(n)
                assert sp is not None and sp.signed and sp.outpoint.txid_hex == bumped["splice_txid"] and len(sp.previous) == 1  # type: ignore[union-attr]
            second = bytes.fromhex(bumped["splice_txid"])[::-1]
            await wait_until(lambda: source.core.find_transaction(second) is not None, "the bump in the mempool (rebroadcast)")
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
            await pay(bob, alice, 1_000_000)  # the batches over both versions after the restart
            await source.mine(2)
            await wait_until(lambda: locked_on(alice, bumped["splice_txid"]) and locked_on(bob, bumped["splice_txid"]), "spliced")
            await pay(alice, bob, 4_000_000)


@pytest.mark.trio
async def test_a_bump_without_a_pending_splice_is_a_clear_error(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (_, pair, alice, bob):
        await pair.fund_connect_open(alice, bob)
        cid = only_channel(alice).channel_id.hex()
        with pytest.raises(ChainAppError, match="no splice is pending"):
            await channels(alice).bumpsplice(cid, feerate=5)
        with pytest.raises(Exception, match="feerate must be a positive"):
            await channels(alice).bumpsplice(cid, feerate=0)
        assert only_channel(alice).core.state.quiesce is None
        await pay(alice, bob, 1_000_000)


def channel_commands():
    import argparse

    from lnpmsg.channels.commands import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), default_data_dir=Path("."))
    return parser


def command_line_output(result: dict, capsys) -> None:
    """``lnpmsg bumpsplice``'s words for a real ``channels.bumpsplice`` result, and its listchannels line."""
    from lnpmsg.channels.commands import _print_channel, _request

    _request(channel_commands().parse_args(["bumpsplice", result["channel_id"]]))[2](result)
    _print_channel(result)
    words = capsys.readouterr().out
    assert f"splice bumped to {result['feerate_per_kw']} sat/kw by {result['splice_txid']}" in words
    assert f"replacing {result['previous_splice_txids'][0]}" in words and f"replaces {result['previous_splice_txids'][0]}" in words


def test_the_command_line_asks_the_splice_bump_in_sat_per_vbyte() -> None:
    from lnpmsg.channels.commands import COMMANDS, _request

    parser = channel_commands()
    assert "bumpsplice" in COMMANDS
    method, params, show = _request(parser.parse_args(["bumpsplice", "103x1x0", "--feerate", "20", "--json"]))
    assert method == "channels.bumpsplice" and params == {"channel": "103x1x0", "feerate": 20}
    assert _request(parser.parse_args(["bumpsplice", "ab" * 32]))[1] == {"channel": "ab" * 32}
    with pytest.raises(SystemExit):
        parser.parse_args(["bumpsplice", "ab", "--feerate", "0"])
    help_text = parser._subparsers._group_actions[0].choices["bumpsplice"].format_help()  # type: ignore[union-attr]
    for taught in ("tx_init_rbf", "25/24", "SAT_PER_VB", "Every version may confirm", "Example"):
        assert taught in " ".join(help_text.split()), taught


@pytest.mark.trio
async def test_a_version_reorganized_out_of_the_chain_may_be_bumped_again(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        cid, first = await splice_in_a_block(pair, alice, bob)
        with pytest.raises(ChainAppError, match="in a block"):
            await channels(alice).bumpsplice(cid, feerate=6)
        # the block leaves the chain (the splice goes back to the mempool); an empty block takes its place
        await invalidate(source, (await source.tip()).height)
        assert (await source.submit_transactions_in_block([])).accepted
        await wait_until(lambda: not any(pending(n).mined for n in (alice, bob)), "the reorganization seen")  # type: ignore[union-attr]
        assert not any(locked_on(n, first.txid_hex) for n in (alice, bob))
        bumped = await bump_signed(bob, cid, alice, bob)  # either side may bump again
        await wait_until(lambda: source.core.find_transaction(first.txid) is None, "the bump replaced the splice")
        await source.mine(2)
        await wait_until(lambda: locked_on(alice, bumped["splice_txid"]) and locked_on(bob, bumped["splice_txid"]), "spliced")
        await pay(alice, bob, 4_000_000)


@pytest.mark.trio
async def test_a_version_mined_again_right_after_a_reorganization_locks(tmp_path: Path) -> None:
    """The first block of the new branch holds the splice again: it is found there (the blocks from the
    one that left the chain are read again), not only in the blocks after."""
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        _, first = await splice_in_a_block(pair, alice, bob)
        await invalidate(source, (await source.tip()).height)
        await source.mine(1)  # a new block at the same height holds the splice again
        await source.mine(1)  # its minimum depth
        await wait_until(lambda: locked_on(alice, first.txid_hex) and locked_on(bob, first.txid_hex), "spliced")
        await pay(alice, bob, 4_000_000)


@pytest.mark.trio
async def test_a_reorganization_while_the_nodes_were_down_is_seen_at_the_start(tmp_path: Path) -> None:
    async with chain(tmp_path) as source:
        pair = AppPair(source, tmp_path, MemoryNetwork())
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            cid, _ = await splice_in_a_block(pair, alice, bob)
        await invalidate(source, (await source.tip()).height)
        assert (await source.submit_transactions_in_block([])).accepted
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await wait_until(lambda: not any(pending(n).mined for n in (alice, bob)), "the reorganization seen at the start")  # type: ignore[union-attr]
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
            bumped = await bump_signed(alice, cid, alice, bob)
            await source.mine(2)
            await wait_until(lambda: locked_on(alice, bumped["splice_txid"]) and locked_on(bob, bumped["splice_txid"]), "spliced")


@pytest.mark.trio
async def test_the_wait_before_a_bump_counts_the_blocks_mined_while_the_nodes_were_stopped(tmp_path: Path) -> None:
    """Alice's splice is signed at the tip; both nodes stop, an empty block is mined, they start again.
    The splice records the height it was signed at (Bob: from Alice's splice_init locktime), so that
    block counts at the start: Alice bumps at once, before any block after the start, and Bob takes
    her tx_init_rbf."""
    async with chain(tmp_path) as source:
        pair = AppPair(source, tmp_path, MemoryNetwork())
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            cid, spliced = await open_and_splice(pair, alice, bob)
            signed_at = (await source.tip()).height
            assert all(pending(n).signed_height == signed_at and pending(n).blocks_waited == 0 for n in (alice, bob))  # type: ignore[union-attr]
        assert (await source.submit_transactions_in_block([])).accepted  # (while both are down)
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            await wait_until(lambda: all(pending(n).blocks_waited == 1 for n in (alice, bob)), "the block mined while stopped counted")  # type: ignore[union-attr]
            await bob.connect(alice.addresses[0])
            await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
            bumped = await channels(alice).bumpsplice(cid, feerate=6)
            assert bumped["previous_splice_txids"] == [spliced["splice_txid"]]
            await wait_until(lambda: all(pending(n).signed and pending(n).outpoint.txid_hex == bumped["splice_txid"] for n in (alice, bob)),  # type: ignore[union-attr]
                             "the bump signed by both")  # fmt: skip
            assert all(pending(n).signed_height == signed_at + 1 for n in (alice, bob))  # type: ignore[union-attr]  # (the new version counts from its own)
