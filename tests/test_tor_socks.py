"""SOCKS5 client (sans-IO handshake and trio shell) and TorTransport's dial rules,
against a fake SOCKS5 server in this file (no Tor needed)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.transports.base import TransportError
from lnpmsg.transports.tor.address import OnionAddress
from lnpmsg.transports.tor.errors import (
    ClearnetRefused,
    OnionAddressError,
    SocksError,
    TorError,
)
from lnpmsg.transports.tor.socks import SOCKS5_REPLY_MESSAGES, Socks5Handshake
from lnpmsg.transports.tor.transport import TRANSIENT_SOCKS_REPLIES, TorTransport, split_tor_target


def onion_for(seed: int) -> str:
    key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32).public_key()
    return OnionAddress(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hostname


ONION = onion_for(1)
PEER_ID = "02" + "ab" * 32


@dataclass
class Request:
    username: str
    password: str
    atyp: int
    host: str
    port: int


@dataclass
class FakeSocks5Server:
    """A SOCKS5 server that answers a CONNECT to port N with reply code N (code 0: success, then echo).

    ``mode``: "normal", "close-after-greeting" (hang up mid-handshake),
    "silent" (never answer), "no-auth" (refuse every method),
    "fail-once" (the first CONNECT gets the port's code, later ones succeed).
    """

    mode: str = "normal"
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        buf = bytearray()

        async def read(n: int) -> bytes:
            while len(buf) < n:
                data = await stream.receive_some()
                if not data:
                    raise EOFError
                buf.extend(data)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        try:
            async with stream:
                if self.mode == "silent":
                    await trio.sleep_forever()
                _version, count = await read(2)
                methods = await read(count)
                if self.mode == "close-after-greeting":
                    return
                if self.mode == "no-auth" or 0x02 not in methods:
                    await stream.send_all(bytes([5, 0xFF]))
                    return
                await stream.send_all(bytes([5, 0x02]))
                _, ulen = await read(2)
                username = (await read(ulen)).decode()
                (plen,) = await read(1)
                password = (await read(plen)).decode()
                await stream.send_all(bytes([1, 0]))
                _, _cmd, _, atyp = await read(4)
                if atyp == 1:
                    host = str(ipaddress.ip_address(await read(4)))
                elif atyp == 4:
                    host = str(ipaddress.ip_address(await read(16)))
                else:
                    (length,) = await read(1)
                    host = (await read(length)).decode()
                (port,) = struct.unpack(">H", await read(2))
                self.requests.append(Request(username, password, atyp, host, port))
                code = port & 0xFF if port < 0x100 else 0
                if self.mode == "fail-once" and len(self.requests) > 1:
                    code = 0
                await stream.send_all(bytes([5, code, 0, 1, 127, 0, 0, 1, 0x23, 0x28]))
                if code == 0:
                    while data := await stream.receive_some():
                        await stream.send_all(data)
        except (EOFError, trio.BrokenResourceError):
            pass


async def start_server(nursery: trio.Nursery, mode: str = "normal") -> FakeSocks5Server:
    server = FakeSocks5Server(mode)
    await nursery.start(server.serve)
    return server


@pytest.mark.parametrize("code", sorted(SOCKS5_REPLY_MESSAGES))
async def test_each_reply_code_is_a_clear_error(code: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        transport = TorTransport(("127.0.0.1", server.port), connect_timeout=10, circuit_retry_delay=0.01)
        with pytest.raises(SocksError) as info:
            await transport.dial(f"{ONION}:{code}")
        assert info.value.code == code
        # circuit failures are asked about twice, anything else once
        assert len(server.requests) == (2 if code in TRANSIENT_SOCKS_REPLIES else 1)
        assert f"0x{code:02x}" in str(info.value)
        assert SOCKS5_REPLY_MESSAGES[code] in str(info.value)
        assert ONION in str(info.value)
        nursery.cancel_scope.cancel()


async def test_a_circuit_failure_is_retried_once_and_the_stream_then_works() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, "fail-once")
        transport = TorTransport(("127.0.0.1", server.port), circuit_retry_delay=0.01)
        conn = await transport.dial(f"{ONION}:1")  # port 1: reply 0x01 (general failure) the first time
        await conn.send_frames([b"ping"])
        assert await conn.receive_some(10) == b"ping"
        await conn.aclose()
        assert [r.port for r in server.requests] == [1, 1]
        nursery.cancel_scope.cancel()


async def test_host_unreachable_for_onion_says_onion_service_not_reachable() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        onion_only = TorTransport(("127.0.0.1", server.port))
        with pytest.raises(
            SocksError, match="^onion service not reachable: .*host unreachable"
        ):
            await onion_only.dial(f"{ONION}:4")
        clearnet = TorTransport(("127.0.0.1", server.port), allow_clearnet=True)
        with pytest.raises(
            SocksError,
            match="^Tor could not connect to example.com:4: host unreachable",
        ):
            await clearnet.dial("example.com:4")
        nursery.cancel_scope.cancel()


async def test_success_sends_name_to_proxy_and_carries_bytes() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        transport = TorTransport(("127.0.0.1", server.port), allow_clearnet=True)
        conn = await transport.dial(f"{PEER_ID}@{ONION.upper()}:9735")
        assert conn.kind == "tor"
        assert conn.remote_address == f"{ONION}:9735"
        await conn.send_frames([b"one ", b"two ", b"three"])
        got = b""
        while len(got) < 13:
            got += await conn.receive_some()
        assert got == b"one two three"
        await conn.aclose()
        await (await transport.dial("not-resolvable.invalid:9735")).aclose()
        await (await transport.dial("192.0.2.7:9735")).aclose()
        await (await transport.dial("[2001:db8::1]:9735")).aclose()
        # Host names always reach the proxy as names (ATYP 3): never resolved here.
        assert [(r.atyp, r.host, r.port) for r in server.requests] == [
            (3, ONION, 9735),
            (3, "not-resolvable.invalid", 9735),
            (1, "192.0.2.7", 9735),
            (4, "2001:db8::1", 9735),
        ]
        nursery.cancel_scope.cancel()


async def test_stream_isolation_credentials_per_peer() -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        transport = TorTransport(("127.0.0.1", server.port))
        other_node = TorTransport(("127.0.0.1", server.port))
        other_onion = onion_for(2)
        for target in (
            f"{PEER_ID}@{ONION}:9735",
            f"{PEER_ID}@{ONION}:9735",
            f"{ONION}:9735",
            f"{other_onion}:9735",
        ):
            await (await transport.dial(target)).aclose()
        await (await other_node.dial(f"{PEER_ID}@{ONION}:9735")).aclose()
        users = [r.username for r in server.requests]
        passwords = [r.password for r in server.requests]
        assert users[0] == users[1] == PEER_ID
        assert len({users[0], users[2], users[3]}) == 3
        assert len(set(passwords[:4])) == 1
        assert users[4] == PEER_ID and passwords[4] != passwords[0]
        nursery.cancel_scope.cancel()


async def test_clearnet_refused_before_any_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[object] = []
    real_socket = trio.socket.socket

    def counting_socket(*args: object, **kwargs: object) -> object:
        opened.append(args)
        return real_socket(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trio.socket, "socket", counting_socket)
    # The port is closed: reaching it at all would be a different error.
    transport = TorTransport(("127.0.0.1", 9))
    for target in (
        "example.com:9735",
        "203.0.113.5:9735",
        "[2001:db8::1]:9735",
        f"{PEER_ID}@example.com:9735",
    ):
        with pytest.raises(ClearnetRefused, match="not an onion address"):
            await transport.dial(target)
    assert opened == []
    assert issubclass(ClearnetRefused, TransportError)


async def test_malformed_onion_rejected_before_any_socket() -> None:
    transport = TorTransport(("127.0.0.1", 9))
    with pytest.raises(OnionAddressError, match="checksum"):
        await transport.dial(("b" if ONION[0] != "b" else "c") + ONION[1:] + ":9735")
    with pytest.raises(OnionAddressError, match="v2"):
        await transport.dial("expyuzz4wqqyqhjn.onion:9735")
    with pytest.raises(TorError, match="missing port"):
        await transport.dial(ONION)


async def test_no_proxy_listening() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = TorTransport(("127.0.0.1", port))
    with pytest.raises(
        TorError, match="cannot reach Tor's SOCKS port .*is Tor running"
    ):
        await transport.dial(f"{ONION}:9735")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("close-after-greeting", "closed the connection during the handshake"),
        ("no-auth", "accepts none of our authentication methods"),
        ("silent", "no answer through Tor within 0.3 s"),
    ],
)
async def test_misbehaving_proxy(mode: str, message: str) -> None:
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery, mode)
        transport = TorTransport(("127.0.0.1", server.port), connect_timeout=0.3)
        with pytest.raises(SocksError, match=message):
            await transport.dial(f"{ONION}:9735")
        nursery.cancel_scope.cancel()


def test_transport_refuses_remote_socks_port() -> None:
    with pytest.raises(TorError, match="loopback"):
        TorTransport(("192.0.2.1", 9050))


async def test_listen_only_on_loopback() -> None:
    transport = TorTransport(("127.0.0.1", 9050))
    with pytest.raises(TorError, match="127.0.0.1"):
        await transport.listen("0.0.0.0:0")
    listener = await transport.listen("127.0.0.1:0")
    assert listener.local_address.startswith("127.0.0.1:")
    await listener.aclose()


def test_split_tor_target() -> None:
    assert split_tor_target(f"{PEER_ID}@{ONION.upper()}:9735") == (PEER_ID, ONION, 9735)
    assert split_tor_target("example.com:80") == (None, "example.com", 80)
    with pytest.raises(TorError):
        split_tor_target("@x.onion:1")


# -- the sans-IO handshake on its own ------------------------------------------


def test_handshake_steps_and_exact_reads() -> None:
    hs = Socks5Handshake("example.com", 443, "user", "pw")
    assert hs.start() == b"\x05\x01\x02"
    assert hs.bytes_wanted == 2
    auth = hs.receive_data(b"\x05\x02")
    assert auth == b"\x01\x04user\x02pw"
    connect = hs.receive_data(b"\x01\x00")
    assert connect == b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    assert hs.bytes_wanted == 5
    assert hs.receive_data(b"\x05\x00\x00\x03\x04") == b""
    assert hs.bytes_wanted == 4 + 1 + 4 + 2 - 5
    assert not hs.done
    hs.receive_data(b"abcd\x00\x50extra")
    assert hs.done
    assert hs.bound_address == ("abcd", 80)
    assert hs.unused_data == b"extra"


def test_handshake_without_credentials() -> None:
    hs = Socks5Handshake("10.0.0.1", 80)
    assert hs.start() == b"\x05\x01\x00"
    assert hs.receive_data(b"\x05\x00") == b"\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"


def test_failure_code_reported_before_full_reply() -> None:
    hs = Socks5Handshake(ONION, 9735)
    hs.start()
    hs.receive_data(b"\x05\x00")
    with pytest.raises(SocksError) as info:
        hs.receive_data(b"\x05\xf0")
    assert info.value.code == 0xF0
    with pytest.raises(SocksError, match="already failed"):
        hs.receive_data(b"\x00")


def test_bad_arguments() -> None:
    with pytest.raises(SocksError):
        Socks5Handshake("x" * 256, 80)
    with pytest.raises(SocksError):
        Socks5Handshake("example.com", 0)
    with pytest.raises(SocksError):
        Socks5Handshake("example.com", 80, "user", None)
    with pytest.raises(SocksError, match="ASCII"):
        Socks5Handshake("bücher.example", 80)


@given(st.lists(st.binary(max_size=30), max_size=8), st.booleans())
def test_any_server_bytes_give_only_socks_errors(
    chunks: list[bytes], creds: bool
) -> None:
    hs = Socks5Handshake(ONION, 9735, *(("u", "p") if creds else (None, None)))
    hs.start()
    try:
        for chunk in chunks:
            hs.receive_data(chunk)
    except SocksError:
        return
    assert hs.bytes_wanted >= 0


@pytest.mark.parametrize("module", ["lnpmsg.transports.tor.socks", "lnpmsg.transports.tor.address"])
def test_protocol_cores_do_no_io(module: str) -> None:
    """The SOCKS handshake and the address rules are sans-IO: no trio, socket, stem or clock."""
    import ast
    import importlib

    source = Path(importlib.import_module(module).__file__ or "").read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"trio", "socket", "stem", "time", "asyncio", "socks"}
