"""A complete private Tor network on 127.0.0.1, for tests.

:class:`PrivateTorNetwork` starts one directory authority and three relays
(the smallest network in which v3 onion services work: no exit is needed,
onion traffic never leaves Tor) from the system's ``tor`` and
``tor-gencert``, waits until the authority publishes a consensus that lists
every relay as running, and then hands out the torrc lines a client Tor
needs to join it (:meth:`PrivateTorNetwork.client_torrc_lines`).

Everything it starts is torn down by :meth:`PrivateTorNetwork.stop`: the
processes are killed and their directories removed, also when starting
failed half-way. Each tor's stdout goes to ``<its dir>/tor.log``; errors
quote the tail of every log.

What makes such a network come up reliably (measured on the project's
test machines, and encoded in the torrc lines below):

- every torrc: ``TestingTorNetwork 1``, ``UseDefaultFallbackDirs 0``,
  ``ClientUseIPv6 0``, a cookie-authenticated control port, one
  ``DirAuthority`` line per authority, and tor is run with
  ``--defaults-torrc /dev/null`` so nothing is read from ``/etc/tor``;
- relays and authorities: ``AssumeReachable 1`` (without it nothing is ever
  listed as running on loopback) and ``ExitRelay 0``;
- the authority: ``TestingDirAuthVoteGuard *`` (clients refuse to build
  circuits without guards), ``TestingDirAuthVoteHSDir`` naming the
  authority (the only directory cache, so the only place a descriptor can
  be stored), short voting intervals, and a voting start offset a few
  seconds ahead so that the first vote already sees the relays;
- plain relays: ``DirCache 0`` and no DirPort;
- clients start only once a consensus with all relays exists;
- clients: ``UseEntryGuards 0`` and ``VanguardsLiteEnabled 0``. Tor only
  takes directory caches as guards, so here the authority is every client's
  only guard; and onion-service circuits built with vanguards pick their
  last hop without excluding the guard. About a minute after start, once
  the authority's observed bandwidth (the only non-zero one) dominates the
  consensus weights, that last hop is nearly always the authority too, the
  circuit (authority, relay, authority) is refused, and a client started
  then stays at 95 % bootstrap for good. Without guards and vanguards the
  last hop is picked first and the other hops exclude it.
- every node also runs with ``VanguardsLiteEnabled 0``: the relays' own
  pre-built onion circuits otherwise fail every second for want of distinct
  layer-2 nodes, which only burns CPU.

What makes it fast: every tor of the network, and every client joining it
(:meth:`PrivateTorNetwork.client_torrc_lines`), runs its KIST cell
scheduler every millisecond instead of tor's default 10 ms
(:data:`KIST_RUN_INTERVAL_MS`). On loopback the wire costs nothing, so the
scheduler's batching wait at each stop of an onion circuit is most of the
round trip, and a circuit moves at most one window per round trip (its
congestion window: these tors run congestion control without being told,
see below; 400-1070 cells, 0.2-0.5 MB, seen in the back-pressure check):
with 10 ms the tors used about 60 % of one core
between them, so waiting, not CPU, was the limit. Measured on 2
shared cores with tor 0.4.9: the conformance suite's bulk check (10,000
messages of up to 64 KiB each way at once, about 330 MB each way through
two nodes) took 100-109 s with 10 ms, 63-85 s with 2 ms and 32-77 s
(median 44 s) with 1 ms; one raw stream to an onion service carried
2-5 MB/s with 10 ms and 5-21 MB/s with 1 ms. Tried and left out:
``Schedulers Vanilla`` (1-2 MB/s for one stream), congestion control set
in the consensus as on the public network (``cc_alg=2``: 48-63 s on the
bulk check, no gain; tor 0.4.9 runs it without the parameter anyway: its
circuits report a congestion window in CIRC_BW events and its streams
get XOFF), and the interval as a consensus parameter
(``KISTSchedRunInterval``), which these tors did not pick up.

Use it as a context manager, or through the session fixture in
:mod:`lnpmsg.testing.pytest_tor`::

    with PrivateTorNetwork() as net:
        lines = net.client_torrc_lines()
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from lnpmsg.transports.tor.process import (
    base_command,
    find_tor,
    indent,
    join_torrc,
    pick_free_ports,
    tail_text,
)

__all__ = [
    "DEFAULT_RELAYS",
    "KIST_RUN_INTERVAL_MS",
    "NetworkTor",
    "PrivateTorNetwork",
    "PrivateTorNetworkError",
]

log = logging.getLogger(__name__)

#: plain relays besides the authority: 1 + 3 is the smallest network in
#: which a client can build the 4-hop circuits onion services need with
#: distinct relays on every hop
DEFAULT_RELAYS = 3

#: how long to wait for the first consensus that lists every relay; it
#: normally appears 5-10 s after start, the rest is headroom for a busy machine
DEFAULT_START_TIMEOUT = 90.0

#: voting timetable of the authority (seconds). Votes and signatures are
#: exchanged within one interval, so VOTE_DELAY + DIST_DELAY < INITIAL_INTERVAL.
INITIAL_VOTING_INTERVAL = 5
VOTING_INTERVAL = 10
VOTE_DELAY = 2
DIST_DELAY = 2

#: how far after start the first vote is placed: relays need about this long
#: to start and upload their descriptors to the authority
FIRST_VOTE_LEAD = 3

#: milliseconds between runs of tor's KIST cell scheduler, on every tor of
#: the network and every client joining it (tor's default: 10; the public
#: network's consensus has asked for 2). KIST holds cells back until its next
#: run to batch socket writes; at the eight stops of an onion circuit on
#: loopback (six relays and a tor at each end) that wait is most of the
#: round trip, which limits a circuit to one congestion window per round trip.
#: See the module's notes for the figures.
KIST_RUN_INTERVAL_MS = 1

#: how long a stopping tor may take before it is killed
STOP_GRACE = 5.0

#: poll period while waiting for the consensus
POLL_INTERVAL = 0.25

_PASSPHRASE = b"lnpmsg-private-tor-network\n"


class PrivateTorNetworkError(RuntimeError):
    """The private Tor network could not be started (the message quotes the tors' logs)."""


@dataclass(slots=True)
class NetworkTor:
    """One tor process of the private network."""

    nickname: str
    role: str  # "authority" or "relay"
    directory: Path
    or_port: int
    dir_port: int | None = None
    fingerprint: str = ""
    v3_identity: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def torrc(self) -> Path:
        return self.directory / "torrc"

    @property
    def log_path(self) -> Path:
        return self.directory / "tor.log"

    @property
    def control_port_file(self) -> Path:
        return self.directory / "control-port"

    def log_tail(self, lines: int = 15) -> str:
        return tail_text(self.log_path, lines)


class PrivateTorNetwork:
    """One directory authority plus ``relays`` relays on free 127.0.0.1 ports.

    ``base_dir``: where the network's directories go (a new temporary
    directory inside it; default: the system's temporary directory).
    ``tor`` / ``tor_gencert``: executables (default: found on ``PATH``).
    """

    def __init__(
        self,
        relays: int = DEFAULT_RELAYS,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        tor: str | None = None,
        tor_gencert: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        if relays < 1:
            raise ValueError("a private Tor network needs at least one relay besides the authority")
        self._relay_count = relays
        self._base_dir = base_dir
        self._tor_arg = tor
        self._gencert_arg = tor_gencert
        self.start_timeout = start_timeout
        self.directory: Path | None = None
        self.nodes: list[NetworkTor] = []
        #: seconds from the first tor process started to the consensus with all relays
        self.startup_seconds: float | None = None
        #: seconds for the whole of :meth:`start` (key generation included)
        self.total_start_seconds: float | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Generate keys, start every tor, and return once the consensus lists them all.

        Raises :class:`PrivateTorNetworkError` (after tearing everything
        down) if a tor fails or no full consensus appears within
        ``start_timeout`` seconds.
        """
        if self._started:
            raise PrivateTorNetworkError("this network was already started")
        self._started = True
        began = time.monotonic()
        try:
            tor = find_tor(self._tor_arg)
            gencert = find_tor(self._gencert_arg, name="tor-gencert")
            self.directory = Path(tempfile.mkdtemp(prefix="lnpmsg-tornet-", dir=self._base_dir))
            self._plan()
            self._make_keys(tor, gencert)
            self._write_torrcs()
            launched = time.monotonic()
            for node in self.nodes:
                self._launch(tor, node)
            self._wait_for_consensus()
            self.startup_seconds = time.monotonic() - launched
            self.total_start_seconds = time.monotonic() - began
            log.info(
                "private Tor network up: consensus with %d relays %.1f s after start (%.1f s in all)",
                len(self.nodes),
                self.startup_seconds,
                self.total_start_seconds,
            )
        except BaseException as exc:
            report = self._failure_report()
            self.stop()
            if isinstance(exc, PrivateTorNetworkError):
                raise PrivateTorNetworkError(f"{exc}\n{report}") from None
            if isinstance(exc, Exception):
                raise PrivateTorNetworkError(f"private Tor network failed to start: {exc}\n{report}") from exc
            raise

    def stop(self) -> None:
        """Stop every tor (terminate, then kill after a grace period) and remove the directories.

        Idempotent; safe after a failed start.
        """
        running = [n.process for n in self.nodes if n.process is not None and n.process.poll() is None]
        for proc in running:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:
            node.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    # -- what clients need -------------------------------------------------

    @property
    def authority(self) -> NetworkTor:
        return self.nodes[0]

    def dir_authority_lines(self) -> list[str]:
        """The ``DirAuthority`` torrc line of every authority."""
        return [_dir_authority_line(n) for n in self.nodes if n.role == "authority"]

    def client_torrc_lines(self) -> list[str]:
        """The torrc lines a client Tor (e.g. a node's own) needs to join this network.

        Besides the authority, they turn off entry guards and vanguards-lite,
        which cannot work in a network this small, and run the cell scheduler
        as often as the network's relays do (see the module's notes).
        """
        if self.startup_seconds is None:
            raise PrivateTorNetworkError("the private Tor network is not running")
        return [
            "TestingTorNetwork 1",
            "UseDefaultFallbackDirs 0",
            "ClientUseIPv6 0",
            "UseEntryGuards 0",
            "VanguardsLiteEnabled 0",
            # a client is an end of each of its circuits: its scheduling
            # wait counts in every round trip like a relay's
            f"KISTSchedRunInterval {KIST_RUN_INTERVAL_MS}",
            *self.dir_authority_lines(),
        ]

    def consensus(self) -> dict[str, frozenset[str]]:
        """The authority's current consensus: relay fingerprint (hex) -> its flags.

        Empty while no consensus exists yet.
        """
        dir_port = self.authority.dir_port
        assert dir_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", dir_port, timeout=5)
        try:
            conn.request("GET", "/tor/status-vote/current/consensus")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            return {}
        return _parse_consensus(body.decode("utf-8", "replace"))

    def logs_tail(self, lines: int = 15) -> str:
        """The last lines of every tor's log, labelled by nickname."""
        parts = []
        for node in self.nodes:
            parts.append(f"--- {node.nickname} ({node.role}) {node.log_path}:\n{indent(node.log_tail(lines))}")
        return "\n".join(parts)

    # -- steps of start() --------------------------------------------------

    def _plan(self) -> None:
        assert self.directory is not None
        ports = pick_free_ports(2 + self._relay_count)
        auth = NetworkTor("auth0", "authority", self.directory / "auth0", or_port=ports[0], dir_port=ports[1])
        self.nodes = [auth]
        for i in range(self._relay_count):
            name = f"relay{i + 1}"
            self.nodes.append(NetworkTor(name, "relay", self.directory / name, or_port=ports[2 + i]))
        for node in self.nodes:
            node.data_dir.mkdir(parents=True, mode=0o700)

    def _make_keys(self, tor: str, gencert: str) -> None:
        auth = self.authority
        keys = auth.data_dir / "keys"
        keys.mkdir(mode=0o700)
        cert = keys / "authority_certificate"
        _run(
            [
                gencert,
                "--create-identity-key",
                "-m", "12",
                "-a", f"127.0.0.1:{auth.dir_port}",
                "--passphrase-fd", "0",
                "-i", str(keys / "authority_identity_key"),
                "-s", str(keys / "authority_signing_key"),
                "-c", str(cert),
            ],
            stdin=_PASSPHRASE,
            what="tor-gencert",
        )
        for line in cert.read_text().splitlines():
            if line.startswith("fingerprint "):
                auth.v3_identity = line.split()[1]
        if not auth.v3_identity:
            raise PrivateTorNetworkError(f"no fingerprint line in {cert}")
        # The relay identities are generated up front so the consensus can be
        # checked for them. Under TestingTorNetwork tor insists on a
        # DirAuthority line even for this, so a placeholder stands in until
        # the authority's own line is known.
        placeholder = f"DirAuthority placeholder orport=1 no-v2 v3ident={'0' * 40} 127.0.0.1:1 {'0' * 40}"
        procs = []
        for node in self.nodes:
            rc = node.directory / "torrc-fingerprint"
            rc.write_text(join_torrc([*self._node_lines(node), placeholder]))
            cmd = [*base_command(tor, rc), "--list-fingerprint"]
            procs.append((node, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        for node, proc in procs:
            out, _ = proc.communicate(timeout=60)
            text = out.decode("utf-8", "replace")
            if proc.returncode != 0:
                raise PrivateTorNetworkError(
                    f"tor --list-fingerprint failed for {node.nickname} (exit {proc.returncode}):\n{indent(text[-3000:])}"
                )
            node.fingerprint = _parse_fingerprint(text, node.nickname)

    def _node_lines(self, node: NetworkTor) -> list[str]:
        lines = [
            "TestingTorNetwork 1",
            "UseDefaultFallbackDirs 0",
            "ClientUseIPv6 0",
            "VanguardsLiteEnabled 0",
            f"DataDirectory {node.data_dir}",
            f"Nickname {node.nickname}",
            "Address 127.0.0.1",
            f"ORPort 127.0.0.1:{node.or_port}",
            "SocksPort 0",
            "ControlPort 127.0.0.1:auto",
            f"ControlPortWriteToFile {node.control_port_file}",
            "CookieAuthentication 1",
            "ContactInfo lnpmsg private test network",
            "AssumeReachable 1",
            "ExitRelay 0",
            "ExitPolicy reject *:*",
            # relays otherwise linger 30 s on SIGTERM to drain circuits
            "ShutdownWaitLength 0",
            # each hop's batching wait adds to every round trip on loopback
            f"KISTSchedRunInterval {KIST_RUN_INTERVAL_MS}",
            "SafeLogging 0",
            "Log notice stdout",
            # exits by itself if this process dies without stopping it
            f"__OwningControllerProcess {os.getpid()}",
        ]
        if node.role == "authority":
            lines += [f"DirPort 127.0.0.1:{node.dir_port}", "AuthoritativeDirectory 1", "V3AuthoritativeDirectory 1"]
        else:
            lines += ["DirCache 0"]
        return lines

    def _write_torrcs(self) -> None:
        dir_auth = self.dir_authority_lines()
        authorities = ",".join(f"${n.fingerprint}" for n in self.nodes if n.role == "authority")
        for node in self.nodes:
            lines = [*self._node_lines(node), *dir_auth]
            if node.role == "authority":
                lines += [
                    f"TestingV3AuthInitialVotingInterval {INITIAL_VOTING_INTERVAL}",
                    f"V3AuthVotingInterval {VOTING_INTERVAL}",
                    f"TestingV3AuthInitialVoteDelay {VOTE_DELAY}",
                    f"TestingV3AuthInitialDistDelay {DIST_DELAY}",
                    f"V3AuthVoteDelay {VOTE_DELAY}",
                    f"V3AuthDistDelay {DIST_DELAY}",
                    f"TestingV3AuthVotingStartOffset {_voting_offset(time.time())}",
                    "TestingDirAuthVoteGuard *",
                    f"TestingDirAuthVoteHSDir {authorities}",
                    "TestingDirAuthVoteHSDirIsStrict 1",
                ]
            node.torrc.write_text(join_torrc(lines))

    def _launch(self, tor: str, node: NetworkTor) -> None:
        with open(node.log_path, "wb") as out:
            node.process = subprocess.Popen(
                base_command(tor, node.torrc),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=node.directory,
            )

    def _wait_for_consensus(self) -> None:
        wanted = {n.fingerprint for n in self.nodes}
        deadline = time.monotonic() + self.start_timeout
        seen: dict[str, frozenset[str]] = {}
        while True:
            for node in self.nodes:
                assert node.process is not None
                code = node.process.poll()
                if code is not None:
                    raise PrivateTorNetworkError(f"tor {node.nickname} exited with code {code} during start")
            try:
                seen = self.consensus()
            except (OSError, http.client.HTTPException):
                seen = {}
            running = {fp for fp, flags in seen.items() if "Running" in flags and "Valid" in flags}
            if wanted <= running:
                return
            if time.monotonic() > deadline:
                missing = sorted(n.nickname for n in self.nodes if n.fingerprint not in running)
                raise PrivateTorNetworkError(
                    f"no consensus listing every relay as running after {self.start_timeout:g} s "
                    f"(missing: {', '.join(missing)}; consensus has {len(seen)} relays)"
                )
            time.sleep(POLL_INTERVAL)

    def _failure_report(self) -> str:
        if not self.nodes or self.directory is None:
            return ""
        return "tor logs:\n" + self.logs_tail()


def _dir_authority_line(node: NetworkTor) -> str:
    return (
        f"DirAuthority {node.nickname} orport={node.or_port} no-v2 v3ident={node.v3_identity} "
        f"127.0.0.1:{node.dir_port} {node.fingerprint}"
    )


def _voting_offset(now: float) -> int:
    """The ``TestingV3AuthVotingStartOffset`` that puts the first vote ``FIRST_VOTE_LEAD`` s ahead.

    Tor schedules a consensus at every ``valid_after`` with
    ``(valid_after - offset) % interval == 0`` and votes
    ``VOTE_DELAY + DIST_DELAY`` seconds before it.
    """
    first_valid_after = int(now) + FIRST_VOTE_LEAD + VOTE_DELAY + DIST_DELAY
    return first_valid_after % INITIAL_VOTING_INTERVAL


def _parse_fingerprint(output: str, nickname: str) -> str:
    for line in reversed(output.splitlines()):
        parts = line.split()
        if len(parts) == 11 and parts[0] == nickname and all(len(p) == 4 for p in parts[1:]):
            return "".join(parts[1:]).upper()
    raise PrivateTorNetworkError(f"no fingerprint for {nickname} in tor --list-fingerprint output:\n{indent(output[-2000:])}")


def _parse_consensus(text: str) -> dict[str, frozenset[str]]:
    relays: dict[str, frozenset[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("r "):
            parts = line.split()
            identity = parts[2]
            raw = base64.b64decode(identity + "=" * (-len(identity) % 4))
            current = raw.hex().upper()
            relays[current] = frozenset()
        elif line.startswith("s ") and current is not None:
            relays[current] = frozenset(line.split()[1:])
    return relays


def _run(cmd: list[str], *, stdin: bytes, what: str) -> None:
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, check=False)
    if proc.returncode != 0:
        text = proc.stdout.decode("utf-8", "replace")
        raise PrivateTorNetworkError(f"{what} failed (exit {proc.returncode}):\n{indent(text[-3000:])}")
