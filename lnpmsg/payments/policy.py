"""Which forwarding policy holds on each of our channels (the payments app's view of it).

The announce app (:mod:`lnpmsg.gossip.public.app`) owns our channels'
policies: it announces them in channel_updates, ``lnpmsg setchannelfee``
changes them, and it keeps the peers' channel_updates of our private
channels. :class:`ChannelPolicies` reads them for the payments app: what a
forward over a channel must meet, and what a route hint says the peer
charges to reach us. Without an announce app the payments app's own
``FeePolicy`` holds everywhere. The announce app is read by its attributes
only (this package never imports gossip, which imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lnpmsg.payments.htlcs import FeePolicy

if TYPE_CHECKING:
    from lnpmsg.channels.htlc_hook import ChannelInfo

__all__ = ["ChannelPolicies"]


def _fee_policy(policy: Any) -> FeePolicy:
    return FeePolicy(policy.fee_base_msat, policy.fee_proportional_millionths, policy.cltv_expiry_delta)


class ChannelPolicies:
    """Policies per channel from ``announce()`` (the announce app, or None), else ``default``."""

    def __init__(self, announce: Callable[[], Any], default: FeePolicy) -> None:
        self._announce = announce
        self.default = default

    def forwarding(self, scid: int) -> list[FeePolicy]:
        """What a forward over our channel ``scid`` may meet: its current policy first, then the
        previous one while BOLT 7's grace lasts (the announce app's ``forwarding_policies``)."""
        announce = self._announce()
        if announce is None:
            return [self.default]
        return [_fee_policy(p) for p in announce.forwarding_policies(scid)]

    def of_peers(self, channels: Iterable[ChannelInfo]) -> dict[int, FeePolicy]:
        """Per channel: the peer's policy towards us (its channel_update, else an lnpmsg peer's default)."""
        announce = self._announce()
        if announce is None:
            return {}
        out = {}
        for c in channels:
            update = announce.peer_updates.get(c.short_channel_id)
            out[c.short_channel_id] = _fee_policy(update if update is not None else announce.config.policy)
        return out

    def announced(self, scid: int) -> bool:
        """Whether our channel ``scid`` is in the gossip graph, so payers find it without a route hint
        (no announce app: no channel of ours is announced)."""
        announce = self._announce()
        return announce is not None and bool(announce.is_announced(scid))
