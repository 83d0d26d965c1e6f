"""Blinded payments between nodes in memory, on one embedded regtest chain.

A line A-B-C-D. D makes a blinded path for its invoice (``payments.blindedpath``):
C introduces it, D ends it. A pays into it (``payments.payblinded``): B forwards
as for any payment, C reads its encrypted data from the onion's path key and
forwards with ``update_add_htlc``'s ``blinded_path`` TLV, D accepts the path_id
and settles with the invoice's preimage. Then what breaks a path, each refused
with ``invalid_onion_blinding`` that A reads as coming from C (the introduction
node): a path whose ``payment_relay`` pays C less than it charges, one used after
its ``max_cltv_expiry`` came too close, one paying another invoice's hash (D
fails it malformed, C turns that into its own failure, nothing of D's leaks).
A longer path made by hand, B-C-D: B (A's peer) introduces it, C relays with the
path key it got in ``update_add_htlc``; when the path underpays C, C fails it
malformed and B answers A with its own ``invalid_onion_blinding``.
A plain payment over the same channels still works. C at an uncommon policy: D's paths show it
rounded up, and A pays them at the rounded figures.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.node.node import Node
from lnpmsg.payments.blinded import BlindedPayInfo, PathHop, PaymentRelay, aggregate_payinfo, create_payment_path, path_id_for
from lnpmsg.payments.blinded_app import PAYINFO_ROUNDING
from lnpmsg.payments.htlcs import FeePolicy
from lnpmsg.payments.onion import decode_blinded_path
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.payments.views import DEFAULT_MIN_FINAL_CLTV
from lnpmsg.rpc.params import ParamsError
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.calls import ChainAppError
from test_payments_app import POLICY, channels, net, payment_ended, payments, quiet, wait_until

AMOUNT = 20_000_000


def channel_scid(node: Node, peer: Node) -> int:
    return next(c.short_channel_id for c in channels(node).htlcs.channels() if c.peer_id == peer.node_id)


async def pay_into(payer: Node, made: dict[str, Any], payment_hash: str, amount_msat: int = AMOUNT) -> dict[str, Any]:
    info = made["payinfo"]
    return await payments(payer).payblinded(made["blinded_path"], amount_msat, payment_hash, info["fee_base_msat"],
                                            info["fee_proportional_millionths"], info["cltv_expiry_delta"], info["htlc_minimum_msat"])  # fmt: skip


async def refused(payer: Node, made: dict[str, Any], payment_hash: str, intro: Node) -> ChainAppError:
    """A's payment into the path fails with invalid_onion_blinding from the introduction node, at once (no retries)."""
    with pytest.raises(ChainAppError) as info:
        await pay_into(payer, made, payment_hash)
    err = info.value
    assert err.details["code"] == InvalidOnionBlinding.TYPE and err.details["erring_node"] == intro.node_id.hex()
    assert "returned invalid_onion_blinding (the blinded path refused" in str(err) and "0x0x0" not in str(err)
    assert len(err.details["attempts"]) == 1  # type: ignore[arg-type]
    return err


