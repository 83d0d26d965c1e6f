"""Encrypted chat between lnpmsg nodes: one custom message type, in a few lines.

Two ways to run it:

1. In-process (the chat app mounted on its own node)::

       python examples/chat.py --nick alice --listen 127.0.0.1:9801
       python examples/chat.py --nick bob --connect NODEID@127.0.0.1:9801

   Each prints ``* ready: NODEID@ADDRESS``; lines typed on stdin go to every
   connected peer that advertises the chat feature (bit 331), over BOLT-8
   encrypted connections.

2. Attached to a node that is already running (another process)::

       lnpmsg node --data-dir /tmp/n1 --listen 127.0.0.1:9801 --feature 331
       python examples/chat.py --attach /tmp/n1 --nick carol

   The chat then runs in its own process and drives the node through the
   node's control socket (``sendcustommsg``) and event socket (topic
   ``message.received.32769``): the node knows nothing about chat (type
   32769 is odd, so the node passes it up instead of failing on it).
   ``--feature 331`` makes the node advertise the chat feature: chat peers
   broadcast only to peers that do, so without it the attached chat can
   send but receives nothing (it says so when it attaches).

Typed lines starting with ``/``: ``/connect NODEID@HOST:PORT``, ``/peers``,
``/quit``. End of input quits too (exit 0); Ctrl-C exits 130, quietly.
Output lines: ``* ...`` for status, ``<nick@NODEID8> text`` for messages.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lnpmsg.app import App
from lnpmsg.io.interrupt import run_interruptible
from lnpmsg.node.events import PeerConnected, PeerDisconnected
from lnpmsg.node.identity import NodeKey, load_or_create_key
from lnpmsg.node.node import ConnectError, Node, NodeConfig
from lnpmsg.node.peer import Peer
from lnpmsg.rpc.control_client import (
    ControlCallError,
    ControlClient,
    ControlClientError,
)
from lnpmsg.wire import Features, Message, WireError, message
from lnpmsg.wire.fields import u8_prefixed_bytes, u16_prefixed_bytes

CHAT_TYPE = 32769  # odd: peers without the chat app ignore it
CHAT_FEATURE_BIT = 331  # odd: "optional", peers without it still connect

chat = App("chat", feature_bit=CHAT_FEATURE_BIT)


@chat.message
@message(type=CHAT_TYPE)
@dataclass(frozen=True, slots=True)
class ChatMessage(Message):
    FIELDS = (("nick", u8_prefixed_bytes), ("text", u16_prefixed_bytes))
    nick: bytes
    text: bytes


def say(line: str) -> None:
    print(line, flush=True)


def show(nick: bytes, node_id: bytes, text: bytes) -> None:
    clean = text.decode(errors="replace").replace("\n", " ")
    say(f"<{nick.decode(errors='replace')}@{node_id.hex()[:8]}> {clean}")


@chat.on(ChatMessage)
async def on_chat(peer: Peer, msg: ChatMessage) -> None:
    show(msg.nick, peer.node_id, msg.text)


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, without threads."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                if buffer:
                    yield buffer.decode(errors="replace")
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode(errors="replace").rstrip("\r")


async def repl(send: Callable[[str], Awaitable[int]], connect: Callable[[str], Awaitable[None]], peers: Callable[[], Awaitable[list[str]]]) -> None:
    async for line in stdin_lines():
        if line in ("/quit", "/exit"):
            return
        if line.startswith("/connect "):
            await connect(line.split(None, 1)[1].strip())
        elif line == "/peers":
            listed = await peers()
            say(f"* peers: {', '.join(listed) or 'none'}")
        elif line.strip() and await send(line) == 0:
            say("* nobody to talk to: no connected peer runs chat")


# ------------------------------------------------------------- in-process


async def run_in_process(args: argparse.Namespace) -> None:
    key = load_or_create_key(args.data_dir)[0] if args.data_dir else NodeKey.generate()
    listen = [] if args.no_listen else [args.listen]
    node = Node(key, NodeConfig(listen=listen))
    node.mount(chat)
    nick = args.nick.encode()

    async def send(line: str) -> int:
        return chat.broadcast(ChatMessage(nick=nick, text=line.encode()))

    async def connect(address: str) -> None:
        try:
            peer = await node.connect(address)
        except (ConnectError, ValueError) as exc:
            say(f"* cannot connect: {exc}")
            return
        if not chat.supports(peer):
            say(f"* {peer.node_id.hex()} does not run chat")

    async def peers() -> list[str]:
        return [p.node_id.hex() for p in chat.peers()]

    announcing = trio.CancelScope()

    async def announce() -> None:
        with announcing, node.events.subscribe(lambda e: isinstance(e, PeerConnected | PeerDisconnected)) as events:
            async for event in events:
                word = "connected" if isinstance(event, PeerConnected) else "disconnected"
                say(f"* {word}: {event.node_id.hex()}")  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        nursery.start_soon(announce)
        address = node.addresses[0] if node.addresses else f"{node.node_id.hex()}@(not listening)"
        say(f"* ready: {address}")
        for target in args.connect:
            await connect(target)
        await repl(send, connect, peers)
        announcing.cancel()
        node.stop()


# --------------------------------------------------------------- attached


async def run_attached(args: argparse.Namespace) -> None:
    nick = args.nick.encode()
    async with ControlClient.open(args.attach) as client:
        info = await client.call("getinfo")
        if not Features.from_bytes(bytes.fromhex(info["features"])).supports(CHAT_FEATURE_BIT):
            say(
                f"* the node does not advertise the chat feature (bit {CHAT_FEATURE_BIT}): peers' chat lines will not reach "
                f"it; restart it with --feature {CHAT_FEATURE_BIT} (or feature = [{CHAT_FEATURE_BIT}] in its lnpmsg.toml)"
            )

        async def chat_peers() -> list[str]:
            listed = (await client.call("listpeers"))["peers"]
            return [p["node_id"] for p in listed if Features.from_bytes(bytes.fromhex(p["features"])).supports(CHAT_FEATURE_BIT)]

        async def send(line: str) -> int:
            payload = ChatMessage(nick=nick, text=line.encode()).encode()[2:].hex()
            sent = 0
            for node_id in await chat_peers():
                try:
                    await client.call("sendcustommsg", {"node_id": node_id, "type": CHAT_TYPE, "payload": payload})
                    sent += 1
                except ControlCallError as exc:
                    say(f"* not sent to {node_id}: {exc.message}")
            return sent

        async def connect(address: str) -> None:
            try:
                await client.call("connect", {"address": address})
            except ControlCallError as exc:
                say(f"* cannot connect: {exc.message}")

        async def listen() -> None:
            topics = (f"message.received.{CHAT_TYPE}", "peer.connected", "peer.disconnected")
            async with await client.subscribe(*topics) as events:
                say(f"* attached to {info['node_id']} through {info['control']}")
                ready.set()
                async for event in events:
                    data = event.data
                    if event.topic.startswith("message.received."):
                        try:
                            msg = ChatMessage.decode_payload(bytes.fromhex(data["payload"]))
                        except (WireError, ValueError):
                            continue
                        show(msg.nick, bytes.fromhex(data["node_id"]), msg.text)
                    else:
                        say(f"* {event.topic.split('.', 1)[1]}: {data['node_id']}")

        ready = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await ready.wait()
            await repl(send, connect, chat_peers)
            nursery.cancel_scope.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description="Encrypted chat over lnpmsg (see the module docstring).")
    parser.add_argument("--nick", default=os.environ.get("USER", "anon"))
    parser.add_argument("--attach", type=Path, metavar="DATA_DIR", help="drive the node running with this data dir instead of starting one")
    parser.add_argument("--data-dir", type=Path, help="keep this chat node's key here (default: a new key each run)")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--no-listen", action="store_true")
    parser.add_argument("--connect", action="append", default=[], metavar="NODEID@HOST:PORT")
    args = parser.parse_args()
    try:
        return run_interruptible(run_attached if args.attach else run_in_process, args) or 0
    except ControlClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
