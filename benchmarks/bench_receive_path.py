"""The receive path without sockets: CPU µs per 1 KiB message, next to its two bare decrypts.

A prepared stream of BOLT-8 frames (an ``init``, then 20,000 custom
messages of 1 KiB, as one sender would write them), cut in 128 KiB chunks
as the node reads them, goes through ``MessageDecryptor.feed`` and then
``PeerSession.receive_messages`` (the custom type as an unknown odd type:
an ``UnknownMessage`` each; or as a batch type an app takes in runs: one
``RunReceived`` per read); then with each read's copy as the node makes
it: a fresh bytes per 128 KiB read for ``feed``, or, once a run is known,
a read into the decryptor's kept buffer for ``feed_read``; the limit is the same ChaCha20-Poly1305
decrypts alone (two calls per message, the frames already cut apart).
Everything is CPU time in this process, so it holds still on a loaded
machine far better than the two-process figures of ``bench_bolt8.py``; the
rounds interleave the three measurements and the table gives their median
and lowest round.

Usage: ``python benchmarks/bench_receive_path.py [--rounds N] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

from bolt8_receiving import raw_decrypt  # benchmarks/ is the script's directory

from lnpmsg.node.session import PeerSession
from lnpmsg.noise import MessageDecryptor, MessageEncryptor
from lnpmsg.noise.run_reads import BATCH_CHUNK
from lnpmsg.wire import Init

COUNT = 20_000
SIZE = 1024
CHUNK = 128 * 1024
CUSTOM = 32769


def two_decrypts() -> float:
    """CPU µs per message of the two bare decrypts (header, then body) of one frame (``bench_bolt8``'s limit)."""
    return 1e6 / raw_decrypt(COUNT, SIZE)


def receive(key: bytes, chaining_key: bytes, chunks: list[bytes], with_session: bool, batch_type: bool = False) -> float:
    """CPU µs per message of ``feed`` (and the session, if asked, with the custom type as a batch type or not) over the prepared chunks."""
    decryptor = MessageDecryptor(key, chaining_key)
    session = PeerSession(Init(), 0.0, batch_types={CUSTOM} if batch_type else frozenset())
    received = 0
    start = time.process_time()
    for chunk in chunks:
        messages = decryptor.feed(chunk)
        if with_session:
            session.receive_messages(messages, 1.0)
        received += len(messages)
    elapsed = time.process_time() - start
    assert received == COUNT + 1
    return elapsed / COUNT * 1e6


def receive_reads(key: bytes, chaining_key: bytes, stream: bytes, kept: bool, short: bool = False) -> float:
    """CPU µs per message of the decryptor and the session (the type taken in runs) over reads as the node makes them.

    Each read copies its bytes as the kernel does: into a fresh bytes (a
    ``recv``, fed to ``feed``), or with ``kept`` into the decryptor's kept
    buffer when it offers one (a ``recv_into``, then ``feed_read``). With
    ``short`` the reads into the kept buffer end anywhere, taking 25-100% of
    it (the same sizes each time), as those of a reader that keeps up with
    its peer do.
    """
    decryptor = MessageDecryptor(key, chaining_key)
    session = PeerSession(Init(), 0.0, batch_types={CUSTOM})
    view = memoryview(stream)
    received = position = 0
    rng = random.Random(1)
    parts = iter([rng.uniform(0.25, 1.0) for _ in range(len(stream) // BATCH_CHUNK + 1)])
    start = time.process_time()
    while position < len(stream):
        buffer = decryptor.read_buffer(CHUNK) if kept else None
        if buffer is not None:
            size = min(int(len(buffer) * next(parts)) if short else len(buffer), len(stream) - position)
            buffer[:size] = view[position : position + size]
            messages = decryptor.feed_read(size)
        else:
            size = decryptor.read_size(CHUNK) if kept else CHUNK
            messages = decryptor.feed(bytes(view[position : position + size]))
        position += size
        session.receive_messages(messages, 1.0)
        received += len(messages)
    elapsed = time.process_time() - start
    assert received == COUNT + 1
    return elapsed / COUNT * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    key, chaining_key = os.urandom(32), os.urandom(32)
    message = CUSTOM.to_bytes(2, "big") + bytes(SIZE - 2)
    stream = MessageEncryptor(key, chaining_key).encrypt_joined([Init().encode()] + [message] * COUNT)
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    rounds: dict[str, list[float]] = {
        "two decrypts (limit)": [],
        "feed": [],
        "feed + session": [],
        "feed + session, a batch type": [],
        "reads copied to bytes, feed + session, a batch type": [],
        "reads into the kept buffer, feed_read + session, a batch type": [],
        "reads into the kept buffer that end anywhere (25-100% of it), a batch type": [],
    }
    for _ in range(args.rounds):
        rounds["two decrypts (limit)"].append(two_decrypts())
        rounds["feed"].append(receive(key, chaining_key, chunks, with_session=False))
        rounds["feed + session"].append(receive(key, chaining_key, chunks, with_session=True))
        rounds["feed + session, a batch type"].append(receive(key, chaining_key, chunks, with_session=True, batch_type=True))
        rounds["reads copied to bytes, feed + session, a batch type"].append(receive_reads(key, chaining_key, stream, kept=False))
        rounds["reads into the kept buffer, feed_read + session, a batch type"].append(receive_reads(key, chaining_key, stream, kept=True))
        rounds["reads into the kept buffer that end anywhere (25-100% of it), a batch type"].append(
            receive_reads(key, chaining_key, stream, kept=True, short=True)
        )
    results = {name: {"median": statistics.median(values), "lowest": min(values)} for name, values in rounds.items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.rounds} interleaved rounds, CPU µs per 1 KiB message\n")
    print("| path | median | lowest round |")
    print("| --- | ---: | ---: |")
    for name, figures in results.items():
        print(f"| {name} | {figures['median']:.2f} | {figures['lowest']:.2f} |")


if __name__ == "__main__":
    main()
