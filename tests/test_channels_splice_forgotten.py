"""A splice the peer forgot after our ``tx_signatures`` left that confirms all the same, in the channel
core driven by hand (:mod:`lnpmsg.channels.splice_forgotten`): taken up from the block, locked,
switched to when the peer locks it, the channel closed on it when the peer does not."""

from __future__ import annotations

import pytest
from test_channels_splice import COIN, SPLICE_SCID, SplicePair, opened, quiesce, splice_in_command, splice_of

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn
from lnpmsg.channels.inputs import ChannelFailed
from lnpmsg.channels.messages_v2 import TxSignatures
from lnpmsg.channels.records import restore
from lnpmsg.channels.splice import SpliceDepth, Spliced, SpliceSession
from lnpmsg.channels.splice_forgotten import FORGOTTEN_LOCK_WAIT, ForgottenSpliceMined, SpliceInputSpent, forgotten_inputs
from lnpmsg.channels.state import Phase


def forgotten_after_alice_signed() -> tuple[SplicePair, SpliceSession]:
    """Alice splices in; Bob signs first, Alice's tx_signatures are lost: she holds the whole signed
    transaction, he does not. She forgets the splice and answers his next_funding with tx_abort.
    Returns the pair and Alice's splice as she had it."""
    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000))
    lose_tx_signatures_to(pair, pair.bob)
    kept = splice_of(pair.alice)
    assert kept.signed and not splice_of(pair.bob).signed and splice_of(pair.bob).signatures_sent
    pair.alice.core.state.splice = pair.alice.core.state.quiesce = None  # Alice forgets it
    pair.reconnect()
    assert splice_of(pair.bob).peer_forgot
    return pair, kept


def lose_tx_signatures_to(pair: SplicePair, side) -> None:
    """Deliver what is on the wire but the tx_signatures to ``side`` (lost)."""
    while pair.wire:
        target, msg = pair.wire.popleft()
        if not (isinstance(msg, TxSignatures) and target is side):
            pair.deliver(target, msg)


def test_a_forgotten_splice_found_in_a_block_is_taken_up_then_locked_when_the_peer_locks_it() -> None:
    """Another transaction given as the splice's changes nothing; the splice's own (with Alice's witnesses)
    makes Bob's splice signed, its inputs no longer watched once it is in a block (it spent them); its
    depth then locks it, and Alice's splice_locked (she went on with it) switches the channel. The
    records replay to each state."""
    pair, kept = forgotten_after_alice_signed()
    before = splice_of(pair.bob)
    assert forgotten_inputs(before) == (COIN.outpoint(0),)
    pair.feed(pair.bob, ForgottenSpliceMined(Tx(2, (TxIn(OutPoint(sha256(b"other"), 0)),), ()).raw))
    assert splice_of(pair.bob) == before
    pair.feed(pair.bob, ForgottenSpliceMined(kept.tx))  # type: ignore[arg-type]
    taken = splice_of(pair.bob)
    assert taken.signed and taken.tx == kept.tx and taken.peer_forgot
    txid = kept.outpoint.txid  # type: ignore[union-attr]
    pair.feed(pair.bob, SpliceDepth(txid, 1, SPLICE_SCID))
    assert splice_of(pair.bob).mined and forgotten_inputs(splice_of(pair.bob)) == ()  # (in a block: it spent them)
    pair.feed(pair.bob, SpliceInputSpent(COIN.outpoint(0)))
    assert splice_of(pair.bob).mined
    assert restore(pair.bob.core.base_secrets, pair.bob.records).state == pair.bob.core.state
    both_lock_taken_up(pair, kept)


def both_lock_taken_up(pair: SplicePair, kept: SpliceSession) -> None:
    """Alice takes ``kept`` (her signed splice, or version of it, that she forgot) up again, and both see it
    deep enough: both lock it and switch to it; Bob's records replay to his state."""
    pair.alice.core.state.splice = kept
    for side in (pair.alice, pair.bob):
        pair.feed(side, SpliceDepth(kept.outpoint.txid, 3, SPLICE_SCID))  # type: ignore[union-attr]
    pair.pump()
    assert [e for e in pair.bob.events if isinstance(e, Spliced)] and pair.bob.core.state.splice is None
    assert pair.bob.core.state.funding_outpoint == kept.outpoint == pair.alice.core.state.funding_outpoint
    assert restore(pair.bob.core.base_secrets, pair.bob.records).state == pair.bob.core.state


