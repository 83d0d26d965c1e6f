"""The gossip store's tables keyed by node id: the nodes, and the index from node ids to channels.

Node ids are hashes: an index keyed by them takes each new channel's
entries at random places, and SQLite writes every page a transaction
changed to the WAL whole. The store writes each batch of gossip as soon as
it is decided, so with two indexes on ``channels (node_id_1)`` and
``(node_id_2)`` nearly every new channel dirtied two 4 KB index pages once
the graph was large (at 60,000 channels the two hold ~1,560 pages; a
1,024-message batch brings ~340 channels). That, not the rows, made the
writer's work per message grow with the graph: offline at full size
(``bench_gossip --scale 1``'s 200,000 messages), 1.9 KB were written per
signature with the two indexes and 0.76 KB without them.

So a new channel goes first to ``node_channels_new`` with its node ids
(keyed by the channel, which gossip mostly brings in ascending order:
appended), and every :data:`SETTLE_CHANNELS` channels those pending
entries move, sorted, into ``node_channels (node_id, scid)`` in one
transaction, which rewrites each of its pages at most once. Reads look in
both: the settled index, and a scan of the pending channels (at most
:data:`SETTLE_CHANNELS` rows of ~80 bytes: ~1 ms). Both tables change in
the same transactions as ``channels``, so the index is exact at every
commit, after a crash too.

``nodes`` is a rowid table (rows appended) with a unique index on the node
id, not a table clustered by node id: a new node then dirties a page of
that index (~45 bytes an entry) instead of a page of whole rows (~270
bytes each, ~1,420 pages at 20,000 nodes). Offline at full size, 0.92 →
0.68 KB written per signature, the writer's CPU 0.3-0.5 µs lower.
"""

from __future__ import annotations

import sqlite3

__all__ = ["ADD", "MIGRATE_V1", "NODE_SCIDS", "NODE_IDS_AFTER", "SCHEMA", "SETTLE_CHANNELS", "forget", "settle"]

#: pending channels that trigger a settle (each read scans at most this many)
SETTLE_CHANNELS = 16384

#: both node ids of every channel of ``table`` into the settled index, sorted (each page written once)
_INDEX_FROM = (
    "INSERT OR IGNORE INTO node_channels (node_id, scid)"
    " SELECT node_id_1, scid FROM {table} UNION ALL SELECT node_id_2, scid FROM {table} ORDER BY 1, 2"
)

_NODES_COLUMNS = """(
    node_id BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    features BLOB NOT NULL,
    alias BLOB NOT NULL,
    rgb_color BLOB NOT NULL,
    addresses BLOB NOT NULL,
    raw BLOB NOT NULL
)"""
_NODES_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS nodes_node_id ON nodes (node_id);
CREATE INDEX IF NOT EXISTS nodes_timestamp ON nodes (timestamp);
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS nodes {_NODES_COLUMNS};
{_NODES_INDEXES}
CREATE TABLE IF NOT EXISTS node_channels (
    node_id BLOB NOT NULL,
    scid INTEGER NOT NULL,
    PRIMARY KEY (node_id, scid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS node_channels_new (
    scid INTEGER PRIMARY KEY,
    node_id_1 BLOB NOT NULL,
    node_id_2 BLOB NOT NULL
);
"""

#: from schema version 1 (two indexes on ``channels``, ``nodes`` WITHOUT ROWID, an index on
#: ``updates (timestamp)``), in a transaction
MIGRATE_V1 = (
    "DROP INDEX IF EXISTS channels_node_1",
    "DROP INDEX IF EXISTS channels_node_2",
    # No query's plan used it (a time range pages updates by channel, in the primary key's
    # order); the update's timestamps come in any order, so it took writes at random places too.
    "DROP INDEX IF EXISTS updates_timestamp",
    "DELETE FROM node_channels_new",
    _INDEX_FROM.format(table="channels"),
    f"CREATE TABLE nodes_v2 {_NODES_COLUMNS}",
    "INSERT INTO nodes_v2 (node_id, timestamp, features, alias, rgb_color, addresses, raw)"
    " SELECT node_id, timestamp, features, alias, rgb_color, addresses, raw FROM nodes",
    "DROP TABLE nodes",
    "ALTER TABLE nodes_v2 RENAME TO nodes",
    *(statement for statement in _NODES_INDEXES.split(";") if statement.strip()),
)

#: the channels (store keys) of node ``:node``
NODE_SCIDS = (
    "SELECT scid FROM node_channels WHERE node_id = :node"
    " UNION SELECT scid FROM node_channels_new WHERE node_id_1 = :node OR node_id_2 = :node"
)

#: the node ids with a channel, each once, ascending from just after ``:after``, at most ``:limit``
NODE_IDS_AFTER = (
    "SELECT node_id FROM (SELECT DISTINCT node_id FROM node_channels WHERE node_id > :after ORDER BY node_id LIMIT :limit)"
    " UNION SELECT node_id_1 FROM node_channels_new WHERE node_id_1 > :after"
    " UNION SELECT node_id_2 FROM node_channels_new WHERE node_id_2 > :after"
    " ORDER BY 1 LIMIT :limit"
)

#: a channel just written to ``channels`` (its row as stored: a channel stored before keeps its node ids)
ADD = "INSERT OR IGNORE INTO node_channels_new (scid, node_id_1, node_id_2) SELECT scid, node_id_1, node_id_2 FROM channels WHERE scid = ?"

_SETTLE = _INDEX_FROM.format(table="node_channels_new")


def settle(db: sqlite3.Connection) -> None:
    """Move the pending channels into the settled index (inside the caller's transaction)."""
    db.execute(_SETTLE)
    db.execute("DELETE FROM node_channels_new")


def forget(db: sqlite3.Connection, key: int) -> None:
    """Drop channel ``key`` (a store key) from the index; before its row leaves ``channels`` (inside a transaction)."""
    db.execute(
        "DELETE FROM node_channels WHERE scid = :key AND node_id IN (SELECT node_id_1 FROM channels WHERE scid = :key"
        " UNION ALL SELECT node_id_2 FROM channels WHERE scid = :key)",
        {"key": key},
    )
    db.execute("DELETE FROM node_channels_new WHERE scid = ?", (key,))
