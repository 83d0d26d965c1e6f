"""The channel monitor on the real consensus engine: a channel with HTLCs both
ways goes on chain (our commitment, theirs, a revoked one, after a data loss,
through reorgs); blocks of the embedded regtest chain are fed to the monitor,
everything it asks to broadcast is mined in a block the kernel must accept,
and the funds end at our destination script.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import p2wpkh
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.regtest import RegtestChain
from lnpmsg.channels import TO_LOCAL, Htlc, funding_spendable, htlc_claim, htlc_tag
from lnpmsg.channels.keys import pubkey_from_privkey
from lnpmsg.channels.monitor import (
    ChannelMonitor,
    CommitmentKind,
    CommitmentSeen,
    DataLossDetected,
    FeeInput,
    HtlcResolved,
    Irrevocable,
    MonitorError,
    MonitorEvent,
    NeedFeeInput,
    OutputSwept,
    OutputToWallet,
    PaymentPreimage,
    Reorged,
    decode_stream,
    encode_stream,
)
from lnpmsg.testing.channels import Party, secret
from lnpmsg.testing.monitor import ALICE, BOB, ChannelKit, State, secrets_of
from lnpmsg.wallet import Wallet

FUNDING_SAT = 1_000_000
DELAY = 10
FEERATE = 2_500
ESTIMATE = 1_000
FIXED_TIME = 1_700_000_000
VARIANTS = pytest.mark.parametrize("anchors", [False, True], ids=["static_remotekey", "anchors"])
PREIMAGES = {i: secret(f"preimage {i}") for i in range(6)}


def htlcs(base: int) -> tuple[Htlc, ...]:
    """Alice's view. H4 is dust without anchors, H5 always."""
    spec = [
        (True, 5_000, 40),  # H0: Alice offers; it times out
        (False, 7_000, 50),  # H1: Bob offers; Alice knows the preimage
        (True, 3_000, 45),  # H2: Alice offers; Bob claims it with the preimage
        (False, 4_000, 35),  # H3: Bob offers; it times out back to Bob
        (True, 1_000, 60),  # H4: trimmed without anchors
        (False, 400, 60),  # H5: trimmed in both formats
    ]
    return tuple(Htlc(i, o, sat * 1000, sha256(PREIMAGES[i]), base + d) for i, (o, sat, d) in enumerate(spec))


def states(base: int) -> list[State]:
    h = htlcs(base)
    return [
        State(600_000_000, 400_000_000),
        State(591_000_000, 388_600_000, h),
        State(597_999_877, 393_600_123, h[2:]),
    ]


@pytest.fixture
async def onchain(tmp_path: Path) -> AsyncIterator[tuple[RegtestChain, Wallet]]:
    async with EmbeddedChainSource.open(tmp_path / "chain", clock=lambda: FIXED_TIME) as source:
        await source.mine(101)
        wallet = await Wallet.open(tmp_path / "wallet", source)
        await source.faucet(wallet.new_address(), 3 * FUNDING_SAT)
        await source.mine(1)
        await wallet.sync()
        yield source.core, wallet


def accept(chain: RegtestChain, txs: Sequence[Tx]) -> int:
    """One block holding exactly ``txs``: the kernel must connect it."""
    result = chain.submit_transactions_in_block(txs)
    assert result.accepted, result.reason
    return chain.height


