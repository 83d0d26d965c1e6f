"""The sans-IO decision for an incoming HTLC (:mod:`lnpmsg.payments.htlcs`): every BOLT-4 check
of the final node and of a forwarding hop gives the right failure, readable by the sender
with its shared secrets; MPP sets complete or time out."""

from __future__ import annotations

import hashlib
import os

import coincurve
import pytest

from lnpmsg.payments.htlcs import CompleteSet, FailMalformed, FailOnion, FeePolicy, Forward, HoldPart, InvoiceTerms, MppSets, Settle, Spontaneous, decide
from lnpmsg.payments.onion import HopPayload, construct_onion, decrypt_failure_onion
from lnpmsg.payments.onion.failures import BADONION
from lnpmsg.wire.primitives import ShortChannelId

NODE = os.urandom(32)
NODE_ID = coincurve.PrivateKey(NODE).public_key.format()
NEXT = coincurve.PrivateKey().public_key.format()
PREIMAGE = os.urandom(32)
HASH = hashlib.sha256(PREIMAGE).digest()
SECRET = os.urandom(32)
HEIGHT = 500
SCID = (400 << 40) | (1 << 16)
TERMS = InvoiceTerms(HASH, PREIMAGE, SECRET, 100_000, 18, expires_at=10_000)
POLICY = FeePolicy(1000, 100, 40)


def final_onion(amount: int, cltv: int, secret: bytes | None = SECRET, total: int | None = None) -> tuple[bytes, tuple[bytes, ...]]:
    payload = HopPayload.final(amount, cltv, payment_secret=secret, total_msat=total).encode()
    built = construct_onion(os.urandom(32), [NODE_ID], [payload], HASH)
    return built.packet, tuple(built.shared_secrets)


def forward_onion(amount: int, cltv: int) -> tuple[bytes, tuple[bytes, ...]]:
    payloads = [HopPayload.forward(amount, cltv, ShortChannelId.from_int(SCID)).encode(),
                HopPayload.final(amount, cltv, payment_secret=SECRET).encode()]  # fmt: skip
    built = construct_onion(os.urandom(32), [NODE_ID, NEXT], payloads, HASH)
    return built.packet, tuple(built.shared_secrets)


def run(onion: bytes, amount: int, cltv: int, *, now: float = 1000.0, channel: tuple[bool, int] | None = (True, 1)) -> object:
    return decide(node_secret=NODE, amount_msat=amount, payment_hash=HASH, cltv_expiry=cltv, onion=onion, height=HEIGHT, now=now,
                  invoice={HASH: TERMS}.get, next_channel=lambda scid: channel if scid == SCID else None, policy=POLICY)  # fmt: skip


def failure_name(action: object, secrets: tuple[bytes, ...]) -> tuple[int, str]:
    assert isinstance(action, FailOnion), action
    got = decrypt_failure_onion(secrets, action.reason)
    assert got.failure is not None
    return got.hop_index, got.failure.NAME


def test_final_node_settles_and_refuses_with_the_right_codes() -> None:
    onion, secrets = final_onion(100_000, HEIGHT + 30)
    assert run(onion, 100_000, HEIGHT + 30) == Settle(PREIMAGE, 100_000)
    assert failure_name(run(onion, 99_999, HEIGHT + 30), secrets) == (0, "final_incorrect_htlc_amount")
    assert failure_name(run(onion, 100_000, HEIGHT + 29), secrets) == (0, "final_incorrect_cltv_expiry")
    assert failure_name(run(onion, 100_000, HEIGHT + 30, now=20_000), secrets) == (0, "incorrect_or_unknown_payment_details")
    near, near_secrets = final_onion(100_000, HEIGHT + 5)
    assert failure_name(run(near, 100_000, HEIGHT + 5), near_secrets) == (0, "incorrect_or_unknown_payment_details")
    wrong, wrong_secrets = final_onion(100_000, HEIGHT + 30, secret=os.urandom(32))
    assert failure_name(run(wrong, 100_000, HEIGHT + 30), wrong_secrets) == (0, "incorrect_or_unknown_payment_details")
    low, low_secrets = final_onion(50_000, HEIGHT + 30)
    assert failure_name(run(low, 50_000, HEIGHT + 30), low_secrets) == (0, "incorrect_or_unknown_payment_details")


