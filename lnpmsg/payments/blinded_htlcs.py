"""What to do with an incoming HTLC inside a blinded path (sans-IO), for :func:`~lnpmsg.payments.htlcs.decide`.

A hop whose payload carries ``encrypted_recipient_data`` reads it with the
path key (``update_add_htlc``'s ``blinded_path`` TLV, or the payload's
``current_path_key`` at the introduction node), then either forwards over the
channel it names, with the amount and expiry its ``payment_relay`` gives
(BOLT 4's formulas) and the next path key for ``update_add_htlc``, or, at the
final node, accepts the payment of one of our invoices when ``path_id`` is
ours for its payment hash (:func:`~lnpmsg.payments.blinded.path_id_for`).

Every failure inside a blinded path is ``invalid_onion_blinding`` (BOLT 4): the
introduction node sends it in a failure onion (``update_fail_htlc``), a node
after it as ``update_fail_malformed_htlc``; so no ``channel_update`` or
amount leaks who is where in the path. :func:`blinded_role` tells the shell
which of the two an incoming HTLC is, for failures that come later (from
downstream, or a next channel that refused the HTLC).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal

import coincurve

from lnpmsg.payments.blinded import BlindedHopData, forward_amount, forward_expiry, path_id_for, read_blinded_hop
from lnpmsg.payments.htlcs import (
    MAX_CLTV_AHEAD,
    MIN_OUTGOING_CLTV_MARGIN,
    NEXT_CHANNEL_DOWN,
    Action,
    FailMalformed,
    FailOnion,
    FeePolicy,
    Forward,
    HoldPart,
    InvoiceTerms,
    Settle,
)
from lnpmsg.payments.onion import BlindingError, OnionError, ReceivedOnion, create_failure_onion, decode_hop_payload, peel_onion, process_onion
from lnpmsg.payments.onion.blinding import MAX_DUMMY_HOPS
from lnpmsg.payments.onion.failures import InvalidOnionBlinding

__all__ = ["BLINDED_FAILURE_DELAY", "BlindedRole", "blinded_failure", "blinded_role", "decide_blinded", "introduces_path", "introduction_secret"]

#: seconds at most an introduction node waits, at random, before failing an HTLC: how soon a failure comes
#: back would tell a prober how far into the path it was refused (BOLT 4 asks for a random delay)
BLINDED_FAILURE_DELAY = 0.25
#: "introduction": the path key came in the onion (fail with update_fail_htlc); "inner": in update_add_htlc (update_fail_malformed_htlc)
BlindedRole = Literal["introduction", "inner"]


def blinded_failure(role: BlindedRole, shared_secret: bytes, onion: bytes, why: str) -> FailOnion | FailMalformed:
    """``invalid_onion_blinding`` for the incoming HTLC of ``onion``, as the hop's ``role`` sends it."""
    onion_hash = hashlib.sha256(onion).digest()
    if role == "introduction":
        failure = InvalidOnionBlinding(sha256_of_onion=onion_hash)
        return FailOnion(create_failure_onion(shared_secret, failure), failure, why)
    return FailMalformed(onion_hash, InvalidOnionBlinding.TYPE, why)


def blinded_role(node_secret: bytes, onion: bytes, payment_hash: bytes, path_key: bytes | None) -> BlindedRole | None:
    """Whether an incoming HTLC is inside a blinded path, and how its failures go back (None: it is not).

    With ``path_key`` (``update_add_htlc``'s) it is "inner"; else the onion is peeled again to see
    whether its payload names a ``current_path_key`` (cheap, and needs no storage across a restart).
    """
    if path_key is not None:
        return "inner"
    return "introduction" if introduces_path(node_secret, onion, payment_hash) else None


def introduces_path(node_secret: bytes, onion: bytes, payment_hash: bytes) -> bool:
    """Whether ``onion`` makes this node a blinded path's introduction node (a forwarding payload with
    ``current_path_key``), whatever else is wrong with the payload: BOLT 4 has such a node answer any
    failure with ``invalid_onion_blinding``, also one about its payload's records."""
    return introduction_secret(node_secret, onion, payment_hash) is not None


