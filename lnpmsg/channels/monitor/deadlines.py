"""When a channel must go on chain so that its HTLCs resolve in time (BOLT 2 "Forwarding HTLCs", BOLT 5).

- An HTLC we offered: the peer should fail it by its expiry; if it is still
  committed :data:`OUTGOING_GRACE_BLOCKS` later, we time it out on chain. If
  it forwards an incoming HTLC (:class:`~.updates.UpstreamDeadline`), we go
  no later than :data:`CLTV_CLAIM_BUFFER` blocks before that one expires
  (but never before our own expiry, when there is nothing to time out yet).
- An HTLC we received and hold the preimage for: if still committed
  :data:`CLTV_CLAIM_BUFFER` blocks before its expiry, we claim it on chain
  before the peer can time it out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..bolt3 import Htlc

__all__ = ["CLTV_CLAIM_BUFFER", "OUTGOING_GRACE_BLOCKS", "force_close_reasons"]

#: Go on chain this many blocks before an incoming HTLC we hold the preimage for expires (LDK's figure).
CLTV_CLAIM_BUFFER = 18
#: Blocks past an offered HTLC's expiry we wait for the peer to fail it before going on chain.
OUTGOING_GRACE_BLOCKS = 3


def force_close_reasons(
    htlcs: Mapping[tuple[bool, int], Htlc],
    preimages: Collection[bytes],
    upstream: Mapping[int, int],
    height: int,
) -> list[str]:
    """Why the channel must go on chain at ``height``.

    ``htlcs``: every committed HTLC by (we offered it, id); ``preimages``: the
    payment hashes we hold preimages for; ``upstream``: incoming expiry by the
    id of the offered HTLC that forwards it.
    """
    reasons = []
    for (we_offered, htlc_id), htlc in sorted(htlcs.items()):
        if we_offered:
            trigger = htlc.cltv_expiry + OUTGOING_GRACE_BLOCKS
            if htlc_id in upstream:
                trigger = max(htlc.cltv_expiry, min(trigger, upstream[htlc_id] - CLTV_CLAIM_BUFFER))
            if height >= trigger:
                reasons.append(f"offered HTLC {htlc_id} (expiry {htlc.cltv_expiry}) must be timed out on chain")
        elif htlc.payment_hash in preimages and height >= htlc.cltv_expiry - CLTV_CLAIM_BUFFER:
            reasons.append(f"received HTLC {htlc_id} (expiry {htlc.cltv_expiry}) must be claimed on chain")
    return reasons