@pytest.mark.trio
async def test_a_payment_into_a_blinded_path_and_what_breaks_one(tmp_path: Path) -> None:
    async with net(tmp_path) as n:
        a, b, c, d = (n.node(x) for x in "abcd")
        async with running(a, b, c, d):
            await n.fund(a, b, c)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000), (c, d, 1_000_000, 1_000_000)])
            inv = await payments(d).invoice(AMOUNT, "blind", "a blinded payment")
            made = await payments(d).blindedpath("blind")
            path, _ = decode_blinded_path(bytes.fromhex(made["blinded_path"]))
            # C introduces the path; D is only there blinded, and padded to 4 hops with 2 dummy hops of D's own
            assert made["introduction_node_id"] == c.node_id.hex() == path.first_node_id.hex() and len(path.hops) == 4
            assert d.node_id not in (h.blinded_node_id for h in path.hops)
            assert made["payinfo"]["fee_base_msat"] == POLICY.fee_base_msat and made["payinfo"]["cltv_expiry_delta"] > POLICY.cltv_expiry_delta

            paid = await pay_into(a, made, inv["payment_hash"])
            assert paid["status"] == "complete" and bytes.fromhex(paid["preimage"]).hex() and paid["payment_hash"] == inv["payment_hash"]
            (route,) = paid["routes"]
            assert [h["node_id"] for h in route] == [b.node_id.hex(), c.node_id.hex(), *(h.blinded_node_id.hex() for h in path.hops[1:])]
            (row,) = (await payments(d).listinvoices("blind"))["invoices"]
            assert row["status"] == "paid" and row["preimage"] == paid["preimage"] and row["received_msat"] >= AMOUNT
            (fwd,) = (await payments(c).listforwards())["forwards"]
            assert fwd["status"] == "settled" and fwd["in_msat"] - fwd["out_msat"] >= POLICY.fee(fwd["out_msat"])
            (sent,) = (await payments(a).listpayments(inv["payment_hash"]))["payments"]
            assert sent["status"] == "complete" and sent["blinded_path"] == made["blinded_path"] and sent["bolt11"] is None
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")

            # a path whose payment_relay pays C less than C charges
            cheap = await payments(d).invoice(AMOUNT, "cheap", "too little fee")
            height = (await n.source.tip()).height
            relay = PaymentRelay(POLICY.cltv_expiry_delta, POLICY.fee_proportional_millionths, POLICY.fee_base_msat - 1)
            own, info = create_payment_path(os.urandom(32), [PathHop(c.node_id, channel_scid(d, c), relay)], d.node_id,
                                            path_id_for(d.key.secret, bytes.fromhex(cheap["payment_hash"])), height + 1000, DEFAULT_MIN_FINAL_CLTV)  # fmt: skip
            await refused(a, {"blinded_path": own.encode().hex(), "payinfo": info.to_dict()}, cheap["payment_hash"], c)

            # a path used once the chain came past its max_cltv_expiry (less the deltas)
            late = await payments(d).invoice(AMOUNT, "late", "an expired path")
            short = await payments(d).blindedpath("late", expiry_blocks=2)
            await n.source.mine(5)
            await refused(a, short, late["payment_hash"], c)

            # a path made for another invoice: D refuses the path_id (malformed, to C), C fails it as its own
            other = await payments(d).invoice(AMOUNT, "other", "not this path's")
            await refused(a, made, other["payment_hash"], c)
            # (C did forward that one, the two before it not: they broke C's own part of the path)
            assert sorted(f["status"] for f in (await payments(c).listforwards())["forwards"]) == ["failed", "settled"]
            for label in ("cheap", "late", "other"):
                assert (await payments(d).listinvoices(label))["invoices"][0]["status"] == "unpaid"
            await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "failed back")

            # a longer path, B-C-D, made by hand: B (A's own peer) introduces it, C relays with the path key
            # from update_add_htlc; then one whose relay underpays C: C fails it malformed, B as its own
            for label, c_fee in (("long", POLICY.fee_base_msat), ("long-cheap", POLICY.fee_base_msat - 1)):
                inv = await payments(d).invoice(AMOUNT, label, "through two blinded relays")
                height = (await n.source.tip()).height
                hops = [PathHop(b.node_id, channel_scid(b, c), PaymentRelay(POLICY.cltv_expiry_delta, POLICY.fee_proportional_millionths,
                                                                             POLICY.fee_base_msat)),
                        PathHop(c.node_id, channel_scid(c, d), PaymentRelay(POLICY.cltv_expiry_delta, POLICY.fee_proportional_millionths, c_fee))]  # fmt: skip
                own, info = create_payment_path(os.urandom(32), hops, d.node_id, path_id_for(d.key.secret, bytes.fromhex(inv["payment_hash"])),
                                                height + 1000, DEFAULT_MIN_FINAL_CLTV)  # fmt: skip
                long_path = {"blinded_path": own.encode().hex(), "payinfo": info.to_dict()}
                c_forwards = len((await payments(c).listforwards())["forwards"])
                if label == "long":
                    paid = await pay_into(a, long_path, inv["payment_hash"])
                    assert paid["status"] == "complete" and len(paid["routes"][0]) == 3  # B, then C and D blinded
                    assert (await payments(d).listinvoices(label))["invoices"][0]["status"] == "paid"
                    assert len((await payments(c).listforwards())["forwards"]) == c_forwards + 1
                else:
                    await refused(a, long_path, inv["payment_hash"], b)
                    assert len((await payments(c).listforwards())["forwards"]) == c_forwards  # C refused, forwarded nothing
                await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")

            # an ordinary payment over the same channels is unchanged
            plain = await payments(d).invoice(AMOUNT, "plain", "a plain payment")
            done = await payments(a).pay(plain["bolt11"])
            assert done["status"] == "complete"

            # a path whose introduction node is given as a sciddir (BOLT 12's compact form): C's end of the C-D channel
            compact = await payments(d).invoice(AMOUNT, "compact", "introduced by a channel")
            made = await payments(d).blindedpath("compact")
            path, _ = decode_blinded_path(bytes.fromhex(made["blinded_path"]))
            direction = 0 if c.node_id < d.node_id else 1
            by_channel = replace(path, first_node_id=bytes([direction]) + channel_scid(c, d).to_bytes(8, "big"))
            assert not by_channel.introduction_is_node_id
            done = await pay_into(a, {**made, "blinded_path": by_channel.encode().hex()}, compact["payment_hash"])
            assert done["status"] == "complete" and done["routes"][0][-len(path.hops)]["node_id"] == c.node_id.hex()

            # what payblinded refuses before anything leaves
            by_scid = replace(path, first_node_id=bytes([0]) + (1 << 40).to_bytes(8, "big")).encode().hex()  # a channel nobody knows
            ours = replace(path, first_node_id=a.node_id).encode().hex()
            for path_hex, match, delta in ((made["blinded_path"] + "00", "1 bytes after the path", 100), ("02", "truncated", 100),
                                           (by_scid, "channel 1x0x0, which we do not know", 100), (ours, "this node is its introduction", 100),
                                           (made["blinded_path"], "more than 2016 blocks", 2017)):  # fmt: skip
                with pytest.raises(ParamsError, match=match):
                    await payments(a).payblinded(path_hex, AMOUNT, plain["payment_hash"], 0, 0, delta)
            # and blindedpath: an invoice D does not have, an introduction node that is not D's peer
            for label, kwargs, error in (("nope", {}, "NoSuchInvoice"), ("plain", {"introduction": b.node_id.hex()}, "NoChannel")):
                with pytest.raises(ChainAppError) as info:
                    await payments(d).blindedpath(label, **kwargs)
                assert info.value.details["error"] == error


