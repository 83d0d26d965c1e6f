"""Batches of BOLT-8 length headers sealed and opened through libsodium, when it is there.

A length header is the ChaCha20-Poly1305 encryption of two bytes, and
cryptography's AEAD spends about 0.5 µs of each call on the call itself
(an OpenSSL context copied, reset and wiped, buffers taken and released),
so a 2-byte header costs nearly as much as a 1 KiB body. libsodium's
``crypto_aead_chacha20poly1305_ietf_*``, called through PyNaCl's compiled
cffi module, does the same work for 0.2-0.3 µs less per header (measured
Dec 6 2026, 2-core x86-64 with AVX-512: 0.50 against 0.69 µs to seal,
0.48 against 0.75 µs to open). Bodies stay with cryptography: at 1 KiB
OpenSSL's AVX-512 code makes up for its costlier call (1.09 against 1.14
µs), and the body must come out as ``bytes`` anyway.

Only batches use this (a writer's run of like frames, a reader's run of
frames of one size): the targets and outputs are pointers into buffers
kept from batch to batch, which a single frame would have to make first.
The bytes are the same either way (both implement RFC 8439's AEAD), which
``tests/test_length_headers.py`` checks against cryptography. Without
PyNaCl (or with ``LNPMSG_NO_SODIUM=1`` in the environment), :data:`AVAILABLE`
is False and the cipher uses cryptography for every header.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Final

from ._primitives import LENGTH_HEADER_SIZE

__all__ = ["AVAILABLE", "HeaderTargets", "open_headers", "seal_headers"]

_PLAIN_SIZE: Final = 2

try:
    if os.environ.get("LNPMSG_NO_SODIUM"):
        raise ImportError("LNPMSG_NO_SODIUM is set")
    # PyNaCl's compiled (API-mode) binding: a call costs ~0.15 µs. PyNaCl's
    # public wrappers check and copy in Python (~3.5 µs a header).
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib

    if _lib.sodium_init() < 0:  # picks the CPU's fastest Poly1305 (0, or 1 if done before)
        raise ImportError("sodium_init failed")
    _seal: Any = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
    _open: Any = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
    _NULL: Any = _ffi.NULL
except (ImportError, AttributeError):
    _ffi = _seal = _open = _NULL = None

#: whether batches of headers go through libsodium
AVAILABLE: Final = _seal is not None
# runs an iterator to its end in C, keeping nothing
_discard: Final = deque(maxlen=0).extend


class HeaderTargets:
    """Where the headers of a batch of frames of one size go: pointers into a writer's buffer.

    Made once per layout of a :class:`~lnpmsg.noise.frame_scratch.FrameScratch`
    (holding the buffer exported, so it must never be resized: the scratch
    makes a new one instead).
    """

    __slots__ = ("_base", "pointers")

    def __init__(self, buffer: bytearray, frame: int, count: int) -> None:
        assert _ffi is not None
        self._base = _ffi.from_buffer(buffer)
        #: the place of each frame's header, in order
        self.pointers: list[Any] = list(map(self._base.__add__, range(0, frame * count, frame)))


def seal_headers(key: bytes, nonces: Sequence[bytes], length: bytes, targets: HeaderTargets, start: int) -> None:
    """Encrypt ``length`` (exactly 2 bytes) once per nonce into the headers from ``targets.pointers[start]``.

    There must be a target for every nonce (``start + len(nonces)`` at most
    the layout's count): the writes go where the pointers say.
    """
    pointers = targets.pointers[start : start + len(nonces)]
    # libsodium's encryption fails only for messages over 2**38 bytes: the codes are all 0
    _discard(map(_seal, pointers, repeat(_NULL), repeat(length), repeat(_PLAIN_SIZE), repeat(_NULL), repeat(0), repeat(_NULL), nonces, repeat(key)))


class _Outputs(threading.local):
    """Each thread's buffer for opened headers (libsodium runs without the GIL)."""

    def __init__(self) -> None:
        self.plain = bytearray()
        self.pointers: list[Any] = []
        self._base: Any = None

    def ensure(self, count: int) -> None:
        if count > len(self.pointers):
            size = max(count, 64)
            self.plain = bytearray(_PLAIN_SIZE * size)
            self._base = _ffi.from_buffer(self.plain)
            self.pointers = list(map(self._base.__add__, range(0, _PLAIN_SIZE * size, _PLAIN_SIZE)))


_outputs = _Outputs() if AVAILABLE else None


def open_headers(key: bytes, nonces: Sequence[bytes], headers: Sequence[bytes], expected: bytes) -> int:
    """How many of ``headers`` in a row, from the first, authenticate and say ``expected``.

    ``headers`` are encrypted length headers, one per nonce; every one is
    opened (a failure does not stop the batch), and the count ends at the
    first that fails or says another length. Each is ``LENGTH_HEADER_SIZE``
    bytes, or a pointer to that many (a :class:`HeaderTargets` pointer into
    a kept read buffer): libsodium reads that many, unchecked here (the
    cipher's cut of a run's frames and its read layout make them so).
    """
    outputs = _outputs
    assert outputs is not None
    count = len(headers)
    outputs.ensure(count)
    codes = list(map(_open, outputs.pointers, repeat(_NULL), repeat(_NULL), headers, repeat(LENGTH_HEADER_SIZE), repeat(_NULL), repeat(0), nonces, repeat(key)))
    good = count if codes.count(0) == count else next(i for i, code in enumerate(codes) if code)
    if outputs.plain[: _PLAIN_SIZE * good] != expected * good:
        plain = outputs.plain
        good = next(i for i in range(good) if plain[_PLAIN_SIZE * i : _PLAIN_SIZE * i + _PLAIN_SIZE] != expected)
    return good
