"""The exception of the gossip layer.

Gossip a peer sends is never an exception: each message gets a
:class:`~lnpmsg.gossip.graph.Decision` (accepted, ignored or rejected, with
the reason). :class:`GossipError` is for what a caller gives us: an
unreadable ``gossip_store`` file, a store that cannot be opened, a bad
argument to a query, a re-sync asked for that cannot start (:class:`ResyncRefused`).
"""

from __future__ import annotations

__all__ = ["GossipError", "GossipStoreWriteError", "ResyncRefused"]


class GossipError(Exception):
    """A gossip store, import or query failed (with the reason)."""


class GossipStoreWriteError(GossipError):
    """The gossip store did not take a write (a full disk, an I/O error); nothing of it was written.

    ``disk_full``: SQLite said the database or the disk is full.
    """

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


class ResyncRefused(GossipError):
    """A re-sync asked for (``gossip.resync``) cannot start now.

    ``code`` says why, for scripts (see
    :meth:`~lnpmsg.gossip.resync.ResyncSchedule.choose_asked`); ``details``
    become the control error's ``data`` (``{"error": "ResyncRefused", "code": ...}``).
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.details = {"code": code}