@dataclass
class Driver:
    """Feeds the chain's blocks to a monitor (following reorgs) and mines what it broadcasts."""

    chain: RegtestChain
    monitor: ChannelMonitor
    events: list[MonitorEvent] = field(default_factory=list)
    fed: dict[int, bytes] = field(default_factory=dict)
    fee_coins: dict[str, FeeInput] = field(default_factory=dict)

    def feed(self) -> list[MonitorEvent]:
        new: list[MonitorEvent] = []
        height = self.monitor.height
        assert height is not None
        while self.fed.get(height) is not None and self.fed[height] != self.chain.block_hash(height):
            new += self.monitor.block_disconnected(height)
            del self.fed[height]
            height -= 1
        for h in range(height + 1, self.chain.height + 1):
            block_hash = self.chain.block_hash(h)
            assert block_hash is not None
            new += self.monitor.block_connected(h, Block.parse(self.chain.block(block_hash)).txs)
            self.fed[h] = block_hash
        for event in list(new):
            if isinstance(event, NeedFeeInput):
                coin_key = secret(f"fee coin {event.group}")
                outpoint = self.chain.faucet(p2wpkh(pubkey_from_privkey(coin_key)), 50_000)
                self.fee_coins[event.group] = FeeInput(outpoint, 50_000, coin_key)
                new += self.monitor.provide_fee_input(event.group, self.fee_coins[event.group])
        self.events += new
        return new

    def step(self, *extra: Tx) -> int:
        """Mine the monitor's transactions (and ``extra``, the peer's) in one block; feed it."""
        # the mempool holds the fee coins' faucet transactions, and what a reorg took out of blocks
        waiting = [entry.tx for entry in self.chain.mempool.entries()]
        txs = {tx.txid: tx for tx in [*waiting, *extra, *self.monitor.transactions_to_broadcast()]}
        height = accept(self.chain, list(txs.values()))
        self.feed()
        return height

    def run_to(self, height: int) -> None:
        while self.chain.height < height:
            self.step()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def open_channel(onchain: tuple[RegtestChain, Wallet], anchors: bool) -> tuple[ChannelKit, int]:
    chain, wallet = onchain
    spk = funding_spendable(FUNDING_SAT, ALICE.basepoints().funding_pubkey, BOB.basepoints().funding_pubkey)
    funded = await wallet.fund_output(spk.script_pubkey, FUNDING_SAT, feerate_per_kw=FEERATE)
    height = accept(chain, [funded.tx])
    return ChannelKit(funded.outpoint, FUNDING_SAT, anchors, DELAY, feerate_per_kw=FEERATE), height


def monitor_for(kit: ChannelKit, me: Party, records: Sequence[object], chain: RegtestChain) -> Driver:
    monitor = ChannelMonitor(secrets_of(me), kit.updates(me, records), feerate_per_kw=ESTIMATE)
    driver = Driver(chain, monitor)
    height = chain.height
    block_hash = chain.block_hash(height)
    assert block_hash is not None
    monitor.block_connected(height, Block.parse(chain.block(block_hash)).txs)
    driver.fed[height] = block_hash
    return driver


def paid_to(chain: RegtestChain, txs: Sequence[Tx], script: bytes) -> int:
    """Satoshis that ``txs`` pay to ``script`` and that are still unspent on chain."""
    total = 0
    for tx in txs:
        for vout, out in enumerate(tx.outputs):
            if out.script_pubkey == script and chain.get_txout(tx.outpoint(vout)) is not None:
                total += out.amount_sat
    return total


def swept_txs(driver: Driver) -> list[Tx]:
    found = []
    for event in driver.of(OutputSwept):
        got = driver.chain.find_transaction(event.txid)
        if got is not None and got[1] is not None:
            found.append(got[0])
    return list({tx.txid: tx for tx in found}.values())


def bury(driver: Driver) -> None:
    """Mine until the monitor reports everything irrevocably resolved."""
    for _ in range(120):
        if driver.of(Irrevocable):
            return
        driver.step()
    raise AssertionError("never irrevocable")


# --------------------------------------------------------------------------- our commitment


