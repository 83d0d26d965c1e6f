"""BOLT-7 messages: the spec's extended-queries vectors, real gossip bytes, bounds, fuzzing."""

from __future__ import annotations

import dataclasses
import json
import lzma
import pickle
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.gossip.messages import (
    GOSSIP_MESSAGES,
    MAX_ZLIB_DECOMPRESSED,
    ChannelAnnouncement,
    ChannelUpdate,
    GossipTimestampFilter,
    NodeAnnouncement,
    QueryChannelRange,
    QueryShortChannelIds,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
    check_addresses,
    parse_addresses,
    register_gossip_messages,
)
from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    DnsAddr,
    IPv4Addr,
    IPv6Addr,
    ShortChannelId,
    TorV3Addr,
    UnknownAddr,
    WireError,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
VECTORS = SHARED / "specs" / "bolts" / "bolt07" / "extended-queries.json"
GOSSIP = SHARED / "data" / "gossip"
REGISTRY = register_gossip_messages(DEFAULT_REGISTRY.copy())

_CLASSES = {
    "QueryChannelRange": QueryChannelRange,
    "ReplyChannelRange": ReplyChannelRange,
    "QueryShortChannelIds": QueryShortChannelIds,
}
_QUERY_OPTIONS = {"WANT_TIMESTAMPS": 1, "WANT_CHECKSUMS": 2}


def spec_vectors() -> list[dict]:
    return json.loads(VECTORS.read_text())


def scids(texts: list[str]) -> tuple[ShortChannelId, ...]:
    return tuple(ShortChannelId.parse(t) for t in texts)


