"""A zero-conf channel whose funding is double-spent before it confirms (nodes in memory, the embedded regtest chain).

Sans-IO: a block's transaction spending an input of the funding (and not the funding itself) is a
double spend; the core fails the channel with no commitment to broadcast and an ``error``.
End to end: C pays B's hold invoice over C-A (confirmed) and A-B (zero-conf: B trusts A); B holds
it. A block then confirms a transaction spending the input of A's funding: A fails the channel
(logged at WARNING, a ``channel.failed`` event and ``listchannels`` with the reason), broadcasts no
commitment, and the HTLC it forwarded on it fails back to C at once; after a restart the channel
is still failed with its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from test_channels_alias_nodes import AliasNet, listed, the_channel
from test_channels_aliases import AliasPair
from test_payments_app import TIMEOUT, channels, net, paying, payments, wait_until
from test_payments_hold import event, hold_invoice

from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.channels.double_spend import (
    DOUBLE_SPENT,
    FundingDoubleSpent,
    FundingFound,
    conflicting_spend,
    double_spent,
    funding_wanted,
    unconfirmed_funding,
)
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import ChannelFailed
from lnpmsg.channels.records import restore
from lnpmsg.channels.app import ChannelEvent
from lnpmsg.channels.commands import _print_channel
from lnpmsg.channels.state import Phase
from lnpmsg.node.node import Node
from lnpmsg.testing import record_events
from lnpmsg.testing.nodes import running
from lnpmsg.wire import Error
from lnpmsg.wallet.spend import sign_input


def test_a_double_spend_is_another_transaction_spending_an_input_of_the_funding() -> None:
    a, b = OutPoint(b"\x01" * 32, 0), OutPoint(b"\x02" * 32, 1)
    funding = Tx(2, (TxIn(a), TxIn(b)), (TxOut(1000, b"\x00\x20" + bytes(32)),))
    other = Tx(2, (TxIn(OutPoint(b"\x03" * 32, 0)),), (TxOut(5, b""),))
    conflict = Tx(2, (TxIn(b),), (TxOut(900, b""),))
    assert conflicting_spend(funding, [other, funding]) is None  # the funding itself confirming is no double spend
    assert conflicting_spend(funding, [other, conflict]) == conflict


def test_the_fundee_keeps_the_funding_it_found_and_fails_on_its_double_spend_without_a_commitment() -> None:
    pair = AliasPair(type_bits=(46, 50), trusted=True)  # (sans-IO: test_channels_aliases' zero-conf pair)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()  # (ready at 0 confirmations)
    alice, bob = pair.alice.core, pair.bob.core
    assert alice.state.funding_tx and not funding_wanted(alice.state)
    assert bob.state.funding_tx is None and funding_wanted(bob.state)  # the fundee knows only the txid
    funding = Tx.parse(alice.state.funding_tx)
    with pytest.raises(LocalMisuse):  # another transaction is not taken for the funding
        pair.feed(pair.bob, FundingFound(Tx(2, funding.inputs, (TxOut(1, b""),)).raw))
    pair.feed(pair.bob, FundingFound(funding.raw))
    assert unconfirmed_funding(bob.state) == funding and not funding_wanted(bob.state)
    assert restore(bob.secrets, pair.bob.records).state == bob.state  # recorded: a restart keeps it
    out = pair.feed(pair.bob, FundingDoubleSpent(b"\x07" * 32, 103))
    (failed,) = [e for e in out.events if isinstance(e, ChannelFailed)]
    assert failed.commitment_tx is None and bob.state.phase is Phase.FAILED and double_spent(bob.state)
    assert [type(m).__name__ for m in out.messages] == ["Error"]


def _conflict(node: Node, funding: Tx) -> Tx:
    """A transaction of ``node``'s wallet spending the first input of its funding elsewhere."""
    wallet = node.apps["chain"].wallet  # type: ignore[attr-defined]
    coin = wallet._coins[funding.inputs[0].prevout]
    unsigned = Tx(2, (TxIn(coin.outpoint),), (TxOut(coin.txout.amount_sat - 2000, coin.txout.script_pubkey),))
    return unsigned.with_witness(0, sign_input(unsigned, 0, coin))


