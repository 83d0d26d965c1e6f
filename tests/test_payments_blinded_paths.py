"""Paying into several blinded paths, and paths ending with dummy hops, sans-IO
(:mod:`lnpmsg.payments.blinded_routes`, :func:`~lnpmsg.payments.blinded.create_payment_path`'s
``dummy_hops``, :func:`~lnpmsg.payments.blinded_htlcs.decide_blinded`).

A payer S with a channel to each of B and C; a recipient R with a path through
each (B and C introduce them), padded with R's own dummy hops. An amount no
channel of S carries alone is split into a part into each path; each
introduction node forwards its part, R peels its dummy hops and holds both
parts of the set until the total is there. A part a path refuses
(``invalid_onion_blinding``) goes again into the other path; once each path
refused, the payment fails. A part of several that R fails at its MPP timeout
comes back as the same error: its path is tried again (a limited number of
times). A hop that names the next node by id (no
channel) forwards over our channel to it.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import coincurve
import pytest

from lnpmsg.payments.blinded import PathHop, PaymentRelay, create_payment_path, path_id_for
from lnpmsg.payments.blinded_routes import blinded_paths_finder, path_scid
from lnpmsg.payments.graph import OverlayGraph, RoutingGraph, local_channel
from lnpmsg.payments.htlcs import FailMalformed, FailOnion, FeePolicy, Forward, HoldPart, InvoiceTerms, MppSets, Settle, decide
from lnpmsg.payments.onion import create_blinded_path, create_failure_onion, decrypt_failure_onion, padded_encrypted_data
from lnpmsg.payments.onion.blinding import MAX_DUMMY_HOPS
from lnpmsg.payments.onion.failures import InvalidOnionBlinding
from lnpmsg.payments.route import NoRouteError
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.payments.sender import MAX_SET_PART_FAILURES_PER_PATH, OutgoingResult, Payment
from lnpmsg.wire.primitives import ShortChannelId
from lnpmsg.wire.tlv import TlvStream

S, B, C, R = (coincurve.PrivateKey(bytes([i]) * 32) for i in (0x31, 0x32, 0x33, 0x34))
SECRETS = {k.public_key.format(): k.secret for k in (B, C, R)}
HEIGHT, NOW, AMOUNT = 700, 1_000_000.0, 1_000_000
#: the channels S-B, S-C (S's) and B-R, C-R (what each path names)
S_B, S_C, B_R, C_R = 1, 2, 11, 12
RELAY = PaymentRelay(40, 100, 1000)
TERMS: dict[str, Any] = {}


def _pub(key: coincurve.PrivateKey) -> bytes:
    return key.public_key.format()


def _paths(payment_hash: bytes, dummy_hops: int = 2, c_relay: PaymentRelay = RELAY) -> list[tuple[Any, Any, int]]:
    """R's paths for ``payment_hash``: through B, then through C, each padded with ``dummy_hops``."""
    out = []
    for intro, scid, relay in ((B, B_R, RELAY), (C, C_R, c_relay)):
        path, payinfo = create_payment_path(os.urandom(32), [PathHop(_pub(intro), scid, relay)], _pub(R), path_id_for(R.secret, payment_hash),
                                            HEIGHT + 1000, 18, dummy_hops=dummy_hops)  # fmt: skip
        out.append((path, payinfo, 2 * AMOUNT))
    return out


def _finder(paths: list[tuple[Any, Any, int]], spendable: int, mpp: bool = True, max_fee_msat: int | None = None) -> Any:
    def view(excluded: frozenset[int]) -> OverlayGraph:
        return OverlayGraph(RoutingGraph(), [local_channel(scid, _pub(S), _pub(peer), 0 if scid in excluded else spendable)
                                             for scid, peer in ((S_B, B), (S_C, C))])  # fmt: skip

    return blinded_paths_finder(view, _pub(S), paths, height=HEIGHT, now=lambda: NOW, scorer=MissionControl(), mpp=mpp,
                                max_fee_msat=max_fee_msat)  # fmt: skip


def _invoice() -> InvoiceTerms:
    preimage = os.urandom(32)
    return InvoiceTerms(hashlib.sha256(preimage).digest(), preimage, os.urandom(32), AMOUNT, 18, 2**40)


