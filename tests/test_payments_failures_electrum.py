"""BOLT-4 failure onions between lnpmsg and Electrum 4.3.4 (Debian's, a separate process on
Debian's Python), each side reading the exact failure the other sent.

Over a direct channel lnpmsg funded to Electrum (with some of it pushed to Electrum):

- lnpmsg pays an Electrum request Electrum deleted (``delete_request``: Electrum no longer
  knows the payment hash), and an invoice of Electrum's payment hash and secret for half the
  requested amount (signed with Electrum's node key, taken from its wallet file: lnpmsg's
  ``pay`` never sends an amount the real invoice refuses): each time lnpmsg's ``pay`` error
  is Electrum's ``incorrect_or_unknown_payment_details``, from Electrum's node;
- lnpmsg sends Electrum a keysend: Electrum 4.3.4 cannot parse the keysend record (an even
  TLV type it does not know) and answers ``update_fail_malformed_htlc`` with
  ``invalid_onion_version`` (where BOLT 4 asks for ``invalid_onion_payload``), which lnpmsg's
  ``keysend`` error names; then the real request is paid over the same channel (nothing stuck);
- Electrum pays an lnpmsg invoice deleted by ``delinvoice``, and a hold invoice lnpmsg
  cancels (``cancelinvoice``) while it holds Electrum's HTLC: Electrum's ``lnpay`` result
  logs lnpmsg's ``INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS`` from the destination.

Electrum -> lnpmsg A -> lnpmsg B (B's invoice hints the private channel A-B), A's failures:

- the amount is more than A can send B: ``TEMPORARY_CHANNEL_FAILURE``;
- B is down (stopped): ``TEMPORARY_CHANNEL_FAILURE`` too (BOLT 4: the outgoing channel
  cannot take the HTLC now), at once: A, long past its start, does not wait for a peer that is
  not connected (as lnd and Core Lightning);
- the A-B channel is closed (the invoice still names it): ``UNKNOWN_NEXT_PEER``.

lnpmsg attaches no ``channel_update`` to these failures (``len`` 0, as BOLT 4 now
advises); Electrum then blacklists the channel (``clear_ln_blacklist`` before the next try).
After each failure no HTLC is left on any channel and the balances are as before.

``mpp_timeout`` from lnpmsg, for a partial set Electrum sends, is in test_payments_mpp_electrum.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.payments import bolt11
from lnpmsg.testing.electrum import ELECTRUM_PYTHON, ElectrumWallet
from test_channels_electrum import connected, electrum_channel, node_with_electrum_channel
from test_channels_nodes import WAIT, _run_main, cli, stop
from test_payments_electrum import electrum_line, normal_channels

pytestmark = pytest.mark.slow

#: the failure Electrum's lnpay log names (its OnionFailureCode's name)
UNKNOWN_DETAILS = "INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS"

# Runs on Electrum's interpreter: the wallet's Lightning node key, as Electrum derives it (lnworker.LNWallet).
NODE_KEY = r"""
import json, sys
from electrum import constants
from electrum.bip32 import BIP32Node
from electrum.lnutil import LnKeyFamily, generate_keypair
constants.set_regtest()
db = json.load(open(sys.argv[1]))
xprv = db.get("lightning_xprv") or db.get("lightning_privkey2")
print(generate_keypair(BIP32Node.from_xkey(xprv), LnKeyFamily.NODE_KEY).privkey.hex())
"""


def electrum_node_key(wallet: ElectrumWallet) -> bytes:
    """Electrum's Lightning node secret, read from its (unencrypted) wallet file."""
    out = subprocess.run([ELECTRUM_PYTHON, "-c", NODE_KEY, str(wallet.wallet_path)], capture_output=True, text=True, timeout=60,
                         env=ElectrumWallet._env())  # fmt: skip
    assert out.returncode == 0, out.stderr
    return bytes.fromhex(out.stdout.strip())


async def fails(*argv: object) -> dict[str, Any]:
    """``lnpmsg ARGV --json`` that must fail (exit 1): its error."""
    args = [str(a) for a in argv] + ["--json"]
    code, out = await trio.to_thread.run_sync(_run_main, args)
    assert code == 1, out
    return json.loads(out)["error"]  # type: ignore[no-any-return]


def failed_at(result: dict[str, Any], where: str, code: str) -> None:
    """Electrum's ``lnpay`` failed, and every attempt its log shows ended with ``code`` reported at ``where``
    (a short channel id, or Electrum's "Destination node")."""
    assert result["success"] is False and result["preimage"] is None, result
    assert result["log"] and all(entry[1:] == [where, code] for entry in result["log"]), result["log"]


def electrum_balances(wallet: ElectrumWallet) -> list[tuple[int, int]]:
    """(local, remote) balance in sat of each of Electrum's open channels."""
    return [(c["local_balance"], c["remote_balance"]) for c in wallet.call("list_channels") if c["state"] == "OPEN"]


