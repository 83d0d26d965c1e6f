"""Blinded payments, sans-IO (:mod:`lnpmsg.payments.blinded`, :mod:`lnpmsg.payments.blinded_htlcs`).

The payer's onion into a blinded path is built from bolt04/blinded-payment-onion-test.json's
blinded route and amounts and must match the vector byte for byte; each hop then
decides the HTLC as a node would (the vector's keys), forwarding with the
amounts and expiries ``payment_relay`` gives and the next path key, or failing
with ``invalid_onion_blinding`` as its place in the path says. A path we create
to ourselves is paid and accepted; one with another ``path_id`` is not. Its payinfo rounded up
(``PayInfoRounding``) is paid too, within a tight expiry limit; a hop at its own policy takes a
path for amounts where BOLT 4's rounding leaves it 1 msat under its fee.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import BOLTS

from lnpmsg.payments.blinded import (
    BlindedPayInfo,
    PathHop,
    PaymentRelay,
    PayInfoRounding,
    aggregate_payinfo,
    blinded_payloads,
    create_payment_path,
    extend_route,
    forward_amount,
    forward_expiry,
    onion_hop_keys,
    path_id_for,
    read_blinded_hop,
)
from lnpmsg.payments.blinded_htlcs import blinded_role
from lnpmsg.payments.htlcs import FailMalformed, FailOnion, FeePolicy, Forward, InvoiceTerms, Settle, decide
from lnpmsg.payments.onion import BlindedHop, BlindedPath, HopPayload, construct_onion, decode_blinded_path, decrypt_failure_onion, process_onion
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.payments.route import Route, RouteHop
from lnpmsg.payments.sender import build_part
from lnpmsg.wire.primitives import ShortChannelId, decode_bigsize

BOLT04 = BOLTS / "bolt04"
VECTOR = json.loads((BOLT04 / "blinded-payment-onion-test.json").read_text())
GENERATE = VECTOR["generate"]
FULL = GENERATE["full_route"]["hops"]
DECRYPT = VECTOR["decrypt"]["hops"]
BLINDING = InvalidOnionBlinding.TYPE


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def _scid(text: str) -> int:
    return ShortChannelId.parse(text).to_int()


def _unframe(framed: str) -> bytes:
    raw = _h(framed)
    length, used = decode_bigsize(raw)
    return raw[used : used + length]


def _relay(relay: dict[str, int]) -> PaymentRelay:
    """A vector's payment_relay (a zero fee_base_msat, a tu32, is left out)."""
    return PaymentRelay(relay["cltv_expiry_delta"], relay["fee_proportional_millionths"], relay.get("fee_base_msat", 0))


def vector_path() -> BlindedPath:
    route = GENERATE["blinded_route"]
    hops = tuple(BlindedHop(_h(h["blinded_node_id"]), _h(h["encrypted_data"])) for h in route["hops"])
    return BlindedPath(_h(route["first_node_id"]), _h(route["first_path_key"]), hops)


def vector_route() -> Route:
    """Alice (a plain hop) then Bob, the introduction node, at the amount and expiry of Alice's payload."""
    alice, bob = FULL[0], FULL[1]
    amount, expiry = alice["tlvs"]["amt_to_forward"], alice["tlvs"]["outgoing_cltv_value"]
    into_bob = _scid(alice["tlvs"]["outgoing_channel_id"])
    to_intro = Route((RouteHop(1, 0, _h(alice["pubkey"]), amount, expiry, amount, expiry),
                      RouteHop(into_bob, 0, _h(bob["pubkey"]), amount, expiry, amount, expiry)))  # fmt: skip
    return extend_route(to_intro, vector_path(), GENERATE["final_amount_msat"], GENERATE["final_cltv"])


def test_the_payers_onion_matches_the_vector() -> None:
    route = vector_route()
    total = FULL[-1]["tlvs"]["total_amount_msat"]
    part = build_part(route, _h(GENERATE["associated_data"]), None, total, blinded=vector_path(), session_key=_h(GENERATE["session_key"]))
    assert part.onion.hex() == GENERATE["onion"]
    assert len(part.shared_secrets) == len(FULL)
    # the route names every layer: the blinded hops after the introduction node by their blinded ids
    assert [h.node_id.hex() for h in route.hops] == [h["pubkey"] for h in FULL[:2]] + [
        h["blinded_node_id"] for h in GENERATE["blinded_route"]["hops"][1:]
    ]
    assert route.final_amount_msat == GENERATE["final_amount_msat"]


