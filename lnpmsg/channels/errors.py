"""The channel layer's errors.

Every bad input to ``lnpmsg.channels`` (a malformed key, script, transaction
or amount; a commitment that does not add up; a per-commitment secret that
does not belong to the chain already stored) raises a ``ChannelError``.
"""

from __future__ import annotations

__all__ = ["ChannelError", "ShachainError"]


class ChannelError(ValueError):
    """A channel transaction, key or script could not be built or parsed (the message says why)."""


class ShachainError(ChannelError):
    """A per-commitment secret is inconsistent with the ones stored before, or is unknown."""
