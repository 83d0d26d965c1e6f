"""The receiving half of ``bench_bolt8.py``: a node receiving in a second process, fed
by a lean sender, against one core's AEAD decrypt of the same frames measured in
slices between its reads; and the decrypt limit itself (``raw_decrypt``, which
``bench_receive_path.py`` uses too). ``--receiving-only`` runs the 1 KiB figure alone.
"""

from __future__ import annotations

import os
import resource
import struct
import threading
import time
from collections import deque
from itertools import repeat

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.noise import length_headers

#: the custom message type of the benchmarks' traffic
CUSTOM = 32769

#: runs an iterator to its end in C, keeping nothing
drain = deque(maxlen=0).extend


def open_headers(aead: ChaCha20Poly1305, key: bytes, nonces: list[bytes], headers: list[bytes], expected: bytes) -> None:
    """Open a run of length headers the cheapest way the node has: libsodium's batch when it is
    there (``lnpmsg.noise.length_headers``, which the node's reader uses), else one
    ``cryptography`` call each."""
    if length_headers.AVAILABLE:
        if length_headers.open_headers(key, nonces, headers, expected) != len(headers):
            raise AssertionError("a length header did not open")
    else:
        drain(map(aead.decrypt, nonces, headers, repeat(None)))


def raw_decrypt(count: int, size: int) -> float:
    """Messages per CPU-second of one core's AEAD decrypt of BOLT-8 frames of ``size`` (the limit).

    The same frames the node receives, already cut apart: per message, the
    length header's and the body's ChaCha20-Poly1305 decrypt, nothing else
    (no slicing, no parsing, no socket). Bodies straight on
    ``cryptography``; headers in runs of 500 as the node's reader opens
    them (:func:`open_headers`: libsodium when it is there), so the limit
    is never dearer than the node's own path.
    """
    key = os.urandom(32)
    aead = ChaCha20Poly1305(key)
    nonces = [struct.pack("<4xQ", i) for i in range(1000)]
    header_nonces, body_nonces = nonces[0::2], nonces[1::2]
    header = struct.pack(">H", size)
    headers = [aead.encrypt(n, header, None) for n in header_nonces]
    bodies = [aead.encrypt(n, bytes(size), None) for n in body_nonces]
    decrypt = aead.decrypt
    done = 0
    start = time.process_time()
    while done < count:
        batch = min(500, count - done)
        open_headers(aead, key, header_nonces[:batch], headers[:batch], header)
        drain(map(decrypt, body_nonces[:batch], bodies, repeat(None)))  # a C loop, as the node's batches
        done += batch
    return count / (time.process_time() - start)


class _LimitSlices:
    """The decrypt limit measured in slices between the receiving node's reads, in its process.

    The host's speed moves by tens of percent within seconds (other
    tenants of the machine), so a limit measured before and after the node
    (as this script did until Dec 6 2026) compares the node with other
    seconds than its own: single rounds gave 51-90% for the same code. A
    slice every :attr:`stride` messages the node received (from its
    handler, between two reads) decrypts a full read's worth of frames
    (128 KiB) as :func:`raw_decrypt` does, on the same core, in the same
    seconds, with the lean sender on the other core as during the node's
    reads. Each slice runs twice and the second pass is timed: its frames
    are then in the cache, as the node's are after the kernel copied them
    in (a copy the node pays for in its own CPU time); the first pass,
    after the node's work moved them out, costs ~4% more. All of a slice's
    CPU time (both passes) is taken off the node's.
    """

    def __init__(self, size: int) -> None:
        self.frames = max(1, (128 * 1024) // (size + 18))
        #: messages the node receives between two slices (the slices add ~12% to the process's work)
        self.stride = 16 * self.frames
        self._key = os.urandom(32)
        self._aead = ChaCha20Poly1305(self._key)
        nonces = [struct.pack("<4xQ", i) for i in range(2 * self.frames)]
        self._header_nonces, self._body_nonces = nonces[0::2], nonces[1::2]
        self._header = struct.pack(">H", size)
        self._headers = [self._aead.encrypt(n, self._header, None) for n in self._header_nonces]
        self._bodies = [self._aead.encrypt(n, bytes(size), None) for n in self._body_nonces]
        #: CPU seconds of the timed passes and the messages they decrypted (the limit)
        self.seconds = 0.0
        self.messages = 0
        #: CPU seconds of all passes (to take off the node's)
        self.spent = 0.0

    def run(self) -> None:
        """One slice: a pass to bring the frames into the cache, then a timed one."""
        start = time.process_time()
        self._decrypt()
        middle = time.process_time()
        self._decrypt()
        end = time.process_time()
        self.seconds += end - middle
        self.spent += end - start
        self.messages += self.frames

    def _decrypt(self) -> None:
        open_headers(self._aead, self._key, self._header_nonces, self._headers, self._header)
        drain(map(self._aead.decrypt, self._body_nonces, self._bodies, repeat(None)))


def _receiving_node(count: int, size: int, per_message: bool, queue) -> None:  # type: ignore[no-untyped-def]
    """Child process: a node that receives ``count`` messages.

    The receiving app takes the messages' type in runs (a batch handler, as
    an app taking a stream of small messages would), or with
    ``per_message`` one call per decoded message (a node-level handler).
    Reports its messages per CPU-second (its user and system time apart)
    and per second (from the first call to the last, over the messages
    after the first call's), the decrypt limit measured in slices between
    its reads (:class:`_LimitSlices`), so the node and its limit share the
    same seconds of a shared machine, and its context switches meanwhile:
    voluntary ones mean it waited for data (the sender fell behind, and
    smaller reads cost more per message), involuntary ones that other
    processes took its core.
    """
    from lnpmsg.app import App

    async def run() -> None:
        node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]))
        received = 0
        marks: list[tuple[int, resource.struct_rusage, float]] = []
        done = trio.Event()
        limit = _LimitSlices(size)
        next_slice = 0

        def arrived(n: int) -> None:
            nonlocal received, next_slice
            if not marks:
                marks.append((received + n, resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()))
                next_slice = received + n + limit.stride
            received += n
            if received >= next_slice and received < count:
                limit.run()
                next_slice += limit.stride
            if received == count:
                marks.append((received, resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()))
                done.set()

        def on_message(peer, message) -> None:  # type: ignore[no-untyped-def]
            arrived(1)

        def on_messages(peer, messages: list[bytes]) -> None:  # type: ignore[no-untyped-def]
            arrived(len(messages))

        if per_message:
            # A plain function: the figure is the stack's, not an app's.
            node.add_handler(CUSTOM, on_message)
        else:
            receiver = App("receiver")
            # Never blocks: no timeout scope per call (``guard=False``, as documented).
            receiver.add_batch_handler(CUSTOM, on_messages, guard=False)
            node.mount(receiver)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            queue.put((node.node_id.hex(), node.listen_addresses[0]))
            await done.wait()
            (first, usage0, wall0), (last, usage1, wall1) = marks
            messages = last - first
            # the slices ran as user time: theirs is taken off the node's
            user = usage1.ru_utime - usage0.ru_utime - limit.spent
            system = usage1.ru_stime - usage0.ru_stime
            switches = (usage1.ru_nvcsw - usage0.ru_nvcsw, usage1.ru_nivcsw - usage0.ru_nivcsw)
            queue.put(
                (
                    messages / (user + system),
                    messages / (wall1 - wall0 - limit.spent),
                    limit.messages / limit.seconds,
                    switches,
                    (user / messages, system / messages),
                )
            )
            node.stop()

    trio.run(run)


