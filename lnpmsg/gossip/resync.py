"""When the gossip app syncs again, and with which peer (sans-IO: ``now`` is passed in).

Once ``GossipConfig.full_syncs`` syncs are done, later peers are not
synced with: they send only their new gossip (our timestamp filter). What
the first peers did not know (channels they never heard of, updates they
missed while we were away) would then never come. So every
``resync_interval`` seconds the app runs one more range sync with one
connected peer, as lnd's periodic "historical sync" does: a peer never
synced with if there is one (at random), else the one synced with longest
ago. With ``gossip_queries_ex`` the range replies carry timestamps, so a
re-sync with a peer that knows what we know costs its range replies and no
more.

One re-sync runs at a time, and only while there is room among the
``sync_peers`` syncs: a re-sync due meanwhile waits for both.

A re-sync can also be asked for (``gossip.resync``, ``lnpmsg gossip
resync``: :meth:`ResyncSchedule.choose_asked`), with a given peer or the
one the timer would pick, at any time (before the first syncs are done,
with re-syncs off too). It goes the same way (one re-sync at a time,
within ``sync_peers``) but leaves the timer alone, as lnd's manual syncs
do: the next periodic re-sync stays due when it was, its count (``started``)
counts only the timer's, and one coming due while the asked-for re-sync
runs waits for its end. Refusals are :class:`~lnpmsg.gossip.errors.ResyncRefused`.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from lnpmsg.gossip.errors import ResyncRefused

__all__ = ["FULL_SYNCS", "MAX_SYNCED_KEPT", "RESYNC_INTERVAL", "ResyncSchedule"]

#: full syncs (with peers offering channels) after which new peers are not synced with (lnd
#: keeps 3 active syncers): on mainnet each one is the whole network's channel ids
FULL_SYNCS = 3
#: seconds between re-syncs (lnd's historical sync interval: 20 minutes)
RESYNC_INTERVAL = 20 * 60.0
#: peers whose last sync time is kept to choose the next re-sync's peer (a
#: peer forgotten counts as never synced with: it was the longest ago anyway)
MAX_SYNCED_KEPT = 1024


class ResyncSchedule:
    """The re-syncs' timer and the choice of their peer.

    ``interval``: seconds between re-syncs (0: none). Times are the app's
    monotonic clock (trio's, in seconds). The schedule is armed once the
    first syncs are enough (:meth:`arm`); from then on a re-sync is due
    every ``interval`` seconds after the last one started.
    """

    def __init__(self, interval: float, *, rng: random.Random | None = None) -> None:
        if interval < 0:
            raise ValueError(f"resync interval: seconds, 0 or more (0: no re-sync), got {interval:g}")
        self.interval = interval
        self._rng = rng or random.Random()
        #: when the next re-sync is due (None: not armed, or re-syncs are off)
        self.next_at: float | None = None
        #: the peer of the re-sync under way (None: none runs)
        self.running: bytes | None = None
        #: re-syncs the timer started
        self.started = 0
        #: re-syncs asked for (:meth:`choose_asked`) and started
        self.manual = 0
        #: the peer of the last re-sync started, the timer's or asked for (None: none yet)
        self.last: bytes | None = None
        #: node id -> when our last sync with it started, the least recent first
        self._synced: OrderedDict[bytes, float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def arm(self, now: float) -> None:
        """The syncs done are enough: re-sync ``interval`` seconds from now (once; no-op when off)."""
        if self.enabled and self.next_at is None:
            self.next_at = now + self.interval

    def due(self, now: float) -> bool:
        """A re-sync should start now (none runs and its time has come)."""
        return self.running is None and self.next_at is not None and now >= self.next_at

    def synced_with(self, node_id: bytes, now: float) -> None:
        """A sync with ``node_id`` started (a first sync or a re-sync)."""
        synced = self._synced
        synced[node_id] = now
        synced.move_to_end(node_id)
        while len(synced) > MAX_SYNCED_KEPT:
            synced.popitem(last=False)

    def choose(self, candidates: Iterable[bytes]) -> bytes | None:
        """The peer to re-sync with among ``candidates`` (node ids): one never synced with, at
        random, else the one synced with longest ago; None without candidates."""
        never: list[bytes] = []
        oldest: bytes | None = None
        oldest_at = 0.0
        for node_id in candidates:
            at = self._synced.get(node_id)
            if at is None:
                never.append(node_id)
            elif not never and (oldest is None or at < oldest_at):
                oldest, oldest_at = node_id, at
        if never:
            return self._rng.choice(never)
        return oldest

    def choose_asked(self, wanted: bytes | None, peers: Mapping[bytes, bool], syncing: Collection[bytes], sync_peers: int) -> bytes:
        """The peer of a re-sync asked for now: ``wanted``, or (None) the one :meth:`choose`
        picks. ``peers``: the peers connected (node id -> offers ``gossip_queries``);
        ``syncing``: the peers whose sync runs; ``sync_peers``: the most syncs at a time.

        Raises :class:`ResyncRefused` when it cannot start now, its ``code`` one of
        ``not-connected``, ``no-gossip-queries``, ``already-syncing`` (the peer given;
        without one: every peer offering queries), ``resync-running`` (another re-sync
        runs: one at a time), ``sync-peers-full`` and ``no-peer`` (no peer offers queries).
        """
        if wanted is not None:
            offers = peers.get(wanted)
            if offers is None:
                raise ResyncRefused(f"peer {wanted.hex()} is not connected", "not-connected")
            if not offers:
                raise ResyncRefused(f"peer {wanted.hex()} does not offer gossip_queries: it cannot be synced with", "no-gossip-queries")
            if wanted in syncing:
                what = "a re-sync" if wanted == self.running else "a sync"
                raise ResyncRefused(f"{what} with {wanted.hex()} is running already", "already-syncing")
        if self.running is not None:
            raise ResyncRefused(f"a re-sync with {self.running.hex()} is running: one at a time", "resync-running")
        if len(syncing) >= sync_peers:
            raise ResyncRefused(f"{len(syncing)} syncs are running, the sync_peers limit: try again once one ends", "sync-peers-full")
        if wanted is not None:
            return wanted
        offering = [node_id for node_id, offers in peers.items() if offers]
        if not offering:
            raise ResyncRefused("no connected peer offers gossip_queries", "no-peer")
        chosen = self.choose(node_id for node_id in offering if node_id not in syncing)
        if chosen is None:
            raise ResyncRefused("every connected peer offering gossip_queries is syncing already", "already-syncing")
        return chosen

    def start(self, node_id: bytes, now: float, *, asked: bool = False) -> None:
        """A re-sync with ``node_id`` starts now; the next is due ``interval`` seconds later,
        unless it was ``asked`` for (:meth:`choose_asked`): then the timer is left alone."""
        self.running = node_id
        self.last = node_id
        if asked:
            self.manual += 1
        else:
            self.started += 1
            self.next_at = now + self.interval
        self.synced_with(node_id, now)

    def postpone(self, now: float) -> None:
        """No peer to re-sync with: try again ``interval`` seconds from now."""
        self.next_at = now + self.interval

    def ended(self, node_id: bytes) -> None:
        """The sync with ``node_id`` ended (done, failed or its peer gone)."""
        if self.running == node_id:
            self.running = None

    def progress(self, now: float, *, periodic: bool = True) -> dict[str, Any]:
        """A JSON-able summary: ``interval``, ``next_in`` (seconds until the next periodic
        re-sync; None: not armed), ``peer`` (hex, of the one under way; None), ``started``
        (by the timer), ``manual`` (asked for) and ``last`` (hex, the peer of the last one
        started; None). ``periodic=False`` (the app has no periodic re-syncs, only asked-for
        ones): ``interval`` 0 and ``next_in`` None."""
        return {
            "interval": self.interval if periodic else 0.0,
            "next_in": None if self.next_at is None or not periodic else round(max(0.0, self.next_at - now), 1),
            "peer": None if self.running is None else self.running.hex(),
            "started": self.started,
            "manual": self.manual,
            "last": None if self.last is None else self.last.hex(),
        }