def test_the_path_totals_are_the_vectors_payinfo() -> None:
    relays = [_relay(h["tlvs"]["encrypted_recipient_data"]["payment_relay"]) for h in FULL[1:4]]
    info = GENERATE["blinded_payinfo"]
    got = aggregate_payinfo(relays, min_final_cltv=0)
    assert (got.fee_base_msat, got.fee_proportional_millionths, got.cltv_expiry_delta) == (
        info["fee_base_msat"], info["fee_proportional_millionths"], info["cltv_expiry_delta"])  # fmt: skip
    # what the payer sends Bob: the vector rounds the proportional fee down, we up (never short)
    payinfo = BlindedPayInfo(info["fee_base_msat"], info["fee_proportional_millionths"], info["cltv_expiry_delta"])
    final = GENERATE["final_amount_msat"]
    assert payinfo.fee(final) - (FULL[0]["tlvs"]["amt_to_forward"] - final) in (0, 1)


def test_each_hop_reads_its_data_and_forwards_what_the_relay_gives() -> None:
    associated_data = _h(GENERATE["associated_data"])
    amount, expiry = FULL[0]["tlvs"]["amt_to_forward"], FULL[0]["tlvs"]["outgoing_cltv_value"]
    packet = _h(DECRYPT[1]["onion"])
    path_key = None
    for i in range(1, len(FULL)):
        key, wanted = _h(DECRYPT[i]["node_privkey"]), FULL[i]["tlvs"]["encrypted_recipient_data"]
        assert packet.hex() == DECRYPT[i]["onion"]
        received = process_onion(key, packet, associated_data, path_key=path_key)
        data = read_blinded_hop(key, path_key or received.payload.current_path_key, received.payload.encrypted_recipient_data)  # type: ignore[arg-type]
        assert data.next_path_key.hex() == DECRYPT[i]["next_path_key"]
        constraints = wanted["payment_constraints"]
        assert data.constraints is not None and (data.constraints.max_cltv_expiry, data.constraints.htlc_minimum_msat) == (
            constraints["max_cltv_expiry"], constraints["htlc_minimum_msat"])  # fmt: skip
        assert data.check_constraints(amount, expiry) is None
        if received.is_final:
            assert data.path_id is not None and data.path_id.hex() == wanted["path_id"]
            assert amount >= received.payload.amt_to_forward and expiry == received.payload.outgoing_cltv_value  # type: ignore[operator]
            break
        assert data.relay == _relay(wanted["payment_relay"])
        assert data.short_channel_id == _scid(wanted["short_channel_id"])
        # BOLT 4: amt_to_forward rounded up, so the hop keeps at most its fee
        out = forward_amount(amount, data.relay)
        fee = amount - out
        assert data.relay.fee_base_msat + out * data.relay.fee_proportional_millionths // 1_000_000 <= fee
        assert fee <= data.relay.fee_base_msat + -(-out * data.relay.fee_proportional_millionths // 1_000_000)
        amount, expiry = out, forward_expiry(expiry, data.relay)
        path_key, packet = data.next_path_key, received.next_packet or b""
    assert amount >= GENERATE["final_amount_msat"] and expiry == GENERATE["final_cltv"]


def _decide(i: int, amount: int, expiry: int, path_key: bytes | None = None, *, height: int = 748_000,
            policy: FeePolicy | None = None, invoice: Any = None, usable: bool = True) -> Any:  # fmt: skip
    return decide(node_secret=_h(DECRYPT[i]["node_privkey"]), amount_msat=amount, payment_hash=_h(GENERATE["associated_data"]),
                  cltv_expiry=expiry, onion=_h(DECRYPT[i]["onion"]), height=height, now=0.0, invoice=invoice or (lambda h: None),
                  next_channel=lambda scid: (usable, 1), policy=policy or FeePolicy(0, 0, 0), path_key=path_key)  # fmt: skip


def test_the_introduction_node_forwards_with_the_next_path_key() -> None:
    amount, expiry = FULL[0]["tlvs"]["amt_to_forward"], FULL[0]["tlvs"]["outgoing_cltv_value"]
    action = _decide(1, amount, expiry, policy=FeePolicy(10_000, 0, 50))
    assert isinstance(action, Forward)
    assert action.path_key is not None and action.path_key.hex() == DECRYPT[1]["next_path_key"]
    assert action.short_channel_id == _scid("0x0x1") and action.cltv_expiry == expiry - 50 and action.onion.hex() == DECRYPT[2]["onion"]
    assert blinded_role(_h(DECRYPT[1]["node_privkey"]), _h(DECRYPT[1]["onion"]), _h(GENERATE["associated_data"]), None) == "introduction"
    assert blinded_role(_h(DECRYPT[0]["node_privkey"]), _h(DECRYPT[0]["onion"]), _h(GENERATE["associated_data"]), None) is None
    # Carol, with the path key in update_add_htlc
    carol = _decide(2, action.amount_msat, action.cltv_expiry, action.path_key, policy=FeePolicy(100, 150, 75))
    assert isinstance(carol, Forward) and carol.path_key is not None and carol.path_key.hex() == DECRYPT[2]["next_path_key"]


def _introduction_failure(action: Any) -> None:
    """An introduction node's failure: a failure onion (update_fail_htlc) saying invalid_onion_blinding."""
    assert isinstance(action, FailOnion) and isinstance(action.failure, InvalidOnionBlinding)
    assert action.failure.sha256_of_onion == hashlib.sha256(_h(DECRYPT[1]["onion"])).digest()


@pytest.mark.parametrize(
    "what",
    ["fee", "cltv_delta", "max_cltv_expiry", "htlc_minimum", "channel down"],
)
def test_the_introduction_node_refuses_with_invalid_onion_blinding(what: str) -> None:
    amount, expiry = FULL[0]["tlvs"]["amt_to_forward"], FULL[0]["tlvs"]["outgoing_cltv_value"]
    policy = FeePolicy(10_000, 0, 50)
    if what == "fee":  # the path's payment_relay pays less than we charge
        action = _decide(1, amount, expiry, policy=FeePolicy(10_001, 0, 50))
    elif what == "cltv_delta":
        action = _decide(1, amount, expiry, policy=FeePolicy(10_000, 0, 51))
    elif what == "max_cltv_expiry":  # Bob's is 750150
        action = _decide(1, amount, 750_151, policy=policy)
    elif what == "htlc_minimum":  # 50 msat
        action = _decide(1, 49, expiry, policy=policy)
    else:
        action = _decide(1, amount, expiry, policy=policy, usable=False)
    _introduction_failure(action)


def test_a_node_after_the_introduction_fails_malformed() -> None:
    bob = _decide(1, FULL[0]["tlvs"]["amt_to_forward"], FULL[0]["tlvs"]["outgoing_cltv_value"], policy=FeePolicy(10_000, 0, 50))
    assert isinstance(bob, Forward)
    # beyond Carol's max_cltv_expiry (750100)
    carol = _decide(2, bob.amount_msat, 750_101, bob.path_key)
    assert isinstance(carol, FailMalformed) and carol.failure_code == BLINDING
    assert carol.sha256_of_onion == hashlib.sha256(_h(DECRYPT[2]["onion"])).digest()
    # the wrong path key: the onion does not authenticate; still invalid_onion_blinding, never invalid_onion_hmac
    wrong = _decide(2, bob.amount_msat, bob.cltv_expiry, _h(DECRYPT[3]["next_path_key"]))
    assert isinstance(wrong, FailMalformed) and wrong.failure_code == BLINDING
    # Eve is the final node, and the vector's path_id is not ours for this hash
    terms = InvoiceTerms(_h(GENERATE["associated_data"]), os.urandom(32), os.urandom(32), None, 18, 2**40)
    eve = _decide(4, 100_000, 749_000, _h(DECRYPT[3]["next_path_key"]), invoice=lambda h: terms)
    assert isinstance(eve, FailMalformed) and eve.failure_code == BLINDING


NODES = [coincurve.PrivateKey(bytes([i]) * 32) for i in (0x21, 0x22, 0x23)]


def _our_payment(path_id: bytes | None = None, max_cltv: int = 1_000, relay: PaymentRelay | None = None,
                 rounding: PayInfoRounding | None = None, amount: int = 5_000_000) -> dict[str, Any]:  # fmt: skip
    """A path made by node 2 through node 1 (introduction) for an invoice, and node 0's onion into it."""
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).digest()
    me, intro = NODES[2], NODES[1]
    relay = relay or PaymentRelay(40, 10, 1000)
    path, payinfo = create_payment_path(os.urandom(32), [PathHop(intro.public_key.format(), 7, relay)], me.public_key.format(),
                                        path_id or path_id_for(me.secret, payment_hash), max_cltv, 18, rounding=rounding)  # fmt: skip
    assert decode_blinded_path(path.encode()) == (path, len(path.encode()))
    height = 500
    to_intro = amount + payinfo.fee(amount)
    route = extend_route(Route((RouteHop(3, 0, intro.public_key.format(), to_intro, height + payinfo.cltv_expiry_delta,
                                         to_intro, height + payinfo.cltv_expiry_delta),)), path, amount, height)  # fmt: skip
    part = build_part(route, payment_hash, None, amount, blinded=path)
    terms = InvoiceTerms(payment_hash, preimage, os.urandom(32), amount, 18, 2**40)
    return dict(part=part, route=route, terms=terms, height=height, amount=amount, payinfo=payinfo)


