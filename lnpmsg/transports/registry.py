"""The transports a node enables unless it is given its own set.

A node picks a transport by the kind of a peer or listen address (see
:mod:`lnpmsg.transports.address`), so the set is a mapping from kind to
:class:`~lnpmsg.transports.base.Transport`. By default every medium that
needs nothing outside this process is on: TCP, UDP (QUIC) and ZeroMQ. Tor
needs a running Tor, so it joins only when its SOCKS port is configured.

A default medium's module is imported, and its transport made, when the node
first listens or dials with that kind (:class:`Transports`): a node that only
speaks TCP never loads aioquic, which with the X.509 stack it brings costs
tens of milliseconds at every start.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping

from lnpmsg.transports.base import Transport

__all__ = ["DEFAULT_KINDS", "TRANSPORT_CLASSES", "Transports", "default_transports", "make_transport"]

#: the kinds enabled without configuration (Tor is added by ``tor_socks``)
DEFAULT_KINDS = ("tcp", "udp", "zmq")

#: where each default kind's transport is: (module, class), made with no arguments
TRANSPORT_CLASSES = {
    "tcp": ("lnpmsg.transports.tcp", "TcpTransport"),
    "udp": ("lnpmsg.transports.udp", "UdpTransport"),
    "zmq": ("lnpmsg.transports.zmq", "ZmqTransport"),
}


def make_transport(kind: str) -> Transport:
    """A fresh default transport of ``kind`` (one of :data:`TRANSPORT_CLASSES`), its module imported now."""
    module, name = TRANSPORT_CLASSES[kind]
    transport: Transport = getattr(importlib.import_module(module), name)()
    return transport


class Transports(MutableMapping[str, Transport]):
    """A node's transports by kind: given ones, and default kinds made on first lookup.

    Every kind counts as enabled from the start (``in``, iteration and ``len``
    see it); only ``transports[kind]`` (or ``.get``, ``.values()``) builds a
    default one, once. Setting a kind replaces it, built or not.
    """

    def __init__(self, transports: Mapping[str, Transport] | None = None, *, defaults: tuple[str, ...] = ()) -> None:
        #: kind -> its transport, or None for a default one not made yet
        self._entries: dict[str, Transport | None] = dict.fromkeys(defaults)
        self._entries.update(transports or {})

    def __getitem__(self, kind: str) -> Transport:
        transport = self._entries[kind]
        if transport is None:
            transport = self._entries[kind] = make_transport(kind)
        return transport

    def __setitem__(self, kind: str, transport: Transport) -> None:
        self._entries[kind] = transport

    def __delitem__(self, kind: str) -> None:
        del self._entries[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries  # without building it

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        shown = {kind: "(not made yet)" if t is None else t for kind, t in self._entries.items()}
        return f"Transports({shown})"


def default_transports(*, tor_socks: tuple[str, int] | None = None) -> Transports:
    """The default kinds (each made on first use), plus ``tor`` when ``tor_socks`` names Tor's SOCKS port.

    The Tor transport is made here, so a bad SOCKS address is refused at
    once; it is onion-only: clearnet targets are refused rather than
    silently leaving Tor.
    """
    transports = Transports(defaults=DEFAULT_KINDS)
    if tor_socks is not None:
        from lnpmsg.transports.tor.transport import TorTransport

        transports["tor"] = TorTransport(tor_socks)
    return transports
