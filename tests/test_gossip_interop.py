"""Interop with Core Lightning's pyln-proto: its BOLT-8 stack and its message codec (loaded
from the spec's csv) feed the real mainnet gossip to our node, by pushing it and by answering
our queries; our store ends up with what the import of the same gossip_store gives.

pyln-proto is blocking: its side runs in threads (``trio.to_thread``).
"""

from __future__ import annotations

import io
import lzma
import socket
import struct
import time
from pathlib import Path
from typing import Any

import trio
from pyln.proto import wire
from pyln.proto.message import Message as PylnMessage
from pyln.proto.message import MessageNamespace

from lnpmsg.gossip.app import GossipApp, GossipConfig
from lnpmsg.gossip.cln_store import (
    import_gossip_store,
    load_gossip_store_file,
    read_gossip_store,
)
from lnpmsg.gossip.graph import Graph
from lnpmsg.gossip.store import GossipStore
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing.pyln import WholeReads
from lnpmsg.wire import CHAIN_HASH_MAINNET, ShortChannelId

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOSSIP = SHARED / "data" / "gossip"
PARTS = (GOSSIP / "gossip_store-part1.xz", GOSSIP / "gossip_store-part2.xz")
SOCKET_TIMEOUT = 15.0
_NAMES = {
    "init", "init_tlvs", "ping", "pong", "warning", "error",
    "gossip_timestamp_filter", "query_channel_range", "query_channel_range_tlvs",
    "reply_channel_range", "reply_channel_range_tlvs", "channel_update_timestamps", "channel_update_checksums",
    "query_short_channel_ids", "query_short_channel_ids_tlvs", "reply_short_channel_ids_end",
}  # fmt: skip
NAMESPACE = MessageNamespace(
    [line for line in (SHARED / "specs" / "bolts" / "csv" / "peer_wire.csv").read_text().splitlines() if line.split(",")[1] in _NAMES]
)
GOSSIP_QUERIES_EX = (1 << 7) | (1 << 11)


def pyln_write(text: str) -> bytes:
    out = io.BytesIO()
    PylnMessage.from_str(NAMESPACE, text).write(out)
    return out.getvalue()


def pyln_read(data: bytes) -> tuple[str, dict[str, Any]]:
    message = PylnMessage.read(NAMESPACE, io.BytesIO(data))
    assert message is not None
    return message.messagetype.name, message.to_py()


def served_gossip() -> list[bytes]:
    """What a Core Lightning node with this store serves: live records, deleted channels left out.

    Read here by hand, independently of lnpmsg's reader.
    """
    data = lzma.decompress(PARTS[0].read_bytes()) + lzma.decompress(PARTS[1].read_bytes())
    records, pos = [], 1
    while pos + 12 <= len(data):
        flags, length, _crc, _ts = struct.unpack_from(">HHII", data, pos)
        records.append((flags, data[pos + 12 : pos + 12 + length]))
        pos += 12 + length
    gone = {msg[2:10] for flags, msg in records if msg[:2] == b"\x10\x07" and not flags & 0x8000}

    def scid(msg: bytes) -> bytes:
        return msg[2 + 256 + 2 + 32 : 2 + 256 + 2 + 32 + 8] if msg[:2] == b"\x01\x00" else msg[2 + 64 + 32 : 2 + 64 + 40]

    return [m for f, m in records if m[:2] in (b"\x01\x00", b"\x01\x02") and not f & 0x8000 and scid(m) not in gone]


def imported_store() -> set[bytes]:
    graph = Graph(CHAIN_HASH_MAINNET)
    result = import_gossip_store(read_gossip_store(load_gossip_store_file(*PARTS)), graph, time.time())
    return {d.raw for d in result.accepted if d.message.short_channel_id.to_int() in graph.channels}  # type: ignore[attr-defined]


def our_store(store: GossipStore) -> set[bytes]:
    out = set()
    for channel in store.list_channels(limit=10_000):
        key = ShortChannelId.parse(channel["short_channel_id"]).to_int()
        out.add(store.channel_announcement(key))
        out.update(u for u in store.channel_updates(key) if u)
    return out




