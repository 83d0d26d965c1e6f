"""A signature worker process: packed checks in, verdicts out (``python -m lnpmsg.gossip.verify_worker``).

The parent (:class:`lnpmsg.gossip.pipeline.VerifyPool`) writes frames to
this process's stdin and reads the answers from its stdout, one frame at a
time: a 4-byte big-endian length, then the body. A request body is a blob of
:data:`RECORD_SIZE`-byte records (a cache flag, the 32-byte digest, the
64-byte compact signature, the 33-byte key); the answer holds one byte per
record (1: the signature holds). End of stdin ends the process.

Started as its own interpreter (not ``multiprocessing``): nothing of the
parent's main module runs again here, and it imports only the sans-IO
signature code.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
from typing import BinaryIO

from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
from coincurve.context import GLOBAL_CONTEXT

from lnpmsg.gossip.verify import SignatureVerifier

__all__ = ["MAX_FRAME", "RECORD_SIZE", "read_frame", "serve", "take_frame", "verify_blob", "write_frame"]

#: cache flag (1) + digest (32) + compact signature (64) + compressed key (33)
RECORD_SIZE = 1 + 32 + 64 + 33
#: the largest frame either side accepts (a batch is far smaller)
MAX_FRAME = 64 * 1024 * 1024
_LENGTH = struct.Struct(">I")
_RECORD = struct.Struct("B32s64s33s")
if _RECORD.size != RECORD_SIZE:
    raise ImportError("the record layout and RECORD_SIZE disagree")


def verify_blob(verifier: SignatureVerifier, blob: bytes) -> bytes:
    """The verdicts (one byte each) of a blob of packed checks.

    The same libsecp256k1 calls as :meth:`SignatureVerifier.verify_many`, straight
    from the records (no per-check objects)."""
    if len(blob) % RECORD_SIZE:
        raise ValueError(f"a blob of checks is {len(blob)} bytes, not a multiple of {RECORD_SIZE}")
    # This loop is the workers' whole Python cost per signature (benchmarks/gossip_offline.py
    # --verify-processes times it): the record's fields come out of one C call (iter_unpack, not three
    # slices), a cached key is one dict lookup, and a key not to keep (a bitcoin key, seen
    # once) is parsed into one reused struct instead of a new one each time.
    sig = ffi.new("secp256k1_ecdsa_signature *")
    scratch = ffi.new("secp256k1_pubkey *")
    parse_sig = lib.secp256k1_ecdsa_signature_parse_compact
    parse_key = lib.secp256k1_ec_pubkey_parse
    verify = lib.secp256k1_ecdsa_verify
    cached = verifier.cached_key
    public_key = verifier.public_key
    ctx = GLOBAL_CONTEXT.ctx
    out = bytearray(len(blob) // RECORD_SIZE)
    n = 0
    for cache, digest, signature, key in _RECORD.iter_unpack(blob):
        parsed = cached(key)
        if parsed is None:
            if cache == 1:
                parsed = public_key(key)
            elif parse_key(ctx, scratch, key, 33) == 1:
                parsed = scratch
        if parsed is not None and parse_sig(ctx, sig, signature) == 1 and verify(ctx, sig, digest, parsed) == 1:
            out[n] = 1
        n += 1
    verifier.checked += n
    return bytes(out)


def _body_size(header: bytes | bytearray) -> int:
    """The body size a frame's header (its first bytes) gives; over MAX_FRAME raises ValueError."""
    (size,) = _LENGTH.unpack_from(header)
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes (at most {MAX_FRAME})")
    return size


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's body, or None at a clean end of stream; a torn frame raises EOFError."""
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        raise EOFError("stream ended inside a frame header")
    size = _body_size(head)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError(f"stream ended inside a frame ({len(body)} of {size} bytes)")
    return body


def take_frame(buffer: bytearray) -> bytes | None:
    """The body of the whole frame at the front of ``buffer``, taken off it, or None
    while ``buffer`` holds no whole frame (for a reader of a non-blocking stream)."""
    if len(buffer) < _LENGTH.size:
        return None
    end = _LENGTH.size + _body_size(buffer)
    if len(buffer) < end:
        return None
    body = bytes(buffer[_LENGTH.size : end])
    del buffer[:end]
    return body


def write_frame(stream: BinaryIO, body: bytes) -> None:
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer frames until ``requests`` ends."""
    verifier = SignatureVerifier()
    while (blob := read_frame(requests)) is not None:
        write_frame(answers, verify_blob(verifier, blob))


def main() -> None:
    """The worker's entry point: serve stdin, and end quietly when the parent has gone.

    A parent that closes its end of our stdout (a pool closing with a batch on
    its way) has no use for the answer: that is no error to print on the
    node's stderr.
    """
    # Ctrl-C is the parent's to handle: it closes our stdin when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        # Python would flush stdout again at exit and print the same error there.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
