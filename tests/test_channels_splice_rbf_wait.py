"""The wait before a splice's fee bump (BOLT 2's "created recently", ``OpeningPolicy.rbf_wait_blocks``)
counted from the height each version was signed at, in the channel core driven by hand: blocks mined
while the node was stopped count (the shell's tip at start, :class:`SpliceTipHeight`, or the bump's
height), the peer's locktime gives its version's height but never past the next block, and a
session stored before the heights were recorded still reads and counts as before."""

from __future__ import annotations

import json

import pytest
import test_channels_splice
from test_channels_splice import SplicePair, splice_of, splice_out_command

from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import BlockHeight
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.records import encode_snapshot, restore, restore_snapshot
from lnpmsg.channels.splice_rbf import SpliceTipHeight, check_bump

#: the chain's tip when Alice splices (her command's height and locktime)
TIP = 110
BUMPED = test_channels_splice.FEERATE * 25 // 24 + 100


def signed_at_tip(wait: int = 2, locktime: int = TIP) -> SplicePair:
    """Alice's splice-out, given at the tip (height TIP) with ``locktime``, signed by both."""
    from dataclasses import replace

    pair = SplicePair(push_msat=300_000_000, extra_features=1 << 63, policy=OpeningPolicy(rbf_wait_blocks=wait))
    pair.open()
    test_channels_splice.quiesce(pair, pair.alice)
    pair.feed(pair.alice, replace(splice_out_command(50_000), locktime=locktime, height=TIP))
    pair.pump()
    assert splice_of(pair.alice).signed and splice_of(pair.bob).signed
    return pair


def test_the_blocks_mined_while_stopped_count_from_the_signed_height() -> None:
    """Both record the height the splice was signed at (Alice: her command's; Bob: her locktime). After a
    restart (the records replayed) the shell's tip counts at once: two blocks later both may bump, one
    block later not yet; the bump's own height counts the same way before any tip is told."""
    pair = signed_at_tip()
    assert splice_of(pair.alice).signed_height == splice_of(pair.bob).signed_height == TIP
    for side in (pair.alice, pair.bob):
        side.core = restore(side.core.secrets, side.records)  # a restart
    with pytest.raises(LocalMisuse, match="signed 1 block.s. ago: a bump waits for 2"):
        check_bump(pair.alice.core, BUMPED, TIP, height=TIP + 1)
    check_bump(pair.alice.core, BUMPED, TIP, height=TIP + 2)  # (the shell's bump: its tip)
    pair.feed(pair.bob, SpliceTipHeight(TIP + 1))
    assert splice_of(pair.bob).blocks_waited == 1
    assert not pair.feed(pair.bob, SpliceTipHeight(TIP)).records  # (never counted back)
    pair.feed(pair.bob, SpliceTipHeight(TIP + 5))
    assert splice_of(pair.bob).blocks_waited == 2  # (counted up to the wait only)
    check_bump(pair.bob.core, BUMPED, TIP)
    assert restore(pair.bob.core.secrets, pair.bob.records).state == pair.bob.core.state


def test_a_new_block_after_a_stop_counts_every_block_since_the_signatures() -> None:
    """No tip told at start: the first block after it, two past the signed height, counts two."""
    pair = signed_at_tip()
    pair.feed(pair.alice, BlockHeight(TIP + 2))
    assert splice_of(pair.alice).blocks_waited == 2
    check_bump(pair.alice.core, BUMPED, TIP)


def test_a_locktime_past_the_tip_is_brought_down_at_the_next_block() -> None:
    """Alice's locktime claims a height far past the chain's: Bob takes it as her version's height until
    the next block, which was mined after the signatures: from there he counts as usual."""
    pair = signed_at_tip(locktime=TIP + 100)
    assert splice_of(pair.bob).signed_height == TIP + 100
    pair.feed(pair.bob, BlockHeight(TIP + 1))
    assert splice_of(pair.bob).signed_height == TIP and splice_of(pair.bob).blocks_waited == 1
    pair.feed(pair.bob, BlockHeight(TIP + 2))
    check_bump(pair.bob.core, BUMPED, TIP)


def test_a_session_stored_before_the_heights_were_recorded_reads_and_counts_blocks_as_before() -> None:
    """A snapshot whose splice has no ``height`` nor ``signed_height`` (an older node's) restores: each
    block counts one, the first one noting the height before it as the signed one."""
    pair = signed_at_tip()
    stored = json.loads(encode_snapshot(pair.alice.core))

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("height", "signed_height") or value.get("@") != "SpliceSession"}
        return [strip(v) for v in value] if isinstance(value, list) else value

    older = strip(stored)
    assert "signed_height" not in json.dumps(older)
    core = restore_snapshot(pair.alice.core.secrets, json.dumps(older).encode())
    sp = core.state.splice
    assert sp.signed and sp.signed_height is None and sp.height is None
    pair.alice.core = core
    pair.feed(pair.alice, SpliceTipHeight(TIP + 5))  # (unknown signed height: nothing to count from)
    assert splice_of(pair.alice).blocks_waited == 0
    pair.feed(pair.alice, BlockHeight(TIP + 6))
    assert splice_of(pair.alice).blocks_waited == 1 and splice_of(pair.alice).signed_height == TIP + 5
    pair.feed(pair.alice, BlockHeight(TIP + 7))
    check_bump(pair.alice.core, BUMPED, TIP)
