"""SOCKS5 client handshake for Tor's SOCKS port, sans-IO (the trio shell is in ``transport``).

Why not pysocks: pysocks drives a blocking socket, so with trio every
connect would sit in a worker thread that a timeout or a cancellation
cannot interrupt, and the connected socket would then have to be handed
over to trio. The handshake Tor needs is three short exchanges (RFC 1928
method selection, RFC 1929 username/password, CONNECT), so it is written
here as a sans-IO object (:class:`Socks5Handshake`: bytes in, bytes out,
no I/O) driven by :func:`lnpmsg.transports.tor.transport.open_socks5_stream`
over a trio TCP stream, which ``trio.fail_after`` and cancellation stop at
once.

Names are always sent to the proxy as names (ATYP 3, "domain name"): Tor
resolves them, the local resolver is never asked. IP literals go as ATYP
1/4. Username/password authentication is offered whenever credentials are
given, which is what Tor's ``IsolateSOCKSAuth`` (on by default) keys stream
isolation on.

Tor's reply codes (RFC 1928's 0x01-0x08, and Tor's extended 0xF0-0xF7 when
the SocksPort has the ``ExtendedErrors`` flag) become :class:`SocksError`
with a sentence saying what happened.
"""

from __future__ import annotations

import enum
import ipaddress
import struct

from lnpmsg.transports.tor.address import is_onion_host
from lnpmsg.transports.tor.errors import SocksError

__all__ = [
    "SOCKS5_REPLY_MESSAGES",
    "Socks5Handshake",
    "socks5_reply_message",
]

_VERSION = 0x05
_AUTH_VERSION = 0x01
_METHOD_NONE = 0x00
_METHOD_USERPASS = 0x02
_METHOD_REFUSED = 0xFF
_CMD_CONNECT = 0x01
_ATYP_IPV4 = 0x01
_ATYP_NAME = 0x03
_ATYP_IPV6 = 0x04
#: RFC 1928/1929 length bytes are one octet
_MAX_FIELD = 255

#: What each SOCKS5 reply code means when Tor sends it.
SOCKS5_REPLY_MESSAGES: dict[int, str] = {
    0x01: "general SOCKS server failure (Tor could not build a circuit or the stream failed)",
    0x02: "connection not allowed by ruleset (no exit allows this address or port)",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused by the remote host",
    0x06: "TTL expired (Tor timed out reaching the host)",
    0x07: "command not supported",
    0x08: "address type not supported",
    0xF0: "onion service descriptor not found (the service is offline, does not exist, or has not published yet)",
    0xF1: "onion service descriptor is invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service requires client authorization",
    0xF5: "onion service client authorization was rejected",
    0xF6: "invalid onion service address",
    0xF7: "onion service introduction timed out",
}

#: replies that, for an onion target, mean the service could not be reached
_ONION_UNREACHABLE = frozenset({0x01, 0x03, 0x04, 0x06, 0xF0, 0xF2, 0xF3, 0xF7})


def socks5_reply_message(code: int, host: str, port: int) -> str:
    """The error text for SOCKS5 reply ``code`` when connecting to ``host:port``."""
    meaning = SOCKS5_REPLY_MESSAGES.get(code, "unknown SOCKS5 reply code")
    target = f"{host}:{port}"
    if is_onion_host(host) and code in _ONION_UNREACHABLE:
        return f"onion service not reachable: {target}: {meaning} (SOCKS5 reply 0x{code:02x})"
    return f"Tor could not connect to {target}: {meaning} (SOCKS5 reply 0x{code:02x})"


class _State(enum.Enum):
    IDLE = "idle"
    METHOD = "waiting for method selection"
    AUTH = "waiting for authentication reply"
    REPLY = "waiting for CONNECT reply"
    DONE = "connected"
    FAILED = "failed"


