"""Cooperative close: shutdown, HTLCs draining, closing_signed negotiation
(with fee_range, and the older halving one), the closing transaction verified
by the consensus engine."""

from __future__ import annotations

import dataclasses

import pytest
from test_channels_pair import FUNDING_SAT, ChannelPair

from lnpmsg.bitcoin.script import p2wpkh
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.kernel import kernel_verify_scripts
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import (
    AddHtlc,
    ChannelClosed,
    ChannelFailed,
    CloseChannel,
    Received,
)
from lnpmsg.channels.keys import pubkey_from_privkey
from lnpmsg.channels.messages import (
    ClosingComplete,
    ClosingSigned,
    Shutdown,
    UpdateAddHtlc,
)
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.channels.state import Phase
from lnpmsg.wire import EMPTY_TLV_STREAM, WarningMessage

ALICE_SCRIPT = p2wpkh(pubkey_from_privkey(b"\x01" * 32))
BOB_SCRIPT = p2wpkh(pubkey_from_privkey(b"\x02" * 32))


def opened(bob_feerate: int = 1000, **kwargs: object) -> ChannelPair:
    pair = ChannelPair(
        push_msat=300_000_000,
        alice_config=ChannelConfig(close_script=ALICE_SCRIPT),
        bob_config=ChannelConfig(close_script=BOB_SCRIPT, closing_feerate_per_kw=bob_feerate),
        **kwargs,  # type: ignore[arg-type]
    )
    pair.open()
    return pair


def closed_tx(pair: ChannelPair) -> Tx:
    (a,) = [e for e in pair.alice.events if isinstance(e, ChannelClosed)]
    (b,) = [e for e in pair.bob.events if isinstance(e, ChannelClosed)]
    assert a.raw_tx == b.raw_tx and a.fee_sat == b.fee_sat
    tx = Tx.parse(a.raw_tx)
    assert pair.funding_tx is not None
    assert kernel_verify_scripts(tx, [pair.funding_tx.outputs[1]]) is None
    assert pair.alice.core.phase is Phase.CLOSED and pair.bob.core.phase is Phase.CLOSED
    return tx


@pytest.mark.parametrize("anchors", [False, True], ids=["static_remotekey", "anchors"])
def test_funder_closes_with_fee_range(anchors: bool) -> None:
    pair = opened(anchors=anchors)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=2000))
    pair.pump()
    tx = closed_tx(pair)
    paid = {out.script_pubkey: out.amount_sat for out in tx.outputs}
    fee = next(e.fee_sat for e in pair.alice.events if isinstance(e, ChannelClosed))
    assert paid[BOB_SCRIPT] == 300_000
    assert paid[ALICE_SCRIPT] == FUNDING_SAT - 300_000 - fee
    assert 0 < fee < 2000


def test_fundee_closes_after_htlcs_drain() -> None:
    pair = opened()
    htlc, preimage = pair.add(pair.alice, 20_000_000)
    pair.commit(pair.alice)
    pair.feed(pair.bob, CloseChannel(BOB_SCRIPT, feerate_per_kw=1500))
    pair.pump()
    assert pair.alice.core.phase is Phase.SHUTDOWN and pair.bob.core.phase is Phase.SHUTDOWN
    with pytest.raises(LocalMisuse):
        pair.feed(pair.alice, AddHtlc(1_000_000, bytes(32), 500, bytes(1366)))  # no new HTLC after shutdown
    pair.fulfill(pair.bob, htlc, preimage)  # the last HTLC settles: negotiation starts by itself
    tx = closed_tx(pair)
    assert {o.script_pubkey: o.amount_sat for o in tx.outputs}[BOB_SCRIPT] == 320_000


def test_an_htlc_added_after_shutdown_fails_the_channel() -> None:
    pair = opened()
    pair.add(pair.alice, 20_000_000)
    pair.commit(pair.alice)
    pair.feed(pair.bob, CloseChannel(BOB_SCRIPT, feerate_per_kw=1500))
    pair.wire.clear()
    add = UpdateAddHtlc(channel_id=pair.bob.core.state.channel_id, id=1, amount_msat=1_000_000,
                        payment_hash=bytes(32), cltv_expiry=500, onion_routing_packet=bytes(1366))  # fmt: skip
    out = pair.feed(pair.bob, Received(add))
    assert pair.bob.core.phase is Phase.FAILED and any(isinstance(e, ChannelFailed) for e in out.events)


def test_the_halving_negotiation_without_fee_range() -> None:
    pair = opened(bob_feerate=6000)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    offers = []
    while pair.wire:  # an older peer on both ends: closing_signed without fee_range
        target, msg = pair.wire.popleft()
        if isinstance(msg, ClosingSigned):
            msg = dataclasses.replace(msg, tlvs=EMPTY_TLV_STREAM)
            offers.append(msg.fee_satoshis)
        pair.feed(target, Received(msg))
    closed_tx(pair)
    assert len(offers) > 3 and offers[0] < offers[1]  # Alice low, Bob halfway up, ... until they meet
    assert offers[-1] == offers[-2]