async def open_zeroconf(n: AliasNet, a: Node, b: Node) -> None:
    """A's wallet funded, A connected to B (who trusts A), and a zero-conf scid_alias channel A to B asked for."""
    await n.fund(a)
    await a.connect(b.addresses[0])
    await channels(a).fundchannel(b.node_id.hex(), 500_000, zeroconf=True, channel_type="scid_alias")


@pytest.mark.trio
async def test_a_double_spent_zeroconf_funding_fails_the_channel_and_its_forwards_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b, c = n.node("a"), n.node("b", trusts=("a",)), n.node("c")
        async with running(a, b, c):
            await n.fund(c)
            for _ in range(2):  # two coins for A: its funding spends both, the double spend only the first
                await n.source.faucet(a.apps["chain"].wallet.new_address(), 300_000)  # type: ignore[attr-defined]
            await n.source.mine(1)
            await a.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
            await n.open([(c, a, 1_000_000, 1_000_000)])
            await a.connect(b.addresses[0])
            await channels(a).fundchannel(b.node_id.hex(), 500_000, push_msat=10_000_000, zeroconf=True, channel_type="scid_alias")
            await wait_until(lambda: the_channel(a, b).phase is Phase.NORMAL and the_channel(b, a).phase is Phase.NORMAL, "zero-conf ready")  # type: ignore[attr-defined]
            ab = the_channel(a, b).core.state  # type: ignore[attr-defined]
            assert ab.short_channel_id == 0 and ab.funding_tx and len(Tx.parse(ab.funding_tx).inputs) == 2
            _, invoice = await hold_invoice(b, "held", 5_000_000)
            with record_events(b) as b_events, record_events(a) as a_events, caplog.at_level(logging.WARNING, logger="lnpmsg.channels.app"):
                async with paying(c, invoice["bolt11"]) as outcome:
                    await b_events.wait_for(event("invoice.accepted"), timeout=TIMEOUT)
                    # A's funding input goes to another transaction, in a block
                    conflict = _conflict(a, Tx.parse(ab.funding_tx))
                    assert (await n.source.submit_transactions_in_block([conflict])).accepted
                    await wait_until(lambda: the_channel(a, b).phase is Phase.FAILED, "A fails the channel")  # type: ignore[attr-defined]
                failed = await a_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.failed", timeout=TIMEOUT)
            assert "error" in outcome, outcome  # failed back upstream at once, not at the HTLC's expiry
            assert failed.reason.startswith(DOUBLE_SPENT) and conflict.txid_hex in failed.reason
            assert failed.txid == ""  # no commitment broadcast: it could never confirm
            row = await listed(a, b)
            assert row["state"] == "failed" and str(row["failure"]).startswith(DOUBLE_SPENT)
            assert any("double-spent" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
            # the wallet holds no coin for the funding any more (it will never confirm): the second is A's to spend again
            assert Tx.parse(ab.funding_tx).txid not in a.apps["chain"].wallet.reserved().values()  # type: ignore[attr-defined]
            (fwd,) = (await payments(a).listforwards())["forwards"]
            assert fwd["status"] == "failed"
            # B hears it from A's error (it cannot see the funding's inputs itself)
            await wait_until(lambda: the_channel(b, a).phase is Phase.FAILED, "B fails it too")  # type: ignore[attr-defined]
        # a restart replays the records: the channel stays failed, with its reason, and its monitor
        # does not take up a commitment that can never confirm
        a = n.node("a")
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="lnpmsg.channels"):
            async with running(a):
                await wait_until(lambda: channels(a).manager is not None and channels(a).running, "A started")  # type: ignore[attr-defined]
                row = await listed(a, b)
                assert row["state"] == "failed" and str(row["failure"]).startswith(DOUBLE_SPENT)
                assert (await payments(a).listforwards())["forwards"][0]["status"] == "failed"
                commitment = Tx.parse(the_channel(a, b).core.latest_commitment_tx())  # type: ignore[attr-defined]
                await n.source.mine(1)
                tip = (await n.source.tip()).height
                await wait_until(lambda: channels(a).onchain.done_height == tip, "A's monitors read the block")  # type: ignore[attr-defined]
                assert not [r for r in caplog.records if commitment.txid_hex in r.getMessage()]


