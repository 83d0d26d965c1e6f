"""The channel app on two nodes in memory, on one embedded regtest chain.

Each node has a wallet on the shared chain (the chain app) and the channel
app; the link is the in-memory transport. Open (funded and broadcast by the
wallet, confirmed by mining), HTLCs both ways (a trimmed one too),
reestablish after a disconnection, a restart of one node from its store, and
a cooperative close started by each side.

These run on trio's real clock: the embedded chain, the wallet and the
channel store work in worker threads, and a mock clock that jumps whenever
every task waits would jump while a thread works (a 50 s timeout would pass
during one fsync). The waits are for states, never for durations.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.app import ChannelEvent, ChannelsApp
from lnpmsg.channels.commands import _print_list as print_channels
from lnpmsg.channels.manager import ManagedChannel
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels.state import Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork, record_events
from lnpmsg.testing.nodes import running
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError

FUNDING_SAT = 1_000_000
PUSH_MSAT = 200_000_000
TIMEOUT = 60.0


def channels(node: Node) -> ChannelsApp:
    return node.apps["channels"]  # type: ignore[return-value]


def only_channel(node: Node) -> ManagedChannel:
    manager = channels(node).manager
    assert manager is not None
    (channel,) = [c for c in manager.channels.values() if c.phase is not Phase.NEW]
    return channel


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; a timeout fails the test naming ``what`` it waited for."""
    with trio.move_on_after(TIMEOUT):
        while not condition():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {TIMEOUT:g} s waiting for {what}")


def withhold(node: Node, kind: type) -> Callable[[], None]:
    """The node's messages of ``kind`` never leave from now on (as if lost on the way); returns what
    lets them leave again."""
    app = channels(node)
    send = app.send

    async def send_but_those(peer_id: bytes, msg: object) -> None:
        if not isinstance(msg, kind):
            await send(peer_id, msg)

    def release() -> None:
        app.send = send  # type: ignore[method-assign]

    app.send = send_but_those  # type: ignore[method-assign]
    return release


def settled(node: Node) -> bool:
    """Nothing pending: both commitments hold the same HTLCs and no update waits."""
    s = only_channel(node).core.state
    return (
        s.phase is Phase.NORMAL and s.connected and not s.awaiting_reestablish and not s.local_changes.all()
        and not s.remote_changes.all() and s.remote_next_commit is None
    )  # fmt: skip


def balances(node: Node) -> tuple[int, int, int]:
    """(to_local, to_remote, HTLC count) of the node's latest local commitment."""
    commit = only_channel(node).core.state.local_commit
    assert commit is not None
    return commit.spec.to_local_msat, commit.spec.to_remote_msat, len(commit.spec.htlcs)


class Pair:
    """Alice and Bob, their chain apps on one source, their channel apps."""

    def __init__(self, source: EmbeddedChainSource, tmp: Path, network: MemoryNetwork,
                 policies: dict[str, OpeningPolicy] | None = None) -> None:  # fmt: skip
        self.source = source
        self.tmp = tmp
        self.network = network
        self.keys = {"alice": NodeKey.generate(), "bob": NodeKey.generate()}
        #: each node's opening policy by name (the default's when not named)
        self.policies = policies or {}

    def node(self, name: str, listen: bool, channels_dir: Path | None = None) -> Node:
        config = ChannelConfig(minimum_depth=2)
        apps: list[Any] = [
            ChainApp(self.tmp / name / "wallet", source=self.source),
            ChannelsApp(channels_dir or self.tmp / name / "channels", config=config, policy=self.policies.get(name)),
        ]
        node = Node(self.keys[name], NodeConfig(listen=["mem://"] if listen else [], network="regtest"),
                    transports={"mem": self.network.transport()})  # fmt: skip
        for app in apps:
            node.mount(app)
        return node

    async def fund_wallet(self, node: Node, amount_sat: int) -> None:
        chain = node.apps["chain"]
        await self.source.faucet(chain.wallet.new_address(), amount_sat)  # type: ignore[attr-defined]
        await self.source.mine(1)
        await chain.wallet.sync()  # type: ignore[attr-defined]

    async def open(self, alice: Node, bob: Node) -> ManagedChannel:
        result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, push_msat=PUSH_MSAT)
        assert result["state"] == "await_ready" and result["capacity_sat"] == FUNDING_SAT
        # the funding is in the mempool: mine it to the channel's depth
        await self.source.mine(2)
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
        return only_channel(alice)

    async def fund_and_connect(self, alice: Node, bob: Node) -> None:
        """Alice's wallet funded for a channel; Bob connected to her."""
        await self.fund_wallet(alice, 3_000_000)
        await bob.connect(alice.addresses[0])

    async def fund_connect_open(self, alice: Node, bob: Node) -> ManagedChannel:
        """Alice funded, Bob connected to her, and her channel to him ready both ways."""
        await self.fund_and_connect(alice, bob)
        return await self.open(alice, bob)


