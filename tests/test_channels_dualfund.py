"""Channel establishment v2 in the channel core (lnpmsg.channels.dualfund), sans-IO: two cores
open a dual-funded channel (opener only, both contributing), the funding transaction is signed
in BOLT 2's order and passes the consensus engine's script checks, the channel then works as any
(payments, reconnection); records replay to the same state; aborts end the open cleanly."""

from __future__ import annotations

import copy

import pytest
from test_channels_pair import ChannelPair, Side, verify_commitments

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import hash160, sha256
from lnpmsg.bitcoin.script import p2pkh_script, p2wpkh
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.kernel import kernel_verify_scripts
from lnpmsg.channels.dualfund import (
    AcceptV2Command,
    FundingSignaturesNeeded,
    FundingWitnesses,
    InteractiveAborted,
    OpenV2Command,
    v2_channel_id,
)
from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import BroadcastFunding, Disconnected, Received, Reconnected
from lnpmsg.channels.interactive_parts import OwnInput, OwnOutput, contribution_fee
from lnpmsg.channels.keys import pubkey_from_privkey
from lnpmsg.channels.messages_v2 import OpenChannel2, TxAbort, TxAddInput, TxSignatures
from lnpmsg.channels.records import restore
from lnpmsg.channels.state import Phase
from lnpmsg.wire import CHAIN_HASH_REGTEST, Message

FEERATE = 2_500
WALLET = {"alice": sha256(b"alice wallet"), "bob": sha256(b"bob wallet")}


def coin(name: str, amount: int) -> tuple[OwnInput, Tx]:
    prev = Tx(2, (TxIn(OutPoint(sha256(name.encode()), 0)),), (TxOut(amount, p2wpkh(pubkey_from_privkey(WALLET[name]))),))
    return OwnInput(prev.raw, 0), prev


def contribution(name: str, share: int, amount: int, *, opener: bool) -> tuple[tuple[OwnInput, ...], tuple[OwnOutput, ...]]:
    if share == 0:
        return (), ()
    own, _ = coin(name, amount)
    script = p2wpkh(pubkey_from_privkey(WALLET[name]))
    # the opener pays for the funding output too (a P2WSH: any 34-byte script weighs the same)
    fee = contribution_fee([script], [script, b"\x00\x20" + bytes(32)] if opener else [script], FEERATE, initiator=opener)
    return (own,), (OwnOutput(amount - share - fee, script),)


class DualPair(ChannelPair):
    """A ChannelPair whose channel is opened with v2: Alice opens, Bob contributes ``bob_sat``."""

    def __init__(self, *, alice_sat: int = 600_000, bob_sat: int = 0, sign: bool = True, bob_coin: int = 900_000,
                 node_ids: tuple[bytes, bytes] = (b"", b""), **kw) -> None:  # fmt: skip
        super().__init__(**kw)
        self.alice_sat, self.bob_sat, self.sign = alice_sat, bob_sat, sign
        self.coins = {"alice": 1_500_000, "bob": bob_coin}
        self.node_ids = node_ids  # (Alice's, Bob's)
        #: every message sent, in order, with its sender
        self.sent: list[tuple[str, Message]] = []

    def step(self) -> Message:
        """Deliver the first message on the wire only (what it causes stays on the wire)."""
        target, msg = self.wire.popleft()
        self.deliver(target, msg)
        return msg

    def deliver(self, target: Side, msg: Message) -> None:
        """Bob accepts an ``open_channel2`` with his contribution; every other message goes to its core."""
        if target is self.bob and isinstance(msg, OpenChannel2):
            inputs, outputs = contribution("bob", self.bob_sat, self.coins["bob"], opener=False)
            self.feed(target, AcceptV2Command(msg, CHAIN_HASH_REGTEST, self.features, self.features, self.bob_sat,
                                              inputs, outputs, b"bob entropy", self.bob_config, self.policy,
                                              local_node_id=self.node_ids[1], remote_node_id=self.node_ids[0]))  # fmt: skip
        else:
            super().deliver(target, msg)

    def feed(self, side: Side, item) -> object:
        out = super().feed(side, item)
        self.sent += [("alice" if side is self.alice else "bob", m) for m in out.messages]  # type: ignore[attr-defined]
        for event in out.events:  # type: ignore[attr-defined]
            if isinstance(event, FundingSignaturesNeeded) and self.sign:
                self.feed(side, FundingWitnesses(self.witnesses(side, event)))
        return out

    def witnesses(self, side: Side, event: FundingSignaturesNeeded) -> tuple[tuple[bytes, ...], ...]:
        name = "alice" if side is self.alice else "bob"
        key = WALLET[name]
        tx = Tx.parse(event.raw_tx)
        _, prev = coin(name, self.coins[name])
        amount = prev.outputs[0].amount_sat
        out = []
        for index in event.indices:
            digest = segwit_v0_sighash(tx, index, p2pkh_script(hash160(pubkey_from_privkey(key))), amount, SIGHASH_ALL)
            out.append((sign_digest(key, digest) + bytes([SIGHASH_ALL]), pubkey_from_privkey(key)))
        return tuple(out)

    def open_v2(self) -> None:
        inputs, outputs = contribution("alice", self.alice_sat, 1_500_000, opener=True)
        self.feed(self.alice, OpenV2Command(
            CHAIN_HASH_REGTEST, self.alice_sat, FEERATE, self.feerate, 100, self.features, self.features,
            inputs, outputs, b"alice entropy", self.alice_config, self.policy,
            local_node_id=self.node_ids[0], remote_node_id=self.node_ids[1],
        ))  # fmt: skip
        self.pump()