def _at(node: coincurve.PrivateKey, amount: int, expiry: int, onion: bytes, payment_hash: bytes, path_key: bytes | None = None,
        terms: InvoiceTerms | None = None, **kwargs: Any) -> Any:  # fmt: skip
    """What ``node`` decides for an incoming HTLC (its channels: B_R or C_R, usable)."""
    return decide(node_secret=node.secret, amount_msat=amount, payment_hash=payment_hash, cltv_expiry=expiry, onion=onion, height=HEIGHT,
                  now=NOW, invoice=(lambda h: terms if terms is not None and h == terms.payment_hash else None),
                  next_channel=lambda scid: (True, 1) if scid in (B_R, C_R) else None, policy=FeePolicy(1000, 100, 40), path_key=path_key,
                  **kwargs)  # fmt: skip


def _through_path(part: Any, terms: InvoiceTerms) -> Any:
    """The part's HTLC taken by its introduction node, then by R (who peels its dummy hops): R's action."""
    route = part.route
    intro = route.hops[0]
    forward = _at(B if intro.node_id == _pub(B) else C, intro.amount_msat, intro.cltv_expiry, part.onion, terms.payment_hash)
    assert isinstance(forward, Forward) and forward.short_channel_id == (B_R if intro.node_id == _pub(B) else C_R)
    return _at(R, forward.amount_msat, forward.cltv_expiry, forward.onion, terms.payment_hash, forward.path_key, terms)


def test_dummy_hops_pad_a_path_and_change_nothing_a_payer_pays() -> None:
    payment_hash = os.urandom(32)
    (padded, info, _), _ = _paths(payment_hash, dummy_hops=2)
    (plain, plain_info, _), _ = _paths(payment_hash, dummy_hops=0)
    assert len(padded.hops) == 4 and len(plain.hops) == 2 and info == plain_info  # (they relay for nothing)
    assert len({len(h.encrypted_recipient_data) for h in padded.hops}) == 1  # one length: the last is not told apart
    assert _pub(R) not in (h.blinded_node_id for h in padded.hops) and len({h.blinded_node_id for h in padded.hops}) == 4


def test_an_amount_no_channel_carries_is_split_over_two_paths_and_held_whole() -> None:
    terms = _invoice()
    paths = _paths(terms.payment_hash)
    payment = Payment(terms.payment_hash, None, AMOUNT, _finder(paths, spendable=700_000), MissionControl())
    parts = payment.next_parts()
    assert len(parts) == 2 and sum(p.route.final_amount_msat for p in parts) == AMOUNT
    assert {p.route.blinded for p in parts} == {paths[0][0], paths[1][0]}  # one part into each path
    for part in parts:  # S's channel to the introduction node, then the path's hops (stand-ins after it)
        path = part.route.blinded
        assert [h.node_id for h in part.route.hops] == [path.first_node_id, *(h.blinded_node_id for h in path.hops[1:])]
        assert part.route.amount_msat >= part.route.final_amount_msat + paths[0][1].fee(part.route.final_amount_msat)
    held = [_through_path(p, terms) for p in parts]
    assert all(isinstance(h, HoldPart) and h.total_msat == AMOUNT for h in held)
    sets = MppSets()
    assert sets.add(("b", 0), held[0], NOW) is None  # (the first part waits for the rest)
    complete = sets.add(("c", 0), held[1], NOW)
    assert complete is not None and not isinstance(complete, FailOnion) and len(complete.parts) == 2
    # without MPP one route carries it all: here none can; nor do parts whose fees pass max_fee_msat
    with pytest.raises(NoRouteError):
        _finder(paths, spendable=700_000, mpp=False)(AMOUNT, frozenset())
    fees = sum(p.route.fee_msat for p in parts)
    assert len(_finder(paths, spendable=700_000, max_fee_msat=fees)(AMOUNT, frozenset())) == 2
    with pytest.raises(NoRouteError, match="over max_fee_msat"):
        _finder(paths, spendable=700_000, max_fee_msat=fees - 1)(AMOUNT, frozenset())


def test_one_part_goes_into_the_path_that_costs_least() -> None:
    terms = _invoice()
    paths = _paths(terms.payment_hash, c_relay=PaymentRelay(40, 100, 5000))  # (C's path costs more)
    (route,) = _finder(paths, spendable=2 * AMOUNT, mpp=False)(AMOUNT, frozenset())
    assert route.blinded == paths[0][0] and route.hops[0].node_id == _pub(B)
    # R takes it whole: settled at once
    payment = Payment(terms.payment_hash, None, AMOUNT, _finder(paths, spendable=2 * AMOUNT), MissionControl())
    (part,) = payment.next_parts()
    settled = _through_path(part, terms)
    assert isinstance(settled, Settle) and settled.preimage == terms.preimage and settled.amount_msat >= AMOUNT


