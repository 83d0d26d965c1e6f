"""A fee bump's version of a splice that the peer forgot after our ``tx_signatures`` left, in the channel
core driven by hand (:mod:`lnpmsg.channels.splice_forgotten`, :mod:`lnpmsg.channels.splice_rbf`): noted,
dropped once an earlier version confirms, taken up when it confirms itself, ended by a spend of its
coin elsewhere."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_channels_splice import COIN, SPLICE_SCID, SplicePair, opened, splice_in_command, splice_of, splice_out_command
from test_channels_splice_forgotten import both_lock_taken_up, lose_tx_signatures_to
from test_channels_splice_rbf import BUMPED, quiesce

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.records import restore
from lnpmsg.channels.reestablish import settling
from lnpmsg.channels.splice import SpliceAborted, SpliceDepth, SpliceSession, splice_status
from lnpmsg.channels.splice_forgotten import ForgottenSpliceMined, SpliceInputSpent, abandon_spend, forgotten_inputs
from lnpmsg.channels.splice_rbf import SpliceBump, SpliceVersionsDropped
from lnpmsg.channels.state import Phase


def bump_forgotten(splice_in: bool = False) -> tuple[SplicePair, SpliceSession]:
    """Alice splices, then bumps; Bob signs the bump first, Alice's tx_signatures of it are lost: she holds
    the whole signed bump, he does not. She forgets the bump (her first version stands) and answers his
    next_funding with tx_abort. Returns the pair and Alice's bump as she had it."""
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000) if splice_in else splice_out_command(60_000))
    pair.pump()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    lose_tx_signatures_to(pair, pair.bob)
    bumped = splice_of(pair.alice)
    assert bumped.signed and bumped.previous and not splice_of(pair.bob).signed and splice_of(pair.bob).signatures_sent
    pair.alice.core.state.splice = replace(bumped.previous[-1], previous=bumped.previous[:-1])  # Alice forgets the bump
    pair.alice.core.state.quiesce = None
    pair.reconnect()
    return pair, bumped


def first_tx(sp: SpliceSession) -> Tx:
    return Tx.parse(sp.previous[0].tx)


def test_a_forgotten_bump_is_noted_and_dropped_at_the_switch_once_the_first_version_confirms() -> None:
    """Bob marks the bump Alice forgot (listchannels: peer_forgot; the reconnection is settled, a command
    waits no more); the first version, signed by both, confirms: it is the current one, the forgotten bump
    kept among the others until the switch, then dropped with them. The records replay to each state."""
    pair, bumped = bump_forgotten()
    bob = pair.bob.core
    sp = splice_of(pair.bob)
    assert sp.peer_forgot and sp.outpoint == bumped.outpoint
    assert splice_status(bob.state)["peer_forgot"] and not settling(bob)  # type: ignore[index]
    with pytest.raises(LocalMisuse, match="earlier versions"):
        abandon_spend(sp, b"\x00\x14" + bytes(20), 2_500)
    assert restore(bob.base_secrets, pair.bob.records).state == bob.state
    first = first_tx(bumped)
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(first.txid, 1, SPLICE_SCID))
    current = splice_of(pair.bob)
    assert current.outpoint.txid == first.txid and current.signed  # type: ignore[union-attr]
    assert [v.outpoint for v in current.previous] == [bumped.outpoint]
    assert splice_status(bob.state)["previous_versions"][0]["peer_forgot"]  # type: ignore[index]
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(first.txid, 3, SPLICE_SCID))
    pair.pump()
    for side in (pair.alice, pair.bob):
        assert side.core.state.splice is None and side.core.state.funding_outpoint.txid == first.txid  # type: ignore[union-attr]
    assert [e.confirmed.txid for e in pair.bob.events if isinstance(e, SpliceVersionsDropped)] == [first.txid]
    assert restore(bob.base_secrets, pair.bob.records).state == bob.state


def test_a_forgotten_bump_found_in_a_block_is_taken_up_and_locked() -> None:
    """Alice completed the bump she forgot with Bob's signatures and it is mined: Bob takes it up (signed,
    as mined), locks it at the minimum depth; Alice, who went on with it, locks it too: both switch to it."""
    pair, bumped = bump_forgotten()
    pair.feed(pair.bob, ForgottenSpliceMined(bumped.tx))  # type: ignore[arg-type]
    taken = splice_of(pair.bob)
    assert taken.signed and taken.tx == bumped.tx and taken.peer_forgot and taken.previous
    both_lock_taken_up(pair, bumped)


def test_a_forgotten_bump_whose_coin_is_spent_elsewhere_ends_with_the_versions_spending_it() -> None:
    """Alice's splice-in: both versions spend her coin. Its spend by another transaction, deep, ends the
    forgotten bump and the first version with it (neither can confirm): Alice's side frees the coin, Bob's
    channel stays on its funding, free to splice again."""
    pair, bumped = bump_forgotten(splice_in=True)
    assert forgotten_inputs(splice_of(pair.bob)) == (COIN.outpoint(0),)
    out = pair.feed(pair.bob, SpliceInputSpent(COIN.outpoint(0)))
    assert pair.bob.core.state.splice is None
    (aborted,) = [e for e in out.events if isinstance(e, SpliceAborted)]
    assert "spent by another transaction" in aborted.reason
    assert restore(pair.bob.core.base_secrets, pair.bob.records).state == pair.bob.core.state


def test_a_bump_the_peer_aborts_after_our_signatures_ends_the_quiescence_and_the_first_version_locks() -> None:
    """Alice answers the bump with tx_abort once Bob's tx_signatures left (no reconnection): Bob notes the
    forgotten bump and the quiescence the bump was for ends; the first version confirms and locks, and the
    channel carries payments on it."""
    from test_channels_splice import pay_both_ways

    from lnpmsg.channels.inputs import Received
    from lnpmsg.channels.messages_v2 import TxAbort

    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_out_command(60_000))
    pair.pump()
    first = Tx.parse(splice_of(pair.alice).tx)  # type: ignore[arg-type]
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, SpliceBump(BUMPED, 130))
    lose_tx_signatures_to(pair, pair.bob)
    bumped = splice_of(pair.alice)
    pair.alice.core.state.splice = replace(bumped.previous[-1], previous=())  # Alice forgets the bump
    pair.alice.core.state.quiesce = None
    pair.feed(pair.bob, Received(TxAbort(channel_id=pair.bob.core.state.channel_id, data=b"forgot")))
    assert splice_of(pair.bob).peer_forgot and pair.bob.core.state.quiesce is None
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(first.txid, 3, SPLICE_SCID))
    pair.pump()
    for side in (pair.alice, pair.bob):
        assert side.core.state.splice is None and side.core.state.funding_outpoint.txid == first.txid  # type: ignore[union-attr]
    pair.funding_tx = first
    pay_both_ways(pair)
    assert restore(pair.bob.core.base_secrets, pair.bob.records).state == pair.bob.core.state


@pytest.mark.parametrize("bumped", [False, True])
def test_no_htlc_of_ours_while_a_version_the_peer_forgot_is_pending(bumped: bool) -> None:
    """Our commitment on the version the peer forgot must stay our latest (a take-up needs it), and the
    peer's answer to an update would fail the channel: our HTLC is refused at once, the channel unharmed."""
    from test_channels_splice_forgotten import forgotten_after_alice_signed

    pair = bump_forgotten()[0] if bumped else forgotten_after_alice_signed()[0]
    with pytest.raises(LocalMisuse, match="peer forgot the pending splice"):
        pair.add(pair.bob, 5_000_000)
    assert pair.bob.core.state.phase is Phase.NORMAL and not pair.wire