class Socks5Handshake:
    """The client side of a SOCKS5 CONNECT, without I/O.

    Call :meth:`start` and send its bytes; then feed every received chunk to
    :meth:`receive_data` and send what it returns, until :attr:`done`.
    :attr:`bytes_wanted` says how much more input the current step needs, so
    a shell can read exactly that much and never read into the proxied
    stream (anything read past the reply is kept in :attr:`unused_data`).

    Every failure (a refused method, rejected credentials, a reply code, a
    malformed answer) raises :class:`SocksError`, and the object stays failed.
    """

    def __init__(self, host: str, port: int, username: str | None = None, password: str | None = None) -> None:
        if not 0 < port <= 0xFFFF:
            raise SocksError(f"port {port} is not 1..65535")
        self.host = host
        self.port = port
        self._address = self._encode_address(host)
        if (username is None) != (password is None):
            raise SocksError("SOCKS username and password must be given together")
        self._creds: tuple[bytes, bytes] | None = None
        if username is not None and password is not None:
            user, pw = username.encode("utf-8"), password.encode("utf-8")
            if not 1 <= len(user) <= _MAX_FIELD or not 1 <= len(pw) <= _MAX_FIELD:
                raise SocksError("SOCKS username and password must each be 1..255 bytes")
            self._creds = (user, pw)
        self._state = _State.IDLE
        self._buffer = bytearray()
        self.unused_data = b""
        #: the proxy's bound address from the CONNECT reply, as (host, port)
        self.bound_address: tuple[str, int] | None = None

    @staticmethod
    def _encode_address(host: str) -> bytes:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            if ip.version == 4:
                return bytes([_ATYP_IPV4]) + ip.packed
            return bytes([_ATYP_IPV6]) + ip.packed
        try:
            name = host.encode("ascii")
        except UnicodeEncodeError:
            raise SocksError(f"host name {host!r} is not ASCII (give its IDNA/punycode form)") from None
        if not 1 <= len(name) <= _MAX_FIELD:
            raise SocksError(f"host name must be 1..255 characters, got {len(name)}")
        return bytes([_ATYP_NAME, len(name)]) + name

    @property
    def done(self) -> bool:
        """True once the proxy reported the connection established."""
        return self._state is _State.DONE

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes the current step needs (0 when done or not started)."""
        have = len(self._buffer)
        if self._state is _State.METHOD or self._state is _State.AUTH:
            return 2 - have
        if self._state is _State.REPLY:
            return self._reply_length() - have
        return 0

    def _reply_length(self) -> int:
        # VER REP RSV ATYP, then the address, then a 2-byte port; the length
        # of a name is only known once its length byte (the 5th) is in.
        if len(self._buffer) < 5:
            return 5
        atyp = self._buffer[3]
        if atyp == _ATYP_IPV4:
            return 4 + 4 + 2
        if atyp == _ATYP_IPV6:
            return 4 + 16 + 2
        if atyp == _ATYP_NAME:
            return 4 + 1 + self._buffer[4] + 2
        return 5

    def start(self) -> bytes:
        """The greeting: the authentication methods we offer."""
        if self._state is not _State.IDLE:
            raise SocksError("SOCKS handshake already started")
        self._state = _State.METHOD
        method = _METHOD_USERPASS if self._creds else _METHOD_NONE
        return bytes([_VERSION, 1, method])

    def receive_data(self, data: bytes) -> bytes:
        """Take bytes from the proxy; return the bytes to send next (maybe empty)."""
        if self._state is _State.FAILED:
            raise SocksError("SOCKS handshake already failed")
        if self._state is _State.IDLE:
            raise SocksError("SOCKS handshake not started")
        if self._state is _State.DONE:
            self.unused_data += bytes(data)
            return b""
        self._buffer += data
        out = bytearray()
        try:
            while not self.done and (self.bytes_wanted <= 0 or self._failure_known()):
                out += self._step()
        except SocksError:
            self._state = _State.FAILED
            raise
        return bytes(out)

    def _failure_known(self) -> bool:
        # A failed CONNECT is reported as soon as its code is in: some
        # proxies close right after the code without the rest of the reply.
        return self._state is _State.REPLY and len(self._buffer) >= 2 and self._buffer[1] != 0

    @property
    def stage(self) -> str:
        """What the handshake is waiting for, in words (for error messages)."""
        return self._state.value

    def _take(self, count: int) -> bytes:
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    def _step(self) -> bytes:
        if self._state is _State.METHOD:
            version, method = self._take(2)
            if version != _VERSION:
                raise SocksError(f"the proxy does not speak SOCKS5 (version byte 0x{version:02x}; is this Tor's SOCKS port?)")
            offered = _METHOD_USERPASS if self._creds else _METHOD_NONE
            if method == _METHOD_REFUSED or method != offered:
                raise SocksError(
                    "the SOCKS proxy accepts none of our authentication methods "
                    f"(offered 0x{offered:02x}, answer 0x{method:02x})"
                )
            if self._creds:
                self._state = _State.AUTH
                user, pw = self._creds
                return bytes([_AUTH_VERSION, len(user)]) + user + bytes([len(pw)]) + pw
            return self._connect_request()
        if self._state is _State.AUTH:
            version, status = self._take(2)
            if version != _AUTH_VERSION or status != 0:
                raise SocksError(f"the SOCKS proxy rejected our username/password (status 0x{status:02x})")
            return self._connect_request()
        # _State.REPLY
        version, code = self._buffer[0], self._buffer[1]
        if version != _VERSION:
            raise SocksError(f"malformed SOCKS5 reply (version byte 0x{version:02x})")
        if code != 0:
            raise SocksError(socks5_reply_message(code, self.host, self.port), code)
        atyp = self._buffer[3]
        if atyp not in (_ATYP_IPV4, _ATYP_IPV6, _ATYP_NAME):
            raise SocksError(f"malformed SOCKS5 reply (address type 0x{atyp:02x})")
        reply = self._take(self._reply_length())
        address = reply[4:-2]
        (bound_port,) = struct.unpack(">H", reply[-2:])
        if atyp == _ATYP_NAME:
            bound_host = address[1:].decode("ascii", "replace")
        else:
            bound_host = str(ipaddress.ip_address(address))
        self.bound_address = (bound_host, bound_port)
        self._state = _State.DONE
        self.unused_data = bytes(self._buffer)
        self._buffer.clear()
        return b""

    def _connect_request(self) -> bytes:
        self._state = _State.REPLY
        return bytes([_VERSION, _CMD_CONNECT, 0]) + self._address + struct.pack(">H", self.port)