def _refused_by_path(part: Any) -> OutgoingResult:
    """The introduction node's ``invalid_onion_blinding``, as it comes back to the payer."""
    failure = InvalidOnionBlinding(sha256_of_onion=hashlib.sha256(part.onion).digest())
    return OutgoingResult(reason=create_failure_onion(part.shared_secrets[0], failure))


def test_a_part_a_path_refuses_goes_into_the_other_until_none_is_left() -> None:
    terms = _invoice()
    paths = _paths(terms.payment_hash, c_relay=PaymentRelay(40, 100, 5000))
    payment = Payment(terms.payment_hash, None, AMOUNT, _finder(paths, spendable=2 * AMOUNT), MissionControl())
    (first,) = payment.next_parts()
    assert first.route.blinded == paths[0][0]
    payment.on_result(first, _refused_by_path(first), NOW)
    assert payment.final_error is None and path_scid(paths[0][0]) in payment.excluded
    (again,) = payment.next_parts()
    assert again.route.blinded == paths[1][0] and again.route.final_amount_msat == AMOUNT
    assert isinstance(_through_path(again, terms), Settle)
    payment.on_result(again, _refused_by_path(again), NOW)  # (say C's path refused it too)
    assert payment.next_parts() == [] and payment.done and payment.final_error is not None
    assert payment.final_error.details["error"] == "NoRoute" and "no blinded path" in str(payment.final_error)
    assert payment.final_error.details["code"] == InvalidOnionBlinding.TYPE and len(payment.final_error.details["attempts"]) == 2


def test_a_part_of_several_failed_back_at_the_mpp_timeout_does_not_lose_its_path() -> None:
    """Two parts, one into each path. C's part fails inside C's path; R holds B's until its MPP timeout,
    then fails it: both come back to S as the introduction nodes' invalid_onion_blinding (BOLT 4 hides
    which). Neither path is excluded for that (a part of several may have met the recipient's timeout):
    the amount goes into both again and R takes the set. Parts failing again in a path exclude it
    (MAX_SET_PART_FAILURES_PER_PATH), then the payment fails."""
    assert MAX_SET_PART_FAILURES_PER_PATH == 2
    terms = _invoice()
    paths = _paths(terms.payment_hash)
    payment = Payment(terms.payment_hash, None, AMOUNT, _finder(paths, spendable=700_000), MissionControl())
    parts = {p.route.blinded: p for p in payment.next_parts()}
    via_b, via_c = parts[paths[0][0]], parts[paths[1][0]]
    sets = MppSets(timeout=60.0)
    held = _through_path(via_b, terms)
    assert isinstance(held, HoldPart) and sets.add(("b", 0), held, NOW) is None
    payment.on_result(via_c, _refused_by_path(via_c), NOW)  # (C could not forward it, say)
    ((_, timed_out),) = sets.expire(NOW + 60.0)
    assert timed_out.failure is not None and timed_out.failure.code == 23  # R's own mpp_timeout; B turns it into:
    payment.on_result(via_b, _refused_by_path(via_b), NOW + 60.0)
    assert payment.final_error is None and not payment.excluded
    again = payment.next_parts()
    assert {p.route.blinded for p in again} == {paths[0][0], paths[1][0]} and sum(p.route.final_amount_msat for p in again) == AMOUNT
    first = sets.add(("b", 1), _through_path(again[0], terms), NOW + 61.0)
    complete = sets.add(("c", 1), _through_path(again[1], terms), NOW + 61.0)
    assert first is None and complete is not None and not isinstance(complete, FailOnion) and len(complete.parts) == 2
    # the same two paths failing their parts again: now each is excluded, and nothing is left
    for part in again:
        payment.on_result(part, _refused_by_path(part), NOW + 62.0)
    assert payment.excluded == {path_scid(paths[0][0]), path_scid(paths[1][0])}
    assert payment.next_parts() == [] and payment.final_error is not None and payment.final_error.details["error"] == "NoRoute"
    assert len(payment.final_error.details["attempts"]) == 4


