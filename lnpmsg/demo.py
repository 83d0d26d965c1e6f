"""``lnpmsg demo``: two nodes in one process on one embedded regtest chain.

Both nodes come out of the composition root (:func:`~lnpmsg.runtime.build.build_node`)
like ``lnpmsg node``'s, sharing one open chain (``NodeSettings.chain_source``);
node B also mounts a small app that receives the demo's custom message.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import trio

from lnpmsg.app import App
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.runtime.build import build_node
from lnpmsg.runtime.settings import NodeSettings
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wire import Message, message
from lnpmsg.wire.fields import rest_bytes

if TYPE_CHECKING:
    from lnpmsg.node.node import Node
    from lnpmsg.node.peer import Peer

__all__ = ["DEMO_CUSTOM_TYPE", "DEMO_FAUCET_SAT", "DEMO_WITHDRAW_SAT", "DemoText", "demo_app", "run_demo"]

#: the demo's custom message: odd, so a peer without it ignores it (BOLT 1)
DEMO_CUSTOM_TYPE = 32769
#: seconds any one demo step may take before the demo gives up
DEMO_STEP_TIMEOUT = 30.0
DEMO_FAUCET_SAT = 1_000_000
DEMO_WITHDRAW_SAT = 250_000


@message(type=DEMO_CUSTOM_TYPE)
@dataclass(frozen=True, slots=True)
class DemoText(Message):
    """The demo's custom message: the payload is the text."""

    FIELDS = (("text", rest_bytes),)
    text: bytes


def demo_app(received: trio.MemorySendChannel[bytes]) -> App:
    """An app that puts every :class:`DemoText` it receives into ``received``."""
    app = App("demo")
    app.message(DemoText)

    @app.on(DemoText)
    async def on_text(peer: Peer, msg: DemoText) -> None:
        received.send_nowait(msg.text)

    return app


def _node_settings(data_dir: Path, source: EmbeddedChainSource, app: App | None) -> NodeSettings:
    """One demo node: a free loopback port, the shared chain, no gossip and no control socket."""
    return NodeSettings(
        data_dir=data_dir,
        listen=["127.0.0.1:0"],
        network="regtest",
        chain_source=source,
        gossip=False,
        control=False,
        apps=[app] if app is not None else [],
    )


class _DemoFailed(Exception):
    pass


class _Steps:
    """Runs the demo's steps: times each, prints its progress (or collects it for --json)."""

    def __init__(self, total: int, quiet: bool, write: Callable[[str], None]) -> None:
        self.total = total
        self.quiet = quiet
        self.write = write
        self.done: list[dict[str, Any]] = []

    @contextmanager
    def step(self, title: str) -> Iterator[dict[str, Any]]:
        number = len(self.done) + 1
        if not self.quiet:
            self.write(f"[{number}/{self.total}] {title} ...")
        record: dict[str, Any] = {"step": number, "title": title}
        started = time.perf_counter()
        try:
            with trio.fail_after(DEMO_STEP_TIMEOUT):
                yield record
        except trio.TooSlowError:
            raise _DemoFailed(f"{title}: no result within {DEMO_STEP_TIMEOUT:g} s") from None
        except Exception as exc:
            raise _DemoFailed(f"{title}: {exc}") from exc
        record["seconds"] = round(time.perf_counter() - started, 3)
        self.done.append(record)
        if not self.quiet:
            note = record.get("note")
            self.write(f"      ok ({record['seconds']:.2f} s){': ' + note if note else ''}")


async def run_demo(data_dir: Path | None = None, *, json_output: bool = False, write: Callable[[str], None] = print) -> int:
    """``lnpmsg demo``: two nodes in this process, one embedded regtest chain.

    Connects them over TCP, pings, sends a custom message, mines 101 blocks,
    funds node A's wallet from the faucet, withdraws to node B and mines
    that. Everything lives in ``data_dir`` (default: a temporary dir,
    removed afterwards). Prints progress and a summary (or one JSON document
    with ``json_output``). Returns the exit status: 0 when every step worked.
    """
    temporary = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="lnpmsg-demo-")) if data_dir is None else Path(data_dir).expanduser()
    steps = _Steps(8, json_output, write)
    summary: dict[str, Any] = {"data_dir": str(root), "temporary": temporary}
    error: str | None = None
    started = time.perf_counter()
    try:
        await _demo(root, steps, summary)
    except _DemoFailed as exc:
        error = str(exc)
    except (ChainError, OSError) as exc:  # the chain dir: locked by a running node, not writable...
        error = f"cannot open the chain in {root / 'chain'}: {exc}"
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if json_output:
        document: dict[str, Any] = {"ok": error is None, "steps": steps.done, "summary": summary}
        if error is not None:
            document["error"] = error
        write(json.dumps(document))
    elif error is not None:
        write(f"demo failed: {error}")
    else:
        _write_summary(summary, write)
    return 0 if error is None else 1