def signed_funding(pair: DualPair) -> Tx:
    (a,) = [e for e in pair.alice.events if isinstance(e, BroadcastFunding)]
    (b,) = [e for e in pair.bob.events if isinstance(e, BroadcastFunding)]
    assert a.raw_tx == b.raw_tx  # both broadcast the same, fully signed
    return Tx.parse(a.raw_tx)


def spent_outputs(tx: Tx) -> list[TxOut]:
    prevs = {coin(n, amt)[1].txid: coin(n, amt)[1] for n, amt in (("alice", 1_500_000), ("bob", 900_000))}
    return [prevs[i.prevout.txid].outputs[i.prevout.vout] for i in tx.inputs]


def confirm_and_pay(pair: DualPair, funding: Tx, bob_sat: int) -> None:
    """The channel confirmed on ``funding`` (its commitments valid against it), then Alice pays Bob
    50k sat over it: 550k sat hers, Bob's ``bob_sat`` plus 50k his."""
    pair.funding_tx = funding
    pair.confirm()
    verify_commitments(pair)
    htlc_id, preimage = pair.add(pair.alice, 50_000_000)
    pair.commit(pair.alice)
    pair.fulfill(pair.bob, htlc_id, preimage)
    assert pair.balances() == (550_000_000, bob_sat * 1000 + 50_000_000)


@pytest.mark.parametrize("bob_sat", [0, 250_000], ids=["opener_only", "both"])
def test_dual_funded_open_then_payments(bob_sat: int) -> None:
    pair = DualPair(bob_sat=bob_sat)
    pair.open_v2()
    a, b = pair.alice.core.state, pair.bob.core.state
    assert pair.alice.core.phase is Phase.AWAIT_READY and pair.bob.core.phase is Phase.AWAIT_READY
    assert a.channel_id == b.channel_id == v2_channel_id(
        pair.alice.core.basepoints.revocation_basepoint, pair.bob.core.basepoints.revocation_basepoint
    )
    tx = signed_funding(pair)
    assert kernel_verify_scripts(tx, spent_outputs(tx)) is None
    assert tx.outputs[a.funding_outpoint.vout].amount_sat == 600_000 + bob_sat
    assert a.funding_outpoint == b.funding_outpoint and tx.txid == a.funding_outpoint.txid
    # balances: each side owns what it put in; the opener pays the commitment fee
    assert a.local_commit.spec.to_local_msat == 600_000_000 and a.local_commit.spec.to_remote_msat == bob_sat * 1000
    # BOLT 2 order: the side with less in signs first (Bob: 0 < Alice's, or 900k < 1.5M)
    assert [who for who, m in pair.sent if isinstance(m, TxSignatures)] == ["bob", "alice"]
    # the records that send tx_signatures are durable ones
    for side in (pair.alice, pair.bob):
        for o in side.outputs:
            if any(isinstance(m, TxSignatures) for m in o.messages):
                assert o.records and o.records[0].durable
    confirm_and_pay(pair, tx, bob_sat)
    if bob_sat:  # Bob can pay from his own contribution
        htlc_id, preimage = pair.add(pair.bob, 20_000_000)
        pair.commit(pair.bob)
        pair.fulfill(pair.alice, htlc_id, preimage)
        assert pair.balances() == (570_000_000, bob_sat * 1000 + 30_000_000)
    pair.reconnect()
    assert pair.alice.core.phase is Phase.NORMAL and pair.bob.core.phase is Phase.NORMAL
    verify_commitments(pair)
    # replaying each side's records gives the same state
    for side in (pair.alice, pair.bob):
        assert restore(side.core.secrets, side.records).state == side.core.state


