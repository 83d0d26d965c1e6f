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

__all__ = ["ChannelError", "ShachainError"]


class ChannelError(BitcoinError):
    """A channel transaction, key or script could not be built or parsed (the message says why)."""


class ShachainError(ChannelError):
    """A per-commitment secret is inconsistent with the ones stored before, or is unknown."""
