"""The handshake half of ``bench_bolt8.py``: the responder's crypto limit and the
node's handshakes (sans-IO, over loopback TCP in one process and from a
load generator in a second process, pyln-proto's). ``bench_bolt8.py`` runs
them in its rounds; ``--handshakes-only`` runs the accepting node's figure
alone against the limit.
"""

from __future__ import annotations

import hashlib
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import handshake_as_initiator
from lnpmsg.noise import ACT_TWO_SIZE, InitiatorHandshake, ResponderHandshake
from lnpmsg.noise.cipher import MessageEncryptor
from lnpmsg.transports.tcp import TcpTransport


def cpu_seconds() -> float:
    """This process's CPU time (user and system), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ResponderCrypto:
    """The least BOLT 8 makes a responder compute per handshake, straight on the libraries
    (coincurve, cryptography, hashlib), no lnpmsg code: the limit for accepting on one core.

    Per handshake: parse the initiator's ephemeral key and ECDH it with the
    static key (act one), draw an ephemeral secret and derive its public key
    (one scalar multiplication: ``coincurve.PrivateKey()`` would also derive
    an x-only key nobody needs), ECDH it with the initiator's key (act two),
    ECDH it with the initiator's static key (act three); three HKDFs (two
    HMAC-SHA256 each, over ``hashlib`` with the padded key states shared by
    the expand steps, as the node does) and the final split; the SHA-256
    mixes of the transcript; one ChaCha20-Poly1305 key set-up per handshake
    key and the four AEAD operations (empty payloads and the 33-byte static
    key; encryptions stand in for decryptions of the same size, which cost
    the same). The hash of the responder's static key into the transcript
    is the same for every handshake, so it is not counted.
    """

    def __init__(self) -> None:
        import coincurve
        from coincurve.utils import get_valid_secret

        self._new_key = coincurve.PrivateKey.__new__
        self._key_class = coincurve.PrivateKey
        self._get_valid_secret = get_valid_secret
        self._from_valid_secret = coincurve.PublicKey.from_valid_secret
        self._static = coincurve.PrivateKey()
        self._keys = [coincurve.PrivateKey().public_key.format() for _ in range(64)]
        self._ck = os.urandom(32)
        self._h0 = hashlib.sha256(self._ck).digest()
        self._done = 0

    def run(self, count: int) -> None:
        """Do ``count`` responders' cryptography."""
        static, keys, ck, h0 = self._static, self._keys, self._ck, self._h0
        nonce = bytes(12)
        new_key, key_class = self._new_key, self._key_class
        get_valid_secret, from_valid_secret = self._get_valid_secret, self._from_valid_secret
        sha256 = hashlib.sha256
        hkdf = _hkdf
        first = self._done
        for i in range(first, first + count):
            initiator_ephemeral = keys[i % 64]
            initiator_static = keys[(i + 1) % 64]
            # act one: mix re, ECDH(s, re), HKDF, check the tag
            h = sha256(h0 + initiator_ephemeral).digest()
            key = hkdf(ck, static.ecdh(initiator_ephemeral))
            tag = ChaCha20Poly1305(key).encrypt(nonce, b"", h)
            h = sha256(h + tag).digest()
            # act two: a fresh ephemeral key, ECDH(e, re), HKDF, a tag
            ephemeral = new_key(key_class)
            ephemeral.secret, ephemeral.context = get_valid_secret(), static.context
            h = sha256(h + from_valid_secret(ephemeral.secret).format()).digest()
            aead = ChaCha20Poly1305(hkdf(ck, ephemeral.ecdh(initiator_ephemeral)))
            tag = aead.encrypt(nonce, b"", h)
            h = sha256(h + tag).digest()
            # act three: decrypt rs (same key), ECDH(e, rs), HKDF, check the tag, split
            sealed = aead.encrypt(nonce, initiator_static, h)
            h = sha256(h + sealed).digest()
            key = hkdf(ck, ephemeral.ecdh(initiator_static))
            ChaCha20Poly1305(key).encrypt(nonce, b"", h)
            hkdf(ck, b"")
        self._done = first + count


_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


def _hkdf(salt: bytes, ikm: bytes) -> bytes:
    """BOLT 8's HKDF (first output only is returned; both are computed).

    HMAC-SHA256 (RFC 2104) with each key's padded SHA-256 states made once and
    copied for the second expand step: the cheapest form measured here (about
    half of three ``hmac.digest`` calls), the same work the node's handshake
    does, so the limit stays the least a responder must compute. Keys here are
    32 bytes, so no key hashing.
    """
    sha256 = hashlib.sha256
    salt = salt.ljust(64, b"\0")
    inner, outer = sha256(salt.translate(_INNER_PAD)), sha256(salt.translate(_OUTER_PAD))
    inner.update(ikm)
    outer.update(inner.digest())
    prk = outer.digest().ljust(64, b"\0")
    inner, outer = sha256(prk.translate(_INNER_PAD)), sha256(prk.translate(_OUTER_PAD))
    first_inner, first_outer = inner.copy(), outer.copy()
    first_inner.update(b"\x01")
    first_outer.update(first_inner.digest())
    inner.update(first_outer.digest() + b"\x02")
    outer.update(inner.digest())
    return outer.digest()


