"""The composition root: what build_node mounts, the errors it names, run_node's lifecycle."""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import pytest
import trio

from lnpmsg.app import App
from lnpmsg.node.identity import NodeKey
from lnpmsg.runtime import NodeSettings, SettingsError, StartError, build_node, run_node
from lnpmsg.runtime.gc_policy import NODE_GC_THRESHOLDS
from lnpmsg.testing.nodes import make_node, running


def settings(tmp_path: Path, **fields) -> NodeSettings:
    fields.setdefault("listen", ["127.0.0.1:0"])
    return NodeSettings(data_dir=tmp_path, **fields)


def test_the_default_node_has_the_built_in_apps_in_order(tmp_path: Path) -> None:
    built = build_node(settings(tmp_path, apps=[App("mine")]))
    assert list(built.node.apps) == ["rpc", "pubsub", "gossip", "onion_messages", "mine", "control"]
    assert built.key_created and (tmp_path / "node_key").exists()
    again = build_node(settings(tmp_path, gossip=False, control=False, peer_rpc=False, peer_pubsub=False, onion_messages=False))
    assert list(again.node.apps) == [] and not again.key_created
    assert again.node.node_id == built.node.node_id  # the same key from the data dir
    assert again.network == "bitcoin" and again.node.config.listen == ["127.0.0.1:0"]


def test_a_node_with_a_chain_offers_peer_storage_before_its_channels_unless_told_not_to(tmp_path: Path) -> None:
    """BOLT 1 peer storage (bit 43) by default; mounted before the channel app, so that its
    peer_storage_retrieval leaves before any channel_reestablish."""
    built = build_node(settings(tmp_path / "a", chain="regtest", gossip=False, control=False))
    apps = list(built.node.apps)
    assert apps.index("chain") < apps.index("peer_storage") < apps.index("channels")
    assert built.node.apps["peer_storage"].features.has(43)
    off = build_node(settings(tmp_path / "b", chain="regtest", gossip=False, control=False, peer_storage=False, recover_from_peers=True))
    assert not off.node.apps["peer_storage"].features.supports(43) and off.node.apps["peer_storage"].recover


def test_defaults_follow_the_cli(tmp_path: Path) -> None:
    key = NodeKey.generate()
    built = build_node(NodeSettings(data_dir=tmp_path, key=key, gossip=False, control=False, features=[331], chain=None))
    assert built.node.config.listen == ["127.0.0.1:9735"] and built.node.node_id == key.node_id
    assert built.node.config.features.supports(331)
    assert not (tmp_path / "node_key").exists()  # a given key is not written


def test_node_config_sets_the_limits_and_timers_no_option_names(tmp_path: Path) -> None:
    built = build_node(settings(tmp_path, gossip=False, node_config={"max_peers": 20_000, "ping_interval": 30.0}))
    assert built.node.config.max_peers == 20_000 and built.node.config.ping_interval == 30.0
    assert built.node.admission.limits.max_peers == 20_000  # the node was built with them
    assert built.node.config.listen == ["127.0.0.1:0"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"chain": "regtest", "network": "signet"}, "--chain regtest needs --network regtest"),
        ({"network": "mainnet"}, "--network mainnet: the networks are bitcoin, testnet, signet, regtest"),
        ({"chain": "mainnet"}, "--chain mainnet: the chains are regtest"),
        ({"onion_only": True}, "onion-only: the node has no clearnet listener"),
        ({"features": [-1]}, "bad --feature"),
        ({"gossip": False, "gossip_import": ["x"]}, "--gossip-import needs the gossip app"),
        ({"tor_socks": "nowhere"}, "bad --tor-socks"),
        ({"tor_socks": "10.1.2.3:9050"}, "cannot start: "),
        ({"key": NodeKey.generate(), "key_file": Path("/k")}, "a node key or a node key file, not both"),
        ({"apps": [App("rpc")]}, "cannot mount it: an app named 'rpc' is already mounted"),
        ({"chain": "regtest", "channel_options": {"channel-to-self-delay": 0}}, "--channel-to-self-delay 0: give 1 to 2016 blocks"),
        ({"node_config": {"max_peers": 5, "listen": []}}, "node_config: listen cannot be set there"),
        ({"node_config": {"max_pears": 5}}, "node_config: max_pears cannot be set there"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        build_node(settings(tmp_path, **fields))


async def test_a_busy_port_is_a_start_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        built = build_node(settings(tmp_path, listen=[f"127.0.0.1:{port}"], gossip=False))
        with pytest.raises(StartError, match="cannot listen on"):
            async with built.running():
                pass  # pragma: no cover
        with pytest.raises(StartError, match="cannot listen on"):
            await run_node(build_node(settings(tmp_path / "b", listen=[f"127.0.0.1:{port}"], gossip=False)), handle_signals=False)


async def test_run_node_serves_until_stopped(tmp_path: Path) -> None:
    seen: list[dict] = []
    thresholds = []
    before = gc.get_threshold()
    built = build_node(settings(tmp_path, gossip=False))

    async def started(b) -> None:
        seen.append(await b.summary())
        thresholds.append(gc.get_threshold())
        peer = make_node(listen=False)
        async with running(peer):
            assert (await peer.connect(b.node.addresses[0])).node_id == b.node.node_id
        b.node.stop()  # as the control API's stop does

    with trio.fail_after(20):
        await run_node(built, on_started=started, handle_signals=False)
    (summary,) = seen
    assert summary["node_id"] == built.node.node_id.hex() and summary["control"].startswith("ipc://")
    assert summary["apps"] == ["control", "onion_messages", "pubsub", "rpc"]
    # the collector ran at a node's pace while it served, and is as it was after
    assert thresholds == [NODE_GC_THRESHOLDS] != [before] and gc.get_threshold() == before


class FailsToStart(App):
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        raise RuntimeError("no database at /nowhere")


async def test_an_app_that_cannot_start_is_named(tmp_path: Path) -> None:
    built = build_node(settings(tmp_path, gossip=False, control=False, apps=[FailsToStart("bad")]))
    with pytest.raises(StartError, match=r"app 'bad' failed to start: RuntimeError: no database at /nowhere \(at .*test_runtime_build.py:\d+\)"):
        async with built.running():
            pass  # pragma: no cover


def test_a_node_with_payments_and_onion_messages_runs_offers(tmp_path: Path) -> None:
    """BOLT 12 offers ride on both: mounted after them, and not without either."""
    apps = list(build_node(settings(tmp_path / "a", chain="regtest", gossip=False, control=False)).node.apps)
    assert apps.index("payments") < apps.index("onion_messages") < apps.index("offers")
    assert "offers" not in build_node(settings(tmp_path / "b", chain="regtest", gossip=False, control=False, onion_messages=False)).node.apps
    assert "offers" not in build_node(settings(tmp_path / "c", gossip=False, control=False)).node.apps
