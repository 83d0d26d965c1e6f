"""The one peer address syntax of lnpmsg, parsed and printed here only.

Forms (``NODEID`` is the 66-hex-character compressed public key):

===========================================  =========  ==========================
text                                         transport  target given to transport
===========================================  =========  ==========================
``NODEID@host:port``                          tcp        ``host:port``
``NODEID@xyz...onion:port``                   tor        ``xyz...onion:port``
``tcp://NODEID@host:port`` (``bolt://``,      tcp        ``host:port``
``lnp://``)
``tor://NODEID@xyz...onion:port``             tor        ``xyz...onion:port``
``udp://NODEID@host:port`` (``lnpu://``)      udp        ``host:port``
``zmq+tcp://NODEID@host:port`` (``lnpz://``)  zmq        ``tcp://host:port``
``zmq+ipc://NODEID@/path/to/socket``          zmq        ``ipc:///path/to/socket``
``mem://NODEID@name``                         mem        ``name`` (in-process, tests:
                                                         :mod:`lnpmsg.testing.memory`)
===========================================  =========  ==========================

The port defaults to 9735 (BOLT 1) where one is missing. ``NODEID@`` may be
left out only where a peer is not dialed by key (e.g. a listen address).
:func:`format_peer_address` prints the canonical form, and
``parse_peer_address(format_peer_address(a)) == a`` for every address.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg._hex import parse_hex

__all__ = [
    "DEFAULT_PORT",
    "AddressError",
    "PeerAddress",
    "format_host_port",
    "format_peer_address",
    "parse_listen_address",
    "parse_peer_address",
    "split_host_port",
]

DEFAULT_PORT = 9735

_SCHEMES = {
    "tcp": "tcp",
    "bolt": "tcp",
    "lnp": "tcp",
    "tor": "tor",
    "udp": "udp",
    "lnpu": "udp",
    "zmq+tcp": "zmq+tcp",
    "lnpz": "zmq+tcp",
    "zmq+ipc": "zmq+ipc",
    "mem": "mem",
}


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts.

    >>> split_host_port("127.0.0.1:9735")
    ('127.0.0.1', 9735)
    >>> split_host_port("[::1]:9735")
    ('::1', 9735)
    """
    text = target.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"bad address {target!r}: missing ']'")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {target!r}: junk after ']'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"bad address {target!r}: IPv6 addresses need brackets, e.g. [::1]:9735")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"bad address {target!r}: empty host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"bad address {target!r}: missing port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad address {target!r}: port must be 0..65535")
    return host, int(port_text)


def format_host_port(host: str, port: int) -> str:
    """Inverse of :func:`split_host_port`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AddressError(ValueError):
    """A peer address that does not parse, with the reason."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """Where and how to reach a peer.

    ``kind`` names the transport (``tcp``, ``tor``, ``udp``, ``zmq``); ``target``
    is the transport's own address text; ``node_id`` the expected key (or None).
    """

    kind: str
    target: str
    node_id: bytes | None = None

    def __str__(self) -> str:
        return format_peer_address(self)


def _parse_node_id(text: str, original: str) -> bytes:
    try:
        node_id = parse_hex(text, "node id", 33, quote=False)
    except ValueError as exc:
        raise AddressError(f"bad peer address {original!r}: {exc}") from None
    if node_id[0] not in (2, 3):
        raise AddressError(f"bad peer address {original!r}: node id must start with 02 or 03")
    return node_id


def _host_port(text: str, original: str) -> tuple[str, int]:
    try:
        return split_host_port(text, DEFAULT_PORT)
    except ValueError as exc:
        raise AddressError(f"bad peer address {original!r}: {exc}") from None


def parse_peer_address(text: str, *, require_node_id: bool = True) -> PeerAddress:
    """Parse any supported address form (see the module docstring)."""
    original = text
    text = text.strip()
    scheme = None
    if "://" in text:
        scheme_text, _, text = text.partition("://")
        scheme = _SCHEMES.get(scheme_text.lower())
        if scheme is None:
            known = ", ".join(sorted(_SCHEMES))
            raise AddressError(f"bad peer address {original!r}: unknown scheme {scheme_text!r} (known: {known})")
    node_id = None
    if "@" in text:
        id_text, _, text = text.partition("@")
        node_id = _parse_node_id(id_text, original)
    elif require_node_id:
        raise AddressError(f"bad peer address {original!r}: expected NODEID@host:port")
    if scheme == "zmq+ipc":
        if not text.startswith("/"):
            raise AddressError(f"bad peer address {original!r}: zmq+ipc needs an absolute socket path")
        return PeerAddress("zmq", f"ipc://{text}", node_id)
    if scheme == "mem":
        # a listener's name in one process; empty (listen only) picks a fresh one
        if not text and require_node_id:
            raise AddressError(f"bad peer address {original!r}: mem:// needs a listener name")
        return PeerAddress("mem", text, node_id)
    host, port = _host_port(text, original)
    target = format_host_port(host, port)
    if scheme == "zmq+tcp":
        return PeerAddress("zmq", f"tcp://{target}", node_id)
    is_onion = host.lower().endswith(".onion")
    if scheme is None:
        scheme = "tor" if is_onion else "tcp"
    if scheme == "tcp" and is_onion:
        scheme = "tor"  # an onion can only be reached through Tor
    return PeerAddress(scheme, target, node_id)


def format_peer_address(address: PeerAddress) -> str:
    """The canonical text of an address (short BOLT form for TCP and onions)."""
    prefix = f"{address.node_id.hex()}@" if address.node_id is not None else ""
    if address.kind == "zmq":
        if address.target.startswith("ipc://"):
            return f"zmq+ipc://{prefix}{address.target[len('ipc://'):]}"
        return f"zmq+tcp://{prefix}{address.target[len('tcp://'):]}"
    if address.kind == "mem":
        return f"mem://{prefix}{address.target}"
    host = split_host_port(address.target)[0]
    if address.kind == "tcp" or (address.kind == "tor" and host.lower().endswith(".onion")):
        return f"{prefix}{address.target}"
    return f"{address.kind}://{prefix}{address.target}"


def parse_listen_address(text: str) -> PeerAddress:
    """A listen address: same syntax without a node id (``127.0.0.1:9735``, ``udp://0.0.0.0:9735``...)."""
    return parse_peer_address(text, require_node_id=False)