@VARIANTS
async def test_our_commitment_htlcs_both_ways(onchain, anchors: bool) -> None:
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors)
    state = states(base)[1]
    h = state.htlcs
    records = [kit.local_record(ALICE, 1, state), kit.remote_record(ALICE, 1, state), PaymentPreimage(PREIMAGES[1])]
    alice = monitor_for(kit, ALICE, records, chain)
    ours = kit.commitment(ALICE, 1, state)

    alice.monitor.force_close()
    confirmed = alice.step()
    assert chain.get_txout(kit.funding) is None
    [seen] = alice.of(CommitmentSeen)
    assert seen.kind is CommitmentKind.OURS and seen.txid == ours.tx.txid and seen.height == confirmed

    # Bob claims H2 with its preimage (his direct spend of our offered HTLC output)
    if anchors:
        alice.step()
    bob_claim = htlc_claim(ours, htlc_tag(h[2]), BOB.wallet_script(), feerate_per_kw=FEERATE)
    alice.step(kit.sign_as(BOB, ALICE, 1, bob_claim, preimage=PREIMAGES[2]))
    learned = [e for e in alice.of(HtlcResolved) if e.htlc_id == 2]
    assert learned and learned[0].preimage == PREIMAGES[2] and learned[0].offered

    # Bob takes H3 back after its expiry (we never learned its preimage)
    alice.run_to(h[3].cltv_expiry)
    bob_timeout = htlc_claim(ours, htlc_tag(h[3]), BOB.wallet_script(), feerate_per_kw=FEERATE)
    alice.step(kit.sign_as(BOB, ALICE, 1, bob_timeout))

    alice.run_to(max(x.cltv_expiry for x in h) + DELAY + 2)
    bury(alice)
    resolved = {(e.htlc_id, e.preimage) for e in alice.of(HtlcResolved)}
    # H4 times out on chain with anchors, is dust without; H5 is dust: both fail upstream
    assert resolved == {(0, None), (1, PREIMAGES[1]), (2, PREIMAGES[2]), (3, None), (4, None), (5, None)}
    dust = {e.htlc_id for e in alice.of(HtlcResolved) if e.txid == ours.tx.txid}
    assert dust == ({5} if anchors else {4, 5})
    whats = {e.what for e in alice.of(OutputSwept) if e.ours}
    assert {"to_local", "htlc_success:1", "htlc_timeout:0", "htlc_success:1:delayed", "htlc_timeout:0:delayed"} <= whats
    # every output of ours is spent, and what is left of it sits at Alice's script
    for out in ours.outputs:
        if out.tag in (TO_LOCAL, htlc_tag(h[0]), htlc_tag(h[1])):
            assert chain.get_txout(out.outpoint) is None
    to_local = ours.output(TO_LOCAL).amount_sat
    # fee coins came back as change to the same script: count only what the channel paid
    total = paid_to(chain, swept_txs(alice), ALICE.wallet_script()) - 50_000 * len(alice.fee_coins)
    htlc_value = 5_000 + 7_000 + (1_000 if anchors else 0)
    assert to_local < total < to_local + htlc_value
    assert alice.monitor.transactions_to_broadcast() == []
    if anchors:
        # the zero-fee HTLC transactions went out merged with a wallet input (SIGHASH_SINGLE|ANYONECANPAY)
        assert any(group.startswith("htlc_tx:") for group in alice.fee_coins)


# --------------------------------------------------------------------------- their commitment


