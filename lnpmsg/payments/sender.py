"""Sending a payment (sans-IO): onions per route, parts in flight, retries that learn from failures.

:func:`build_part` makes the onion of one route. :class:`Payment` is one
``pay``'s state: it asks for routes for what is still missing, offers each
part on its first channel, reads each failure onion (which hop failed and
why), tells :class:`~lnpmsg.payments.scorer.MissionControl` and tries again
over other routes, until a preimage comes back, a final failure arrives
(from the payee), no route is left, or the attempts run out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from lnpmsg.payments.blinded import blinded_payloads, onion_hop_keys
from lnpmsg.payments.blinded_routes import path_scid
from lnpmsg.payments.onion import BlindedPath, FailureOnionError, HopPayload, construct_onion, decrypt_failure_onion
from lnpmsg.payments.onion.failures import BADONION, NODE, PERM
from lnpmsg.payments.route import NoRouteError, Route
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.wire.primitives import ShortChannelId

__all__ = ["MAX_SET_PART_FAILURES_PER_PATH", "Attempt", "OutgoingResult", "Part", "Payment", "PaymentFailed", "build_part", "format_scid",
           "onion_key", "read_failure"]

#: how many routes one payment tries at most
MAX_ATTEMPTS = 12
#: how many parts of a multi-part payment a blinded path may fail (``invalid_onion_blinding``, which
#: hides whether the path refused it or the recipient timed its set out) before the payment stops using it
MAX_SET_PART_FAILURES_PER_PATH = 2
#: permanent_node_failure: what an unreadable or empty failure counts as
_PERMANENT_NODE_FAILURE = PERM | NODE | 2
_MPP_TIMEOUT = 23
_INVALID_ONION_BLINDING = BADONION | PERM | 24


def format_scid(scid: int) -> str:
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


def onion_key(onion: bytes) -> bytes:
    """An onion packet's first ephemeral public key (after the version byte): fresh for every part,
    so it names the part its HTLC carries, also after a restart."""
    return onion[1:34]


@dataclass(frozen=True, slots=True)
class Part:
    """One HTLC of a payment: its route, onion and the secrets to read a failure with."""

    route: Route
    onion: bytes
    shared_secrets: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class OutgoingResult:
    """How an HTLC we offered ended: ``preimage``, or ``reason`` (a failure onion), or ``failure_code`` (malformed)."""

    preimage: bytes | None = None
    reason: bytes | None = None
    failure_code: int | None = None
    local_error: str | None = None
    #: the HTLC ended on chain (our channel was closed with it): a timeout there, or the preimage revealed
    on_chain: bool = False


class PaymentFailed(Exception):
    """The payment failed; ``details`` say where and why (for ``pay``'s error data)."""

    def __init__(self, message: str, details: dict[str, object]) -> None:
        super().__init__(message)
        self.details = details


def build_part(route: Route, payment_hash: bytes, payment_secret: bytes | None, total_msat: int,
               payment_metadata: bytes | None = None, keysend_preimage: bytes | None = None,
               blinded: BlindedPath | None = None, session_key: bytes | None = None) -> Part:  # fmt: skip
    """The onion of one route: forwarding payloads for the hops, the final one with ``payment_data``
    (none without a ``payment_secret``: a keysend, whose final payload carries ``keysend_preimage``).

    With ``blinded`` (default: the route's own, :attr:`Route.blinded`), the route ends with that blinded
    path's hops (the introduction node's real id first, see :func:`~lnpmsg.payments.blinded.extend_route`):
    their payloads are the path's
    (:func:`~lnpmsg.payments.blinded.blinded_payloads`), the final one with ``total_msat``.
    ``session_key``: the onion's (default: fresh random bytes; tests pass a vector's)."""
    session_key = session_key if session_key is not None else os.urandom(32)
    blinded = blinded if blinded is not None else route.blinded
    if blinded is not None:
        plain = len(route.hops) - len(blinded.hops)
        final = route.hops[-1]
        tail = blinded_payloads(blinded, final.amt_to_forward, final.outgoing_cltv_value, total_msat)
        head = [HopPayload.forward(hop.amt_to_forward, hop.outgoing_cltv_value, ShortChannelId.from_int(route.hops[i + 1].short_channel_id)).encode()
                for i, hop in enumerate(route.hops[:plain])]  # fmt: skip
        keys = [h.node_id for h in route.hops[:plain]] + onion_hop_keys(blinded)
        built = construct_onion(session_key, keys, head + tail, payment_hash)
        return Part(route, built.packet, tuple(built.shared_secrets))
    payloads = []
    for i, hop in enumerate(route.hops):
        if i + 1 < len(route.hops):
            nxt = ShortChannelId.from_int(route.hops[i + 1].short_channel_id)
            payloads.append(HopPayload.forward(hop.amt_to_forward, hop.outgoing_cltv_value, nxt).encode())
        else:
            payloads.append(HopPayload.final(hop.amt_to_forward, hop.outgoing_cltv_value, payment_secret=payment_secret,
                                             total_msat=total_msat if payment_secret is not None else None,
                                             payment_metadata=payment_metadata, keysend_preimage=keysend_preimage).encode())  # fmt: skip
    built = construct_onion(session_key, [h.node_id for h in route.hops], payloads, payment_hash)
    return Part(route, built.packet, tuple(built.shared_secrets))


@dataclass
class Attempt:
    """What one part's failure taught (for ``listpayments`` and ``pay``'s error)."""

    route: list[dict[str, object]]
    amount_msat: int
    status: str
    failure: str = ""
    erring_index: int | None = None
    erring_node: str = ""
    erring_channel: str = ""
    code: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


class Payment:
    """One payment's state (sans-IO): what to send next, what each result teaches.

    ``find_routes(amount_msat, excluded)`` gives routes for what is missing, avoiding our channels
    with those short channel ids (NoRouteError if none).
    The shell loops: :meth:`next_parts` -> offer each part -> :meth:`on_result` for each,
    until :attr:`done`; then :attr:`preimage` or :attr:`final_error` says how it ended.
    A keysend has ``keysend_preimage`` and no ``payment_secret``; a payment into blinded paths
    neither (its routes end in a path: :attr:`Route.blinded`). A part a blinded path refuses
    (``invalid_onion_blinding``) excludes that path (:func:`~lnpmsg.payments.blinded_routes.path_scid`):
    the rest goes into the others, if the invoice has others. BOLT 4 turns every failure inside a
    path into that one error, the recipient's ``mpp_timeout`` too (a set whose other parts did not
    come in time), so for a part of several it cannot tell a refusal from a timeout: such a path is
    excluded only after :data:`MAX_SET_PART_FAILURES_PER_PATH` failed parts. A part that carries the
    whole amount makes its set whole at once (nothing to time out): its failure is the path's refusal.
    """

    def __init__(self, payment_hash: bytes, payment_secret: bytes | None, total_msat: int, find_routes: Callable[[int, frozenset[int]], list[Route]],
                 scorer: MissionControl, payment_metadata: bytes | None = None, max_attempts: int = MAX_ATTEMPTS,
                 keysend_preimage: bytes | None = None) -> None:  # fmt: skip
        self.payment_hash = payment_hash
        self.keysend_preimage = keysend_preimage
        self.payment_secret = payment_secret
        self.total_msat = total_msat
        self.find_routes = find_routes
        self.scorer = scorer
        self.payment_metadata = payment_metadata
        self.max_attempts = max_attempts
        self.attempts: list[Attempt] = []
        self.succeeded: list[Route] = []
        self.preimage: bytes | None = None
        self.final_error: PaymentFailed | None = None
        self.inflight_msat = 0
        self._attempt_of: dict[int, Attempt] = {}
        #: our channels (and blinded paths, by their stand-in ids) that refused a part: routes for the rest avoid them
        self.excluded: set[int] = set()
        #: per blinded path (its stand-in id): the parts of several it failed, unattributed (see the class docs)
        self._set_part_failures: dict[int, int] = {}
        #: why no new part may leave (:meth:`stop`), and the name of the failure it makes
        self.stopped: str | None = None
        self._stop_error = "Timeout"

    @property
    def done(self) -> bool:
        """Nothing in flight and either paid or failed for good."""
        return self.inflight_msat == 0 and (self.preimage is not None or self.final_error is not None)

    def stop(self, why: str, error: str = "Timeout") -> None:
        """Send no new part: once nothing is in flight, the payment has failed with ``why`` (unless
        paid); ``error`` names the failure in its details (the first stop's)."""
        if self.stopped is None:
            self.stopped, self._stop_error = why, error

    def next_parts(self) -> list[Part]:
        """The parts to offer now (none while waiting, or once paid, failed or stopped)."""
        if self.preimage is not None or self.final_error is not None:
            return []
        if self.stopped is not None:
            if self.inflight_msat == 0:
                self.final_error = self._failed(self.stopped)
                self.final_error.details["error"] = self._stop_error
            return []
        missing = self.total_msat - self.inflight_msat - sum(r.final_amount_msat for r in self.succeeded)
        if missing <= 0:
            return []
        if len(self.attempts) >= self.max_attempts:
            if self.inflight_msat == 0:
                self.final_error = self._failed(f"gave up after {len(self.attempts)} attempts")
            return []
        try:
            routes = self.find_routes(missing, frozenset(self.excluded))
        except NoRouteError as exc:
            if self.inflight_msat == 0:
                self.final_error = self._failed(f"no route: {exc}", no_route=True)
            return []
        parts = []
        for route in routes:
            part = build_part(route, self.payment_hash, self.payment_secret, self.total_msat, self.payment_metadata, self.keysend_preimage)
            attempt = Attempt(route.to_dict(), route.final_amount_msat, "pending")
            self.attempts.append(attempt)
            self._attempt_of[id(part)] = attempt
            self.inflight_msat += route.final_amount_msat
            parts.append(part)
        return parts

    def on_result(self, part: Part, result: OutgoingResult, now: float) -> None:
        """A part ended: keep the preimage, or learn from the failure."""
        route = part.route
        attempt = self._attempt_of.pop(id(part))
        self.inflight_msat -= route.final_amount_msat
        if result.preimage is not None:
            attempt.status = "complete"
            self.preimage = result.preimage
            self.succeeded.append(route)
            self.scorer.report_success(route, now)
        else:
            attempt.status = "failed"
            self._learn(part, result, attempt, now)

    def _failed(self, text: str, *, no_route: bool = False) -> PaymentFailed:
        last = next((a for a in reversed(self.attempts) if a.failure), None)
        details: dict[str, object] = {"error": "NoRoute" if no_route else "PaymentFailed",
                                      "attempts": [a.to_dict() for a in self.attempts]}  # fmt: skip
        if last is not None:
            text = f"{text}; last failure: {last.failure}"
            details.update(last.to_dict())
        return PaymentFailed(text, details)

    def _learn(self, part: Part, result: OutgoingResult, attempt: Attempt, now: float) -> None:
        if result.local_error is not None:
            self.excluded.add(part.route.hops[0].short_channel_id)  # not again in this payment
        refusal = read_failure(part, result, attempt, self.scorer, now)
        if part.route.blinded is not None and attempt.code == _INVALID_ONION_BLINDING:
            # the path's terms refused it (its fees, expiry, or the recipient): another route into the same
            # path would meet them too, another path of the invoice may not. Unless the part was one of several:
            # then the recipient may have failed it at its MPP timeout, which comes back as this same error
            # (BOLT 4): a path that carried its part is not lost for the others' delay, but tried a limited
            # number of times (each try an attempt of the payment's)
            scid = path_scid(part.route.blinded)
            if part.route.final_amount_msat < self.total_msat:
                self._set_part_failures[scid] = failures = self._set_part_failures.get(scid, 0) + 1
                if failures < MAX_SET_PART_FAILURES_PER_PATH:
                    attempt.failure += "; one part of several, perhaps failed at the recipient's MPP timeout: the path is tried again"
                    return
            self.excluded.add(scid)
            return
        if refusal is not None:
            self.final_error = self._failed(f"the payee refused the payment: {refusal}")


def read_failure(part: Part, result: OutgoingResult, attempt: Attempt, scorer: MissionControl, now: float) -> str | None:
    """Read a failed part's result into ``attempt`` (which hop, which channel, why) and tell the
    scorer; when the payee itself refused (final, except ``mpp_timeout``): the failure's name."""
    route = part.route
    first = format_scid(route.hops[0].short_channel_id)
    if result.local_error is not None:
        attempt.failure = (f"our channel {first} went on chain and the HTLC {result.local_error}" if result.on_chain
                           else f"our channel {first} did not take the HTLC: {result.local_error}")  # fmt: skip
        attempt.erring_index, attempt.erring_channel = -1, first
        return None
    if result.failure_code is not None:
        # the first hop could not read its onion: it is to blame
        attempt.failure = f"hop 0 ({route.hops[0].node_id.hex()[:16]}...) could not read the onion (code {result.failure_code:#06x})"
        attempt.code, attempt.erring_index, attempt.erring_node = result.failure_code, 0, route.hops[0].node_id.hex()
        scorer.report_failure(route, 0, result.failure_code | BADONION, now)
        return None
    try:
        failed = decrypt_failure_onion(part.shared_secrets, result.reason or b"")
    except FailureOnionError as exc:
        attempt.failure = f"an unreadable failure onion: {exc}"
        scorer.report_failure(route, 0, _PERMANENT_NODE_FAILURE, now)  # blame the first hop (it may have garbled it)
        return None
    index = failed.hop_index
    hop = route.hops[index]
    code = failed.failure.code if failed.failure is not None else _PERMANENT_NODE_FAILURE
    name = getattr(failed.failure, "NAME", None) or f"code {code:#06x}"
    is_payee = index == len(route.hops) - 1
    where = "the payee" if is_payee else f"hop {index}"
    # (a blinded path's hops after its introduction node have no channel we know: short channel id 0)
    channel = format_scid(route.hops[index + 1].short_channel_id) if index + 1 < len(route.hops) and route.hops[index + 1].short_channel_id else ""
    attempt.failure = f"{where} ({hop.node_id.hex()[:16]}...) returned {name}" + (f" for channel {channel}" if channel else "")
    attempt.code, attempt.erring_index, attempt.erring_node, attempt.erring_channel = code, index, hop.node_id.hex(), channel
    scorer.report_failure(route, index, code, now)
    if code == _INVALID_ONION_BLINDING:
        # the blinded path refused it (fees, expiry, its recipient): the path is the payee's terms, so
        # another route to it would be refused the same way
        attempt.failure += " (the blinded path refused the payment)"
        return name
    return name if is_payee and code != _MPP_TIMEOUT else None
