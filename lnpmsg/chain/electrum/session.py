"""One Electrum-protocol client session (sans-IO): bytes in, bytes out.

The protocol (Electrum 1.4, as ElectrumX documents it) is JSON-RPC 2.0, one
JSON value per line. ``ElectrumSession`` never touches a socket or a clock:

- ``receive_data(data)`` takes what the client sent and answers every
  request the index can answer at once; requests that need the chain
  itself (``blockchain.transaction.get``, ``.broadcast``) come back as
  ``ChainCall`` objects for the shell to perform, and their outcome goes
  back in with ``complete(call, result)`` or ``fail(call, reason)``;
- ``notify_tip()`` / ``notify_changed(script_hashes)`` after the index
  moved queue the notifications the client subscribed to;
- ``data_to_send()`` drains what is ready to go out.

Bad input gets a JSON-RPC error and the session goes on (malformed JSON,
unknown methods, bad params). While ``pause_outbox`` bytes wait to go out,
requests stay buffered (``paused``). A line longer than ``max_line`` or an
outbox past ``max_outbox`` (a client that does not read) closes the session:
``closed`` then says why, and the shell hangs up after sending what is
queued.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.chain.electrum.index import ElectrumIndex, merkle_branch, scripthash_from_hex

__all__ = [
    "BAD_REQUEST",
    "DAEMON_ERROR",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "MAX_CHUNK_HEADERS",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "PROTOCOL_VERSION",
    "ChainCall",
    "ElectrumSession",
    "RpcError",
    "ServerInfo",
    "SessionLimits",
]

#: the protocol version this server speaks
PROTOCOL_VERSION = "1.4"
#: headers ``blockchain.block.headers`` returns at most (Electrum asks for 2016)
MAX_CHUNK_HEADERS = 2016
# JSON-RPC 2.0 error codes, and ElectrumX's own for a request it refuses
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
BAD_REQUEST = 1
DAEMON_ERROR = 2


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one client may make the server hold."""

    #: bytes in one request line: a standard transaction (400,000 weight) in hex fits
    max_line: int = 1_000_000
    #: script hashes one client may subscribe to
    max_subscriptions: int = 10_000
    #: requests in one JSON-RPC batch
    max_batch: int = 100
    #: bytes waiting to go out before the client counts as not reading and is dropped
    max_outbox: int = 8_000_000
    #: bytes waiting to go out at which the session stops answering (requests
    #: stay buffered until the shell drains it): a pipelining client is paced, not dropped
    pause_outbox: int = 1_000_000


@dataclass(slots=True)
class ServerInfo:
    """What the server says about itself (``server.*``) and its fees."""

    server_version: str
    genesis_hash: bytes
    banner: str = "lnpmsg Electrum server (regtest)"
    donation_address: str = ""
    #: fee rate estimatefee answers, sat per 1000 weight units
    feerate_per_kw: int = 1012
    #: the relay floor, 1 sat/vB
    relay_sat_per_kvb: int = 1000


