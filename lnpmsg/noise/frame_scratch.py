"""A buffer a writer keeps for encrypting batches of like frames in place (see
:meth:`~lnpmsg.noise.cipher.MessageEncryptor.encrypt_grouped_into`)."""

from __future__ import annotations

from typing import Final

from . import length_headers
from ._primitives import LENGTH_HEADER_SIZE

__all__ = ["SCRATCH_MOST_FRAMES", "FrameScratch"]

#: a batch of more frames than this is encrypted as separate frames, not into a
#: FrameScratch: its views (two per frame, ~200 bytes each) would outweigh the
#: allocations they save (a writer's batch of 1 KiB messages is 122 frames)
SCRATCH_MOST_FRAMES: Final = 256


class FrameScratch:
    """A buffer that batches of frames of one size are encrypted into, kept from batch to batch.

    :meth:`MessageEncryptor.encrypt_grouped_into` writes each header and body
    through a view of its place here; the views are made once per frame size
    (and when a batch has more frames than the last one), not per batch. A
    larger batch gets a new buffer, never a resized one: views of the old one
    may still be alive.
    """

    __slots__ = ("_bodies", "_frame", "_heads", "head_targets", "view")

    def __init__(self) -> None:
        #: the whole buffer (the items are slices of it)
        self.view = memoryview(b"")
        self._frame = 0
        self._heads: list[memoryview] = []
        self._bodies: list[memoryview] = []
        #: where libsodium seals the headers (None without it, see :mod:`.length_headers`)
        self.head_targets: length_headers.HeaderTargets | None = None

    def layout(self, frame: int, count: int) -> tuple[list[memoryview], list[memoryview]]:
        """The views of the headers and of the bodies of (at least) ``count`` frames of ``frame`` bytes."""
        if frame != self._frame or count > len(self._heads):
            buffer = bytearray(frame * count)
            view = self.view = memoryview(buffer)
            starts = range(0, frame * count, frame)
            self._heads = [view[start : start + LENGTH_HEADER_SIZE] for start in starts]
            self._bodies = [view[start + LENGTH_HEADER_SIZE : start + frame] for start in starts]
            self._frame = frame
            self.head_targets = length_headers.HeaderTargets(buffer, frame, count) if length_headers.AVAILABLE else None
        return self._heads, self._bodies
