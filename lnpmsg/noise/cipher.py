"""The BOLT-8 transport cipher: framing, encryption and key rotation of messages.

A frame on the wire is ``encrypted length (2 + 16 MAC) || encrypted message
(n + 16 MAC)``; each of the two parts uses one nonce. Each direction rotates
its key on its own after 1000 nonces (500 messages) with its own chaining key.

This is the hot path of the node, so the code trades some elegance for
speed: one AEAD object per key, nonces taken from a precomputed table (the
counter never exceeds 999 before rotation resets it), and an incremental
decoder that parses straight out of the caller's chunk and only buffers
the trailing partial frame (completed from the head of the next chunk,
so no chunk is ever copied whole). Runs of frames of one size (a stream of
like messages) are decrypted in batches over C iterators, without a Python
loop turn per frame; a reader that can read into a buffer of its choice
puts the reads of a run where their frames are decrypted in place (see
:mod:`.run_reads`, the run tuning is there too).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, repeat
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import length_headers
from ._primitives import FRAME_OVERHEAD, KEY_ROTATION_INTERVAL, KEY_SIZE, LENGTH_HEADER_SIZE, MAC_SIZE, hkdf_pair
from ._primitives import NONCES as _NONCES
from .errors import DecryptError, MessageTooLarge, NoiseError
from .frame_cut import cut_frames as _cut_frames
from .frame_scratch import SCRATCH_MOST_FRAMES, FrameScratch
from .run_reads import BACK_OFF as _BACK_OFF
from .run_reads import BATCH_CHUNK as _BATCH_CHUNK
from .run_reads import MIN_BATCH as _MIN_BATCH
from .run_reads import RUN_BEFORE_BATCH as _RUN_BEFORE_BATCH
from .run_reads import BadBody, RunReading, RunReads, decrypt_run

__all__ = [
    "FRAME_OVERHEAD",
    "FrameScratch",
    "KEY_ROTATION_INTERVAL",
    "LENGTH_HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "MessageDecryptor",
    "MessageEncryptor",
    "SCRATCH_MOST_FRAMES",
]

#: The length prefix is a u16, so no message can be longer.
MAX_MESSAGE_SIZE: Final = 65535
#: The largest frame a peer may legally send (65569 bytes).
MAX_FRAME_SIZE: Final = MAX_MESSAGE_SIZE + FRAME_OVERHEAD
_pack_length = struct.Struct(">H").pack
# ``encrypt_into`` is recent in cryptography: without it every batch takes encrypt_grouped
_ENCRYPT_INTO: Final = hasattr(ChaCha20Poly1305, "encrypt_into")


class _CipherState:
    """One direction's key, chaining key, nonce, and sticky failure."""

    __slots__ = ("_aead", "_chaining_key", "_failure", "_key", "_nonce")

    def __init__(self, key: bytes, chaining_key: bytes) -> None:
        if len(key) != KEY_SIZE or len(chaining_key) != KEY_SIZE:
            raise ValueError(f"key and chaining key must be {KEY_SIZE} bytes each")
        self._key = bytes(key)
        self._chaining_key = bytes(chaining_key)
        self._aead = ChaCha20Poly1305(self._key)
        self._nonce = 0
        self._failure: NoiseError | None = None

    @property
    def failed(self) -> bool:
        """Whether an earlier error made this object unusable."""
        return self._failure is not None

    def _rotate(self) -> None:
        self._chaining_key, self._key = hkdf_pair(self._chaining_key, self._key)
        self._aead = ChaCha20Poly1305(self._key)
        self._nonce = 0

    def _fail(self, error: NoiseError) -> NoiseError:
        self._failure = error
        return error

    def _failed_again(self) -> NoiseError:
        failure = self._failure
        assert failure is not None
        return type(failure)(f"{type(self).__name__} failed earlier: {failure}")


