"""ChainFollower (sans-IO): watch events in, reorgs out, on hand-built blocks."""

from __future__ import annotations

import pytest

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import (
    BlockConnected,
    BlockDisconnected,
    BlockRef,
    OutputConfirmed,
    OutputSpent,
    ReorgedOut,
)
from lnpmsg.chain.follow import ChainFollower
from lnpmsg.chain.mining import build_block

WATCHED = b"\x00\x14" + b"\x33" * 20
OTHER = b"\x00\x14" + b"\x44" * 20
GENESIS = BlockRef(0, b"\x00" * 32)


def pay(prevout: OutPoint, script: bytes, amount: int = 1_000, extra: int = 0) -> Tx:
    return Tx(2, (TxIn(prevout, b"", 0xFFFFFFFD - extra),), (TxOut(amount, script),))


class Chain:
    """A growing list of hand-built blocks."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.nonce = 0

    def next(self, prev: bytes, height: int, txs: list[Tx]) -> Block:
        self.nonce += 1
        return build_block(
            prev, height, 1_600_000_000 + height, OTHER, txs, 0, self.nonce
        )


def test_outpoint_confirmed_then_spent() -> None:
    chain = Chain()
    follower = ChainFollower(GENESIS)
    funding = pay(OutPoint(b"\x01" * 32, 0), OTHER, 50_000)
    watched = funding.outpoint(0)
    follower.watch_outpoint(watched)
    b1 = chain.next(GENESIS.block_hash, 1, [funding])
    events = follower.connect(1, b1)
    assert events == [
        OutputConfirmed(watched, funding.outputs[0], funding, 1, b1.hash),
        BlockConnected(1, b1.hash, b1.header.time),
    ]
    spender = pay(watched, OTHER, 40_000)
    b2 = chain.next(b1.hash, 2, [spender])
    events = follower.connect(2, b2)
    assert events[0] == OutputSpent(watched, spender, 0, 2, b2.hash)
    assert isinstance(events[-1], BlockConnected)
    assert follower.tip == BlockRef(2, b2.hash)


def test_script_watch_follows_outputs_to_their_spend_in_the_same_block() -> None:
    chain = Chain()
    follower = ChainFollower(GENESIS)
    follower.watch_script(WATCHED)
    incoming = pay(OutPoint(b"\x02" * 32, 1), WATCHED, 7_000)
    onward = pay(incoming.outpoint(0), OTHER, 6_000)
    block = chain.next(GENESIS.block_hash, 1, [incoming, onward])
    kinds = [type(e).__name__ for e in follower.connect(1, block)]
    assert kinds == ["OutputConfirmed", "OutputSpent", "BlockConnected"]


def test_reorg_takes_events_back_in_reverse() -> None:
    chain = Chain()
    follower = ChainFollower(GENESIS)
    funding = pay(OutPoint(b"\x03" * 32, 0), OTHER)
    follower.watch_outpoint(funding.outpoint(0))
    b1 = chain.next(GENESIS.block_hash, 1, [])
    b2 = chain.next(b1.hash, 2, [funding])
    b3 = chain.next(b2.hash, 3, [pay(funding.outpoint(0), OTHER, 900)])
    confirmed = follower.connect(1, b1) + follower.connect(2, b2)
    spent = follower.connect(3, b3)
    undo3 = follower.disconnect()
    assert undo3 == [ReorgedOut(spent[0]), BlockDisconnected(3, b3.hash)]  # type: ignore[arg-type]
    undo2 = follower.disconnect()
    assert undo2[0] == ReorgedOut(confirmed[1])  # type: ignore[arg-type]
    assert follower.tip == BlockRef(1, b1.hash)
    # the funding confirms again on the new branch: reported again
    b2b = chain.next(b1.hash, 2, [funding])
    again = follower.connect(2, b2b)
    assert isinstance(again[0], OutputConfirmed) and again[0].block_hash == b2b.hash


def test_follower_refuses_gaps_and_too_deep_reorgs() -> None:
    chain = Chain()
    follower = ChainFollower(GENESIS, max_reorg_depth=2)
    prev = GENESIS.block_hash
    for height in range(1, 5):
        block = chain.next(prev, height, [])
        follower.connect(height, block)
        prev = block.hash
    stray = chain.next(b"\x99" * 32, 5, [])
    with pytest.raises(ChainError):
        follower.connect(5, stray)
    with pytest.raises(ChainError):
        follower.connect(7, chain.next(prev, 7, []))
    follower.disconnect()
    follower.disconnect()
    with pytest.raises(ChainError) as info:
        follower.disconnect()
    assert info.value.code == "reorg-too-deep"
    assert follower.hash_at(2) is not None and follower.hash_at(1) is None


def test_rescan_finds_past_events_and_joins_the_block_record() -> None:
    chain = Chain()
    follower = ChainFollower(GENESIS)
    incoming = pay(OutPoint(b"\x04" * 32, 0), WATCHED, 3_000)
    b1 = chain.next(GENESIS.block_hash, 1, [incoming])
    follower.connect(1, b1)
    follower.watch_script(WATCHED)
    found = follower.rescan(1, b1, scripts=[WATCHED])
    assert found == [
        OutputConfirmed(incoming.outpoint(0), incoming.outputs[0], incoming, 1, b1.hash)
    ]
    # the rescanned output is now followed to its spend, and a reorg takes it back
    b2 = chain.next(b1.hash, 2, [pay(incoming.outpoint(0), OTHER, 2_000)])
    assert isinstance(follower.connect(2, b2)[0], OutputSpent)
    follower.disconnect()
    undo = follower.disconnect()
    assert undo[0] == ReorgedOut(found[0])


def test_unwatch_stops_reports() -> None:
    chain = Chain()
    follower = ChainFollower(GENESIS)
    funding = pay(OutPoint(b"\x05" * 32, 0), WATCHED)
    follower.watch_outpoint(funding.outpoint(0))
    follower.watch_script(WATCHED)
    follower.unwatch_outpoint(funding.outpoint(0))
    follower.unwatch_script(WATCHED)
    events = follower.connect(1, chain.next(GENESIS.block_hash, 1, [funding]))
    assert [type(e) for e in events] == [BlockConnected]


def test_rebase_below_the_starting_block() -> None:
    chain = Chain()
    b1 = chain.next(GENESIS.block_hash, 1, [])
    follower = ChainFollower(BlockRef(1, b1.hash), max_reorg_depth=5)
    b2 = chain.next(b1.hash, 2, [])
    follower.connect(2, b2)
    with pytest.raises(ChainError):
        follower.rebase(GENESIS)  # b2 is still above the start: disconnect it first
    follower.disconnect()
    assert follower.rebase(GENESIS) == [BlockDisconnected(1, b1.hash)]
    assert follower.tip == GENESIS
    b1b = chain.next(GENESIS.block_hash, 1, [])
    assert isinstance(follower.connect(1, b1b)[-1], BlockConnected)