async def test_failure_onions_both_ways_over_a_direct_channel(tmp_path: Path) -> None:
    async with node_with_electrum_channel(tmp_path, 100_000_000) as (node_dir, _, opened):
        d = ("--data-dir", node_dir)
        wallet, electrum_id, cid = opened.wallet, opened.electrum_id, opened.channel_id
        before = await connected(node_dir, cid)
        electrum_before = await trio.to_thread.run_sync(electrum_balances, wallet)

        # lnpmsg pays a request Electrum deleted: Electrum knows the hash no more
        deleted = await wallet.acall("add_request", amount="0.0001", memo="deleted", expiration=1800)
        assert await wallet.acall("delete_request", request_id=deleted["request_id"]) is None
        error = await fails("pay", deleted["lightning_invoice"], *d)
        assert "incorrect_or_unknown_payment_details" in error["message"] and error["data"]["erring_node"] == electrum_id, error

        # an invoice of a live request's hash and secret, for half its amount, signed with Electrum's node key:
        # Electrum knows the hash but not that total (BOLT 4: incorrect_or_unknown_payment_details)
        request = await wallet.acall("add_request", amount="0.0002", memo="the real one", expiration=1800)
        real = bolt11.decode(request["lightning_invoice"])
        assert real.amount_msat == 20_000_000
        key = await trio.to_thread.run_sync(electrum_node_key, wallet)
        half = bolt11.encode(bolt11.sign(dataclasses.replace(real, amount_msat=10_000_000, amount_text=None, signature=None), key))
        assert bolt11.decode(half).payee.hex() == electrum_id
        error = await fails("pay", half, *d)
        assert "incorrect_or_unknown_payment_details" in error["message"] and error["data"]["erring_node"] == electrum_id, error
        assert "total_msat=10000000 too different from invoice_msat=20000000" in await trio.to_thread.run_sync(wallet.log, 20_000)

        # a keysend: Electrum 4.3.4 cannot parse its record (an even TLV type it does not know) and answers
        # update_fail_malformed_htlc with invalid_onion_version (BOLT 4 would have invalid_onion_payload)
        error = await fails("keysend", electrum_id, 5_000_000, *d)
        assert "the payee refused the payment: invalid_onion_version" in error["message"] and error["data"]["erring_node"] == electrum_id, error
        assert "error processing onion packet: UnknownMandatoryTLVRecordType('tlv_payload/5482373484')" in await trio.to_thread.run_sync(wallet.log, 20_000)

        # nothing is left of those: same balances, no HTLC, and the real request is paid over the channel
        after = await connected(node_dir, cid)
        assert (after["to_local_msat"], after["to_remote_msat"]) == (before["to_local_msat"], before["to_remote_msat"])
        assert await trio.to_thread.run_sync(electrum_balances, wallet) == electrum_before
        paid = await cli("pay", request["lightning_invoice"], *d)
        assert paid["status"] == "complete" and paid["amount_msat"] == 20_000_000
        await trio.to_thread.run_sync(
            wallet.wait_for, lambda: wallet.call("get_request", request_id=request["request_id"])["status"] == 3, "Electrum paid", WAIT
        )
        failed = [p for p in (await cli("listpayments", *d))["payments"] if p["status"] == "failed"]
        assert sorted(("incorrect_or_unknown_payment_details" in p["error"], "invalid_onion_version" in p["error"]) for p in failed) == [
            (False, True), (True, False), (True, False)], failed
        before = await connected(node_dir, cid)

        # Electrum pays an invoice lnpmsg deleted
        made = await cli("invoice", 15_000_000, "deleted", "to be deleted", *d)
        assert (await cli("delinvoice", "deleted", *d))["deleted"]["status"] == "unpaid"
        result = await wallet.acall("lnpay", invoice=made["bolt11"], timeout=WAIT)
        failed_at(result, "Destination node", UNKNOWN_DETAILS)

        # Electrum pays a hold invoice; lnpmsg holds the HTLC, then cancels the invoice: it fails back
        preimage = os.urandom(32)
        hold = await cli("invoice", 15_000_000, "held", "to be cancelled", "--hold", "--payment-hash", sha256(preimage).hex(), *d)
        outcome: dict[str, Any] = {}

        async def pay() -> None:
            outcome.update(await wallet.acall("lnpay", invoice=hold["bolt11"], timeout=WAIT))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pay)
            with trio.fail_after(WAIT):
                while (row := (await cli("listinvoices", "--label", "held", *d))["invoices"][0])["status"] != "accepted":
                    await trio.sleep(0.3)
            assert row["held_htlcs"] == 1 and (await connected(node_dir, cid, htlcs=1))
            cancelled = await cli("cancelinvoice", hold["payment_hash"], *d)
            assert cancelled["status"] == "cancelled" and cancelled["htlcs"] == 1
        failed_at(outcome, "Destination node", UNKNOWN_DETAILS)
        (row,) = (await cli("listinvoices", "--label", "held", *d))["invoices"]
        assert row["status"] == "cancelled" and not row.get("preimage")
        after = await connected(node_dir, cid)
        assert (after["to_local_msat"], after["to_remote_msat"]) == (before["to_local_msat"], before["to_remote_msat"])


