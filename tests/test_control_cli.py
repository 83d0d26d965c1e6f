"""The ``lnpmsg`` control subcommands against a running node (real sockets; the
CLI runs in a worker thread, exactly as ``main(argv)`` runs from a shell)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import trio

from cli_in_process import cli
from lnpmsg.app import DONE
from lnpmsg.gossip.app import GossipApp
from lnpmsg.gossip.messages import register_gossip_messages
from lnpmsg.gossip.sign import sign_channel_announcement, sign_node_announcement
from lnpmsg.gossip.store import GossipStore
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.pubsub.peer import PeerPubSub
from lnpmsg.rpc.control import ControlServer
from lnpmsg.rpc.peer import PeerRpc
from lnpmsg.testing.nodes import make_node, running
from lnpmsg.wire import CHAIN_HASH_REGTEST, DEFAULT_REGISTRY, ShortChannelId


def controlled(data_dir):
    node = make_node()
    node.mount(PeerRpc())
    node.mount(PeerPubSub())
    node.mount(ControlServer(data_dir))
    return node


async def test_no_node_running(capsys, data_dir):
    code, out, err = await cli(capsys, "getinfo", "--data-dir", data_dir)
    assert code == 3 and out == "" and f"error: no node is running at {data_dir}" in err
    code, out, err = await cli(capsys, "listpeers", "--json", "--data-dir", data_dir)
    assert code == 3 and "no node is running" in json.loads(out)["error"]["message"]


def test_a_control_command_loads_neither_the_node_nor_its_apps(data_dir):
    # a shell runs 'lnpmsg call' in a loop: its start should be the control client's, not the node's
    code = (
        "import sys; from lnpmsg.cli import main; "
        f"code = main(['--data-dir', {str(data_dir)!r}, 'call', 'getinfo']); "
        "print(code, sorted(m for m in sys.modules if m.startswith(('lnpmsg.channels', 'lnpmsg.runtime.build', 'lnpmsg.gossip'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split(None, 1) == ["3", "[]\n"], done.stdout + done.stderr


async def test_commands_against_a_running_node(capsys, data_dir):
    node, other = controlled(data_dir), make_node()
    got = []
    other.add_handler(32771, lambda peer, msg: got.append(msg.payload) or DONE)
    d = ("--data-dir", data_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await nursery.start(other.run)
        code, out, _ = await cli(capsys, "getinfo", *d)
        assert code == 0 and f"node id:  {node.node_id.hex()}" in out and "apps:     pubsub, rpc" in out
        code, out, _ = await cli(capsys, "getinfo", "--json", *d)
        assert json.loads(out)["node_id"] == node.node_id.hex()
        peer_id = other.node_id.hex()
        code, out, _ = await cli(capsys, "connect", f"{peer_id}@{other.listen_addresses[0]}", *d)
        assert code == 0 and out == f"connected to {peer_id} (tcp {other.listen_addresses[0]})\n"
        code, out, _ = await cli(capsys, "sendmsg", peer_id, 32771, "hello", "--text", *d)
        assert code == 0 and out.startswith("sent type 32771 (7 bytes)")
        code, out, _ = await cli(capsys, "ping", peer_id, *d)
        assert code == 0 and out.startswith(f"pong from {peer_id} in ")
        code, out, _ = await cli(capsys, "listpeers", *d)
        assert code == 0 and peer_id in out and "bytes in/out" in out and "ping: " in out
        code, out, _ = await cli(capsys, "listpeers", "--json", *d)
        listed = json.loads(out)["peers"]
        assert [p["node_id"] for p in listed] == [peer_id] and listed[0]["ping_rtt_ms"] is not None
        assert got == [b"hello"]
        code, out, _ = await cli(capsys, "call", "pubsub.publish", '{"topic": "t", "text": "x"}', "--json", *d)
        assert code == 0 and json.loads(out) == {"topic": "t", "subscribers": 0}
        # errors: clear text (or JSON), exit status 1, the node carries on
        code, out, err = await cli(capsys, "call", "frobnicate", *d)
        assert code == 1 and "error: unknown method 'frobnicate'" in err
        code, out, err = await cli(capsys, "sendmsg", peer_id, 100, "00", "--json", *d)
        assert code == 1 and "custom range" in json.loads(out)["error"]["message"]
        assert json.loads(out)["error"]["code"] == -32602
        code, out, err = await cli(capsys, "call", "getinfo", "{not json", *d)
        assert code == 2 and "params are not JSON" in err  # bad arguments: exit 2, nothing sent
        code, out, _ = await cli(capsys, "disconnect", peer_id, *d)
        assert code == 0 and out == "disconnected\n"
        code, out, _ = await cli(capsys, "stop", *d)
        assert code == 0 and out == "node stopped\n"
        assert node.stopping
        other.stop()
    code, _, err = await cli(capsys, "getinfo", *d)
    assert code == 3


async def test_subscribe_streams_json_lines(capsys, data_dir):
    node, other = controlled(data_dir), make_node()
    async with running(node, other):
        async with trio.open_nursery() as nursery:
            result = []

            async def subscribe():
                result.append(await cli(capsys, "subscribe", "peer.", "--count", "2", "--data-dir", data_dir))

            nursery.start_soon(subscribe)
            publisher = node.apps["control"].publisher
            with trio.fail_after(10):
                while "peer." not in publisher.subscriptions:
                    await trio.sleep(0.01)
            await node.connect(f"{other.node_id.hex()}@{other.listen_addresses[0]}")
            await node.disconnect(other.node_id)
        code, out, err = result[0]
        lines = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and [e["topic"] for e in lines] == ["peer.connected", "peer.disconnected"]
        assert all(e["node_id"] == other.node_id.hex() for e in lines)
        assert "subscribed to 'peer.'" in err


#: the raw exit system call, which ends the calling thread only (no unwinding)
_SYS_EXIT = {"x86_64": 60, "aarch64": 93}
_MAIN_THREAD_ENDS_FIRST = """
import ctypes, os, sys, threading
def last_thread():
    sys.stdin.buffer.read()  # until the test closes our stdin
    os._exit(0)
