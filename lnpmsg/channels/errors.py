"""The channel layer's errors.

Every bad input to ``lnpmsg.channels`` (a malformed key, script, transaction
or amount; a commitment that does not add up; a per-commitment secret that
does not belong to the chain already stored) raises a ``ChannelError``, or
for malformed Bitcoin data caught by the primitives underneath, their
``BitcoinError``: ``ChannelError`` is a ``BitcoinError``, so
``except BitcoinError`` catches both.
"""

from __future__ import annotations

from lnpmsg.bitcoin.errors import BitcoinError

__all__ = ["ChannelError", "ChannelStoreError", "LocalMisuse", "RemoteFault", "ShachainError", "StoreWriteFailed"]


class ChannelError(BitcoinError):
    """A channel transaction, key or script could not be built or parsed (the message says why)."""


class ShachainError(ChannelError):
    """A per-commitment secret is inconsistent with the ones stored before, or is unknown."""


class RemoteFault(ChannelError):
    """The peer broke BOLT 2: the channel fails (an ``error`` is sent), or with
    ``warning=True`` only a ``warning`` is sent and the connection dropped (BOLT 2's
    "send a warning and close the connection"; the channel stays and is reestablished).
    ``keep_connection``: a warning that leaves the connection up (a message out of order
    around a reconnection, which closing the connection would only bring back)."""

    def __init__(self, message: str, *, warning: bool = False, keep_connection: bool = False) -> None:
        super().__init__(message)
        self.warning = warning
        self.keep_connection = keep_connection


class LocalMisuse(ChannelError):
    """The caller asked the channel for something it cannot do now (nothing is changed)."""


class StoreWriteFailed(Exception):
    """A channel's change could not be written to its store (a full disk, a failing disk).

    Nothing the change would have sent was sent; the channel is back to its
    state on disk, and its peer is disconnected so that both sides pick up
    from there when it reconnects (``channel_reestablish``).
    """


class ChannelStoreError(Exception):
    """The channel store could not be opened or written while the node starts (a full disk, a
    damaged seed): the message says which file, why and what to do; no channel was changed."""