@VARIANTS
async def test_their_current_commitment(onchain, anchors: bool) -> None:
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors)
    state = states(base)[1]
    h = state.htlcs
    records = [kit.local_record(ALICE, 1, state), kit.remote_record(ALICE, 1, state), PaymentPreimage(PREIMAGES[1])]
    alice = monitor_for(kit, ALICE, records, chain)
    theirs = kit.commitment(BOB, 1, state)

    confirmed = alice.step(kit.signed_commitment(BOB, 1, state))
    [seen] = alice.of(CommitmentSeen)
    assert seen.kind is CommitmentKind.THEIRS_CURRENT and seen.height == confirmed
    if not anchors:
        [wallet] = alice.of(OutputToWallet)
        assert wallet.script_pubkey == p2wpkh(ALICE.basepoints().payment_basepoint)
    # Bob's HTLC-success for H2 (he knows its preimage): Alice learns it
    success = theirs.second_stage_for(htlc_tag(Htlc(2, False, 3_000_000, h[2].payment_hash, h[2].cltv_expiry)))
    if anchors:
        alice.step()
    alice.step(kit.sign_as(BOB, BOB, 1, success, preimage=PREIMAGES[2]))
    assert any(e.htlc_id == 2 and e.preimage == PREIMAGES[2] for e in alice.of(HtlcResolved))

    alice.run_to(max(x.cltv_expiry for x in h) + 2)
    bury(alice)
    whats = {e.what for e in alice.of(OutputSwept) if e.ours}
    assert {"htlc_success:1", "htlc_timeout:0"} <= whats
    assert ("to_remote" in whats) == anchors
    for htlc in (h[0], h[1]):
        flipped = Htlc(htlc.htlc_id, not htlc.offered, htlc.amount_msat, htlc.payment_hash, htlc.cltv_expiry)
        assert chain.get_txout(theirs.output(htlc_tag(flipped)).outpoint) is None
    total = paid_to(chain, swept_txs(alice), ALICE.wallet_script())
    assert 0 < total < 12_000 + (state.alice_msat // 1000 if anchors else 0)


# --------------------------------------------------------------------------- revoked


@VARIANTS
async def test_revoked_commitment_penalty_takes_everything(onchain, anchors: bool) -> None:
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors)
    one, two = states(base)[1], states(base)[2]
    records = [
        kit.local_record(BOB, 1, one), kit.remote_record(BOB, 1, one),
        kit.local_record(BOB, 2, two), kit.remote_record(BOB, 2, two), kit.revocation(BOB, 1),
    ]  # fmt: skip
    bob = monitor_for(kit, BOB, records, chain)
    revoked = kit.commitment(ALICE, 1, one)
    h = one.htlcs
    # Alice cheats with state 1, and with her HTLC-success for H1 as soon as it may confirm
    her_success = kit.sign_as(ALICE, ALICE, 1, revoked.second_stage_for(htlc_tag(h[1])), preimage=PREIMAGES[1])
    cheat = kit.signed_commitment(ALICE, 1, one)
    if anchors:
        bob.step(cheat)
        # Bob's penalty is out; she gets hers in first (the test mines hers alone)
        accept(chain, [her_success])
        bob.feed()
    else:
        bob.step(cheat, her_success)
    [seen] = bob.of(CommitmentSeen)
    assert seen.kind is CommitmentKind.REVOKED
    bob.step()
    assert any(e.htlc_id == 1 and e.preimage == PREIMAGES[1] for e in bob.of(HtlcResolved))
    bury(bob)
    # nothing of Alice's is left: every revocable output and her HTLC-success output went to Bob
    for out in revoked.outputs:
        if any(p.name == "revocation" for p in out.spendable.paths):
            assert chain.get_txout(out.outpoint) is None
    assert chain.get_txout(her_success.outpoint(0)) is None
    penalties = [e for e in bob.of(OutputSwept) if e.what.startswith("penalty")]
    assert {e.what for e in penalties} >= {"penalty:to_local", "penalty:second:1"}
    # the one output she took first is the H1 HTLC output, whose HTLC-success output Bob then took
    assert {e.what for e in penalties if not e.ours} == {"penalty:htlc:received:1"}  # her view: received
    total = paid_to(chain, swept_txs(bob), BOB.wallet_script())
    assert total > revoked.output(TO_LOCAL).amount_sat


