"""The test kit: what lnpmsg's own tests use, public for apps' tests.

Deterministic (no network, virtual time):

- :mod:`.memory`: an in-memory transport, ``mem://NODEID@name``:
  :func:`memory_connection_pair`, :class:`MemoryNetwork` (listeners by
  name, one :class:`MemoryTransport` per node) and fault knobs
  (``conn.hang()``, ``conn.resume()``, ``conn.drop()``,
  ``network.hang_dials(name)``);
- :mod:`.virtual`: nodes under trio's ``MockClock``: :func:`node_pair`
  (two connected nodes with your apps), :func:`memory_node`,
  :func:`run_virtual`, :func:`record_events` (wait for an event instead of
  sleeping);
- :mod:`.connections`: the connection-level checks every transport passes
  (:func:`check_connection`).

Real processes and sockets (end to end):

- :mod:`.nodes`: nodes on loopback TCP; :mod:`.rawpeer`: a hand-driven
  BOLT-8 peer; :mod:`.conformance`: the node-level suite over every medium;
  :mod:`.tornet` / :mod:`.pytest_tor`: a private Tor network;
  :mod:`.lossy_udp`: a lossy, reordering UDP relay.

``docs/apps.md`` ("Testing your app") shows a complete app test. The names
above are importable from this package; each module loads on first use.
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports

if TYPE_CHECKING:
    from lnpmsg.testing.connections import check_connection
    from lnpmsg.testing.memory import MemoryConnection, MemoryNetwork, MemoryTransport, memory_connection_pair
    from lnpmsg.testing.virtual import EventLog, memory_node, node_pair, record_events, run_virtual, virtual_clock

__all__ = [
    "EventLog",
    "MemoryConnection",
    "MemoryNetwork",
    "MemoryTransport",
    "check_connection",
    "memory_connection_pair",
    "memory_node",
    "node_pair",
    "record_events",
    "run_virtual",
    "virtual_clock",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "check_connection": "lnpmsg.testing.connections",
        **dict.fromkeys(("MemoryConnection", "MemoryNetwork", "MemoryTransport", "memory_connection_pair"), "lnpmsg.testing.memory"),
        **dict.fromkeys(("EventLog", "memory_node", "node_pair", "record_events", "run_virtual", "virtual_clock"), "lnpmsg.testing.virtual"),
    },
)