def raw_responder_crypto(count: int) -> float:
    """Handshakes per CPU-second of :class:`ResponderCrypto` (the limit), in a stretch of its own.

    The accepting node's figures measure the limit in slices between the
    node's connections instead (:class:`LimitSlices`); this form is for the
    stretches before and after, which the benchmark also reports.
    """
    crypto = ResponderCrypto()
    start = time.process_time()
    crypto.run(count)
    return count / (time.process_time() - start)


class LimitSlices:
    """The handshake limit measured in slices between the accepting node's connections, in
    its process, as ``bolt8_receiving._LimitSlices`` does for the receive limit.

    The host's speed moves by tens of percent within seconds (other tenants of
    the machine), so a limit measured before and after the node's run (as this
    script did until Dec 7 2026) compares the node with other seconds than its
    own. A slice every :attr:`stride` connections the node accepted (from its
    accept loop, before it looks at the next connection) does :attr:`size`
    responders' cryptography (:class:`ResponderCrypto`) on the same core, in the
    same seconds, with the load generator on the other core, after one
    untimed handshake (as the receive slices' untimed pass: the timed ones
    do not pay for the first run of the limit's code after the node's).
    All of a slice's CPU time is taken off the node's.
    """

    def __init__(self, stride: int = 128, size: int = 24) -> None:
        #: connections between two slices, and handshakes per slice (the slices add ~10% to the process's work)
        self.stride = stride
        self.size = size
        self._crypto = ResponderCrypto()
        self._accepted = 0
        #: CPU seconds of the timed handshakes and how many there were (the limit)
        self.seconds = 0.0
        self.handshakes = 0
        #: CPU seconds of every slice's handshakes, timed or not (to take off the node's)
        self.spent = 0.0

    @property
    def limit(self) -> float:
        """Handshakes per CPU-second of the slices so far."""
        return self.handshakes / self.seconds

    def wrap(self, accept_now: Callable[[Any], bool]) -> Callable[[Any], bool]:
        """``accept_now`` that runs a slice before every :attr:`stride`-th connection."""

        def accept_now_sliced(conn: Any) -> bool:
            self._accepted += 1
            if self._accepted % self.stride == 0:
                self.run()
            return accept_now(conn)

        return accept_now_sliced

    def run(self) -> None:
        """One slice: an untimed handshake, then :attr:`size` timed ones."""
        start = time.process_time()
        self._crypto.run(1)
        middle = time.process_time()
        self._crypto.run(self.size)
        end = time.process_time()
        self.seconds += end - middle
        self.handshakes += self.size
        self.spent += end - start


def sans_io_handshakes(count: int) -> float:
    initiator_key, responder_key = NodeKey.generate(), NodeKey.generate()
    start = time.perf_counter()
    for _ in range(count):
        initiator = InitiatorHandshake(initiator_key.secret, responder_key.node_id)
        responder = ResponderHandshake(responder_key.secret)
        act_two = responder.receive_act_one(initiator.act_one())
        responder.receive_act_three(initiator.receive_act_two(act_two))
    return count / (time.perf_counter() - start)


def _accepting_node(count: int, concurrency: int) -> Node:
    """A node on a free loopback port for ``count`` connections from ``concurrency`` dialers.

    Every dialer is 127.0.0.1: the per-source handshake limits must let
    ``concurrency`` of them be under way at once (twice that: a dialer starts its
    next before the node has seen the last act three), or the node evicts them.
    """
    config = NodeConfig(
        listen=["127.0.0.1:0"],
        max_connections_per_ip=count + 10,
        max_pending_per_ip=2 * concurrency,
        max_pending_per_subnet=2 * concurrency,
    )
    return Node(NodeKey.generate(), config)


