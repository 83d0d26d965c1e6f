"""Tor: control (stem), the node's onion service, and a SOCKS5 transport.

- :mod:`.control`: :class:`LaunchedTor` (own a ``tor`` process) and
  :class:`AttachedTor` (use a running one), both with an async stem wrapper.
- :mod:`.controller`: that wrapper, :class:`TorController` (stem from trio,
  control-port authentication, bootstrap status).
- :mod:`.onion`: :class:`OnionService` and v3 onion address validation.
- :mod:`.transport`: :class:`TorTransport` (dial through SOCKS5, listen on loopback).
- :mod:`.socks`: the SOCKS5 client handshake (sans-IO) and its trio shell.
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports
from lnpmsg.transports.tor.address import (
    OnionAddress,
    is_onion_host,
    parse_onion_address,
)
from lnpmsg.transports.tor.errors import (
    ClearnetRefused,
    OnionAddressError,
    OnionServiceError,
    SocksError,
    TorAuthError,
    TorBootstrapError,
    TorControlError,
    TorError,
    TorNotFound,
)

if TYPE_CHECKING:
    from lnpmsg.transports.tor.control import (
        AttachedTor,
        LaunchedTor,
        TorHandle,
    )
    from lnpmsg.transports.tor.controller import BootstrapStatus, TorController
    from lnpmsg.transports.tor.onion import DEFAULT_VIRTUAL_PORT, OnionService
    from lnpmsg.transports.tor.transport import TorConnection, TorTransport

#: the stem side (control, onion service) and the SOCKS transport, imported when first used:
#: a node dialing through a SOCKS port (``--tor-socks``) never loads stem
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        **dict.fromkeys(("AttachedTor", "LaunchedTor", "TorHandle"), "lnpmsg.transports.tor.control"),
        **dict.fromkeys(("BootstrapStatus", "TorController"), "lnpmsg.transports.tor.controller"),
        **dict.fromkeys(("DEFAULT_VIRTUAL_PORT", "OnionService"), "lnpmsg.transports.tor.onion"),
        **dict.fromkeys(("TorConnection", "TorTransport"), "lnpmsg.transports.tor.transport"),
    },
)

__all__ = [
    "DEFAULT_VIRTUAL_PORT",
    "AttachedTor",
    "BootstrapStatus",
    "ClearnetRefused",
    "LaunchedTor",
    "OnionAddress",
    "OnionAddressError",
    "OnionService",
    "OnionServiceError",
    "SocksError",
    "TorAuthError",
    "TorBootstrapError",
    "TorConnection",
    "TorControlError",
    "TorController",
    "TorError",
    "TorHandle",
    "TorNotFound",
    "TorTransport",
    "is_onion_host",
    "parse_onion_address",
]
