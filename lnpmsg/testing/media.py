"""Media for the conformance suites: how to put nodes (or a pair of
connections) on one transport.

A :class:`Medium` gives fresh transports, listen addresses and the address
others dial; a new transport joins the suites with a subclass. Tor needs
onion services in front of loopback listeners: :class:`OnionPool` runs one
``tor`` with a set of them and gives its :class:`TorMedium`.
"""

from __future__ import annotations

import fcntl
import itertools
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import trio

from lnpmsg.node.peer import MAX_BATCH_BYTES, RECEIVE_CHUNK
from lnpmsg.node.peer_reading import RUN_READ_BYTES
from lnpmsg.testing.memory import MemoryNetwork
from lnpmsg.transports.address import format_peer_address, parse_listen_address
from lnpmsg.transports.base import Connection, Transport, TransportError
from lnpmsg.transports.registry import default_transports
from lnpmsg.transports.tcp import TcpTransport, split_host_port
from lnpmsg.transports.tor.onion import DEFAULT_VIRTUAL_PORT as ONION_VIRTUAL_PORT
from lnpmsg.transports.tor.process import (
    base_command,
    find_tor,
    join_torrc,
    pick_free_ports,
    tail_text,
)
from lnpmsg.transports.tor.transport import TorTransport
from lnpmsg.transports.udp import SEND_BUFFER_LIMIT
from lnpmsg.transports.udp_connection import WRITE_SHARE
from lnpmsg.transports.udp_quic import RECEIVE_WINDOW
from lnpmsg.transports.zmq import MAX_FRAME_SIZE as ZMQ_MAX_FRAME_SIZE
from lnpmsg.transports.zmq import ZmqSettings

__all__ = [
    "BULK_MESSAGES",
    "Medium",
    "MemoryMedium",
    "OnionPool",
    "TcpMedium",
    "TorMedium",
    "UdpMedium",
    "ZmqMedium",
]

#: messages each way in :func:`check_bulk_both_ways` unless the medium says less
BULK_MESSAGES = 10_000


class Medium:
    """How to put nodes on one medium. Subclass per transport.

    The defaults fit a medium whose listeners are reached at the address
    they are bound to; :meth:`reachable` is the hook for media where peers
    dial something else (an onion service in front of a loopback listener).
    """

    #: a label for reports and test ids
    name: str = "?"
    #: the transport kind peers show (``peer.transport_kind``)
    kind: str = "?"
    #: messages each way in the bulk check
    bulk_messages: int = BULK_MESSAGES
    #: messages per sending task in the concurrent-senders check
    concurrent_messages: int = 150
    #: messages queued before a graceful close
    close_messages: int = 300
    #: connections in the handshake flood
    flood_connections: int = 40
    #: seconds any one check may take before it counts as hung
    deadline: float = 60.0
    #: the same for the bulk check (the one that moves volume)
    bulk_deadline: float = 60.0

    def deadline_for(self, check: str) -> float:
        """Seconds the check named ``check`` (a key of :data:`CHECKS`) may take here."""
        return self.bulk_deadline if check == "bulk_both_ways" else self.deadline

    def transports(self) -> MutableMapping[str, Transport]:
        """A fresh set of transports for one node."""
        return default_transports()

    def listen_address(self) -> str:
        """A fresh listen address (port 0 where the medium has ports)."""
        raise NotImplementedError

    async def reachable(self, listen_address: str, node_id: bytes) -> str:
        """The peer address others dial to reach the listener at ``listen_address``."""
        return format_peer_address(replace(parse_listen_address(listen_address), node_id=node_id))

    def in_flight_bound(self) -> int:
        """Bytes the medium itself may hold between a sending and a stopped receiving node.

        That is the transport's buffers in both endpoints plus one read of
        the receiving peer; the back-pressure check allows this much beyond
        the sender's own queue (unless the medium reports
        :meth:`bytes_taken`) and has the sender try three times as much.
        """
        raise NotImplementedError

    def bytes_taken(self, conn: Connection) -> int | None:
        """Bytes the medium has taken from ``conn`` so far, or None.

        Only media with something between the nodes that reads ahead
        without a bound of its own (Tor) say this: there the back-pressure
        check holds the sender to its queue beyond what the medium took,
        instead of to :meth:`in_flight_bound`.
        """
        return None

    def node_config(self) -> dict[str, Any]:
        """NodeConfig settings this medium needs (none by default)."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _sysctl_max(path: str, default: int) -> int:
    """The largest value of a Linux TCP buffer sysctl (``min default max``)."""
    try:
        return int(Path(path).read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return default


def _tcp_buffers() -> int:
    """What one loopback TCP connection may hold: the kernel autotunes each end's buffers up to these maxima."""
    return _sysctl_max("/proc/sys/net/ipv4/tcp_wmem", 4 << 20) + _sysctl_max("/proc/sys/net/ipv4/tcp_rmem", 6 << 20)


