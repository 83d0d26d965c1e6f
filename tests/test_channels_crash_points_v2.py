"""A node crashes at every persistence point of a dual-funded channel's life, restarts from its
store on disk and reestablishes; the script then finishes.

The nodes, the chain, the crash and the checks are those of ``test_channels_crash_points.py``
(:class:`CrashHarness`, :func:`live_script`), on another life: both nodes speak dual funding
(``option_dual_fund``), and Bob contributes to the opens he accepts. The script: Alice opens a
v2 channel (interactive construction, ``commitment_signed`` both ways, ``tx_signatures``), bumps
its funding's fee (``tx_init_rbf``, a second construction and its signatures, the bump replacing
the first version in the mempool), the bumped version is mined and the channel becomes ready;
then an HTLC each way, Alice asks for quiescence (``stfu``) while both are in flight, both
commitments settle and both ``stfu`` are exchanged, Bob's fulfill waits while quiescent, the
connection ends the quiescence, both HTLCs are fulfilled, and Alice closes cooperatively. One
side (Alice the opener, or Bob the accepter) crashes at its N-th persistence point, right after
the records reached the disk (``persisted``) or right after the messages of that output were
handed to the peer (``sent``); it restarts and the script resumes from where the channel stands:
an open a crash ended (before our ``tx_signatures`` left) is opened again, a bump a crash ended
is asked again, an HTLC forgotten by both sides is offered again (and the quiescence asked again
with it).

The order of ``tx_signatures`` (the side with less in sends first) decides which side may have
signed when a crash cuts the exchange: a second life, Bob putting in more than Alice (so that she
signs first), runs the same open and bump, then a miner that saw only the first version confirms
it (the channel opens on the earlier version), then the close. A third life is the first with
Bob, the fundee, asking for quiescence (his ``stfu`` first); its sweep takes only the points from
the HTLCs offered for it to the reconnection that ends it (``FUNDEE_QUIESCES_WINDOW``: the rest
is the first life's).

Afterwards, besides the checks of the v1 life (the balances exact and agreed, no HTLC left, the
closing transaction both signed the only spend of the funding in the mempool): the funding that
confirmed is a version both sides signed and hold as their funding, and no coin of either
wallet is still held for an open or a bump (a crash never strands a contribution).

Run time: each case runs the whole life (about a second), so the sweep takes each point of
each side at one of the two stages, alternating with the point (:func:`alternating_sample`:
every point, and both stages of each side, in half the cases of a sweep over both stages);
``test_channels_crash_points.py`` sweeps both stages of every point of the v1 life.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import FUNDING_SAT, channels, wait_until
from test_channels_crash_points import Script, _open_or_closed, alternating_sample, live_script

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.dualfund import DualFundSession
from lnpmsg.channels.dualfund_rbf import candidate_outpoints
from lnpmsg.channels.dualfund_sign import _we_sign_first
from lnpmsg.channels.manager import ManagedChannel
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.quiesce import is_quiescent
from lnpmsg.channels.state import Phase

#: Bob's share of the channel
CONTRIBUTE_SAT = 300_000
#: the HTLCs in flight when Alice asks for quiescence: (sender, amount_msat)
IN_FLIGHT = [("alice", 30_000_000), ("bob", 10_000_000)]
#: the phases of an open (or a bump) before both signatures are in
_SIGNING = (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING)
#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 44, "bob": 43}
#: the same for the life where Bob asks for quiescence (FundeeQuiescesScript), and the points of each
#: side from the HTLCs offered for it to the reconnection that ends it: the ones its sweep takes
FUNDEE_QUIESCES_POINTS = {"alice": 43, "bob": 44}
FUNDEE_QUIESCES_WINDOW = {"alice": range(20, 32), "bob": range(21, 34)}
#: Bob's share when he puts in more than Alice (she then signs first)
BOB_MORE_SAT = 1_500_000
#: Bob's coin in that life: more than Alice's 3M sat, so that his inputs are the larger
BOB_MORE_COIN_SAT = 4_000_000
#: the same for that life (BobFundsMoreScript)
BOB_MORE_POINTS = {"alice": 23, "bob": 23}


class DualFundScript(Script):
    """The dual-funded channel's life, resumable from wherever a crash left the channel."""

    #: Bob's share (less than Alice's: he sends his tx_signatures first)
    contribute_sat = CONTRIBUTE_SAT
    capacity_sat = FUNDING_SAT + CONTRIBUTE_SAT
    opening_msat = FUNDING_SAT * 1000
    payments = IN_FLIGHT

    #: who asks for quiescence
    quiescer = "alice"
    #: the funding was mined (no more bumps)
    mined = False
    #: the first version of the funding (signed), before any bump
    first_funding: bytes | None = None

    @property
    def final_feerate(self) -> int:  # type: ignore[override]
        """The commitments' feerate Alice proposed in open_channel2 (nothing changes it)."""
        d = self.channel("alice").core.state.dual  # type: ignore[union-attr]
        assert isinstance(d, DualFundSession) and d.open2 is not None
        return d.open2.commitment_feerate_perkw

    def channel(self, name: str) -> ManagedChannel | None:
        """The script's channel on ``name``, by its channel id (a bump changes the funding outpoint)."""
        ours = channels(self.nodes["alice"]).manager.channels.get(self.channel_key or "")  # type: ignore[union-attr]
        manager = channels(self.nodes[name]).manager
        if ours is None or manager is None:
            return None
        found = [c for c in manager.channels.values() if c.core.state.channel_id == ours.core.state.channel_id]
        return found[0] if found else None

    def opening_policies(self) -> dict[str, OpeningPolicy]:
        return {"alice": OpeningPolicy(dual_fund=True), "bob": OpeningPolicy(dual_fund=True, dual_fund_contribute_sat=self.contribute_sat)}

    async def fund(self) -> None:
        await self.fund_wallet("alice", 3_000_000)
        await self.fund_wallet("bob", 2_000_000)

    def open_options(self) -> dict[str, Any]:
        return {"amount_sat": FUNDING_SAT}  # (v2: Bob contributes; no push)

    async def open(self) -> None:
        self.first_funding = None
        await super().open()

    async def run(self) -> None:
        # An open or a bump whose signatures a crash cut is resumed by channel_reestablish, or aborted.
        await wait_until(lambda: not any(c is not None and c.phase in _SIGNING for c in map(self.channel, ("alice", "bob"))),
                         "the signatures exchanged, or the attempt ended")  # fmt: skip
        if not all(_open_or_closed(self.channel(n)) for n in ("alice", "bob")):
            await self.open()
        channel = self.channel("alice")
        assert channel is not None
        if channel.phase is Phase.AWAIT_READY:
            if not self.mined:
                await wait_until(self.agreed, "both sides hold the same funding")
                if self.first_funding is None:  # (no bump was asked for this channel yet)
                    self.first_funding = channel.core.state.funding_tx
                if not self.bumped():
                    await self.bump()
            self.mined = True
            await self.confirm_the_funding()
        if channel.phase in (Phase.AWAIT_READY, Phase.NORMAL):
            await wait_until(self.ready, "the channel ready and quiet")
            await self.quiesce_with_htlcs_in_flight()
        await self.close()

    def agreed(self) -> bool:
        """Both sides reestablished and hold the same funding (a bump's signatures resumed or dropped)."""
        a, b = self.channel("alice"), self.channel("bob")
        return self.quiet() and a is not None and b is not None and a.core.state.funding_outpoint == b.core.state.funding_outpoint

    def bumped(self) -> bool:
        """The accepter holds a bumped version (it signs one only once both contributions are in)."""
        channel = self.channel("bob")
        assert channel is not None
        return len(candidate_outpoints(channel.core)) > 1

    async def bump(self) -> None:
        """Alice bumps the funding to twice its feerate (BIP 125 wants more fee than 25/24 gives)."""
        channel = self.channel("alice")
        assert channel is not None and isinstance(channel.core.state.dual, DualFundSession)
        feerate = -(-channel.core.state.dual.feerate_per_kw * 2 // 250)
        await channels(self.nodes["alice"]).bumpchannelopen(channel.channel_id.hex(), feerate=feerate)

    def funding_txids(self) -> set[bytes]:
        """Every version of the funding either side holds."""
        return {o.txid for n in ("alice", "bob") if (c := self.channel(n)) is not None for o in candidate_outpoints(c.core)}

    def done(self) -> set[int]:
        """Which payments are settled: the one set Alice's balance matches (each amount differs)."""
        channel = self.channel("alice")
        assert channel is not None and channel.core.state.local_commit is not None
        msat = channel.core.state.local_commit.spec.to_local_msat
        subsets = [{i for i in range(len(self.payments)) if mask >> i & 1} for mask in range(1 << len(self.payments))]
        matches = [subset for subset in subsets if self.alice_msat(subset) == msat]
        assert len(matches) == 1, (msat, matches)
        return matches[0]

    async def quiesce_with_htlcs_in_flight(self) -> None:
        """The payments not done yet are offered at once, Alice asks for quiescence while they are in
        flight, both stfu go once the commitments settle, and a reconnection ends it; then each is fulfilled."""
        await self.settle_in_flight()
        missing = [i for i in range(len(self.payments)) if i not in self.done()]
        if not missing:
            return
        cid = self.channel("alice").channel_id.hex()  # type: ignore[union-attr]
        for index in missing:
            sender, amount = self.payments[index]
            await channels(self.nodes[sender]).dev_addhtlc(cid, amount, self.hashes[index].hex())
        await channels(self.nodes[self.quiescer]).dev_quiesce(cid)
        await wait_until(lambda: self.quiescent() and len(self.htlcs("alice")) == len(missing), "quiescent, the HTLCs committed")
        await self.reconnect()
        await wait_until(self.ready, "the channel ready and quiet")
        await self.settle_in_flight()

    def quiescent(self) -> bool:
        return self.ready() and all(is_quiescent(self.channel(n).core.state) for n in ("alice", "bob"))  # type: ignore[union-attr]

    async def reconnect(self) -> None:
        """Bob drops the connection (the end of the quiescence) and dials again."""
        alice, bob = self.nodes["alice"], self.nodes["bob"]
        channels(bob).disconnect_peer(alice.node_id, "the end of the quiescence")
        await wait_until(lambda: alice.node_id not in bob.peers and bob.node_id not in alice.peers, "disconnected")
        await bob.connect(alice.addresses[0])

    async def confirm_the_funding(self) -> None:
        """Mine the funding to the channel's depth: two blocks, then one a second while the channel is
        not ready and a version is in the mempool or mined (one a side broadcast late, at its restart)."""
        source = self.pair.source
        await self.mine_a_version()
        # One block at a time, each seen by both (the version mined adopted, the others dropped, both
        # holding it as mined, and the fundee counting its wait for the funding from that block): the
        # second block then never races the first, and the script makes the same points each run.
        with trio.move_on_after(10):
            await wait_until(lambda: len(self.funding_txids()) == 1 and self.fundee_saw_a_block() and self.both_saw_it_mined(),
                             "the first block seen by both")  # fmt: skip
        await source.mine(1)
        with trio.fail_after(60):
            while True:
                with trio.move_on_after(1):
                    await wait_until(self.ready, "the channel ready and quiet")
                    return
                mempool = set(await trio.to_thread.run_sync(source.core.mempool_txids))
                if self.funding_txids() & mempool or any(self.mined_txid(t) for t in self.funding_txids()):
                    await source.mine(1)

    def fundee_saw_a_block(self) -> bool:
        """Bob took a block since the open (his wait for the funding counts from it), or is ready already."""
        s = self.channel("bob").core.state  # type: ignore[union-attr]
        return s.funding_wait_start is not None or s.ready_sent

    def both_saw_it_mined(self) -> bool:
        """Each side holds its funding as in a block (no more bumps), or is ready already."""
        channels = [self.channel(n) for n in ("alice", "bob")]
        return all(c is not None and (getattr(c.core.state.dual, "mined", False) or c.core.state.ready_sent) for c in channels)

    async def mine_a_version(self) -> None:
        """A block with the version of the funding in the mempool (the last bump)."""
        await self.pair.source.mine(1)

    def mined_txid(self, txid: bytes) -> bool:
        found = self.pair.source.core.find_transaction(txid)
        return found is not None and found[1] is not None

    async def check_end(self) -> None:
        await super().check_end()
        a, b = self.channel("alice"), self.channel("bob")
        assert a is not None and b is not None and a.core.state.funding_outpoint == b.core.state.funding_outpoint
        funding = a.core.state.funding_outpoint
        assert self.mined_txid(funding.txid), "the funding both hold is not the one mined"
        for name in ("alice", "bob"):
            wallet = self.nodes[name].apps["chain"].wallet  # type: ignore[attr-defined]
            await wallet.sync()
            await wait_until(lambda: not wallet.reserved(), f"{name}'s coins no longer held")


class FundeeQuiescesScript(DualFundScript):
    """The same life with Bob, the fundee, asking for quiescence while both HTLCs are in flight
    (he sends stfu first, Alice answers once her updates are settled)."""

    quiescer = "bob"


class BobFundsMoreScript(DualFundScript):
    """The same open and bump with Bob putting in more than Alice, so that she signs first (the other
    order of tx_signatures); a miner that saw only the first version confirms it (the channel opens
    on an earlier version: FundingCandidateConfirmed adopts it); then the close; no payment."""

    contribute_sat = BOB_MORE_SAT
    capacity_sat = FUNDING_SAT + BOB_MORE_SAT
    payments: list[tuple[str, int]] = []
    #: the version mined (the first)
    first_txid: bytes | None = None

    async def fund(self) -> None:
        # BOLT 2 orders tx_signatures by the inputs each side adds, not by its share: Bob's one coin is
        # the larger (were the coins equal, the node ids would decide, and they are drawn anew each run)
        await self.fund_wallet("alice", 3_000_000)
        await self.fund_wallet("bob", BOB_MORE_COIN_SAT)

    async def mine_a_version(self) -> None:
        """A miner that saw only the first version (before any bump) puts it in a block."""
        if self.first_funding is None or any(self.mined_txid(t) for t in self.funding_txids()):
            return await super().mine_a_version()  # (a version was mined before a crash)
        first = Tx.parse(self.first_funding)
        self.first_txid = first.txid
        assert (await self.pair.source.submit_transactions_in_block([first])).accepted

    async def check_end(self) -> None:
        await super().check_end()
        assert len(self.funding_txids()) == 1 and self.first_txid in self.funding_txids(), "not the first version"
        a, b = self.channel("alice"), self.channel("bob")
        assert a is not None and b is not None
        assert _we_sign_first(a.core) and not _we_sign_first(b.core), "Alice, who put in less, signs first"


@pytest.mark.trio
@pytest.mark.parametrize(("life", "points"), [(DualFundScript, POINTS), (BobFundsMoreScript, BOB_MORE_POINTS),
                                              (FundeeQuiescesScript, FUNDEE_QUIESCES_POINTS)], ids=["bob_less", "bob_more", "bob_quiesces"])
async def test_the_script_counts_its_points(tmp_path: Path, life: type[DualFundScript], points: dict[str, int]) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    assert await live_script(tmp_path, None, 0, "persisted", life) == points


@pytest.mark.trio
@pytest.mark.parametrize(("victim", "point", "stage"), [("alice", 7, "persisted"), ("bob", 5, "persisted"), ("bob", 4, "sent")])
async def test_a_crash_while_the_open_is_signed_strands_no_coin(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    """The crash points that found the open's gaps. Alice (who signs second) crashes once Bob's
    commitment_signed is on her disk, before her tx_signatures: Bob's had left, and her open, ended,
    left him waiting for hers with his coins held (now she keeps it and reestablishment completes
    it). Bob crashes before his commitment_signed leaves, or forgets the open: Alice, who keeps hers
    (his tx_signatures might have left), hears of it by his tx_abort before any channel_reestablish,
    or by his ``error`` for an unknown channel on the channel id she now claims, and ends it."""
    await live_script(tmp_path, victim, point, stage, DualFundScript)


@pytest.mark.trio
@pytest.mark.slow  # 85 cases of about a second each
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(POINTS))
async def test_crash_at_every_persistence_point(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, DualFundScript)


@pytest.mark.trio
@pytest.mark.slow  # 44 cases of about a second each
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(BOB_MORE_POINTS))
async def test_crash_at_every_persistence_point_when_the_opener_signs_first(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, BobFundsMoreScript)


@pytest.mark.trio
@pytest.mark.slow  # 25 cases of about a second each
@pytest.mark.parametrize(("victim", "point", "stage"),
                         [c for c in alternating_sample(FUNDEE_QUIESCES_POINTS) if c[1] in FUNDEE_QUIESCES_WINDOW[c[0]]])  # fmt: skip
async def test_crash_at_every_persistence_point_when_the_fundee_quiesces(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    """Each point of the quiescence Bob asks for (the rest of the life is the one Alice quiesces)."""
    await live_script(tmp_path, victim, point, stage, FundeeQuiescesScript)