def test_a_path_to_us_is_paid_and_accepted() -> None:
    pay = _our_payment()
    part, route, terms = pay["part"], pay["route"], pay["terms"]
    assert route.amount_msat == pay["amount"] + pay["payinfo"].fee(pay["amount"])
    fwd = decide(node_secret=NODES[1].secret, amount_msat=route.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=route.cltv_expiry,
                 onion=part.onion, height=pay["height"], now=0.0, invoice=lambda h: None, next_channel=lambda scid: (scid == 7, 1),
                 policy=FeePolicy(1000, 10, 40))  # fmt: skip
    assert isinstance(fwd, Forward) and fwd.short_channel_id == 7 and fwd.amount_msat >= pay["amount"]
    got = decide(node_secret=NODES[2].secret, amount_msat=fwd.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=fwd.cltv_expiry,
                 onion=fwd.onion, height=pay["height"], now=0.0, invoice={terms.payment_hash: terms}.get, next_channel=lambda scid: None,
                 policy=FeePolicy(), path_key=fwd.path_key)  # fmt: skip
    assert got == Settle(terms.preimage, fwd.amount_msat)


@pytest.mark.parametrize("rounded", [True, False])
def test_a_rounded_payinfo_hides_the_policy_and_is_paid_within_a_tight_expiry_limit(rounded: bool) -> None:
    """The introduction node's 1001 msat + 111 millionths and 41 blocks (and our final 18) show as 2000 + 200
    and 72; a payer paying those gives the path more than it needs: the hop forwards at its own policy and we
    get the rest. The path's limit one block past our final delta still lets the rounded delta through (the
    rounding raised it by the blocks it added); a path's figures (its hops') would not be refused either way."""
    relay = PaymentRelay(41, 111, 1001)
    pay = _our_payment(max_cltv=500 + 18 + 1, relay=relay, rounding=PayInfoRounding() if rounded else None)
    info = pay["payinfo"]
    exact = aggregate_payinfo([relay], 18)
    assert (info.fee_base_msat, info.fee_proportional_millionths, info.cltv_expiry_delta) == ((2000, 200, 72) if rounded else (1001, 111, 59))
    assert exact == BlindedPayInfo(1001, 111, 59) and PayInfoRounding(0, 0, 0).apply(exact) == exact
    assert PayInfoRounding().apply(BlindedPayInfo(2000, 200, 72, 7)) == BlindedPayInfo(2000, 200, 72, 7)  # (a multiple stays)
    part, route, terms = pay["part"], pay["route"], pay["terms"]
    fwd = decide(node_secret=NODES[1].secret, amount_msat=route.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=route.cltv_expiry,
                 onion=part.onion, height=pay["height"], now=0.0, invoice=lambda h: None, next_channel=lambda scid: (True, 1),
                 policy=FeePolicy(1001, 111, 41))  # fmt: skip
    assert isinstance(fwd, Forward) and route.amount_msat - fwd.amount_msat >= FeePolicy(1001, 111, 41).fee(fwd.amount_msat)
    got = decide(node_secret=NODES[2].secret, amount_msat=fwd.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=fwd.cltv_expiry,
                 onion=fwd.onion, height=pay["height"], now=0.0, invoice={terms.payment_hash: terms}.get, next_channel=lambda scid: None,
                 policy=FeePolicy(), path_key=fwd.path_key)  # fmt: skip
    assert got == Settle(terms.preimage, fwd.amount_msat) and fwd.amount_msat >= pay["amount"]
    if rounded:  # (what the payer added over the hop's needs reached us)
        assert fwd.amount_msat - pay["amount"] >= info.fee(pay["amount"]) - exact.fee(pay["amount"]) - 1
        assert fwd.cltv_expiry == pay["height"] + 72 - 41


