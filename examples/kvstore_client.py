"""The key-value store's client: one lnpmsg node that dials the server and calls it.

::

    python examples/kvstore_client.py NODEID@127.0.0.1:9802 put colour blue
    python examples/kvstore_client.py NODEID@127.0.0.1:9802 get colour
    python examples/kvstore_client.py NODEID@127.0.0.1:9802 list
    python examples/kvstore_client.py NODEID@127.0.0.1:9802 delete colour
    printf 'put a 1\\nget a\\n' | python examples/kvstore_client.py NODEID@... -

Each command prints one JSON line: ``{"result": ...}``, or ``{"error":
{"code": N, "message": ...}}`` when the server refused it (e.g. code 404 for
a missing key). With ``-`` the commands come from stdin, one per line, over
one connection. The exit status is 1 if any command failed.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lnpmsg.io.interrupt import run_interruptible
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import ConnectError, Node, NodeConfig
from lnpmsg.rpc.peer import PeerRpc, RemoteError, RpcError

USAGE = "usage: kvstore_client.py NODEID@HOST:PORT (put KEY VALUE | get KEY | delete KEY | list [PREFIX] | -)"

COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "put": ("kv.put", ("key", "value")),
    "get": ("kv.get", ("key",)),
    "delete": ("kv.delete", ("key",)),
    "list": ("kv.list", ("prefix",)),
}


def parse(words: list[str]) -> tuple[str, dict[str, Any]]:
    if not words or words[0] not in COMMANDS:
        raise ValueError(f"unknown command {' '.join(words)!r}; {USAGE}")
    method, names = COMMANDS[words[0]]
    values = words[1:]
    if len(values) > len(names) or (words[0] != "list" and len(values) != len(names)):
        raise ValueError(f"{words[0]} takes {' '.join(n.upper() for n in names)}")
    return method, dict(zip(names, values))


async def run(address: str, commands: list[list[str]]) -> int:
    node = Node(NodeKey.generate(), NodeConfig(listen=[]))
    rpc = node.mount(PeerRpc())
    failed = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            peer = await node.connect(address)
        except (ConnectError, ValueError) as exc:
            print(json.dumps({"error": {"message": f"cannot connect: {exc}"}}), flush=True)
            node.stop()
            return 1
        for words in commands:
            try:
                method, params = parse(words)
                out: dict[str, Any] = {"result": await rpc.call(peer, method, params, timeout=10)}
            except RemoteError as exc:
                out = {"error": {"code": exc.code, "message": exc.message}}
            except (RpcError, ValueError) as exc:
                out = {"error": {"message": str(exc)}}
            failed += "error" in out
            print(json.dumps(out), flush=True)
        node.stop()
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) < 3:
        print(USAGE, file=sys.stderr)
        return 2
    address = sys.argv[1]
    if sys.argv[2:] == ["-"]:
        commands = [shlex.split(line) for line in sys.stdin if line.strip()]
    else:
        commands = [sys.argv[2:]]
    return run_interruptible(run, address, commands)  # 130 after Ctrl-C, without a traceback


if __name__ == "__main__":
    sys.exit(main())
