"""A ``ChainSource`` backed by Bitcoin Core's JSON-RPC interface (trio).

- Transport: HTTP/1.1 with keep-alive over one TCP connection (requests are
  serialized), written here on trio streams, so the same code runs through a
  SOCKS5 proxy. For a remote bitcoind over Tor, pass ``proxy="127.0.0.1:9050"``
  and the node's ``.onion`` in ``url``: the host name is handed to the proxy
  unresolved (SOCKS5 ATYP 3), which is what lets Tor reach onion services
  and keeps DNS off the local network. ``proxy_auth=(user, password)`` uses
  SOCKS5 username/password (Tor: a distinct pair isolates the circuit).
- Auth: ``cookie_file`` (``<datadir>/[network/].cookie``, re-read after a
  401, since bitcoind writes a new one at each start) or ``user``/``password``
  (``rpcauth``/``rpcuser``).
- New blocks: polling ``getbestblockhash`` every ``poll_interval`` seconds.
- Calls: ``getblockchaininfo``, ``getblockhash``, ``getblock <hash> 0``,
  ``gettxout``, ``sendrawtransaction``, ``estimatesmartfee``,
  ``getmempoolinfo``.

RPC errors keep Bitcoin Core's code in ``ChainError.code`` (``-26``
RPC_VERIFY_REJECTED: the reject reason is in the message; ``-25``
RPC_VERIFY_ERROR: e.g. missing inputs; ``-27`` RPC_VERIFY_ALREADY_IN_CHAIN is
treated as success, as for every ``ChainSource``).

Fee estimates: ``estimatesmartfee`` answers BTC/kvB; it becomes sat/kw
(``/4 * 1e8``), raised to the node's ``mempoolminfee`` so a broadcast at the
estimate is not refused. With no estimate (a fresh node, regtest) the
``fallback_feerate_per_kw`` is used if given, else ``ChainError``.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import trio

from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.bitcoin.tx import OutPoint, TxOut
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockRef, TxOutInfo
from lnpmsg.chain.source import ChainSource, feerate_per_kw_from_btc_per_kvb
from lnpmsg.chain.tx import as_tx

__all__ = ["DEFAULT_RPC_PORTS", "BitcoindSource", "socks5_connect"]

#: bitcoind's default RPC port per network (bech32 prefix)
DEFAULT_RPC_PORTS = {"bc": 8332, "tb": 18332, "bcrt": 18443}
#: ``getblockchaininfo.chain`` names per network prefix
_CHAIN_NAMES = {
    "bc": {"main"},
    "tb": {"test", "testnet4", "signet"},
    "bcrt": {"regtest"},
}
#: a block is at most 4 MB, 8 MB as hex, plus JSON framing
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: response headers larger than this are not from bitcoind
MAX_HEADER_BYTES = 64 * 1024
RPC_VERIFY_ALREADY_IN_CHAIN = -27
RPC_INVALID_PARAMETER = -8
RPC_INVALID_ADDRESS_OR_KEY = -5
_SOCKS_ERRORS = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable (for Tor: the onion service is not reachable)",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


async def socks5_connect(
    proxy: tuple[str, int], host: str, port: int, auth: tuple[str, str] | None = None
) -> trio.abc.Stream:
    """Open a TCP stream to ``host:port`` through a SOCKS5 proxy (RFC 1928/1929).

    The host name goes to the proxy unresolved (ATYP 3) unless it is an IP literal.
    """
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(*proxy)
    except OSError as exc:
        raise ChainError(
            f"cannot reach the SOCKS proxy {proxy[0]}:{proxy[1]}: {exc}", code="proxy"
        ) from exc
    try:
        methods = b"\x02" if auth else b"\x00"
        await stream.send_all(b"\x05\x01" + methods)
        reply = await _read_exactly(stream, 2)
        if reply[0] != 5 or reply[1] != methods[0]:
            raise ChainError(
                "the SOCKS proxy refused our authentication method", code="proxy"
            )
        if auth:
            user, password = (part.encode() for part in auth)
            if not 0 < len(user) < 256 or not 0 < len(password) < 256:
                raise ChainError(
                    "SOCKS user and password have 1 to 255 bytes", code="proxy"
                )
            await stream.send_all(
                b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password
            )
            if (await _read_exactly(stream, 2))[1] != 0:
                raise ChainError(
                    "the SOCKS proxy rejected the user/password", code="proxy"
                )
        try:
            ip = ipaddress.ip_address(host)
            address = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
        except ValueError:
            name = host.encode("idna")
            if len(name) > 255:
                raise ChainError(
                    "host name too long for SOCKS5", code="proxy"
                ) from None
            address = b"\x03" + bytes([len(name)]) + name
        await stream.send_all(b"\x05\x01\x00" + address + struct.pack(">H", port))
        head = await _read_exactly(stream, 4)
        if head[0] != 5:
            raise ChainError("the proxy does not speak SOCKS5", code="proxy")
        if head[1] != 0:
            why = _SOCKS_ERRORS.get(head[1], f"error {head[1]}")
            raise ChainError(
                f"the SOCKS proxy could not connect to {host}:{port}: {why}",
                code="proxy",
            )
        atyp = head[3]
        if atyp == 1:
            await _read_exactly(stream, 4 + 2)
        elif atyp == 4:
            await _read_exactly(stream, 16 + 2)
        elif atyp == 3:
            (length,) = await _read_exactly(stream, 1)
            await _read_exactly(stream, length + 2)
        else:
            raise ChainError("malformed SOCKS5 reply", code="proxy")
        return stream
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise ChainError("the connection closed mid-reply", code="connection")
        data += chunk
    return data


class _Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class BitcoindSource(ChainSource):
    """Bitcoin Core over JSON-RPC. Use as ``async with BitcoindSource(...) as src``
    (or call ``aclose``)."""

    def __init__(
        self,
        url: str,
        *,
        network: str = "bcrt",
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | Path | None = None,
        proxy: str | None = None,
        proxy_auth: tuple[str, str] | None = None,
        poll_interval: float = 5.0,
        timeout: float = 60.0,
        fallback_feerate_per_kw: int | None = None,
    ) -> None:
        if network not in DEFAULT_RPC_PORTS:
            raise ChainError(f"unknown network {network!r}", code="invalid")
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ChainError(
                f"bitcoind RPC URL must be http://host[:port][/path], got {url!r}",
                code="invalid",
            )
        if (user is None) != (password is None):
            raise ChainError("give both user and password, or neither", code="invalid")
        if cookie_file is None and user is None:
            raise ChainError(
                "bitcoind RPC needs cookie_file or user/password", code="invalid"
            )
        self.network = network
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_RPC_PORTS[network]
        self.path = parts.path or "/"
        self._user, self._password = user, password
        self._cookie_file = Path(cookie_file) if cookie_file is not None else None
        self._proxy = _parse_host_port(proxy) if proxy else None
        self._proxy_auth = proxy_auth
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.fallback_feerate_per_kw = fallback_feerate_per_kw
        self._stream: trio.abc.Stream | None = None
        self._buffer = b""
        self._lock = trio.Lock()
        self._next_id = 0
        self._checked_chain = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._drop_connection()

    # -- HTTP ----------------------------------------------------------------

    def _auth_header(self) -> str:
        if self._user is not None and self._password is not None:
            credentials = f"{self._user}:{self._password}"
        else:
            assert self._cookie_file is not None
            try:
                credentials = self._cookie_file.read_text().strip()
            except OSError as exc:
                raise ChainError(
                    f"cannot read the bitcoind cookie {self._cookie_file}: {exc}",
                    code="auth",
                ) from exc
            if ":" not in credentials:
                raise ChainError(
                    f"{self._cookie_file} is not a bitcoind cookie (user:password)",
                    code="auth",
                )
        return "Basic " + base64.b64encode(credentials.encode()).decode()

    async def _connect(self) -> trio.abc.Stream:
        if self._proxy is not None:
            return await socks5_connect(
                self._proxy, self.host, self.port, self._proxy_auth
            )
        try:
            return await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ChainError(
                f"cannot connect to bitcoind at {self.host}:{self.port}: {exc}",
                code="connection",
            ) from exc

    async def _drop_connection(self) -> None:
        stream, self._stream, self._buffer = self._stream, None, b""
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def _post(self, body: bytes) -> _Response:
        request = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            f"Authorization: {self._auth_header()}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode() + body
        for attempt in (0, 1):
            reused = self._stream is not None
            if self._stream is None:
                self._stream = await self._connect()
            try:
                await self._stream.send_all(request)
                response = await self._read_response()
            except (
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                OSError,
                ChainError,
            ) as exc:
                await self._drop_connection()
                # a kept-alive connection the server closed meanwhile: one fresh try
                if (
                    reused
                    and attempt == 0
                    and not (isinstance(exc, ChainError) and exc.code == "protocol")
                ):
                    continue
                if isinstance(exc, ChainError):
                    raise
                raise ChainError(
                    f"bitcoind connection failed: {exc}", code="connection"
                ) from exc
            if response.headers.get("connection", "").lower() == "close":
                await self._drop_connection()
            return response
        raise AssertionError("unreachable")

    async def _fill(self) -> bool:
        assert self._stream is not None
        chunk = await self._stream.receive_some(65536)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    async def _read_response(self) -> _Response:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise ChainError(
                    "bitcoind sent oversized HTTP headers", code="protocol"
                )
            if not await self._fill():
                raise ChainError("bitcoind closed the connection", code="connection")
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if (
            len(status_line) < 2
            or not status_line[0].startswith("HTTP/1.")
            or not status_line[1].isdigit()
        ):
            raise ChainError(
                f"not an HTTP response from bitcoind: {lines[0][:80]!r}",
                code="protocol",
            )
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ChainError(
                    "bad Content-Length from bitcoind", code="protocol"
                ) from None
            if not 0 <= length <= MAX_RESPONSE_BYTES:
                raise ChainError("bitcoind response too large", code="protocol")
            while len(self._buffer) < length:
                if not await self._fill():
                    raise ChainError(
                        "bitcoind closed the connection mid-response", code="connection"
                    )
            body, self._buffer = self._buffer[:length], self._buffer[length:]
        else:
            while await self._fill():
                if len(self._buffer) > MAX_RESPONSE_BYTES:
                    raise ChainError("bitcoind response too large", code="protocol")
            body, self._buffer = self._buffer, b""
            headers["connection"] = "close"
        return _Response(int(status_line[1]), headers, body)

    async def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                if not await self._fill():
                    raise ChainError(
                        "bitcoind closed the connection mid-chunk", code="connection"
                    )
            size_line, self._buffer = self._buffer.split(b"\r\n", 1)
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise ChainError(
                    "bad chunk size from bitcoind", code="protocol"
                ) from None
            if len(body) + size > MAX_RESPONSE_BYTES:
                raise ChainError("bitcoind response too large", code="protocol")
            while len(self._buffer) < size + 2:
                if not await self._fill():
                    raise ChainError(
                        "bitcoind closed the connection mid-chunk", code="connection"
                    )
            body += self._buffer[:size]
            self._buffer = self._buffer[size + 2 :]
            if size == 0:
                return body

    # -- JSON-RPC ------------------------------------------------------------

    async def call(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; returns ``result`` or raises ``ChainError`` (code: Core's error code)."""
        self._next_id += 1
        body = json.dumps(
            {
                "jsonrpc": "1.0",
                "id": self._next_id,
                "method": method,
                "params": list(params),
            }
        ).encode()
        async with self._lock:
            with trio.move_on_after(self.timeout) as scope:
                response = await self._post(body)
                if response.status == 401 and self._cookie_file is not None:
                    # bitcoind restarted and wrote a new cookie: read it again, once
                    response = await self._post(body)
            if scope.cancelled_caught:
                await self._drop_connection()
                raise ChainError(
                    f"bitcoind did not answer {method} within {self.timeout} s",
                    code="timeout",
                )
        if response.status in (401, 403):
            raise ChainError(
                f"bitcoind refused the credentials (HTTP {response.status}); check rpcuser/rpcpassword or the cookie",
                code="auth",
            )
        try:
            reply = json.loads(response.body, parse_float=Decimal)
        except ValueError:
            raise ChainError(
                f"bitcoind answered HTTP {response.status} without JSON: {response.body[:120]!r}",
                code="protocol",
            ) from None
        if not isinstance(reply, dict):
            raise ChainError("bitcoind's reply is not a JSON object", code="protocol")
        error = reply.get("error")
        if error:
            if not isinstance(error, dict):
                raise ChainError(f"bitcoind error: {error!r}", code="protocol")
            code = error.get("code")
            raise ChainError(
                f"bitcoind {method}: {error.get('message', '?')} (code {code})",
                code=code,
            )
        if response.status != 200:
            raise ChainError(
                f"bitcoind answered HTTP {response.status} to {method}", code="protocol"
            )
        return reply.get("result")

    async def _check_chain(self) -> None:
        if self._checked_chain:
            return
        info = await self.call("getblockchaininfo")
        chain = info.get("chain") if isinstance(info, dict) else None
        if chain not in _CHAIN_NAMES[self.network]:
            raise ChainError(
                f"bitcoind runs chain {chain!r}, expected network {self.network!r}",
                code="network",
            )
        self._checked_chain = True

    # -- ChainSource -----------------------------------------------------------

    async def tip(self) -> BlockRef:
        await self._check_chain()
        info = await self.call("getblockchaininfo")
        try:
            return BlockRef(int(info["blocks"]), hash_from_hex(info["bestblockhash"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(
                f"unexpected getblockchaininfo reply: {exc}", code="protocol"
            ) from exc

    async def block_hash(self, height: int) -> bytes | None:
        if height < 0:
            return None
        try:
            result = await self.call("getblockhash", height)
        except ChainError as exc:
            if exc.code == RPC_INVALID_PARAMETER:  # "Block height out of range"
                return None
            raise
        return _hash(result, "getblockhash")

    async def block(self, block_hash: bytes) -> bytes:
        try:
            result = await self.call("getblock", hash_to_hex(block_hash), 0)
        except ChainError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:  # "Block not found"
                raise ChainError(
                    f"unknown block {hash_to_hex(block_hash)}", code="not-found"
                ) from exc
            raise
        return _hex(result, "getblock")

    async def get_txout(self, outpoint: OutPoint) -> TxOutInfo | None:
        result = await self.call(
            "gettxout", hash_to_hex(outpoint.txid), outpoint.vout, False
        )
        if result is None:
            return None
        try:
            amount = int(Decimal(result["value"]) * 100_000_000)
            script = bytes.fromhex(result["scriptPubKey"]["hex"])
            return TxOutInfo(
                outpoint,
                TxOut(amount, script),
                int(result["confirmations"]),
                bool(result["coinbase"]),
            )
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ChainError(
                f"unexpected gettxout reply: {exc}", code="protocol"
            ) from exc

    async def find_transaction(self, txid: bytes) -> bytes | None:
        """``getrawtransaction``: bitcoind's mempool, or a block with ``-txindex`` (else None)."""
        try:
            result = await self.call("getrawtransaction", hash_to_hex(txid), 0)
        except ChainError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:  # "No such mempool or blockchain transaction"
                return None
            raise
        return _hex(result, "getrawtransaction")

    async def broadcast(self, raw_tx: bytes) -> bytes:
        tx = as_tx(raw_tx)
        try:
            result = await self.call("sendrawtransaction", raw_tx.hex())
        except ChainError as exc:
            if exc.code == RPC_VERIFY_ALREADY_IN_CHAIN:
                return tx.txid
            raise
        txid = _hash(result, "sendrawtransaction")
        if txid != tx.txid:
            raise ChainError("bitcoind answered with another txid", code="protocol")
        return txid

    async def estimate_feerate(self, target_blocks: int = 6) -> int:
        if not 1 <= target_blocks <= 1008:
            raise ChainError(
                "target_blocks must be 1..1008 (estimatesmartfee's range)",
                code="invalid",
            )
        result = await self.call("estimatesmartfee", target_blocks)
        feerate = result.get("feerate") if isinstance(result, dict) else None
        if feerate is None:
            if self.fallback_feerate_per_kw is None:
                errors = result.get("errors") if isinstance(result, dict) else None
                raise ChainError(
                    f"bitcoind has no fee estimate: {errors}", code="no-estimate"
                )
            estimate = self.fallback_feerate_per_kw
        else:
            estimate = feerate_per_kw_from_btc_per_kvb(float(feerate))
        pool = await self.call("getmempoolinfo")
        minimum = pool.get("mempoolminfee") if isinstance(pool, dict) else None
        if minimum is not None:
            estimate = max(estimate, feerate_per_kw_from_btc_per_kvb(float(minimum)))
        return estimate

    async def wait_for_new_tip(self, known: bytes | None) -> BlockRef:
        while True:
            best = _hash(await self.call("getbestblockhash"), "getbestblockhash")
            if best != known:
                return await self.tip()
            await trio.sleep(self.poll_interval)


def _text(value: Any, method: str) -> str:
    if not isinstance(value, str):
        raise ChainError(f"unexpected {method} reply: {value!r}"[:200], code="protocol")
    return value


def _hash(value: Any, method: str) -> bytes:
    try:
        return hash_from_hex(_text(value, method))
    except ValueError:
        raise ChainError(f"{method} did not return a hash", code="protocol") from None


def _hex(value: Any, method: str) -> bytes:
    try:
        return bytes.fromhex(_text(value, method))
    except ValueError:
        raise ChainError(f"{method} did not return hex", code="protocol") from None


def _parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ChainError(f"proxy must be host:port, got {text!r}", code="invalid")
    return host.strip("[]"), int(port)