def test_a_path_of_us_alone_with_dummy_hops() -> None:
    """R introduces its own path (a payer routes to R as to any introduction node), then its dummy hops."""
    terms = _invoice()
    path, payinfo = create_payment_path(os.urandom(32), [], _pub(R), path_id_for(R.secret, terms.payment_hash), HEIGHT + 1000, 18,
                                        dummy_hops=3)  # fmt: skip
    assert path.first_node_id == _pub(R) and len(path.hops) == 4
    finder = blinded_paths_finder(lambda excluded: OverlayGraph(RoutingGraph(), [local_channel(5, _pub(S), _pub(R), 2 * AMOUNT)]), _pub(S),
                                  [(path, payinfo, 0)], height=HEIGHT, now=lambda: NOW, scorer=MissionControl(), mpp=True)  # fmt: skip
    (part,) = Payment(terms.payment_hash, None, AMOUNT, finder, MissionControl()).next_parts()
    first = part.route.hops[0]
    settled = _at(R, first.amount_msat, first.cltv_expiry, part.onion, terms.payment_hash, terms=terms)
    assert isinstance(settled, Settle) and settled.preimage == terms.preimage and settled.amount_msat >= AMOUNT
    # another invoice's hash: R is the path's introduction node, not its final one to the payer: invalid_onion_blinding
    other = _invoice()
    refused = _at(R, first.amount_msat, first.cltv_expiry, part.onion, terms.payment_hash, terms=other)
    assert isinstance(refused, FailOnion) and isinstance(refused.failure, InvalidOnionBlinding)
    assert decrypt_failure_onion(part.shared_secrets, refused.reason).hop_index == 0


def test_dummy_hops_past_the_limit_and_a_wrong_path_id_are_refused() -> None:
    terms = _invoice()
    for dummies, path_id in ((MAX_DUMMY_HOPS + 1, path_id_for(R.secret, terms.payment_hash)), (2, os.urandom(32))):
        path, payinfo = create_payment_path(os.urandom(32), [PathHop(_pub(B), B_R, RELAY)], _pub(R), path_id, HEIGHT + 1000, 18,
                                            dummy_hops=dummies)  # fmt: skip
        (part,) = Payment(terms.payment_hash, None, AMOUNT, _finder([(path, payinfo, 0)], 2 * AMOUNT), MissionControl()).next_parts()
        intro = part.route.hops[0]
        forward = _at(B, intro.amount_msat, intro.cltv_expiry, part.onion, terms.payment_hash)
        assert isinstance(forward, Forward)
        got = _at(R, forward.amount_msat, forward.cltv_expiry, forward.onion, terms.payment_hash, forward.path_key, terms)
        assert isinstance(got, FailMalformed) and got.failure_code == InvalidOnionBlinding.TYPE, got


def test_a_hop_naming_the_next_node_forwards_over_our_channel_to_it() -> None:
    terms = _invoice()
    relay = {"cltv_expiry_delta": RELAY.cltv_expiry_delta, "fee_proportional_millionths": RELAY.fee_proportional_millionths,
             "fee_base_msat": RELAY.fee_base_msat}  # fmt: skip
    constraints = {"max_cltv_expiry": HEIGHT + 1100, "htlc_minimum_msat": 1}
    streams = [TlvStream({"next_node_id": _pub(R), "payment_relay": relay, "payment_constraints": constraints}),
               TlvStream({"path_id": path_id_for(R.secret, terms.payment_hash), "payment_constraints": constraints})]  # fmt: skip
    path = create_blinded_path(os.urandom(32), [_pub(B), _pub(R)], padded_encrypted_data(streams))
    _, payinfo, _ = _paths(terms.payment_hash, dummy_hops=0)[0]
    (part,) = Payment(terms.payment_hash, None, AMOUNT, _finder([(path, payinfo, 0)], 2 * AMOUNT), MissionControl()).next_parts()
    intro = part.route.hops[0]
    to_r = {_pub(R): B_R}.get
    forward = _at(B, intro.amount_msat, intro.cltv_expiry, part.onion, terms.payment_hash, peer_channel=to_r)
    assert isinstance(forward, Forward) and forward.short_channel_id == B_R
    assert isinstance(_at(R, forward.amount_msat, forward.cltv_expiry, forward.onion, terms.payment_hash, forward.path_key, terms), Settle)
    # no channel to that node (or no way to look one up): refused as the path's introduction node refuses
    for lookup in ({}.get, None):
        refused = _at(B, intro.amount_msat, intro.cltv_expiry, part.onion, terms.payment_hash, peer_channel=lookup)
        assert isinstance(refused, FailOnion) and isinstance(refused.failure, InvalidOnionBlinding)
    assert ShortChannelId.from_int(B_R).to_int() == B_R