def test_a_confirmed_forgotten_splice_the_peer_does_not_lock_closes_the_channel_after_the_wait() -> None:
    """Bob takes the splice up and locks it at the minimum depth (his splice_locked leaves); without
    Alice's, FORGOTTEN_LOCK_WAIT blocks past that depth he fails the channel: an error to Alice, and his
    latest commitment for the monitor (which follows the splice's funding) to broadcast."""
    pair, kept = forgotten_after_alice_signed()
    minimum_depth = pair.bob.core.state.minimum_depth
    assert minimum_depth > 1
    pair.feed(pair.bob, SpliceDepth(kept.outpoint.txid, minimum_depth, SPLICE_SCID))  # type: ignore[union-attr]
    assert not splice_of(pair.bob).locked_sent  # (not taken up yet: not Bob's to lock)
    pair.feed(pair.bob, ForgottenSpliceMined(kept.tx))  # type: ignore[arg-type]
    txid = kept.outpoint.txid  # type: ignore[union-attr]
    pair.feed(pair.bob, SpliceDepth(txid, minimum_depth, SPLICE_SCID))
    assert splice_of(pair.bob).locked_sent and "SpliceLocked" in pair.sent_types(pair.bob, len(pair.bob.outputs) - 1)
    pair.feed(pair.bob, SpliceDepth(txid, minimum_depth + FORGOTTEN_LOCK_WAIT - 1, SPLICE_SCID))
    assert pair.bob.core.state.phase is Phase.NORMAL
    out = pair.feed(pair.bob, SpliceDepth(txid, minimum_depth + FORGOTTEN_LOCK_WAIT, SPLICE_SCID))
    assert pair.bob.core.state.phase is Phase.FAILED and "Error" in [type(m).__name__ for m in out.messages]
    (failed,) = [e for e in out.events if isinstance(e, ChannelFailed)]
    assert failed.commitment_tx is not None and not failed.by_peer and "forgot the splice" in failed.reason
    assert restore(pair.bob.core.base_secrets, pair.bob.records).state == pair.bob.core.state


def test_a_splice_the_peer_did_not_forget_is_not_taken_up_from_the_chain_nor_closed_on() -> None:
    """ForgottenSpliceMined on a splice the peer did not forget (still waiting for its tx_signatures)
    changes nothing; a confirmed splice the peer did not forget waits for its lock without a deadline."""
    from test_channels_splice import signed_splice

    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000))
    lose_tx_signatures_to(pair, pair.bob)
    tx = splice_of(pair.alice).tx
    before = splice_of(pair.bob)
    pair.feed(pair.bob, ForgottenSpliceMined(tx))  # type: ignore[arg-type]
    assert splice_of(pair.bob) == before and not before.signed

    pair = signed_splice(100_000)
    txid = splice_of(pair.bob).outpoint.txid  # type: ignore[union-attr]
    pair.feed(pair.bob, SpliceDepth(txid, 3, SPLICE_SCID))
    pair.feed(pair.bob, SpliceDepth(txid, 3 + 10 * FORGOTTEN_LOCK_WAIT, SPLICE_SCID))
    assert pair.bob.core.state.phase is Phase.NORMAL and splice_of(pair.bob).locked_sent


def test_a_taken_up_splice_a_reorganization_took_out_ends_when_an_input_is_spent_elsewhere() -> None:
    """The splice Bob took up leaves the chain before his lock (depth 0): it may be mined again, so it is
    kept, and its inputs are watched again: a spend of one elsewhere, deep, ends it."""
    pair, kept = forgotten_after_alice_signed()
    pair.feed(pair.bob, ForgottenSpliceMined(kept.tx))  # type: ignore[arg-type]
    txid = kept.outpoint.txid  # type: ignore[union-attr]
    pair.feed(pair.bob, SpliceDepth(txid, 1, SPLICE_SCID))
    pair.feed(pair.bob, SpliceDepth(txid, 0, 0))
    assert not splice_of(pair.bob).mined and forgotten_inputs(splice_of(pair.bob)) == (COIN.outpoint(0),)
    pair.feed(pair.bob, SpliceInputSpent(COIN.outpoint(0)))
    assert pair.bob.core.state.splice is None and pair.bob.core.state.phase is Phase.NORMAL


def test_the_spend_that_abandons_a_forgotten_splice_takes_our_coins_only_at_the_rate_asked() -> None:
    """Alice's splice-in the peer forgot (she signed first): the spend takes her coin (not the channel's
    funding) to the script given, paying at least the rate asked per vbyte once signed; refused on a
    splice not forgotten, taken up, without a coin of ours, or whose coins cannot pay."""
    from dataclasses import replace

    from test_channels_splice import WALLET_SCRIPT

    from lnpmsg.channels.errors import LocalMisuse
    from lnpmsg.channels.splice_forgotten import abandon_spend

    pair = opened()
    quiesce(pair, pair.alice)
    pair.feed(pair.alice, splice_in_command(100_000))
    pair.pump()
    sp = replace(splice_of(pair.alice), signed=False, peer_forgot=True)  # (as when she signed first and the peer forgot)
    spend = abandon_spend(sp, WALLET_SCRIPT, 2_500)
    assert [i.prevout for i in spend.inputs] == [COIN.outpoint(0)] and spend.outputs[0].script_pubkey == WALLET_SCRIPT
    fee = COIN.outputs[0].amount_sat - spend.outputs[0].amount_sat
    signed_vsize = -(-(spend.weight + 2 + 108) // 4)  # (segwit marker and flag, a P2WPKH witness of 108 bytes at most)
    assert fee >= signed_vsize * 10  # 2500 sat/kw: 10 sat/vB
    with pytest.raises(LocalMisuse, match="not one the peer forgot"):
        abandon_spend(replace(sp, peer_forgot=False), WALLET_SCRIPT, 2_500)
    with pytest.raises(LocalMisuse, match="taken up"):
        abandon_spend(replace(sp, signed=True), WALLET_SCRIPT, 2_500)
    with pytest.raises(LocalMisuse, match="no coin of ours"):
        abandon_spend(replace(sp, inputs=()), WALLET_SCRIPT, 2_500)
    with pytest.raises(LocalMisuse, match="cannot pay"):
        abandon_spend(sp, WALLET_SCRIPT, 10_000_000)