def _write_summary(s: dict[str, Any], write: Callable[[str], None]) -> None:
    write("")
    write(f"demo finished in {s['seconds']:.2f} s")
    write(f"  node A:   {s['node_a']}")
    write(f"  node B:   {s['node_b']}")
    write(f"  link:     TCP {s['link']}, ping {s['ping_ms']:.3f} ms, custom message type {DEMO_CUSTOM_TYPE} delivered")
    write(f"  chain:    embedded regtest, height {s['height']}, tip {s['tip']}")
    write(f"  wallet A: {s['balance_a_sat']} sat (funded with {DEMO_FAUCET_SAT} from the faucet)")
    write(f"  wallet B: {s['balance_b_sat']} sat (withdrawal {s['withdraw_txid']}, fee {s['fee_sat']} sat)")
    write(f"  data:     {s['data_dir']}{' (removed)' if s['temporary'] else ''}")


async def _demo(root: Path, steps: _Steps, summary: dict[str, Any]) -> None:
    """Run the steps; raises _DemoFailed. The nodes stop before the chain closes."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    nodes: list[Node] = []
    failure: _DemoFailed | None = None
    async with EmbeddedChainSource.open(root / "chain") as source, trio.open_nursery() as nursery:
        try:
            await _demo_steps(root, source, nursery, nodes, steps, summary)
        except _DemoFailed as exc:
            failure = exc
        finally:
            for node in nodes:
                node.stop()
    if failure is not None:
        raise failure


async def _demo_steps(
    root: Path,
    source: EmbeddedChainSource,
    nursery: trio.Nursery,
    nodes: list[Node],
    steps: _Steps,
    summary: dict[str, Any],
) -> None:
    received_send, received = trio.open_memory_channel[bytes](1)

    with steps.step("starting two nodes on one embedded regtest chain") as record:
        built = [build_node(_node_settings(root / name, source, demo_app(received_send) if name == "b" else None)) for name in ("a", "b")]
        for node in built:
            nodes.append(node.node)
            await node.start(nursery)
        a, b = nodes
        chain_a, chain_b = (cast(ChainApp, node.app("chain")) for node in built)
        summary["node_a"] = a.addresses[0]
        summary["node_b"] = b.addresses[0]
        record["note"] = f"A {a.node_id.hex()[:16]}..., B {b.node_id.hex()[:16]}..., chain height {(await source.tip()).height}"
    with steps.step("connecting A to B over TCP (BOLT-8 handshake, init)") as record:
        peer = await a.connect(b.addresses[0])
        summary["link"] = peer.address
        record["note"] = f"{peer.transport_kind} {peer.address}"
    with steps.step("ping A -> B") as record:
        rtt = await peer.ping()
        summary["ping_ms"] = round(rtt * 1000, 3)
        record["note"] = f"pong in {rtt * 1000:.3f} ms"
    with steps.step(f"custom message (type {DEMO_CUSTOM_TYPE}) A -> B") as record:
        text = b"hello from A"
        await peer.send(DemoText(text=text))
        payload = await received.receive()
        if payload != text:
            raise _DemoFailed(f"B received {payload!r}, not {text!r}")
        record["note"] = f"B received {payload.decode()!r}"
    with steps.step("mining 101 blocks (the faucet's first coinbase matures)") as record:
        mined = await chain_a.mine(101)
        record["note"] = f"height {mined['height']}"
    with steps.step(f"faucet pays {DEMO_FAUCET_SAT} sat to A's wallet, one block confirms it") as record:
        paid = await chain_a.faucet(DEMO_FAUCET_SAT)
        funds = await chain_a.listfunds()
        summary["faucet_txid"] = paid["txid"]
        record["note"] = f"A has {funds['spendable_sat']} sat spendable"
    with steps.step(f"A withdraws {DEMO_WITHDRAW_SAT} sat to a new address of B's wallet") as record:
        address = (await chain_b.newaddr())["address"]
        sent = await chain_a.withdraw(address, DEMO_WITHDRAW_SAT)
        summary["withdraw_txid"] = sent["txid"]
        summary["fee_sat"] = sent["fee_sat"]
        record["note"] = f"txid {sent['txid'][:16]}..., fee {sent['fee_sat']} sat"
    with steps.step("mining a block; both wallets see the payment") as record:
        mined = await chain_a.mine(1)
        funds_a, funds_b = await chain_a.listfunds(), await chain_b.listfunds()
        if funds_b["spendable_sat"] < DEMO_WITHDRAW_SAT:
            raise _DemoFailed(f"B's wallet holds {funds_b['spendable_sat']} sat, expected at least {DEMO_WITHDRAW_SAT}")
        summary.update(
            height=mined["height"],
            tip=mined["tip"],
            balance_a_sat=funds_a["spendable_sat"],
            balance_b_sat=funds_b["spendable_sat"],
        )
        record["note"] = f"height {mined['height']}: A {funds_a['spendable_sat']} sat, B {funds_b['spendable_sat']} sat"