@pytest.mark.trio
async def test_a_double_spend_mined_while_the_funder_was_down_fails_the_channel_at_start(tmp_path: Path) -> None:
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b = n.node("a"), n.node("b", trusts=("a",))
        async with running(b):
            async with running(a):
                await open_zeroconf(n, a, b)
                await wait_until(lambda: the_channel(a, b).phase is Phase.NORMAL and the_channel(b, a).phase is Phase.NORMAL, "zero-conf ready")  # type: ignore[attr-defined]
                ab = the_channel(a, b).core.state  # type: ignore[attr-defined]
                conflict = _conflict(a, Tx.parse(ab.funding_tx))
            assert (await n.source.submit_transactions_in_block([conflict])).accepted
            await n.source.mine(3)
            a = n.node("a")
            async with running(a):
                await wait_until(lambda: channels(a).manager is not None and the_channel(a, b).phase is Phase.FAILED, "failed at start")  # type: ignore[attr-defined]
                row = await listed(a, b)
                assert str(row["failure"]).startswith(DOUBLE_SPENT) and conflict.txid_hex in str(row["failure"])


@pytest.mark.trio
async def test_the_fundee_finds_the_funding_and_fails_the_channel_itself_when_it_is_double_spent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b = n.node("a"), n.node("b", trusts=("a",))
        async with running(a, b):
            await open_zeroconf(n, a, b)
            # B (the fundee) is told only the funding's txid: it looks the transaction up at the chain source
            await wait_until(lambda: the_channel(b, a).core.state.funding_tx is not None, "B has the funding")  # type: ignore[attr-defined]
            ab = the_channel(a, b).core.state  # type: ignore[attr-defined]
            assert the_channel(b, a).core.state.funding_tx == ab.funding_tx  # type: ignore[attr-defined]
            with record_events(b) as b_events, caplog.at_level(logging.INFO, logger="lnpmsg.channels.app"):
                conflict = _conflict(a, Tx.parse(ab.funding_tx))
                assert (await n.source.submit_transactions_in_block([conflict])).accepted
                failed = await b_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.failed", timeout=TIMEOUT)
                await wait_until(lambda: the_channel(a, b).phase is Phase.FAILED, "A fails it too")  # type: ignore[attr-defined]
            # B failed it itself (not "peer: ..."), even when A's error came before B read the block
            assert failed.reason.startswith(DOUBLE_SPENT) and conflict.txid_hex in failed.reason
            assert failed.txid == ""  # no commitment: it spends an output that will never exist
            row = await listed(b, a)
            assert row["state"] == "failed" and str(row["failure"]).startswith(DOUBLE_SPENT)
            assert not [r for r in caplog.records if "the commitment transaction" in r.getMessage()]  # (broadcast, or refused)


@pytest.mark.trio
async def test_the_fundee_keeps_the_funding_it_found_and_sees_a_double_spend_mined_while_it_was_down(tmp_path: Path) -> None:
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b = n.node("a"), n.node("b", trusts=("a",))
        async with running(a):
            async with running(b):
                await open_zeroconf(n, a, b)
                await wait_until(lambda: the_channel(b, a).core.state.funding_tx is not None, "B has the funding")  # type: ignore[attr-defined]
            conflict = _conflict(a, Tx.parse(the_channel(a, b).core.state.funding_tx))  # type: ignore[attr-defined]
            assert (await n.source.submit_transactions_in_block([conflict])).accepted  # (the funding leaves the mempool)
            await wait_until(lambda: the_channel(a, b).phase is Phase.FAILED, "A fails it")  # type: ignore[attr-defined]
        b = n.node("b", trusts=("a",))
        async with running(b):  # the funding's inputs were kept with the channel's records
            await wait_until(lambda: channels(b).manager is not None and the_channel(b, a).phase is Phase.FAILED, "failed at start")  # type: ignore[attr-defined]
            row = await listed(b, a)
            assert str(row["failure"]).startswith(DOUBLE_SPENT) and conflict.txid_hex in str(row["failure"])