#: offset of ``tcpi_bytes_acked`` (a u64) in Linux's ``struct tcp_info`` (there since Linux 4.1)
_TCPI_BYTES_ACKED = 120
#: Linux's ioctl for the bytes in a socket's send queue (SIOCOUTQ)
_SIOCOUTQ = 0x5411


def _bytes_written(sock: Any) -> int | None:
    """Bytes written into the TCP socket ``sock`` so far: what the peer's kernel acknowledged
    plus what still sits in the send queue (Linux; None elsewhere)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0" * 4))[0]
    except (AttributeError, OSError):
        return None
    if len(info) < _TCPI_BYTES_ACKED + 8:
        return None
    (acked,) = struct.unpack_from("=Q", info, _TCPI_BYTES_ACKED)
    return int(acked) + queued


class TcpMedium(Medium):
    """Plain TCP on 127.0.0.1."""

    name = "tcp"
    kind = "tcp"

    def listen_address(self) -> str:
        return "127.0.0.1:0"

    def in_flight_bound(self) -> int:
        # the kernel's buffers, plus one read of the receiving peer (a run's read is the largest)
        return _tcp_buffers() + RUN_READ_BYTES


class MemoryMedium(Medium):
    """The in-memory transport (:mod:`lnpmsg.testing.memory`): every node of a check on one network."""

    name = "mem"
    kind = "mem"

    def __init__(self, network: MemoryNetwork | None = None) -> None:
        self.network = network or MemoryNetwork()

    def transports(self) -> MutableMapping[str, Transport]:
        return {"mem": self.network.transport()}

    def listen_address(self) -> str:
        return "mem://"

    def in_flight_bound(self) -> int:
        # one direction's buffer, plus one read of the receiving peer
        return self.network.buffer_size + RECEIVE_CHUNK


class UdpMedium(Medium):
    """UDP (QUIC) on 127.0.0.1."""

    name = "udp"
    kind = "udp"

    def listen_address(self) -> str:
        return "udp://127.0.0.1:0"

    def in_flight_bound(self) -> int:
        # send_frames takes a whole batch before it waits for acknowledgements;
        # the receiver holds at most its window unread.
        return max(MAX_BATCH_BYTES, SEND_BUFFER_LIMIT // WRITE_SHARE) + SEND_BUFFER_LIMIT + RECEIVE_WINDOW + RECEIVE_CHUNK


class ZmqMedium(Medium):
    """ZeroMQ over ``tcp://`` (on 127.0.0.1) or ``ipc://`` (sockets in ``directory``)."""

    kind = "zmq"

    def __init__(self, scheme: str = "tcp", directory: str | None = None) -> None:
        if scheme not in ("tcp", "ipc"):
            raise ValueError(f"ZeroMQ scheme must be tcp or ipc, not {scheme!r}")
        self.scheme = scheme
        self.name = f"zmq+{scheme}"
        self._directory = directory
        self._count = 0

    def listen_address(self) -> str:
        if self.scheme == "tcp":
            return "zmq+tcp://127.0.0.1:0"
        if self._directory is None:
            # ipc paths must stay short (about 100 bytes), so not under a deep test directory
            self._directory = tempfile.mkdtemp(prefix="lnpconf-", dir="/tmp")
        self._count += 1
        return f"zmq+ipc://{self._directory}/n{self._count}.sock"

    def in_flight_bound(self) -> int:
        # The receiver grants credit for at most its window of whole frames.
        return ZmqSettings().recv_window * ZMQ_MAX_FRAME_SIZE + RECEIVE_CHUNK


