"""Transports: one small interface (``base``) and one module per medium."""

from lnpmsg.transports.base import (
    Connection,
    ConnectionClosed,
    ConnectionHandler,
    Listener,
    Transport,
    TransportError,
)

__all__ = ["Connection", "ConnectionClosed", "ConnectionHandler", "Listener", "Transport", "TransportError"]
