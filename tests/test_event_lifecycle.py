"""Event subscribers hear the node go and come back (never silently renumbered)."""

from __future__ import annotations

from pathlib import Path

import trio

from lnpmsg.pubsub import bridge
from lnpmsg.rpc import control_client
from lnpmsg.rpc.control import ControlServer
from lnpmsg.rpc.control_client import ControlClient
from lnpmsg.testing.nodes import make_node


def _controlled(data_dir: Path):
    node = make_node()
    node.mount(ControlServer(data_dir))
    return node


async def test_a_subscriber_hears_the_node_stop_go_silent_and_restart(data_dir, monkeypatch):
    monkeypatch.setattr(bridge, "HEARTBEAT_INTERVAL", 0.2)
    monkeypatch.setattr(control_client, "SILENT_AFTER", 1.5)
    first = _controlled(data_dir)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            async with ControlClient.open(data_dir) as client, await client.subscribe("gossip.", lifecycle=True) as events:
                first.stop()
                seen = [(await events.__anext__()).topic]
                assert seen == ["node.stopping"]
                assert (await events.__anext__()).topic == "node.silent"
                second = _controlled(data_dir)
                await nursery.start(second.run)
                event = await events.__anext__()
                assert event.topic == "node.restarted" and event.data["epoch"] == events.epoch
                second.stop()


def test_every_event_carries_the_publishers_epoch():
    body = bridge.encode_event(object(), "x", 1, 0.0, epoch=1234)
    assert b'"epoch":1234' in body
