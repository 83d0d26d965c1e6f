"""Reads sized and placed for a run of BOLT-8 frames of one size, and the tuning of
runs (when :class:`~lnpmsg.noise.cipher.MessageDecryptor` batches them).

During a run of like frames (a stream of one message type) a reader that
can read into a buffer of its choice reads into one kept for the run
(:class:`RunReads`): a read of a full socket lands frame-aligned, every
frame's header and body where the layout says, so they are decrypted where
they lie, through pointers and views made once per layout. Nothing is cut
out of the read and no buffer is allocated per read (the messages are the
AEAD's new bytes): ~0.1 µs less per 1 KiB message than cutting a fresh
read's frames (``benchmarks/bench_receive_path.py``). Other readers get a
read size that ends on a frame (:meth:`RunReading.read_size`).
"""

from __future__ import annotations

import struct
import threading
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidTag

from . import length_headers
from ._primitives import FRAME_OVERHEAD, KEY_ROTATION_INTERVAL, LENGTH_HEADER_SIZE, MAC_SIZE, NONCES
from .errors import DecryptError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from .errors import NoiseError

__all__ = ["BACK_OFF", "BATCH_CHUNK", "MIN_BATCH", "RUN_BEFORE_BATCH", "BadBody", "RunReading", "RunReads", "decrypt_run"]

_pack_length = struct.Struct(">H").pack
# Frames in a row of one size (counted across chunks) before the next ones are decrypted
# as a batch of that size, and where the count restarts after a batch stopped early: 256
# frames pass before the next try. A batch holds at most as many frames as the run had
# so far, so one that stops early (wasting the slices of its frames, one or two header
# decrypts and an exception) costs in proportion to the run it follows, and traffic of
# mixed sizes pays well under 0.1 µs a frame for the batches it cannot use.
RUN_BEFORE_BATCH: Final = 32
BACK_OFF: Final = -224
# Fewer whole frames than this left in the chunk go frame by frame: a batch costs a few
# µs to set up, more than it saves on a few frames.
MIN_BATCH: Final = 16
# Only chunks of at least this many bytes count runs and try batches; smaller ones (a
# QUIC stream's, reads of a slow peer) take the plain loop, which costs them nothing more
# (the count of a run is kept from the last large chunk). Below 64 KiB so that a ZeroMQ
# data message (whole frames joined up to 65,569 bytes: 61 frames of 1 KiB messages
# make 64,538) is a large chunk: its frames cost ~0.3 µs less each in batches.
BATCH_CHUNK: Final = 32 * 1024
# Kept read buffers a thread holds for readers that wait (see RunReading.release_read_buffer).
_SPARE_MOST: Final = 4


class RunReads:
    """Room for ``count`` frames of ``body_size``, with a pointer to each header and a view of each body.

    Needs libsodium (:data:`~lnpmsg.noise.length_headers.AVAILABLE`): the
    headers are opened through their pointers. The buffer is never resized
    (its views and pointers hold it): another layout is a new object.
    """

    __slots__ = ("_targets", "bodies", "body_size", "count", "heads", "view")

    def __init__(self, body_size: int, count: int) -> None:
        step = body_size + FRAME_OVERHEAD
        buffer = bytearray(step * count)
        #: the frames' bytes, as a read writes them
        self.view = memoryview(buffer)
        self.body_size = body_size
        self.count = count
        #: where each frame's header lies, for libsodium
        self._targets = length_headers.HeaderTargets(buffer, step, count)
        self.heads: list[Any] = self._targets.pointers
        #: each frame's body and MAC, for the AEAD (views cost it no more than bytes, and no copy)
        self.bodies = [self.view[start + LENGTH_HEADER_SIZE : start + step] for start in range(0, step * count, step)]


