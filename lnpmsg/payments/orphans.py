"""Payments a restart left pending (sans-IO): their parts still in flight, and how each ends.

A payment's parts are stored before their HTLCs are offered (route, the
onion's shared secrets, the onion's first ephemeral key). After a restart
:class:`Orphans` adopts every pending payment with the HTLCs of its parts
that the channels still hold (found by their onions); what comes back for
them is read as the payment would have: a preimage completes the payment
(the proof of payment, whichever part brought it), a failure onion is
decrypted with the part's stored secrets and attributed to its hop; when
the last part in flight failed, the payment failed with that reason. A
payment with no part in flight and no preimage was cut short before any
HTLC of it was committed: its outcome is ``interrupted``.

The shell stores each :class:`PartEnded` and :class:`PaymentEnded`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lnpmsg.payments.route import Route
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.payments.sender import Attempt, OutgoingResult, Part, read_failure

__all__ = ["Orphans", "PartEnded", "PaymentEnded"]

#: the error of a pending payment none of whose HTLCs is left after a restart
INTERRUPTED = "the node restarted during the payment before any HTLC of it was committed"


@dataclass(frozen=True, slots=True)
class PartEnded:
    """A stored part's outcome (``failure`` says which hop and why)."""

    onion_key: bytes
    status: str
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentEnded:
    """A pending payment's outcome: ``complete`` (``preimage``), ``failed`` or ``interrupted`` (``error``)."""

    payment_id: int
    payment_hash: bytes
    status: str
    preimage: bytes | None = None
    error: str | None = None
    routes: tuple[Route, ...] = ()
    attempts: tuple[dict[str, object], ...] = ()

    @property
    def fee_msat(self) -> int:
        return sum(r.fee_msat for r in self.routes)


@dataclass
class _Pending:
    payment_hash: bytes
    in_flight: set[tuple[str, int]] = field(default_factory=set)
    attempts: list[Attempt] = field(default_factory=list)


class Orphans:
    """The pending payments a restart found, and their parts' HTLCs in flight."""

    def __init__(self, scorer: MissionControl) -> None:
        self.scorer = scorer
        self._payments: dict[int, _Pending] = {}
        #: HTLC (channel key, id) -> (payment id, part, onion key)
        self._parts: dict[tuple[str, int], tuple[int, Part, bytes]] = {}

    def __len__(self) -> int:
        return len(self._payments)

    def owns(self, ref: tuple[str, int]) -> bool:
        """Whether the HTLC is a part of an adopted payment."""
        return ref in self._parts

    def adopt(self, payment: dict[str, Any], parts: Iterable[dict[str, Any]],
              offered: dict[bytes, tuple[str, int]]) -> PaymentEnded | None:  # fmt: skip
        """Take a pending payment (its store row and parts) with ``offered``: the onion key of every
        HTLC we offered that the channels still hold -> that HTLC. Its outcome when it is known now."""
        payment_id, payment_hash = payment["id"], payment["payment_hash"]
        if payment.get("preimage"):  # a part brought the preimage before the restart
            return PaymentEnded(payment_id, payment_hash, "complete", preimage=payment["preimage"])
        entry = _Pending(payment_hash)
        for row in parts:
            ref = offered.get(row["onion_key"])
            if ref is None or row["status"] != "pending":
                continue
            part = Part(Route.from_dict(row["route"]), b"", tuple(row["shared_secrets"]))
            self._parts[ref] = (payment_id, part, row["onion_key"])
            entry.in_flight.add(ref)
        if not entry.in_flight:
            return PaymentEnded(payment_id, payment_hash, "interrupted", error=INTERRUPTED)
        self._payments[payment_id] = entry
        return None

    def result(self, ref: tuple[str, int], result: OutgoingResult, now: float) -> tuple[PartEnded, PaymentEnded | None]:
        """An adopted part's HTLC ended (``ref`` must be :meth:`owns`): the part's outcome, and the
        payment's when this decides it."""
        payment_id, part, key = self._parts.pop(ref)
        entry = self._payments.get(payment_id)
        if result.preimage is not None:
            if entry is not None:
                del self._payments[payment_id]
                for other in entry.in_flight - {ref}:
                    self._parts.pop(other, None)
                return PartEnded(key, "complete"), PaymentEnded(payment_id, entry.payment_hash, "complete", preimage=result.preimage,
                                                                routes=(part.route,), attempts=tuple(a.to_dict() for a in entry.attempts))  # fmt: skip
            return PartEnded(key, "complete"), None
        attempt = Attempt(part.route.to_dict(), part.route.final_amount_msat, "failed")
        read_failure(part, result, attempt, self.scorer, now)
        ended = PartEnded(key, "failed", attempt.failure)
        if entry is None:
            return ended, None
        entry.in_flight.discard(ref)
        entry.attempts.append(attempt)
        if entry.in_flight:
            return ended, None
        del self._payments[payment_id]
        error = f"failed after a restart of this node: {attempt.failure}"
        return ended, PaymentEnded(payment_id, entry.payment_hash, "failed", error=error, attempts=tuple(a.to_dict() for a in entry.attempts))
