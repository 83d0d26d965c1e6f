"""The persistent gossip store: SQLite (WAL) in the node's data dir.

Tables: ``channels`` (the announcement's ids and keys, capacity when known,
when we learned it, the raw message), ``updates`` (the latest
channel_update per channel direction, its fields and raw bytes), ``nodes``
(the latest node_announcement per node), ``meta`` (the chain), and the
index from node ids to channels (:mod:`lnpmsg.gossip.store_nodes`). Every
accepted message is kept byte for byte: replies to queries and relays send
exactly what was signed.

:class:`GossipStore` is the blocking core (``sqlite3``): it applies the
:class:`~lnpmsg.gossip.graph.Decision` objects of a :class:`Graph`, rebuilds
a graph on start (:meth:`GossipStore.load_into`), and answers the reads of
queries and the control API. :class:`AsyncGossipStore` runs it from trio
in a worker thread, one call at a time.

Short channel ids are unsigned 64-bit; SQLite integers are signed, so they
are stored shifted by 2**63 (an order-keeping map).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, Self, TypeVar

import trio

from lnpmsg.gossip import store_nodes
from lnpmsg.gossip.checksum import channel_update_checksum
from lnpmsg.gossip.errors import GossipError, GossipStoreWriteError
from lnpmsg.gossip.graph import ChannelRemoved, Decision, Graph, Outcome, routable
from lnpmsg.gossip.messages import (
    QUERY_FLAG_ANNOUNCEMENT,
    QUERY_FLAG_NODE_1,
    QUERY_FLAG_NODE_2,
    QUERY_FLAG_UPDATE_1,
    QUERY_FLAG_UPDATE_2,
    ChannelAnnouncement,
    ChannelUpdate,
    NodeAnnouncement,
    parse_addresses,
)
from lnpmsg.node.full_disk import cannot, sqlite_transaction
from lnpmsg.wire import Features, ShortChannelId, WireError

__all__ = ["DB_FILE_NAME", "AsyncGossipStore", "GossipStore", "scid_text"]

#: the store's file name in the data dir
DB_FILE_NAME = "gossip.sqlite3"
#: ids per ``IN (...)`` lookup (SQLite allows 32,766 parameters; smaller keeps each statement quick)
_IN_CHUNK = 500
_SHIFT = 1 << 63
_SCHEMA_VERSION = 2
#: SQLite's page cache for the store (KiB)
CACHE_KIB = 16 * 1024
#: WAL pages written between automatic checkpoints (SQLite's default: 1000)
WAL_CHECKPOINT_PAGES = 4000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channels (
    scid INTEGER PRIMARY KEY,
    node_id_1 BLOB NOT NULL,
    node_id_2 BLOB NOT NULL,
    bitcoin_key_1 BLOB NOT NULL,
    bitcoin_key_2 BLOB NOT NULL,
    features BLOB NOT NULL,
    capacity_sat INTEGER,
    first_seen INTEGER NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS updates (
    scid INTEGER NOT NULL,
    direction INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    message_flags INTEGER NOT NULL,
    channel_flags INTEGER NOT NULL,
    cltv_expiry_delta INTEGER NOT NULL,
    htlc_minimum_msat INTEGER NOT NULL,
    htlc_maximum_msat INTEGER NOT NULL,
    fee_base_msat INTEGER NOT NULL,
    fee_proportional_millionths INTEGER NOT NULL,
    raw BLOB NOT NULL,
    PRIMARY KEY (scid, direction)
) WITHOUT ROWID;
""" + store_nodes.SCHEMA

