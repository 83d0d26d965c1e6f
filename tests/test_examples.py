"""The examples run as documented: separate processes, real sockets.

- chat: two in-process chat nodes, plus a chat attached from its own process
  to a running ``lnpmsg node`` through the control and event sockets;
- kvstore: the RPC server and its client;
- Ctrl-C ends each example quietly (exit 130); the gossip watcher's demo
  finds its data from anywhere, or says where it looked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: a hang guard per awaited line (processes start in ~1 s; the machine may be busy)
LINE_TIMEOUT = 30.0


class Proc:
    """A child process whose merged stdout/stderr is read line by line."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.seen: list[str] = []
        self._buffer = b""

    async def line(self, predicate: Callable[[str], bool] = lambda line: True, timeout: float = LINE_TIMEOUT) -> str:
        """The next line (from now) that matches ``predicate``."""
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while True:
                while b"\n" in self._buffer:
                    raw, self._buffer = self._buffer.split(b"\n", 1)
                    text = raw.decode(errors="replace")
                    self.seen.append(text)
                    if predicate(text):
                        return text
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise EOFError(f"{self.name} exited: {self.seen}")
                self._buffer += chunk

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")

    async def wait(self, timeout: float = LINE_TIMEOUT) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


async def saw(proc: Proc, text: str) -> None:
    """Wait until ``proc`` has printed the line ``text`` (now or earlier)."""
    if text not in proc.seen:
        await proc.line(lambda line: line == text)


@asynccontextmanager
async def spawned() -> AsyncIterator[Callable[..., trio.Process]]:
    procs: list[Proc] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}

    async def spawn(name: str, *args: str, cwd: Path = ROOT) -> Proc:
        process = await trio.lowlevel.open_process(
            [sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env
        )
        proc = Proc(name, process)
        procs.append(proc)
        return proc

    try:
        yield spawn  # type: ignore[misc]
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name}:", *proc.seen, sep="\n  ")
        raise
    finally:
        for proc in procs:
            if proc.process.returncode is None:
                proc.process.kill()
            await proc.process.wait()


