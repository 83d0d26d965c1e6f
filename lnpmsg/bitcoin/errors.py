"""The Bitcoin primitives' one error type."""

from __future__ import annotations

__all__ = ["BitcoinError"]


class BitcoinError(ValueError):
    """Malformed or out-of-range Bitcoin data: a transaction, block, script,
    key, signature, hash or amount that cannot be parsed or built.

    Layers above either raise a subclass (``lnpmsg.channels.ChannelError``)
    or turn it into their own error at their boundary
    (``lnpmsg.chain.ChainError`` with code ``"malformed"``).
    """