@asynccontextmanager
async def chain(tmp: Path) -> AsyncIterator[EmbeddedChainSource]:
    async with EmbeddedChainSource.open(tmp / "chain") as source:
        await source.mine(101)
        yield source


@asynccontextmanager
async def running_pair(tmp: Path) -> AsyncIterator[tuple[EmbeddedChainSource, Pair, Node, Node]]:
    """A fresh chain (``chain``) and a Pair on it in memory: (source, pair, alice, bob), Alice
    listening, both running."""
    async with chain(tmp) as source:
        pair = Pair(source, tmp, MemoryNetwork())
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            yield source, pair, alice, bob


async def pay(sender: Node, receiver: Node, amount_msat: int) -> None:
    """An HTLC from sender to receiver, committed, then fulfilled by the receiver with its preimage."""
    channel_id = only_channel(sender).channel_id.hex()
    added = await channels(sender).dev_addhtlc(channel_id, amount_msat)
    assert sha256(bytes.fromhex(added["preimage"])).hex() == added["payment_hash"]
    await wait_until(lambda: settled(sender) and settled(receiver) and balances(receiver)[2] == 1, "HTLC committed")
    (htlc,) = only_channel(receiver).core.state.local_commit.spec.htlcs  # type: ignore[union-attr]
    assert htlc.incoming and htlc.add.amount_msat == amount_msat
    await channels(receiver).dev_fulfill(channel_id, htlc.add.id, added["preimage"])
    await wait_until(lambda: settled(sender) and settled(receiver) and balances(receiver)[2] == 0, "HTLC settled")


@pytest.mark.trio
async def test_open_htlcs_both_ways_reestablish_and_close_by_the_fundee(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        await pair.fund_wallet(alice, 3_000_000)
        with record_events(alice) as alice_events:
            await bob.connect(alice.addresses[0])
            await pair.open(alice, bob)
            ready = await alice_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.ready")
        scid = only_channel(alice).core.state.short_channel_id
        assert scid and scid == only_channel(bob).core.state.short_channel_id
        assert ready.short_channel_id == (await channels(bob).listchannels())["channels"][0]["short_channel_id"]
        # what 'lnpmsg listchannels' prints for it
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            print_channels(await channels(alice).listchannels())
        first = printed.getvalue().splitlines()[0]
        assert first.startswith(only_channel(alice).channel_id.hex()) and "normal" in first and ready.short_channel_id in first
        alice_msat = FUNDING_SAT * 1000 - PUSH_MSAT
        assert balances(alice)[:2] == (alice_msat, PUSH_MSAT)

        await pay(alice, bob, 50_000_000)
        await pay(bob, alice, 20_000_000)
        await pay(bob, alice, 100_000)  # 100 sat: under both dust limits, a trimmed HTLC
        alice_msat += -50_000_000 + 20_000_000 + 100_000
        assert balances(alice)[:2] == (alice_msat, FUNDING_SAT * 1000 - alice_msat)
        assert balances(bob)[:2] == (FUNDING_SAT * 1000 - alice_msat, alice_msat)

        # An HTLC in flight across a disconnection: reestablish, then it settles.
        channel_id = only_channel(alice).channel_id.hex()
        added = await channels(alice).dev_addhtlc(channel_id, 7_000_000)
        await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 1, "HTLC committed")
        await alice.disconnect(bob.node_id, "test: drop the link")
        await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: settled(alice) and settled(bob), "reestablished")
        assert balances(bob)[2] == 1
        await channels(bob).dev_fulfill(channel_id, added["htlc_id"], added["preimage"])
        await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 0, "settled after reconnect")
        alice_msat -= 7_000_000
        assert balances(alice)[:2] == (alice_msat, FUNDING_SAT * 1000 - alice_msat)

        # Bob (the fundee) closes; both sign one closing transaction, which pays both wallets.
        with record_events(alice) as alice_events:
            result = await channels(bob).closechannel(channel_id)
            assert result["state"] == "closed"
            await wait_until(lambda: only_channel(alice).phase is Phase.CLOSED, "alice closed")
            await source.mine(1)
            spent = await alice_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.spent")
            # inside the block: Alice publishes channel.closed once her own broadcast of the
            # closing transaction returns, which on a loaded machine can be after it is mined
            closed = await alice_events.wait_for(lambda e: isinstance(e, ChannelEvent) and e.topic == "channel.closed")
        assert spent.txid == closed.txid
        bob_wallet = bob.apps["chain"].wallet  # type: ignore[attr-defined]
        await bob_wallet.sync()
        assert bob_wallet.balances().confirmed_sat == (FUNDING_SAT * 1000 - alice_msat) // 1000


