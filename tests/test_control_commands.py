"""The control commands' rough edges, as a new user meets them: dialable getinfo
addresses, sendmsg's even types and big payloads, unknown peers, the topics
of subscribe, Ctrl-C. The node is built by the composition root and runs in
this process; the commands run as processes or through ``main(argv)``."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from cli_in_process import cli
from lnpmsg.app import DONE, App
from lnpmsg.rpc.commands import EVENT_TOPICS, MAX_PAYLOAD
from lnpmsg.runtime import NodeSettings, build_node
from lnpmsg.testing.nodes import make_node, running
from lnpmsg.testing.processes import PROCESS_WAIT, finish_process, lnpmsg_argv
from lnpmsg.wire import Message, message
from lnpmsg.wire.fields import rest_bytes

STRANGER = "02" + "11" * 32


@message(type=32768)
@dataclass(frozen=True, slots=True)
class EvenBytes(Message):
    FIELDS = (("data", rest_bytes),)
    data: bytes


@message(type=32769)
@dataclass(frozen=True, slots=True)
class OddBytes(Message):
    FIELDS = (("data", rest_bytes),)
    data: bytes


def controlled(data_dir: Path, *listen: str):
    return build_node(NodeSettings(data_dir=data_dir, listen=list(listen) or ["127.0.0.1:0"], gossip=False))


async def test_getinfo_prints_addresses_that_connect_takes(capsys, data_dir):
    built = controlled(data_dir, "127.0.0.1:0", "udp://127.0.0.1:0", "zmq+tcp://127.0.0.1:0")
    dialer = make_node(listen=False)
    async with built.running() as node, running(dialer):
        code, out, _ = await cli(capsys, "--data-dir", data_dir, "--json", "getinfo")
        addresses = json.loads(out)["addresses"]
        node_id = node.node_id.hex()
        assert code == 0 and addresses == node.addresses and len(addresses) == 3
        assert addresses[0] == f"{node_id}@{node.listen_addresses[0]}"
        assert addresses[1].startswith(f"udp://{node_id}@127.0.0.1:") and addresses[2].startswith(f"zmq+tcp://{node_id}@127.0.0.1:")
        code, out, _ = await cli(capsys, "getinfo", "--data-dir", data_dir)
        assert code == 0 and all(f"address:  {a}\n" in out for a in addresses)
        for address in addresses:  # each one dials, over its own transport
            peer = await dialer.connect(address)
            assert peer.node_id == node.node_id
            await dialer.disconnect(node.node_id)


async def test_unknown_peers_fail_clearly(capsys, data_dir):
    async with controlled(data_dir).running():
        code, out, err = await cli(capsys, "disconnect", STRANGER, "--data-dir", data_dir)
        assert code == 1 and out == "" and f"error: peer {STRANGER} is not connected" in err
        code, out, _ = await cli(capsys, "listpeers", STRANGER, "--json", "--data-dir", data_dir)
        assert code == 1 and json.loads(out) == {"error": {"message": f"peer {STRANGER} is not connected"}}
        code, out, _ = await cli(capsys, "listpeers", "--data-dir", data_dir)
        assert code == 0 and out == "no peers connected\n"  # no peers at all is no failure


async def test_sendmsg_refuses_even_types_and_reads_big_payloads(capsys, data_dir):
    got: list[tuple[int, bytes]] = []
    receiver = make_node()
    receiver_app = App("receiver")  # knows both types: the even one does not close its connections
    for cls in (EvenBytes, OddBytes):
        receiver_app.message(cls)
        receiver_app.add_handler(cls, lambda peer, msg: got.append((msg.TYPE, msg.data)) or DONE)
    receiver.mount(receiver_app)
    async with controlled(data_dir).running() as node, running(receiver):
        peer_id = receiver.node_id.hex()
        await node.connect(receiver.addresses[0])
        d = ("--data-dir", data_dir)
        code, out, err = await cli(capsys, "sendmsg", peer_id, 32768, "00", *d)
        assert code == 2 and out == "" and "type 32768 is even: a peer without a handler for it closes the connection" in err
        assert "--even" in err
        code, out, _ = await cli(capsys, "sendmsg", peer_id, 32768, "00", "--even", *d)
        assert code == 0 and out.startswith("sent type 32768 (3 bytes)")
        code, _, err = await cli(capsys, "sendmsg", peer_id, 32769, "zz", *d)
        assert code == 2 and "the payload is not hex (give --text" in err

        big = bytes(range(256)) * (MAX_PAYLOAD // 256) + b"\x01" * (MAX_PAYLOAD % 256)
        wrapped = "\n".join(big.hex()[i:i + 60] for i in range(0, 2 * len(big), 60)) + "\n"  # as xxd -p prints it
        result = await trio.run_process(
            lnpmsg_argv("sendmsg", peer_id, 32769, "-", *d), stdin=wrapped.encode(), capture_stdout=True, capture_stderr=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().startswith(f"sent type 32769 ({MAX_PAYLOAD + 2} bytes)")
        (data_dir / "payload.bin").write_bytes(b"\x00raw\nbytes")
        code, out, _ = await cli(capsys, "sendmsg", peer_id, 32769, f"@{data_dir / 'payload.bin'}", "--text", *d)
        assert code == 0
        (data_dir / "huge.bin").write_bytes(b"\x00" * (MAX_PAYLOAD + 1))
        code, _, err = await cli(capsys, "sendmsg", peer_id, 32769, f"@{data_dir / 'huge.bin'}", "--text", *d)
        assert code == 2 and f"a message's payload is at most {MAX_PAYLOAD} bytes" in err
        code, _, err = await cli(capsys, "sendmsg", peer_id, 32769, "@/no/such/file", *d)
        assert code == 2 and "cannot read the payload from /no/such/file" in err
        with trio.fail_after(10):
            while len(got) < 3:
                await trio.sleep(0.01)
        assert got == [(32768, b"\x00"), (32769, big), (32769, b"\x00raw\nbytes")]
        assert receiver.node_id in node.peers  # still connected: nothing even went out unasked


def test_subscribe_help_lists_the_topics():
    result = subprocess.run(lnpmsg_argv("subscribe", "--help"), capture_output=True, text=True, timeout=PROCESS_WAIT, check=False)
    assert result.returncode == 0
    for topic, _ in EVENT_TOPICS:
        assert f"  {topic} " in result.stdout
    for topic in ("peer.connected", "message.received.N", "gossip.channel_update", "chain.tip", "error"):
        assert topic in result.stdout


@pytest.mark.parametrize("command", [["subscribe"], ["gossip", "subscribe"]])
async def test_ctrl_c_ends_subscribe_quietly_with_130(data_dir, command):
    built = build_node(NodeSettings(data_dir=data_dir, listen=["127.0.0.1:0"], gossip=command[0] == "gossip"))
    async with built.running():
        process = await trio.lowlevel.open_process(lnpmsg_argv(*command, "--data-dir", data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stderr is not None
        with trio.fail_after(PROCESS_WAIT):
            assert b"subscribed to" in await process.stderr.receive_some(1 << 16)
        process.send_signal(signal.SIGINT)
        code, stderr = await finish_process(process)
    assert code == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