async def quiet_channels(data_dir: Path) -> list[dict[str, Any]]:
    """The node's channels, once none has an HTLC."""
    with trio.fail_after(WAIT):
        while True:
            channels = (await cli("listchannels", "--data-dir", data_dir))["channels"]
            if all(not c["htlcs"] for c in channels):
                return channels  # type: ignore[no-any-return]
            await trio.sleep(0.2)


def balances(channels: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {c["channel_id"]: (c["to_local_msat"], c["to_remote_msat"]) for c in channels if c["state"] == "normal"}


async def test_electrum_decodes_the_forwarders_failures(tmp_path: Path) -> None:
    """Electrum -> A -> B as in test_payments_electrum.py, the A-B channel private and small."""
    async with electrum_line(tmp_path) as line:
        a_dir, b_dir, a_info = line.a_dir, line.b_dir, line.a_info
        wallet = await line.funded_electrum()
        await cli("faucet", 3_000_000, "--data-dir", a_dir)
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        ab = await cli("fundchannel", line.b_info["node_id"], 200_000, "--data-dir", a_dir)
        await wallet.acall("open_channel", connection_string=a_info["addresses"][0], amount="0.01")
        await cli("mine", 3, "--data-dir", a_dir)
        await trio.to_thread.run_sync(wallet.wait_for, lambda: electrum_channel(wallet, "OPEN"), "open in Electrum", WAIT)
        channels = await normal_channels(a_dir, 2)
        a_before, electrum_before = balances(channels), await trio.to_thread.run_sync(electrum_balances, wallet)

        # more than A can send B (its 200,000 sat channel): A's temporary_channel_failure for the channel A-B
        big = await cli("invoice", 300_000_000, "big", "more than A-B carries", "--data-dir", b_dir)
        # (the channel as B's invoice names it: the alias A gave B)
        ((hint,),) = (await cli("decodepay", big["bolt11"]))["route_hints"]
        ab_scid = hint["short_channel_id"]
        result = await wallet.acall("lnpay", invoice=big["bolt11"], timeout=WAIT)
        failed_at(result, ab_scid, "TEMPORARY_CHANNEL_FAILURE")
        # (with no channel_update: Electrum blacklists the channel, and finds no other way)
        log = await trio.to_thread.run_sync(wallet.log, 20_000)
        assert "code=<OnionFailureCode.TEMPORARY_CHANNEL_FAILURE: 4103>. decoded_data={'len': 0, 'channel_update': b''}" in log
        assert balances(await quiet_channels(a_dir)) == a_before
        assert await trio.to_thread.run_sync(electrum_balances, wallet) == electrum_before
        assert (await cli("listinvoices", "--label", "big", "--data-dir", b_dir))["invoices"][0]["status"] == "unpaid"

        # B is down: A cannot offer the HTLC on to it now (temporary_channel_failure again, at once: A waits
        # only in its own start's grace, REPLAY_GRACE, or for a connected peer reestablishing, REESTABLISH_WAIT)
        small = await cli("invoice", 10_000_000, "small", "B is down", "--data-dir", b_dir)
        later = await cli("invoice", 10_000_000, "later", "the channel is gone", "--data-dir", b_dir)
        await stop(*line.processes[1])
        with trio.fail_after(WAIT):
            while any(c["connected"] for c in (await cli("listchannels", "--data-dir", a_dir))["channels"] if c["channel_id"] == ab["channel_id"]):
                await trio.sleep(0.2)
        await wallet.acall("clear_ln_blacklist")
        result = await wallet.acall("lnpay", invoice=small["bolt11"], timeout=WAIT)
        failed_at(result, ab_scid, "TEMPORARY_CHANNEL_FAILURE")
        assert balances(await quiet_channels(a_dir)) == a_before
        assert await trio.to_thread.run_sync(electrum_balances, wallet) == electrum_before

        # the channel A-B is closed (B back, A closes it): A has no channel of that id, unknown_next_peer
        await line.start_b()
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        await normal_channels(a_dir, 2)
        closed = await cli("closechannel", ab["channel_id"], "--data-dir", a_dir)
        assert closed["state"] == "closed"
        await cli("mine", 1, "--data-dir", a_dir)
        await wallet.acall("clear_ln_blacklist")
        result = await wallet.acall("lnpay", invoice=later["bolt11"], timeout=WAIT)
        failed_at(result, ab_scid, "UNKNOWN_NEXT_PEER")
        a_after = balances(await quiet_channels(a_dir))
        assert a_after == {k: v for k, v in a_before.items() if k != ab["channel_id"]}
        assert await trio.to_thread.run_sync(electrum_balances, wallet) == electrum_before
        # A recorded one forward, failed without an outgoing HTLC (the channel to B refused it); the others it
        # refused before forwarding
        forwards = (await cli("listforwards", "--data-dir", a_dir))["forwards"]
        assert [(f["status"], f["out_msat"], f["out_htlc"]) for f in forwards] == [("failed", 300_000_000, None)], forwards