class PylnGossipPeer:
    """A pyln-proto connection that sends gossip and, if asked, answers queries with pyln's codec."""

    def __init__(self, node_id: bytes, address: str, features: int) -> None:
        host, port = address.rsplit(":", 1)
        key = wire.PrivateKey(b"\x55" * 32)
        self.conn = wire.connect(key, wire.PublicKey(node_id), host, int(port))
        self.sock: socket.socket = self.conn.connection
        self.sock.settimeout(SOCKET_TIMEOUT)
        self.conn.connection = WholeReads(self.sock)
        value = features.to_bytes((features.bit_length() + 7) // 8, "big")
        networks = "{networks={chains=[" + CHAIN_HASH_MAINNET.hex() + "]}}"
        self.conn.send_message(pyln_write(f"init globalfeatures= features={value.hex()} tlvs={networks}"))
        self.queries_seen: list[str] = []

    def push(self, messages: list[bytes]) -> None:
        for raw in messages:
            self.conn.send_message(raw)

    def serve_queries(self, gossip: list[bytes], until_ids_queries: int) -> None:
        """Answer query_channel_range and query_short_channel_ids until that many id queries are answered."""
        announcements = {m[2 + 256 + 2 + 32 : 2 + 256 + 2 + 32 + 8]: m for m in gossip if m[:2] == b"\x01\x00"}
        updates: dict[bytes, list[bytes]] = {}
        for m in gossip:
            if m[:2] == b"\x01\x02":
                updates.setdefault(m[2 + 64 + 32 : 2 + 64 + 40], []).append(m)
        answered = 0
        while answered < until_ids_queries:
            data = self.conn.read_message()
            kind = struct.unpack_from(">H", data)[0]
            if kind not in (263, 261, 18):
                continue
            name, fields = pyln_read(data)
            self.queries_seen.append(name)
            if name == "ping":
                self.conn.send_message(pyln_write(f"pong ignored={'00' * fields['num_pong_bytes']}"))
            elif name == "query_channel_range":
                ids = sorted(announcements)
                stamps = "".join(
                    struct.pack(">II", *self._latest(updates.get(s, []))).hex() for s in ids
                )
                tlvs = ""
                if fields.get("tlvs", {}).get("query_option", {}).get("query_option_flags", 0) & 1:
                    tlvs = f" tlvs={{timestamps_tlv={{encoding_type=0,encoded_timestamps={stamps}}}}}"
                self.conn.send_message(
                    pyln_write(
                        f"reply_channel_range chain_hash={fields['chain_hash']} first_blocknum={fields['first_blocknum']}"
                        f" number_of_blocks={fields['number_of_blocks']} sync_complete=1"
                        f" encoded_short_ids=00{''.join(s.hex() for s in ids)}{tlvs}"
                    )
                )
            elif name == "query_short_channel_ids":
                encoded = bytes.fromhex(fields["encoded_short_ids"])
                assert encoded[0] == 0
                ids = [encoded[i : i + 8] for i in range(1, len(encoded), 8)]
                flags_tlv = fields.get("tlvs", {}).get("query_flags")
                flags = list(bytes.fromhex(flags_tlv["encoded_query_flags"])) if flags_tlv else [0x1F] * len(ids)
                assert len(flags) == len(ids)
                for sid, flag in zip(ids, flags, strict=True):
                    if flag & 1 and sid in announcements:
                        self.conn.send_message(announcements[sid])
                    for upd in updates.get(sid, []):
                        if flag & (2 << (upd[2 + 64 + 32 + 8 + 4 + 1] & 1)):
                            self.conn.send_message(upd)
                self.conn.send_message(pyln_write(f"reply_short_channel_ids_end chain_hash={fields['chain_hash']} full_information=1"))
                answered += 1

    @staticmethod
    def _latest(updates: list[bytes]) -> tuple[int, int]:
        out = [0, 0]
        for upd in updates:
            ts = struct.unpack_from(">I", upd, 2 + 64 + 32 + 8)[0]
            direction = upd[2 + 64 + 32 + 8 + 4 + 1] & 1
            out[direction] = max(out[direction], ts)
        return out[0], out[1]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


async def run_node(test: Any) -> None:
    node = Node(NodeKey.generate(), NodeConfig(listen=["127.0.0.1:0"], network="bitcoin"))
    app = node.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_MAINNET), config=GossipConfig(flush_interval=0.05, reply_timeout=10)))
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                await test(node, app)
            finally:
                node.stop()
                nursery.cancel_scope.cancel()


async def until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.02)


async def test_pyln_peer_pushes_the_real_gossip() -> None:
    gossip = served_gossip()
    assert len(gossip) == 87 + 4

    async def test(node: Node, app: GossipApp) -> None:
        peer = await trio.to_thread.run_sync(PylnGossipPeer, node.node_id, node.listen_addresses[0], 0)
        try:
            await trio.to_thread.run_sync(peer.push, gossip)
            await until(lambda: app.counters.received["ChannelUpdate"] == 4 and app.counters.received["ChannelAnnouncement"] == 87)
            await app.drain()
        finally:
            await trio.to_thread.run_sync(peer.close)
        assert our_store(app.store) == imported_store() == set(gossip)
        assert app.store.counts()["channels"] == 87

    await run_node(test)


async def test_pyln_peer_answers_our_queries() -> None:
    gossip = served_gossip()

    async def test(node: Node, app: GossipApp) -> None:
        peer = await trio.to_thread.run_sync(PylnGossipPeer, node.node_id, node.listen_addresses[0], GOSSIP_QUERIES_EX)
        try:
            await trio.to_thread.run_sync(peer.serve_queries, gossip, 1)
            await until(lambda: app.progress()["synced"])
            await app.drain()
        finally:
            await trio.to_thread.run_sync(peer.close)
        assert peer.queries_seen.count("query_channel_range") == 1
        assert our_store(app.store) == imported_store()
        assert app.progress()["percent"] == 100.0

    await run_node(test)