def test_ranges_that_do_not_overlap_end_with_a_warning() -> None:
    pair = opened(bob_feerate=200_000)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=253, max_fee_sat=200))
    # Bob's range starts at half of his (huge) preference: above Alice's cap.
    pair.pump()
    warned = [m for o in pair.bob.outputs + pair.alice.outputs for m in o.messages if isinstance(m, WarningMessage)]
    assert warned and b"do not overlap" in warned[0].data
    assert not any(isinstance(e, ChannelClosed) for e in pair.alice.events + pair.bob.events)


def test_a_bad_closing_signature_gets_a_warning() -> None:
    pair = opened()
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    while pair.wire:
        target, msg = pair.wire.popleft()
        if isinstance(msg, ClosingSigned):
            msg = dataclasses.replace(msg, signature=bytes(63) + b"\x01")
            out = pair.feed(target, Received(msg))
            assert isinstance(out.messages[0], WarningMessage)
            return
        pair.feed(target, Received(msg))
    raise AssertionError("no closing_signed was sent")


def test_an_invalid_shutdown_script_gets_a_warning_and_the_channel_stays() -> None:
    # BOLT 2: "if the scriptpubkey is not in one of the above forms: SHOULD send a warning"
    pair = opened()
    bad = Shutdown(channel_id=pair.bob.core.state.channel_id, scriptpubkey=b"\x6a\x01\x00")  # not an allowed form
    out = pair.feed(pair.bob, Received(bad))
    assert pair.bob.core.phase is Phase.NORMAL
    assert [type(m) for m in out.messages] == [WarningMessage]  # no shutdown in answer, no error
    assert b"not an allowed form" in out.messages[0].data  # type: ignore[attr-defined]
    assert not any(isinstance(e, ChannelFailed) for e in out.events)
    # a good shutdown afterwards closes the channel as usual
    pair.reconnect()
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    closed_tx(pair)


def test_upfront_shutdown_script_is_enforced() -> None:
    pair = ChannelPair(
        push_msat=300_000_000,
        alice_config=ChannelConfig(upfront_shutdown_script=ALICE_SCRIPT),
        bob_config=ChannelConfig(close_script=BOB_SCRIPT),
    )
    pair.open()
    with pytest.raises(LocalMisuse):
        pair.feed(pair.alice, CloseChannel(BOB_SCRIPT, feerate_per_kw=1000))
    other = Shutdown(channel_id=pair.bob.core.state.channel_id, scriptpubkey=BOB_SCRIPT)
    out = pair.feed(pair.bob, Received(other))
    # Alice promised ALICE_SCRIPT. BOLT 2: "MAY send a warning", "MUST fail the connection"
    assert [type(m) for m in out.messages] == [WarningMessage]
    assert pair.bob.core.phase is Phase.NORMAL and not pair.bob.core.state.closing


def test_reconnection_restarts_the_close() -> None:
    pair = opened()
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    target, msg = pair.wire.popleft()
    pair.feed(target, Received(msg))  # Bob answers with his shutdown, which is lost
    mark = len(pair.alice.outputs)
    pair.reconnect()
    assert "Shutdown" in pair.sent_types(pair.alice, mark)
    closed_tx(pair)


def test_the_fundee_counters_inside_both_ranges() -> None:
    pair = opened(bob_feerate=3000)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    offers = [m for o in pair.alice.outputs + pair.bob.outputs for m in o.messages if isinstance(m, ClosingSigned)]
    first = next(m for o in pair.alice.outputs for m in o.messages if isinstance(m, ClosingSigned))
    alice_max = first.tlvs["fee_range"].max_fee_satoshis
    closed_tx(pair)
    fee = next(e.fee_sat for e in pair.bob.events if isinstance(e, ChannelClosed))
    # Bob wants 3x Alice's fee; Alice accepts up to 2x: they settle at the top of the overlap.
    assert fee == alice_max == 2 * first.fee_satoshis
    assert len(offers) == 3  # Alice's offer, Bob's counter, Alice's echo


def simple_pair(push_msat: int) -> ChannelPair:
    from lnpmsg.channels.simple_close import SIMPLE_CLOSE_FEATURE

    pair = ChannelPair(
        push_msat=push_msat,
        alice_config=ChannelConfig(close_script=ALICE_SCRIPT),
        bob_config=ChannelConfig(close_script=BOB_SCRIPT, closing_feerate_per_kw=1500),
        extra_features=1 << (60 + 1) & SIMPLE_CLOSE_FEATURE,  # both offer option_simple_close
    )
    pair.open()
    return pair