@pytest.mark.trio
async def test_a_hold_invoice_paid_through_a_blinded_path(tmp_path: Path) -> None:
    """D's hold invoices paid into a path C introduces: held, then settled with the preimage; another
    cancelled: D fails its HTLC malformed (inside a path), C answers A with invalid_onion_blinding."""
    async with net(tmp_path) as n:
        a, b, c, d = (n.node(x) for x in "abcd")
        async with running(a, b, c, d):
            await n.fund(a, b, c)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000), (c, d, 1_000_000, 1_000_000)])
            malformed: list[int] = []
            hook = channels(d).htlcs
            fail_malformed = hook.fail_malformed

            async def noted(channel_key: str, htlc_id: int, sha256_of_onion: bytes, failure_code: int) -> None:
                malformed.append(failure_code)
                await fail_malformed(channel_key, htlc_id, sha256_of_onion, failure_code)

            hook.fail_malformed = noted  # type: ignore[method-assign]
            for label in ("settled", "cancelled"):
                preimage = os.urandom(32)
                payment_hash = sha256(preimage).hex()
                await payments(d).invoice(AMOUNT, label, "held", payment_hash=payment_hash, hold=True)
                made = await payments(d).blindedpath(label)
                outcome: dict[str, Any] = {}
                async with trio.open_nursery() as nursery:

                    async def pay(made: dict[str, Any] = made, payment_hash: str = payment_hash) -> None:
                        try:
                            outcome["paid"] = await pay_into(a, made, payment_hash)
                        except ChainAppError as exc:
                            outcome["error"] = exc

                    nursery.start_soon(pay)
                    held = payments(d)._held
                    await wait_until(lambda: bytes.fromhex(payment_hash) in held and bool(held[bytes.fromhex(payment_hash)].parts), "held")
                    if label == "settled":
                        await payments(d).settleinvoice(preimage.hex())
                    else:
                        await payments(d).cancelinvoice(payment_hash)
                if label == "settled":
                    assert outcome["paid"]["preimage"] == preimage.hex() and not malformed
                else:
                    err = outcome["error"]
                    assert err.details["code"] == InvalidOnionBlinding.TYPE and err.details["erring_node"] == c.node_id.hex()
                    assert malformed == [InvalidOnionBlinding.TYPE]  # D: update_fail_malformed_htlc, not a failure onion
                await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "resolved")