@pytest.mark.parametrize("relay, amount, rounded", [(PaymentRelay(182, 4344, 4486), 4_302_550_414, False),
                                                     (PaymentRelay(216, 3387, 3274), 8_365_571_434, True)])
def test_the_introduction_node_takes_a_path_at_its_own_policy_whatever_the_rounding(relay: PaymentRelay, amount: int,
                                                                                    rounded: bool) -> None:  # fmt: skip
    """BOLT 4's forwarded amount rounds up (the hop keeps at most its fee), so for some amounts the hop keeps
    1 msat less than its policy's fee of that amount, rounded down: a path written at the hop's own policy, paid
    at its payinfo (exact or rounded up), is still forwarded (our policy would have forwarded no more)."""
    pay = _our_payment(max_cltv=100_000, relay=relay, rounding=PayInfoRounding() if rounded else None, amount=amount)
    route, terms = pay["route"], pay["terms"]
    policy = FeePolicy(relay.fee_base_msat, relay.fee_proportional_millionths, relay.cltv_expiry_delta)
    fwd = decide(node_secret=NODES[1].secret, amount_msat=route.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=route.cltv_expiry,
                 onion=pay["part"].onion, height=pay["height"], now=0.0, invoice=lambda h: None, next_channel=lambda scid: (True, 1),
                 policy=policy)  # fmt: skip
    assert isinstance(fwd, Forward), fwd
    assert fwd.amount_msat >= amount and route.amount_msat - fwd.amount_msat == policy.fee(fwd.amount_msat) - 1  # (the case in point)
    # a hop that asks 1 millionth more than the path gives still refuses it
    stricter = FeePolicy(relay.fee_base_msat, relay.fee_proportional_millionths + 1, relay.cltv_expiry_delta)
    refused = decide(node_secret=NODES[1].secret, amount_msat=route.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=route.cltv_expiry,
                     onion=pay["part"].onion, height=pay["height"], now=0.0, invoice=lambda h: None, next_channel=lambda scid: (True, 1),
                     policy=stricter)  # fmt: skip
    assert isinstance(refused, FailOnion) and isinstance(refused.failure, InvalidOnionBlinding)