@VARIANTS
@pytest.mark.parametrize("punished", [False, True], ids=["unpunished", "punished"])
async def test_an_old_commitment_of_ours_on_chain_is_ours_revoked(onchain, anchors: bool, punished: bool) -> None:
    """Alice's state-1 commitment (revoked at state 2, e.g. broadcast by a node started from an old copy of
    her store) is recognised as hers: its to_local is hers after her delay unless Bob takes it first with
    the revocation key. Its HTLCs (state 1's, which she no longer keeps) are never given up."""
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors)
    one, two = states(base)[1], states(base)[2]
    alice = monitor_for(kit, ALICE, [kit.local_record(ALICE, 1, one), kit.remote_record(ALICE, 1, one),
                                     kit.local_record(ALICE, 2, two), kit.remote_record(ALICE, 2, two)], chain)  # fmt: skip
    bob = monitor_for(kit, BOB, [kit.local_record(BOB, 1, one), kit.remote_record(BOB, 1, one),
                                 kit.local_record(BOB, 2, two), kit.remote_record(BOB, 2, two),
                                 kit.revocation(BOB, 1)], chain)  # fmt: skip
    old = kit.commitment(ALICE, 1, one)
    confirmed = alice.step(kit.signed_commitment(ALICE, 1, one))
    [seen] = alice.of(CommitmentSeen)
    assert (seen.kind, seen.commitment_number, seen.height) == (CommitmentKind.OURS_REVOKED, 1, confirmed)
    [claim] = alice.monitor.pending_claims()
    assert (claim.outpoint, claim.earliest) == (old.output(TO_LOCAL).outpoint, confirmed + DELAY)
    if punished:
        bob.feed()
        bob.step()  # Bob's penalty
        alice.feed()
    alice.run_to(confirmed + DELAY + 1)
    [swept] = [e for e in alice.of(OutputSwept) if e.what == "to_local"]
    assert swept.ours is not punished and swept.outpoint == old.output(TO_LOCAL).outpoint
    assert chain.get_txout(old.output(TO_LOCAL).outpoint) is None
    assert alice.monitor.pending_claims() == [] and alice.of(HtlcResolved) == []
    mine = paid_to(chain, swept_txs(alice), ALICE.wallet_script())
    assert (mine == 0) if punished else (0 < mine < old.output(TO_LOCAL).amount_sat)


# --------------------------------------------------------------------------- reorgs


@VARIANTS
async def test_reorg_of_commitment_and_of_sweep(onchain, anchors: bool) -> None:
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors)
    state = states(base)[1]
    records = [kit.local_record(ALICE, 1, state), kit.remote_record(ALICE, 1, state), PaymentPreimage(PREIMAGES[1])]
    alice = monitor_for(kit, ALICE, records, chain)
    commitment = kit.signed_commitment(BOB, 1, state)

    fork = chain.tip()
    alice.step(commitment)
    assert alice.of(CommitmentSeen)
    chain.mine(2, parent=fork.block_hash)
    alice.feed()
    assert chain.get_txout(kit.funding) is not None
    assert [e for e in alice.of(Reorged) if isinstance(e.event, CommitmentSeen)]
    assert alice.monitor.pending_claims() == [] and alice.monitor.transactions_to_broadcast() == []

    # the commitment confirms again: claims come back; the first sweep's block is reorged out too
    alice.step(commitment)
    assert len(alice.of(CommitmentSeen)) == 2
    before_sweep = chain.tip()
    alice.step()
    swept = [e for e in alice.of(OutputSwept) if e.height == before_sweep.height + 1]
    assert swept
    chain.mine(2, parent=before_sweep.block_hash)
    alice.feed()
    undone = {e.event.outpoint for e in alice.of(Reorged) if isinstance(e.event, OutputSwept)}
    assert {e.outpoint for e in swept} <= undone
    again = alice.monitor.transactions_to_broadcast()
    assert {i.prevout for tx in again for i in tx.inputs} >= {e.outpoint for e in swept}
    alice.step()
    for event in swept:
        assert chain.get_txout(event.outpoint) is None


# --------------------------------------------------------------------------- data loss


@VARIANTS
async def test_data_loss_never_broadcasts_ours_and_sweeps_to_remote(onchain, anchors: bool) -> None:
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors)
    one, two = states(base)[1], states(base)[2]
    # Alice's records stop at state 1; Bob is at state 2
    records = [kit.local_record(ALICE, 1, one), kit.remote_record(ALICE, 1, one),
               DataLossDetected(2, kit.remote_record(ALICE, 2, two).per_commitment_point)]  # fmt: skip
    alice = monitor_for(kit, ALICE, records, chain)
    with pytest.raises(MonitorError, match="lost channel state"):
        alice.monitor.force_close()
    with pytest.raises(MonitorError):
        alice.monitor.signed_local_commitment()
    assert alice.monitor.force_close_needed(max(x.cltv_expiry for x in one.htlcs)) == []
    alice.step(kit.signed_commitment(BOB, 2, two))
    [seen] = alice.of(CommitmentSeen)
    assert seen.kind is CommitmentKind.THEIRS_UNKNOWN
    alice.step()
    to_remote_sat = two.alice_msat // 1000 - (0 if not anchors else 0)
    if anchors:
        assert [e for e in alice.of(OutputSwept) if e.what == "to_remote" and e.ours]
        assert 0 < paid_to(chain, swept_txs(alice), ALICE.wallet_script()) < to_remote_sat
    else:
        [wallet] = alice.of(OutputToWallet)
        assert chain.get_txout(wallet.outpoint) is not None and wallet.amount_sat > 0