def cln_unit_vectors() -> list[tuple[str, str, bytes]]:
    out = []
    for line in (GOSSIP / "cln-unit-vectors.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _source, validity, kind, hex_data = line.split()
        out.append((validity, kind, bytes.fromhex(hex_data)))
    return out


def store_messages(name: str) -> list[bytes]:
    """The gossip messages (types 256-258) in a gossip_store file, raw."""
    data = lzma.decompress((GOSSIP / name).read_bytes())
    out, pos = [], 1
    while pos + 12 <= len(data):
        _flags, length, _crc, _ts = struct.unpack_from(">HHII", data, pos)
        msg = data[pos + 12 : pos + 12 + length]
        if msg[:2] in (b"\x01\x00", b"\x01\x01", b"\x01\x02"):
            out.append(msg)
        pos += 12 + length
    return out


# ------------------------------------------------------------ spec vectors


@pytest.mark.parametrize("vector", spec_vectors(), ids=lambda v: f"{v['msg']['type']}-{v['hex'][4:12]}")
def test_extended_query_vectors_decode_exactly(vector: dict) -> None:
    raw = bytes.fromhex(vector["hex"])
    expected = vector["msg"]
    msg = REGISTRY.decode(raw)
    assert type(msg) is _CLASSES[expected["type"]]
    assert msg.chain_hash.hex() == expected["chainHash"]
    if "firstBlockNum" in expected:
        assert msg.first_blocknum == expected["firstBlockNum"]
        assert msg.number_of_blocks == expected["numberOfBlocks"]
    if "complete" in expected:
        assert msg.sync_complete == expected["complete"]
    if "shortChannelIds" in expected:
        assert msg.short_channel_ids == scids(expected["shortChannelIds"]["array"])
    if type(msg) is QueryChannelRange:
        records = expected["tlvStream"]["records"]
        want = sum(_QUERY_OPTIONS[f.strip()] for r in records for f in r.split("|")) if records else 0
        assert msg.query_option == want
        assert ("query_option" in msg.tlvs) == bool(records)
    if type(msg) is QueryShortChannelIds:
        records = expected["tlvStream"]["records"]
        assert msg.query_flags == (tuple(records[0]["array"]) if records else None)
    if "timestamps" in expected:
        assert [tuple(t) for t in msg.timestamps] == [
            (t["timestamp1"], t["timestamp2"]) for t in expected["timestamps"]["timestamps"]
        ]
        assert [tuple(c) for c in msg.checksums] == [(c["checksum1"], c["checksum2"]) for c in expected["checksums"]["checksums"]]

    zlib_used = "COMPRESSED_ZLIB" in json.dumps(expected)
    again = type(msg).decode(msg.encode())
    assert again == msg
    if zlib_used:
        # Decoded, never sent: re-encoding writes the plain encoding (type 0).
        assert msg.encode() != raw
        assert b"\x78\x9c" not in msg.encode()[34:]
    else:
        assert msg.encode() == raw


def test_the_vectors_cover_both_encodings() -> None:
    text = VECTORS.read_text()
    assert text.count("COMPRESSED_ZLIB") >= 7 and "UNCOMPRESSED" in text


# ------------------------------------------------------------ real gossip bytes


@pytest.mark.parametrize("name", ["gossip_store-part1.xz", "gossip_store.simple.xz"])
def test_real_gossip_round_trips_byte_for_byte(name: str) -> None:
    messages = store_messages(name)
    assert messages
    for raw in messages:
        msg = REGISTRY.decode(raw)
        assert type(msg) in (ChannelAnnouncement, NodeAnnouncement, ChannelUpdate)
        assert msg.encode() == raw


def test_cln_unit_vectors_decode() -> None:
    kinds = {"channel_announcement": ChannelAnnouncement, "channel_update": ChannelUpdate, "node_announcement": NodeAnnouncement}
    for _validity, kind, raw in cln_unit_vectors():
        msg = REGISTRY.decode(raw)
        assert type(msg) is kinds[kind]
        assert msg.encode() == raw
        assert isinstance(msg.to_dict(), dict)


def test_node_announcement_addresses_all_types() -> None:
    """The regtest store's second node announces IPv4, IPv6, Tor v3 and a DNS name."""
    announcements = [NodeAnnouncement.decode(m) for m in store_messages("gossip_store.simple.xz") if m[:2] == b"\x01\x01"]
    assert len(announcements) == 2
    by_alias = {a.alias_text: a for a in announcements}
    rich = next(a for a in announcements if len(a.address_list) > 1)
    kinds = {type(a) for a in rich.address_list}
    assert {IPv4Addr, IPv6Addr, TorV3Addr, DnsAddr} <= kinds
    assert any(isinstance(a, DnsAddr) and a.hostname == "example.com" for a in rich.address_list)
    decoded = rich.to_dict()
    assert {a["type"] for a in decoded["addresses"]} >= {"ipv4", "ipv6", "torv3", "dns"}
    assert all(alias.isprintable() for alias in by_alias)


def test_decoded_gossip_gives_back_the_bytes_it_came_from() -> None:
    """A decoded signed gossip message keeps its bytes: ``encode`` returns them, not a new encoding."""
    for raw in store_messages("gossip_store.simple.xz"):
        msg = REGISTRY.decode(raw)
        assert msg.encode() is raw
        assert type(msg).decode(raw).encode() is raw
        assert dataclasses.replace(msg).encode() == raw  # the codec, from the fields: the same bytes


def test_gossip_built_or_changed_is_encoded_from_its_fields() -> None:
    raw = next(m for m in store_messages("gossip_store.simple.xz") if m[:2] == b"\x01\x02")
    update = ChannelUpdate.decode(raw)
    changed = dataclasses.replace(update, timestamp=update.timestamp + 1)
    assert changed.encode() != raw and ChannelUpdate.decode(changed.encode()) == changed
    copied = pickle.loads(pickle.dumps(update))
    assert copied == update and copied.encode() == raw and copied.encode() is not raw
    # Only whole messages of the class's own type, from immutable bytes, keep them.
    assert ChannelUpdate.decode_payload(raw[2:]).encode() == raw
    assert ChannelUpdate.decode(bytearray(raw)).encode() == raw
    mislabelled = b"\x01\x00" + raw[2:]
    assert ChannelUpdate._unpack(mislabelled, 2, len(mislabelled)).encode() == raw


def test_trailing_fields_are_kept_for_signatures() -> None:
    """Fields a later spec appends stay in ``extension`` so the signed bytes re-encode exactly."""
    raw = store_messages("gossip_store-part1.xz")[0] + b"\x01\x02\x03"
    msg = REGISTRY.decode(raw)
    assert msg.extension == b"\x01\x02\x03"
    assert msg.encode() == raw


# ------------------------------------------------------------ encoded arrays and bounds


def _qsci(body: bytes) -> bytes:
    return struct.pack(">H", 261) + bytes(32) + struct.pack(">H", len(body)) + body


def test_zlib_bomb_is_refused_without_inflating_it() -> None:
    bomb = zlib.compress(bytes(32 * 1024 * 1024), 9)  # 32 MiB of zeros in ~32 KB
    assert len(bomb) < 65000
    with pytest.raises(WireError, match="inflates past"):
        REGISTRY.decode(_qsci(b"\x01" + bomb))


def test_zlib_just_under_the_bound_decodes() -> None:
    ids = [ShortChannelId(i % 7, 1, 1) for i in range(MAX_ZLIB_DECOMPRESSED // 8)]
    body = zlib.compress(b"".join(s.to_bytes() for s in ids))
    msg = REGISTRY.decode(_qsci(b"\x01" + body))
    assert msg.short_channel_ids == tuple(ids)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"\x02" + bytes(8), "unknown encoding type 2"),
        (b"\x00" + bytes(7), "whole number"),
        (b"\x01" + b"not zlib", "bad zlib"),
        (b"\x01" + zlib.compress(bytes(80))[:-3], "truncated zlib"),
        (b"\x01" + zlib.compress(bytes(7)), "whole number"),
    ],
)
def test_bad_encoded_ids_are_wire_errors(body: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        REGISTRY.decode(_qsci(body))


def test_empty_encoded_ids_decode_as_empty() -> None:
    assert REGISTRY.decode(_qsci(b"")).short_channel_ids == ()
    assert REGISTRY.decode(_qsci(b"\x00")).short_channel_ids == ()


def test_query_flags_must_be_minimal_bigsize() -> None:
    ids = b"\x00" + bytes(8)
    tlv = b"\x01\x04\x00\xfd\x00\x01"  # flag 1 written in three bytes
    with pytest.raises(WireError):
        REGISTRY.decode(_qsci(ids) + tlv)


def test_truncated_gossip_is_a_wire_error() -> None:
    raw = store_messages("gossip_store-part1.xz")[0]
    for cut in (3, 100, 300, len(raw) - 1):
        with pytest.raises(WireError):
            REGISTRY.decode(raw[:cut])


def test_lenient_address_parsing() -> None:
    good = IPv4Addr("1.2.3.4", 9735).encode()
    addresses, problem = parse_addresses(good + b"\x07future-type-data")
    assert problem is None and addresses[0] == IPv4Addr("1.2.3.4", 9735)
    assert addresses[1] == UnknownAddr(7, b"future-type-data")
    addresses, problem = parse_addresses(good + b"\x01\x01\x02")
    assert addresses == (IPv4Addr("1.2.3.4", 9735),) and "truncated" in problem
    bad_onion = b"\x04" + bytes(35) + b"\x23\x29"
    addresses, problem = parse_addresses(good + bad_onion)
    assert len(addresses) == 1 and problem is not None


def _descriptors() -> st.SearchStrategy[bytes]:
    """Address lists mixing valid, malformed, truncated and unknown descriptors."""
    one = st.one_of(
        st.binary(min_size=6, max_size=6).map(lambda b: b"\x01" + b),
        st.binary(min_size=18, max_size=18).map(lambda b: b"\x02" + b),
        st.just(TorV3Addr(bytes(range(32)), 9735).encode()),
        st.binary(min_size=37, max_size=37).map(lambda b: b"\x04" + b),
        st.sampled_from([DnsAddr("example.com", 9735).encode(), DnsAddr("a.b", 1).encode(), b"\x05\x03a b\x00\x01"]),
        st.binary(max_size=8),
    )
    return st.lists(one, max_size=5).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_descriptors())