@settings(max_examples=40, deadline=None)
@given(base=st.integers(0, 10_000), ppm=st.integers(0, 10_000), delta=st.integers(0, 300), amount=st.integers(1_000, 10**10),
       rounded=st.booleans())  # fmt: skip
def test_a_path_at_the_hops_policy_is_forwarded_and_settled_for_any_amount(base: int, ppm: int, delta: int, amount: int,
                                                                           rounded: bool) -> None:  # fmt: skip
    """Whatever the introduction node's policy and the amount, a path written at that policy and paid at its
    payinfo (exact or rounded up) is forwarded by it, and we settle it, having got at least the amount."""
    relay = PaymentRelay(delta, ppm, base)
    pay = _our_payment(max_cltv=10_000, relay=relay, rounding=PayInfoRounding() if rounded else None, amount=amount)
    route, terms = pay["route"], pay["terms"]
    fwd = decide(node_secret=NODES[1].secret, amount_msat=route.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=route.cltv_expiry,
                 onion=pay["part"].onion, height=pay["height"], now=0.0, invoice=lambda h: None, next_channel=lambda scid: (True, 1),
                 policy=FeePolicy(base, ppm, delta))  # fmt: skip
    assert isinstance(fwd, Forward), fwd
    got = decide(node_secret=NODES[2].secret, amount_msat=fwd.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=fwd.cltv_expiry,
                 onion=fwd.onion, height=pay["height"], now=0.0, invoice={terms.payment_hash: terms}.get, next_channel=lambda scid: None,
                 policy=FeePolicy(), path_key=fwd.path_key)  # fmt: skip
    assert isinstance(got, Settle) and fwd.amount_msat >= amount, got


