"""The payments store: invoices, payments (with their parts) and forwards in SQLite (WAL, ``synchronous=FULL``).

Every write commits before the caller acts on it (a preimage is on disk
before we settle with it; a forward is on disk before its outgoing HTLC is
offered, and so is the preimage it learned before it settles upstream; a
payment's part, with its route and the onion's shared secrets, is on disk
before its HTLC is offered), so a restart finds every invoice, payment and
HTLC in flight, and can read what comes back for them.
Calls are blocking: the app runs them in a worker thread.

A write that fails (a full disk: SQLite's ``database or disk is full``, a
failing disk) raises :class:`PaymentsStoreWriteFailed` and changes nothing
(SQLite rolls the statement back): the caller acts on nothing it could not
record, and tries again or refuses. A store that cannot open (a full disk:
SQLite's WAL needs room for its ``-shm`` file even to read) raises
:class:`PaymentsStoreError`, which names the file, why and what to do.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lnpmsg.node.full_disk import cannot, sqlite_transaction

__all__ = ["PaymentsStore", "PaymentsStoreError", "PaymentsStoreWriteFailed"]

#: the database's file name in the store's directory
STORE_FILE = "payments.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    payment_hash BLOB PRIMARY KEY, label TEXT UNIQUE NOT NULL, bolt11 TEXT NOT NULL, preimage BLOB NOT NULL,
    payment_secret BLOB NOT NULL, amount_msat INTEGER, description TEXT NOT NULL, created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL, min_final_cltv INTEGER NOT NULL, status TEXT NOT NULL,
    received_msat INTEGER NOT NULL DEFAULT 0, paid_at INTEGER
);
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY, payment_hash BLOB NOT NULL, bolt11 TEXT NOT NULL, payee BLOB NOT NULL,
    amount_msat INTEGER NOT NULL, fee_msat INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,
    routes TEXT NOT NULL DEFAULT '[]', preimage BLOB, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL, completed_at INTEGER
);
CREATE TABLE IF NOT EXISTS forwards (
    in_channel TEXT NOT NULL, in_htlc INTEGER NOT NULL, out_channel TEXT, out_htlc INTEGER,
    in_msat INTEGER NOT NULL, out_msat INTEGER NOT NULL, shared_secret BLOB NOT NULL,
    status TEXT NOT NULL, created_at INTEGER NOT NULL, payment_hash BLOB NOT NULL DEFAULT x'',
    in_cltv INTEGER NOT NULL DEFAULT 0, out_cltv INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (in_channel, in_htlc)
);
CREATE TABLE IF NOT EXISTS payment_parts (
    onion_key BLOB PRIMARY KEY, payment_id INTEGER NOT NULL, route TEXT NOT NULL, shared_secrets BLOB NOT NULL,
    amount_msat INTEGER NOT NULL, status TEXT NOT NULL, failure TEXT, created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payment_parts_by_payment ON payment_parts (payment_id);
"""
#: columns added after a table's first version: (table, column, definition)
_ADDED_COLUMNS = (("forwards", "preimage", "BLOB"), ("forwards", "failure", "BLOB"), ("forwards", "out_onion_key", "BLOB"),
                  ("invoices", "hold", "INTEGER NOT NULL DEFAULT 0"), ("invoices", "keysend", "INTEGER NOT NULL DEFAULT 0"))  # fmt: skip

_INVOICE_FIELDS = ("payment_hash", "label", "bolt11", "preimage", "payment_secret", "amount_msat", "description",
                   "created_at", "expires_at", "min_final_cltv", "status", "received_msat", "paid_at", "hold", "keysend")  # fmt: skip
_PAYMENT_FIELDS = ("id", "payment_hash", "bolt11", "payee", "amount_msat", "fee_msat", "status", "routes", "preimage",
                   "error", "attempts", "created_at", "completed_at")  # fmt: skip
_FORWARD_FIELDS = ("in_channel", "in_htlc", "out_channel", "out_htlc", "in_msat", "out_msat", "shared_secret", "status", "created_at",
                   "payment_hash", "in_cltv", "out_cltv", "preimage", "failure", "out_onion_key")  # fmt: skip
_PART_FIELDS = ("onion_key", "payment_id", "route", "shared_secrets", "amount_msat", "status", "failure", "created_at")
#: (channel, htlc id) pairs in one statement: two parameters each, under the 999 a statement may have in older SQLite builds
_PAIRS_PER_QUERY = 400
#: a shared secret of one hop (the parts' secrets are stored end to end)
_SECRET_SIZE = 32


