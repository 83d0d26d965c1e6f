"""A forward fulfilled downstream and gone from its channel before the restarted forwarder looks.

A line A-B-C (nodes in one process, the in-memory transport, one embedded
regtest chain, every store on disk): A pays C's invoice through B. B offers
the forward to C and crashes right before it records the outgoing HTLC's id,
so its forward is still "offering". B restarts; before B's payments app takes
its start-up look at the channels (:meth:`PaymentsApp._start_up`, held back
here), C fulfils the HTLC and it leaves both commitments of the B-C channel:
no channel lists it any more, so nothing matches it to the forward by its
onion. B's channel monitor keeps the preimage (on disk before B answered C).

B must settle A's HTLC with that preimage and never offer the payment to C a
second time: a second offer C fulfilled (its invoice is paid: C settles) would
have B pay C twice for one incoming HTLC. When A's channel with B went on
chain meanwhile (A or B force-closed), A's HTLC is no longer committed in a
live channel: B must give the preimage to its monitor of A-B, which claims
the HTLC on chain before A could time it out (else B, having paid C, loses
it): from A's commitment with the preimage, from B's own through B's
presigned HTLC-success transaction, whose output B sweeps to its wallet
after its to_self_delay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_payments_app import Net, channels, net, payments, quiet, wait_until
from test_payments_crash_points import AMOUNT_MSAT, FEE_MSAT, _crash_node, _moves, _node_runner, _open_line, _restarted, balances

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.manager import ManagedChannel
from lnpmsg.channels.state import Phase
from lnpmsg.node.node import Node
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.payments.store import PaymentsStore
from lnpmsg.wallet.calls import ChainAppError


def _gone_from_the_channel(app: PaymentsApp, invoice_paid: bool) -> bool:
    """C has fulfilled, and B's channel with C holds neither the HTLC nor its fulfill."""
    return invoice_paid and not app.htlcs.offered() and not app.htlcs.fulfilled_offered()


