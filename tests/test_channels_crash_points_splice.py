"""A node crashes at every persistence point of a spliced channel's life, restarts from its store
on disk and reestablishes; the script then finishes.

The nodes, the chain, the crash and the checks are those of ``test_channels_crash_points.py``
(:class:`CrashHarness`, :func:`live_script`), on two other lives (BOLT 2 ``option_splice``):

- a splice-in: Alice opens (pushing to Bob), the funding confirms, Alice splices 300k sat in from
  her wallet (quiescence, ``splice_init``/``splice_ack``, the interactive construction with the
  shared input, ``commitment_signed`` on the new funding, ``tx_signatures``); while the splice is
  signed but unconfirmed a payment each way (each ``commitment_signed`` a batch for both
  fundings); the splice is mined, ``splice_locked`` both ways, a payment on the new funding, and
  Alice closes cooperatively;
- a splice-out: Alice opens, Bob (the fundee) splices 100k sat out of his balance to an address of
  neither wallet, the splice is mined and locked, Alice closes.

One side crashes at its N-th persistence point, right after the records reached the disk
(``persisted``) or right after that output's messages were handed to the peer (``sent``); it
restarts and the script resumes from where the channel stands: a splice a crash ended before our
``tx_signatures`` left is asked again, one signed is resumed by ``channel_reestablish``.

Afterwards, besides the checks of the v1 life (the balances exact and agreed, no HTLC left, the
closing transaction both signed the only spend of the funding in the mempool, no failure): both
sides hold the splice's transaction as their funding, it was mined and spends the open's funding;
no coin is still held for a splice; and the wallets hold what they were given less the fees of the
funding, the splice and the close, and less the splice-out's output.

Run time: each case runs the whole life (one to two seconds), so each point of each side is
crashed at one of the two stages, alternating with the point (:func:`alternating_sample`): 54 + 50
cases for the splice-in (``POINTS``), 19 + 18 for the splice-out (``OUT_POINTS``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_channels_app import FUNDING_SAT, PUSH_MSAT, channels, wait_until
from test_channels_crash_points import Script, _fee, alternating_sample, live_script
from test_channels_crash_points_v2 import DualFundScript

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.address import address_for_script
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.splice import SpliceSession
from lnpmsg.channels.state import Phase

#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 54, "bob": 50}
#: the same for the splice-out's life (SpliceOutScript)
OUT_POINTS = {"alice": 19, "bob": 18}
#: the splice-out's destination: an output of neither wallet (what it pays leaves them)
OUT_SCRIPT = b"\x00\x14" + sha256(b"the splice-out's destination")[:20]


class SpliceInScript(Script):
    """Alice's splice-in with payments while it waits to lock, resumable from wherever a crash left the channel."""

    #: who splices, and how much (negative: out, to OUT_SCRIPT)
    splicer = "alice"
    splice_sat = 300_000
    payments = [("alice", 40_000_000), ("bob", 15_000_000), ("alice", 5_000_000)]
    #: how many of the payments are made while the splice is signed but unconfirmed (the rest after the lock)
    unconfirmed_payments = 2

    #: the open's funding (the splice spends it)
    opened_txid: bytes | None = None

    # by its channel id: the splice changes the funding outpoint (one side may lock before the other)
    channel = DualFundScript.channel

    def opening_policies(self) -> dict[str, OpeningPolicy]:
        # no bump in these lives: no wait for a block between versions counted, nor the record its
        # count makes (the bumped lives, test_channels_crash_points_splice_rbf.py, wait for it)
        return {name: OpeningPolicy(rbf_wait_blocks=0) for name in ("alice", "bob")}

    @property
    def capacity_sat(self) -> int:  # type: ignore[override]
        """The funding's value in use (the splice's once locked)."""
        channel = self.channel("alice")
        return int(channel.core.state.funding_sat) if channel is not None and channel.core.state.funding_sat else FUNDING_SAT

    @property
    def opening_msat(self) -> int:  # type: ignore[override]
        """Alice's balance with no payment: the push, and once locked what her splice moved."""
        moved = (self.capacity_sat - FUNDING_SAT) * 1000 if self.splicer == "alice" else 0
        return FUNDING_SAT * 1000 - PUSH_MSAT + moved

    @property
    def final_feerate(self) -> int:  # type: ignore[override]
        """The open's feerate: nothing changes it."""
        return self.feerate()

    def pending(self, name: str) -> SpliceSession | None:
        channel = self.channel(name)
        splice = channel.core.state.splice if channel is not None else None
        return splice if isinstance(splice, SpliceSession) else None

    def agreed(self) -> bool:
        """Reestablished, and both hold the same signed splice, or none (a negotiation a crash cut ended)."""
        if not self.ready():
            return False
        a, b = self.pending("alice"), self.pending("bob")
        if a is None or b is None:
            return a is None and b is None
        return a.signed and b.signed and a.outpoint == b.outpoint

    def locked(self) -> bool:
        """Both run on the splice's funding, and agree on it."""
        a, b = self.channel("alice"), self.channel("bob")
        if not self.ready() or a is None or b is None:
            return False
        sa, sb = a.core.state, b.core.state
        return sa.splice is None and sb.splice is None and sa.splices == sb.splices == 1 and sa.funding_outpoint == sb.funding_outpoint

    async def run(self) -> None:
        channel = await self.opened()
        if channel.phase is Phase.NORMAL:
            await wait_until(self.ready, "the channel ready and quiet")
            if channel.core.state.splices == 0:
                self.opened_txid = channel.core.state.funding_outpoint.txid  # type: ignore[union-attr]
                await wait_until(self.agreed, "both hold the same signed splice, or none")
                if self.pending("alice") is None:
                    await self.splice()
                    await wait_until(lambda: self.agreed() and self.pending("alice") is not None, "the splice signed by both")
                await self.after_splice()
                await self.pay_in_turn(self.unconfirmed_payments)
                await self.lock()
            await wait_until(self.ready, "the channel ready and quiet")
            await self.pay_in_turn()
        await self.close()

    async def after_splice(self) -> None:
        """What a life does once both signed the splice, before its payments (here nothing)."""

    async def splice(self) -> None:
        """The splicer splices (to OUT_SCRIPT when out)."""
        cid = self.channel("alice").channel_id.hex()  # type: ignore[union-attr]
        address = address_for_script(OUT_SCRIPT) if self.splice_sat < 0 else None
        await channels(self.nodes[self.splicer]).splice(cid, self.splice_sat, address=address)

    async def lock(self) -> None:
        """Mine the splice (two blocks once it is in the mempool: one a side broadcast late, at its
        restart, too), then a block a second until both locked."""
        source = self.pair.source
        with trio.fail_after(60):
            while not self.locked():
                splice = self.pending("alice") or self.pending("bob")
                if splice is not None and splice.outpoint is not None:
                    txid = splice.outpoint.txid
                    found = await trio.to_thread.run_sync(source.core.find_transaction, txid)
                    if found is not None:
                        await source.mine(2 if found[1] is None else 1)
                with trio.move_on_after(1):
                    await wait_until(self.locked, "both locked on the splice")

    async def gone_sat(self, closing: Tx) -> int:
        """The open's, the splice's and the close's fees, and what the splice sent out."""
        source = self.pair.source
        splice = Tx.parse(await source.find_transaction(closing.inputs[0].prevout.txid))
        assert any(i.prevout.txid == self.opened_txid for i in splice.inputs), "the splice does not spend the open's funding"
        opened = Tx.parse(await source.find_transaction(self.opened_txid))  # type: ignore[arg-type]
        out = sum(o.amount_sat for o in splice.outputs if o.script_pubkey == OUT_SCRIPT)
        return await _fee(source, opened) + await _fee(source, splice) + await _fee(source, closing) + out

    async def check_end(self) -> None:
        await super().check_end()
        a, b = self.channel("alice"), self.channel("bob")
        assert a is not None and b is not None
        for s in (a.core.state, b.core.state):
            assert s.splices == 1 and s.splice is None
            assert s.funding_outpoint == a.core.state.funding_outpoint and s.funding_outpoint.txid != self.opened_txid  # type: ignore[union-attr]
        found = self.pair.source.core.find_transaction(a.core.state.funding_outpoint.txid)  # type: ignore[union-attr]
        assert found is not None and found[1] is not None, "the funding both hold was not mined"
        if self.splice_sat < 0:
            assert [o.amount_sat for o in found[0].outputs if o.script_pubkey == OUT_SCRIPT] == [-self.splice_sat]
        for name in ("alice", "bob"):
            wallet = self.nodes[name].apps["chain"].wallet  # type: ignore[attr-defined]
            await wait_until(lambda: not wallet.reserved(), f"{name}'s coins no longer held")


