"""One conformance suite that every peer transport passes, through real Nodes.

Like trio's ``check_two_way_stream``, the checks here take a description of
a medium (:class:`Medium`) and drive two or more :class:`~lnpmsg.node.node.Node`
objects over it: ``node.connect``, message handlers, ``peer.send``,
``peer.ping`` and node events, exactly as an app would. Nothing in a check
looks at the transport beyond :meth:`Medium.transports`,
:meth:`Medium.listen_address` and :meth:`Medium.reachable`, so a check that
passes over every medium shows that the node and its apps are unaware of
which medium carries a peer.

Run every check on a medium::

    await check_all(TcpMedium())

or one at a time (a test per check reads better)::

    for name, check in CHECKS.items():
        await check(UdpMedium())

A new transport passes the suite by adding a :class:`Medium` subclass
(the media live in :mod:`lnpmsg.testing.media`, the numbered messages in
:mod:`lnpmsg.testing.traffic`, the checks in
:mod:`lnpmsg.testing.conformance_exchange` and
:mod:`lnpmsg.testing.conformance_faults`; all are re-exported here). A
failed check raises :class:`ConformanceFailure` (an ``AssertionError``) with
what went wrong; every check guards against hangs with a generous deadline
(:attr:`Medium.deadline`), which is not a speed requirement.

The messages are numbered on independent *streams* and sized at random up
to the 65,535 bytes of BOLT 8 (:class:`Traffic`); the receiver rebuilds
each expected message and compares it, so loss, duplication, reordering,
truncation and corruption are all caught.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from lnpmsg.testing.conformance_exchange import (
    check_backpressure,
    check_bulk_both_ways,
    check_concurrent_senders,
    check_handshake,
    check_init_and_features,
    check_ping_pong,
    check_wrong_node_id,
)
from lnpmsg.testing.conformance_faults import (
    check_abrupt_close,
    check_corrupt_frame,
    check_graceful_close,
    check_handshake_flood,
    check_reconnect_after_restart,
    check_silent_peer,
)
from lnpmsg.testing.conformance_nodes import make_node, recording, wait_until
from lnpmsg.testing.media import (
    BULK_MESSAGES,
    Medium,
    MemoryMedium,
    OnionPool,
    TcpMedium,
    TorMedium,
    UdpMedium,
    ZmqMedium,
)
from lnpmsg.testing.nodes import running
from lnpmsg.testing.traffic import MESSAGE_TYPE, ConformanceFailure, Traffic

__all__ = [
    "BULK_MESSAGES",
    "CHECKS",
    "MESSAGE_TYPE",
    "ConformanceFailure",
    "Medium",
    "MemoryMedium",
    "OnionPool",
    "TcpMedium",
    "TorMedium",
    "Traffic",
    "UdpMedium",
    "ZmqMedium",
    "check_abrupt_close",
    "check_all",
    "check_backpressure",
    "check_bulk_both_ways",
    "check_concurrent_senders",
    "check_corrupt_frame",
    "check_graceful_close",
    "check_handshake",
    "check_handshake_flood",
    "check_init_and_features",
    "check_ping_pong",
    "check_reconnect_after_restart",
    "check_silent_peer",
    "check_wrong_node_id",
    "make_node",
    "recording",
    "running",
    "wait_until",
]


async def _graceful_dialer(medium: Medium) -> None:
    await check_graceful_close(medium, "dialer")


async def _graceful_listener(medium: Medium) -> None:
    await check_graceful_close(medium, "listener")


async def _abrupt_dialer(medium: Medium) -> None:
    await check_abrupt_close(medium, "dialer")


async def _abrupt_listener(medium: Medium) -> None:
    await check_abrupt_close(medium, "listener")


async def _silent_dialer(medium: Medium) -> None:
    await check_silent_peer(medium, "dialer")


async def _silent_listener(medium: Medium) -> None:
    await check_silent_peer(medium, "listener")


#: every check by name, each taking only the medium (parametrize tests with it)
CHECKS: dict[str, Callable[[Medium], Awaitable[None]]] = {
    "handshake": check_handshake,
    "wrong_node_id": check_wrong_node_id,
    "init_and_features": check_init_and_features,
    "ping_pong": check_ping_pong,
    "bulk_both_ways": check_bulk_both_ways,
    "concurrent_senders": check_concurrent_senders,
    "graceful_close_by_dialer": _graceful_dialer,
    "graceful_close_by_listener": _graceful_listener,
    "abrupt_close_by_dialer": _abrupt_dialer,
    "abrupt_close_by_listener": _abrupt_listener,
    "silent_dialer": _silent_dialer,
    "silent_listener": _silent_listener,
    "reconnect_after_restart": check_reconnect_after_restart,
    "backpressure": check_backpressure,
    "corrupt_frame": check_corrupt_frame,
    "handshake_flood": check_handshake_flood,
}


async def check_all(medium: Medium) -> None:
    """Run every check on ``medium``, one after the other, each under the medium's deadline."""
    for name, check in CHECKS.items():
        with trio.fail_after(medium.deadline_for(name)):
            try:
                await check(medium)
            except ConformanceFailure as exc:
                raise ConformanceFailure(f"{medium.name}: {name}: {exc}") from exc
