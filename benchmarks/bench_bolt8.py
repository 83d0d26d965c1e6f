"""BOLT-8 stack benchmark: handshakes/s and messages/s, next to their limits.

Everything is measured in this one run, on this machine, in one process
(so both ends share one core, as the raw limit's figure assumes):

- raw AEAD: ChaCha20-Poly1305 of ``cryptography`` alone doing the work of
  one BOLT-8 message (encrypt length + body, decrypt both): the physical
  limit of this design in Python;
- lnpmsg: two Nodes over loopback TCP; a message counts when the receiving
  node's handler has it;
- pyln-proto: Core Lightning's Python BOLT-8 implementation, same traffic
  (a sender thread and a reader thread, loopback TCP);
- handshakes: sans-IO (both roles in memory), and over loopback TCP (dial +
  acts 1-3 against a listening node), and pyln-proto's over TCP.

Usage: ``python benchmarks/bench_bolt8.py [--quick] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import threading
import time

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import handshake_as_initiator
from lnpmsg.noise import InitiatorHandshake, ResponderHandshake
from lnpmsg.testing.pyln import WholeReads
from lnpmsg.transports.tcp import TcpTransport

CUSTOM = 32769


def raw_aead(count: int, size: int) -> float:
    """Messages/s of the bare AEAD work of BOLT-8 framing (2 encrypts + 2 decrypts)."""
    aead = ChaCha20Poly1305(os.urandom(32))
    body = os.urandom(size)
    header = struct.pack(">H", size)
    nonces = [struct.pack("<4xQ", i) for i in range(1000)]
    start = time.perf_counter()
    for i in range(count):
        n1, n2 = nonces[(2 * i) % 1000], nonces[(2 * i + 1) % 1000]
        c1 = aead.encrypt(n1, header, None)
        c2 = aead.encrypt(n2, body, None)
        aead.decrypt(n1, c1, None)
        aead.decrypt(n2, c2, None)
    return count / (time.perf_counter() - start)


async def lnpmsg_throughput(count: int, size: int) -> float:
    a = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]))
    b = Node(NodeKey.generate(), NodeConfig())
    received = 0
    done = trio.Event()

    async def on_message(peer, message):  # type: ignore[no-untyped-def]
        nonlocal received
        received += 1
        if received == count:
            done.set()

    a.add_handler(CUSTOM, on_message)
    message = CUSTOM.to_bytes(2, "big") + bytes(size - 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        peer = await b.connect(f"{a.node_id.hex()}@{a.listen_addresses[0]}")
        start = time.perf_counter()
        for _ in range(count):
            await peer.send(message)
        await done.wait()
        elapsed = time.perf_counter() - start
        a.stop()
        b.stop()
    return count / elapsed


def raw_aead_per_side(count: int, size: int) -> float:
    """The limit when each end has its own core: the slower of the two sides' AEAD work."""
    aead = ChaCha20Poly1305(os.urandom(32))
    body = os.urandom(size)
    header = struct.pack(">H", size)
    nonce = bytes(12)
    start = time.perf_counter()
    for _ in range(count):
        c1 = aead.encrypt(nonce, header, None)
        c2 = aead.encrypt(nonce, body, None)
    encrypt_rate = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(count):
        aead.decrypt(nonce, c1, None)
        aead.decrypt(nonce, c2, None)
    decrypt_rate = count / (time.perf_counter() - start)
    return min(encrypt_rate, decrypt_rate)


ACK = 32771


def _receiving_node(count: int, queue) -> None:  # type: ignore[no-untyped-def]
    """Child process: a node that acknowledges once ``count`` messages arrived."""

    async def run() -> None:
        node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"]))
        received = 0

        def on_message(peer, message) -> None:  # type: ignore[no-untyped-def]
            nonlocal received
            received += 1
            if received == count:
                peer.send_nowait(ACK.to_bytes(2, "big"))

        node.add_handler(CUSTOM, on_message)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            queue.put((node.node_id.hex(), node.listen_addresses[0]))
            await trio.to_thread.run_sync(queue.get)  # the parent says when to stop
            node.stop()

    trio.run(run)


