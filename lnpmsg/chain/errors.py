"""The chain layer's one error type."""

from __future__ import annotations

__all__ = ["ChainError"]


class ChainError(Exception):
    """A chain operation failed; ``reason`` says why in words a user can act on.

    ``code`` carries a machine-readable tag when one exists: the consensus
    reject reason (``bad-txns-inputs-missingorspent``), a Bitcoin Core RPC
    error code (``-26``), or one of this layer's own tags (``locked``,
    ``corrupt``, ``missing``, ``malformed``, ``mempool``).
    """

    def __init__(self, reason: str, *, code: str | int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
