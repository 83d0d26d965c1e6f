"""A key-value store served to peers over peer RPC.

::

    python examples/kvstore_server.py --listen 127.0.0.1:9802

prints one JSON line, ``{"node_id": ..., "address": "NODEID@127.0.0.1:9802"}``,
then serves until Ctrl-C (exit 130, quietly) or, with ``--until-eof``, the
end of stdin (exit 0). Any lnpmsg
node with the RPC app can call it (see ``kvstore_client.py``, or from a
running node: ``lnpmsg call rpc.call '{"node_id": ..., "method": "kv.get",
"params": {"key": "a"}}'``).

Methods (params are checked against the type hints below):

- ``kv.put(key: str, value: str) -> {"created": bool}``
- ``kv.get(key: str) -> str`` (error code 404 when missing)
- ``kv.delete(key: str) -> {"deleted": bool}``
- ``kv.list(prefix: str = "") -> [keys]``

Limits keep one client from filling memory: keys up to 256 bytes, values up
to 16 KiB, at most 10,000 keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lnpmsg.io.interrupt import run_interruptible
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.peer import Peer
from lnpmsg.rpc.peer import PeerRpc, RpcFault

MAX_KEY = 256
MAX_VALUE = 16 * 1024
MAX_KEYS = 10_000
NOT_FOUND = 404  # app error codes are >= 100
TOO_LARGE = 413


def build_app(store: dict[str, str]) -> PeerRpc:
    """The RPC app serving ``store``."""
    rpc = PeerRpc()

    @rpc.method("kv.put")
    async def put(peer: Peer, key: str, value: str) -> dict[str, bool]:
        """Store value under key."""
        if len(key.encode()) > MAX_KEY or len(value.encode()) > MAX_VALUE:
            raise RpcFault(f"keys are at most {MAX_KEY} bytes, values {MAX_VALUE}", TOO_LARGE)
        if key not in store and len(store) >= MAX_KEYS:
            raise RpcFault(f"the store is full ({MAX_KEYS} keys)", TOO_LARGE)
        created = key not in store
        store[key] = value
        return {"created": created}

    @rpc.method("kv.get")
    async def get(peer: Peer, key: str) -> str:
        """The value under key."""
        try:
            return store[key]
        except KeyError:
            raise RpcFault(f"no key {key!r}", NOT_FOUND) from None

    @rpc.method("kv.delete")
    async def delete(peer: Peer, key: str) -> dict[str, bool]:
        """Remove key."""
        return {"deleted": store.pop(key, None) is not None}

    @rpc.method("kv.list")
    async def list_keys(peer: Peer, prefix: str = "") -> list[str]:
        """Keys starting with prefix, sorted."""
        return sorted(k for k in store if k.startswith(prefix))

    return rpc


async def serve(args: argparse.Namespace) -> None:
    node = Node(NodeKey.generate(), NodeConfig(listen=[args.listen]))
    node.mount(build_app({}))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        address = node.addresses[0]
        print(json.dumps({"node_id": node.node_id.hex(), "address": address}), flush=True)
        if args.until_eof:
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            async with stdin:
                while await stdin.receive_some(4096):
                    pass
            node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="A key-value store served over lnpmsg peer RPC.")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--until-eof", action="store_true", help="stop when stdin closes (for scripts and tests)")
    args = parser.parse_args()
    return run_interruptible(serve, args) or 0


if __name__ == "__main__":
    sys.exit(main())
