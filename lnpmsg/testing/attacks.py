"""Attacks on a node's admission, for regression tests and ``scripts/attack.py``.

Everything here targets loopback only: 127.0.0.0/8 gives many source
addresses (127.0.0.2, 127.1.2.3, ...) on one machine, so per-IP and
per-subnet limits can be attacked without another host. Every attack is
bounded by a duration and a rate.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass, field

import trio

__all__ = ["FloodStats", "attacker_sources", "quic_initial_flood", "quic_initials", "silent_flood", "timed_connects"]


def attacker_sources(subnets: int, per_subnet: int) -> list[str]:
    """Loopback source addresses: ``per_subnet`` IPs in each of ``subnets`` /24s (none is 127.0.0.1)."""
    if not (0 < subnets <= 200 and 0 < per_subnet <= 200):
        raise ValueError("subnets and per_subnet must be in 1..200")
    return [f"127.{1 + s // 250}.{s % 250}.{2 + i}" for s in range(subnets) for i in range(per_subnet)]


@dataclass
class FloodStats:
    """What a flood did: connections opened, refused at connect, closed by the node."""

    opened: int = 0
    failed: int = 0
    closed_by_node: int = 0
    errors: list[str] = field(default_factory=list)


async def _hold(sock: trio.socket.SocketType, stats: FloodStats) -> None:
    """Keep a socket open, silent, until the node closes it (or we are cancelled)."""
    try:
        while await sock.recv(4096):
            pass
        stats.closed_by_node += 1
    except OSError:
        stats.closed_by_node += 1
    finally:
        sock.close()


async def silent_flood(
    host: str,
    port: int,
    sources: list[str],
    *,
    per_second: float,
    hold: int,
    duration: float,
    stats: FloodStats | None = None,
) -> FloodStats:
    """Open TCP connections that never speak, from ``sources`` in turn, ``per_second`` in
    total, each source holding at most ``hold`` open (its oldest is dropped for a new one),
    for ``duration`` seconds. Returns the counts."""
    stats = stats if stats is not None else FloodStats()
    held: dict[str, deque[trio.CancelScope]] = {source: deque() for source in sources}
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(duration):
            turn = 0
            while True:
                source = sources[turn % len(sources)]
                turn += 1
                sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    await sock.bind((source, 0))
                    await sock.connect((host, port))
                except OSError as exc:
                    stats.failed += 1
                    if len(stats.errors) < 10:
                        stats.errors.append(repr(exc))
                    sock.close()
                except BaseException:
                    sock.close()  # cancelled while binding or connecting: no socket left unclosed
                    raise
                else:
                    stats.opened += 1
                    queue = held[source]
                    if len(queue) >= hold:
                        queue.popleft().cancel()
                    scope = trio.CancelScope()
                    queue.append(scope)

                    async def run(sock: trio.socket.SocketType = sock, scope: trio.CancelScope = scope) -> None:
                        with scope:
                            await _hold(sock, stats)

                    nursery.start_soon(run)
                await trio.sleep(1 / per_second)
        nursery.cancel_scope.cancel()
    return stats


async def timed_connects(connect, count: int, *, interval: float = 0.1, timeout: float = 30.0) -> list[float]:  # type: ignore[no-untyped-def]
    """Run ``await connect(i)`` ``count`` times, one every ``interval``; returns each one's seconds.

    A connect that fails or exceeds ``timeout`` raises (the legitimate peer did not get in).
    """
    times: list[float] = []
    for i in range(count):
        start = trio.current_time()
        with trio.fail_after(timeout):
            await connect(i)
        times.append(trio.current_time() - start)
        await trio.sleep(interval)
    return times


def quic_initials(count: int) -> list[bytes]:
    """``count`` real QUIC Initials (each from a new client core), to send and never follow up."""
    from aioquic.quic.connection import QuicConnection

    from lnpmsg.transports.udp_quic import client_configuration

    initials = []
    for _ in range(count):
        core = QuicConnection(configuration=client_configuration(idle_timeout=60))
        core.connect(("127.0.0.1", 9), now=0.0)
        initials.append(core.datagrams_to_send(now=0.0)[0][0])
    return initials


async def quic_initial_flood(host: str, port: int, sources: list[str], initials: list[bytes], *, per_second: float) -> int:
    """Send each Initial once, from ``sources`` in turn, ``per_second``; returns how many left."""
    socks = []
    try:
        for source in sources:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind((source, 0))
            socks.append(sock)
        for i, initial in enumerate(initials):
            await socks[i % len(socks)].sendto(initial, (host, port))
            await trio.sleep(1 / per_second)
    finally:
        for sock in socks:
            sock.close()
    return len(initials)
