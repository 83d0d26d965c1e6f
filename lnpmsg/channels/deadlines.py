"""HTLC deadlines (BOLT 2 "Forwarding HTLCs", BOLT 5): when to give up on the peer.

On each new block (:class:`~.inputs.BlockHeight`) the core checks:

- an HTLC we offered that is still in a commitment once its ``cltv_expiry``
  plus :data:`OUTGOING_GRACE_BLOCKS` has passed: the peer did not fail it
  in time, so the channel fails and our commitment goes on chain, where the
  HTLC-timeout path takes the funds back;
- an HTLC we received and fulfilled (we gave the preimage) that is still
  not removed :data:`FULFILL_DEADLINE_BLOCKS` before its ``cltv_expiry``:
  the channel fails so that we claim it on chain with the preimage before
  the peer can time it out;
- as fundee, a funding transaction still unconfirmed
  :data:`FUNDING_TIMEOUT_BLOCKS` after we first saw a block while waiting
  for it: the channel is forgotten (BOLT 2: nothing of ours is in it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import RemoteFault
from .inputs import BlockHeight, ChannelFailed
from .messages import UpdateFulfillHtlc

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = ["FULFILL_DEADLINE_BLOCKS", "FUNDING_TIMEOUT_BLOCKS", "OUTGOING_GRACE_BLOCKS", "on_block_height"]

#: Blocks past an offered HTLC's expiry before we stop waiting for the peer to fail it.
OUTGOING_GRACE_BLOCKS = 1
#: Blocks before a fulfilled incoming HTLC's expiry at which we go on chain to claim it.
FULFILL_DEADLINE_BLOCKS = 7
#: BOLT 2: a fundee may forget a channel whose funding did not confirm within 2016 blocks.
FUNDING_TIMEOUT_BLOCKS = 2016


def on_block_height(core: ChannelCore, event: BlockHeight, out: _Out) -> None:
    """Fail the channel when an HTLC deadline passed (see the module docstring)."""
    from .state import Phase

    s = core.state
    if s.local_commit is None or s.remote_commit is None:
        return
    if s.phase is Phase.AWAIT_READY and not s.funder and not s.ready_sent:
        if s.funding_wait_start is None:
            s.funding_wait_start = event.height
        elif event.height - s.funding_wait_start >= FUNDING_TIMEOUT_BLOCKS:
            s.phase = Phase.CLOSED
            s.failure = f"the funding transaction did not confirm within {FUNDING_TIMEOUT_BLOCKS} blocks"
            out.emit(ChannelFailed(s.failure, None, by_peer=False))
        return
    commits = [s.local_commit.spec, s.remote_commit.spec.flipped()]
    if s.remote_next_commit is not None:
        commits.append(s.remote_next_commit.spec.flipped())
    for spec in commits:
        for htlc in spec.htlcs:
            if not htlc.incoming and event.height >= htlc.add.cltv_expiry + OUTGOING_GRACE_BLOCKS:
                raise RemoteFault(f"offered HTLC {htlc.add.id} expired at block {htlc.add.cltv_expiry} unresolved")
    fulfilled = {u.id for u in s.local_changes.all() + tuple(s.resend_updates) if isinstance(u, UpdateFulfillHtlc)}
    for htlc in s.local_commit.spec.htlcs:
        if htlc.incoming and htlc.add.id in fulfilled and event.height >= htlc.add.cltv_expiry - FULFILL_DEADLINE_BLOCKS:
            raise RemoteFault(f"fulfilled HTLC {htlc.add.id} not removed before block {htlc.add.cltv_expiry}")