class PaymentsStoreWriteFailed(Exception):
    """A write to the payments store failed (a full disk, a failing disk): nothing of it was recorded."""


class PaymentsStoreError(Exception):
    """The payments store could not be opened (a full disk, a damaged file): the message says which
    file, why and what to do; nothing in it was changed."""


class PaymentsStore:
    """One SQLite database (``payments.sqlite3`` in ``directory``)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / STORE_FILE
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise PaymentsStoreError(cannot("open the payments store", self.path, exc)) from exc
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise PaymentsStoreError(cannot("open the payments store", self.path, exc)) from exc

    def _open(self) -> None:
        """WAL, FULL and the schema (``IF NOT EXISTS``: what a failed open did not make, the next one makes)."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for table, column, definition in _ADDED_COLUMNS:
            if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        self._db.execute("CREATE INDEX IF NOT EXISTS forwards_by_out ON forwards (out_channel, out_htlc)")

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock, _refused_writes():
            cur = self._db.execute(sql, args)
            return cur.lastrowid or 0

    def _rows(self, sql: str, args: tuple[Any, ...], fields: tuple[str, ...]) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(zip(fields, row, strict=True)) for row in self._db.execute(sql, args).fetchall()]

    # ------------------------------------------------------------ invoices

    def add_invoice(self, **values: Any) -> None:
        """A new invoice (``sqlite3.IntegrityError`` when the label or hash exists)."""
        values.setdefault("status", "unpaid")
        names = ", ".join(values)
        self._write(f"INSERT INTO invoices ({names}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))

    def add_keysend(self, **values: Any) -> dict[str, Any] | None:
        """A keysend we received, as a paid invoice (``keysend`` 1, its preimage, no bolt11): on disk
        before its HTLC is fulfilled. The row now under its payment hash: a row that had the hash
        already is left as it was (None: the label is another row's)."""
        values.update(status="paid", keysend=1)
        names = ", ".join(values)
        self._write(f"INSERT OR IGNORE INTO invoices ({names}) VALUES ({', '.join('?' * len(values))})", tuple(values.values()))
        return self.invoice(values["payment_hash"])

    def invoice(self, payment_hash: bytes) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {', '.join(_INVOICE_FIELDS)} FROM invoices WHERE payment_hash = ?", (payment_hash,), _INVOICE_FIELDS)
        return rows[0] if rows else None

    def invoices(self, label: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE label = ?", (label,)) if label else ("", ())
        return self._rows(f"SELECT {', '.join(_INVOICE_FIELDS)} FROM invoices {where} ORDER BY created_at", args, _INVOICE_FIELDS)

    def delete_invoice(self, label: str) -> dict[str, Any] | None:
        """Delete the unpaid (or expired) invoice ``label``; the row it was, or None if no such unpaid invoice."""
        with self._lock, _refused_writes():
            rows = self._db.execute(f"SELECT {', '.join(_INVOICE_FIELDS)} FROM invoices WHERE label = ? AND status != 'paid'",
                                    (label,)).fetchall()  # fmt: skip
            if not rows:
                return None
            self._db.execute("DELETE FROM invoices WHERE label = ? AND status != 'paid'", (label,))
            return dict(zip(_INVOICE_FIELDS, rows[0], strict=True))

    def mark_paid(self, payment_hash: bytes, received_msat: int, paid_at: int) -> None:
        self._write("UPDATE invoices SET status = 'paid', received_msat = ?, paid_at = ? WHERE payment_hash = ? AND status != 'paid'",
                    (received_msat, paid_at, payment_hash))  # fmt: skip

    # a hold invoice (``hold`` 1, ``preimage`` empty until settled): unpaid -> accepted -> paid, or -> cancelled

    def mark_accepted(self, payment_hash: bytes, held_msat: int) -> None:
        """A hold invoice's payment arrived whole and is held (``received_msat``: what the held HTLCs carry)."""
        self._write("UPDATE invoices SET status = 'accepted', received_msat = ? WHERE payment_hash = ? AND status IN ('unpaid', 'accepted')",
                    (held_msat, payment_hash))  # fmt: skip

    def settle_held(self, payment_hash: bytes, preimage: bytes, received_msat: int, paid_at: int) -> None:
        """The preimage of an accepted hold invoice, and the invoice paid: on disk before any HTLC is fulfilled."""
        self._write("UPDATE invoices SET status = 'paid', preimage = ?, received_msat = ?, paid_at = ? WHERE payment_hash = ? "
                    "AND status = 'accepted'", (preimage, received_msat, paid_at, payment_hash))  # fmt: skip

    def mark_cancelled(self, payment_hash: bytes) -> None:
        """A hold invoice given up (its HTLCs fail back): kept as a record, never paid."""
        self._write("UPDATE invoices SET status = 'cancelled' WHERE payment_hash = ? AND status != 'paid'", (payment_hash,))

    # ------------------------------------------------------------ payments

    def add_payment(self, payment_hash: bytes, bolt11: str, payee: bytes, amount_msat: int, created_at: int) -> int:
        return self._write(
            "INSERT INTO payments (payment_hash, bolt11, payee, amount_msat, status, created_at) VALUES (?, ?, ?, ?, 'pending', ?)",
            (payment_hash, bolt11, payee, amount_msat, created_at),
        )

    def update_payment(self, payment_id: int, **values: Any) -> None:
        if "routes" in values:
            values["routes"] = json.dumps(values["routes"])
        sets = ", ".join(f"{k} = ?" for k in values)
        self._write(f"UPDATE payments SET {sets} WHERE id = ?", (*values.values(), payment_id))

    def payments(self, payment_hash: bytes | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE payment_hash = ?", (payment_hash,)) if payment_hash else ("", ())
        rows = self._rows(f"SELECT {', '.join(_PAYMENT_FIELDS)} FROM payments {where} ORDER BY id", args, _PAYMENT_FIELDS)
        for row in rows:
            row["routes"] = json.loads(row["routes"])
        return rows

    def add_part(self, payment_id: int, onion_key: bytes, route: list[dict[str, Any]], shared_secrets: tuple[bytes, ...],
                 amount_msat: int, created_at: int) -> None:  # fmt: skip
        """A part of a payment, before its HTLC is offered: ``onion_key`` (the onion's first ephemeral
        key, unique per part) finds it again from the HTLC; the secrets read its failure."""
        self._write("INSERT INTO payment_parts (onion_key, payment_id, route, shared_secrets, amount_msat, status, created_at) "
                    "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                    (onion_key, payment_id, json.dumps(route), b"".join(shared_secrets), amount_msat, created_at))  # fmt: skip

    def part_status(self, onion_key: bytes, status: str, failure: str | None = None) -> None:
        self._write("UPDATE payment_parts SET status = ?, failure = ? WHERE onion_key = ?", (status, failure, onion_key))

    def parts(self, payment_id: int) -> list[dict[str, Any]]:
        """A payment's parts, oldest first (``route`` as JSON hops, ``shared_secrets`` as a tuple)."""
        rows = self._rows(f"SELECT {', '.join(_PART_FIELDS)} FROM payment_parts WHERE payment_id = ? ORDER BY rowid",
                          (payment_id,), _PART_FIELDS)  # fmt: skip
        for row in rows:
            row["route"] = json.loads(row["route"])
            blob = row["shared_secrets"]
            row["shared_secrets"] = tuple(blob[i : i + _SECRET_SIZE] for i in range(0, len(blob), _SECRET_SIZE))
        return rows

    # ------------------------------------------------------------ forwards

    def add_forward(self, in_channel: str, in_htlc: int, in_msat: int, out_msat: int, shared_secret: bytes, created_at: int,
                    payment_hash: bytes = b"", in_cltv: int = 0, out_cltv: int = 0, out_onion_key: bytes | None = None) -> bool:  # fmt: skip
        """Record a forward before its outgoing HTLC is offered; False if it is known already.

        ``out_onion_key`` (the outgoing onion's ephemeral key) names the outgoing HTLC once offered,
        also when a stop came before :meth:`forward_out` recorded its id."""
        try:
            self._write("INSERT INTO forwards (in_channel, in_htlc, in_msat, out_msat, shared_secret, status, created_at, payment_hash, "
                        "in_cltv, out_cltv, out_onion_key) VALUES (?, ?, ?, ?, ?, 'offering', ?, ?, ?, ?, ?)",
                        (in_channel, in_htlc, in_msat, out_msat, shared_secret, created_at, payment_hash, in_cltv, out_cltv,
                         out_onion_key))  # fmt: skip
        except sqlite3.IntegrityError:
            return False
        return True

    def forward_out(self, in_channel: str, in_htlc: int, out_channel: str, out_htlc: int) -> None:
        self._write("UPDATE forwards SET out_channel = ?, out_htlc = ?, status = 'offered' WHERE in_channel = ? AND in_htlc = ?",
                    (out_channel, out_htlc, in_channel, in_htlc))  # fmt: skip

    def forward_status(self, in_channel: str, in_htlc: int, status: str) -> None:
        self._write("UPDATE forwards SET status = ? WHERE in_channel = ? AND in_htlc = ?", (status, in_channel, in_htlc))

    def forward_failed(self, in_channel: str, in_htlc: int, failure: bytes) -> None:
        """The forward failed: the failure onion for upstream is on disk before it goes (a restart sends the same)."""
        self._write("UPDATE forwards SET status = 'failed', failure = ? WHERE in_channel = ? AND in_htlc = ?",
                    (failure, in_channel, in_htlc))  # fmt: skip

    def forward_settled(self, in_channel: str, in_htlc: int, preimage: bytes) -> None:
        """The forward's outgoing HTLC was fulfilled: the preimage is on disk before it goes upstream."""
        self._write("UPDATE forwards SET status = 'settled', preimage = ? WHERE in_channel = ? AND in_htlc = ?",
                    (preimage, in_channel, in_htlc))  # fmt: skip

    def forward_reset(self, in_channel: str, in_htlc: int) -> None:
        """The outgoing HTLC never got into a commitment (dropped with the connection): to offer again."""
        self._write("UPDATE forwards SET status = 'offering', out_channel = NULL, out_htlc = NULL WHERE in_channel = ? AND in_htlc = ?",
                    (in_channel, in_htlc))  # fmt: skip

    def forward(self, in_channel: str, in_htlc: int) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {', '.join(_FORWARD_FIELDS)} FROM forwards WHERE in_channel = ? AND in_htlc = ?",
                          (in_channel, in_htlc), _FORWARD_FIELDS)  # fmt: skip
        return rows[0] if rows else None

    def forwards_by_out(self, outs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """The forwards whose outgoing HTLCs are among ``outs`` ((out_channel, out_htlc) pairs), by
        outgoing HTLC; one call for them all (a restart asks about every HTLC we offered)."""
        outs = list(outs)
        rows: list[dict[str, Any]] = []
        fields = ", ".join(f"f.{name}" for name in _FORWARD_FIELDS)
        # a chunk stays under SQLite's bound on a statement's parameters; the join looks each pair up in
        # the forwards_by_out index (an IN over row values would scan every forward ever made)
        for start in range(0, len(outs), _PAIRS_PER_QUERY):
            chunk = outs[start : start + _PAIRS_PER_QUERY]
            pairs = ", ".join("(?, ?)" for _ in chunk)
            rows += self._rows(f"SELECT {fields} FROM (VALUES {pairs}) AS wanted JOIN forwards AS f "
                               "ON f.out_channel = wanted.column1 AND f.out_htlc = wanted.column2",
                               tuple(v for pair in chunk for v in pair), _FORWARD_FIELDS)  # fmt: skip
        return {(row["out_channel"], row["out_htlc"]): row for row in rows}

    def fill_out_onion_keys(self, keys: dict[tuple[str, int], bytes]) -> None:
        """Record the outgoing onion's key of forwards written before it was kept ((in_channel, in_htlc)
        -> key), in one transaction; a key a forward has already is left as it is."""
        with self._lock, _refused_writes():
            with sqlite_transaction(self._db, "BEGIN IMMEDIATE"):
                self._db.executemany("UPDATE forwards SET out_onion_key = ? WHERE in_channel = ? AND in_htlc = ? AND out_onion_key IS NULL",
                                     [(key, ref[0], ref[1]) for ref, key in keys.items()])  # fmt: skip

    def forwards(self, status: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        return self._rows(f"SELECT {', '.join(_FORWARD_FIELDS)} FROM forwards {where} ORDER BY created_at", args, _FORWARD_FIELDS)


@contextmanager
def _refused_writes() -> Iterator[None]:
    """SQLite's failure to write (``OperationalError``: the disk is full, or failing, or the file is
    locked) as :class:`PaymentsStoreWriteFailed`; SQLite has rolled the statement back."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise PaymentsStoreWriteFailed(f"the payments store could not be written ({exc})") from exc
