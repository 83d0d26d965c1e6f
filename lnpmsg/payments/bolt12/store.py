"""The offers store: the offers this node made, and its invoice requests not for an offer (refunds),
in SQLite (calls are blocking, the app runs them in a worker thread). An offer is on disk before its text is shown to anyone, so an
invoice request for it finds it after a restart."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from lnpmsg.node.full_disk import cannot, sqlite_transaction

__all__ = ["OffersStore", "OffersStoreError"]

STORE_FILE = "offers.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS offers (
    offer_id BLOB PRIMARY KEY, bolt12 TEXT NOT NULL, label TEXT UNIQUE, active INTEGER NOT NULL DEFAULT 1,
    path_id TEXT, path_salt BLOB, created_at INTEGER NOT NULL, invoices INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refunds (
    metadata BLOB PRIMARY KEY, bolt12 TEXT NOT NULL, label TEXT UNIQUE, status TEXT NOT NULL, created_at INTEGER NOT NULL,
    payment_hash BLOB
);
"""
_REFUND_COLUMNS = ("metadata", "bolt12", "label", "status", "created_at", "payment_hash")
_COLUMNS = ("offer_id", "bolt12", "label", "active", "path_id", "path_salt", "created_at", "invoices")


class OffersStoreError(Exception):
    """The store cannot be opened or written (the message names the file and why)."""


class OffersStore:
    """Our offers: their text, label, whether they are still answered, the id and salt of their blinded path."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / STORE_FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OffersStoreError(cannot("open the offers store", self.path, exc)) from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _write(self, what: str, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            try:
                with sqlite_transaction(self._db):
                    return self._db.execute(sql, params).rowcount
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise OffersStoreError(cannot(what, self.path, exc)) from None

    def add(self, offer_id: bytes, bolt12: str, label: str | None, path_id: str | None, path_salt: bytes | None, created_at: int) -> None:
        """Record a new offer (``sqlite3.IntegrityError``: the label or the offer exists already); ``path_id``
        names its blinded path, ``path_salt`` derives that path's keys (:mod:`.keys`)."""
        self._write("record an offer in", "INSERT INTO offers (offer_id, bolt12, label, path_id, path_salt, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (offer_id, bolt12, label, path_id, path_salt, created_at))  # fmt: skip

    def disable(self, offer_id: bytes) -> bool:
        """Stop answering the offer; False if there is no such offer."""
        return self._write("disable an offer in", "UPDATE offers SET active = 0 WHERE offer_id = ?", (offer_id,)) > 0

    def count_invoice(self, offer_id: bytes) -> None:
        self._write("count an invoice in", "UPDATE offers SET invoices = invoices + 1 WHERE offer_id = ?", (offer_id,))

    def offers(self) -> list[dict[str, Any]]:
        """Every offer, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM offers ORDER BY created_at, rowid").fetchall()
        return [dict(zip(_COLUMNS, r, strict=True)) for r in rows]

    def add_refund(self, metadata: bytes, bolt12: str, label: str | None, created_at: int) -> None:
        """Record an invoice request of ours not for an offer (``sqlite3.IntegrityError``: the label exists)."""
        self._write("record an invoice request in", "INSERT INTO refunds (metadata, bolt12, label, status, created_at) VALUES (?, ?, ?, 'unpaid', ?)",
                    (metadata, bolt12, label, created_at))  # fmt: skip

    def set_refund_status(self, metadata: bytes, status: str, payment_hash: bytes | None) -> None:
        """The request's status (unpaid, paying, paid) and the payment hash of the invoice being paid, if any."""
        self._write("record an invoice request's payment in", "UPDATE refunds SET status = ?, payment_hash = ? WHERE metadata = ?",
                    (status, payment_hash, metadata))  # fmt: skip

    def refunds(self) -> list[dict[str, Any]]:
        """Every invoice request of ours not for an offer, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_REFUND_COLUMNS)} FROM refunds ORDER BY created_at, rowid").fetchall()
        return [dict(zip(_REFUND_COLUMNS, r, strict=True)) for r in rows]
