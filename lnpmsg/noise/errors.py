"""The errors of the BOLT-8 layer.

Every failure of a handshake or of the transport cipher is a ``NoiseError``;
after one, the object that raised it stays failed (a peer that sent one bad
byte gets no second chance, and a half-advanced nonce is never reused).
"""

from __future__ import annotations

__all__ = ["DecryptError", "HandshakeError", "MessageTooLarge", "NoiseError"]


class NoiseError(Exception):
    """Base class of every BOLT-8 error."""


class HandshakeError(NoiseError):
    """An act was malformed or failed authentication (the message says which act and why),
    or the handshake object was used out of order."""


class DecryptError(NoiseError):
    """An encrypted length or message failed authentication, or a frame was too large.

    ``decoded`` holds the messages that the same input completed before the bad
    frame: they were authentic, so the receiver handles them, then fails.
    """

    decoded: list[bytes] = []


class MessageTooLarge(NoiseError):
    """A local attempt to send a message longer than BOLT-8 allows (65535 bytes)."""
