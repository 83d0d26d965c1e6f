"""HTLC deadlines (BOLT 2 "Forwarding HTLCs", BOLT 5): when to give up on the peer.

On each new block (:class:`~.inputs.BlockHeight`) the core checks:

- an HTLC we offered that is still in a commitment once its ``cltv_expiry``
  plus :data:`OUTGOING_GRACE_BLOCKS` has passed: the peer did not fail it
  in time, so the channel fails and our commitment goes on chain, where the
  HTLC-timeout path takes the funds back;
- an HTLC we received and fulfilled (we gave the preimage) that is still
  not removed :data:`FULFILL_DEADLINE_BLOCKS` before its ``cltv_expiry``:
  the channel fails so that we claim it on chain with the preimage before
  the peer can time it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import RemoteFault
from .inputs import BlockHeight
from .messages import UpdateFulfillHtlc

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = ["FULFILL_DEADLINE_BLOCKS", "OUTGOING_GRACE_BLOCKS", "on_block_height"]

#: Blocks past an offered HTLC's expiry before we stop waiting for the peer to fail it.
OUTGOING_GRACE_BLOCKS = 1
#: Blocks before a fulfilled incoming HTLC's expiry at which we go on chain to claim it.
FULFILL_DEADLINE_BLOCKS = 7


def on_block_height(core: ChannelCore, event: BlockHeight, out: _Out) -> None:
    """Fail the channel when an HTLC deadline passed (see the module docstring)."""
    s = core.state
    if s.local_commit is None or s.remote_commit is None:
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
