"""Signature checks of BOLT-7 gossip against real mainnet and regtest messages."""

from __future__ import annotations

import dataclasses
import lzma
import struct
from pathlib import Path

import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.gossip.sign import (
    public_key,
    sign_channel_announcement,
    sign_channel_update,
    sign_digest,
    sign_node_announcement,
)
from lnpmsg.gossip.verify import (
    SigCheck,
    SignatureVerifier,
    channel_announcement_digest,
    check_channel_announcement,
    check_channel_update,
    check_node_announcement,
    double_sha256,
    signed_digest,
)
from lnpmsg.wire import CHAIN_HASH_REGTEST, ShortChannelId, WireError

GOSSIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "gossip"
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def unit_vectors() -> list[tuple[str, str, bytes]]:
    out = []
    for line in (GOSSIP / "cln-unit-vectors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _source, validity, kind, hex_data = line.split()
            out.append((validity, kind, bytes.fromhex(hex_data)))
    return out


def store_gossip(*names: str) -> list[tuple[int, bytes]]:
    """(flags, raw) of every gossip record in the (joined) stores."""
    data = b"".join(lzma.decompress((GOSSIP / n).read_bytes()) for n in names)
    out, pos = [], 1
    while pos + 12 <= len(data):
        flags, length, _crc, _ts = struct.unpack_from(">HHII", data, pos)
        msg = data[pos + 12 : pos + 12 + length]
        if msg[:2] in (b"\x01\x00", b"\x01\x01", b"\x01\x02"):
            out.append((flags, msg))
        pos += 12 + length
    return out


def test_cln_unit_vectors() -> None:
    verifier = SignatureVerifier()
    vectors = unit_vectors()
    announcement = next(ChannelAnnouncement.decode(r) for v, k, r in vectors if v == "valid" and k == "channel_announcement")
    seen = set()
    for validity, kind, raw in vectors:
        seen.add((validity, kind))
        if kind == "channel_announcement":
            reason = check_channel_announcement(ChannelAnnouncement.decode(raw), raw, verifier)
        elif kind == "node_announcement":
            reason = check_node_announcement(NodeAnnouncement.decode(raw), raw, verifier)
        else:
            update = ChannelUpdate.decode(raw)
            assert update.short_channel_id == announcement.short_channel_id
            reason = check_channel_update(update, announcement.node_id_1, announcement.node_id_2, raw, verifier)
        if validity == "valid":
            assert reason is None, (kind, reason)
        else:
            assert reason is not None and "node_signature_1" in reason
    assert ("invalid", "channel_announcement") in seen and len(seen) == 4


@pytest.mark.parametrize("names", [("gossip_store-part1.xz", "gossip_store-part2.xz"), ("gossip_store.simple.xz",)])
def test_every_signature_in_the_real_stores_verifies(names: tuple[str, ...]) -> None:
    """Deleted records included: they were valid when written."""
    records = store_gossip(names[0]) + ([] if len(names) == 1 else _continuation(names[1]))
    channels: dict[ShortChannelId, ChannelAnnouncement] = {}
    checked = 0
    for _flags, raw in records:
        if raw[:2] == b"\x01\x00":
            msg = ChannelAnnouncement.decode(raw)
            assert check_channel_announcement(msg, raw) is None
            channels[msg.short_channel_id] = msg
            checked += 1
    for _flags, raw in records:
        if raw[:2] == b"\x01\x02":
            update = ChannelUpdate.decode(raw)
            channel = channels[update.short_channel_id]
            assert check_channel_update(update, channel.node_id_1, channel.node_id_2, raw) is None
            # The other node's key does not verify it.
            assert check_channel_update(update, channel.node_id_2, channel.node_id_1, raw) is not None
            checked += 1
        elif raw[:2] == b"\x01\x01":
            assert check_node_announcement(NodeAnnouncement.decode(raw), raw) is None
            checked += 1
    assert checked >= 5


def _continuation(name: str) -> list[tuple[int, bytes]]:
    data = lzma.decompress((GOSSIP / name).read_bytes())
    out, pos = [], 0  # no version byte: a continuation
    while pos + 12 <= len(data):
        flags, length, _crc, _ts = struct.unpack_from(">HHII", data, pos)
        msg = data[pos + 12 : pos + 12 + length]
        if msg[:2] in (b"\x01\x00", b"\x01\x01", b"\x01\x02"):
            out.append((flags, msg))
        pos += 12 + length
    return out


def test_signed_ranges_follow_bolt7() -> None:
    _, _, raw = next(v for v in unit_vectors() if v[1] == "channel_announcement")
    assert channel_announcement_digest(raw) == double_sha256(raw[258:])
    _, _, update = next(v for v in unit_vectors() if v[1] == "channel_update")
    assert signed_digest(update) == double_sha256(update[66:])


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("node_signature_1", "node_signature_1"),
        ("node_signature_2", "node_signature_2"),
        ("bitcoin_signature_1", "bitcoin_signature_1"),
        ("bitcoin_signature_2", "bitcoin_signature_2"),
    ],
)
def test_each_bad_announcement_signature_is_named(field: str, label: str) -> None:
    _, _, raw = next(v for v in unit_vectors() if v[0] == "valid" and v[1] == "channel_announcement")
    msg = ChannelAnnouncement.decode(raw)
    bad = getattr(msg, field)[:10] + bytes([getattr(msg, field)[10] ^ 1]) + getattr(msg, field)[11:]
    tampered = dataclasses.replace(msg, **{field: bad})
    assert check_channel_announcement(tampered) == f"{label} invalid"


