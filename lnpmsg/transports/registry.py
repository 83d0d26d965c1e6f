"""The transports a node enables unless it is given its own set.

A node picks a transport by the kind of a peer or listen address (see
:mod:`lnpmsg.transports.address`), so the set is a mapping from kind to
:class:`~lnpmsg.transports.base.Transport`. By default every medium that
needs nothing outside this process is on: TCP, UDP (QUIC) and ZeroMQ. Tor
needs a running Tor, so it joins only when its SOCKS port is configured.

The modules of the optional media are imported when the set is built, not
when this module is: a program that passes its own transports never loads
aioquic or pyzmq.
"""

from __future__ import annotations

from lnpmsg.transports.base import Transport

__all__ = ["DEFAULT_KINDS", "default_transports"]

#: the kinds enabled without configuration (Tor is added by ``tor_socks``)
DEFAULT_KINDS = ("tcp", "udp", "zmq")


def default_transports(*, tor_socks: tuple[str, int] | None = None) -> dict[str, Transport]:
    """A fresh transport per default kind, plus ``tor`` when ``tor_socks`` names Tor's SOCKS port.

    The Tor transport built here is onion-only: clearnet targets are refused
    rather than silently leaving Tor.
    """
    from lnpmsg.transports.tcp import TcpTransport
    from lnpmsg.transports.udp import UdpTransport
    from lnpmsg.transports.zmq import ZmqTransport

    transports: dict[str, Transport] = {"tcp": TcpTransport(), "udp": UdpTransport(), "zmq": ZmqTransport()}
    if tor_socks is not None:
        from lnpmsg.transports.tor.transport import TorTransport

        transports["tor"] = TorTransport(tor_socks)
    return transports