def test_malformed_onions_get_update_fail_malformed_htlc() -> None:
    onion, _ = final_onion(100_000, HEIGHT + 30)
    for bad in (bytes(1366), onion[:-1] + bytes([onion[-1] ^ 1]), b"\x01" + onion[1:]):
        action = run(bad, 100_000, HEIGHT + 30)
        assert isinstance(action, FailMalformed) and action.failure_code & BADONION
        assert action.sha256_of_onion == hashlib.sha256(bad).digest()


def test_forwarding_checks_fee_cltv_channel_and_expiry() -> None:
    amount, out_cltv = 1_000_000, HEIGHT + 100
    fee = POLICY.fee(amount)
    onion, secrets = forward_onion(amount, out_cltv)
    action = run(onion, amount + fee, out_cltv + 40)
    assert isinstance(action, Forward) and (action.short_channel_id, action.amount_msat, action.cltv_expiry, action.fee_msat) == (SCID, amount, out_cltv, fee)
    assert failure_name(run(onion, amount + fee - 1, out_cltv + 40), secrets) == (0, "fee_insufficient")
    assert failure_name(run(onion, amount + fee, out_cltv + 39), secrets) == (0, "incorrect_cltv_expiry")
    assert failure_name(run(onion, amount + fee, out_cltv + 40, channel=None), secrets) == (0, "unknown_next_peer")
    assert failure_name(run(onion, amount + fee, out_cltv + 40, channel=(False, 1)), secrets) == (0, "temporary_channel_failure")
    soon, soon_secrets = forward_onion(amount, HEIGHT + 2)
    assert failure_name(run(soon, amount + fee, HEIGHT + 42), soon_secrets) == (0, "expiry_too_soon")
    far, far_secrets = forward_onion(amount, HEIGHT + 5000)
    assert failure_name(run(far, amount + fee, HEIGHT + 5040), far_secrets) == (0, "expiry_too_far")


def test_forwards_meet_the_outgoing_channels_policy_or_an_earlier_one_still_accepted() -> None:
    """The policy comes per outgoing channel; within BOLT 7's grace the previous one passes too, and a
    refusal names the current one."""
    amount, out_cltv = 1_000_000, HEIGHT + 100
    current, previous = FeePolicy(2000, 100, 144), FeePolicy(1000, 10, 40)
    onion, secrets = forward_onion(amount, out_cltv)

    def go(fee: int, delta: int, policies: list[FeePolicy]) -> object:
        return decide(node_secret=NODE, amount_msat=amount + fee, payment_hash=HASH, cltv_expiry=out_cltv + delta, onion=onion,
                      height=HEIGHT, now=1000.0, invoice={HASH: TERMS}.get, next_channel=lambda scid: (True, 1),
                      policy=POLICY, policies=lambda scid: policies if scid == SCID else [])  # fmt: skip

    assert isinstance(go(current.fee(amount), 144, [current]), Forward)
    assert failure_name(go(previous.fee(amount), 40, [current]), secrets) == (0, "fee_insufficient")
    assert failure_name(go(current.fee(amount), 40, [current]), secrets) == (0, "incorrect_cltv_expiry")
    assert isinstance(go(previous.fee(amount), 40, [current, previous]), Forward)  # the old policy, in its grace
    # each policy is met as a whole: the old fee with a larger delta meets the old one; a delta below both fails
    assert isinstance(go(previous.fee(amount), 144, [current, previous]), Forward)
    assert failure_name(go(previous.fee(amount), 39, [current, previous]), secrets) == (0, "fee_insufficient")
    assert isinstance(go(POLICY.fee(amount), 40, []), Forward)  # no policy for the channel: ``policy``