def introduction_secret(node_secret: bytes, onion: bytes, payment_hash: bytes) -> bytes | None:
    """The onion's shared secret when it makes this node a blinded path's introduction node (as
    :func:`introduces_path`; also when the hops after it are our own dummy hops), else None."""
    try:
        peeled = peel_onion(node_secret, onion, payment_hash)
        introduces = not peeled.is_final and decode_hop_payload(peeled.payload, peeled.shared_secret).current_path_key is not None
    except OnionError:
        return None
    return peeled.shared_secret if introduces else None


def decide_blinded(
    received: ReceivedOnion,
    *,
    path_key: bytes | None,
    node_secret: bytes,
    amount_msat: int,
    payment_hash: bytes,
    cltv_expiry: int,
    onion: bytes,
    height: int,
    now: float,
    invoice: Callable[[bytes], InvoiceTerms | None],
    next_channel: Callable[[int], tuple[bool, int] | None],
    policy: FeePolicy,
    policies: Callable[[int], Sequence[FeePolicy]] | None = None,
    peer_channel: Callable[[bytes], int | None] | None = None,
) -> Action:
    """The action for an HTLC whose payload is a blinded hop's (``received``: its onion, peeled and
    checked). ``path_key``: ``update_add_htlc``'s, None at the introduction node. ``policy`` and
    ``policies`` as :func:`~lnpmsg.payments.htlcs.decide` takes them: what we charge on the next channel.
    ``peer_channel(node_id)``: our channel to that peer (its short channel id, None: none usable), for a
    hop that names the next node by ``next_node_id``. A hop naming us as the next node is one of our
    dummy hops: its layer is peeled here (at most :data:`~lnpmsg.payments.onion.blinding.MAX_DUMMY_HOPS`)."""
    p = received.payload
    secret = received.shared_secret
    role: BlindedRole = "inner" if path_key is not None else "introduction"

    def fail(why: str) -> FailOnion | FailMalformed:
        return blinded_failure(role, secret, onion, why)

    key = path_key if path_key is not None else p.current_path_key
    assert key is not None and p.encrypted_recipient_data is not None  # process_onion checked the payload
    try:
        data = read_blinded_hop(node_secret, key, p.encrypted_recipient_data)
    except BlindingError as exc:
        return fail(str(exc))
    broken = data.check_constraints(amount_msat, cltv_expiry)
    if broken is not None:
        return fail(broken)
    # a hop that names us as the next node: a dummy hop at the end of a path of ours (BOLT 4), peeled here
    # (a failure still goes back as the incoming HTLC's, with its secret and role)
    us = coincurve.PrivateKey(node_secret).public_key.format() if not received.is_final and data.next_node_id is not None else None
    peeled = 0
    while us is not None and not received.is_final and data.next_node_id == us:
        if peeled == MAX_DUMMY_HOPS:
            return fail(f"more than {MAX_DUMMY_HOPS} hops of the path through us")
        peeled += 1
        if data.relay is not None:
            amount_msat, cltv_expiry = forward_amount(amount_msat, data.relay), forward_expiry(cltv_expiry, data.relay)
        assert received.next_packet is not None
        try:
            received = process_onion(node_secret, received.next_packet, payment_hash, path_key=data.next_path_key)
            if received.payload.encrypted_recipient_data is None:
                return fail("a hop of a path through us again has no encrypted_recipient_data")
            data = read_blinded_hop(node_secret, data.next_path_key, received.payload.encrypted_recipient_data)
        except OnionError as exc:  # (BlindingError is one)
            return fail(f"our own hop of the path: {exc}")
        broken = data.check_constraints(amount_msat, cltv_expiry)
        if broken is not None:
            return fail(broken)
    p = received.payload
    if received.is_final:
        return _final(data, fail, p.amt_to_forward or 0, p.outgoing_cltv_value or 0, p.total_amount_msat or 0, secret,
                      node_secret, amount_msat, payment_hash, cltv_expiry, height, now, invoice)  # fmt: skip
    scid = data.short_channel_id
    if scid is None and data.next_node_id is not None and peer_channel is not None:
        scid = peer_channel(data.next_node_id)  # (a hop naming the next node: our channel to it)
    accepted = (policy,) if policies is None or scid is None else tuple(policies(scid)) or (policy,)
    return _forward(data, scid, fail, received, amount_msat, cltv_expiry, height, next_channel, accepted)


