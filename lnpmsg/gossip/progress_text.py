"""The gossip sync's progress as text, for ``lnpmsg gossip stats`` and ``sync``
(sans-IO: ``gossip.progress`` results in, lines out).

:class:`ResyncFollow` is what ``lnpmsg gossip sync --follow`` says of the
re-syncs: it compares each ``gossip.progress`` result with the one before
and names each re-sync that started or ended in between (polls half a
second apart can miss a short one whole: the counts still say it ran).
"""

from __future__ import annotations

from typing import Any

__all__ = ["BAR_WIDTH", "ResyncFollow", "duration", "progress_bar", "resync_summary", "sync_summary"]

#: characters of the progress bar between its brackets
BAR_WIDTH = 30


def duration(seconds: float) -> str:
    """``45 s``, ``13 min``: seconds for people (minutes from two on)."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def sync_summary(p: dict[str, Any]) -> str:
    """``50% (1 peer(s) syncing; 123 channels)``: a ``gossip.progress`` result in a line."""
    peers = p["peers"]
    if p["synced"]:
        state = "done"
    elif p["syncing"]:
        state = f"{sum(q['state'] in ('range', 'ids') for q in peers.values())} peer(s) syncing"
    elif peers:
        state = "no sync running"
    else:
        state = "no peer to sync with yet"
    return f"{p['percent']:.0f}% ({state}; {p['channels']} channels)"


def resync_summary(r: dict[str, Any]) -> str:
    """``next in 12 min (every 20 min, 3 so far)``: ``gossip.progress``'s ``resync``
    (the periodic re-syncs once the first full syncs are done, and those asked for)."""
    manual = r.get("manual", 0)
    asked = f", {manual} asked for" if manual else ""
    if not r["interval"]:
        every = f"none periodic{asked}"
    else:
        every = f"every {duration(r['interval'])}, {r['started']} so far{asked}"
    if r["peer"] is not None:
        return f"now, with {r['peer']} ({every})"
    if not r["interval"]:
        return every
    if r["next_in"] is None:
        return f"once the first full syncs are done ({every})"
    return f"next in {duration(r['next_in'])} ({every})"


def progress_bar(progress: dict[str, Any], width: int = BAR_WIDTH) -> str:
    """One line for a terminal: ``[#####.....]  50% (1 peer(s) syncing; 123 channels)``."""
    percent = max(0.0, min(100.0, float(progress["percent"])))
    filled = round(width * percent / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] {sync_summary(progress)}"


class ResyncFollow:
    """The re-syncs between successive ``gossip.progress`` results, as lines.

    The first result is the starting point (a re-sync under way then is
    followed to its end); :meth:`update` with each later one returns the
    lines for what changed. ``ended``: the re-syncs seen to end so far.
    """

    def __init__(self) -> None:
        #: (the timer's, asked for) re-syncs started at the last look (None: no look yet)
        self._counts: tuple[int, int] | None = None
        #: the peer of the re-sync followed (started, its end not told yet)
        self._running: str | None = None
        self.ended = 0
        #: the peers of the re-syncs whose failure these lines told (so that no other line repeats it)
        self.failed: set[str] = set()

    def intro(self, progress: dict[str, Any]) -> str:
        """What is followed, for the first line."""
        r = progress.get("resync")
        if r is None:
            return "following re-syncs: the node runs none periodically (--gossip-resync-interval 0 or --gossip-full-syncs 0); 'lnpmsg gossip resync' starts one"
        return f"following re-syncs: {resync_summary(r)}"

    def update(self, progress: dict[str, Any]) -> list[str]:
        """The lines for the re-syncs that started or ended since the last look."""
        r = progress.get("resync")
        if r is None:
            return []  # none periodic and none asked for yet
        counts = (r["started"], r.get("manual", 0))
        if self._counts is None:
            self._counts, self._running = counts, r["peer"]
            return []
        lines: list[str] = []
        new = counts != self._counts
        if self._running is not None and (new or r["peer"] != self._running):
            lines.append(self._end(self._running, progress))
        if new:
            timer, asked = counts[0] - self._counts[0], counts[1] - self._counts[1]
            self._counts = counts
            peer = r["last"]
            lines.append(f"gossip re-sync with {peer} started ({'asked for' if asked else 'periodic'})")
            missed = timer + asked - 1
            if missed > 0:  # a whole re-sync between two looks (the last one started is told)
                self.ended += missed
                lines.append(f"gossip re-sync: {missed} more started and ended between two looks")
            if r["peer"] == peer:
                self._running = peer
            else:
                lines.append(self._end(peer, progress))
        return lines

    def _end(self, peer: str, progress: dict[str, Any]) -> str:
        self._running = None
        self.ended += 1
        r = progress["resync"]
        after = "" if r["next_in"] is None else f"; the next in {duration(r['next_in'])}"
        sync = progress["peers"].get(peer)
        if sync is None:
            return f"gossip re-sync with {peer} ended (its record is gone){after}"
        if sync["state"] == "done":
            return (
                f"gossip re-sync with {peer} done: {sync['channels_offered']} channels offered, "
                f"{sync['channels_wanted']} asked for (graph: {progress['channels']} channels){after}"
            )
        if sync["state"] == "failed":
            self.failed.add(peer)
            return f"gossip re-sync with {peer} failed: {sync['reason']}{after}"
        return f"gossip re-sync with {peer} ended ({sync['state']}){after}"