@pytest.mark.trio
async def test_the_funders_error_before_the_fundee_read_the_block_broadcasts_no_commitment(tmp_path: Path) -> None:
    """The funder's ``error`` may come before the fundee's own reading of the block: the fundee reads
    the last blocks before it takes the error, and fails the channel for the double spend itself."""
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b = n.node("a"), n.node("b", trusts=("a",))
        async with running(a, b):
            await open_zeroconf(n, a, b)
            await wait_until(lambda: the_channel(b, a).core.state.funding_tx is not None, "B has the funding")  # type: ignore[attr-defined]
            # B's chain follower is held back: only A sees the block at once
            read_blocks, following = channels(b)._on_block, trio.Event()

            async def late(height: int) -> None:
                await following.wait()
                await read_blocks(height)

            channels(b)._on_block = late  # type: ignore[method-assign]
            with record_events(b) as b_events:
                conflict = _conflict(a, Tx.parse(the_channel(a, b).core.state.funding_tx))  # type: ignore[attr-defined]
                assert (await n.source.submit_transactions_in_block([conflict])).accepted
                failed = await b_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.failed", timeout=TIMEOUT)
            following.set()
            assert failed.reason.startswith(DOUBLE_SPENT) and conflict.txid_hex in failed.reason  # not "peer: ..."
            assert failed.txid == ""  # no commitment broadcast


def withhold_funding(funder: Node) -> list[bytes]:
    """The funder's channel app broadcasts no funding from now on: each one goes to the list returned."""
    withheld: list[bytes] = []
    broadcast = channels(funder)._broadcast

    async def withhold(raw_tx: bytes, what: str) -> None:
        if what == "funding":
            withheld.append(raw_tx)
        else:
            await broadcast(raw_tx, what)

    channels(funder)._broadcast = withhold  # type: ignore[method-assign]
    return withheld