def _forward(data: BlindedHopData, scid: int | None, fail: Callable[[str], FailOnion | FailMalformed], received: ReceivedOnion,
             amount_msat: int, cltv_expiry: int, height: int, next_channel: Callable[[int], tuple[bool, int] | None],
             accepted: Sequence[FeePolicy]) -> Action:  # fmt: skip
    """Forward over our channel ``scid``: the one the hop names, or our channel to the node it names."""
    if scid is None:
        return fail("the blinded hop names no channel of ours" if data.next_node_id is None else
                    f"no channel of ours to the blinded hop's next_node_id {data.next_node_id.hex()}")  # fmt: skip
    if data.relay is None:
        return fail("the blinded hop has no payment_relay")
    amt, out_cltv = forward_amount(amount_msat, data.relay), forward_expiry(cltv_expiry, data.relay)
    if amt <= 0:
        return fail(f"{amount_msat} msat does not cover the blinded hop's fee")
    channel = next_channel(scid)
    if channel is None:
        return fail(f"no channel {scid}")
    usable, htlc_minimum = channel
    if not usable:
        return fail(NEXT_CHANNEL_DOWN)
    fee, delta = amount_msat - amt, cltv_expiry - out_cltv
    # the recipient wrote our fee and delta into the path: a path with less than we charge is refused
    # as a payer's short fee would be (here with invalid_onion_blinding). A payment_relay with our fees
    # (or more) is taken whatever the amount: BOLT 4's forwarded amount rounds up (we keep at most the
    # fee), so what it leaves us may be 1 msat under our fee of the forwarded amount, rounded down
    r = data.relay
    if not any((r.fee_base_msat >= a.fee_base_msat and r.fee_proportional_millionths >= a.fee_proportional_millionths or fee >= a.fee(amt))
               and delta >= a.cltv_expiry_delta for a in accepted):  # fmt: skip
        return fail(f"payment_relay gives fee {fee} msat and cltv delta {delta}; we ask {accepted[0].fee(amt)} and {accepted[0].cltv_expiry_delta}")
    if out_cltv < height + MIN_OUTGOING_CLTV_MARGIN:
        return fail(f"outgoing expiry {out_cltv} at height {height}")
    if out_cltv > height + MAX_CLTV_AHEAD:
        return fail(f"outgoing expiry {out_cltv} too far ahead of height {height}")
    if amt < htlc_minimum:
        return fail(f"below the next channel's htlc_minimum_msat {htlc_minimum}")
    assert received.next_packet is not None
    return Forward(scid, amt, out_cltv, received.next_packet, received.shared_secret, fee, path_key=data.next_path_key)


def _final(data: BlindedHopData, fail: Callable[[str], FailOnion | FailMalformed], amt: int, outgoing_cltv: int, total: int,
           secret: bytes, node_secret: bytes, amount_msat: int, payment_hash: bytes, cltv_expiry: int, height: int, now: float,
           invoice: Callable[[bytes], InvoiceTerms | None]) -> Action:  # fmt: skip
    terms = invoice(payment_hash)
    # path_id first: a path that is not ours for this hash learns nothing else (not even whether the hash is known)
    if data.path_id is None or terms is None or data.path_id != path_id_for(node_secret, payment_hash):
        return fail("path_id is not ours for this payment hash")
    if terms.keysend:
        return fail("a keysend's hash paid through a blinded path")
    if amount_msat < amt:
        return fail(f"HTLC {amount_msat} msat < onion's {amt}")
    if cltv_expiry < outgoing_cltv:
        return fail(f"HTLC expiry {cltv_expiry} < onion's {outgoing_cltv}")
    if cltv_expiry < height + terms.min_final_cltv:
        return fail(f"expiry {cltv_expiry} is closer than {terms.min_final_cltv} blocks to height {height}")
    if now > terms.expires_at and not terms.paid:
        return fail("the invoice expired")
    if terms.amount_msat is not None and not terms.amount_msat <= total <= 2 * terms.amount_msat:
        return fail(f"total {total} msat for an invoice of {terms.amount_msat}")
    if total > amount_msat or terms.hold:
        return HoldPart(payment_hash, total, amount_msat, secret, cltv_expiry)
    return Settle(terms.preimage, amount_msat, secret)