def test_abort_on_a_violation_frees_both_sides() -> None:
    pair = DualPair(bob_sat=250_000)
    inputs, outputs = contribution("alice", 600_000, 1_500_000, opener=True)
    pair.feed(pair.alice, OpenV2Command(CHAIN_HASH_REGTEST, 600_000, FEERATE, pair.feerate, 100, pair.features,
                                        pair.features, inputs, outputs, b"a", pair.alice_config, pair.policy))  # fmt: skip
    pair.step()  # open_channel2 -> Bob (accepts, contributes)
    pair.wire.clear()  # his accept_channel2 never reaches Alice: a forged initiator speaks instead
    cid = pair.bob.core.state.channel_id
    bad = TxAddInput(channel_id=cid, serial_id=1, prevtx=coin("alice", 1_500_000)[1].raw, prevtx_vout=0, sequence=0xFFFFFFFD)
    out = pair.bob.core.receive(Received(bad), pair.now)
    assert [type(m) for m in out.messages] == [TxAbort] and b"parity" in out.messages[0].data
    (aborted,) = [e for e in out.events if isinstance(e, InteractiveAborted)]
    assert aborted.inputs and pair.bob.core.phase is Phase.FAILED
    assert out.records  # the abort is recorded: a restart does not resume the open
    assert restore(pair.bob.core.secrets, pair.bob.records + [r.data for r in out.records]).phase is Phase.FAILED


def test_peer_abort_is_echoed_and_disconnection_aborts() -> None:
    pair = DualPair(bob_sat=250_000, sign=False)  # the wallets never sign: stuck before tx_signatures
    pair.open_v2()
    assert pair.alice.core.phase is Phase.DUAL_SIGNING and pair.bob.core.phase is Phase.DUAL_SIGNING
    cid = pair.alice.core.state.channel_id
    out = pair.alice.core.receive(Received(TxAbort(channel_id=cid, data=b"no")), pair.now)
    assert [type(m) for m in out.messages] == [TxAbort]
    assert any(isinstance(e, InteractiveAborted) for e in out.events) and pair.alice.core.phase is Phase.FAILED
    out = pair.bob.core.receive(Disconnected(), pair.now)
    assert not out.messages and any(isinstance(e, InteractiveAborted) for e in out.events)


def test_after_our_signatures_a_disconnection_resumes() -> None:
    pair = DualPair(bob_sat=0)
    inputs, outputs = contribution("alice", 600_000, 1_500_000, opener=True)
    pair.feed(pair.alice, OpenV2Command(CHAIN_HASH_REGTEST, 600_000, FEERATE, pair.feerate, 100, pair.features,
                                        pair.features, inputs, outputs, b"a", pair.alice_config, pair.policy))  # fmt: skip
    # deliver until Bob's tx_signatures (he signs first: nothing in) is on its way, then cut the line
    while not pair.bob.core.state.dual or not pair.bob.core.state.dual.signatures_sent:
        pair.step()
    pair.wire.clear()
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.bob, Disconnected())
    # Bob's signatures left: he keeps the channel; Alice had not sent hers, nor received Bob's, but
    # her commitment_signed left and Bob signs first: his may have left (they had), and ending the
    # open would leave him waiting for hers with his coins held. She keeps it too, and
    # channel_reestablish (next_funding) completes it.
    assert pair.bob.core.phase is Phase.DUAL_SIGNING
    assert pair.alice.core.phase is Phase.DUAL_SIGNING
    pair.reconnect()
    assert pair.alice.core.phase is Phase.AWAIT_READY and pair.bob.core.phase is Phase.AWAIT_READY
    tx = signed_funding(pair)
    assert kernel_verify_scripts(tx, spent_outputs(tx)) is None


def test_an_open_that_ended_answers_next_funding_with_tx_abort_and_the_peer_forgets_it() -> None:
    """Alice's commitment_signed left, Bob (who signs first) never got it: his open ends at the
    disconnection, hers waits (his tx_signatures might have left). Her channel_reestablish names the
    funding; his ended open answers with tx_abort alone (BOLT 2), and her open ends on it, her coins freed."""
    pair = DualPair(bob_sat=250_000)
    inputs, outputs = contribution("alice", 600_000, 1_500_000, opener=True)
    pair.feed(pair.alice, OpenV2Command(CHAIN_HASH_REGTEST, 600_000, FEERATE, pair.feerate, 100, pair.features,
                                        pair.features, inputs, outputs, b"a", pair.alice_config, pair.policy))  # fmt: skip
    while not pair.alice.core.state.remote_commit:
        pair.step()
    pair.wire.clear()  # her commitment_signed is lost
    pair.feed(pair.alice, Disconnected())
    pair.feed(pair.bob, Disconnected())
    assert pair.alice.core.phase is Phase.DUAL_SIGNING and pair.bob.core.phase is Phase.FAILED
    pair.feed(pair.alice, Reconnected())
    pair.feed(pair.bob, Reconnected())
    assert pair.sent_types(pair.bob, len(pair.bob.outputs) - 1) == []  # an ended open sends no channel_reestablish
    since = len(pair.bob.outputs)
    pair.pump()
    assert pair.sent_types(pair.bob, since) == ["TxAbort"]
    assert pair.alice.core.phase is Phase.FAILED
    (aborted,) = [e for e in pair.alice.events if isinstance(e, InteractiveAborted)]
    assert aborted.inputs == inputs and "peer aborted" in aborted.reason