class RpcError(Exception):
    """A request failed: a JSON-RPC error with ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Batch:
    results: list[Any]
    pending: int


@dataclass(eq=False, slots=True)
class ChainCall:
    """Work for the shell: ``kind`` is ``"get_transaction"`` (``arg``: txid,
    result: the raw transaction or None) or ``"broadcast"`` (``arg``: the raw
    transaction, result: its txid; ``fail`` with the chain's reason)."""

    kind: str
    arg: bytes
    request_id: Any
    _batch: _Batch | None = field(default=None, repr=False)
    _slot: int = field(default=0, repr=False)


class _Pending(Exception):
    """Internal: the request became a ChainCall; its answer comes later."""

    def __init__(self, call: ChainCall) -> None:
        self.call = call


def _int(value: Any, name: str, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcError(INVALID_PARAMS, f"{name} must be an integer, got {value!r:.40}")
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise RpcError(INVALID_PARAMS, f"{name} {value} out of range ({bounds})")
    return value


def _txid(value: Any, name: str = "tx_hash") -> bytes:
    try:
        if not isinstance(value, str) or len(value) != 64:
            raise ValueError
        return hash_from_hex(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{name} must be 64 hex digits, got {value!r:.80}") from None


def _scripthash(value: Any) -> bytes:
    try:
        return scripthash_from_hex(value)
    except (ValueError, TypeError):
        raise RpcError(INVALID_PARAMS, f"scripthash must be 64 hex digits, got {value!r:.80}") from None


def _version_tuple(text: Any) -> tuple[int, ...]:
    try:
        if not isinstance(text, str):
            raise ValueError
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"bad protocol version {text!r:.40}") from None


class ElectrumSession:
    """The protocol state of one client (see the module docs)."""

    def __init__(self, index: ElectrumIndex, info: ServerInfo, limits: SessionLimits | None = None) -> None:
        self.index = index
        self.info = info
        self.limits = limits or SessionLimits()
        #: why the session ended (None while it runs)
        self.closed: str | None = None
        self.client_name: str | None = None
        self._buffer = bytearray()
        self._outbox: list[bytes] = []
        self._outbox_size = 0
        self._headers_subscribed = False
        self._last_tip: bytes | None = None
        self._subscriptions: dict[bytes, str | None] = {}
        self._methods: dict[str, tuple[Callable[..., Any], tuple[str, ...], int]] = {
            # name: (handler, parameter names, how many are required)
            "server.version": (self._server_version, ("client_name", "protocol_version"), 0),
            "server.banner": (lambda: self.info.banner, (), 0),
            "server.donation_address": (lambda: self.info.donation_address, (), 0),
            "server.peers.subscribe": (lambda: [], (), 0),
            "server.features": (self._server_features, (), 0),
            "server.ping": (lambda: None, (), 0),
            "blockchain.headers.subscribe": (self._headers_subscribe, (), 0),
            "blockchain.block.header": (self._block_header, ("height", "cp_height"), 1),
            "blockchain.block.headers": (self._block_headers, ("start_height", "count", "cp_height"), 2),
            "blockchain.scripthash.subscribe": (self._scripthash_subscribe, ("scripthash",), 1),
            "blockchain.scripthash.unsubscribe": (self._scripthash_unsubscribe, ("scripthash",), 1),
            "blockchain.scripthash.get_history": (self._get_history, ("scripthash",), 1),
            "blockchain.scripthash.get_mempool": (self._get_mempool, ("scripthash",), 1),
            "blockchain.scripthash.listunspent": (self._listunspent, ("scripthash",), 1),
            "blockchain.scripthash.get_balance": (self._get_balance, ("scripthash",), 1),
            "blockchain.transaction.get": (self._transaction_get, ("tx_hash", "verbose"), 1),
            "blockchain.transaction.get_merkle": (self._get_merkle, ("tx_hash", "height"), 2),
            "blockchain.transaction.broadcast": (self._broadcast, ("raw_tx",), 1),
            "blockchain.transaction.id_from_pos": (self._id_from_pos, ("height", "tx_pos", "merkle"), 2),
            "blockchain.estimatefee": (self._estimatefee, ("number", "mode"), 1),
            "blockchain.relayfee": (lambda: self.info.relay_sat_per_kvb / 100_000_000, (), 0),
            "mempool.get_fee_histogram": (self.index.fee_histogram, (), 0),
        }

    # ------------------------------------------------------------ I/O side

    @property
    def subscriptions(self) -> int:
        return len(self._subscriptions)

    @property
    def outbox_size(self) -> int:
        """Bytes queued and not yet taken by ``data_to_send``."""
        return self._outbox_size

    @property
    def paused(self) -> bool:
        """Enough is queued: requests wait until ``data_to_send`` drains it."""
        return self._outbox_size >= self.limits.pause_outbox

    @property
    def has_buffered_requests(self) -> bool:
        """Complete request lines wait (answered by ``receive_data(b"")`` once not paused)."""
        return b"\n" in self._buffer

    def data_to_send(self) -> bytes:
        """Everything queued for the client (and forget it)."""
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_size = 0
        return data

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason

    def receive_data(self, data: bytes) -> list[ChainCall]:
        """Feed bytes from the client; answer complete lines (until ``paused``);
        the chain calls they need."""
        if self.closed is not None:
            return []
        self._buffer += data
        calls: list[ChainCall] = []
        while self.closed is None and not self.paused:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self.limits.max_line:
                    self._too_long()
                break
            if end > self.limits.max_line:
                self._too_long()
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            calls += self._receive_line(line)
        return calls

    def _too_long(self) -> None:
        self._buffer.clear()
        self._send({"jsonrpc": "2.0", "id": None, "error": {
            "code": INVALID_REQUEST, "message": f"request line longer than {self.limits.max_line} bytes"}})
        self.close("request line too long")

    def complete(self, call: ChainCall, result: Any) -> None:
        """The shell performed ``call``: its result."""
        try:
            if call.kind == "get_transaction":
                if result is None:
                    raise RpcError(BAD_REQUEST, f"no such mempool or blockchain transaction: {hash_to_hex(call.arg)}")
                value: Any = result.hex()
            else:
                value = hash_to_hex(result)
        except RpcError as exc:
            self._answer(call.request_id, call._batch, call._slot, error=exc)
            return
        self._answer(call.request_id, call._batch, call._slot, result=value)

    def fail(self, call: ChainCall, reason: str) -> None:
        """The chain refused ``call`` (a broadcast), for ``reason``."""
        if call.kind == "broadcast":
            message = f"the transaction was rejected by network rules.\n\n{reason}\n[{call.arg.hex()[:200]}]"
            error = RpcError(BAD_REQUEST, message)
        else:
            error = RpcError(DAEMON_ERROR, reason)
        self._answer(call.request_id, call._batch, call._slot, error=error)

    def notify_tip(self) -> None:
        """Tell a headers subscriber about a new tip (also after a reorg to the same height)."""
        if not self._headers_subscribed or self.index.tip_hash == self._last_tip:
            return
        self._last_tip = self.index.tip_hash
        self._notify("blockchain.headers.subscribe", [self._tip_json()])

    def notify_changed(self, script_hashes: set[bytes]) -> None:
        """Send the new status of each subscribed script hash among ``script_hashes`` that changed."""
        if len(script_hashes) > len(self._subscriptions):
            hits = [sh for sh in self._subscriptions if sh in script_hashes]
        else:
            hits = [sh for sh in script_hashes if sh in self._subscriptions]
        for sh in hits:
            status = self.index.status(sh)
            if status != self._subscriptions[sh]:
                self._subscriptions[sh] = status
                self._notify("blockchain.scripthash.subscribe", [sh[::-1].hex(), status])

    # ------------------------------------------------------------ framing

    def _send(self, message: Any) -> None:
        if self.closed is not None and self._outbox_size > self.limits.max_outbox:
            return
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        self._outbox.append(data)
        self._outbox_size += len(data)
        if self._outbox_size > self.limits.max_outbox:
            self.close("the client does not read its replies")

    def _notify(self, method: str, params: list[Any]) -> None:
        if self.closed is None:
            self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def _receive_line(self, line: bytes) -> list[ChainCall]:
        if not line.strip():
            return []
        try:
            message = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            self._send({"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": f"invalid JSON: {exc}"}})
            return []
        if isinstance(message, list):
            return self._receive_batch(message)
        call = self._request(message, None, 0)
        return [call] if call is not None else []

    def _receive_batch(self, messages: list[Any]) -> list[ChainCall]:
        if not messages or len(messages) > self.limits.max_batch:
            self._send({"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": f"a batch holds 1..{self.limits.max_batch} requests"}})
            return []
        batch = _Batch([None] * len(messages), len(messages))
        calls = []
        for slot, message in enumerate(messages):
            call = self._request(message, batch, slot)
            if call is not None:
                calls.append(call)
        return calls

    def _request(self, message: Any, batch: _Batch | None, slot: int) -> ChainCall | None:
        """Handle one request object; answer it now, or return the chain call it waits for."""
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            self._answer(None, batch, slot, error=RpcError(INVALID_REQUEST, "a request is an object with a method"))
            return None
        request_id = message.get("id")
        if not isinstance(request_id, (str, int, type(None))) or isinstance(request_id, bool):
            self._answer(None, batch, slot, error=RpcError(INVALID_REQUEST, "id must be a string, a number or null"))
            return None
        try:
            result = self._dispatch(message["method"], message.get("params", []), request_id, batch, slot)
        except _Pending as pending:
            return pending.call
        except RpcError as exc:
            self._answer(request_id, batch, slot, error=exc)
            return None
        except Exception as exc:  # a bug here must cost one request, not the server
            self._answer(request_id, batch, slot, error=RpcError(INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}"))
            return None
        self._answer(request_id, batch, slot, result=result)
        return None

    def _answer(self, request_id: Any, batch: _Batch | None, slot: int, *,
                result: Any = None, error: RpcError | None = None) -> None:
        response: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if error is not None:
            response["error"] = {"code": error.code, "message": error.message}
        else:
            response["result"] = result
        if batch is None:
            self._send(response)
            return
        batch.results[slot] = response
        batch.pending -= 1
        if batch.pending == 0:
            self._send(batch.results)

    def _dispatch(self, method: str, params: Any, request_id: Any, batch: _Batch | None, slot: int) -> Any:
        entry = self._methods.get(method)
        if entry is None:
            raise RpcError(METHOD_NOT_FOUND, f"unknown method {method!r:.80}")
        handler, names, required = entry
        if isinstance(params, dict):
            unknown = set(params) - set(names)
            if unknown:
                raise RpcError(INVALID_PARAMS, f"{method}: unknown parameter(s) {sorted(unknown)!r:.80}")
            missing = [n for n in names[:required] if n not in params]
            if missing:
                raise RpcError(INVALID_PARAMS, f"{method}: missing parameter(s) {missing}")
            args = [params[n] for n in names if n in params]
            if len(args) != len(params) or any(n not in params for n in names[: len(args)]):
                raise RpcError(INVALID_PARAMS, f"{method}: give parameters in order {list(names)}")
        elif isinstance(params, list):
            if not required <= len(params) <= len(names):
                raise RpcError(INVALID_PARAMS, f"{method} takes {required}..{len(names)} parameters {list(names)}, got {len(params)}")
            args = params
        else:
            raise RpcError(INVALID_PARAMS, "params must be a list or an object")
        result = handler(*args)
        if isinstance(result, ChainCall):
            result.request_id, result._batch, result._slot = request_id, batch, slot
            raise _Pending(result)
        return result

    # ------------------------------------------------------------ methods

    def _server_version(self, client_name: Any = "", protocol_version: Any = PROTOCOL_VERSION) -> list[str]:
        if isinstance(protocol_version, list) and len(protocol_version) == 2:
            low, high = (_version_tuple(v) for v in protocol_version)
        else:
            low = high = _version_tuple(protocol_version)
        ours = _version_tuple(PROTOCOL_VERSION)
        if high < ours or low[:2] > ours:
            self.close("unsupported protocol version")
            raise RpcError(BAD_REQUEST, f"unsupported protocol version: {protocol_version!r:.40} (this server speaks {PROTOCOL_VERSION})")
        if isinstance(client_name, str):
            self.client_name = client_name[:100]
        return [self.info.server_version, PROTOCOL_VERSION]

    def _server_features(self) -> dict[str, Any]:
        return {
            "genesis_hash": hash_to_hex(self.info.genesis_hash),
            "hosts": {},
            "protocol_max": PROTOCOL_VERSION,
            "protocol_min": PROTOCOL_VERSION,
            "pruning": None,
            "server_version": self.info.server_version,
            "hash_function": "sha256",
            "services": [],
        }

    def _tip_json(self) -> dict[str, Any]:
        return {"hex": self.index.headers[-1].hex(), "height": self.index.height}

    def _headers_subscribe(self) -> dict[str, Any]:
        self._headers_subscribed = True
        self._last_tip = self.index.tip_hash
        return self._tip_json()

    def _check_height(self, value: Any, name: str = "height") -> int:
        return _int(value, name, 0, self.index.height)

    def _checkpoint(self, cp_height: Any, last: int) -> int:
        cp = _int(cp_height, "cp_height", 0, self.index.height)
        if cp and last > cp:
            raise RpcError(BAD_REQUEST, f"header height {last} must be <= cp_height {cp}")
        return cp

    def _header_proof(self, height: int, cp: int) -> dict[str, Any]:
        branch, root = merkle_branch(self.index.hashes[: cp + 1], height)
        return {"branch": [hash_to_hex(h) for h in branch], "root": hash_to_hex(root)}

    def _block_header(self, height: Any, cp_height: Any = 0) -> Any:
        h = self._check_height(height)
        cp = self._checkpoint(cp_height, h)
        header = self.index.header_at(h).hex()
        if not cp:
            return header
        return {"header": header, **self._header_proof(h, cp)}

    def _block_headers(self, start_height: Any, count: Any, cp_height: Any = 0) -> dict[str, Any]:
        start = _int(start_height, "start_height")
        wanted = _int(count, "count")
        end = min(start + min(wanted, MAX_CHUNK_HEADERS), self.index.height + 1)
        headers = self.index.headers[start:end] if end > start else []
        result: dict[str, Any] = {"count": len(headers), "hex": b"".join(headers).hex(), "max": MAX_CHUNK_HEADERS}
        if headers:
            cp = self._checkpoint(cp_height, end - 1)
            if cp:
                result.update(self._header_proof(end - 1, cp))
        return result

    def _scripthash_subscribe(self, scripthash: Any) -> str | None:
        sh = _scripthash(scripthash)
        if sh not in self._subscriptions and len(self._subscriptions) >= self.limits.max_subscriptions:
            raise RpcError(BAD_REQUEST, f"too many subscriptions (at most {self.limits.max_subscriptions} per client)")
        status = self.index.status(sh)
        self._subscriptions[sh] = status
        return status

    def _scripthash_unsubscribe(self, scripthash: Any) -> bool:
        return self._subscriptions.pop(_scripthash(scripthash), False) is not False

    def _get_history(self, scripthash: Any) -> list[dict[str, object]]:
        return [item.as_json() for item in self.index.history(_scripthash(scripthash))]

    def _get_mempool(self, scripthash: Any) -> list[dict[str, object]]:
        return [item.as_json() for item in self.index.mempool_history(_scripthash(scripthash))]

    def _listunspent(self, scripthash: Any) -> list[dict[str, object]]:
        return [u.as_json() for u in self.index.unspent(_scripthash(scripthash))]

    def _get_balance(self, scripthash: Any) -> dict[str, int]:
        confirmed, unconfirmed = self.index.balance(_scripthash(scripthash))
        return {"confirmed": confirmed, "unconfirmed": unconfirmed}

    def _transaction_get(self, tx_hash: Any, verbose: Any = False) -> ChainCall:
        txid = _txid(tx_hash)
        if verbose:
            raise RpcError(BAD_REQUEST, "verbose transactions are not served here: ask with verbose=false")
        return ChainCall("get_transaction", txid, None)

    def _broadcast(self, raw_tx: Any) -> ChainCall:
        try:
            if not isinstance(raw_tx, str):
                raise ValueError
            raw = bytes.fromhex(raw_tx)
        except ValueError:
            raise RpcError(INVALID_PARAMS, "raw_tx must be a transaction in hex") from None
        return ChainCall("broadcast", raw, None)

    def _block_position(self, txid: bytes, height: int) -> tuple[tuple[bytes, ...], int]:
        txids = self.index.txids_at(height)
        try:
            return txids, txids.index(txid)
        except ValueError:
            raise RpcError(BAD_REQUEST, f"tx {hash_to_hex(txid)} not in block at height {height}") from None

    def _get_merkle(self, tx_hash: Any, height: Any) -> dict[str, Any]:
        txid = _txid(tx_hash)
        h = self._check_height(height)
        txids, pos = self._block_position(txid, h)
        branch, _ = merkle_branch(txids, pos)
        return {"block_height": h, "merkle": [hash_to_hex(b) for b in branch], "pos": pos}

    def _id_from_pos(self, height: Any, tx_pos: Any, merkle: Any = False) -> Any:
        h = self._check_height(height)
        txids = self.index.txids_at(h)
        pos = _int(tx_pos, "tx_pos", 0)
        if pos >= len(txids):
            raise RpcError(BAD_REQUEST, f"no tx at position {pos} in block at height {h}")
        if not merkle:
            return hash_to_hex(txids[pos])
        branch, _ = merkle_branch(txids, pos)
        return {"tx_hash": hash_to_hex(txids[pos]), "merkle": [hash_to_hex(b) for b in branch]}

    def _estimatefee(self, number: Any, mode: Any = None) -> float:
        _int(number, "number", 1, 1008)
        if mode is not None and mode not in ("ECONOMICAL", "CONSERVATIVE", "UNSET"):
            raise RpcError(INVALID_PARAMS, f"mode must be ECONOMICAL or CONSERVATIVE, got {mode!r:.40}")
        # sat/kw -> BTC/kvB (1 kvB = 4 kw)
        return self.info.feerate_per_kw * 4 / 100_000_000