threading.Thread(target=last_thread).start()
ctypes.CDLL(None, use_errno=True).syscall(int(sys.argv[1]), 0)
"""


def test_a_process_is_gone_only_once_every_thread_has_ended():
    """``stop`` waits for the node's process to be gone. A process whose main
    thread has ended (a zombie in /proc/PID/stat) while another thread still
    runs is not: it still holds its files and cannot be reaped (as a node
    whose worker thread is still writing when it exits, on a busy machine)."""
    import os
    import subprocess
    import sys
    import time

    from lnpmsg.rpc.commands import _process_gone

    machine = os.uname().machine
    assert machine in _SYS_EXIT, f"add the exit system call's number for {machine}"
    process = subprocess.Popen(
        [sys.executable, "-c", _MAIN_THREAD_ENDS_FIRST, str(_SYS_EXIT[machine])], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{process.pid}/stat").read_bytes().rsplit(b")", 1)[1][1:2] != b"Z":
            assert time.monotonic() < deadline, "the main thread did not end"
            time.sleep(0.01)
        assert not _process_gone(process.pid)
        assert process.poll() is None  # indeed: not reapable yet
        assert process.stdin is not None
        process.stdin.close()  # the last thread ends the process
        deadline = time.monotonic() + 60
        while not _process_gone(process.pid):
            assert time.monotonic() < deadline, "the process did not end"
            time.sleep(0.01)
        assert process.poll() == 0  # gone means reapable
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdin is not None:
            process.stdin.close()


async def test_listpeers_names_a_peer_by_the_alias_the_gossip_knows(capsys, data_dir):
    """A peer whose node_announcement the node's gossip holds is named by its alias in listpeers (JSON
    and text, escaped where it would move the cursor); one it holds none of has a null alias."""
    registry = register_gossip_messages(DEFAULT_REGISTRY.copy())
    node = Node(NodeKey.generate(), NodeConfig(listen=[], network="regtest"))
    node.mount(ControlServer(data_dir))
    gossip = node.mount(GossipApp(GossipStore(":memory:", CHAIN_HASH_REGTEST)))
    other, stranger = make_node(network="regtest"), make_node(network="regtest")
    channel = sign_channel_announcement(other.key.secret, stranger.key.secret, os.urandom(32), os.urandom(32), ShortChannelId(100, 1, 0), CHAIN_HASH_REGTEST)
    announced = sign_node_announcement(other.key.secret, int(time.time()), alias="otter\x1b[2J")
    d = ("--data-dir", data_dir)
    async with running(node, other, stranger):
        await node.connect(other.addresses[0])
        await node.connect(stranger.addresses[0])
        await gossip.add_own([registry.decode(channel.encode()), registry.decode(announced.encode())])
        await gossip.drain()
        code, out, _ = await cli(capsys, "listpeers", "--json", *d)
        assert code == 0 and {p["node_id"]: p["alias"] for p in json.loads(out)["peers"]} == {other.node_id.hex(): "otter\x1b[2J", stranger.node_id.hex(): None}
        code, out, _ = await cli(capsys, "listpeers", other.node_id.hex(), *d)
        assert code == 0 and out.splitlines()[0] == f"{other.node_id.hex()} ('otter\\x1b[2J')"
