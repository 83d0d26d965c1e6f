"""A hop's whole handling of an incoming onion: peel, parse, check.

:func:`process_onion` is what a channel's HTLC logic calls for each
``update_add_htlc``: it returns the parsed payload and what to do next, or
raises the error whose reply the spec asks for (``MalformedOnionError`` ->
``update_fail_malformed_htlc``; ``OnionPayloadError`` -> ``update_fail_htlc``
with :func:`~lnpmsg.payments.onion.failure_onion.create_failure_onion`).
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve

from lnpmsg.payments.onion.payloads import HopPayload, decode_hop_payload
from lnpmsg.payments.onion.sphinx import peel_onion

__all__ = ["ReceivedOnion", "process_onion"]


@dataclass(frozen=True, slots=True)
class ReceivedOnion:
    """An incoming onion, authenticated and parsed.

    ``next_packet`` is the onion for the next hop (None at the final node);
    ``shared_secret`` wraps any failure that comes back for this HTLC.
    """

    payload: HopPayload
    shared_secret: bytes
    next_packet: bytes | None

    @property
    def is_final(self) -> bool:
        """True when this node is the payment's final node."""
        return self.next_packet is None


def process_onion(
    node_key: bytes | coincurve.PrivateKey,
    packet: bytes,
    payment_hash: bytes,
    *,
    path_key: bytes | None = None,
) -> ReceivedOnion:
    """Peel ``packet`` (associated data = ``payment_hash``), parse and check this hop's payload.

    ``path_key`` is ``update_add_htlc``'s, for a hop inside a blinded route.
    """
    peeled = peel_onion(node_key, packet, payment_hash, path_key=path_key)
    payload = decode_hop_payload(peeled.payload, peeled.shared_secret)
    payload.check(is_final=peeled.is_final, shared_secret=peeled.shared_secret, path_key_in_htlc=path_key is not None)
    return ReceivedOnion(payload=payload, shared_secret=peeled.shared_secret, next_packet=peeled.next_packet)
