"""BOLT-7 address descriptors: where a node accepts connections.

One descriptor is a type byte and its data:

====  =========  ============================================  ==========
type  class      data                                          length
====  =========  ============================================  ==========
1     IPv4Addr   ``[4:ipv4_addr][2:port]``                     6
2     IPv6Addr   ``[16:ipv6_addr][2:port]``                    18
3     TorV2Addr  deprecated Tor v2 onion: ``[10:id][2:port]``  12
4     TorV3Addr  ``[32:pubkey][2:checksum][1:version][2:port]`` 37
5     DnsAddr    ``[1:len][len:hostname][2:port]``             3..258
====  =========  ============================================  ==========

A list (node_announcement ``addresses``) is descriptors back to back. A
reader cannot know the length of a type it does not know, so the first
unknown type ends the list: it and every byte after it are kept as one
:class:`UnknownAddr`, so the list re-encodes byte for byte. Tor v2 is only
decoded (and re-encoded as received); nothing should announce it any more.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from lnpmsg.wire.errors import WireError
from lnpmsg.wire.fields import Field, u16

__all__ = [
    "ADDRESS_DNS",
    "ADDRESS_IPV4",
    "ADDRESS_IPV6",
    "ADDRESS_TORV2",
    "ADDRESS_TORV3",
    "DEFAULT_PORT",
    "Address",
    "DnsAddr",
    "IPv4Addr",
    "IPv6Addr",
    "TorV2Addr",
    "TorV3Addr",
    "UnknownAddr",
    "address",
    "address_list",
    "decode_address",
    "decode_addresses",
    "encode_addresses",
    "parse_address",
    "u16_address_list",
]

ADDRESS_IPV4 = 1
ADDRESS_IPV6 = 2
ADDRESS_TORV2 = 3
ADDRESS_TORV3 = 4
ADDRESS_DNS = 5

#: BOLT 1's port for mainnet (used by :func:`parse_address` when none is given).
DEFAULT_PORT = 9735
TORV3_VERSION = 3
_TORV3_CHECKSUM_PREFIX = b".onion checksum"
MAX_HOSTNAME_LENGTH = 255  # its length is one byte

_PORT = struct.Struct(">H")


def _check_port(port: Any) -> None:
    if type(port) is not int or not 0 <= port <= 0xFFFF:
        raise WireError(f"port must be an int in 0..65535, got {port!r}")


def torv3_checksum(pubkey: bytes, version: int = TORV3_VERSION) -> bytes:
    """The 2-byte checksum of a Tor v3 onion address (rend-spec-v3)."""
    return hashlib.sha3_256(_TORV3_CHECKSUM_PREFIX + pubkey + bytes((version,))).digest()[:2]


@dataclass(frozen=True, slots=True)
class IPv4Addr:
    """An IPv4 address and port; ``host`` is the dotted text (normalised)."""

    TYPE: ClassVar[int] = ADDRESS_IPV4
    host: str
    port: int

    def __post_init__(self) -> None:
        try:
            text = str(ipaddress.IPv4Address(self.host))
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise WireError(f"not an IPv4 address: {self.host!r}") from None
        if text != self.host:
            object.__setattr__(self, "host", text)
        _check_port(self.port)

    @property
    def packed(self) -> bytes:
        return ipaddress.IPv4Address(self.host).packed

    def encode(self) -> bytes:
        return bytes((ADDRESS_IPV4,)) + self.packed + _PORT.pack(self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class IPv6Addr:
    """An IPv6 address and port; ``host`` is the compressed text (normalised)."""

    TYPE: ClassVar[int] = ADDRESS_IPV6
    host: str
    port: int

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.IPv6Address(self.host)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise WireError(f"not an IPv6 address: {self.host!r}") from None
        if ip.scope_id is not None:
            raise WireError(f"an IPv6 address descriptor has no scope id: {self.host!r}")
        text = str(ip)
        if text != self.host:
            object.__setattr__(self, "host", text)
        _check_port(self.port)

    @property
    def packed(self) -> bytes:
        return ipaddress.IPv6Address(self.host).packed

    def encode(self) -> bytes:
        return bytes((ADDRESS_IPV6,)) + self.packed + _PORT.pack(self.port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}"


@dataclass(frozen=True, slots=True)
class TorV2Addr:
    """A deprecated Tor v2 onion service (10-byte id): decoded so that lists parse; never announce one."""

    TYPE: ClassVar[int] = ADDRESS_TORV2
    onion_id: bytes
    port: int

    def __post_init__(self) -> None:
        if type(self.onion_id) is not bytes or len(self.onion_id) != 10:
            raise WireError("a Tor v2 onion id is 10 bytes")
        _check_port(self.port)

    @property
    def host(self) -> str:
        return base64.b32encode(self.onion_id).decode().lower() + ".onion"

    def encode(self) -> bytes:
        return bytes((ADDRESS_TORV2,)) + self.onion_id + _PORT.pack(self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TorV3Addr:
    """A Tor v3 onion service: its 32-byte ed25519 public key and port.

    The checksum and version of the 35 wire bytes are derived; a decoded one
    is checked. ``host`` is the 56-character ``....onion`` name.
    """

    TYPE: ClassVar[int] = ADDRESS_TORV3
    pubkey: bytes
    port: int

    def __post_init__(self) -> None:
        if type(self.pubkey) is not bytes or len(self.pubkey) != 32:
            raise WireError("a Tor v3 onion public key is 32 bytes")
        _check_port(self.port)

    @property
    def onion_bytes(self) -> bytes:
        """The 35 bytes: pubkey || checksum || version."""
        return self.pubkey + torv3_checksum(self.pubkey) + bytes((TORV3_VERSION,))

    @property
    def host(self) -> str:
        return base64.b32encode(self.onion_bytes).decode().lower() + ".onion"

    @classmethod
    def from_onion_bytes(cls, data: bytes, port: int) -> TorV3Addr:
        """From the 35 wire bytes, checking version and checksum."""
        if len(data) != 35:
            raise WireError(f"a Tor v3 onion address is 35 bytes, got {len(data)}")
        pubkey, checksum, version = data[:32], data[32:34], data[34]
        if version != TORV3_VERSION:
            raise WireError(f"Tor v3 onion address with version {version}, want {TORV3_VERSION}")
        if checksum != torv3_checksum(pubkey, version):
            raise WireError("Tor v3 onion address with a bad checksum")
        return cls(pubkey, port)

    @classmethod
    def from_host(cls, host: str, port: int) -> TorV3Addr:
        """From the text name (``56 base32 characters`` + ``.onion``, any case)."""
        name = host.lower().removesuffix(".onion") if isinstance(host, str) else ""
        if len(name) != 56:
            raise WireError(f"not a Tor v3 onion name: {host!r}")
        try:
            data = base64.b32decode(name.upper())
        except ValueError:
            raise WireError(f"not a Tor v3 onion name (bad base32): {host!r}") from None
        return cls.from_onion_bytes(data, port)

    def encode(self) -> bytes:
        return bytes((ADDRESS_TORV3,)) + self.onion_bytes + _PORT.pack(self.port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DnsAddr:
    """A DNS hostname (ASCII, 1..255 characters; Punycode for the rest) and port."""

    TYPE: ClassVar[int] = ADDRESS_DNS
    hostname: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.hostname, str) or not self.hostname.isascii():
            raise WireError(f"a DNS hostname must be ASCII text: {self.hostname!r}")
        if not 1 <= len(self.hostname) <= MAX_HOSTNAME_LENGTH:
            raise WireError(f"a DNS hostname has 1..{MAX_HOSTNAME_LENGTH} characters, got {len(self.hostname)}")
        _check_port(self.port)

    @property
    def host(self) -> str:
        return self.hostname

    def encode(self) -> bytes:
        name = self.hostname.encode("ascii")
        return bytes((ADDRESS_DNS, len(name))) + name + _PORT.pack(self.port)

    def __str__(self) -> str:
        return f"{self.hostname}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnknownAddr:
    """A descriptor of a type we do not know, with all the bytes after its type byte.

    Its length is unknown, so it ends a list and keeps the rest of it.
    """

    type: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if type(self.type) is not int or not 0 <= self.type <= 255 or self.type in _KNOWN_TYPES:
            raise WireError(f"an unknown address type is 0..255 and not 1..5, got {self.type!r}")
        if type(self.data) is not bytes:
            raise WireError("address data must be bytes")

    def encode(self) -> bytes:
        return bytes((self.type,)) + self.data

    def __str__(self) -> str:
        return f"unknown-address-type-{self.type}:{self.data.hex()}"


Address = IPv4Addr | IPv6Addr | TorV2Addr | TorV3Addr | DnsAddr | UnknownAddr
_KNOWN_TYPES = frozenset({ADDRESS_IPV4, ADDRESS_IPV6, ADDRESS_TORV2, ADDRESS_TORV3, ADDRESS_DNS})
# Data length after the type byte, for the fixed-size types.
_FIXED_LENGTH = {ADDRESS_IPV4: 6, ADDRESS_IPV6: 18, ADDRESS_TORV2: 12, ADDRESS_TORV3: 37}
_NAMES = {ADDRESS_IPV4: "ipv4", ADDRESS_IPV6: "ipv6", ADDRESS_TORV2: "torv2", ADDRESS_TORV3: "torv3", ADDRESS_DNS: "dns"}


def _unpack_one(data: bytes, pos: int, end: int) -> tuple[Address, int]:
    if pos >= end:
        raise WireError("address descriptor: no bytes")
    kind = data[pos]
    pos += 1
    fixed = _FIXED_LENGTH.get(kind)
    if fixed is not None:
        if end - pos < fixed:
            raise WireError(f"{_NAMES[kind]} address descriptor truncated: need {fixed} bytes, {end - pos} left")
        body = data[pos : pos + fixed]
        port = _PORT.unpack_from(body, fixed - 2)[0]
        new = pos + fixed
        if kind == ADDRESS_IPV4:
            return IPv4Addr(str(ipaddress.IPv4Address(body[:4])), port), new
        if kind == ADDRESS_IPV6:
            return IPv6Addr(str(ipaddress.IPv6Address(body[:16])), port), new
        if kind == ADDRESS_TORV2:
            return TorV2Addr(body[:10], port), new
        return TorV3Addr.from_onion_bytes(body[:35], port), new
    if kind == ADDRESS_DNS:
        if pos >= end:
            raise WireError("dns address descriptor truncated: no hostname length")
        n = data[pos]
        new = pos + 1 + n + 2
        if new > end:
            raise WireError(f"dns address descriptor truncated: need {1 + n + 2} bytes, {end - pos} left")
        name = data[pos + 1 : pos + 1 + n]
        if not name.isascii():
            raise WireError("dns address descriptor: hostname is not ASCII")
        return DnsAddr(name.decode("ascii"), _PORT.unpack_from(data, pos + 1 + n)[0]), new
    return UnknownAddr(kind, data[pos:end]), end


def decode_address(data: bytes) -> Address:
    """Exactly one descriptor (init's ``remote_addr``); an unknown type keeps its bytes."""
    data = bytes(data)
    value, pos = _unpack_one(data, 0, len(data))
    if pos != len(data):
        raise WireError(f"address descriptor: {len(data) - pos} byte(s) left over")
    return value


def decode_addresses(data: bytes) -> tuple[Address, ...]:
    """A list of descriptors (node_announcement's ``addresses``)."""
    data = bytes(data)
    return address_list.unpack(data, 0, len(data))[0]


def encode_addresses(addresses: Iterable[Address]) -> bytes:
    """The bytes of a list of descriptors, in the order given."""
    return address_list.encode(addresses)


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> Address:
    """A descriptor from text: ``1.2.3.4:9735``, ``[::1]:9735``, ``xyz.onion:9735``, ``host:9735``.

    The port may be left out (``default_port``).
    """
    if not isinstance(text, str) or not text:
        raise WireError(f"not an address: {text!r}")
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise WireError(f"not an address (no closing bracket): {text!r}")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise WireError(f"not an address: {text!r}")
            port = _parse_port(rest[1:], text)
        return IPv6Addr(host, port)
    if text.count(":") == 1:
        host, port_text = text.split(":")
        port = _parse_port(port_text, text)
    elif ":" in text:
        return IPv6Addr(text, port)
    try:
        return IPv4Addr(host, port)
    except WireError:
        pass
    if host.lower().endswith(".onion"):
        return TorV3Addr.from_host(host, port)
    if not _HOSTNAME.fullmatch(host):
        raise WireError(f"not an address (a hostname has letters, digits, '-', '_' and '.'): {text!r}")
    return DnsAddr(host, port)


_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?", re.ASCII)


def _parse_port(text: str, original: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 0xFFFF:
        raise WireError(f"bad port in address {original!r}")
    return int(text)


def _validate_address(value: Any) -> Address:
    if not isinstance(value, IPv4Addr | IPv6Addr | TorV2Addr | TorV3Addr | DnsAddr | UnknownAddr):
        raise WireError(f"not an address descriptor: {value!r}")
    return value


class AddressField(Field):
    """One descriptor reading to the end (init's ``remote_addr`` TLV value)."""

    name = "address"
    greedy = True

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[Address, int]:
        value, new = _unpack_one(data, pos, end)
        if new != end:
            raise WireError(f"address descriptor: {end - new} byte(s) left over")
        return value, new

    def validate(self, value: Any) -> Address:
        return _validate_address(value)

    def encode(self, value: Any) -> bytes:
        return _validate_address(value).encode()


class AddressListField(Field):
    """Descriptors back to back, to the end or within a length prefix; a tuple."""

    def __init__(self, prefix: Field | None) -> None:
        self.prefix = prefix
        self.greedy = prefix is None
        self.name = "addresses" if prefix is None else f"{prefix.name}_prefixed_addresses"

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[tuple[Address, ...], int]:
        if self.prefix is not None:
            n, pos = self.prefix.unpack(data, pos, end)
            if pos + n > end:
                raise WireError(f"address list truncated: length {n}, {end - pos} byte(s) left")
            end = pos + n
        values = []
        while pos < end:
            value, pos = _unpack_one(data, pos, end)
            values.append(value)
        return tuple(values), end

    def validate(self, value: Any) -> tuple[Address, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise WireError(f"an address list must be a sequence of descriptors, got {type(value).__name__}")
        values = tuple(_validate_address(v) for v in value)
        for v in values[:-1]:
            if isinstance(v, UnknownAddr):
                raise WireError("an unknown address descriptor can only be last (its length is unknown)")
        return values

    def encode(self, value: Any) -> bytes:
        body = b"".join(a.encode() for a in self.validate(value))
        if self.prefix is None:
            return body
        return self.prefix.encode(len(body)) + body


#: One descriptor filling the rest (init's ``remote_addr``).
address = AddressField()
#: Descriptors to the end.
address_list = AddressListField(None)
#: A u16 byte length, then descriptors (node_announcement ``addrlen`` + ``addresses``).
u16_address_list = AddressListField(u16)