class _CrashBeforeTheId:
    """B dies right before it records its outgoing HTLC's id (the HTLC is offered: the forward stays "offering")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, b_store: Path, scopes: dict[str, trio.CancelScope]) -> None:
        self.crashed = False
        token = trio.lowlevel.current_trio_token()
        forward_out = PaymentsStore.forward_out

        def crash_before_the_id(store: PaymentsStore, *args: object) -> None:
            if store.path.parent == b_store and not self.crashed:
                self.crashed = True
                _crash_node(scopes["b"], token)
            forward_out(store, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(PaymentsStore, "forward_out", crash_before_the_id)


async def _pay_until_b_crashes(nursery: trio.Nursery, a: Node, bolt11: str, crash: _CrashBeforeTheId) -> None:
    """A pays ``bolt11`` in the background (its outcome is read from its store); return once B crashed."""

    async def pay() -> None:
        try:
            await payments(a).pay(bolt11)
        except ChainAppError:
            pass  # the outcome is read from the store

    nursery.start_soon(pay)
    with trio.fail_after(60):
        while not crash.crashed:
            await trio.sleep(0.01)


@pytest.mark.trio
@pytest.mark.parametrize("look", ["queued", "kept_by_the_monitor"])
async def test_a_forward_fulfilled_and_removed_before_the_start_up_settles_upstream_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, look: str) -> None:  # fmt: skip
    """``queued``: the fulfil came while B's payments app was starting, so it waits in the app's queue
    (the channel app hands a starting handler what it missed). ``kept_by_the_monitor``: B stops once
    more before its payments app looks, and starts again: the fulfil is gone with that process, and
    only B's channel monitor knows the preimage."""
    b_store = tmp_path / "b" / "payments"
    async with net(tmp_path) as n, trio.open_nursery() as nursery:
        live: dict[str, Node] = {}
        scopes: dict[str, trio.CancelScope] = {}
        stopped = False
        crash = _CrashBeforeTheId(monkeypatch, b_store, scopes)
        run_node = _node_runner(n, live, scopes, lambda name: name == "b" and (crash.crashed or stopped))
        for name in "abc":
            await nursery.start(run_node, name)
        a, _, c = await _open_line(n, live)
        before = balances(live)
        invoice = await payments(c).invoice(AMOUNT_MSAT, "fulfilled", "fulfilled while B looked away")
        c_store = payments(c).store
        await _pay_until_b_crashes(nursery, a, invoice["bolt11"], crash)

        # the restarted B (the only app that starts from here on) takes its start-up look only once C
        # has fulfilled the HTLC and it left the channel
        start_up = PaymentsApp._start_up
        held = trio.Event()

        async def after_the_fulfill(app: PaymentsApp) -> None:
            def paid() -> bool:
                return c_store is not None and c_store.invoices("fulfilled")[0]["status"] == "paid"

            await wait_until(lambda: _gone_from_the_channel(app, paid()), "C fulfilled and the HTLC left B's channel")
            if look == "kept_by_the_monitor":
                held.set()
                await trio.sleep_forever()  # B stops here
            await start_up(app)

        monkeypatch.setattr(PaymentsApp, "_start_up", after_the_fulfill)
        await _restarted(nursery, run_node, live, "b")
        if look == "kept_by_the_monitor":
            await held.wait()
            stopped = True
            scopes["b"].cancel()
            monkeypatch.setattr(PaymentsApp, "_start_up", start_up)
            await _restarted(nursery, run_node, live, "b")

        with trio.fail_after(90):
            while (payment := (await payments(a).listpayments(invoice["payment_hash"]))["payments"][-1])["status"] == "pending":
                await trio.sleep(0.05)
        assert payment["status"] == "complete", payment
        await wait_until(lambda: all(quiet(x) for x in live.values()), "no HTLC left")
        (forward,) = payments(live["b"]).store.forwards()  # type: ignore[union-attr]
        assert forward["status"] == "settled" and sha256(forward["preimage"]) == forward["payment_hash"], forward
        # C was offered the payment once (B's HTLC ids on the B-C channel), and the money moved once
        (bc,) = channels(c).manager.channels.values()  # type: ignore[union-attr]
        assert bc.core.state.remote_next_htlc_id == 1, "C was offered the payment again"
        assert _moves(before, balances(live)) == {"a": -AMOUNT_MSAT - FEE_MSAT, "b": FEE_MSAT, "c": AMOUNT_MSAT}
        assert not await trio.to_thread.run_sync(n.source.core.mempool_txids), "something went on chain"
        assert not payments(live["b"])._early, "the result of B's outgoing HTLC found no forward"
        for node in live.values():
            node.stop()


def _channel_with(node: Node, peer: Node) -> ManagedChannel:
    manager = channels(node).manager
    assert manager is not None
    return next(c for c in manager.channels.values() if c.peer_id == peer.node_id)


def _onchain(node: Node, peer: Node) -> dict[str, Any]:
    """The on-chain state of ``node``'s monitor of its channel with ``peer`` (empty before it has one)."""
    return channels(node).onchain.status(_channel_with(node, peer)) or {}  # type: ignore[union-attr]


def _swept_by_us(node: Node, peer: Node, what: str) -> dict[str, Any] | None:
    """The output ``what`` of the channel with ``peer`` that ``node``'s monitor took (confirmed), if it has."""
    return next((o for o in _onchain(node, peer).get("outputs", ()) if o["what"] == what and o["state"] == "swept" and o["by"] == "us"),
                None)  # fmt: skip


def _pending_output(node: Node, peer: Node, what: str) -> dict[str, Any] | None:
    """The output ``what`` of the channel with ``peer`` that ``node``'s monitor still has to take, if any."""
    return next((o for o in _onchain(node, peer).get("outputs", ()) if o["what"] == what and o["state"] != "swept"), None)


async def _mined_tx(n: Net, height: int, txid: str) -> Tx:
    """The transaction ``txid`` (hex) of the block at ``height``."""
    block_hash = await n.source.block_hash(height)
    assert block_hash is not None
    return next(tx for tx in Block.parse(await n.source.block(block_hash)).txs if tx.txid_hex == txid)