class TorMedium(Medium):
    """Tor: nodes listen on loopback ports that onion services lead to and dial ``.onion`` through a SOCKS port.

    ``onions`` maps each loopback port to the onion hostname in front of it
    (the services must be published); :class:`OnionPool` makes such a set.
    Listen addresses are handed out from these ports in turn, so a check
    never has more nodes listening at once than there are ports.
    """

    name = "tor"
    kind = "tor"
    # The bulk check moves the full 10,000 messages each way (about 330 MB
    # each way, both at once) like every other medium. Measured through the
    # private test network (lnpmsg.testing.tornet, whose scheduler tuning
    # doubles this) on 2 shared cores: 32-77 s, i.e. 9-21 MB/s both ways
    # together, every cell crossing six relays and the onion pool's tor at
    # both ends, all on this machine. It gets its own deadline
    # (bulk_deadline). The other checks use small counts: they test
    # behaviour, not volume, and so each takes seconds.
    bulk_messages = BULK_MESSAGES
    concurrent_messages = 8
    close_messages = 40
    flood_connections = 10
    deadline = 120.0
    #: seconds the bulk check may take before it counts as hung (not a speed
    #: requirement): about four times the slowest run measured
    bulk_deadline = 300.0

    def __init__(self, socks_address: tuple[str, int], onions: dict[int, str]) -> None:
        if not onions:
            raise ValueError("TorMedium needs at least one onion service")
        self.socks_address = socks_address
        self.onions = dict(onions)
        self._ports = itertools.cycle(sorted(onions))

    def transports(self) -> MutableMapping[str, Transport]:
        return default_transports(tor_socks=self.socks_address)

    def listen_address(self) -> str:
        return f"tor://127.0.0.1:{next(self._ports)}"

    async def reachable(self, listen_address: str, node_id: bytes) -> str:
        _host, port = split_host_port(parse_listen_address(listen_address).target)
        return f"{node_id.hex()}@{self.onions[port]}:{ONION_VIRTUAL_PORT}"

    def in_flight_bound(self) -> int:
        # What the kernel can hold: two loopback TCP legs (node -> tor's
        # SOCKS port, tor -> the listening node), each with a send buffer
        # autotuned up to tcp_wmem's maximum and a receive buffer up to
        # tcp_rmem's. Tor reads its SOCKS socket in whole gulps, so that
        # socket's receive buffer does grow to the maximum (measured: 33.2 MB
        # queued of 33.5 MB); the others held less (the node's send queue
        # 66 KB, tor's towards the stopped receiver 2.8 MB, the receiver's
        # 0.13 MB), but nothing bounds them lower. Plus one read of the
        # receiving node.
        #
        # Tor itself is left out: it has no bound of its own (tor 0.4.9
        # measured, with its SIGUSR1 buffer dump and control-port events;
        # tor's source read for why). Congestion control is on (the circuits
        # report a congestion window, streams get XOFF), so a stream has no
        # fixed window and the circuit's congestion window no configured cap
        # (measured 400-1070 cells); the far end sends XOFF only once its edge outbuf
        # passes 500 cells, i.e. after the second leg above is full, and keeps
        # taking the cells still coming ("flow control always takes more
        # data"). Until that XOFF arrives, the client tor reads its SOCKS socket
        # whole whenever reading is on (the edge's read bucket is INT32_MAX),
        # and reading also resumes without first packaging what was read
        # (when a circuit's cell queue drains, or on XON). Measured here: up
        # to 31.6 MB in the SOCKS stream's inbuf plus 0.4-0.8 MB in the
        # service edge's outbuf; in the CI run that counted 86.3 MB against
        # the old bound (which had room for 2 x 36 MiB of kernel buffers),
        # about 49 MB if its kernel legs held what they hold here. That is the node's write rate times the XOFF's
        # delay, not a buffer size, so :meth:`bytes_taken` reports what the
        # path actually took and the check holds the node to its own queue
        # beyond that. This bound still sizes what the sender tries (three
        # times it: about 230 MB with these sysctls; the most measured is 69 MB).
        return 2 * _tcp_buffers() + RUN_READ_BYTES

    def bytes_taken(self, conn: Connection) -> int | None:
        # Counted by the kernel at the node's own socket, so a transport that
        # buffered out of sight of the peer's queue would still be caught.
        sock = getattr(conn, "_sock", None)
        return None if sock is None else _bytes_written(sock)


#: how many times an onion pool starts its tor before it gives up (see :meth:`OnionPool.start`)
START_ATTEMPTS = 3
#: what the pool's tor logs for a dial when it has no HSDir to ask for the service's descriptor
NO_HSDIR_LOG = b"No more HSDir available to query"
#: seconds tor may go on logging :data:`NO_HSDIR_LOG` after it bootstrapped before the start is
#: given up as stuck (a good start gets over it in about 2 s, once it has the HSDir's descriptor)
HSDIR_STUCK_AFTER = 20.0
#: seconds between looks at the pool's tor log while its services are not reachable yet
LOG_POLL = 0.5