@pytest.mark.trio
async def test_the_funders_error_on_a_funding_the_chain_never_saw_broadcasts_nothing_until_it_shows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The funder never broadcasts the funding of a zero-conf channel, then sends an ``error``: the fundee
    (which lacks the funding transaction, and whose source has none) fails the channel but keeps its
    commitment back, also after a restart; when the funding confirms after all, the commitment goes out."""
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b = n.node("a"), n.node("b", trusts=("a",))
        async with running(a):
            withheld = withhold_funding(a)
            async with running(b):
                await open_zeroconf(n, a, b)
                await wait_until(lambda: the_channel(a, b).phase is Phase.NORMAL and the_channel(b, a).phase is Phase.NORMAL, "zero-conf ready")  # type: ignore[attr-defined]
                ba = the_channel(b, a)
                funding = Tx.parse(withheld[0])
                assert await n.source.find_transaction(funding.txid) is None and ba.core.state.funding_tx is None  # type: ignore[attr-defined]
                commitment = Tx.parse(ba.core.latest_commitment_tx())  # type: ignore[attr-defined]
                with record_events(b) as b_events, caplog.at_level(logging.WARNING, logger="lnpmsg.channels.app"):
                    await a.peers[b.node_id].send(Error(channel_id=ba.channel_id, data=b"giving up").encode())  # type: ignore[attr-defined]
                    failed = await b_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.failed", timeout=TIMEOUT)
                assert failed.reason == "peer: giving up" and failed.txid == ""  # nothing broadcast
                assert any("not broadcasting the commitment" in r.getMessage() and funding.txid_hex in r.getMessage() for r in caplog.records)
                assert not [r for r in caplog.records if "the commitment transaction" in r.getMessage()]  # (refused by the chain)
                await n.source.mine(1)
                assert await n.source.find_transaction(commitment.txid) is None
                row = await listed(b, a)
                assert row["state"] == "failed" and row["commitment_waits_for_funding"] is True
                _print_channel(row)
                assert "our commitment is kept back until the chain sees the funding" in capsys.readouterr().out
            # a restart keeps it back too: B's monitor tries no broadcast at the blocks that come
            caplog.clear()
            b = n.node("b", trusts=("a",))
            with caplog.at_level(logging.DEBUG, logger="lnpmsg.channels"):
                async with running(b):
                    await wait_until(lambda: channels(b).onchain is not None and channels(b).onchain.done_height is not None, "B follows the chain")  # type: ignore[attr-defined]
                    assert any("still waits for its funding" in r.getMessage() for r in caplog.records)
                    await n.source.mine(1)
                    tip = (await n.source.tip()).height
                    await wait_until(lambda: channels(b).onchain.done_height == tip, "B's monitors read the block")  # type: ignore[attr-defined]
                    assert not [r for r in caplog.records if commitment.txid_hex in r.getMessage()]
                    # the funding confirms after all: B's commitment goes out
                    await n.source.broadcast(funding.raw)
                    await n.source.mine(1)
                    with trio.fail_after(TIMEOUT):
                        while await n.source.find_transaction(commitment.txid) is None:
                            await trio.sleep(0.05)
                    assert any("appeared: broadcasting our commitment" in r.getMessage() for r in caplog.records)
                    assert (await listed(b, a))["commitment_waits_for_funding"] is False
                    await n.source.mine(1)
                    await wait_until(lambda: channels(b).onchain.status(the_channel(b, a))["state"] != "open", "B's monitor sees the commitment")  # type: ignore[attr-defined]
            # a source without a transaction index (bitcoind without -txindex) finds neither the mined
            # funding nor its spent output: once the monitor has read the spend again, the wait ends
            async def mempool_only(txid: bytes) -> bytes | None:
                return None  # (nothing of the channel waits in the mempool any more)

            monkeypatch.setattr(n.source, "find_transaction", mempool_only)
            caplog.clear()
            b = n.node("b", trusts=("a",))
            with caplog.at_level(logging.INFO, logger="lnpmsg.channels"):
                async with running(b):
                    await wait_until(lambda: channels(b).manager is not None and channels(b).onchain is not None
                                     and channels(b).onchain.status(the_channel(b, a)) is not None
                                     and channels(b).onchain.status(the_channel(b, a))["state"] != "open", "B's monitor read the spend")  # type: ignore[attr-defined]
                    await n.source.mine(1)
                    with trio.fail_after(TIMEOUT):
                        while (await listed(b, a))["commitment_waits_for_funding"]:
                            await trio.sleep(0.05)


@pytest.mark.trio
async def test_a_force_close_on_a_funding_the_chain_never_saw_says_the_commitment_waits(tmp_path: Path) -> None:
    async with net(tmp_path) as base:
        n = AliasNet(base.source, tmp_path)
        a, b = n.node("a"), n.node("b", trusts=("a",))
        async with running(a, b):
            withheld = withhold_funding(a)
            await open_zeroconf(n, a, b)
            await wait_until(lambda: the_channel(a, b).phase is Phase.NORMAL and the_channel(b, a).phase is Phase.NORMAL, "zero-conf ready")  # type: ignore[attr-defined]
            closed = await channels(b).closechannel(the_channel(b, a).channel_id.hex(), force=True)  # type: ignore[attr-defined]
            assert closed["state"] == "failed" and closed["commitment_waits_for_funding"] is True
            assert await n.source.find_transaction(bytes.fromhex(closed["commitment_txid"])[::-1]) is None
            await n.source.broadcast(withheld[0])
            await n.source.mine(1)
            with trio.fail_after(TIMEOUT):
                while await n.source.find_transaction(bytes.fromhex(closed["commitment_txid"])[::-1]) is None:
                    await trio.sleep(0.05)
