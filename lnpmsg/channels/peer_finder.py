"""Finding our channel peers in gossip, for a node that lost its data dir (``--recover-from-peers``).

A node that lost its data dir lost ``peers.json`` too: it does not know whom it had channels with,
so it cannot connect to the peers that hold its backup (BOLT 1 peer storage). Its *public* channels
are in the gossip it syncs from any peer: each ``channel_announcement`` naming our node id names
the other end, and that node's ``node_announcement`` its addresses. :func:`search` dials those
peers (``node.connect``: an onion address goes through Tor as any connect does, and without Tor it
fails like any unreachable address) until a backup came back or a time limit passed.

Private channels are never announced: their peers cannot be found this way (the user must connect
to them, e.g. ``lnpmsg connect``, or restore from a backup file).

:class:`DialPlan` is the bookkeeping (no clock, no I/O): at most ``max_dials`` dials at once, each
peer retried with the back-off of :mod:`lnpmsg.io.redial` after a failed dial, a connected peer not
dialed again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from lnpmsg.io.redial import Backoff

__all__ = ["MAX_DIALS", "POLL_INTERVAL", "SEARCH_TIME", "DialPlan", "channel_peers_in_gossip", "search"]

log = logging.getLogger(__name__)

#: dials under way at once
MAX_DIALS = 4
#: seconds between looks at the gossip (it grows as the node syncs)
POLL_INTERVAL = 5.0
#: seconds the search goes on without a backup coming back (then it stops, logged)
SEARCH_TIME = 3600.0
#: shown in the logs and ``--help``: what the search cannot do
PRIVATE_NOTE = "private channels' peers are not in gossip and cannot be found this way: connect to them ('lnpmsg connect')"


@dataclass
class DialPlan:
    """Which found peers to dial now (see the module docs).

    Args:
        max_dials: dials at once.
        backoff: makes each peer's :class:`~lnpmsg.io.redial.Backoff` (its first wait is after the
            first failure: a peer found is dialed at once).
    """

    max_dials: int = MAX_DIALS
    backoff: Callable[[], Backoff] = Backoff
    #: per peer, the time before which it is not dialed again (after a failure)
    not_before: dict[bytes, float] = field(default_factory=dict)
    backoffs: dict[bytes, Backoff] = field(default_factory=dict)
    dialing: set[bytes] = field(default_factory=set)

    def due(self, found: Iterable[bytes], connected: Iterable[bytes], now: float) -> list[bytes]:
        """The peers to dial now (marked as dialing): found, not connected, not dialing, not waiting."""
        connected = set(connected)
        out: list[bytes] = []
        for node_id in sorted(found):
            if len(self.dialing) + len(out) >= self.max_dials:
                break
            if node_id in connected or node_id in self.dialing or self.not_before.get(node_id, 0.0) > now:
                continue
            out.append(node_id)
        self.dialing.update(out)
        return out

    def done(self, node_id: bytes, now: float) -> float:
        """A dial ended (connected or not): the wait before that peer is dialed again, if it is not
        connected then (a peer that connects and drops us is not dialed every look either)."""
        self.dialing.discard(node_id)
        wait = self.backoffs.setdefault(node_id, self.backoff()).wait()
        self.not_before[node_id] = now + wait
        return wait


async def channel_peers_in_gossip(gossip: Any, our_id: bytes, *, page: int = 1000) -> dict[bytes, list[str]]:
    """The other ends of the channels the gossip app knows of ours, with the addresses their
    node_announcements give (``NODEID@host:port``; none for a node not announced)."""
    peers: dict[bytes, list[str]] = {}
    after: str | None = None
    while True:
        rows = await gossip.list_channels(our_id, after=after, limit=page)
        for row in rows:
            other = row["node_id_2"] if row["node_id_1"] == our_id.hex() else row["node_id_1"]
            peers.setdefault(bytes.fromhex(other), [])
        if len(rows) < page:
            break
        after = rows[-1]["short_channel_id"]
    for node_id in peers:
        info = await gossip.get_node(node_id) or {}
        peers[node_id] = [f"{node_id.hex()}@{a}" for a in info.get("addresses", ())]
    return peers


async def search(
    node: Any,
    gossip: Any,
    *,
    found_backup: Callable[[], bool],
    dial: Callable[[str], Awaitable[Any]] | None = None,
    plan: DialPlan | None = None,
    search_time: float = SEARCH_TIME,
    poll_interval: float = POLL_INTERVAL,
) -> bool:
    """Dial our public channels' peers found in ``gossip`` until ``found_backup()`` (True) or
    ``search_time`` passed (False). Each peer's addresses are tried in turn; a failed peer waits
    its back-off. ``dial`` is ``node.connect`` unless given."""
    plan = plan or DialPlan()
    dial = dial or node.connect
    deadline = trio.current_time() + search_time
    known: set[bytes] = set()
    log.info("peer storage: recovering: looking for our channels' peers in gossip (%s)", PRIVATE_NOTE)

    async def attempt(node_id: bytes, addresses: list[str]) -> None:
        ok = False
        for address in addresses:
            try:
                await dial(address)
            except Exception as exc:  # noqa: BLE001 - any failed dial is retried after its back-off
                log.info("peer storage: recovering: channel peer %s at %s is unreachable: %s", node_id.hex()[:16], address, exc)
            else:
                log.info("peer storage: recovering: connected to channel peer %s at %s", node_id.hex()[:16], address)
                ok = True
                break
        wait = plan.done(node_id, trio.current_time())
        if not ok:
            log.info("peer storage: recovering: channel peer %s: next try in about %.0f s", node_id.hex()[:16], wait)

    async with trio.open_nursery() as nursery:
        while not found_backup():
            if trio.current_time() >= deadline:
                log.warning("peer storage: recovering: no channel peer returned our backup within %.0f s; stopped looking "
                            "(%s, or 'lnpmsg restorechannels FILE')", search_time, PRIVATE_NOTE)  # fmt: skip
                nursery.cancel_scope.cancel()
                return False
            try:
                in_gossip = await channel_peers_in_gossip(gossip, node.node_id)
            except Exception as exc:  # noqa: BLE001 - the gossip app is starting (or stopping): look again later
                log.debug("peer storage: recovering: the gossip cannot be read yet: %s", exc)
                in_gossip = {}
            found = {n: a for n, a in in_gossip.items() if a}
            if set(in_gossip) - known:
                known |= set(in_gossip)
                log.warning("peer storage: recovering: found %d channel peer(s) in gossip, connecting%s (%s)", len(known),
                             f"; {len(in_gossip) - len(found)} announce no address" if len(found) < len(in_gossip) else "",
                             PRIVATE_NOTE)  # fmt: skip
            for node_id in plan.due(found, node.peers, trio.current_time()):
                nursery.start_soon(attempt, node_id, found[node_id])
            await trio.sleep(poll_interval)
        nursery.cancel_scope.cancel()
    log.info("peer storage: recovering: a channel peer returned our backup; stopped looking")
    return True