def test_resume_with_next_funding_after_both_sent() -> None:
    pair = DualPair(bob_sat=250_000)
    inputs, outputs = contribution("alice", 600_000, 1_500_000, opener=True)
    pair.feed(pair.alice, OpenV2Command(CHAIN_HASH_REGTEST, 600_000, FEERATE, pair.feerate, 100, pair.features,
                                        pair.features, inputs, outputs, b"a", pair.alice_config, pair.policy))  # fmt: skip
    # Bob (less in) sends tx_signatures first; Alice answers with hers, which is lost
    while pair.alice.core.phase is not Phase.AWAIT_READY:
        pair.step()
    assert pair.bob.core.phase is Phase.DUAL_SIGNING
    pair.reconnect()
    assert pair.bob.core.phase is Phase.AWAIT_READY  # Bob's next_funding asked, Alice sent her signatures again
    tx = signed_funding(pair)
    assert kernel_verify_scripts(tx, spent_outputs(tx)) is None


def test_accepter_contribution_must_pay_and_v2_replay() -> None:
    pair = DualPair()
    pair.hold = True
    pair.open_v2()
    (_, open2), = pair.held
    bad_inputs, _ = contribution("bob", 250_000, 900_000, opener=False)
    before = copy.copy(pair.bob.core.state)
    with pytest.raises(LocalMisuse, match="do not cover"):
        pair.bob.core.receive(AcceptV2Command(open2, CHAIN_HASH_REGTEST, pair.features, pair.features, 250_000,
                                              bad_inputs, (OwnOutput(800_000, b"\x00\x14" + bytes(20)),), b"e"), 1.0)  # fmt: skip
    assert pair.bob.core.state == before and pair.bob.core.phase is Phase.NEW
    # the temporary id is the v2 id with a zero basepoint for the accepter's
    assert open2.temporary_channel_id == v2_channel_id(bytes(33), pair.alice.core.basepoints.revocation_basepoint)


def _msgs(side: Side) -> list[Message]:
    return [m for o in side.outputs for m in o.messages]


def test_snapshot_and_restart_mid_negotiation() -> None:
    pair = DualPair(bob_sat=250_000, sign=False)
    pair.open_v2()
    assert pair.bob.core.phase is Phase.DUAL_SIGNING
    from lnpmsg.channels.records import encode_snapshot, restore_snapshot

    for side in (pair.alice, pair.bob):
        assert restore_snapshot(side.core.secrets, encode_snapshot(side.core)).state == side.core.state
    # a restart: the records replayed, then Disconnected (as the manager feeds it): the open ends,
    # and the event names our coins so the shell frees them
    core = restore(pair.bob.core.secrets, pair.bob.records)
    assert core.state == pair.bob.core.state
    out = core.receive(Disconnected(), 9_999.0)
    (aborted,) = [e for e in out.events if isinstance(e, InteractiveAborted)]
    assert aborted.inputs == core.state.dual.inputs and len(aborted.inputs) == 1
    assert core.phase is Phase.FAILED and out.records


@pytest.mark.parametrize("alice_lower", [True, False])
def test_equal_inputs_the_lower_node_id_signs_first(alice_lower: bool) -> None:
    low, high = b"\x02" + b"\x01" * 32, b"\x03" + b"\x01" * 32
    pair = DualPair(bob_sat=250_000, bob_coin=1_500_000, node_ids=(low, high) if alice_lower else (high, low))
    pair.open_v2()
    assert pair.alice.core.phase is Phase.AWAIT_READY and pair.bob.core.phase is Phase.AWAIT_READY
    signers = [who for who, m in pair.sent if isinstance(m, TxSignatures)]
    assert signers == (["alice", "bob"] if alice_lower else ["bob", "alice"])
    tx = signed_funding(pair)
    prevs = {coin(n, 1_500_000)[1].txid: coin(n, 1_500_000)[1] for n in ("alice", "bob")}
    assert kernel_verify_scripts(tx, [prevs[i.prevout.txid].outputs[0] for i in tx.inputs]) is None