# --------------------------------------------------------------------------- anchors: CPFP


async def test_anchor_cpfp_when_the_commitment_pays_too_little(onchain) -> None:
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors=True)
    state = states(base)[1]
    alice = monitor_for(kit, ALICE, [kit.local_record(ALICE, 1, state), kit.remote_record(ALICE, 1, state)], chain)
    alice.monitor.set_feerate(4 * FEERATE)  # the commitment's 2500 sat/kw is no longer enough
    [need] = alice.monitor.force_close()
    assert isinstance(need, NeedFeeInput) and need.group == "anchor" and need.feerate_per_kw == 4 * FEERATE
    coin_key = secret("cpfp coin")
    coin = chain.faucet(p2wpkh(pubkey_from_privkey(coin_key)), 50_000)
    assert alice.monitor.provide_fee_input("anchor", FeeInput(coin, 50_000, coin_key)) == []
    commitment, child = alice.monitor.transactions_to_broadcast()
    anchor = kit.commitment(ALICE, 1, state).output("anchor:local")
    assert {i.prevout for i in child.inputs} == {anchor.outpoint, coin}
    parent_fee = kit.commitment(ALICE, 1, state).fee_sat
    child_fee = anchor.amount_sat + 50_000 - sum(o.amount_sat for o in child.outputs)
    assert (parent_fee + child_fee) * 1000 // (commitment.weight + child.weight) >= 4 * FEERATE * 99 // 100
    alice.step()
    assert chain.get_txout(kit.funding) is None and chain.get_txout(anchor.outpoint) is None
    assert alice.monitor.transactions_to_broadcast() == [] or all(
        i.prevout != anchor.outpoint for tx in alice.monitor.transactions_to_broadcast() for i in tx.inputs
    )


async def test_anchor_htlc_transactions_merged_with_a_fee_input(onchain) -> None:
    """Zero-fee HTLC-success transactions (the peer signed SIGHASH_SINGLE|ANYONECANPAY) go out
    as one transaction with a wallet input paying the fee; the kernel accepts it."""
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors=True)
    state = states(base)[1]
    h = state.htlcs
    records = [kit.local_record(ALICE, 1, state), kit.remote_record(ALICE, 1, state),
               PaymentPreimage(PREIMAGES[1]), PaymentPreimage(PREIMAGES[3])]  # fmt: skip
    alice = monitor_for(kit, ALICE, records, chain)
    ours = kit.commitment(ALICE, 1, state)
    alice.monitor.force_close()
    alice.step()
    needs = [e for e in alice.of(NeedFeeInput) if e.group == "htlc_tx:locktime:0"]
    assert len(needs) == 1 and needs[0].feerate_per_kw > ESTIMATE  # H3 expires within URGENT_BLOCKS
    [merged] = [tx for tx in alice.monitor.transactions_to_broadcast() if len(tx.inputs) == 3]
    htlc_outpoints = {ours.output(htlc_tag(h[1])).outpoint, ours.output(htlc_tag(h[3])).outpoint}
    assert {i.prevout for i in merged.inputs[:2]} == htlc_outpoints
    assert merged.inputs[2].prevout == alice.fee_coins["htlc_tx:locktime:0"].outpoint
    alice.step()
    assert all(chain.get_txout(op) is None for op in htlc_outpoints)
    assert {e.preimage for e in alice.of(HtlcResolved) if e.htlc_id in (1, 3)} == {PREIMAGES[1], PREIMAGES[3]}


# --------------------------------------------------------------------------- restart


