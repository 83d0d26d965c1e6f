"""Channel establishment v2 between two lnpmsg nodes in memory, on one embedded regtest chain:
``--dual-fund`` on both, a channel opened with only the opener's coins and one with both
sides' coins (the funding transaction mined, so accepted by the consensus engine), payments
both ways, a cooperative close; an open the peer refuses frees the opener's coins; without the
option (the default) channels open with v1 and bit 29 is not offered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import balances, chain, channels, only_channel, pay, settled, wait_until

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.dualfund import AcceptV2Command, DualFundSession
from lnpmsg.channels.messages import register_channel_messages
from lnpmsg.channels.messages_v2 import OpenChannel2, TxAbort, TxAddInput, TxAddOutput, TxComplete, register_dual_fund_messages
from lnpmsg.channels.params import ChannelConfig, ChannelSecrets, OpeningPolicy
from lnpmsg.channels.state import ChannelCore, Phase
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError
from lnpmsg.wire import CHAIN_HASH_REGTEST, DEFAULT_REGISTRY, Features, Init

FUNDING_SAT = 1_000_000


def node(tmp: Path, network: MemoryNetwork, source: Any, name: str, policy: OpeningPolicy, listen: bool) -> Node:
    n = Node(NodeKey.generate(), NodeConfig(listen=["mem://"] if listen else [], network="regtest"),
             transports={"mem": network.transport()})  # fmt: skip
    n.mount(ChainApp(tmp / name / "wallet", source=source))
    n.mount(ChannelsApp(tmp / name / "channels", config=ChannelConfig(minimum_depth=2), policy=policy))
    return n


async def fund(source: Any, n: Node, amount_sat: int) -> None:
    await source.faucet(n.apps["chain"].wallet.new_address(), amount_sat)  # type: ignore[attr-defined]
    await source.mine(1)
    await n.apps["chain"].wallet.sync()  # type: ignore[attr-defined]


@asynccontextmanager
async def dual_fund_pair(tmp: Path, contribute: int, bob_sat: int = 2_000_000) -> AsyncIterator[tuple[Any, Node, Node]]:
    """(source, alice, bob) on a fresh chain: both speak dual funding, Bob contributes ``contribute``
    sat to opens; both running, Alice's wallet funded with 3M sat and Bob's with ``bob_sat``, Bob
    connected to Alice."""
    network = MemoryNetwork()
    async with chain(tmp) as source:
        alice = node(tmp, network, source, "alice", OpeningPolicy(dual_fund=True), True)
        bob = node(tmp, network, source, "bob", OpeningPolicy(dual_fund=True, dual_fund_contribute_sat=contribute), False)
        async with running(alice, bob):
            await fund(source, alice, 3_000_000)
            await fund(source, bob, bob_sat)
            await bob.connect(alice.addresses[0])
            yield source, alice, bob


def reserved(n: Node) -> int:
    return len(n.apps["chain"].wallet.reserved())  # type: ignore[attr-defined]


@pytest.mark.trio
@pytest.mark.parametrize("contribute", [0, 300_000], ids=["opener_only", "both"])
async def test_v2_open_pay_close(tmp_path: Path, contribute: int) -> None:
    async with dual_fund_pair(tmp_path, contribute) as (source, alice, bob):
        assert alice.local_features(bob.node_id).has(29)
        result = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
        assert result["state"] == "await_ready" and result["capacity_sat"] == FUNDING_SAT + contribute
        a, b = only_channel(alice), only_channel(bob)
        assert isinstance(a.core.state.dual, DualFundSession) and a.core.state.channel_id == b.core.state.channel_id
        funding = Tx.parse(a.core.state.funding_tx)
        assert len(funding.inputs) == (2 if contribute else 1)
        await source.mine(2)  # the kernel accepts the block with the funding: both sides' inputs signed
        await wait_until(lambda: settled(alice) and settled(bob), "channel_ready both ways")
        assert source.core.find_transaction(funding.txid)[1] is not None  # type: ignore[index]
        assert balances(alice)[:2] == (FUNDING_SAT * 1000, contribute * 1000)
        # the coins were spent by the funding (each wallet sees it when it reads the block, maybe after channel_ready)
        await wait_until(lambda: reserved(alice) == 0 and reserved(bob) == 0, "the funding's coins no longer reserved")
        await pay(alice, bob, 50_000_000)
        await pay(bob, alice, 20_000_000)
        assert balances(bob)[:2] == ((contribute + 30_000) * 1000, (FUNDING_SAT - 30_000) * 1000)
        closed = await channels(bob).closechannel(b.channel_id.hex())
        assert closed["state"] == "closed"
        await wait_until(lambda: only_channel(alice).phase is Phase.CLOSED, "alice closed")


@pytest.mark.trio
async def test_refused_v2_open_frees_the_coins_and_v1_stays_default(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        alice = node(tmp_path, network, source, "alice", OpeningPolicy(dual_fund=True), True)
        # Bob speaks v2 but wants bigger channels: he refuses the open_channel2
        bob = node(tmp_path, network, source, "bob", OpeningPolicy(dual_fund=True, min_funding_sat=5_000_000), False)
        carol = node(tmp_path, network, source, "carol", OpeningPolicy(), False)  # the default: v1 only
        async with running(alice, bob, carol):
            await fund(source, alice, 3_000_000)
            await bob.connect(alice.addresses[0])
            with pytest.raises(ChainAppError, match="funding_satoshis"):
                await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            assert reserved(alice) == 0  # the coins picked for it are free again
            assert not [c for c in channels(alice).manager.channels.values() if c.peer_id == bob.node_id]  # type: ignore[union-attr]
            # a peer without option_dual_fund: v1, and --v2 is refused
            await carol.connect(alice.addresses[0])
            assert not carol.local_features(alice.node_id).has(29) and not carol.local_features(alice.node_id).has(28)
            with pytest.raises(Exception, match="option_dual_fund"):
                await channels(alice).fundchannel(carol.node_id.hex(), FUNDING_SAT, v2=True)
            assert reserved(alice) == 0
            result = await channels(alice).fundchannel(carol.node_id.hex(), FUNDING_SAT)
            assert result["state"] == "await_ready"
            (channel,) = [c for c in channels(alice).manager.channels.values() if c.peer_id == carol.node_id]  # type: ignore[union-attr]
            assert channel.core.state.dual is None  # v1


# -- a hand-driven peer: each protocol violation ends the open with tx_abort and frees our coins ----

def _registry() -> Any:
    return register_dual_fund_messages(register_channel_messages(DEFAULT_REGISTRY.copy()))


async def _next(peer: Any, kind: type) -> Any:
    registry = _registry()
    while True:
        msg = registry.decode(await peer.receive())
        if isinstance(msg, kind):
            return msg


def _violations(cid: bytes, their_input: Any) -> dict[str, tuple[list[Any], str]]:
    prevtx = Tx.parse(their_input.prevtx)
    return {
        # our (the initiator's) parity is even; the peer must use odd serial ids
        "parity": ([TxAddOutput(channel_id=cid, serial_id=2, sats=10_000, script=b"\x00\x14" + b"\x11" * 20)], "parity"),
        # the peer re-adds the input we added
        "duplicate input": ([TxAddInput(channel_id=cid, serial_id=1, prevtx=prevtx.raw, prevtx_vout=their_input.prevtx_vout,
                                        sequence=0xFFFFFFFD)], "added twice"),  # fmt: skip
        "dust output": ([TxAddOutput(channel_id=cid, serial_id=1, sats=100, script=b"\x00\x14" + b"\x11" * 20)], "dust"),
        "bad prevtx": ([TxAddInput(channel_id=cid, serial_id=1, prevtx=b"\x00" * 10, prevtx_vout=0, sequence=0xFFFFFFFD)], "prevtx"),
        "peer abort": ([TxAbort(channel_id=cid, data=b"changed my mind")], "peer aborted"),
        # a peer that claims a contribution it does not pay (accept_channel2 says 0: the output is its own)
        "output without inputs": ([TxAddOutput(channel_id=cid, serial_id=1, sats=50_000, script=b"\x00\x14" + b"\x11" * 20),
                                   TxComplete(channel_id=cid)], "less than its outputs"),  # fmt: skip
    }


@dataclass
class HandDrivenOpen:
    """Alice's v2 open to a raw peer that answered her ``open_channel2`` with a real core's
    ``accept_channel2``; her first ``tx_add_input`` has arrived. ``errors``: what her
    ``fundchannel`` raised; ``nursery`` runs it."""

    alice: Node
    peer: RawPeer
    core: ChannelCore
    first_input: TxAddInput
    errors: list[Exception]
    nursery: trio.Nursery


@asynccontextmanager
async def hand_driven_open(tmp_path: Path, network: MemoryNetwork, source: Any) -> AsyncIterator[HandDrivenOpen]:
    alice = node(tmp_path, network, source, "alice", OpeningPolicy(dual_fund=True), True)
    async with running(alice):
        await fund(source, alice, 3_000_000)
        features = Features.from_bits([13, 29]).value
        async with await RawPeer.connect(network.names[0], alice.node_id, transport=network.transport()) as peer:
            await peer.exchange_init(Init(features=Features(features).to_bytes()))
            errors: list[Exception] = []

            async def open_() -> None:
                try:
                    await channels(alice).fundchannel(peer.key.node_id.hex(), FUNDING_SAT)
                except Exception as exc:  # noqa: BLE001 - the test reads it
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(open_)
                with trio.fail_after(10):
                    open2 = await _next(peer, OpenChannel2)
                core = ChannelCore(ChannelSecrets(*[bytes([i + 1]) * 32 for i in range(6)]))
                out = core.receive(AcceptV2Command(open2, CHAIN_HASH_REGTEST, features, features, 0, (), (), b"e"), 1.0)
                await peer.send(out.messages[0])
                first = await _next(peer, TxAddInput)
                yield HandDrivenOpen(alice, peer, core, first, errors, nursery)


@pytest.mark.trio
@pytest.mark.parametrize("case", ["parity", "duplicate input", "dust output", "bad prevtx", "peer abort", "output without inputs"])
async def test_violations_from_a_hand_driven_peer_abort_and_free_the_coins(tmp_path: Path, case: str) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source, hand_driven_open(tmp_path, network, source) as opening:
        peer = opening.peer
        msgs, why = _violations(opening.core.state.channel_id, opening.first_input)[case]
        await peer.send(msgs[0])
        if len(msgs) > 1:  # then tx_complete each turn until both completed (turn-based)
            registry = _registry()
            while not isinstance(reply := registry.decode(await peer.receive()), TxAbort):
                if type(reply).__name__.startswith("Tx"):
                    await peer.send(msgs[1])
            abort = reply
        if len(msgs) == 1:
            abort = await _next(peer, TxAbort)
        # our reason, or the echo BOLT 2 asks for a peer's tx_abort
        assert (why.encode() if case != "peer abort" else b"echo") in abort.data, abort
        with trio.fail_after(10):
            while not opening.errors:
                await trio.sleep(0.02)
        assert why in str(opening.errors[0]) or case == "peer abort", opening.errors
        assert reserved(opening.alice) == 0  # the coins picked for the open are free again
        assert not [c for c in channels(opening.alice).manager.channels.values() if c.phase is not Phase.NEW]  # type: ignore[union-attr]


@pytest.mark.trio
async def test_restart_mid_negotiation_ends_the_open_and_frees_the_coins(tmp_path: Path) -> None:
    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        async with hand_driven_open(tmp_path, network, source) as opening:
            assert reserved(opening.alice) > 0  # the coins are held for the open
            opening.nursery.cancel_scope.cancel()  # the node stops mid-negotiation (fundchannel with it)
        # the same node again, from its data directory
        again = Node(opening.alice.key, NodeConfig(listen=["mem://"], network="regtest"), transports={"mem": network.transport()})
        again.mount(ChainApp(tmp_path / "alice" / "wallet", source=source))
        again.mount(ChannelsApp(tmp_path / "alice" / "channels", config=ChannelConfig(minimum_depth=2), policy=OpeningPolicy(dual_fund=True)))
        async with running(again):
            await wait_until(lambda: reserved(again) == 0, "the coins freed at start")
            assert not channels(again).manager.channels  # type: ignore[union-attr]


@pytest.mark.trio
async def test_a_restart_keeps_the_coins_of_a_signed_v2_open_and_a_signed_splice_and_frees_an_ended_ones(tmp_path: Path) -> None:
    """The wallet holds our coins for a v2 open and for a splice alike (a transaction paying
    FUNDING_PLACEHOLDER): at a restart with a v2 open and a splice both signed and unconfirmed, and
    the pick of an attempt that ended while the node was down, neither the splice's coins nor the
    open's are taken for the ended attempt's (both stay held until they confirm); only those are freed."""
    from test_channels_app import Pair

    from lnpmsg.channels.interactive_parts import own_outpoints
    from lnpmsg.channels.interactive_rules import FUNDING_PLACEHOLDER
    from lnpmsg.channels.splice import SpliceSession

    network = MemoryNetwork()
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, network, {"alice": OpeningPolicy(dual_fund=True), "bob": OpeningPolicy(dual_fund=True)})
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            for _ in range(4):  # (a coin for each: the open, the splice, the second open, the ended attempt)
                await pair.fund_wallet(alice, 1_500_000)
            await bob.connect(alice.addresses[0])
            await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            await source.mine(2)
            await wait_until(lambda: settled(alice) and settled(bob), "the first channel ready")
            spliced = only_channel(alice)
            result = await channels(alice).splice(spliced.channel_id.hex(), 200_000)
            sp = spliced.core.state.splice
            assert isinstance(sp, SpliceSession) and sp.signed
            splice_coins = own_outpoints(sp.inputs)
            opened = await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            (v2,) = [c for c in channels(alice).manager.channels.values() if c.key != spliced.key]  # type: ignore[union-attr]
            assert isinstance(v2.core.state.dual, DualFundSession) and v2.core.state.dual.signatures_sent
            open_coins = own_outpoints(v2.core.state.dual.inputs)
            wallet = alice.apps["chain"].wallet  # type: ignore[attr-defined]
            ended = await wallet.fund_output(FUNDING_PLACEHOLDER, 100_000, 2500)  # (its attempt ended while the node was down)
            ended_coins = {i.prevout for i in ended.tx.inputs}
            assert splice_coins and open_coins and ended_coins and not (splice_coins & open_coins) and not (ended_coins & (splice_coins | open_coins))
            assert set(wallet.reserved()) == splice_coins | open_coins | ended_coins
        alice, bob = pair.node("alice", True), pair.node("bob", False)
        async with running(alice, bob):
            wallet = alice.apps["chain"].wallet  # type: ignore[attr-defined]
            assert set(wallet.reserved()) == splice_coins | open_coins  # the ended attempt's coins freed, no other
            await bob.connect(alice.addresses[0])
            await source.mine(2)
            await wait_until(lambda: all(c.core.state.splice is None and c.phase is Phase.NORMAL for c in channels(alice).manager.channels.values()),  # type: ignore[union-attr]
                             "the splice locked and the second channel ready")  # fmt: skip
            assert {c.core.state.funding_outpoint.txid_hex for c in channels(alice).manager.channels.values()} == {  # type: ignore[union-attr]
                result["splice_txid"], opened["funding_txid"]}
            await wait_until(lambda: not wallet.reserved(), "the coins spent, no longer held")