def test_mpp_parts_wait_for_the_total_then_settle_or_time_out() -> None:
    onion, secrets = final_onion(60_000, HEIGHT + 30, total=100_000)
    part = run(onion, 60_000, HEIGHT + 30)
    assert isinstance(part, HoldPart) and part.total_msat == 100_000
    sets = MppSets(timeout=60.0)
    assert sets.add(("chan", 1), part, now=0.0) is None
    assert sets.next_deadline() == 60.0
    rest = HoldPart(HASH, 100_000, 40_000, part.shared_secret)
    complete = sets.add(("chan", 2), rest, now=10.0)
    assert isinstance(complete, CompleteSet) and complete.htlcs == [("chan", 1), ("chan", 2)] and complete.started == 0.0
    assert complete.parts[("chan", 1)].shared_secret == part.shared_secret
    assert sets.expire(1000.0) == [] and sets.next_deadline() is None
    # an incomplete set times out: each part fails with mpp_timeout
    assert sets.add(("chan", 3), part, now=100.0) is None
    assert sets.expire(159.0) == []
    ((ref, failed),) = sets.expire(160.0)
    assert ref == ("chan", 3) and failure_name(failed, secrets) == (0, "mpp_timeout")


@pytest.mark.parametrize("total", [99_999, 200_001])
def test_a_total_outside_the_invoice_amount_is_refused(total: int) -> None:
    onion, secrets = final_onion(50_000, HEIGHT + 30, total=total)
    assert failure_name(run(onion, 50_000, HEIGHT + 30), secrets) == (0, "incorrect_or_unknown_payment_details")


def test_channel_policies_come_from_the_announce_app_else_the_payments_default() -> None:
    """Forwards meet what the announce app announces per channel; route hints carry the peer's own update."""
    from types import SimpleNamespace

    from lnpmsg.payments.policy import ChannelPolicies
    from lnpmsg.payments.views import route_hints

    def policy(base: int, ppm: int, delta: int) -> SimpleNamespace:
        return SimpleNamespace(fee_base_msat=base, fee_proportional_millionths=ppm, cltv_expiry_delta=delta)

    class FakeAnnounce:  # a stand-in with the announce app's attributes ChannelPolicies reads
        config = SimpleNamespace(policy=policy(1000, 10, 40))
        peer_updates = {7: policy(5, 6, 70)}

        def forwarding_policies(self, scid: int) -> list[SimpleNamespace]:
            return [policy(1, 2, 144), self.config.policy] if scid == 7 else [self.config.policy]

    channels = [SimpleNamespace(short_channel_id=scid, hint_scid=scid, peer_id=bytes([2]) * 33, public=False, receivable_msat=1) for scid in (7, 8)]
    announced = ChannelPolicies(FakeAnnounce, POLICY)
    assert announced.forwarding(7) == [FeePolicy(1, 2, 144), FeePolicy(1000, 10, 40)] and announced.forwarding(8) == [FeePolicy(1000, 10, 40)]
    peers = announced.of_peers(channels)  # type: ignore[arg-type]
    assert peers == {7: FeePolicy(5, 6, 70), 8: FeePolicy(1000, 10, 40)}
    hints = route_hints(channels, POLICY, peers)  # type: ignore[arg-type]
    assert [(h.short_channel_id, h.fee_base_msat, h.cltv_expiry_delta) for (h,) in hints] == [(7, 5, 70), (8, 1000, 40)]
    alone = ChannelPolicies(lambda: None, POLICY)
    assert alone.forwarding(7) == [POLICY] and alone.of_peers(channels) == {}  # type: ignore[arg-type]
    assert [h.fee_proportional_millionths for (h,) in route_hints(channels, POLICY)] == [100, 100]  # type: ignore[arg-type]


def test_our_invoices_leave_the_payee_room_before_its_monitor_claims_on_chain() -> None:
    """The final HTLC arrives expiring ``min_final_cltv`` blocks ahead: the payee, holding the preimage,
    must not be due to claim it on chain at once (it would close the channel for a payment in flight)."""
    from lnpmsg.channels.bolt3 import Htlc
    from lnpmsg.channels.monitor.deadlines import CLTV_CLAIM_BUFFER, force_close_reasons
    from lnpmsg.payments import bolt11
    from lnpmsg.payments.views import new_invoice

    text, row = new_invoice(NODE, "bcrt", 1000, "l", "d", 60, 1_000, ())
    delta = bolt11.decode(text).min_final_cltv
    assert delta == row["min_final_cltv"] > CLTV_CLAIM_BUFFER
    htlc = Htlc(htlc_id=0, offered=False, amount_msat=1000, payment_hash=row["payment_hash"], cltv_expiry=HEIGHT + delta)
    assert force_close_reasons({(False, 0): htlc}, {row["payment_hash"]}, {}, HEIGHT) == []
    assert force_close_reasons({(False, 0): htlc}, {row["payment_hash"]}, {}, HEIGHT + delta - CLTV_CLAIM_BUFFER)