_INSERT_CHANNEL = (
    "INSERT OR IGNORE INTO channels (scid, node_id_1, node_id_2, bitcoin_key_1, bitcoin_key_2, features, capacity_sat, first_seen, raw)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_UPDATE = (
    "INSERT INTO updates (scid, direction, timestamp, message_flags, channel_flags, cltv_expiry_delta,"
    " htlc_minimum_msat, htlc_maximum_msat, fee_base_msat, fee_proportional_millionths, raw)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (scid, direction) DO UPDATE SET timestamp = excluded.timestamp,"
    " message_flags = excluded.message_flags, channel_flags = excluded.channel_flags,"
    " cltv_expiry_delta = excluded.cltv_expiry_delta, htlc_minimum_msat = excluded.htlc_minimum_msat,"
    " htlc_maximum_msat = excluded.htlc_maximum_msat, fee_base_msat = excluded.fee_base_msat,"
    " fee_proportional_millionths = excluded.fee_proportional_millionths, raw = excluded.raw"
    " WHERE excluded.timestamp > updates.timestamp"
)
_UPSERT_NODE = (
    "INSERT INTO nodes (node_id, timestamp, features, alias, rgb_color, addresses, raw) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (node_id) DO UPDATE SET timestamp = excluded.timestamp, features = excluded.features,"
    " alias = excluded.alias, rgb_color = excluded.rgb_color, addresses = excluded.addresses, raw = excluded.raw"
    " WHERE excluded.timestamp > nodes.timestamp"
)


def _db(scid: int) -> int:
    return scid - _SHIFT


def _scid(value: int) -> int:
    return value + _SHIFT


