"""What to do with an incoming HTLC (sans-IO): settle, fail, hold for MPP, or forward.

:func:`decide` peels the onion and applies BOLT 4's checks, for the final
node (payment secret, amount, CLTV against the invoice) and for a
forwarding hop (the next channel by ``short_channel_id``, our fee and
``cltv_expiry_delta``, the expiry against the chain height). It returns one
action; the shell carries it out. :class:`MppSets` gathers the parts of a
multi-part payment until they reach ``total_msat`` (or time out). A hold
invoice (:attr:`InvoiceTerms.hold`: we do not know its preimage) has every
HTLC paying it gathered so, also a single-part payment: the complete set is
held, not settled (:mod:`.holding`). A keysend (bLIP 3: the payer's preimage
in the final payload, no invoice) is :class:`Spontaneous` when we accept them
and its preimage is the payment hash's (:mod:`.keysend` records it, then
settles); an HTLC for the hash of one of our invoices is the invoice's,
keysend record or not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lnpmsg.payments.onion import (
    Failure,
    MalformedOnionError,
    OnionPayloadError,
    create_failure_onion,
    process_onion,
)
from lnpmsg.payments.onion.failures import (
    ExpiryTooFar,
    ExpiryTooSoon,
    FeeInsufficient,
    FinalIncorrectCltvExpiry,
    FinalIncorrectHtlcAmount,
    IncorrectCltvExpiry,
    IncorrectOrUnknownPaymentDetails,
    MppTimeout,
    TemporaryChannelFailure,
    UnknownNextPeer,
)

__all__ = [
    "CompleteSet",
    "FailMalformed",
    "FailOnion",
    "FeePolicy",
    "Forward",
    "HoldPart",
    "InvoiceTerms",
    "MppSets",
    "Settle",
    "Spontaneous",
    "decide",
]

#: why a forward failed when its next channel is down (the shell may wait for it and decide again)
NEXT_CHANNEL_DOWN = "the next channel is not usable now"
#: an outgoing HTLC must expire at least this many blocks ahead (room to go on chain)
MIN_OUTGOING_CLTV_MARGIN = 6
#: BOLT 4 / lnd: refuse expiries further than two weeks out
MAX_CLTV_AHEAD = 2016


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """What we charge to forward, and the CLTV room we ask for (BOLT 7 ``channel_update``'s values).

    The defaults are the announce app's (:class:`lnpmsg.gossip.announce.FeePolicy`): a node that
    runs without gossip assumes in its route hints what an lnpmsg peer announces and charges.
    """

    fee_base_msat: int = 1000
    fee_proportional_millionths: int = 10
    cltv_expiry_delta: int = 40

    def fee(self, amount_msat: int) -> int:
        return self.fee_base_msat + amount_msat * self.fee_proportional_millionths // 1_000_000


@dataclass(frozen=True, slots=True)
class InvoiceTerms:
    """What the final node checks an HTLC against (from our invoice)."""

    payment_hash: bytes
    preimage: bytes
    payment_secret: bytes
    amount_msat: int | None
    min_final_cltv: int
    expires_at: int
    paid: bool = False
    #: a hold invoice whose preimage we do not know (yet): its payment is gathered and held, never settled here
    hold: bool = False
    #: a keysend we received (no invoice, no payment secret): its HTLCs are the ones whose onion carries its preimage
    keysend: bool = False


@dataclass(frozen=True, slots=True)
class Settle:
    """Fulfil with ``preimage`` (a single-part payment to us, complete); ``shared_secret`` fails it instead
    should that be needed (its invoice could not be marked paid in time)."""

    preimage: bytes
    amount_msat: int
    shared_secret: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True)
class HoldPart:
    """One part of a multi-part payment to us (or any HTLC paying a hold invoice): hold it until the set is complete."""

    payment_hash: bytes
    total_msat: int
    amount_msat: int
    shared_secret: bytes
    cltv_expiry: int = 0


@dataclass(frozen=True, slots=True)
class Spontaneous:
    """A keysend to us (bLIP 3): record it (a paid invoice-like row), then fulfil with ``preimage``;
    ``amt_to_forward`` is what the payer's onion says we get, ``amount_msat`` the HTLC's."""

    preimage: bytes
    amount_msat: int
    amt_to_forward: int
    shared_secret: bytes = field(default=b"", compare=False)


@dataclass(frozen=True, slots=True)
class FailOnion:
    """``update_fail_htlc`` with this failure onion (``failure`` is what it says, for logs)."""

    reason: bytes
    failure: Failure
    why: str


@dataclass(frozen=True, slots=True)
class FailMalformed:
    """``update_fail_malformed_htlc``: the onion could not be authenticated."""

    sha256_of_onion: bytes
    failure_code: int
    why: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Offer ``amount_msat`` on our channel ``short_channel_id`` with ``onion``; keep ``shared_secret``.
    ``path_key``: a forward inside a blinded path, its next path key (``update_add_htlc``'s ``blinded_path`` TLV)."""

    short_channel_id: int
    amount_msat: int
    cltv_expiry: int
    onion: bytes
    shared_secret: bytes
    fee_msat: int
    path_key: bytes | None = None


Action = Settle | Spontaneous | HoldPart | FailOnion | FailMalformed | Forward


def _fail(secret: bytes, failure: Failure, why: str) -> FailOnion:
    return FailOnion(create_failure_onion(secret, failure), failure, why)


def decide(
    *,
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
    keysend_min_final_cltv: int | None = None,
    path_key: bytes | None = None,
    peer_channel: Callable[[bytes], int | None] | None = None,
) -> Action:
    """The action for one irrevocably committed incoming HTLC.

    ``invoice(payment_hash)`` finds our invoice; ``next_channel(scid)`` gives
    (usable, htlc_minimum_msat) for our channel with that id, or None.
    ``policies(scid)``, when given, is what we accept on that outgoing channel:
    its current policy first, then any earlier one still honoured (BOLT 7: the
    previous parameters are accepted for a while after a change, as payers
    learn of it); a forward meeting any of them passes, a failure names the
    current one. Without it, ``policy`` holds for every channel.
    ``keysend_min_final_cltv``: we accept keysends (bLIP 3) expiring at least that many
    blocks ahead (None: we refuse them, as a node that does not know the hash).
    ``path_key``: ``update_add_htlc``'s ``blinded_path`` TLV (the HTLC is inside a blinded path):
    see :mod:`.blinded_htlcs`, which also decides a payload that is a blinded hop's (``peer_channel(node_id)``:
    our channel to that peer, for a blinded hop naming its next node by id).
    """
    from lnpmsg.payments.blinded_htlcs import blinded_failure, decide_blinded, introduces_path  # (it builds on this module's actions)

    try:
        received = process_onion(node_secret, onion, payment_hash, path_key=path_key)
    except MalformedOnionError as exc:
        if path_key is not None:  # inside a blinded path every failure is invalid_onion_blinding (BOLT 4)
            return blinded_failure("inner", b"", onion, str(exc))
        return FailMalformed(exc.sha256_of_onion, exc.failure_code, str(exc))
    except OnionPayloadError as exc:
        if path_key is not None:
            return blinded_failure("inner", exc.shared_secret, onion, str(exc))
        if introduces_path(node_secret, onion, payment_hash):
            return blinded_failure("introduction", exc.shared_secret, onion, str(exc))
        return _fail(exc.shared_secret, exc.failure, str(exc))
    p = received.payload
    secret = received.shared_secret
    if p.is_blinded:
        return decide_blinded(received, path_key=path_key, node_secret=node_secret, amount_msat=amount_msat, payment_hash=payment_hash,
                              cltv_expiry=cltv_expiry, onion=onion, height=height, now=now, invoice=invoice, next_channel=next_channel,
                              policy=policy, policies=policies, peer_channel=peer_channel)  # fmt: skip
    assert p.amt_to_forward is not None and p.outgoing_cltv_value is not None  # checked by process_onion
    if received.is_final:
        return _final(secret, p.amt_to_forward, p.outgoing_cltv_value, p.payment_secret, p.total, amount_msat,
                      payment_hash, cltv_expiry, height, now, invoice, p.keysend_preimage, keysend_min_final_cltv)  # fmt: skip
    scid = p.short_channel_id.to_int() if p.short_channel_id is not None else 0
    channel = next_channel(scid)
    if channel is None:
        return _fail(secret, UnknownNextPeer(), f"no channel {scid}")
    usable, htlc_minimum = channel
    if not usable:
        return _fail(secret, TemporaryChannelFailure(), NEXT_CHANNEL_DOWN)
    fee, delta = amount_msat - p.amt_to_forward, cltv_expiry - p.outgoing_cltv_value
    accepted = (policy,) if policies is None else tuple(policies(scid)) or (policy,)
    if not any(fee >= a.fee(p.amt_to_forward) and delta >= a.cltv_expiry_delta for a in accepted):
        current = accepted[0]
        if fee < current.fee(p.amt_to_forward):
            return _fail(secret, FeeInsufficient(htlc_msat=amount_msat), f"fee {fee} msat, we ask {current.fee(p.amt_to_forward)}")
        return _fail(secret, IncorrectCltvExpiry(cltv_expiry=cltv_expiry), f"cltv delta {delta}, we ask {current.cltv_expiry_delta}")
    if p.outgoing_cltv_value < height + MIN_OUTGOING_CLTV_MARGIN:
        return _fail(secret, ExpiryTooSoon(), f"outgoing expiry {p.outgoing_cltv_value} at height {height}")
    if p.outgoing_cltv_value > height + MAX_CLTV_AHEAD:
        return _fail(secret, ExpiryTooFar(), f"outgoing expiry {p.outgoing_cltv_value} at height {height}")
    if p.amt_to_forward < htlc_minimum:
        return _fail(secret, TemporaryChannelFailure(), f"below the next channel's htlc_minimum_msat {htlc_minimum}")
    assert received.next_packet is not None
    return Forward(scid, p.amt_to_forward, p.outgoing_cltv_value, received.next_packet, secret, fee)


def _final(secret: bytes, amt: int, outgoing_cltv: int, payment_secret: bytes | None, total: int | None,
           amount_msat: int, payment_hash: bytes, cltv_expiry: int, height: int, now: float,
           invoice: Callable[[bytes], InvoiceTerms | None], keysend_preimage: bytes | None = None,
           keysend_min_final_cltv: int | None = None) -> Action:  # fmt: skip
    unknown = IncorrectOrUnknownPaymentDetails(htlc_msat=amount_msat, height=height)
    if amount_msat < amt:
        return _fail(secret, FinalIncorrectHtlcAmount(incoming_htlc_amt=amount_msat), f"HTLC {amount_msat} msat < onion's {amt}")
    if cltv_expiry < outgoing_cltv:
        return _fail(secret, FinalIncorrectCltvExpiry(cltv_expiry=cltv_expiry), f"HTLC expiry {cltv_expiry} < onion's {outgoing_cltv}")
    terms = invoice(payment_hash)
    if terms is None and keysend_preimage is not None:
        return _keysend(secret, unknown, keysend_preimage, amt, total, amount_msat, payment_hash, cltv_expiry, height,
                        keysend_min_final_cltv)  # fmt: skip
    if terms is None:
        return _fail(secret, unknown, "unknown payment hash")
    if terms.keysend:  # a keysend we recorded: this HTLC again (a restart before its fulfil), or its payer's twin
        if keysend_preimage != terms.preimage:
            return _fail(secret, unknown, "the hash of a keysend we received, without its preimage")
        return Settle(terms.preimage, amount_msat, secret)
    if payment_secret is None or payment_secret != terms.payment_secret:
        return _fail(secret, unknown, "wrong or missing payment_secret")
    if now > terms.expires_at and not terms.paid:
        return _fail(secret, unknown, "the invoice expired")
    total_msat = total if total is not None else amt
    if terms.amount_msat is not None and not terms.amount_msat <= total_msat <= 2 * terms.amount_msat:
        return _fail(secret, unknown, f"total {total_msat} msat for an invoice of {terms.amount_msat}")
    if cltv_expiry < height + terms.min_final_cltv:
        return _fail(secret, unknown, f"expiry {cltv_expiry} is closer than {terms.min_final_cltv} blocks to height {height}")
    if total_msat > amount_msat or terms.hold:
        return HoldPart(payment_hash, total_msat, amount_msat, secret, cltv_expiry)
    return Settle(terms.preimage, amount_msat, secret)


def _keysend(secret: bytes, unknown: Failure, preimage: bytes, amt: int, total: int | None, amount_msat: int, payment_hash: bytes,
             cltv_expiry: int, height: int, min_final_cltv: int | None) -> Action:  # fmt: skip
    """A keysend (bLIP 3) for a hash no invoice of ours has: refused as an unknown payment unless we
    accept keysends, its preimage is the hash's, it is whole (no multi-part keysend) and leaves us room to settle."""
    if min_final_cltv is None:
        return _fail(secret, unknown, "a keysend, and we accept none (--accept-keysend)")
    if hashlib.sha256(preimage).digest() != payment_hash:
        return _fail(secret, unknown, "a keysend whose preimage is not the payment hash's")
    if total is not None and total != amt:
        return _fail(secret, unknown, f"a keysend of {amt} msat in a payment of {total}: multi-part keysends are not accepted")
    if cltv_expiry < height + min_final_cltv:
        return _fail(secret, unknown, f"a keysend expiring at {cltv_expiry}, closer than {min_final_cltv} blocks to height {height}")
    return Spontaneous(preimage, amount_msat, amt, secret)


@dataclass(frozen=True, slots=True)
class CompleteSet:
    """Every part of a multi-part payment to us, and when the first arrived: settle them all (or fail them all)."""

    parts: dict[tuple[str, int], HoldPart]
    started: float

    @property
    def htlcs(self) -> list[tuple[str, int]]:
        return list(self.parts)


@dataclass
class _Set:
    total_msat: int
    started: float
    parts: dict[tuple[str, int], HoldPart] = field(default_factory=dict)

    @property
    def received_msat(self) -> int:
        return sum(p.amount_msat for p in self.parts.values())


class MppSets:
    """The parts of multi-part payments to us, by payment hash (sans-IO: ``now`` is passed in).

    :meth:`add` returns the set (:class:`CompleteSet`) once its parts reach ``total_msat``
    (settle them all); :meth:`expire` returns the parts of sets older than
    ``timeout`` (fail them with ``mpp_timeout``).
    """

    def __init__(self, timeout: float = 60.0, max_parts: int = 64) -> None:
        self.timeout = timeout
        self.max_parts = max_parts
        self._sets: dict[bytes, _Set] = {}

    def add(self, htlc: tuple[str, int], part: HoldPart, now: float) -> CompleteSet | FailOnion | None:
        """Hold ``part``; the whole set when complete, a failure for a bad part, else None."""
        entry = self._sets.setdefault(part.payment_hash, _Set(part.total_msat, now))
        if part.total_msat != entry.total_msat or len(entry.parts) >= self.max_parts:
            return _fail(part.shared_secret, IncorrectOrUnknownPaymentDetails(htlc_msat=part.amount_msat, height=0),
                         "a part that does not match its set")  # fmt: skip
        entry.parts[htlc] = part
        if entry.received_msat >= entry.total_msat:
            del self._sets[part.payment_hash]
            return CompleteSet(entry.parts, entry.started)
        return None

    def holds(self, payment_hash: bytes) -> bool:
        """Parts of a payment of ``payment_hash`` are held."""
        return payment_hash in self._sets

    def take(self, payment_hash: bytes) -> dict[tuple[str, int], HoldPart]:
        """Give up the set of ``payment_hash`` (its invoice is gone): its parts, to fail back (none if no set)."""
        entry = self._sets.pop(payment_hash, None)
        return entry.parts if entry is not None else {}

    def expire(self, now: float) -> list[tuple[tuple[str, int], FailOnion]]:
        """Parts of sets that waited past the timeout, with their ``mpp_timeout`` failures."""
        out = []
        for payment_hash, entry in list(self._sets.items()):
            if now - entry.started >= self.timeout:
                del self._sets[payment_hash]
                out.extend((h, _fail(p.shared_secret, MppTimeout(), "mpp timeout")) for h, p in entry.parts.items())
        return out

    def next_deadline(self) -> float | None:
        """When the oldest set times out (None without sets)."""
        return min((s.started + self.timeout for s in self._sets.values()), default=None)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
