"""Serve the embedded regtest chain over Bitcoin Core's JSON-RPC (the trio shell).

``lnpmsg node --chain regtest --chain-rpc-listen 127.0.0.1:18443`` mounts
``ChainRpcServer``: other processes then use the chain as they would use a
bitcoind (``lnpmsg node --bitcoind-rpc``, python-bitcoinlib, Electrum
servers...). HTTP/1.1 with keep-alive and basic auth, as bitcoind:

- credentials: the cookie file ``DATA_DIR/chain/.cookie`` (``__cookie__:HEX``,
  mode 0600, written at start, removed at a clean stop), and ``user:password``
  if given; a wrong one gets HTTP 401 after a 250 ms pause (as Core does);
- the methods and their error codes: ``lnpmsg.chain.rpc_calls`` and
  ``lnpmsg.chain.rpc_methods``; they run in worker threads (the kernel
  blocks), at most ``WORKER_THREADS`` at once, never on the trio loop;
- bounded: ``MAX_CONNECTIONS`` clients, ``MAX_BODY`` bytes per request,
  ``REQUEST_TIMEOUT`` to send a whole request, ``IDLE_TIMEOUT`` between
  kept-alive requests, ``SEND_TIMEOUT`` for a reply: a client that never
  reads loses its connection, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.rpc_calls import ChainRpcCalls
from lnpmsg.chain.rpc_http import HttpError, Request, RequestParser, response
from lnpmsg.chain.rpc_methods import Table, handle_body
from lnpmsg.io.atomic_file import write_atomic

if TYPE_CHECKING:
    from lnpmsg.wallet.app import ChainApp

__all__ = [
    "COOKIE_FILE",
    "COOKIE_USER",
    "IDLE_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "REQUEST_TIMEOUT",
    "SEND_TIMEOUT",
    "ChainRpcServer",
]

log = logging.getLogger(__name__)

COOKIE_FILE = ".cookie"
COOKIE_USER = "__cookie__"
#: a submitblock of a full 4 MB block is 8 MB of hex plus JSON
MAX_BODY = 16 * 1024 * 1024
#: clients served at once; more are answered 503 and closed
MAX_CONNECTIONS = 64
#: seconds a client may take to send one whole request
REQUEST_TIMEOUT = 60.0
#: seconds a kept-alive connection may stay idle between requests
IDLE_TIMEOUT = 120.0
#: seconds a reply may take to leave (a client that stops reading is dropped)
SEND_TIMEOUT = 30.0
#: RPC calls running at once (each in a worker thread; the chain serializes most)
WORKER_THREADS = 4
#: Core waits this long before answering a wrong password (slows guessing)
BAD_AUTH_DELAY = 0.25
_WARMUP = "Loading block index..."


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ChainRpcServer(App):
    """Bitcoin Core JSON-RPC for the embedded chain of ``chain`` (mount it after the ChainApp).

    Args:
        chain: the node's ``ChainApp`` running the embedded chain (served
            once it is open), or an open ``EmbeddedChainSource``.
        listen: ``host:port`` (port 0: any free port; see ``port`` once running).
        cookie_dir: where ``.cookie`` is written (default: the chain's dir).
        user, password: accepted besides the cookie (both or neither).
    """

    def __init__(
        self,
        chain: ChainApp | EmbeddedChainSource,
        listen: str,
        *,
        cookie_dir: str | Path | None = None,
        user: str | None = None,
        password: str | None = None,
        name: str = "chainrpc",
    ) -> None:
        super().__init__(name)
        if (user is None) != (password is None):
            raise AppError("give both an RPC user and password, or neither")
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise AppError(f"--chain-rpc-listen takes host:port, got {listen!r}")
        self.host = host.strip("[]")
        self.port = int(port)
        self.chain = chain
        default_dir = chain.core.datadir if isinstance(chain, EmbeddedChainSource) else chain.chain_dir
        if cookie_dir is None and default_dir is None:
            raise AppError("the RPC server serves an embedded chain: its ChainApp needs a chain_dir")
        self.cookie_path = Path(cookie_dir if cookie_dir is not None else default_dir) / COOKIE_FILE  # type: ignore[arg-type]
        #: the limits (module constants by default; tests shorten them)
        self.request_timeout = REQUEST_TIMEOUT
        self.idle_timeout = IDLE_TIMEOUT
        self.send_timeout = SEND_TIMEOUT
        self.max_body = MAX_BODY
        self.max_connections = MAX_CONNECTIONS
        self._credentials: list[bytes] = []
        if user is not None and password is not None:
            self._credentials.append(f"{user}:{password}".encode())
        self._calls: ChainRpcCalls | None = None
        self._table: Table = ChainRpcCalls(None).table()  # type: ignore[arg-type]  # names only, until the chain opens
        self._limiter = trio.CapacityLimiter(WORKER_THREADS)
        self._connections = 0
        self.ready = trio.Event()

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return self._connections

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, write the cookie once the chain is open, serve until the node stops."""
        try:
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        except OSError as exc:
            raise AppError(f"cannot listen for chain RPC on {self.host}:{self.port}: {exc}") from exc
        self.port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._serve_connection, listeners)
                await self._until_chain_open()
                self._write_cookie()
                log.info("chain RPC on %s (cookie %s)", self.url, self.cookie_path)
                if not _loopback(self.host):
                    log.warning("chain RPC listens beyond this machine (%s): plain HTTP, guarded only by the cookie or password", self.host)
                self.ready.set()
                task_status.started()
        finally:
            self._remove_cookie()

    async def _until_chain_open(self) -> None:
        while True:
            if isinstance(self.chain, EmbeddedChainSource):
                source: object = self.chain
            else:
                try:
                    source = self.chain.source
                except AppError:
                    source = None
            if isinstance(source, EmbeddedChainSource):
                self._calls = ChainRpcCalls(source.core)
                self._table = self._calls.table()
                return
            if source is not None:
                raise AppError("the chain RPC server needs the embedded chain (--chain regtest)")
            await trio.sleep(0.05)

    def _write_cookie(self) -> None:
        secret = secrets.token_hex(32)
        text = f"{COOKIE_USER}:{secret}"
        # Not fsynced: a new cookie is written at every start, so one a power loss took is never missed.
        write_atomic(self.cookie_path, text.encode(), durable=False, mode=0o600)
        self._credentials.append(text.encode())

    def _remove_cookie(self) -> None:
        if self._calls is not None:
            try:
                self.cookie_path.unlink()
            except OSError:
                pass

    # -- one connection -----------------------------------------------------------

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        if self._connections >= self.max_connections:
            with trio.move_on_after(1.0):
                await stream.send_all(response(503, b"too many RPC connections", keep_alive=False, content_type="text/plain"))
            await trio.aclose_forcefully(stream)
            return
        self._connections += 1
        try:
            await self._requests(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        except Exception:  # a bug must cost one connection, never the server or the node
            log.exception("chain RPC: a connection failed")
        finally:
            self._connections -= 1
            await trio.aclose_forcefully(stream)

    async def _requests(self, stream: trio.SocketStream) -> None:
        parser = RequestParser(self.max_body)
        try:
            peer = "%s:%s" % stream.socket.getpeername()[:2]
        except OSError:
            peer = "?"
        while True:
            try:
                request = await self._receive(stream, parser)
            except HttpError as exc:
                await self._send(stream, response(exc.status, exc.message.encode() + b"\n", keep_alive=False, content_type="text/plain"))
                return
            if request is None:
                return
            status, body, extra = await self._answer(request, peer)
            keep_alive = request.keep_alive
            if not await self._send(stream, response(status, body, keep_alive=keep_alive, extra=extra)):
                return
            if not keep_alive:
                return

    async def _receive(self, stream: trio.SocketStream, parser: RequestParser) -> Request | None:
        """The next request; None when the client closed or stayed idle too long."""
        deadline = trio.current_time() + self.idle_timeout
        started = False
        while True:
            request = parser.next_request()
            if request is not None:
                return request
            if parser.wants_continue():
                if not await self._send(stream, b"HTTP/1.1 100 Continue\r\n\r\n"):
                    return None
            if parser.started and not started:
                started = True
                deadline = trio.current_time() + self.request_timeout
            with trio.move_on_at(deadline):
                data = await stream.receive_some(65536)
                if not data:
                    if parser.started:
                        raise HttpError(400, "the request ended early")
                    return None
                parser.feed(data)
                continue
            if started:
                raise HttpError(408, f"no whole request within {self.request_timeout:g} s")
            return None

    async def _send(self, stream: trio.SocketStream, data: bytes) -> bool:
        with trio.move_on_after(self.send_timeout):
            await stream.send_all(data)
            return True
        log.info("chain RPC: a client did not read its reply within %g s; dropped", self.send_timeout)
        return False

    async def _answer(self, request: Request, peer: str) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        if not self._authorized(request.headers.get("authorization", "")):
            log.warning("chain RPC: wrong credentials from %s", peer)
            await trio.sleep(BAD_AUTH_DELAY)
            return 401, b"", (("WWW-Authenticate", 'Basic realm="jsonrpc"'),)
        if request.method != "POST":
            return 405, b"JSONRPC server handles only POST requests", ()
        if request.target != "/" and not request.target.startswith("/wallet/"):
            return 404, b"", ()
        warming = None if self._calls is not None else _WARMUP
        status, body = await trio.to_thread.run_sync(handle_body, self._table, request.body, warming, limiter=self._limiter)
        return status, body, ()

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        ok = False
        for credential in self._credentials:
            ok |= hmac.compare_digest(given, credential)
        return ok

    def status(self) -> dict[str, Any]:
        """Where the server listens and its cookie (for the node's start-up summary)."""
        return {"url": self.url, "cookie": str(self.cookie_path)}