def scid_text(scid: int) -> str:
    """``BLOCKxTXxOUTPUT`` of a packed short channel id."""
    return str(ShortChannelId.from_int(scid))


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class GossipStore:
    """The SQLite gossip store of one chain (blocking; see :class:`AsyncGossipStore`).

    ``path`` is a file (created if missing) or ``":memory:"``. A store
    remembers its chain: opening it for another chain raises
    :class:`GossipError`.
    """

    def __init__(self, path: str | os.PathLike[str], chain_hash: bytes) -> None:
        self.path = str(path)
        self.chain_hash = chain_hash
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise GossipError(cannot("open the gossip store", self.path, exc)) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a crash may lose the last transactions, never corrupt the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Neither changes what is durable, only the work per write. Checkpoints
            # every 16 MB of WAL instead of 4 copy a page that several transactions
            # rewrote once. The 16 MB cache was sized for schema 1's node-id indexes
            # (with the 2 MB default most inserts read their pages back from the OS;
            # with the checkpoints, the writer's CPU on a full-size ingest ~17% lower); with
            # store_nodes' batched index 2 to 64 MB write alike offline (full size:
            # an ~80 MB store), and it stays for the reads that answer peers.
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.executescript(_SCHEMA)
            self._check_meta()
            # channels whose node ids wait in node_channels_new (an upper bound: see apply)
            self._pending = int(self._db.execute("SELECT COUNT(*) FROM node_channels_new").fetchone()[0])
        except sqlite3.Error as exc:
            # WAL mode needs room for its -shm file even to read: on a full disk SQLite may say only
            # "disk I/O error"; cannot() says what the disk says
            self._db.close()
            raise GossipError(cannot("open the gossip store", self.path, exc)) from exc

    def _check_meta(self) -> None:
        rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not rows:
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("chain_hash", self.chain_hash), ("schema_version", _SCHEMA_VERSION)],
            )
            return
        if rows.get("chain_hash") != self.chain_hash:
            raise GossipError(f"the gossip store {self.path} is for chain {bytes(rows.get('chain_hash') or b'').hex()}, not {self.chain_hash.hex()}")
        if rows.get("schema_version") == 1:
            # version 1 indexed channels by node id itself and kept nodes in their id's order (store_nodes)
            with sqlite_transaction(self._db):
                for statement in store_nodes.MIGRATE_V1:
                    self._db.execute(statement)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (_SCHEMA_VERSION,))
            return
        if rows.get("schema_version") != _SCHEMA_VERSION:
            raise GossipError(f"the gossip store {self.path} has schema version {rows.get('schema_version')}, want {_SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writing

    def apply(self, decisions: Iterable[Decision], removals: Iterable[ChannelRemoved] = ()) -> int:
        """Write the accepted messages among ``decisions`` and the ``removals``, in one transaction.

        Returns how many rows were written or deleted. A write the store does not
        take (a full disk) raises :class:`GossipStoreWriteError` and leaves the store
        as it was: all of the transaction or none of it.
        """
        channels, updates, nodes = [], [], []
        accepted = Outcome.ACCEPTED
        for d in decisions:
            if d.outcome is not accepted:
                continue
            m = d.message
            if type(m) is ChannelUpdate:
                updates.append(
                    (
                        _db(m.short_channel_id.to_int()),
                        m.channel_flags & 1,
                        m.timestamp,
                        m.message_flags,
                        m.channel_flags,
                        m.cltv_expiry_delta,
                        m.htlc_minimum_msat,
                        m.htlc_maximum_msat,
                        m.fee_base_msat,
                        m.fee_proportional_millionths,
                        d.raw,
                    )
                )
            elif type(m) is ChannelAnnouncement:
                channels.append(
                    (
                        _db(m.short_channel_id.to_int()),
                        m.node_id_1,
                        m.node_id_2,
                        m.bitcoin_key_1,
                        m.bitcoin_key_2,
                        m.features,
                        d.capacity_sat,
                        d.first_seen,
                        d.raw,
                    )
                )
            elif type(m) is NodeAnnouncement:
                nodes.append((m.node_id, m.timestamp, m.features, m.alias, m.rgb_color, m.addresses, d.raw))
        removed = list(removals)
        if not (channels or updates or nodes or removed):
            return 0
        db = self._db
        # a channel already stored may count again: the bound only brings a settle earlier
        pending = self._pending + len(channels)
        try:
            with sqlite_transaction(db):
                if channels:
                    db.executemany(_INSERT_CHANNEL, channels)
                    db.executemany(store_nodes.ADD, [c[:1] for c in channels])
                    if pending >= store_nodes.SETTLE_CHANNELS:
                        store_nodes.settle(db)
                        pending = 0
                if updates:
                    db.executemany(_UPSERT_UPDATE, updates)
                if nodes:
                    db.executemany(_UPSERT_NODE, nodes)
                for change in removed:
                    key = _db(change.short_channel_id)
                    store_nodes.forget(db, key)
                    db.execute("DELETE FROM channels WHERE scid = ?", (key,))
                    db.execute("DELETE FROM updates WHERE scid = ?", (key,))
                    for node_id in change.orphaned_nodes:
                        db.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
        except sqlite3.Error as exc:
            full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            raise GossipStoreWriteError(f"gossip store {self.path}: write failed: {exc}", disk_full=full) from exc
        self._pending = pending
        return len(channels) + len(updates) + len(nodes) + len(removed)

    # ------------------------------------------------------------ loading

    def load_into(self, graph: Graph) -> None:
        """Fill an empty :class:`Graph` with what the store holds (on start)."""
        db = self._db
        for scid, n1, n2, features, capacity, first_seen in db.execute(
            "SELECT scid, node_id_1, node_id_2, features, capacity_sat, first_seen FROM channels"
        ):
            graph.load_channel(_scid(scid), n1, n2, features, capacity, first_seen)
        for scid, direction, timestamp in db.execute("SELECT scid, direction, timestamp FROM updates"):
            graph.load_update(_scid(scid), direction, timestamp)
        for node_id, timestamp in db.execute("SELECT node_id, timestamp FROM nodes"):
            graph.load_node(node_id, timestamp)

    # ------------------------------------------------------------ raw reads

    def channel_announcement(self, scid: int) -> bytes | None:
        row = self._db.execute("SELECT raw FROM channels WHERE scid = ?", (_db(scid),)).fetchone()
        return row[0] if row else None

    def channel_updates(self, scid: int) -> tuple[bytes | None, bytes | None]:
        """The latest channel_update of each direction (None where there is none)."""
        out: list[bytes | None] = [None, None]
        for direction, raw in self._db.execute("SELECT direction, raw FROM updates WHERE scid = ?", (_db(scid),)):
            out[direction] = raw
        return out[0], out[1]

    def node_announcement(self, node_id: bytes) -> bytes | None:
        row = self._db.execute("SELECT raw FROM nodes WHERE node_id = ?", (node_id,)).fetchone()
        return row[0] if row else None

    def query_reply(self, wanted: Sequence[tuple[int, int]]) -> list[bytes]:
        """The messages answering a query_short_channel_ids, in BOLT-7 order.

        ``wanted`` is ``(scid, query_flags)`` per id asked for. Per channel:
        its announcement, its updates, then its nodes' announcements (each
        node once per reply); unknown channels give nothing.
        """
        db = self._db
        keys = [_db(scid) for scid, _ in wanted]
        channels: dict[int, tuple[bytes, bytes, bytes]] = {}
        updates: dict[tuple[int, int], bytes] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for scid, raw, n1, n2 in db.execute(f"SELECT scid, raw, node_id_1, node_id_2 FROM channels WHERE scid IN ({marks})", chunk):
                channels[scid] = (raw, n1, n2)
            for scid, direction, raw in db.execute(f"SELECT scid, direction, raw FROM updates WHERE scid IN ({marks})", chunk):
                updates[(scid, direction)] = raw
        node_ids = set()
        for key, (_, flags) in zip(keys, wanted, strict=True):
            channel = channels.get(key)
            if channel is not None:
                if flags & QUERY_FLAG_NODE_1:
                    node_ids.add(channel[1])
                if flags & QUERY_FLAG_NODE_2:
                    node_ids.add(channel[2])
        node_raw: dict[bytes, bytes] = {}
        for chunk in _chunks(sorted(node_ids)):
            marks = ",".join("?" * len(chunk))
            for node_id, raw in db.execute(f"SELECT node_id, raw FROM nodes WHERE node_id IN ({marks})", chunk):
                node_raw[node_id] = raw
        out: list[bytes] = []
        sent_nodes: set[bytes] = set()
        for key, (_, flags) in zip(keys, wanted, strict=True):
            channel = channels.get(key)
            if channel is None:
                continue
            if flags & QUERY_FLAG_ANNOUNCEMENT:
                out.append(channel[0])
            for direction, bit in ((0, QUERY_FLAG_UPDATE_1), (1, QUERY_FLAG_UPDATE_2)):
                raw = updates.get((key, direction))
                if flags & bit and raw is not None:
                    out.append(raw)
            for node_id, bit in ((channel[1], QUERY_FLAG_NODE_1), (channel[2], QUERY_FLAG_NODE_2)):
                raw = node_raw.get(node_id)
                if flags & bit and raw is not None and node_id not in sent_nodes:
                    sent_nodes.add(node_id)
                    out.append(raw)
        return out

    def update_checksums(self, scids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """BOLT-7 checksums of the latest updates of each channel (0 where there is none)."""
        out: dict[int, list[int]] = {}
        for chunk in _chunks([_db(s) for s in scids]):
            marks = ",".join("?" * len(chunk))
            for scid, direction, raw in self._db.execute(f"SELECT scid, direction, raw FROM updates WHERE scid IN ({marks})", chunk):
                out.setdefault(_scid(scid), [0, 0])[direction] = channel_update_checksum(raw)
        return {k: (v[0], v[1]) for k, v in out.items()}

    def time_range_page(
        self, first_timestamp: int, end_timestamp: int, cursor: tuple[str, Any] | None = None, limit: int = 500
    ) -> tuple[list[bytes], tuple[str, Any] | None]:
        """One page of the gossip a ``gossip_timestamp_filter`` asks for, and the cursor of the next (None: done).

        Channels first (ascending id), each announcement right before its
        updates in the range (an announcement counts as timestamped by its
        updates, and goes only with them); then node announcements in the range.
        """
        # Channels are paged in key order, the timestamps checked row by row: with no
        # statistics SQLite plans it so whatever indexes exist (there is none on
        # updates (timestamp) since schema 2: it served no plan, and cost writes).
        db = self._db
        out: list[bytes] = []
        if cursor is None or cursor[0] == "c":
            start = cursor[1] + 1 if cursor is not None else -_SHIFT
            rows = db.execute(
                "SELECT scid FROM updates WHERE timestamp >= ? AND timestamp < ? AND scid >= ?"
                " GROUP BY scid ORDER BY scid LIMIT ?",
                (first_timestamp, end_timestamp, start, limit),
            ).fetchall()
            keys = [r[0] for r in rows]
            if keys:
                marks = ",".join("?" * len(keys))
                announcements = dict(db.execute(f"SELECT scid, raw FROM channels WHERE scid IN ({marks})", keys).fetchall())
                updates: dict[int, list[bytes]] = {}
                for scid, raw in db.execute(
                    f"SELECT scid, raw FROM updates WHERE scid IN ({marks}) AND timestamp >= ? AND timestamp < ? ORDER BY scid, direction",
                    [*keys, first_timestamp, end_timestamp],
                ):
                    updates.setdefault(scid, []).append(raw)
                for key in keys:
                    if key in announcements:
                        out.append(announcements[key])
                        out.extend(updates.get(key, ()))
            if len(keys) == limit:
                return out, ("c", keys[-1])
            cursor = ("n", b"")
        rows = db.execute(
            "SELECT node_id, raw FROM nodes WHERE timestamp >= ? AND timestamp < ? AND node_id > ? ORDER BY node_id LIMIT ?",
            (first_timestamp, end_timestamp, cursor[1], limit),
        ).fetchall()
        out.extend(raw for _, raw in rows)
        if len(rows) == limit:
            return out, ("n", rows[-1][0])
        return out, None

    # ------------------------------------------------------------ listing (JSON-able)

    @staticmethod
    def _policy(row: tuple[Any, ...] | None, source: bytes) -> dict[str, Any] | None:
        if row is None:
            return None
        timestamp, message_flags, channel_flags, cltv, htlc_min, htlc_max, base, ppm = row
        return {
            "source": source.hex(),
            "timestamp": timestamp,
            "active": not channel_flags & 2,
            "message_flags": message_flags,
            "channel_flags": channel_flags,
            "cltv_expiry_delta": cltv,
            "htlc_minimum_msat": htlc_min,
            "htlc_maximum_msat": htlc_max,
            "fee_base_msat": base,
            "fee_proportional_millionths": ppm,
        }

    def _channel_dicts(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        policies: dict[tuple[int, int], tuple[Any, ...]] = {}
        keys = [r[0] for r in rows]
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                "SELECT scid, direction, timestamp, message_flags, channel_flags, cltv_expiry_delta,"
                f" htlc_minimum_msat, htlc_maximum_msat, fee_base_msat, fee_proportional_millionths FROM updates WHERE scid IN ({marks})",
                chunk,
            ):
                policies[(row[0], row[1])] = row[2:]
        out = []
        for key, n1, n2, b1, b2, features, capacity, first_seen in rows:
            out.append(
                {
                    "short_channel_id": scid_text(_scid(key)),
                    "node_id_1": n1.hex(),
                    "node_id_2": n2.hex(),
                    "bitcoin_key_1": b1.hex(),
                    "bitcoin_key_2": b2.hex(),
                    "capacity_sat": capacity,
                    "features": features.hex(),
                    "routable": routable(features),
                    "first_seen": first_seen,
                    "policies": [self._policy(policies.get((key, 0)), n1), self._policy(policies.get((key, 1)), n2)],
                }
            )
        return out

    _CHANNEL_COLUMNS = "scid, node_id_1, node_id_2, bitcoin_key_1, bitcoin_key_2, features, capacity_sat, first_seen"

    def list_channels(self, node_id: bytes | None = None, *, after: int | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Channels (ascending id, from just after ``after``), optionally only those of ``node_id``."""
        if after is not None and after >= _SHIFT * 2 - 1:
            return []
        start = _db(after) + 1 if after is not None else -_SHIFT
        if node_id is None:
            rows = self._db.execute(
                f"SELECT {self._CHANNEL_COLUMNS} FROM channels WHERE scid >= ? ORDER BY scid LIMIT ?", (start, limit)
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {self._CHANNEL_COLUMNS} FROM channels WHERE scid IN ({store_nodes.NODE_SCIDS}) AND scid >= :start ORDER BY scid LIMIT :limit",
                {"node": node_id, "start": start, "limit": limit},
            ).fetchall()
        return self._channel_dicts(rows)

    def get_channel(self, scid: int) -> dict[str, Any] | None:
        rows = self._db.execute(f"SELECT {self._CHANNEL_COLUMNS} FROM channels WHERE scid = ?", (_db(scid),)).fetchall()
        return self._channel_dicts(rows)[0] if rows else None

    @staticmethod
    def _node_dict(node_id: bytes, row: tuple[Any, ...] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"node_id": node_id.hex(), "announced": row is not None}
        if row is not None:
            timestamp, features, alias, rgb, addresses = row
            parsed, problem = parse_addresses(addresses)
            out.update(
                timestamp=timestamp,
                alias=alias.rstrip(b"\x00").decode("utf-8", errors="replace"),
                rgb_color=rgb.hex(),
                features=features.hex(),
                feature_names=_feature_names(features),
                routable=routable(features),
                addresses=[str(a) for a in parsed],
            )
            if problem is not None:
                out["address_error"] = problem
        return out

    def list_nodes(self, *, after: bytes | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Nodes with a channel (announced or not), ascending id, from just after ``after``."""
        rows = self._db.execute(
            "SELECT ids.node_id, n.timestamp, n.features, n.alias, n.rgb_color, n.addresses FROM"
            f" ({store_nodes.NODE_IDS_AFTER}) AS ids LEFT JOIN nodes AS n ON n.node_id = ids.node_id ORDER BY ids.node_id",
            {"after": after or b"", "limit": limit},
        ).fetchall()
        return [self._node_dict(r[0], r[1:] if r[1] is not None else None) for r in rows]

    def get_node(self, node_id: bytes) -> dict[str, Any] | None:
        """A node and its channels' ids (None when the node has no channel)."""
        scids = [
            scid_text(_scid(r[0]))
            for r in self._db.execute(f"SELECT scid FROM ({store_nodes.NODE_SCIDS}) ORDER BY scid", {"node": node_id})
        ]
        if not scids:
            return None
        row = self._db.execute(
            "SELECT timestamp, features, alias, rgb_color, addresses FROM nodes WHERE node_id = ?", (node_id,)
        ).fetchone()
        out = self._node_dict(node_id, row)
        out["channels"] = scids
        return out

    def counts(self) -> dict[str, int]:
        """Rows per table, and the file's size in bytes (WAL included)."""
        db = self._db
        out = {
            "channels": db.execute("SELECT COUNT(*) FROM channels").fetchone()[0],
            "updates": db.execute("SELECT COUNT(*) FROM updates").fetchone()[0],
            "node_announcements": db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0],
        }
        out["size_bytes"] = self.size_on_disk()
        return out

    def size_on_disk(self) -> int:
        if self.path == ":memory:":
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            return int(self._db.execute("PRAGMA page_count").fetchone()[0] * page_size)
        return sum(p.stat().st_size for p in (Path(self.path), Path(self.path + "-wal")) if p.exists())

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (e.g. before measuring or copying it)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _feature_names(features: bytes) -> list[str]:
    try:
        return Features.from_bytes(features).describe()
    except WireError:
        return []


P = ParamSpec("P")
T = TypeVar("T")


class AsyncGossipStore:
    """A :class:`GossipStore` used from trio: each call runs in a worker thread, one at a time."""

    def __init__(self, store: GossipStore) -> None:
        self.store = store
        self._lock = trio.Lock()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await astore.run(store.list_channels, node_id)``: any store method, off the event loop."""
        async with self._lock:
            return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    async def apply(self, decisions: Sequence[Decision], removals: Sequence[ChannelRemoved] = ()) -> int:
        return await self.run(self.store.apply, decisions, removals)

    async def query_reply(self, wanted: Sequence[tuple[int, int]]) -> list[bytes]:
        return await self.run(self.store.query_reply, wanted)
