"""Our own gossip for public channels (sans-IO): lnpmsg.gossip.announce.

Both sides of a channel build the same channel_announcement from each
other's announcement_signatures; what we sign is read back by pyln-proto
(Core Lightning's codec, from the BOLT CSV) and its signatures checked
with libsecp256k1 over the digest BOLT 7 defines, independently of
lnpmsg's verify code; the node_announcement of an onion-only node carries
its onion and nothing else; the update planner's rate limits.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import coincurve
import pytest
from pyln.proto.message import Message as PylnMessage
from pyln.proto.message import MessageNamespace

from lnpmsg.gossip.announce import (
    AnnounceError,
    ChannelFacts,
    FeePolicy,
    UpdatePlanner,
    announced_addresses,
    build_node_announcement,
    build_update,
    node_features,
    our_signatures,
    signed_announcement,
)
from lnpmsg.gossip.messages import AnnouncementSignatures, NodeAnnouncement
from lnpmsg.gossip.sign import public_key
from lnpmsg.gossip.verify import check_channel_announcement, check_channel_update, check_node_announcement
from lnpmsg.wire import CHAIN_HASHES, Features, IPv4Addr, TorV3Addr, decode_addresses

SHARED = Path(__file__).resolve().parents[2] / "shared"
NAMESPACE = MessageNamespace(
    [
        line
        for line in (SHARED / "specs" / "bolts" / "csv" / "peer_wire.csv").read_text().splitlines()
        if line.split(",")[1] in {"announcement_signatures", "channel_announcement", "channel_update", "node_announcement"}
    ]
)
ONION = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion"


def pyln_read(data: bytes) -> tuple[str, dict[str, Any]]:
    message = PylnMessage.read(NAMESPACE, io.BytesIO(data))
    assert message is not None
    return message.messagetype.name, message.to_py()


def secret(n: int) -> bytes:
    return n.to_bytes(32, "big")


def pair_facts() -> tuple[ChannelFacts, ChannelFacts, dict[str, bytes]]:
    keys = {"node_a": secret(11), "node_b": secret(12), "fund_a": secret(21), "fund_b": secret(22)}
    common = {"chain_hash": CHAIN_HASHES["regtest"], "short_channel_id": (103 << 40) | (1 << 16) | 0, "channel_id": b"\x07" * 32, "capacity_sat": 500_000}
    a = ChannelFacts(our_node_id=public_key(keys["node_a"]), their_node_id=public_key(keys["node_b"]),
                     our_funding_pubkey=public_key(keys["fund_a"]), their_funding_pubkey=public_key(keys["fund_b"]), **common)  # type: ignore[arg-type]  # fmt: skip
    b = ChannelFacts(our_node_id=a.their_node_id, their_node_id=a.our_node_id,
                     our_funding_pubkey=a.their_funding_pubkey, their_funding_pubkey=a.our_funding_pubkey, **common)  # type: ignore[arg-type]  # fmt: skip
    return a, b, keys


def ecdsa_ok(pubkey: bytes, sig: bytes, digest: bytes) -> bool:
    der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig))
    return coincurve.PublicKey(pubkey).verify(der, digest, hasher=None)


def test_both_sides_build_the_same_announcement_and_pyln_reads_it() -> None:
    a, b, keys = pair_facts()
    sigs_a = our_signatures(a, keys["node_a"], keys["fund_a"])
    sigs_b = our_signatures(b, keys["node_b"], keys["fund_b"])
    ann_a = signed_announcement(a, sigs_a, sigs_b)
    ann_b = signed_announcement(b, sigs_b, sigs_a)
    raw = ann_a.encode()
    assert raw == ann_b.encode()
    assert check_channel_announcement(ann_a, raw) is None

    # pyln-proto reads both messages; the signatures hold over BOLT 7's digest (from byte 258 on).
    name, fields = pyln_read(raw)
    assert name == "channel_announcement"
    digest = hashlib.sha256(hashlib.sha256(raw[2 + 256 :]).digest()).digest()
    for i in (1, 2):
        assert ecdsa_ok(bytes.fromhex(fields[f"node_id_{i}"]), bytes.fromhex(fields[f"node_signature_{i}"]), digest)
        assert ecdsa_ok(bytes.fromhex(fields[f"bitcoin_key_{i}"]), bytes.fromhex(fields[f"bitcoin_signature_{i}"]), digest)
    assert bytes.fromhex(fields["node_id_1"]) < bytes.fromhex(fields["node_id_2"])
    name, sig_fields = pyln_read(sigs_a.encode())
    assert name == "announcement_signatures" and bytes.fromhex(sig_fields["channel_id"]) == a.channel_id
    assert ecdsa_ok(a.our_node_id, bytes.fromhex(sig_fields["node_signature"]), digest)
    assert ecdsa_ok(a.our_funding_pubkey, bytes.fromhex(sig_fields["bitcoin_signature"]), digest)


def test_bad_peer_signatures_are_refused() -> None:
    a, b, keys = pair_facts()
    sigs_a = our_signatures(a, keys["node_a"], keys["fund_a"])
    sigs_b = our_signatures(b, keys["node_b"], keys["fund_b"])
    swapped = AnnouncementSignatures(channel_id=sigs_b.channel_id, short_channel_id=sigs_b.short_channel_id,
                                     node_signature=sigs_b.bitcoin_signature, bitcoin_signature=sigs_b.node_signature)  # fmt: skip
    with pytest.raises(AnnounceError, match="node_signature"):
        signed_announcement(a, sigs_a, swapped)
    other_scid = AnnouncementSignatures(channel_id=sigs_b.channel_id, short_channel_id=sigs_a.short_channel_id.from_int(5),
                                        node_signature=sigs_b.node_signature, bitcoin_signature=sigs_b.bitcoin_signature)  # fmt: skip
    with pytest.raises(AnnounceError, match="short_channel_id"):
        signed_announcement(a, sigs_a, other_scid)
    with pytest.raises(ValueError, match="not this channel"):
        our_signatures(a, keys["node_b"], keys["fund_a"])


def test_channel_update_carries_the_policy_in_our_direction() -> None:
    a, b, keys = pair_facts()
    policy = FeePolicy(fee_base_msat=2000, fee_proportional_millionths=250, cltv_expiry_delta=80, htlc_minimum_msat=500)
    update = build_update(a, keys["node_a"], policy, 1_700_000_000, disabled=True)
    node_1, node_2 = sorted([a.our_node_id, a.their_node_id])
    assert check_channel_update(update, node_1, node_2) is None
    assert update.channel_flags == a.direction | 2 and a.direction != b.direction
    assert (update.fee_base_msat, update.fee_proportional_millionths, update.cltv_expiry_delta) == (2000, 250, 80)
    assert update.htlc_maximum_msat == 500_000_000  # the capacity when the policy names no maximum
    name, fields = pyln_read(update.encode())
    assert name == "channel_update" and fields["fee_proportional_millionths"] == 250
    with pytest.raises(ValueError, match="cltv_expiry_delta"):
        FeePolicy(cltv_expiry_delta=0)


def test_onion_only_node_announces_its_onion_and_nothing_else() -> None:
    listen = ["127.0.0.1:9735", "8.8.8.8:9735", f"{ONION}:9735", "udp://8.8.4.4:9735", "zmq+tcp://1.1.1.1:5", "0.0.0.0:9736"]
    assert announced_addresses(listen, onion_only=True, extra=["9.9.9.9:9735"]) == [TorV3Addr.from_host(ONION, 9735)]
    clearnet = announced_addresses(listen, onion_only=False)
    assert IPv4Addr("8.8.8.8", 9735) in clearnet and TorV3Addr.from_host(ONION, 9735) in clearnet
    assert all(getattr(a, "host", "") not in ("8.8.4.4", "1.1.1.1", "0.0.0.0") for a in clearnet)  # UDP, ZeroMQ, wildcard: not BOLT 7 addresses
    node = build_node_announcement(secret(11), 1_700_000_000, alias=None, rgb_color=None,
                                   addresses=announced_addresses(listen, onion_only=True))  # fmt: skip
    assert check_node_announcement(node) is None
    decoded = NodeAnnouncement.decode(node.encode())
    assert decode_addresses(decoded.addresses) == (TorV3Addr.from_host(ONION, 9735),)
    assert decoded.alias.rstrip(b"\0").startswith(b"lnpmsg-") and decoded.rgb_color == public_key(secret(11))[:3]
    name, fields = pyln_read(node.encode())
    assert name == "node_announcement"


def test_node_features_keep_what_bolt9_allows_in_node_announcements() -> None:
    init = Features.from_names(optional=["var_onion_optin", "payment_secret", "basic_mpp", "gossip_queries", "option_anchors"])
    announced = Features.from_bytes(node_features(init.set(301)))  # an unknown (app) bit stays out
    assert set(announced.bits()) == {9, 15, 17, 23}
    # an app's bit for node_announcement alone (bLIP 3's keysend) is added as it is
    assert set(Features.from_bytes(node_features(init, Features.from_bits([55]))).bits()) == {9, 15, 17, 23, 55}


def test_update_planner_rate_limits_and_delays_disabling() -> None:
    planner = UpdatePlanner(min_interval=60.0, disable_delay=30.0)
    policy = FeePolicy()
    assert planner.due(1, policy, 1000.0) == (True, None)
    assert planner.take(1, policy, 1000.0) == (1000, False)
    assert planner.due(1, policy, 1001.0) == (False, None)  # nothing changed
    newer = FeePolicy(fee_base_msat=5)
    assert planner.due(1, newer, 1010.0) == (False, 1060.0)  # changed, but only once a minute
    assert planner.due(1, newer, 1060.0)[0]
    assert planner.take(1, newer, 1060.0) == (1060, False)
    planner.peer_state(1, False, 1100.0)  # the peer left: nothing before the delay
    assert planner.due(1, newer, 1110.0) == (False, 1130.0)
    assert planner.due(1, newer, 1130.0)[0] and planner.take(1, newer, 1130.0) == (1130, True)
    planner.peer_state(1, True, 1140.0)  # back: re-enabled once the interval allows
    assert planner.due(1, newer, 1140.0) == (False, 1190.0)
    assert planner.take(1, newer, 1190.0) == (1190, False)
    planner.again(1)  # the last one was lost: due now, newer than it
    assert planner.due(1, newer, 1191.0)[0] and planner.take(1, newer, 1191.0) == (1191, False)
    planner.known(2, 5000)  # a timestamp announced before a restart: the next is newer even if the clock is behind
    assert planner.take(2, policy, 4000.0)[0] == 5001