class RunReading:
    """Reads sized and placed for a run of frames of one size: the part of
    :class:`~lnpmsg.noise.cipher.MessageDecryptor` that the read loop asks before
    each read (a mixin: the state lives there)."""

    __slots__ = ()

    if TYPE_CHECKING:
        _aead: ChaCha20Poly1305
        _begun: int
        _begun_bytes: bytes
        _body_size: int
        _buffer: bytearray
        _failure: NoiseError | None
        _key: bytes
        _nonce: int
        _offered: int
        _run_length: int
        _run_reads: RunReads | None
        _run_size: int

        def _rotate(self) -> None: ...

        def _fail(self, error: NoiseError) -> NoiseError: ...

        def _failed_again(self) -> NoiseError: ...

        def _parse(self, source: bytes, position: int, messages: list[bytes]) -> None: ...

        def feed(self, data: bytes) -> list[bytes]: ...

    def read_size(self, most: int) -> int:
        """How many bytes (at most ``most``) to ask the transport for next.

        In a run of frames of one size (see :meth:`feed`), the largest count
        that ends on a frame's end: a read of a full socket then carries
        whole frames only, all decrypted in the run's batch, where a read cut
        mid-frame sends that frame through the frame-by-frame path (its
        header decrypted alone, its parts buffered and joined). Otherwise
        ``most``. Never more than ``most``, so a read takes no longer.
        """
        run_size = self._run_size
        if self._run_length < RUN_BEFORE_BATCH or most < BATCH_CHUNK:
            return most
        step = run_size + FRAME_OVERHEAD
        body_size = self._body_size
        # the bytes still missing from a frame begun in the last read
        pending = (body_size + MAC_SIZE if body_size >= 0 else step) - len(self._buffer) if self._buffer or body_size >= 0 else 0
        return pending + (most - pending) // step * step if pending < most else most

    def read_buffer(self, most: int) -> memoryview | None:
        """Where the next read (at most ``most`` bytes) may go, in a run of frames of one size; else None.

        In a run (as :meth:`read_size` finds one), with no frame begun
        outside it and libsodium there: a view of a buffer kept for reads of
        this run, as many whole frames long as fit in ``most`` (at most as
        many as the run had so far), less the bytes of a frame the last read
        began there. Read into it, then call :meth:`feed_read` with the
        count the read gave, before anything else here. Its whole frames are
        decrypted where they lie. A reader that finds nothing to read gives
        the buffer back (:meth:`release_read_buffer`) before it waits, and
        asks for one again when bytes are there.
        """
        view = self._read_view(most)
        if view is None and self._begun:
            self._move_begun()  # read_size then ends the next read on a frame
        return view

    def _read_view(self, most: int) -> memoryview | None:
        if self._run_length < RUN_BEFORE_BATCH or most < BATCH_CHUNK or self._buffer or self._body_size >= 0 or not length_headers.AVAILABLE:
            return None
        body_size = self._run_size
        step = body_size + FRAME_OVERHEAD
        count = min(most // step, self._run_length)
        if count < MIN_BATCH or self._failure is not None:
            return None
        begun = self._begun
        reads = self._run_reads
        if reads is None or reads.body_size != body_size or reads.count < count:
            if reads is not None:
                if begun:
                    return None  # a new buffer after this frame
                _spares.give(reads)
            reads = self._run_reads = _spares.take(body_size, count) or RunReads(body_size, most // step)
            if begun:
                # the frame begun before a wait (see release_read_buffer) goes back to the start
                reads.view[:begun] = self._begun_bytes
                self._begun_bytes = b""
        self._offered = count * step - begun
        return reads.view[begun : count * step]

    def release_read_buffer(self) -> None:
        """Give up the buffer :meth:`read_buffer` keeps, before a wait for the next bytes.

        It goes to this thread's few spares, which the next reads of any
        decryptor take: a peer waiting for data (an idle one) holds no
        buffer, and one streaming again takes a spare instead of a new one.
        A frame the last read began there waits as a copy of its bytes (less
        than a frame) and goes back to the start of the next buffer.
        """
        reads = self._run_reads
        if reads is not None:
            if self._begun:
                self._begun_bytes = bytes(reads.view[: self._begun])
            self._run_reads = None
            _spares.give(reads)

    def _move_begun(self) -> None:
        """The frame the last read began in the kept buffer goes on as one begun in :meth:`feed`
        (its header decrypted if it is whole; a bad one fails this decryptor, whose next call raises)."""
        assert not self._buffer and self._body_size < 0
        if self._begun_bytes:
            begun = self._begun_bytes
            self._begun_bytes = b""
        else:
            reads = self._run_reads
            assert reads is not None
            begun = bytes(reads.view[: self._begun])
        self._begun = 0
        try:
            self._parse(begun, 0, [])  # less than a frame: no message, at most a header
        except DecryptError:
            pass  # sticky (self._failure): the next feed or feed_read raises

    def feed_read(self, size: int) -> list[bytes]:
        """:meth:`feed` for the ``size`` bytes a read put in :meth:`read_buffer`'s view.

        The run's frames are decrypted where they lie, as :meth:`feed`'s
        batches do (headers first, then the bodies they vouch for). A frame
        the read ended in stays where it begun, moved to the buffer's start
        (less than a frame's bytes), and the next read goes on after it; so
        a reader that keeps up with its peer, whose reads end anywhere, reads
        in place all the same. What is left when a frame has another size or
        a bad header goes through :meth:`feed` as a copy.
        """
        reads = self._run_reads
        assert reads is not None and size <= self._offered
        if self._failure is not None:
            raise self._failed_again()
        body_size = reads.body_size
        step = body_size + FRAME_OVERHEAD
        size += self._begun
        self._begun = 0
        whole = size // step
        messages: list[bytes] = []
        done = 0
        while done < whole:
            nonce = self._nonce
            count = min(whole - done, (KEY_ROTATION_INTERVAL - nonce) // 2)
            try:
                good = decrypt_run(self._aead, self._key, nonce, body_size, reads.heads[done : done + count], reads.bodies[done : done + count], messages)
            except BadBody as bad:
                # as in feed: the bad body's header spent its nonce
                self._nonce = nonce + 2 * bad.done + 1
                self._body_size = body_size
                error = self._fail(DecryptError("bad MAC on an encrypted message"))
                error.decoded = messages
                raise error from None
            if good:
                nonce += 2 * good
                if nonce == KEY_ROTATION_INTERVAL:
                    self._rotate()
                else:
                    self._nonce = nonce
                done += good
            if good < count:
                self._run_length = BACK_OFF  # a frame of another size (or a bad one): as feed backs off
                break
        else:
            self._run_length += done
            # a frame the read ended in stays in the buffer, moved to its start, for the next read
            self._begun = size - done * step
            if self._begun and done:
                reads.view[: self._begun] = reads.view[done * step : size]
            return messages
        if done * step < size:
            try:
                messages += self.feed(bytes(reads.view[done * step : size]))
            except DecryptError as exc:
                exc.decoded = messages + exc.decoded  # type: ignore[attr-defined]
                raise
        return messages


class BadBody(Exception):
    """A body of a run of frames failed its MAC after ``done`` good frames."""

    def __init__(self, done: int) -> None:
        super().__init__(done)
        self.done = done


def decrypt_run(aead: ChaCha20Poly1305, key: bytes, nonce: int, body_size: int, heads: list[Any], bodies: list[Any], messages: list[bytes]) -> int:
    """Decrypt frames assumed to have ``body_size``, their headers first: how many had it.

    ``heads`` are the frames' encrypted length headers (bytes, or pointers
    into a kept read buffer with libsodium), ``bodies`` their bodies, from
    ``nonce`` of ``key`` on; ``len(heads)`` frames at most, within the key's
    nonces. A header counts only if it and every one before it authenticate
    and say this size, since only then does it sit where it was assumed to;
    then the bodies of those frames are appended to ``messages``. Raises
    :class:`BadBody` if one of them fails its MAC (``messages`` then holds
    the bodies before it).
    """
    count = len(heads)
    expected = _pack_length(body_size)
    if length_headers.AVAILABLE:  # libsodium: the same check, at less cost per call
        done = length_headers.open_headers(key, NONCES[nonce : nonce + 2 * count : 2], heads, expected)
    else:
        headers: list[bytes] = []
        try:
            headers += map(aead.decrypt, NONCES[nonce : nonce + 2 * count : 2], heads, repeat(None))
        except InvalidTag:
            pass  # this frame has another size, or a bad MAC: the frame-by-frame loop tells which
        done = len(headers)
        if headers.count(expected) != done:
            done = next(i for i, header in enumerate(headers) if header != expected)
    if done:
        before = len(messages)
        try:
            # the nonces (``done`` of them) end the map: bodies past them are not touched
            messages += map(aead.decrypt, NONCES[nonce + 1 : nonce + 2 * done : 2], bodies, repeat(None))
        except InvalidTag:
            raise BadBody(len(messages) - before) from None
    return done


class _Spares(threading.local):
    """Each thread's kept read buffers that no reader holds (a few; the newest first)."""

    def __init__(self) -> None:
        self.kept: list[RunReads] = []

    def take(self, body_size: int, count: int) -> RunReads | None:
        """A spare for ``count`` frames of ``body_size``, if there is one."""
        kept = self.kept
        for index in range(len(kept) - 1, -1, -1):
            reads = kept[index]
            if reads.body_size == body_size and reads.count >= count:
                del kept[index]
                return reads
        return None

    def give(self, reads: RunReads) -> None:
        """Keep ``reads`` for the next reader (dropping the oldest spare when full)."""
        kept = self.kept
        if len(kept) >= _SPARE_MOST:
            del kept[0]
        kept.append(reads)


_spares = _Spares()