#: bytes of frames the lean sender encrypts before its first write (the default 1 KiB run's 200,000 take ~210 MB)
_PREPARED_MOST = 256 * 1024 * 1024


def _lean_sender(address: str, node_id: bytes, count: int, size: int) -> None:
    """A load generator, not a node: handshake, an ``init``, then frames encrypted in batches and written.

    The frames are encrypted before the first is written (up to
    :data:`_PREPARED_MOST` bytes): its work per message is then a share of one
    write, far less than the receiving node's, so the node is the one that
    sets the pace and is measured taking a full stream.
    """
    import socket

    from lnpmsg.testing.rawpeer import dial_blocking
    from lnpmsg.wire import Init

    sock, cipher = dial_blocking(address, node_id)
    with sock:
        encryptor = cipher.encryptor
        sock.sendall(encryptor.encrypt_joined([Init().encode()]))
        batch = [CUSTOM.to_bytes(2, "big") + bytes(size - 2)] * max(1, (128 * 1024) // size)
        # The frames are encrypted before the first is written (up to _PREPARED_MOST bytes of
        # them), while the node waits unmeasured: a sender that encrypts as it writes is
        # barely faster than the node, which then often finds its socket empty and pays for
        # waits and short reads that a node taking a faster stream does not.
        writes: deque[bytes] = deque()
        prepared = sent = 0
        while sent < count and prepared < _PREPARED_MOST:
            part = batch if count - sent >= len(batch) else batch[: count - sent]
            writes.append(encryptor.encrypt_joined(part))
            prepared += len(writes[-1])
            sent += len(part)
        while writes:
            sock.sendall(writes.popleft())
        while sent < count:
            part = batch if count - sent >= len(batch) else batch[: count - sent]
            sock.sendall(encryptor.encrypt_joined(part))
            sent += len(part)
        # Closing with the node's init unread would reset the connection and drop
        # what the node has not read yet: say we are done, then wait for its close.
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def lnpmsg_throughput_two_processes(
    count: int, size: int, per_message: bool = False
) -> tuple[float, float, float, tuple[int, int], tuple[float, float]]:
    """The receiving node in a second process, fed by a lean sender here (each on its own core).

    Returns (the node's messages/s, its messages per CPU-second, the decrypt
    limit per CPU-second measured in the node's process between its reads,
    its voluntary and involuntary context switches while receiving, its user
    and system CPU seconds per message). The receiving app takes the
    messages in runs, or one call each with ``per_message``.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    to_child, from_child = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_receiving_node, args=(count, size, per_message, _Duplex(from_child, to_child)))
    child.start()
    node_id, address = _from_child(from_child, child)
    sender = threading.Thread(target=_lean_sender, args=(address, bytes.fromhex(node_id), count, size))
    sender.start()
    per_cpu_second, per_second, limit, switches, split = _from_child(from_child, child)
    sender.join()
    child.join()
    return per_second, per_cpu_second, limit, switches, split


class _Duplex:
    """A pair of queues seen from the child: ``put`` goes to the parent, ``get`` comes from it."""

    def __init__(self, outgoing, incoming) -> None:  # type: ignore[no-untyped-def]
        self.put = outgoing.put
        self.get = incoming.get


def _from_child(queue, child):  # type: ignore[no-untyped-def]
    """The child's next report; RuntimeError if the child exits without one (its traceback is
    on stderr above), instead of waiting for ever."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=1.0)
        except queues.Empty:
            if not child.is_alive():
                raise RuntimeError(f"the receiving node's process exited (code {child.exitcode}) before it reported") from None
