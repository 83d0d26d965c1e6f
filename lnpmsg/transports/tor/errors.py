"""The Tor layer's errors: one base class, a subclass per kind of failure.

Every error is a :class:`~lnpmsg.transports.base.TransportError`, so code
that only knows the transport interface still catches them.
"""

from __future__ import annotations

from lnpmsg.transports.base import TransportError

__all__ = [
    "ClearnetRefused",
    "OnionAddressError",
    "OnionServiceError",
    "SocksError",
    "TorAuthError",
    "TorBootstrapError",
    "TorControlError",
    "TorDiskFull",
    "TorError",
    "TorNotFound",
]


class TorError(TransportError):
    """Anything that went wrong in the Tor layer (the message says what and why)."""


class TorNotFound(TorError):
    """The ``tor`` executable is not installed or not where it was said to be."""


class TorControlError(TorError):
    """Talking to Tor's control port failed (connection refused, closed, or a command was rejected)."""


class TorAuthError(TorControlError):
    """Tor's control port refused our credentials (wrong password or cookie)."""


class TorBootstrapError(TorError):
    """Tor did not finish bootstrapping in time, or exited while starting."""


class TorDiskFull(TorBootstrapError):
    """A launched tor could not write its files (its data dir, torrc, log) for lack of room.

    ``path``: the file or directory tor (or we, preparing its files) could
    not write; ``output``: tor's last lines, its own word on it.
    """

    def __init__(self, message: str, path: str, output: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.output = output


class OnionAddressError(TorError, ValueError):
    """A text is not a valid v3 onion address (the message names the rule it breaks)."""


class OnionServiceError(TorError):
    """The onion service could not be created, published or removed."""


class SocksError(TorError):
    """Tor's SOCKS port refused or failed a connection.

    ``code`` is the SOCKS5 reply code (``None`` when the failure was not a
    reply code, e.g. a malformed answer or a timeout).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ClearnetRefused(TorError):
    """A dial to a non-onion target while clearnet targets are not allowed.

    Raised before any socket is opened, so the target never appears on the
    wire, not even as a SOCKS request.
    """
