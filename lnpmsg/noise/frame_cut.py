"""Cutting a run of BOLT-8 frames of one size out of a received chunk (see
:meth:`lnpmsg.noise.cipher.MessageDecryptor.feed`)."""

from __future__ import annotations

import struct
from typing import Final

from ._primitives import FRAME_OVERHEAD, LENGTH_HEADER_SIZE, MAC_SIZE

__all__ = ["cut_frames"]

# Frames cut by one ``struct`` unpack, at most: a larger run takes several, so the
# formats stay small (~65 bytes of the compiled format per frame).
_CUT_MOST: Final = 64
# Compiled formats kept, by (body size, frames): one size needs at most 19 (64, 48, 32,
# 16 and 1-15 frames); past this many (traffic of many sizes) the cache starts again.
_CUT_CACHE_SIZE: Final = 64
_cutters: dict[tuple[int, int], struct.Struct] = {}


def cut_frames(source: bytes | bytearray, position: int, body_size: int, count: int) -> list[bytes]:
    """The encrypted headers and bodies of ``count`` frames of ``body_size`` from ``position``, alternating.

    Cut by ``struct`` unpacks of ``header body header body ...`` formats: each
    gives every part of up to 64 frames as bytes in one C call, about four
    times cheaper than a slice per part (bytes for the headers, memoryviews
    for the bodies), and the AEAD takes the bodies faster as bytes than as
    memoryviews.
    """
    parts: list[bytes] = []
    step = body_size + FRAME_OVERHEAD
    while count:
        # 64 frames a piece, then 48, 32 or 16, then the rest: few formats per size.
        piece = _CUT_MOST if count >= _CUT_MOST else (count & ~15 or count)
        cutter = _cutters.get((body_size, piece))
        if cutter is None:
            if len(_cutters) >= _CUT_CACHE_SIZE:
                _cutters.clear()
            cutter = _cutters[body_size, piece] = struct.Struct(f"<{f'{LENGTH_HEADER_SIZE}s{body_size + MAC_SIZE}s' * piece}")
        parts += cutter.unpack_from(source, position)
        position += piece * step
        count -= piece
    return parts
