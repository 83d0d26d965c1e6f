"""Onion-only rules of the node, its Tor options, and the clear errors of a Tor
that is missing, refuses us or never bootstraps. No Tor network needed: a
recording SOCKS5 server stands in for Tor's SOCKS port, and the tors started
here have no directory authority they can reach."""

from __future__ import annotations

import argparse
import os
import re
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from lnpmsg.cli import build_parser
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError, Node, NodeConfig
from lnpmsg.tor_app import NodeTor, TorGate, TorSettings, settings_from_args
from lnpmsg.transports.base import TransportError
from lnpmsg.transports.tcp import TcpTransport
from lnpmsg.transports.tor.control import LaunchedTor
from lnpmsg.transports.tor.errors import (
    ClearnetRefused,
    OnionAddressError,
    TorBootstrapError,
    TorError,
    TorNotFound,
)
from lnpmsg.transports.tor.process import find_tor, pick_free_ports
from lnpmsg.transports.tor.transport import TorTransport

#: a Tor that can never bootstrap: its only directory authority is a closed
#: loopback port, so it never leaves 127.0.0.1 (and answers its control port)
DEAD_PORT = pick_free_ports(1)[0]
OFFLINE = (
    "TestingTorNetwork 1",
    "UseDefaultFallbackDirs 0",
    f"DirAuthority nowhere orport={DEAD_PORT} no-v2 v3ident={'A' * 40} 127.0.0.1:{DEAD_PORT} {'B' * 40}",
)
PASSWORD = "onion only"
PEER = NodeKey.generate().node_id.hex()
ONION = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"


# -- a SOCKS5 port that records what it is asked, and refuses it ----------------


