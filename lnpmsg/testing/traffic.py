"""Numbered messages of random sizes, and their checker: what the
conformance suite sends through nodes to catch loss, duplication,
reordering, truncation and corruption.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Iterator

import trio

from lnpmsg.node.peer import Peer
from lnpmsg.noise import MAX_MESSAGE_SIZE
from lnpmsg.wire import Message, UnknownMessage

__all__ = ["MESSAGE_TYPE", "ConformanceFailure", "Traffic"]

#: the custom message type the checks send: odd (so a node without a handler
#: ignores it, BOLT 1's "it's OK to be odd") and in the custom range
MESSAGE_TYPE = 0xB5A1
#: type (2 bytes), stream number (2), sequence number (4): the smallest message
_HEADER = struct.Struct(">HHI")
#: the random bytes messages are cut from; twice the largest body so any
#: offset below 64 KiB leaves room for a whole body
_PAD_SIZE = 2 * 65536


class ConformanceFailure(AssertionError):
    """A medium failed a conformance check (the message says which and how)."""


def _require(condition: object, what: str) -> None:
    if not condition:
        raise ConformanceFailure(what)


class Traffic:
    """Numbered messages of random sizes on independent streams, and their checker.

    Stream ``s`` carries messages ``0, 1, 2, ...``; message sizes follow a
    generator seeded by ``(seed, s)``, starting with the largest (65,535
    bytes) and the smallest (8), then uniform in between. The receiving side
    (:meth:`handler`) regenerates each expected message and compares, so the
    sender and the receiver share nothing but the seed.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._pad = random.Random(seed).randbytes(_PAD_SIZE)
        self._expected_sizes: dict[int, Iterator[int]] = {}
        #: messages received in order so far, per stream
        self.received: Counter[int] = Counter()
        #: payload bytes received, over all streams
        self.bytes_received = 0
        #: what went wrong (the first few problems)
        self.errors: list[str] = []
        #: which peer each stream came from
        self.senders: dict[int, bytes] = {}
        self._changed = trio.Event()

    def sizes(self, stream: int) -> Iterator[int]:
        """The sizes of stream ``stream``'s messages, in order (endless)."""
        rng = random.Random(f"{self.seed}/{stream}")
        yield MAX_MESSAGE_SIZE
        yield _HEADER.size
        while True:
            yield rng.randint(_HEADER.size, MAX_MESSAGE_SIZE)

    def message(self, stream: int, seq: int, size: int) -> bytes:
        """Message ``seq`` of ``stream``, ``size`` bytes long (type included)."""
        offset = (seq * 7919 + stream * 104729) % 65536
        return _HEADER.pack(MESSAGE_TYPE, stream, seq) + self._pad[offset : offset + size - _HEADER.size]

    def messages(self, stream: int, count: int) -> Iterator[bytes]:
        """The first ``count`` messages of ``stream``."""
        for seq, size in zip(range(count), self.sizes(stream), strict=False):
            yield self.message(stream, seq, size)

    async def send(self, peer: Peer, stream: int, count: int) -> None:
        """Send ``count`` messages of ``stream`` to ``peer``, waiting whenever its queue is full."""
        for data in self.messages(stream, count):
            await peer.send(data)

    def handler(self, peer: Peer, message: Message) -> None:
        """A node handler for :data:`MESSAGE_TYPE`: checks each message against the expected one."""
        assert isinstance(message, UnknownMessage)
        payload = message.payload
        if len(payload) < _HEADER.size - 2:
            self._error(f"message of {len(payload) + 2} bytes is shorter than its header")
            return
        stream, seq = struct.unpack_from(">HI", payload)
        sender = self.senders.setdefault(stream, peer.node_id)
        if sender != peer.node_id:
            self._error(f"stream {stream} came from two peers")
        expected_seq = self.received[stream]
        if seq != expected_seq:
            self._error(f"stream {stream}: got message {seq}, expected {expected_seq}")
            return
        sizes = self._expected_sizes.get(stream)
        if sizes is None:
            sizes = self._expected_sizes[stream] = self.sizes(stream)
        expected = self.message(stream, seq, next(sizes))
        if len(payload) + 2 != len(expected) or payload != expected[2:]:
            self._error(f"stream {stream}: message {seq} differs ({len(payload) + 2} bytes, expected {len(expected)})")
            return
        self.received[stream] = seq + 1
        self.bytes_received += len(payload) + 2
        self._changed.set()

    def _error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)
        self._changed.set()

    def check(self) -> None:
        """Raise :class:`ConformanceFailure` if any message arrived wrong."""
        _require(not self.errors, "messages arrived damaged or out of order: " + "; ".join(self.errors))

    async def wait_for(self, counts: dict[int, int]) -> None:
        """Wait until every stream in ``counts`` has delivered that many messages (or fail at once on an error)."""
        while True:
            self.check()
            if all(self.received[s] >= n for s, n in counts.items()):
                return
            self._changed = trio.Event()
            await self._changed.wait()