class OnionPool:
    """One ``tor`` process hosting ``size`` onion services, each in front of a free loopback port.

    ``torrc_lines`` join it to a network (e.g. a private test network's
    client lines). :meth:`start` returns once every service was dialed
    successfully through the same Tor's SOCKS port (starting tor again,
    with fresh client state, if the first start does not get there within
    ``start_timeout``, or sooner when tor's log says it is stuck without an
    HSDir to ask: :data:`HSDIR_STUCK_AFTER`); :meth:`medium` then
    gives the :class:`TorMedium` for them. Synchronous, so a test session
    can share one pool (a Tor start and publication take seconds).
    """

    def __init__(self, torrc_lines: list[str], directory: str | Path, size: int = 8, *, start_timeout: float = 75.0) -> None:
        self.torrc_lines = list(torrc_lines)
        self.directory = Path(directory)
        self.size = size
        self.start_timeout = start_timeout
        self.onions: dict[int, str] = {}
        self.socks_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path:
        return self.directory / "tor.log"

    def start(self) -> None:
        """Start tor, wait for every service to be reachable; raises ``RuntimeError`` quoting tor's log."""
        socks_port, *ports = pick_free_ports(self.size + 1)
        self.socks_port = socks_port
        lines = [*self.torrc_lines, f"DataDirectory {self.directory / 'data'}", f"SocksPort 127.0.0.1:{socks_port}", "Log notice stdout"]
        for port in ports:
            lines += [f"HiddenServiceDir {self.directory / f'hs{port}'}", f"HiddenServicePort {ONION_VIRTUAL_PORT} 127.0.0.1:{port}"]
        self.directory.mkdir(parents=True, exist_ok=True)
        torrc = self.directory / "torrc"
        torrc.write_text(join_torrc(lines))
        for attempt in range(1, START_ATTEMPTS + 1):
            with open(self.log_path, "ab") as log_file:
                log_start = log_file.tell()
                self._process = subprocess.Popen(base_command(find_tor(), torrc), stdout=log_file, stderr=subprocess.STDOUT)
            try:
                trio.run(self._wait_ready, ports, log_start)
                return
            except Exception as exc:
                self.stop()
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(f"onion pool did not come up: {exc}\n{tail_text(self.log_path)}") from exc
                # A client tor that finds no HSDir to ask (it said so for 75 s in one CI run,
                # where a good start gets over it within seconds) or that otherwise fails to
                # reach the services: a fresh client state (same onion keys) starts over.
                shutil.rmtree(self.directory / "data", ignore_errors=True)
            except BaseException:
                self.stop()
                raise

    async def _wait_ready(self, ports: list[int], log_start: int = 0) -> None:
        with trio.fail_after(self.start_timeout):
            for port in ports:
                hostname = self.directory / f"hs{port}" / "hostname"
                while not hostname.exists():
                    if self._process is not None and self._process.poll() is not None:
                        raise RuntimeError(f"tor exited with code {self._process.returncode}")
                    await trio.sleep(0.1)
                self.onions[port] = hostname.read_text().strip()
            async with trio.open_nursery() as outer:
                outer.start_soon(self._watch_log, log_start)
                async with trio.open_nursery() as nursery:
                    for port in ports:
                        nursery.start_soon(self._probe, port)
                outer.cancel_scope.cancel()

    async def _watch_log(self, offset: int) -> None:
        """While the probes run: give the start up at once (raise) when tor, bootstrapped, has
        found no HSDir to ask for :data:`HSDIR_STUCK_AFTER` seconds, instead of waiting out
        ``start_timeout``: the next start, with fresh client state, gets over it."""
        bootstrapped = False
        since: float | None = None
        while True:
            await trio.sleep(LOG_POLL)
            new = await trio.to_thread.run_sync(_read_from, self.log_path, offset)
            offset += len(new)
            bootstrapped = bootstrapped or b"Bootstrapped 100%" in new
            if bootstrapped and NO_HSDIR_LOG in new:
                now = trio.current_time()
                since = now if since is None else since
                if now - since >= HSDIR_STUCK_AFTER:
                    raise RuntimeError(f"tor found no HSDir to ask for the services' descriptors for {now - since:.0f} s after it bootstrapped")

    async def _probe(self, port: int) -> None:
        """Dial the service through Tor until it answers (its descriptor is published and fetched)."""
        listener = await TcpTransport().listen(f"127.0.0.1:{port}")
        transport = TorTransport(("127.0.0.1", self.socks_port), connect_timeout=15.0)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.serve, _hang_up)
                while True:
                    try:
                        conn = await transport.dial(f"{self.onions[port]}:{ONION_VIRTUAL_PORT}")
                    except TransportError:
                        await trio.sleep(0.5)  # not published yet, or Tor still bootstrapping
                        continue
                    await conn.aclose()
                    break
                nursery.cancel_scope.cancel()
        finally:
            # Also when the start times out: the next attempt listens on the same port.
            with trio.CancelScope(shield=True):
                await listener.aclose()

    def medium(self) -> TorMedium:
        """The medium for this pool's services."""
        if not self.onions:
            raise RuntimeError("the onion pool is not started")
        return TorMedium(("127.0.0.1", self.socks_port), self.onions)

    def stop(self) -> None:
        """Stop tor (idempotent)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _read_from(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


async def _hang_up(conn: Connection) -> None:
    await conn.aclose()