@pytest.mark.trio
async def test_the_introduction_node_restarts_with_a_blinded_forward_in_flight(tmp_path: Path) -> None:
    """B introduces C's path; while C holds the payment B restarts. C cancels: B (restarted) finds its
    forward again, reads from the incoming HTLC that it introduced a path, and fails A's HTLC with
    invalid_onion_blinding (not C's failure, not a guess)."""
    async with net(tmp_path) as n:
        a, c = n.node("a"), n.node("c")
        async with running(a, c):
            b = n.node("b")
            async with running(b):
                await n.fund(a, b)
                await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
                preimage = os.urandom(32)
                payment_hash = sha256(preimage).hex()
                await payments(c).invoice(AMOUNT, "held", "held", payment_hash=payment_hash, hold=True)
                made = await payments(c).blindedpath("held")
                assert made["introduction_node_id"] == b.node_id.hex()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pay_into, a, made, payment_hash)
                    held = payments(c)._held
                    await wait_until(lambda: bytes.fromhex(payment_hash) in held and bool(held[bytes.fromhex(payment_hash)].parts), "held")
                    nursery.cancel_scope.cancel()  # (the payment goes on in A)
            b2 = n.node("b")
            async with running(b2):
                for peer in (a, c):
                    await b2.connect(peer.addresses[0])
                await wait_until(lambda: len([x for x in channels(b2).htlcs.channels() if x.usable]) == 2, "reconnected")
                await payments(c).cancelinvoice(payment_hash)
                row = await payment_ended(a, payment_hash)
                assert row["status"] == "failed" and "invalid_onion_blinding" in row["error"] and b.node_id.hex()[:16] in row["error"]
                (fwd,) = (await payments(b2).listforwards())["forwards"]
                assert fwd["status"] == "failed"
                await wait_until(lambda: quiet(a) and quiet(b2) and quiet(c), "failed back")