def test_simple_close_each_side_pays_its_own_transaction() -> None:
    pair = simple_pair(300_000_000)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    assert pair.sent_types(pair.alice).count("ClosingComplete") == 1
    assert pair.sent_types(pair.bob).count("ClosingSig") == 1
    assert pair.alice.core.phase is Phase.CLOSED and pair.bob.core.phase is Phase.CLOSED
    assert pair.funding_tx is not None
    txs = {e.raw_tx: e.fee_sat for e in pair.alice.events + pair.bob.events if isinstance(e, ChannelClosed)}
    assert len(txs) == 2  # Alice's and Bob's, each known to both
    for raw, fee in txs.items():
        tx = Tx.parse(raw)
        assert kernel_verify_scripts(tx, [pair.funding_tx.outputs[1]]) is None
        paid = {o.script_pubkey: o.amount_sat for o in tx.outputs}
        assert paid[ALICE_SCRIPT] + paid[BOB_SCRIPT] == FUNDING_SAT - fee
        assert paid[BOB_SCRIPT] in (300_000, 300_000 - fee)  # the closer pays
        assert tx.inputs[0].sequence == 0xFFFFFFFD


def test_simple_close_leaves_out_a_dust_closee() -> None:
    pair = simple_pair(200_000)  # Bob has 200 sat: dust
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    (complete,) = [m for o in pair.alice.outputs for m in o.messages if type(m).__name__ == "ClosingComplete"]
    assert set(complete.tlvs) == {"closer_output_only"}  # type: ignore[attr-defined]
    (closed,) = [e for e in pair.alice.events if isinstance(e, ChannelClosed)]
    assert [o.script_pubkey for o in Tx.parse(closed.raw_tx).outputs] == [ALICE_SCRIPT]
    assert pair.alice.core.phase is Phase.CLOSED  # Bob had nothing to close with


def test_closing_signed_is_refused_under_simple_close() -> None:
    pair = simple_pair(300_000_000)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.wire.clear()
    bogus = ClosingSigned(channel_id=pair.alice.core.state.channel_id, fee_satoshis=1000, signature=bytes(64))
    pair.feed(pair.alice, Received(Shutdown(channel_id=pair.alice.core.state.channel_id, scriptpubkey=BOB_SCRIPT)))
    out = pair.feed(pair.alice, Received(bogus))
    assert any(isinstance(e, ChannelFailed) for e in out.events)


@pytest.mark.parametrize("anysegwit", [False, True])
def test_a_witness_v1_shutdown_script_needs_anysegwit(anysegwit: bool) -> None:
    taproot = bytes([0x51, 32]) + bytes(range(32))
    pair = ChannelPair(
        push_msat=300_000_000,
        alice_config=ChannelConfig(close_script=taproot),
        bob_config=ChannelConfig(close_script=BOB_SCRIPT),
        extra_features=(1 << 27) if anysegwit else 0,  # option_shutdown_anysegwit
    )
    pair.open()
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    if anysegwit:
        assert {o.script_pubkey for o in closed_tx(pair).outputs} == {taproot, BOB_SCRIPT}
    else:
        # a warning (BOLT 2: "SHOULD send a warning"), no failed channel
        assert "WarningMessage" in pair.sent_types(pair.bob)
        assert pair.bob.core.phase is Phase.NORMAL
        assert not any(isinstance(e, ChannelFailed) for e in pair.bob.events)


def test_simple_close_starts_over_after_reconnection() -> None:
    pair = simple_pair(300_000_000)
    pair.feed(pair.alice, CloseChannel(b"", feerate_per_kw=1000))
    while pair.wire and not isinstance(pair.wire[0][1], ClosingComplete):
        target, msg = pair.wire.popleft()
        pair.feed(target, Received(msg))  # the shutdowns cross...
    assert pair.alice.core.phase is Phase.NEGOTIATING
    pair.reconnect()  # ...and the first closing_complete is lost with the connection
    assert pair.alice.core.phase is Phase.CLOSED and pair.bob.core.phase is Phase.CLOSED
    txs = {e.raw_tx for e in pair.alice.events + pair.bob.events if isinstance(e, ChannelClosed)}
    assert len(txs) == 2


def test_a_channel_can_close_before_channel_ready() -> None:
    pair = ChannelPair(
        push_msat=300_000_000,
        alice_config=ChannelConfig(close_script=ALICE_SCRIPT),
        bob_config=ChannelConfig(close_script=BOB_SCRIPT),
    )
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    assert pair.bob.core.phase is Phase.AWAIT_READY  # funded, not yet confirmed
    pair.feed(pair.bob, CloseChannel(b"", feerate_per_kw=1000))
    pair.pump()
    closed_tx(pair)