class SpliceOutScript(SpliceInScript):
    """Bob's splice-out to an address of neither wallet, locked, then the close; no payment."""

    splicer = "bob"
    splice_sat = -100_000
    payments: list[tuple[str, int]] = []
    unconfirmed_payments = 0


@pytest.mark.trio
@pytest.mark.parametrize(("life", "points"), [(SpliceInScript, POINTS), (SpliceOutScript, OUT_POINTS)], ids=["in", "out"])
async def test_the_script_counts_its_points(tmp_path: Path, life: type[SpliceInScript], points: dict[str, int]) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    assert await live_script(tmp_path, None, 0, "persisted", life) == points


@pytest.mark.trio
@pytest.mark.parametrize(("life", "victim", "point", "stage"), [
    (SpliceInScript, "alice", 16, "sent"), (SpliceOutScript, "alice", 13, "persisted"), (SpliceOutScript, "bob", 13, "sent")],
    ids=["in-alice-16-sent", "out-alice-13-persisted", "out-bob-13-sent"])  # fmt: skip
async def test_a_crash_once_the_splice_commitments_left_keeps_the_splice(
    tmp_path: Path, life: type[SpliceInScript], victim: str, point: int, stage: str
) -> None:
    """The crash points that found the gap: the side that signs second crashes once its
    commitment_signed left (or its peer crashes before its own tx_signatures left): the first
    signer's tx_signatures may have left, and it must keep the splice; the second one, which ended
    it at its restart (or at the disconnection), answered its next_funding with tx_abort and left it
    pending for good (no close). Now it keeps the splice and channel_reestablish completes it."""
    await live_script(tmp_path, victim, point, stage, life)


@pytest.mark.trio
@pytest.mark.slow  # 104 cases of one to two seconds each
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(POINTS))
async def test_crash_at_every_persistence_point_of_a_splice_in(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, SpliceInScript)


@pytest.mark.trio
@pytest.mark.slow  # 37 cases of one to two seconds each
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(OUT_POINTS))
async def test_crash_at_every_persistence_point_of_a_splice_out(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, SpliceOutScript)
