"""A peer's init features cannot amplify into huge logs, listpeers entries or memory."""

import json
import logging

import trio

from lnpmsg.node.session import MAX_FEATURE_BITS
from lnpmsg.rpc.control import peer_info
from lnpmsg.testing.nodes import make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import Error, Init, WarningMessage
from lnpmsg.wire.bolt1 import CHAIN_HASHES, INIT_TLVS

#: every optional (odd) bit below the limit: the largest init we accept
WIDEST = bytes([0xAA]) * (MAX_FEATURE_BITS // 8)


def _init(features: bytes) -> Init:
    return Init(features=features, tlvs=INIT_TLVS.stream(networks=[CHAIN_HASHES["bitcoin"]]))


async def test_32_peers_with_the_widest_features_keep_listpeers_and_logs_small(caplog):
    caplog.set_level(logging.INFO, "lnpmsg.node")
    node = make_node(max_connections_per_ip=64)
    peers = []
    async with running(node):
        for _ in range(32):
            raw = await RawPeer.connect(node.listen_addresses[0], node.node_id)
            peers.append(raw)
            await raw.exchange_init(_init(WIDEST))
        with trio.fail_after(10):
            while len(node.peers) < 32:
                await trio.sleep(0.01)
        listed = json.dumps([peer_info(node, peer, trio.current_time()) for peer in node.peers.values()])
        # each entry: the (bounded) hex plus ~40 names, not a name per set bit (4,096 here)
        assert len(listed) < 32 * 6000, len(listed)
        one = peer_info(node, next(iter(node.peers.values())), trio.current_time())
        assert one["feature_names"][-1].endswith("more unknown bit(s)") and len(one["feature_names"]) < 64
        longest = max(len(record.getMessage()) for record in caplog.records)
        assert longest < 4000, longest
        for raw in peers:
            await raw.aclose()


async def test_an_init_with_a_65_kb_feature_field_is_refused_with_a_reason(caplog):
    caplog.set_level(logging.INFO, "lnpmsg.node")
    node = make_node()
    async with running(node):
        raw = await RawPeer.connect(node.listen_addresses[0], node.node_id)
        await raw.send(_init(bytes([0xAA]) * 65000))
        messages = await raw.receive_until_closed(timeout=10)
        await raw.aclose()
        texts = [m for m in messages if m[:2] in (Error.TYPE.to_bytes(2, "big"), WarningMessage.TYPE.to_bytes(2, "big"))]
        assert texts and b"we accept bits below 8192" in texts[-1]
        assert not node.peers
        assert "we accept bits below 8192" in caplog.text and max(len(r.getMessage()) for r in caplog.records) < 4000