def test_any_changed_signed_byte_breaks_the_signatures() -> None:
    _, _, raw = next(v for v in unit_vectors() if v[0] == "valid" and v[1] == "channel_announcement")
    for offset in (258, 300, len(raw) - 1):
        changed = raw[:offset] + bytes([raw[offset] ^ 0x01]) + raw[offset + 1 :]
        try:
            msg = ChannelAnnouncement.decode(changed)
        except WireError:
            continue  # a point prefix no longer 02/03: not even decodable
        assert check_channel_announcement(msg, changed) is not None


def test_high_s_signature_is_rejected() -> None:
    secret = bytes(range(1, 33))
    digest = double_sha256(b"gossip")
    sig = sign_digest(secret, digest)
    r, s = sig[:32], int.from_bytes(sig[32:], "big")
    high = r + (SECP256K1_ORDER - s).to_bytes(32, "big")
    verifier = SignatureVerifier()
    key = public_key(secret)
    assert verifier.verify(digest, sig, key)
    assert not verifier.verify(digest, high, key)
    # The low-S form is what coincurve's own verify accepts too.
    assert coincurve.PublicKey(key).verify(coincurve.PrivateKey(secret).sign(digest, hasher=None), digest, hasher=None)


def test_invalid_keys_and_sizes_fail_cleanly() -> None:
    verifier = SignatureVerifier()
    digest = bytes(32)
    not_a_point = b"\x02" + b"\xff" * 32
    assert verifier.public_key(not_a_point) is None
    checks = [
        SigCheck(digest, bytes(64), not_a_point, "node_signature_1"),
        SigCheck(digest, bytes(63), public_key(b"\x01" * 32), "x"),
        SigCheck(bytes(31), bytes(64), public_key(b"\x01" * 32), "y"),
        SigCheck(digest, b"\xff" * 64, public_key(b"\x01" * 32), "z"),  # r, s >= the group order
    ]
    assert verifier.verify_many(checks) == [False, False, False, False]
    assert verifier.first_failure(checks[:1]) == "node_signature_1 invalid (its key is not a valid public key)"


def test_node_keys_are_cached_and_bounded() -> None:
    verifier = SignatureVerifier(max_cached_keys=4)
    secrets = [bytes([i]) * 32 for i in range(1, 11)]
    digest = double_sha256(b"x")
    for secret in secrets:
        assert verifier.verify(digest, sign_digest(secret, digest), public_key(secret))
    assert 0 < len(verifier) <= 4
    # Bitcoin keys (cache=False) are not kept.
    before = len(verifier)
    verifier.verify(digest, sign_digest(b"\x42" * 32, digest), public_key(b"\x42" * 32), cache=False)
    assert len(verifier) == before


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(1, 2**32 - 1),
    block=st.integers(0, 2**24 - 1),
    timestamp=st.integers(1, 2**32 - 1),
    direction=st.integers(0, 1),
)
def test_signed_gossip_verifies(seed: int, block: int, timestamp: int, direction: int) -> None:
    keys = [seed.to_bytes(4, "big") + bytes([i]) * 28 for i in range(4)]
    scid = ShortChannelId(block, 1, 0)
    ann = sign_channel_announcement(keys[0], keys[1], keys[2], keys[3], scid, CHAIN_HASH_REGTEST)
    assert ann.node_id_1 < ann.node_id_2
    assert check_channel_announcement(ann) is None
    signer = keys[0] if public_key(keys[0]) == (ann.node_id_1 if direction == 0 else ann.node_id_2) else keys[1]
    upd = sign_channel_update(signer, scid, CHAIN_HASH_REGTEST, timestamp, direction=direction)
    assert check_channel_update(upd, ann.node_id_1, ann.node_id_2) is None
    node = sign_node_announcement(keys[0], timestamp, alias="fuzz")
    assert check_node_announcement(node) is None