@pytest.mark.trio
async def test_a_path_hides_the_peers_policy_and_is_paid_at_the_rounded_figures(tmp_path: Path) -> None:
    """C forwards at an uncommon policy (1001 msat, 111 millionths, 41 blocks): D's path through C (padded
    with D's dummy hops) shows it rounded up (PAYINFO_ROUNDING), not C's figures; A pays the rounded payinfo,
    C takes at least its own fee and D gets the amount and the rest; a path usable for one block more than D's
    final delta is still paid (its expiry limits allow the blocks the rounding adds); a path of D alone too; and
    amounts where BOLT 4's rounding leaves C 1 msat under its fee, rounded down."""
    odd = FeePolicy(fee_base_msat=1001, fee_proportional_millionths=111, cltv_expiry_delta=41)
    async with net(tmp_path) as n:
        # (no gossip app here: D takes its own policy for its peer's, so both forward at the odd one)
        a, b, c, d = n.node("a"), n.node("b"), n.node("c", policy=odd), n.node("d", policy=odd)
        async with running(a, b, c, d):
            await n.fund(a, b, c)
            await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000), (c, d, 1_000_000, 1_000_000)])
            # (the gossip graph A routes by has C's policy towards D, for the path D introduces itself)
            n.graph.update(channel_scid(c, d), 0 if c.node_id < d.node_id else 1, fee_base_msat=odd.fee_base_msat,
                           fee_proportional_millionths=odd.fee_proportional_millionths, cltv_expiry_delta=odd.cltv_expiry_delta,
                           htlc_minimum_msat=1, htlc_maximum_msat=1_000_000_000)  # fmt: skip
            exact = aggregate_payinfo([PaymentRelay(odd.cltv_expiry_delta, odd.fee_proportional_millionths, odd.fee_base_msat)],
                                      DEFAULT_MIN_FINAL_CLTV)  # fmt: skip
            for label, kwargs in (("rounded", {}), ("one block", {"expiry_blocks": 1}), ("alone", {"introduction": d.node_id.hex()})):
                inv = await payments(d).invoice(AMOUNT, label, "a path that hides C's policy")
                made = await payments(d).blindedpath(label, **kwargs)
                path, _ = decode_blinded_path(bytes.fromhex(made["blinded_path"]))
                info = made["payinfo"]
                assert len(path.hops) == 4 and info == PAYINFO_ROUNDING.apply(BlindedPayInfo(**info)).to_dict()  # (padded; rounded)
                paid = await pay_into(a, made, inv["payment_hash"])
                (row,) = (await payments(d).listinvoices(label))["invoices"]
                assert paid["status"] == "complete" and row["status"] == "paid"
                if label == "alone":  # (D introduces it: nothing to hide but D's final delta, 24 blocks already)
                    assert path.first_node_id == d.node_id and (info["fee_base_msat"], info["fee_proportional_millionths"]) == (0, 0)
                    assert info["cltv_expiry_delta"] == DEFAULT_MIN_FINAL_CLTV == 24 and row["received_msat"] >= AMOUNT
                    continue
                assert (info["fee_base_msat"], info["fee_proportional_millionths"], info["cltv_expiry_delta"]) == (2000, 200, 72)
                assert exact.cltv_expiry_delta < 72 and exact.fee_base_msat < 2000 and exact.fee_proportional_millionths < 200  # (C's own)
                fee = BlindedPayInfo(**info).fee(AMOUNT)
                assert row["received_msat"] > AMOUNT  # (what C did not need reached D)
                forwards = (await payments(c).listforwards())["forwards"]
                fwd = next(f for f in forwards if f["status"] == "settled" and f["out_msat"] == row["received_msat"])
                assert fwd["in_msat"] >= AMOUNT + fee and fwd["in_msat"] - fwd["out_msat"] >= odd.fee(fwd["out_msat"])
                await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")
            # amounts for which BOLT 4's rounded-up forward amount leaves C 1 msat under its fee of it, rounded
            # down (one or the other, as A's route adds the payinfo's fee): C still takes the path, at its policy
            for amount in (20_006_228, 20_006_229):
                inv = await payments(d).invoice(amount, f"odd {amount}", "an amount BOLT 4's rounding meets")
                made = await payments(d).blindedpath(f"odd {amount}")
                assert (await pay_into(a, made, inv["payment_hash"], amount))["status"] == "complete"
                await wait_until(lambda: all(quiet(x) for x in (a, b, c, d)), "settled")
