"""An app in its own process, attached to a running node: the full app contract.

::

    lnpmsg node --data-dir /tmp/n1 --listen 127.0.0.1:9801
    python examples/attached_app.py --attach /tmp/n1

The app ("echo") then, through the node's control and event sockets:

- **owns** message type 32902 (even: a peer sending it to a node without
  the app is disconnected, as BOLT 1 says) and echoes every such message
  back to its sender;
- advertises feature bit 343 in the node's ``init`` (new connections see it;
  ``lnpmsg listpeers`` on the other side names it ``echo``);
- **serves** the peer RPC method ``shout`` (``{"text": ...}`` -> upper case);
- **subscribes**, for every peer that becomes ready and runs pub/sub, to its
  ``news`` topic, and prints what it publishes;
- prints the lifecycle: ``peer_ready``, ``peer_gone`` (with the reason).

Output lines (for people and for tests): ``* attached as echo``, ``ready
NODEID``, ``echo NODEID TEXT``, ``shout NODEID TEXT``, ``news NODEID SEQ
TEXT``, ``gone NODEID REASON``, ``ended NODEID TOPIC REASON``. Ctrl-C
detaches (the node drops the app's types and feature bit at once; a killed
process is detached when its lease runs out).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from lnpmsg.rpc.attached_client import AttachedAppClient
from lnpmsg.rpc.control_client import ControlCallError, ControlClientError
from lnpmsg.wire import Features

ECHO_TYPE = 32902  # even: only nodes running the app may receive it
ECHO_FEATURE_BIT = 343  # odd: optional
PUBSUB_FEATURE_BIT = 329


def say(line: str) -> None:
    print(line, flush=True)


async def run(data_dir: Path, name: str) -> None:
    async with AttachedAppClient.attach(data_dir, name, types=[ECHO_TYPE], feature_bits=[ECHO_FEATURE_BIT]) as app:
        try:
            await app.serve("shout")
        except ControlCallError as exc:
            say(f"* not serving shout: {exc.message}")
        say(f"* attached as {name}")
        async for event in app.events():
            data = event.data
            if event.kind == "peer_ready":
                node_id = data["node_id"]
                say(f"ready {node_id}")
                if Features.from_bytes(bytes.fromhex(data["features"])).supports(PUBSUB_FEATURE_BIT):
                    try:
                        await app.subscribe(node_id, "news")
                    except ControlCallError as exc:
                        say(f"* no news from {node_id}: {exc.message}")
            elif event.kind == "message":
                payload = bytes.fromhex(data["payload"])
                say(f"echo {data['node_id']} {payload.decode(errors='replace')}")
                try:
                    await app.send(data["node_id"], ECHO_TYPE, payload)
                except ControlCallError as exc:
                    say(f"* echo not sent: {exc.message}")
            elif event.kind == "rpc_request":
                params = data["params"] if isinstance(data["params"], dict) else {}
                text = params.get("text")
                if isinstance(text, str):
                    say(f"shout {data['node_id']} {text}")
                    await app.reply(data["request"], text.upper())
                else:
                    await app.reply(data["request"], error="shout takes {\"text\": string}", code=100)
            elif event.kind == "publication":
                say(f"news {data['node_id']} {data['seq']} {bytes.fromhex(data['data']).decode(errors='replace')}")
            elif event.kind == "peer_gone":
                say(f"gone {data['node_id']} {data['reason']}")
            elif event.kind == "subscription_ended":
                say(f"ended {data['node_id']} {data['topic']} {data['reason']}")
            elif event.kind in ("stopping", "detached"):
                say(f"* {event.kind}")
                return


def main() -> int:
    parser = argparse.ArgumentParser(description="An app attached to a running node (see the module docstring).")
    parser.add_argument("--attach", type=Path, required=True, metavar="DATA_DIR", help="the data dir of the running node")
    parser.add_argument("--name", default="echo", help="the app's name on the node (default: echo)")
    args = parser.parse_args()
    try:
        trio.run(run, args.attach, args.name)
    except BaseException as exc:  # trio wraps what a task raised in exception groups
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if isinstance(exc, KeyboardInterrupt):
            return 0  # Ctrl-C: detached on the way out
        if isinstance(exc, ControlClientError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
