"""QUIC Retry tokens: address validation for a listener under load (sans-IO).

A flood of QUIC Initials that never continue (their source addresses may be
spoofed) would otherwise hold every handshake slot. Under load a listener
answers an Initial without a token with a Retry (RFC 9000 section 8.1.2)
and keeps no state; only a client that receives the Retry at its address
can echo the token, so per-source limits then count real sources.

A token is ``time (8 bytes, ms) | len(odcid) (1) | odcid | tag (16)``; the
tag is HMAC-SHA256 over the client's address, the time, the original
destination connection id and the connection id we chose in the Retry (the
one the client's next Initial is addressed to), under a key made at start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

__all__ = ["RETRY_TOKEN_LIFETIME", "RetryTokens"]

#: a Retry token is accepted this many seconds after it was made
RETRY_TOKEN_LIFETIME = 10.0

_TIME = struct.Struct(">Q")
_TAG_SIZE = 16


class RetryTokens:
    """Make and check Retry tokens for one listener (``now`` is passed in)."""

    def __init__(self, key: bytes | None = None, lifetime: float = RETRY_TOKEN_LIFETIME) -> None:
        self._key = key if key is not None else os.urandom(32)
        self.lifetime = lifetime

    def _tag(self, address: tuple[str, int], stamp: bytes, odcid: bytes, retry_scid: bytes) -> bytes:
        ip, port = address
        message = b"|".join([ip.encode(), str(port).encode(), stamp, odcid, retry_scid])
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_TAG_SIZE]

    def create(self, address: tuple[str, int], odcid: bytes, retry_scid: bytes, now: float) -> bytes:
        """The token for a Retry sent to ``address``, whose Initial was addressed to ``odcid``."""
        if len(odcid) > 20:
            raise ValueError("a connection id has at most 20 bytes")
        stamp = _TIME.pack(int(now * 1000))
        return stamp + bytes([len(odcid)]) + odcid + self._tag(address, stamp, odcid, retry_scid)

    def validate(self, address: tuple[str, int], token: bytes, destination_cid: bytes, now: float) -> bytes:
        """The original destination connection id, if ``token`` is ours, fresh, for this address,
        and the Initial carrying it goes to the id our Retry chose; else ValueError."""
        if len(token) < _TIME.size + 1 + _TAG_SIZE:
            raise ValueError("token too short")
        stamp = token[: _TIME.size]
        length = token[_TIME.size]
        odcid = token[_TIME.size + 1 : _TIME.size + 1 + length]
        tag = token[_TIME.size + 1 + length :]
        if len(odcid) != length or len(tag) != _TAG_SIZE:
            raise ValueError("token malformed")
        if not hmac.compare_digest(tag, self._tag(address, stamp, odcid, destination_cid)):
            raise ValueError("token not ours, or for another address")
        made = _TIME.unpack(stamp)[0] / 1000
        if not 0 <= now - made <= self.lifetime:
            raise ValueError("token expired")
        return odcid