async def _mine(n: Net, live: dict[str, Node], blocks: int = 1) -> None:
    """Mine ``blocks`` blocks; return once every node's channel monitors acted on them (claims broadcast)."""
    await n.source.mine(blocks)
    height = (await n.source.tip()).height
    await wait_until(lambda: all(channels(x).onchain.done_height == height for x in live.values()),  # type: ignore[union-attr]
                     f"block {height} seen")  # fmt: skip


@pytest.mark.trio
@pytest.mark.parametrize("look", ["queued", "kept_by_the_monitor"])
@pytest.mark.parametrize("closer", ["a", "b"])
async def test_a_forward_fulfilled_and_removed_while_its_incoming_channel_went_on_chain_is_claimed_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closer: str, look: str) -> None:  # fmt: skip
    """As above, and before B's payments app looks, A-B goes on chain: A's HTLC to B is no longer
    committed in a live channel (never replayed), and only B's monitor of B-C knows the preimage.
    B must give it to its monitor of A-B, which claims A's HTLC on chain before A could time it out
    (B paid C: without the claim B would lose the amount), and never offer C the payment again.

    ``closer``: who force-closed A-B, so whose commitment is mined. ``a``: A's; B takes the HTLC's
    output with the preimage directly. ``b``: B's own; B must spend the HTLC's output with its
    presigned HTLC-success transaction (A's signature on it came with the commitment), whose output
    is B's only after B's to_self_delay: B sweeps it to its wallet then.
    ``look`` as above (``kept_by_the_monitor``: B stops once more once A-B is on chain, and starts again)."""
    b_store = tmp_path / "b" / "payments"
    async with net(tmp_path) as n, trio.open_nursery() as nursery:
        live: dict[str, Node] = {}
        scopes: dict[str, trio.CancelScope] = {}
        crash = _CrashBeforeTheId(monkeypatch, b_store, scopes)
        run_node = _node_runner(n, live, scopes, lambda name: name == "b" and crash.crashed)
        for name in "abc":
            await nursery.start(run_node, name)
        a, _, c = await _open_line(n, live)
        before = balances(live)
        invoice = await payments(c).invoice(AMOUNT_MSAT, "fulfilled", "fulfilled while A-B went on chain")
        c_store = payments(c).store
        assert c_store is not None
        await _pay_until_b_crashes(nursery, a, invoice["bolt11"], crash)

        # the restarted B's payments app takes its start-up look only when told
        start_up = PaymentsApp._start_up
        told = trio.Event()

        async def when_told(app: PaymentsApp) -> None:
            await told.wait()
            await start_up(app)

        monkeypatch.setattr(PaymentsApp, "_start_up", when_told)
        b = await _restarted(nursery, run_node, live, "b")
        await wait_until(lambda: _gone_from_the_channel(payments(b), c_store.invoices("fulfilled")[0]["status"] == "paid"),
                         "C fulfilled and the HTLC left B's channel")  # fmt: skip
        (in_htlc,) = _channel_with(b, a).core.state.local_commit.spec.htlcs  # type: ignore[union-attr]
        success = f"htlc_success:{in_htlc.add.id}"

        # A or B force-closes A-B; the commitment (with the HTLC to B) is mined before B's payments app looks
        closing, other = (a, b) if closer == "a" else (b, a)
        await channels(closing).closechannel(_channel_with(closing, other).key, force=True)
        with trio.fail_after(60):
            while not await trio.to_thread.run_sync(n.source.core.mempool_txids):
                await trio.sleep(0.05)  # the commitment not broadcast yet
        await _mine(n, live)
        await wait_until(lambda: "commitment" in _onchain(b, a), "B sees A-B on chain")
        assert _onchain(b, a)["commitment"]["kind"] == ("ours" if closer == "b" else "theirs_current")
        assert _channel_with(b, a).phase in (Phase.FAILED, Phase.CLOSED)
        assert not payments(b).htlcs.pending_incoming(), "A's HTLC is still committed in a live channel"
        if look == "kept_by_the_monitor":
            scopes["b"].cancel()  # B stops before its payments app looked (the queued fulfil goes with it)
            monkeypatch.setattr(PaymentsApp, "_start_up", start_up)
            b = await _restarted(nursery, run_node, live, "b")
            assert _channel_with(b, a).phase in (Phase.FAILED, Phase.CLOSED)
        told.set()

        # B claims A's HTLC with the preimage well before its expiry (from there on A could time it out)
        with trio.fail_after(120):
            while (claim := _swept_by_us(b, a, success)) is None:
                assert (await n.source.tip()).height < in_htlc.add.cltv_expiry - 1, "B did not claim A's HTLC on chain"
                await _mine(n, live)
                await trio.sleep(0.05)
        assert claim["height"] < in_htlc.add.cltv_expiry
        commitment = _onchain(b, a)["commitment"]
        assert claim["outpoint"].startswith(commitment["txid"] + ":"), claim  # the HTLC's output of the mined commitment
        (forward,) = payments(b).store.forwards()  # type: ignore[union-attr]
        assert forward["status"] == "settled" and sha256(forward["preimage"]) == forward["payment_hash"], forward
        assert forward["payment_hash"] == in_htlc.add.payment_hash
        if closer == "b":
            # B's own commitment: its HTLC-success transaction (BOLT 3: 0, A's signature, B's, the preimage, the script)
            tx = await _mined_tx(n, claim["height"], claim["txid"])
            (witness,) = [txin.witness for txin in tx.inputs if str(txin.prevout) == claim["outpoint"]]
            assert len(witness) == 5 and witness[0] == b"" and witness[3] == forward["preimage"], witness
            # its output is B's after B's to_self_delay, then swept to B's wallet
            delayed = _pending_output(b, a, success + ":delayed")
            assert delayed is not None and delayed["amount_sat"] == claim["amount_sat"], _onchain(b, a)
            delay = _channel_with(b, a).core.state.remote.to_self_delay  # type: ignore[union-attr]
            assert delayed["spendable_at"] == claim["height"] + delay, delayed
            await _mine(n, live, delayed["spendable_at"] - 1 - (await n.source.tip()).height)
            assert _swept_by_us(b, a, success + ":delayed") is None, "swept before B's to_self_delay"
            with trio.fail_after(60):
                while (swept := _swept_by_us(b, a, success + ":delayed")) is None:
                    await _mine(n, live)
            wallet = b.apps["chain"].wallet  # type: ignore[attr-defined]
            await wallet.sync()
            (coin,) = [u for u in wallet.list_funds() if u.outpoint.txid_hex == swept["txid"]]
            assert 0 < delayed["amount_sat"] - coin.amount_sat < 1_000, (delayed, coin)  # no more than the sweep's fee
        # nothing lost: A paid amount and fee, C got the amount, B paid C the amount and took A's HTLC (amount
        # and fee, in whole satoshis on chain) from the chain
        assert _moves(before, balances(live)) == {"a": -AMOUNT_MSAT - FEE_MSAT, "b": -AMOUNT_MSAT, "c": AMOUNT_MSAT}
        assert claim["amount_sat"] == in_htlc.add.amount_msat // 1000 == (AMOUNT_MSAT + FEE_MSAT) // 1000
        # C was offered the payment once
        (bc,) = channels(c).manager.channels.values()  # type: ignore[union-attr]
        assert bc.core.state.remote_next_htlc_id == 1, "C was offered the payment again"
        # A learned the preimage from B's claim: its payment is complete
        with trio.fail_after(60):
            while (payment := (await payments(a).listpayments(invoice["payment_hash"]))["payments"][-1])["status"] == "pending":
                await trio.sleep(0.05)
        assert payment["status"] == "complete", payment
        assert not payments(b)._early, "the result of B's outgoing HTLC found no forward"
        for node in live.values():
            node.stop()