async def test_restart_from_the_update_stream_still_claims_in_time(onchain) -> None:
    """The node dies right after the peer's commitment confirms and comes back only when
    HTLC deadlines are near: a monitor rebuilt from the persisted update bytes, replaying
    blocks from the funding block, claims everything before the peer can take it back."""
    chain, _ = onchain
    kit, funding_height = await open_channel(onchain, anchors=False)
    state = states(funding_height)[1]
    h = state.htlcs
    records = [kit.local_record(ALICE, 1, state), kit.remote_record(ALICE, 1, state), PaymentPreimage(PREIMAGES[1])]
    persisted = encode_stream(kit.updates(ALICE, records))
    before = monitor_for(kit, ALICE, records, chain)
    before.step(kit.signed_commitment(BOB, 1, state))
    assert before.of(CommitmentSeen)
    # down until H0 (ours, timing out) has expired and H1 (theirs, we hold the preimage) nearly has
    chain.mine(h[0].cltv_expiry - chain.height)
    assert chain.height < h[1].cltv_expiry

    monitor = ChannelMonitor(secrets_of(ALICE), decode_stream(persisted), feerate_per_kw=ESTIMATE)
    after = Driver(chain, monitor)
    for height in range(funding_height, chain.height + 1):
        block_hash = chain.block_hash(height)
        assert block_hash is not None
        monitor.block_connected(height, Block.parse(chain.block(block_hash)).txs)
        after.fed[height] = block_hash
    spent = {i.prevout for tx in monitor.transactions_to_broadcast() for i in tx.inputs}
    theirs = kit.commitment(BOB, 1, state)
    claims = {theirs.output(htlc_tag(Htlc(i, not h[i].offered, 1, h[i].payment_hash, h[i].cltv_expiry))).outpoint
              for i in (0, 1)}  # fmt: skip
    assert claims <= spent
    after.step()
    assert all(chain.get_txout(op) is None for op in claims)
    assert {e.what for e in after.of(OutputSwept) if e.ours} >= {"htlc_timeout:0", "htlc_success:1"}


async def test_penalty_of_a_483_htlc_commitment_is_one_standard_transaction(onchain) -> None:
    """BOLT 5: a single penalty resolving to_local and 483 HTLCs stays under the 400,000
    standard weight; the kernel accepts it and the cheater keeps nothing."""
    chain, _ = onchain
    kit, base = await open_channel(onchain, anchors=True)  # zero-fee HTLC transactions: 1000-sat HTLCs stay untrimmed
    # a day's delay: far from the deadline the penalty is batched (near it, with anchors, it splits)
    kit = replace(kit, to_self_delay=144)
    count = 483
    offered = [Htlc(i, i % 2 == 0, 1_000_000, sha256(secret(f"big {i}")), base + 100 + i % 7) for i in range(count)]
    locked = count * 1_000_000
    one = State(600_000_000 - locked // 2, 400_000_000 - locked // 2, tuple(offered))
    two = State(600_000_000, 400_000_000)
    records = [kit.remote_record(BOB, 1, one), kit.remote_record(BOB, 2, two), kit.revocation(BOB, 1)]
    bob = monitor_for(kit, BOB, records, chain)
    bob.step(kit.signed_commitment(ALICE, 1, one))
    [penalty] = [tx for tx in bob.monitor.transactions_to_broadcast() if len(tx.inputs) > 1]
    assert len(penalty.inputs) == count + 1 and penalty.weight < 400_000
    bob.step()
    revoked = kit.commitment(ALICE, 1, one)
    revocable = [o for o in revoked.outputs if any(p.name == "revocation" for p in o.spendable.paths)]
    assert len(revocable) == count + 1 and all(chain.get_txout(o.outpoint) is None for o in revocable)
    taken = sum(o.amount_sat for o in revocable)
    paid = paid_to(chain, [penalty], BOB.wallet_script())
    # all of it to Bob, less a fee at the estimate (far from the deadline) on the signed weight
    assert taken == revoked.output(TO_LOCAL).amount_sat + locked // 1000
    # (paid on the expected weight, 73-byte signatures: the actual one is a little lighter)
    assert ESTIMATE <= (taken - paid) * 1000 // penalty.weight <= ESTIMATE * 101 // 100