async def tcp_handshakes(count: int, concurrency: int = 16) -> float:
    """Dial + acts 1-3 against a listening node, ``concurrency`` dialers at a time."""
    node = _accepting_node(count, concurrency)
    key = NodeKey.generate()
    transport = TcpTransport()

    async def dialer(n: int) -> None:
        for _ in range(n):
            conn = await transport.dial(target)
            await handshake_as_initiator(conn, key, node.node_id)
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        target = node.listen_addresses[0]
        start = time.perf_counter()
        async with trio.open_nursery() as dialers:
            for _ in range(concurrency):
                dialers.start_soon(dialer, count // concurrency)
        elapsed = time.perf_counter() - start
        node.stop()
    return (count // concurrency) * concurrency / elapsed


def _dial_many(host: str, port: int, node_id_hex: str, count: int, concurrency: int, queue, init: bytes | None = None) -> None:  # type: ignore[no-untyped-def]
    """Child process: a lean load generator, ``concurrency`` handshakes in flight at a time.

    Plain non-blocking sockets under ``selectors`` driving the sans-IO
    initiator (as wrk drives an HTTP server): it needs about a third of the
    CPU the node under test does per handshake, so the node, not the load
    generator, sets the pace. Reports handshakes/s as seen here.

    Each connection hangs up right after act three, or, with ``init`` (an
    encoded ``init`` message), sends it encrypted in the same write as act
    three first, as a real peer does, and then hangs up.
    """
    import selectors
    import socket

    key = NodeKey.generate()
    # With an init each connection becomes a live peer, so each dials as a node of its own (one
    # key for all would have every connection replace the one before it); made before the clock.
    secrets = [NodeKey.generate().secret for _ in range(count)] if init is not None else []
    node_id = bytes.fromhex(node_id_hex)
    selector = selectors.DefaultSelector()
    started = finished = 0

    def start_one() -> None:
        nonlocal started
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((host, port))  # loopback: completes at once
        secret = secrets.pop() if secrets else key.secret
        handshake = InitiatorHandshake(secret, node_id)
        sock.sendall(handshake.act_one())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [handshake, b""])
        started += 1

    begin = time.perf_counter()
    for _ in range(min(concurrency, count)):
        start_one()
    while finished < count:
        for selected, _events in selector.select():
            sock = selected.fileobj
            state = selected.data
            chunk = sock.recv(ACT_TWO_SIZE - len(state[1]))  # type: ignore[union-attr]
            if not chunk:
                raise RuntimeError("the node closed a connection during the handshake")
            state[1] += chunk
            if len(state[1]) < ACT_TWO_SIZE:
                continue
            selector.unregister(sock)
            sock.setblocking(True)  # type: ignore[union-attr]
            act_three = state[0].receive_act_two(state[1])
            if init is not None:
                keys = state[0].keys
                act_three += MessageEncryptor(keys.send_key, keys.chaining_key).encrypt(init)
            sock.sendall(act_three)  # type: ignore[union-attr]
            sock.close()  # type: ignore[union-attr]
            finished += 1
            if started < count:
                start_one()
    queue.put(count / (time.perf_counter() - begin))


async def tcp_handshakes_two_processes(
    count: int, concurrency: int = 16, with_init: bool = False, slices: LimitSlices | None = None
) -> tuple[float, float]:
    """The listening node in this process (one core), the load generator in another.

    Returns (handshakes/s, handshakes per second of this process's CPU time):
    the second is what one core can accept when the node has it to itself.
    ``with_init``: each dialer sends the node's own ``init`` (so it is
    accepted) with act three, as a real peer does, before it hangs up.
    ``slices``: the limit is measured in slices between the node's connections
    (:class:`LimitSlices`); their CPU time is taken off the node's.
    """
    import multiprocessing

    node = _accepting_node(count, concurrency)
    if slices is not None:
        # The listener takes the node's accept_now when the node starts listening.
        node._accept_now = slices.wrap(node._accept_now)  # type: ignore[method-assign]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        host, port = node.listen_addresses[0].rsplit(":", 1)
        init = node.local_init().encode() if with_init else None  # the node's own init: features it accepts
        child = ctx.Process(target=_dial_many, args=(host, int(port), node.node_id.hex(), count, concurrency, queue, init))
        child.start()
        cpu_before = cpu_seconds()
        rate = await trio.to_thread.run_sync(queue.get)
        cpu = cpu_seconds() - cpu_before - (slices.spent if slices is not None else 0.0)
        await trio.to_thread.run_sync(child.join)
        node.stop()
    return float(rate), count / cpu


def pyln_server(backlog: int) -> tuple[Any, Any, Any, int]:
    """A listening pyln-proto server on loopback: (server socket, its key, a client key, its port)."""
    from pyln.proto import wire

    server_key = wire.PrivateKey(os.urandom(32))
    client_key = wire.PrivateKey(os.urandom(32))
    server = wire.LightningServerSocket(server_key)
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    return server, server_key, client_key, server.getsockname()[1]


def pyln_handshakes(count: int) -> float:
    from pyln.proto import wire

    server, server_key, client_key, port = pyln_server(64)

    def accept_loop() -> None:
        for _ in range(count):
            conn, _ = server.accept()
            conn.connection.close()

    acceptor = threading.Thread(target=accept_loop)
    acceptor.start()
    start = time.perf_counter()
    for _ in range(count):
        conn = wire.connect(client_key, server_key.public_key(), "127.0.0.1", port)
        conn.connection.close()
    acceptor.join()
    elapsed = time.perf_counter() - start
    server.close()
    return count / elapsed