@pytest.mark.parametrize("what", ["path_id", "max_cltv_expiry", "fee"])
def test_a_path_to_us_is_refused_when_broken(what: str) -> None:
    pay = _our_payment(path_id=os.urandom(32) if what == "path_id" else None, max_cltv=400 if what == "max_cltv_expiry" else 1_000,
                       relay=PaymentRelay(40, 10, 999) if what == "fee" else None)  # fmt: skip
    part, route, terms = pay["part"], pay["route"], pay["terms"]
    fwd = decide(node_secret=NODES[1].secret, amount_msat=route.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=route.cltv_expiry,
                 onion=part.onion, height=pay["height"], now=0.0, invoice=lambda h: None, next_channel=lambda scid: (True, 1),
                 policy=FeePolicy(1000, 10, 40))  # fmt: skip
    if what != "path_id":  # the introduction node refuses: a failure onion the payer reads
        assert isinstance(fwd, FailOnion)
        failed = decrypt_failure_onion(part.shared_secrets, fwd.reason)
        assert failed.hop_index == 0 and isinstance(failed.failure, InvalidOnionBlinding)
        return
    assert isinstance(fwd, Forward)
    got = decide(node_secret=NODES[2].secret, amount_msat=fwd.amount_msat, payment_hash=terms.payment_hash, cltv_expiry=fwd.cltv_expiry,
                 onion=fwd.onion, height=pay["height"], now=0.0, invoice={terms.payment_hash: terms}.get, next_channel=lambda scid: None,
                 policy=FeePolicy(), path_key=fwd.path_key)  # fmt: skip
    assert isinstance(got, FailMalformed) and got.failure_code == BLINDING


def test_an_introduction_payload_with_records_it_may_not_have_is_refused_as_blinding() -> None:
    """BOLT 4: a forwarding payload with ``current_path_key`` fails with invalid_onion_blinding whatever is
    wrong, also an ``amt_to_forward`` the payer should not have put there (a plain hop: invalid_onion_payload)."""
    payment_hash = os.urandom(32)
    path, _ = create_payment_path(os.urandom(32), [PathHop(NODES[1].public_key.format(), 7, PaymentRelay(40, 10, 1000))],
                                  NODES[2].public_key.format(), path_id_for(NODES[2].secret, payment_hash), 1_000, 18)  # fmt: skip
    final = blinded_payloads(path, 5_000_000, 500, 5_000_000)[1]
    intro = HopPayload(encrypted_recipient_data=path.hops[0].encrypted_recipient_data, current_path_key=path.first_path_key,
                       amt_to_forward=5_000_000)  # fmt: skip
    onion = construct_onion(os.urandom(32), onion_hop_keys(path), [intro.encode(), final], payment_hash).packet
    action = decide(node_secret=NODES[1].secret, amount_msat=5_100_000, payment_hash=payment_hash, cltv_expiry=600, onion=onion, height=500,
                    now=0.0, invoice=lambda h: None, next_channel=lambda scid: (True, 1), policy=FeePolicy())  # fmt: skip
    assert isinstance(action, FailOnion) and isinstance(action.failure, InvalidOnionBlinding)
    assert blinded_role(NODES[1].secret, onion, payment_hash, None) == "introduction"