@pytest.mark.trio
async def test_restart_replays_the_store_and_the_funder_closes(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, network)
        alice = pair.node("alice", True)
        async with running(alice):
            bob = pair.node("bob", False)
            async with running(bob):
                await pair.fund_connect_open(alice, bob)
                await pay(alice, bob, 30_000_000)
                channel_id = only_channel(alice).channel_id.hex()
                added = await channels(bob).dev_addhtlc(channel_id, 4_000_000)
                await wait_until(lambda: settled(alice) and settled(bob) and balances(alice)[2] == 1, "HTLC committed")
                before = balances(bob)
            # Bob stopped: a new Bob from the same store and key.
            await wait_until(lambda: not only_channel(alice).core.state.connected, "alice sees bob go")
            bob = pair.node("bob", False)
            async with running(bob):
                assert balances(bob) == before
                assert not only_channel(bob).core.state.connected
                await bob.connect(alice.addresses[0])
                await wait_until(lambda: settled(alice) and settled(bob), "reestablished after restart")
                assert balances(bob) == before
                await channels(alice).dev_fulfill(channel_id, added["htlc_id"], added["preimage"])
                await wait_until(lambda: settled(alice) and settled(bob) and balances(bob)[2] == 0, "settled")
                result = await channels(alice).closechannel(channel_id)
                assert result["state"] == "closed"
                await wait_until(lambda: only_channel(bob).phase is Phase.CLOSED, "bob closed")
                mempool = await trio.to_thread.run_sync(source.core.mempool_txids)
                assert [txid[::-1].hex() for txid in mempool] == [result["closing_txid"]]  # nothing else broadcast


@pytest.mark.trio
async def test_bad_commands_get_clear_errors_and_change_nothing(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as (source, pair, alice, bob):
        app = channels(alice)
        with pytest.raises(ParamsError, match="not connected|no ready peer|No ready peer"):
            await app.fundchannel(bob.node_id.hex(), FUNDING_SAT)
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: bob.node_id in alice.peers, "connected")
        with pytest.raises(ParamsError, match="amount_sat"):
            await app.fundchannel(bob.node_id.hex(), -5)
        # an empty wallet: the funding fails, the peer is told, the channel is forgotten
        with pytest.raises(ChainAppError, match="did not open: cannot fund"):
            await app.fundchannel(bob.node_id.hex(), FUNDING_SAT)
        assert (await app.listchannels())["channels"] == []
        assert not list((tmp_path / "alice" / "channels").glob("*.log"))
        await wait_until(lambda: only_channel(bob).phase is Phase.FAILED, "bob hears the error")
        with pytest.raises(ParamsError, match="no channel"):
            await app.closechannel("00" * 32)
        with pytest.raises(ParamsError, match="no channel"):
            await app.dev_addhtlc("1x2x3", 1000)
        assert (await app.listchannels())["channels"] == []