def keysend(preimage: bytes, payment_hash: bytes, amount: int, cltv: int, *, accept: int | None = 24, invoices: dict | None = None,  # type: ignore[type-arg]
            secret: bytes | None = None, total: int | None = None, htlc_msat: int | None = None) -> tuple[object, tuple[bytes, ...]]:
    """Decide a keysend (bLIP 3) HTLC of ``payment_hash`` (``htlc_msat``, default ``amount``) whose final payload
    carries ``preimage`` and ``amount``."""
    payload = HopPayload.final(amount, cltv, payment_secret=secret, total_msat=total, keysend_preimage=preimage).encode()
    built = construct_onion(os.urandom(32), [NODE_ID], [payload], payment_hash)
    action = decide(node_secret=NODE, amount_msat=htlc_msat or amount, payment_hash=payment_hash, cltv_expiry=cltv, onion=built.packet, height=HEIGHT,
                    now=1000.0, invoice=(invoices or {}).get, next_channel=lambda scid: None, policy=POLICY,
                    keysend_min_final_cltv=accept)  # fmt: skip
    return action, tuple(built.shared_secrets)


def test_a_keysend_is_taken_when_accepted_and_its_preimage_is_the_hash_s() -> None:
    preimage = os.urandom(32)
    hashed = hashlib.sha256(preimage).digest()
    action, _ = keysend(preimage, hashed, 5000, HEIGHT + 40)
    assert action == Spontaneous(preimage, 5000, 5000)
    # the HTLC may carry more than the onion says (kept: what we received), never less
    assert keysend(preimage, hashed, 5000, HEIGHT + 40, htlc_msat=5100)[0] == Spontaneous(preimage, 5100, 5000)
    assert failure_name(*keysend(preimage, hashed, 5000, HEIGHT + 40, htlc_msat=4999)) == (0, "final_incorrect_htlc_amount")
    # a payment_data whose total is the amount (a sender's random secret) is fine; a multi-part keysend is not
    assert keysend(preimage, hashed, 5000, HEIGHT + 40, secret=os.urandom(32))[0] == Spontaneous(preimage, 5000, 5000)
    refusals = [
        keysend(preimage, hashed, 5000, HEIGHT + 40, accept=None),  # we accept none
        keysend(os.urandom(32), hashed, 5000, HEIGHT + 40),  # a forged preimage
        keysend(preimage, hashed, 5000, HEIGHT + 23),  # closer than the 24 blocks we ask
        keysend(preimage, hashed, 5000, HEIGHT + 40, secret=os.urandom(32), total=10_000),  # one part of more
        # the hash of one of our invoices: it is the invoice's payment, and has not its secret
        keysend(PREIMAGE, HASH, 100_000, HEIGHT + 40, invoices={HASH: TERMS}),
    ]
    for action, secrets in refusals:
        assert failure_name(action, secrets) == (0, "incorrect_or_unknown_payment_details")
    # a keysend we recorded (its row's terms): this HTLC again after a restart settles, without its preimage it fails
    recorded = {hashed: InvoiceTerms(hashed, preimage, b"", 5000, 24, expires_at=0, paid=True, keysend=True)}
    assert keysend(preimage, hashed, 5000, HEIGHT + 40, invoices=recorded)[0] == Settle(preimage, 5000)
    assert keysend(preimage, hashed, 5000, HEIGHT + 40, invoices=recorded, accept=None)[0] == Settle(preimage, 5000)
    assert failure_name(*keysend(os.urandom(32), hashed, 5000, HEIGHT + 40, invoices=recorded)) == (0, "incorrect_or_unknown_payment_details")
