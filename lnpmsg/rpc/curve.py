"""CURVE keys for the control API over ``tcp://``, and the ZAP handler that checks them.

Over ``ipc://`` the socket file's mode (0600, in a 0700 data dir) keeps other
users out. Over ``tcp://`` (loopback only) anyone on the host can connect,
so both control sockets run ZeroMQ's CURVE security: encrypted, and only
clients whose public key is authorised may talk. Keys live in
``DATA_DIR/control_keys/`` (mode 0700), in pyzmq's certificate format::

    server.key, server.key_secret    the node's key pair
    client.key, client.key_secret    a key pair for local clients (the CLI)
    authorized/*.key                 public keys allowed to connect (client.key
                                     is put there on first start)

Whoever can read the data dir can drive the node, exactly as with ``ipc://``.
To let another program in, give it its own key pair and copy its public
certificate into ``authorized/`` (read at start-up).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from lnpmsg.io.zmq_trio import SocketClosedError, TrioSocket

__all__ = [
    "KEYS_DIR",
    "ZAP_ENDPOINT",
    "ClientKeys",
    "CurveError",
    "ServerKeys",
    "apply_client",
    "apply_server",
    "ensure_server_keys",
    "load_client_keys",
    "serve_zap",
]

log = logging.getLogger(__name__)

KEYS_DIR = "control_keys"
#: where libzmq looks for the authentication handler of a context (RFC 27)
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"


class CurveError(Exception):
    """CURVE keys are missing, unreadable or too open."""


@dataclass(frozen=True, slots=True)
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CurveError(f"{path} is accessible by other users (mode {stat.S_IMODE(mode):o}); run: chmod go-rwx {path}")


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read CURVE certificate {path}: {exc}") from exc


def ensure_server_keys(data_dir: Path) -> ServerKeys:
    """Load the control keys from the data dir, creating them on first use."""
    keys = data_dir / KEYS_DIR
    authorized = keys / "authorized"
    try:
        keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(keys)
        for name in ("server", "client"):
            if not (keys / f"{name}.key_secret").exists():
                public_file, secret_file = zmq.auth.create_certificates(keys, name)
                os.chmod(secret_file, 0o600)
                if name == "client":
                    authorized.mkdir(mode=0o700, exist_ok=True)
                    shutil.copy(public_file, authorized / "client.key")
    except OSError as exc:
        raise CurveError(f"cannot create CURVE keys in {keys}: {exc}") from exc
    public, secret = _load(keys / "server.key_secret")
    if secret is None:
        raise CurveError(f"{keys / 'server.key_secret'} holds no secret key")
    allowed = set()
    if authorized.is_dir():
        for cert in sorted(authorized.glob("*.key")):
            allowed.add(_load(cert)[0])
    return ServerKeys(public, secret, frozenset(allowed))


def load_client_keys(data_dir: Path) -> ClientKeys:
    """The local client's key pair and the node's public key (for the CLI)."""
    keys = data_dir / KEYS_DIR
    try:
        public, secret = _load(keys / "client.key_secret")
        server_public, _ = _load(keys / "server.key")
    except CurveError as exc:
        raise CurveError(f"{exc} (the node creates these keys when it serves control over tcp://)") from None
    if secret is None:
        raise CurveError(f"{keys / 'client.key_secret'} holds no secret key")
    return ClientKeys(public, secret, server_public)


def apply_server(sock: zmq.Socket, keys: ServerKeys) -> None:  # type: ignore[type-arg]
    """Make ``sock`` (before bind) a CURVE server checked by the context's ZAP handler."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, b"lnpmsg-control")


def apply_client(sock: zmq.Socket, keys: ClientKeys) -> None:  # type: ignore[type-arg]
    """Make ``sock`` (before connect) a CURVE client of the node."""
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)


async def serve_zap(sock: TrioSocket, authorized: frozenset[bytes]) -> None:
    """Answer ZAP requests on a REP socket bound to :data:`ZAP_ENDPOINT` until it closes.

    CURVE clients are let in when their public key (Z85) is authorised;
    every other mechanism is refused.
    """
    while True:
        try:
            frames = await sock.recv_multipart()
        except SocketClosedError:
            return
        if len(frames) < 6 or frames[0] != ZAP_VERSION:
            # Not a ZAP request: answer something well-formed so REP stays in step.
            await sock.send_multipart([ZAP_VERSION, frames[1] if len(frames) > 1 else b"", b"400", b"bad ZAP request", b"", b""])
            continue
        request_id, address, mechanism = frames[1], frames[3], frames[5]
        credentials = frames[6:]
        if mechanism == b"CURVE" and credentials and zmq.utils.z85.encode(credentials[0]) in authorized:
            reply = [ZAP_VERSION, request_id, b"200", b"OK", b"control-client", b""]
        else:
            log.warning("control API: refused a %s client from %s (key not authorised)", mechanism.decode(errors="replace"), address.decode(errors="replace"))
            reply = [ZAP_VERSION, request_id, b"400", b"not authorised", b"", b""]
        try:
            await sock.send_multipart(reply)
        except SocketClosedError:
            return
