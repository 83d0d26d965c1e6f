"""The `lnpmsg node` command as a user runs it: a real process, real signals."""

import argparse
import os
import signal
import stat
import subprocess

import pytest
import trio

from lnpmsg.cli import build_parser
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing.processes import lnpmsg_argv, start_node_process


async def stop(process):
    process.send_signal(signal.SIGINT)
    with trio.fail_after(10):
        code = await process.wait()
    stderr = await process.stderr.receive_some(1 << 20)
    return code, stderr.decode()


async def test_node_starts_with_generated_key_accepts_peers_and_stops_cleanly(tmp_path):
    process, info = await start_node_process(tmp_path / "n")
    try:
        key_file = tmp_path / "n" / "node_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert (
            info["node_id"]
            == NodeKey.from_secret(
                bytes.fromhex(key_file.read_text().strip())
            ).node_id.hex()
        )
        (address,) = info["addresses"]
        client = Node(NodeKey.generate(), NodeConfig())
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            peer = await client.connect(address)
            assert await peer.ping() >= 0
            client.stop()
    finally:
        code, stderr = await stop(process)
    assert code == 0
    assert "generated a new node key" in stderr
    assert "connected (inbound, tcp" in stderr
    assert "received SIGINT, shutting down" in stderr and "stopped" in stderr
    # restart: the same identity
    process, again = await start_node_process(tmp_path / "n")
    code, stderr = await stop(process)
    assert again["node_id"] == info["node_id"] and code == 0
    assert "generated" not in stderr


async def test_node_with_given_key(tmp_path):
    process, info = await start_node_process(tmp_path / "n", "--node-key", "11" * 32)
    await stop(process)
    assert (
        info["node_id"]
        == "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
    )
    assert not (tmp_path / "n" / "node_key").exists()


def test_bad_key_and_busy_port_give_clear_errors(tmp_path):
    result = subprocess.run(
        lnpmsg_argv("node", "--data-dir", str(tmp_path), "--node-key", "xyz"),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2 and "64 hex characters" in result.stderr
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            lnpmsg_argv(
                "node", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{port}"
            ),
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1 and "cannot listen on" in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["node", "--help"]])
def test_help_teaches(args):
    result = subprocess.run(lnpmsg_argv(*args), capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert "node" in result.stdout
    if args[0] == "node":
        for option in (
            "--data-dir",
            "--listen",
            "--connect",
            "--node-key-file",
            "examples:",
        ):
            assert option in result.stdout


def test_every_argument_of_every_command_says_what_it_is():
    """``lnpmsg COMMAND --help`` explains each argument (a bare ``node_id`` teaches nothing);
    hidden options (``argparse.SUPPRESS``) excepted."""

    def commands(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, (*path, name))
        yield path, parser

    unexplained = [
        f"{' '.join(path)} {action.dest}"
        for path, parser in commands(build_parser(), ())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert unexplained == []


def test_subscribe_help_lists_the_topics_the_node_publishes():
    from lnpmsg.gossip import events as gossip_events
    from lnpmsg.node import events as node_events
    from lnpmsg.wallet.app import ChainTip

    (commands,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = commands.choices["subscribe"].format_help()
    topics = {ChainTip.topic, "onion_message.received"} | {
        kind.topic for module in (node_events, gossip_events) for kind in vars(module).values()
        if isinstance(kind, type) and isinstance(getattr(kind, "topic", None), str)
    }
    # the families whose topic is a field: channel.* (ChannelEvent), onchain.*, invoice.* and payment.*
    topics |= {"channel.opened", "channel.quiescent", "channel.failed", "onchain.commitment", "invoice.paid", "payment.forwarded"}

    def listed(topic: str) -> bool:  # by its name, or as ".name" in the row of its family ("channel.")
        family, _, name = topic.partition(".")
        return topic in text or (bool(name) and f"{family}." in text and f".{name}" in text)

    assert {t for t in topics if not listed(t)} == set()


def test_key_file_with_loose_permissions_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_text("22" * 32)
    os.chmod(key, 0o644)
    result = subprocess.run(
        lnpmsg_argv("node", "--node-key-file", str(key)),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2 and "chmod 600" in result.stderr