class MessageEncryptor(_CipherState):
    """Turns messages into frames for one direction of a connection."""

    __slots__ = ()

    def encrypt(self, message: bytes) -> bytes:
        """Return the frame (18-byte encrypted length, then the encrypted message and its MAC).

        Raises ``MessageTooLarge`` for a message over ``MAX_MESSAGE_SIZE`` bytes.
        """
        if self._failure is not None:
            raise self._failed_again()
        size = len(message)
        if size > MAX_MESSAGE_SIZE:
            raise self._fail(MessageTooLarge(f"message of {size} bytes exceeds {MAX_MESSAGE_SIZE}"))
        nonce = self._nonce
        encrypt = self._aead.encrypt
        # The body goes first: if it raises (not bytes-like), no nonce was used.
        body = encrypt(_NONCES[nonce + 1], message, None)
        frame = encrypt(_NONCES[nonce], _pack_length(size), None) + body
        nonce += 2
        if nonce == KEY_ROTATION_INTERVAL:
            self._rotate()
        else:
            self._nonce = nonce
        return frame

    def encrypt_many(self, messages: Iterable[bytes]) -> list[bytes]:
        """Return one frame per message, in order (for transports that keep frames apart).

        All sizes are checked first, so ``MessageTooLarge`` means none was encrypted.
        """
        headers, bodies = self._encrypt_batch(messages)
        return list(map(bytes.__add__, headers, bodies))

    def encrypt_joined(self, messages: Iterable[bytes]) -> bytes:
        """Return the frames of :meth:`encrypt_many` back to back, as one buffer to write.

        For byte-stream transports: the parts of the frames are joined once,
        so no frame is concatenated on its own.
        """
        return b"".join(self._encrypt_parts(messages))

    def encrypt_grouped(self, messages: Iterable[bytes], limit: int) -> list[bytes]:
        """Return the frames of :meth:`encrypt_many` joined in runs of up to ``limit`` bytes.

        For transports that move whole frames, several to one message of at
        most ``limit`` bytes (ZeroMQ): each item is consecutive whole frames
        back to back, as many as fit, so no frame is ever split; a frame over
        ``limit`` on its own is an item by itself. The parts are joined once
        per item, so no frame is concatenated on its own and no Python loop
        turn is spent per frame.
        """
        batch = messages if isinstance(messages, (list, tuple)) else list(messages)
        parts = self._encrypt_parts(batch)
        count = len(batch)
        # where each frame ends in the joined stream: each item's cut found by a C bisect
        ends = list(accumulate(map(FRAME_OVERHEAD.__add__, map(len, batch))))
        if not count or ends[-1] <= limit:
            return [b"".join(parts)] if count else []
        items: list[bytes] = []
        start = 0
        base = 0
        while start < count:
            stop = bisect_right(ends, base + limit, start)
            if stop == start:  # a frame over the limit: alone
                stop = start + 1
            items.append(b"".join(parts[2 * start : 2 * stop]))
            base = ends[stop - 1]
            start = stop
        return items

    def encrypt_grouped_into(self, messages: Sequence[bytes], limit: int, scratch: FrameScratch) -> list[bytes] | list[memoryview]:
        """Return :meth:`encrypt_grouped`'s items, a batch of like messages encrypted into ``scratch``.

        When the batch is :data:`SCRATCH_MOST_FRAMES` or fewer messages of one
        size (a stream of one type), every header and body is encrypted
        straight into its place in ``scratch`` (``encrypt_into`` over views
        kept from batch to batch), so no frame is allocated on its own and
        nothing is joined: the items are views of ``scratch``, valid until
        its next use. For a writer that hands them to a transport which has
        copied them when its send returns (ZeroMQ's). Other batches get
        :meth:`encrypt_grouped`'s items.
        """
        count = len(messages)
        if not 2 <= count <= SCRATCH_MOST_FRAMES or not _ENCRYPT_INTO:
            return self.encrypt_grouped(messages, limit)
        size = len(messages[0])
        frame = size + FRAME_OVERHEAD
        if size > MAX_MESSAGE_SIZE or frame > limit or list(map(len, messages)).count(size) != count:
            return self.encrypt_grouped(messages, limit)
        if self._failure is not None:
            raise self._failed_again()
        heads, bodies = scratch.layout(frame, count)
        length = _pack_length(size)
        done = 0
        while done < count:
            # One key at a time, as in _encrypt_batch (bodies first: see there).
            nonce = self._nonce
            stop = min(count, done + (KEY_ROTATION_INTERVAL - nonce) // 2)
            encrypt_into = self._aead.encrypt_into
            key = self._key  # the headers' key, should the bodies end it
            written: list[int] = []
            try:
                written += map(encrypt_into, _NONCES[nonce + 1 : nonce + 2 * (stop - done) : 2], messages[done:stop], repeat(None), bodies[done:stop])
            finally:
                nonce += 2 * len(written)
                if nonce == KEY_ROTATION_INTERVAL:
                    self._rotate()
                else:
                    self._nonce = nonce
            targets = scratch.head_targets
            if targets is not None:  # libsodium: the same bytes, at less cost per call
                length_headers.seal_headers(key, _NONCES[nonce - 2 * (stop - done) : nonce : 2], length, targets, done)
            else:
                written += map(encrypt_into, _NONCES[nonce - 2 * (stop - done) : nonce : 2], repeat(length, stop - done), repeat(None), heads[done:stop])
            done = stop
        view = scratch.view
        step = (limit // frame) * frame
        total = count * frame
        return [view[start : min(start + step, total)] for start in range(0, total, step)]

    def _encrypt_parts(self, messages: Iterable[bytes]) -> list[bytes]:
        """Encrypt every message; return the frames' parts in stream order (header, body, header, ...)."""
        headers, bodies = self._encrypt_batch(messages)
        parts: list[bytes] = [b""] * (2 * len(bodies))
        parts[0::2] = headers
        parts[1::2] = bodies
        return parts

    def _encrypt_batch(self, messages: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
        """Encrypt every message; return the encrypted length headers and the encrypted bodies.

        The per-message work runs in C iterators (``map``) over the AEAD's
        allocating ``encrypt``: measured here, it beats ``encrypt_into`` views
        of one buffer, whose writable-buffer handling costs more than the
        allocation it saves, and a join is one copy of the batch.
        """
        if self._failure is not None:
            raise self._failed_again()
        batch = messages if isinstance(messages, (list, tuple)) else list(messages)
        sizes = list(map(len, batch))
        largest = max(sizes) if sizes else 0
        if largest > MAX_MESSAGE_SIZE:
            size = next(n for n in sizes if n > MAX_MESSAGE_SIZE)
            raise self._fail(MessageTooLarge(f"message of {size} bytes exceeds {MAX_MESSAGE_SIZE}"))
        # A batch of like messages (a stream of one type) shares one packed length.
        same_length = _pack_length(largest) if sizes and min(sizes) == largest else None
        headers: list[bytes] = []
        bodies: list[bytes] = []
        done = 0
        while done < len(batch):
            # One key at a time: the messages left before the next rotation.
            nonce = self._nonce
            stop = min(len(batch), done + (KEY_ROTATION_INTERVAL - nonce) // 2)
            encrypt = self._aead.encrypt
            # Bodies go first: if one is not bytes-like it raises before using
            # its nonce, and the nonces of the bodies before it are marked used.
            already = len(bodies)
            try:
                bodies += map(encrypt, _NONCES[nonce + 1 : nonce + 2 * (stop - done) : 2], batch[done:stop], repeat(None))
            finally:
                nonce += 2 * (len(bodies) - already)
                if nonce == KEY_ROTATION_INTERVAL:
                    self._rotate()
                else:
                    self._nonce = nonce
            lengths = repeat(same_length, stop - done) if same_length is not None else map(_pack_length, sizes[done:stop])
            headers += map(encrypt, _NONCES[nonce - 2 * (stop - done) : nonce : 2], lengths, repeat(None))
            done = stop
        return headers, bodies


class MessageDecryptor(_CipherState, RunReading):
    """Turns the received byte stream back into messages, whatever the chunking.

    ``max_buffer`` is the largest frame accepted (and so the most bytes ever
    held between calls); the default admits every legal frame, a smaller one
    bounds the memory a peer can make this connection hold.
    """

    __slots__ = ("_begun", "_begun_bytes", "_body_size", "_buffer", "_max_buffer", "_offered", "_run_length", "_run_reads", "_run_size")

    def __init__(self, key: bytes, chaining_key: bytes, max_buffer: int = MAX_FRAME_SIZE) -> None:
        super().__init__(key, chaining_key)
        if max_buffer < FRAME_OVERHEAD:
            raise ValueError(f"max_buffer must be at least {FRAME_OVERHEAD} (an empty message's frame)")
        self._max_buffer = max_buffer
        self._buffer = bytearray()
        # Length of the body whose header was already decrypted, or -1 while
        # waiting for a header (the header's nonce is spent once decrypted).
        self._body_size = -1
        # The size of the last frames and how many in a row had it (see _RUN_BEFORE_BATCH).
        self._run_size = -1
        self._run_length = 0
        # The buffer reads of a run land in (see read_buffer), and how much of it the last one offered.
        self._run_reads: RunReads | None = None
        self._offered = 0
        # Bytes of the next frame that the last read left at the start of that buffer (see
        # feed_read), and their copy while no buffer is held (see release_read_buffer).
        self._begun = 0
        self._begun_bytes = b""

    @property
    def buffered(self) -> int:
        """Received bytes not yet returned as a message (less than one frame)."""
        return len(self._buffer) + self._begun

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next received bytes; return every message they complete, in order.

        Raises ``DecryptError`` if a length or a message fails authentication,
        or a frame is larger than ``max_buffer``.
        """
        if self._begun:
            self._move_begun()  # a frame begun in the kept read buffer goes on here (a bad header fails)
        if self._failure is not None:
            raise self._failed_again()
        if type(data) is not bytes:
            data = bytes(data)
        messages: list[bytes] = []
        position = 0
        buffer = self._buffer
        if buffer:
            # Finish the header or body the last chunk left partial from the
            # head of this one; the rest is parsed in place (no copy of the chunk).
            pending_size = LENGTH_HEADER_SIZE if self._body_size < 0 else self._body_size + MAC_SIZE
            position = pending_size - len(buffer)
            with memoryview(data) as head:
                buffer += head[:position]
            if len(buffer) < pending_size:
                return messages
            # Parsed where it is: a fresh buffer takes any tail, so no large frame is copied again.
            self._buffer = bytearray()
        try:
            if buffer:
                self._parse(buffer, 0, messages)
            self._parse(data, position, messages)
        except DecryptError as exc:
            # The frames before the bad one were authentic: the caller gets them too.
            exc.decoded = messages
            raise
        return messages

    def _parse(self, source: bytes | bytearray, position: int, messages: list[bytes]) -> None:
        """Decrypt every whole frame of ``source`` from ``position``; keep the partial tail.

        Frame by frame; a chunk of at least ``_BATCH_CHUNK`` bytes goes to
        :meth:`_parse_runs` instead, which decrypts runs of frames of one size
        in batches. Smaller chunks do not count runs at all, so they cost no
        more than this loop.
        """
        size = len(source)
        if size - position >= _BATCH_CHUNK:
            return self._parse_runs(source, position, messages)
        append = messages.append
        body_size = self._body_size
        nonce = self._nonce
        decrypt = self._aead.decrypt
        max_body = self._max_buffer - FRAME_OVERHEAD
        try:
            with memoryview(source) as view:
                while True:
                    if body_size < 0:
                        end = position + LENGTH_HEADER_SIZE
                        if end > size:
                            break
                        # a bytes slice of 18 bytes is cheaper to hand over than a memoryview
                        header = decrypt(_NONCES[nonce], source[position:end], None)
                        nonce += 1
                        position = end
                        body_size = (header[0] << 8) | header[1]
                        if body_size > max_body:
                            raise self._fail(
                                DecryptError(f"frame of {body_size + FRAME_OVERHEAD} bytes exceeds {self._max_buffer}")
                            )
                    end = position + body_size + MAC_SIZE
                    if end > size:
                        break
                    append(decrypt(_NONCES[nonce], view[position:end], None))
                    position = end
                    body_size = -1
                    nonce += 1
                    if nonce == KEY_ROTATION_INTERVAL:
                        self._rotate()
                        decrypt = self._aead.decrypt
                        nonce = 0
                if position < size:
                    self._buffer += view[position:]
        except InvalidTag:
            what = "length" if body_size < 0 else "message"
            raise self._fail(DecryptError(f"bad MAC on an encrypted {what}")) from None
        finally:
            # A header decrypted before an error still spent its nonce.
            self._nonce = nonce
            self._body_size = body_size

    def _parse_runs(self, source: bytes | bytearray, position: int, messages: list[bytes]) -> None:
        """:meth:`_parse` for a large chunk: runs of frames of one size go in batches.

        Frame by frame until enough frames in a row had the same size; then the
        frames that follow are assumed to have that size too and decrypted in
        a batch (:meth:`_run_of_frames`), whose per-frame work runs in C
        iterators. A header that fails there (another size, or a bad MAC)
        ends the batch, and the frame-by-frame loop takes that frame again.
        """
        size = len(source)
        append = messages.append
        body_size = self._body_size
        nonce = self._nonce
        decrypt = self._aead.decrypt
        max_body = self._max_buffer - FRAME_OVERHEAD
        last_size = self._run_size
        same = self._run_length  # frames in a row of ``last_size`` (below zero: backing off)
        try:
            with memoryview(source) as view:
                while True:
                    if body_size < 0:
                        if same >= _RUN_BEFORE_BATCH and size - position >= _MIN_BATCH * (last_size + FRAME_OVERHEAD):
                            done, stopped = self._run_of_frames(source, position, nonce, last_size, messages, same)
                            if done:
                                same += done
                                nonce += 2 * done
                                position += done * (last_size + FRAME_OVERHEAD)
                                if nonce == KEY_ROTATION_INTERVAL:
                                    self._rotate()
                                    decrypt = self._aead.decrypt
                                    nonce = 0
                            if stopped:
                                # A frame of another size (or a bad one) is next: back off.
                                same = _BACK_OFF
                            elif done:
                                continue  # the next batch of the run
                        end = position + LENGTH_HEADER_SIZE
                        if end > size:
                            break
                        # a bytes slice of 18 bytes is cheaper to hand over than a memoryview
                        header = decrypt(_NONCES[nonce], source[position:end], None)
                        nonce += 1
                        position = end
                        body_size = (header[0] << 8) | header[1]
                        if body_size > max_body:
                            raise self._fail(
                                DecryptError(f"frame of {body_size + FRAME_OVERHEAD} bytes exceeds {self._max_buffer}")
                            )
                    end = position + body_size + MAC_SIZE
                    if end > size:
                        break
                    append(decrypt(_NONCES[nonce], view[position:end], None))
                    position = end
                    if body_size == last_size or same < 0:
                        same += 1  # while backing off, every frame counts whatever its size
                    else:
                        same = 1
                    last_size = body_size
                    body_size = -1
                    nonce += 1
                    if nonce == KEY_ROTATION_INTERVAL:
                        self._rotate()
                        decrypt = self._aead.decrypt
                        nonce = 0
                if position < size:
                    self._buffer += view[position:]
        except BadBody as bad:
            # A batch's body failed: its header (checked) spent a nonce, as in the loop.
            nonce += 2 * bad.done + 1
            body_size = last_size
            raise self._fail(DecryptError("bad MAC on an encrypted message")) from None
        except InvalidTag:
            what = "length" if body_size < 0 else "message"
            raise self._fail(DecryptError(f"bad MAC on an encrypted {what}")) from None
        finally:
            # A header decrypted before an error still spent its nonce.
            self._nonce = nonce
            self._body_size = body_size
            self._run_size = last_size
            self._run_length = same

    def _run_of_frames(
        self,
        source: bytes | bytearray,
        position: int,
        nonce: int,
        body_size: int,
        messages: list[bytes],
        most: int,
    ) -> tuple[int, bool]:
        """Decrypt the frames from ``position`` that have ``body_size``.

        Returns how many, and whether a frame stopped the batch early. Every
        whole frame that fits (up to the key's last nonce, and ``most``) is
        assumed to have this size, cut out of ``source`` with a few
        ``struct`` unpacks (:func:`_cut_frames`) and decrypted by
        :func:`~.run_reads.decrypt_run` (headers first; raises ``BadBody``).
        """
        step = body_size + FRAME_OVERHEAD
        count = min((len(source) - position) // step, (KEY_ROTATION_INTERVAL - nonce) // 2, most)
        if count <= 0:
            return 0, False
        parts = _cut_frames(source, position, body_size, count)
        done = decrypt_run(self._aead, self._key, nonce, body_size, parts[0::2], parts[1::2], messages)
        return done, done < count