async def lnpmsg_throughput_two_processes(count: int, size: int) -> float:
    """Sender node here, receiver node in a second process (each end on its own core)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    to_child, from_child = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_receiving_node, args=(count, _Duplex(from_child, to_child)))
    child.start()
    node_id, address = await trio.to_thread.run_sync(from_child.get)
    sender = Node(NodeKey.generate(), NodeConfig())
    acked = trio.Event()
    sender.add_handler(ACK, lambda peer, message: acked.set())
    message = CUSTOM.to_bytes(2, "big") + bytes(size - 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        peer = await sender.connect(f"{node_id}@{address}")
        start = time.perf_counter()
        for _ in range(count):
            await peer.send(message)
        await acked.wait()
        elapsed = time.perf_counter() - start
        sender.stop()
    to_child.put("stop")
    await trio.to_thread.run_sync(child.join)
    return count / elapsed


class _Duplex:
    """A pair of queues seen from the child: ``put`` goes to the parent, ``get`` comes from it."""

    def __init__(self, outgoing, incoming) -> None:  # type: ignore[no-untyped-def]
        self.put = outgoing.put
        self.get = incoming.get




def pyln_throughput(count: int, size: int) -> float:
    from pyln.proto import wire

    server_key = wire.PrivateKey(os.urandom(32))
    client_key = wire.PrivateKey(os.urandom(32))
    server = wire.LightningServerSocket(server_key)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list = []
    acceptor = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    acceptor.start()
    client = wire.connect(client_key, server_key.public_key(), "127.0.0.1", port)
    acceptor.join()
    receiver = accepted[0]
    # pyln-proto reads a frame header with one recv() and fails on a short
    # read, which TCP may give it under load: give it whole reads.
    receiver.connection = WholeReads(receiver.connection)
    message = CUSTOM.to_bytes(2, "big") + bytes(size - 2)

    def send_all() -> None:
        for _ in range(count):
            client.send_message(message)

    start = time.perf_counter()
    sender = threading.Thread(target=send_all)
    sender.start()
    for _ in range(count):
        receiver.read_message()
    elapsed = time.perf_counter() - start
    sender.join()
    client.connection.close()
    receiver.connection.close()
    server.close()
    return count / elapsed


def sans_io_handshakes(count: int) -> float:
    initiator_key, responder_key = NodeKey.generate(), NodeKey.generate()
    start = time.perf_counter()
    for _ in range(count):
        initiator = InitiatorHandshake(initiator_key.secret, responder_key.node_id)
        responder = ResponderHandshake(responder_key.secret)
        act_two = responder.receive_act_one(initiator.act_one())
        responder.receive_act_three(initiator.receive_act_two(act_two))
    return count / (time.perf_counter() - start)


async def tcp_handshakes(count: int, concurrency: int = 16) -> float:
    """Dial + acts 1-3 against a listening node, ``concurrency`` dialers at a time."""
    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], max_connections_per_ip=count + 10))
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


def _dial_many(target: str, node_id_hex: str, count: int, concurrency: int, queue) -> None:  # type: ignore[no-untyped-def]
    """Child process: run the dialers and report handshakes/s as seen by them."""

    async def run() -> float:
        key = NodeKey.generate()
        transport = TcpTransport()
        node_id = bytes.fromhex(node_id_hex)

        async def dialer(n: int) -> None:
            for _ in range(n):
                conn = await transport.dial(target)
                await handshake_as_initiator(conn, key, node_id)
                await conn.aclose()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(dialer, count // concurrency)
        return (count // concurrency) * concurrency / (time.perf_counter() - start)

    queue.put(trio.run(run))


async def tcp_handshakes_two_processes(count: int, concurrency: int = 16) -> float:
    """The listening node in this process (one core), the dialers in another."""
    import multiprocessing

    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], max_connections_per_ip=count + 10))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        child = ctx.Process(target=_dial_many, args=(node.listen_addresses[0], node.node_id.hex(), count, concurrency, queue))
        child.start()
        rate = await trio.to_thread.run_sync(queue.get)
        await trio.to_thread.run_sync(child.join)
        node.stop()
    return float(rate)


def pyln_handshakes(count: int) -> float:
    from pyln.proto import wire

    server_key = wire.PrivateKey(os.urandom(32))
    client_key = wire.PrivateKey(os.urandom(32))
    server = wire.LightningServerSocket(server_key)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]

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


def ratio(results: dict[str, float], ours: str, limit: str, label: str) -> str:
    return f"{results[f'{ours}_{label}'] / results[f'{limit}_{label}']:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    results: dict[str, float] = {}
    for size, count in ((1024, int(200_000 * scale)), (65535, int(10_000 * scale))):
        label = "1KiB" if size == 1024 else "64KiB"
        results[f"raw_aead_{label}"] = raw_aead(count, size)
        results[f"lnpmsg_{label}"] = trio.run(lnpmsg_throughput, count, size)
        results[f"pyln_{label}"] = pyln_throughput(max(count // 4, 100), size)
        results[f"raw_aead_per_side_{label}"] = raw_aead_per_side(count, size)
        results[f"lnpmsg_2proc_{label}"] = trio.run(lnpmsg_throughput_two_processes, count, size)
    results["handshakes_sans_io"] = sans_io_handshakes(int(3000 * scale))
    results["handshakes_tcp"] = trio.run(tcp_handshakes, int(2000 * scale))
    results["handshakes_tcp_server"] = trio.run(tcp_handshakes_two_processes, int(4000 * scale))
    results["handshakes_pyln_tcp"] = pyln_handshakes(int(1000 * scale))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, one process\n")
    print("| messages/s (loopback TCP) | 1 KiB | 64 KiB |")
    print("| --- | ---: | ---: |")
    for name, key in (("raw ChaCha20-Poly1305 (limit)", "raw_aead"), ("lnpmsg", "lnpmsg"), ("pyln-proto", "pyln")):
        print(f"| {name} | {results[key + '_1KiB']:,.0f} | {results[key + '_64KiB']:,.0f} |")
    print(f"| lnpmsg / raw limit | {ratio(results, 'lnpmsg', 'raw_aead', '1KiB')} | {ratio(results, 'lnpmsg', 'raw_aead', '64KiB')} |")
    print(f"| lnpmsg / pyln-proto | {results['lnpmsg_1KiB'] / results['pyln_1KiB']:.1f}x | {results['lnpmsg_64KiB'] / results['pyln_64KiB']:.1f}x |")
    print()
    print("Each end on its own core (receiving node in a second process):\n")
    print("| messages/s (loopback TCP) | 1 KiB | 64 KiB |")
    print("| --- | ---: | ---: |")
    print(f"| raw ChaCha20-Poly1305, one side's work (limit) | {results['raw_aead_per_side_1KiB']:,.0f} | {results['raw_aead_per_side_64KiB']:,.0f} |")
    print(f"| lnpmsg, two processes | {results['lnpmsg_2proc_1KiB']:,.0f} | {results['lnpmsg_2proc_64KiB']:,.0f} |")
    print(f"| lnpmsg / limit | {ratio(results, 'lnpmsg_2proc', 'raw_aead_per_side', '1KiB')} | {ratio(results, 'lnpmsg_2proc', 'raw_aead_per_side', '64KiB')} |")
    print()
    print("| handshakes/s | |")
    print("| --- | ---: |")
    print(f"| lnpmsg, sans-IO (both roles, one core) | {results['handshakes_sans_io']:,.0f} |")
    print(f"| lnpmsg, loopback TCP (dial + acts 1-3, 16 dialers, both roles in one process) | {results['handshakes_tcp']:,.0f} |")
    print(f"| lnpmsg node accepting, loopback TCP (dialers in a second process) | {results['handshakes_tcp_server']:,.0f} |")
    print(f"| pyln-proto, loopback TCP | {results['handshakes_pyln_tcp']:,.0f} |")


if __name__ == "__main__":
    main()
