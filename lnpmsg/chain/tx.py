"""Where untrusted bytes enter the chain layer.

Transactions and blocks are :mod:`lnpmsg.bitcoin`'s one model; this module
is the chain layer's boundary to it. Bad data found there raises
``BitcoinError``; the chain layer promises ``ChainError`` only, so every
parse of bytes from outside (a broadcast, a block from bitcoind, a file)
runs inside ``malformed()``, which turns one into the other with code
``"malformed"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.errors import ChainError

__all__ = ["SerializedTx", "as_tx", "malformed"]


@contextmanager
def malformed(what: str) -> Iterator[None]:
    """Turn a ``BitcoinError`` raised inside into ``ChainError(code="malformed")`` naming ``what``."""
    try:
        yield
    except BitcoinError as exc:
        raise ChainError(f"malformed {what}: {exc}", code="malformed") from exc


class SerializedTx(Protocol):
    """Any transaction object that serializes itself (another library's model, e.g. embit's)."""

    def serialize(self) -> bytes: ...


def as_tx(value: bytes | bytearray | memoryview | Tx | SerializedTx) -> Tx:
    """A transaction given as bytes, as a ``Tx``, or as any object with ``serialize()``."""
    if isinstance(value, Tx):
        return value
    raw: object = value
    if not isinstance(value, (bytes, bytearray, memoryview)):
        serialize = getattr(value, "serialize", None)
        if not callable(serialize):
            raise ChainError(f"not a transaction: {type(value).__name__}", code="malformed")
        raw = serialize()
    with malformed("transaction"):
        return Tx.parse(raw)  # type: ignore[arg-type]  # Reader refuses anything but bytes