async def test_chat_between_nodes_and_from_a_process_attached_to_a_running_node(data_dir):
    chat = str(EXAMPLES / "chat.py")
    async with spawned() as spawn:
        node = await spawn("node", "-m", "lnpmsg.cli", "node", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--json", "--log-level", "warning", "--feature", "331")
        bob = await spawn("bob", chat, "--nick", "bob")
        alice = await spawn("alice", chat, "--nick", "alice", "--no-listen")
        bob_address = (await bob.line(lambda l: l.startswith("* ready: "))).split(": ", 1)[1]
        bob_id = bob_address.split("@")[0]
        alice_id = (await alice.line(lambda l: l.startswith("* ready: "))).split(": ", 1)[1].split("@")[0]
        info = json.loads(await node.line(lambda l: l.startswith("{")))
        carol = await spawn("carol", chat, "--attach", str(data_dir), "--nick", "carol")
        await carol.line(lambda l: l.startswith(f"* attached to {info['node_id']}"))
        # alice dials bob herself; carol has the running node dial bob over the control API
        await alice.send(f"/connect {bob_address}")
        await carol.send(f"/connect {bob_address}")
        await saw(alice, f"* connected: {bob_id}")
        await saw(carol, f"* connected: {bob_id}")
        await saw(bob, f"* connected: {info['node_id']}")
        await saw(bob, f"* connected: {alice_id}")

        await bob.send("hello all")
        await alice.line(lambda l: l == f"<bob@{bob_id[:8]}> hello all")
        await carol.line(lambda l: l == f"<bob@{bob_id[:8]}> hello all")
        await carol.send("hi from carol")
        await bob.line(lambda l: l == f"<carol@{info['node_id'][:8]}> hi from carol")
        await alice.send("hi from alice")
        await bob.line(lambda l: l == f"<alice@{alice_id[:8]}> hi from alice")
        await carol.send("/peers")
        assert (await carol.line(lambda l: l.startswith("* peers: "))) == f"* peers: {bob_id}"

        for proc in (alice, bob, carol):
            await proc.send("/quit")
        for proc in (alice, bob, carol):
            assert await proc.wait() == 0
        stop = await spawn("stop", "-m", "lnpmsg.cli", "stop", "--data-dir", str(data_dir))
        assert await stop.line() == "node stopped"
        assert await node.wait() == 0 and await stop.wait() == 0
    assert not (data_dir / "control.sock").exists()


async def test_kvstore_server_and_client():
    async with spawned() as spawn:
        server = await spawn("server", str(EXAMPLES / "kvstore_server.py"), "--until-eof")
        address = json.loads(await server.line(lambda l: l.startswith("{")))["address"]
        client = str(EXAMPLES / "kvstore_client.py")
        single = await spawn("put", client, address, "put", "colour", "blue")
        assert json.loads(await single.line()) == {"result": {"created": True}}
        assert await single.wait() == 0
        batch = await spawn("batch", client, address, "-")
        assert batch.process.stdin is not None
        await batch.send('get colour\nput "two words" "a value"\nlist\ndelete colour\nget colour\nlist t')
        await batch.process.stdin.aclose()
        results = [json.loads(await batch.line()) for _ in range(6)]
        assert results == [
            {"result": "blue"},
            {"result": {"created": True}},
            {"result": ["colour", "two words"]},
            {"result": {"deleted": True}},
            {"error": {"code": 404, "message": "no key 'colour'"}},
            {"result": ["two words"]},
        ]
        assert await batch.wait() == 1  # one command failed
        assert server.process.stdin is not None
        await server.process.stdin.aclose()
        assert await server.wait() == 0


async def interrupted(proc: Proc) -> tuple[int, list[str]]:
    """Ctrl-C to ``proc``: its exit status and every line it printed."""
    proc.process.send_signal(signal.SIGINT)
    code = await proc.wait()
    with contextlib.suppress(EOFError):
        await proc.line(lambda line: False)  # drain what is left
    return code, proc.seen


async def test_ctrl_c_ends_the_examples_quietly_with_130(data_dir):
    async with spawned() as spawn:
        chat = await spawn("chat", str(EXAMPLES / "chat.py"), "--nick", "x")
        server = await spawn("kvstore", str(EXAMPLES / "kvstore_server.py"))
        # run from elsewhere: the demo finds its data beside the checkout, not through the current directory
        watcher = await spawn("gossip_watch", str(EXAMPLES / "gossip_watch.py"), "--demo", "--seconds", "600", cwd=data_dir)
        await chat.line(lambda l: l.startswith("* ready: "))
        await server.line(lambda l: l.startswith("{"))
        await watcher.line(lambda l: "channels" in l and "| sync" in l)
        for proc in (chat, server, watcher):
            code, lines = await interrupted(proc)
            assert code == 130, (proc.name, lines)
            assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines), (proc.name, lines)


async def test_gossip_watch_demo_says_what_data_it_misses(data_dir):
    async with spawned() as spawn:
        watcher = await spawn("gossip_watch", str(EXAMPLES / "gossip_watch.py"), "--demo", "--gossip-data", str(data_dir / "none"))
        assert await watcher.wait() == 2
        with contextlib.suppress(EOFError):
            await watcher.line(lambda line: False)
    text = "\n".join(watcher.seen)
    assert "the demo needs gossip_store-part1.xz and gossip_store-part2.xz" in text and str(data_dir / "none") in text
    assert "--gossip-data DIR" in text and "Traceback" not in text


async def test_attached_chat_says_when_the_node_lacks_the_chat_feature(data_dir):
    async with spawned() as spawn:
        node = await spawn("node", "-m", "lnpmsg.cli", "node", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0", "--json", "--no-gossip")
        await node.line(lambda l: l.startswith("{"))
        carol = await spawn("carol", str(EXAMPLES / "chat.py"), "--attach", str(data_dir), "--nick", "carol")
        warning = await carol.line(lambda l: "chat feature" in l)
        assert "restart it with --feature 331" in warning
        await carol.send("/quit")
        assert await carol.wait() == 0