@dataclass
class RecordingSocks:
    """Answers every CONNECT with reply 0x02 (not allowed by ruleset), after noting its target."""

    requests: list[tuple[int, str, int]] = field(default_factory=list)
    #: the SOCKS username of each request (Tor's stream isolation key)
    usernames: list[str] = field(default_factory=list)
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()

        async def read(n: int) -> bytes:
            while len(buffer) < n:
                data = await stream.receive_some()
                if not data:
                    raise EOFError
                buffer.extend(data)
            out = bytes(buffer[:n])
            del buffer[:n]
            return out

        async with stream:
            try:
                _, count = await read(2)
                await read(count)
                await stream.send_all(b"\x05\x02")  # username/password (Tor's stream isolation)
                _, length = await read(2)
                username = (await read(length)).decode()
                (length,) = await read(1)
                await read(length)
                await stream.send_all(b"\x01\x00")
                _, _, _, atyp = await read(4)
                if atyp == 3:
                    (length,) = await read(1)
                    host = (await read(length)).decode()
                else:
                    host = ".".join(str(b) for b in await read(4 if atyp == 1 else 16))
                (port,) = struct.unpack(">H", await read(2))
                self.requests.append((atyp, host, port))
                self.usernames.append(username)
                await stream.send_all(b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00")
            except (EOFError, trio.BrokenResourceError):
                pass


@dataclass
class CountingListener:
    """A plain TCP listener that counts the connections it gets."""

    accepted: int = 0
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()

        async def count(stream: trio.SocketStream) -> None:
            self.accepted += 1
            await stream.aclose()

        await trio.serve_listeners(count, listeners)


def onion_only(**config: object) -> Node:
    return Node(NodeKey.generate(), NodeConfig(onion_only=True, **config))  # type: ignore[arg-type]


async def run_until_started(node: Node) -> BaseException:
    """Start ``node`` and return the error its start failed with."""
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
    error: BaseException = info.value
    while isinstance(error, BaseExceptionGroup):
        (error,) = error.exceptions
    return error


# -- the node's onion-only rules ---------------------------------------------------


def test_onion_only_node_has_no_transport_around_tor() -> None:
    assert onion_only().transports == {}
    node = onion_only(tor_socks=("127.0.0.1", 9050))
    assert set(node.transports) == {"tor"}
    transport = node.transports["tor"]
    assert isinstance(transport, TorTransport) and transport.allow_clearnet
    strict = onion_only(tor_socks=("127.0.0.1", 9050), onion_to_onion=True).transports["tor"]
    assert isinstance(strict, TorTransport) and not strict.allow_clearnet
    with pytest.raises(TransportError, match="only the tor transport may be enabled, not tcp"):
        Node(NodeKey.generate(), NodeConfig(onion_only=True), transports={"tcp": TcpTransport()})
    with pytest.raises(ValueError, match="onion_to_onion needs onion_only"):
        Node(NodeKey.generate(), NodeConfig(onion_to_onion=True))
    # mixed mode keeps every medium, plus Tor
    mixed = Node(NodeKey.generate(), NodeConfig(tor_socks=("127.0.0.1", 9050)))
    assert {"tcp", "tor"} <= set(mixed.transports)


async def test_onion_only_node_refuses_clearnet_listeners() -> None:
    node = onion_only(listen=["127.0.0.1:0"])
    error = await run_until_started(node)
    assert isinstance(error, TransportError)
    assert "onion-only mode: refusing to listen on 127.0.0.1:0" in str(error)
    assert node.listeners == [] and node.listen_addresses == []


async def test_every_dial_of_an_onion_only_node_goes_to_tor() -> None:
    async with trio.open_nursery() as nursery:
        socks, target = RecordingSocks(), CountingListener()
        await nursery.start(socks.serve)
        await nursery.start(target.serve)
        node = onion_only(tor_socks=("127.0.0.1", socks.port))
        await nursery.start(node.run)

        # A clearnet peer goes out through Tor (an exit), never straight to it.
        with pytest.raises(ConnectError, match="not allowed by ruleset"):
            await node.connect(f"{PEER}@127.0.0.1:{target.port}")
        # A host name goes to Tor as a name: no local DNS lookup.
        with pytest.raises(ConnectError):
            await node.connect(f"{PEER}@peer.example.com:9735")
        with pytest.raises(ConnectError):
            await node.connect(f"{PEER}@{ONION}:9735")
        assert socks.requests == [(1, "127.0.0.1", target.port), (3, "peer.example.com", 9735), (3, ONION, 9735)]
        assert target.accepted == 0

        # Media Tor cannot carry are refused, not dialed around it.
        for address in (f"udp://{PEER}@127.0.0.1:{target.port}", f"zmq+tcp://{PEER}@127.0.0.1:{target.port}", f"zmq+ipc://{PEER}@/tmp/x.sock"):
            with pytest.raises(ConnectError, match="onion-only mode: refusing to dial .*cannot be carried by Tor"):
                await node.connect(address)
        # A malformed onion never reaches a socket.
        with pytest.raises(ConnectError, match="checksum") as info:
            await node.connect(f"{PEER}@{ONION[:10]}a{ONION[11:]}:9735")
        assert isinstance(info.value.__cause__, OnionAddressError)
        assert len(socks.requests) == 3 and target.accepted == 0
        node.stop()
        nursery.cancel_scope.cancel()


async def test_onion_to_onion_refuses_clearnet_before_any_socket() -> None:
    async with trio.open_nursery() as nursery:
        socks, target = RecordingSocks(), CountingListener()
        await nursery.start(socks.serve)
        await nursery.start(target.serve)
        node = onion_only(tor_socks=("127.0.0.1", socks.port), onion_to_onion=True)
        await nursery.start(node.run)
        for address in (f"{PEER}@127.0.0.1:{target.port}", f"{PEER}@peer.example.com:9735", f"tor://{PEER}@10.1.2.3:9735"):
            with pytest.raises(ConnectError, match="not an onion address") as info:
                await node.connect(address)
            assert isinstance(info.value.__cause__, ClearnetRefused)
        assert socks.requests == [] and target.accepted == 0
        node.stop()
        nursery.cancel_scope.cancel()


async def test_onion_only_node_without_tor_says_so() -> None:
    node = onion_only()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with pytest.raises(ConnectError, match="onion-only mode: no Tor to dial through"):
            await node.connect(f"{PEER}@{ONION}:9735")
        node.stop()


async def test_tor_gate_waits_for_tor_then_names_why_it_is_down() -> None:
    gate = TorGate(allow_clearnet=False, connect_timeout=0.3)
    with pytest.raises(ClearnetRefused, match="onion-to-onion"):
        await gate.dial("127.0.0.1:9735")
    with pytest.raises(TorError, match=f"cannot dial {ONION}:9735 through Tor: Tor is not started yet"):
        await gate.dial(f"{ONION}:9735")
    gate.set_down("Tor is being brought back (tor exited with code -9)")
    with pytest.raises(TorError, match=r"Tor is being brought back \(tor exited with code -9\)"):
        await gate.dial(f"{ONION}:9735")
    with pytest.raises(TorError, match="must be on a loopback address"):
        await gate.listen("0.0.0.0:0")
    listener = await gate.listen("127.0.0.1:0")
    assert listener.local_address.startswith("127.0.0.1:")
    await listener.aclose()


async def test_tor_gate_isolates_every_dial() -> None:
    """Each attempt gets circuits of its own: a stalled rendezvous circuit cannot hold up a reconnect."""
    async with trio.open_nursery() as nursery:
        socks = RecordingSocks()
        await nursery.start(socks.serve)
        gate = TorGate(allow_clearnet=False)
        gate.set_up(TorTransport(("127.0.0.1", socks.port), connect_timeout=5))
        for target in (f"{ONION}:9735", f"{ONION}:9735", f"{PEER}@{ONION}:9735"):
            with pytest.raises(TorError, match="not allowed by ruleset"):
                await gate.dial(target)
        assert socks.usernames == [f"{ONION}:9735#1", f"{ONION}:9735#2", f"{PEER}#3"]
        nursery.cancel_scope.cancel()


# -- the node's Tor: missing, refusing, never ready ------------------------------


async def test_node_tor_not_installed(tmp_path: Path) -> None:
    node = onion_only()
    node_tor = node.mount(NodeTor(TorSettings(tmp_path, tor_path=str(tmp_path / "no-such-tor"))))
    error = await run_until_started(node)
    assert isinstance(error, TorNotFound)
    assert "tor executable not found at" in str(error)
    assert node_tor.tor_state == "stopped" and node.listen_addresses == []


async def test_node_tor_that_never_bootstraps_is_stopped_with_a_clear_error(tmp_path: Path) -> None:
    node = onion_only()
    node_tor = node.mount(NodeTor(TorSettings(tmp_path, extra_torrc=OFFLINE, bootstrap_timeout=1.0)))
    error = await run_until_started(node)
    assert isinstance(error, TorBootstrapError)
    assert "Tor did not finish bootstrapping within 1 s: stuck at" in str(error)
    assert "tor's output" in str(error)  # the tail of tor's log comes with it
    assert node_tor.handle is None and node_tor.tor_state == "stopped"
    # the tor it launched was stopped, not left behind
    assert "exiting" in (tmp_path / "tor" / "tor.log").read_text().lower()


# -- `lnpmsg node` with bad Tor settings: clear errors, no crash ---------------


def lnpmsg_node(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lnpmsg.cli", "node", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def hashed(password: str) -> str:
    out = subprocess.run([find_tor(), "--hash-password", password], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_cli_tor_not_installed(tmp_path: Path) -> None:
    result = lnpmsg_node(tmp_path, "--onion-only", "--tor-path", str(tmp_path / "missing" / "tor"))
    assert result.returncode == 1
    assert "cannot start: tor executable not found at" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--onion-only", "--listen", "0.0.0.0:9735"], "--onion-only: the node has no clearnet listener"),
        (["--tor-password", "x"], "--tor-password and --tor-cookie authenticate to --tor-control"),
        (["--tor-control", "127.0.0.1:9051", "--tor-password", "x", "--tor-cookie", "/c"], "not both"),
        (["--tor-control", "127.0.0.1:9051", "--tor-option", "UseBridges 1"], "are for a launched tor"),
        (["--tor", "--tor-socks", "127.0.0.1:9050"], "brings its own SOCKS port"),
        (["--tor-option", "UseBridges 1"], "need --tor"),
        (["--tor-control", "127.0.0.1"], "bad --tor-control"),
        (["--tor", "--tor-timeout", "0"], "--tor-timeout must be positive"),
    ],
)
def test_conflicting_tor_options_are_named(args: list[str], message: str) -> None:
    parsed = build_parser().parse_args(["node", *args])
    socks = ("127.0.0.1", 9050) if parsed.tor_socks else None
    with pytest.raises(ValueError, match=message):
        settings_from_args(parsed, socks)


def test_tor_options_give_settings(tmp_path: Path) -> None:
    def settings(*args: str) -> TorSettings | None:
        parsed: argparse.Namespace = build_parser().parse_args(["node", "--data-dir", str(tmp_path), *args])
        return settings_from_args(parsed)

    assert settings() is None
    launched = settings("--onion-only", "--tor-option", "UseBridges 1", "--tor-timeout", "30")
    assert launched is not None and launched.mode == "launched"
    assert launched.extra_torrc == ("UseBridges 1",) and launched.bootstrap_timeout == 30
    assert launched.key_file == tmp_path / "onion_key"
    attached = settings("--tor-control", "127.0.0.1:9051", "--tor-cookie", "/run/tor/control.authcookie", "--no-onion-service")
    assert attached is not None and attached.mode == "attached" and attached.control == ("127.0.0.1", 9051)
    assert attached.cookie_path == Path("/run/tor/control.authcookie") and not attached.onion_service
    assert settings("--tor").mode == "launched"  # type: ignore[union-attr]


async def test_cli_wrong_password_wrong_cookie_and_no_bootstrap(tmp_path: Path) -> None:
    async with LaunchedTor(
        tmp_path / "system", extra_torrc=[*OFFLINE, f"HashedControlPassword {hashed(PASSWORD)}"], bootstrap_timeout=None
    ) as tor:
        assert isinstance(tor, LaunchedTor)
        host, port = tor.control_address
        control = f"{host}:{port}"

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return lnpmsg_node(tmp_path / "node", "--onion-only", "--tor-control", control, *args)

        wrong = await trio.to_thread.run_sync(run, "--tor-password", "wrong")
        assert wrong.returncode == 1, wrong.stderr
        assert "cannot start: Tor's control port at" in wrong.stderr
        assert "rejected the password: wrong control-port password" in wrong.stderr

        cookie = tmp_path / "cookie"
        cookie.write_bytes(os.urandom(32))
        bad_cookie = await trio.to_thread.run_sync(run, "--tor-cookie", str(cookie))
        assert bad_cookie.returncode == 1
        assert "cannot start: Tor's control port at" in bad_cookie.stderr
        assert "rejected the authentication cookie from" in bad_cookie.stderr

        never = await trio.to_thread.run_sync(run, "--tor-password", PASSWORD, "--tor-timeout", "1")
        assert never.returncode == 1
        assert "cannot start: Tor did not finish bootstrapping within 1 s" in never.stderr
        for result in (wrong, bad_cookie, never):
            assert "Traceback" not in result.stderr
        # a Tor we attach to is not ours to stop
        assert tor.returncode is None and tor.controller.is_alive


async def test_cli_onion_only_process_shows_progress_and_stops_its_tor(tmp_path: Path) -> None:
    """Ctrl-C while Tor bootstraps (it never finishes here): the node gives up the start and stops its tor."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable, "-m", "lnpmsg.cli", "node", "--data-dir", str(tmp_path), "--onion-only", "--tor-timeout", "60",
            *(arg for line in OFFLINE for arg in ("--tor-option", line)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = b""
    try:
        with trio.fail_after(30):
            while b"tor bootstrap" not in stderr:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, stderr.decode()
                stderr += chunk
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            while chunk := await process.stderr.receive_some(65536):
                stderr += chunk
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = stderr.decode()
    assert code == 0, text
    assert re.search(r"tor bootstrap \d+% \(", text)  # progress, with its percent
    assert "stopped" in text and "Traceback" not in text
    assert "exiting" in (tmp_path / "tor" / "tor.log").read_text().lower()