def test_the_address_check_says_what_parsing_says(data: bytes) -> None:
    addresses, problem = parse_addresses(data)
    assert check_addresses(data) == (problem, sum(isinstance(a, DnsAddr) for a in addresses))


def test_registration_and_builders() -> None:
    registry = register_gossip_messages(DEFAULT_REGISTRY.copy())
    for cls in GOSSIP_MESSAGES:
        assert cls in registry
    flt = GossipTimestampFilter(chain_hash=bytes(32), first_timestamp=100, timestamp_range=10)
    assert flt.matches(100) and flt.matches(109) and not flt.matches(110) and not flt.matches(99)
    end = ReplyShortChannelIdsEnd(chain_hash=bytes(32), full_information=1)
    assert REGISTRY.decode(end.encode()) == end
    query = QueryShortChannelIds(
        chain_hash=bytes(32),
        short_channel_ids=[ShortChannelId(1, 2, 3)],
        tlvs=QueryShortChannelIds.tlv_stream(query_flags=[300]),
    )
    assert REGISTRY.decode(query.encode()) == query
    with pytest.raises(WireError):
        QueryShortChannelIds(chain_hash=bytes(32), short_channel_ids=[1234])


# ------------------------------------------------------------ fuzzing


@settings(max_examples=300, deadline=None)
@given(type_number=st.sampled_from([256, 257, 258, 259, 261, 262, 263, 264, 265]), payload=st.binary(max_size=600))
def test_any_bytes_decode_or_raise_wire_error(type_number: int, payload: bytes) -> None:
    raw = type_number.to_bytes(2, "big") + payload
    try:
        msg = REGISTRY.decode(raw)
    except WireError:
        return
    # Whatever decodes re-encodes to something that decodes to the same message.
    assert REGISTRY.decode(msg.encode()) == msg


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_encoded_arrays_fuzz(data: bytes) -> None:
    for prefix in (b"\x00", b"\x01"):
        try:
            REGISTRY.decode(_qsci(prefix + data))
        except WireError:
            pass


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(st.integers(0, 2**64 - 1), max_size=50),
    ts=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=50),
)
def test_reply_channel_range_round_trips(ids: list[int], ts: list[tuple[int, int]]) -> None:
    n = min(len(ids), len(ts))
    reply = ReplyChannelRange(
        chain_hash=bytes(range(32)),
        first_blocknum=5,
        number_of_blocks=10,
        sync_complete=1,
        short_channel_ids=[ShortChannelId.from_int(i) for i in ids[:n]],
        tlvs=ReplyChannelRange.tlv_stream(timestamps=ts[:n]) if n else ReplyChannelRange.tlv_stream(),
    )
    assert REGISTRY.decode(reply.encode()) == reply
