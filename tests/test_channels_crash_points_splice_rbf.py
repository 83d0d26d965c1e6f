"""A node crashes at every persistence point of a bumped splice's life, restarts from its store on
disk and reestablishes; the script then finishes.

The life is the splice-in of ``test_channels_crash_points_splice.py`` (:class:`SpliceInScript`)
with a fee bump once both signed the splice and saw a block without it (a bump waits for one:
BOLT 2's "created recently", ``OpeningPolicy.rbf_wait_blocks``): Alice quiesces the channel
again and bumps the splice to three times its feerate (``tx_init_rbf``/``tx_ack_rbf``, a second
construction, its commitments and signatures; the bump replaces the first version in the
mempool); the payments while the splice waits go as batches over the funding and both versions;
the bump is mined and locked, a payment on the new funding, and Alice closes.

A second life: Bob bumps Alice's splice (he is the new construction's initiator and pays its
common fields), and a miner that saw only the first version puts it in a block: the channel locks
on the first version, the bump is dropped.

A bump a crash ended before our ``tx_signatures`` left leaves the first version standing and is
asked again; one signed is resumed by ``channel_reestablish`` (``next_funding``). The checks are
those of the splice-in, and both sides end on the version mined. Each sweep crashes the points
from the bump to the lock (``WINDOW``, ``FIRST_WINDOW``): the rest of each life is the splice-in's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_channels_app import channels, wait_until
from test_channels_crash_points import alternating_sample, live_script
from test_channels_crash_points_splice import SpliceInScript

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.params import OpeningPolicy

#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 71, "bob": 65}
#: the same for the life whose first version is mined (FirstMinedBumpScript)
FIRST_POINTS = {"alice": 69, "bob": 66}
#: the points each sweep takes: from the block the bump waits for to the lock's last (the open and the splice
#: before, the payments on the new funding and the close after, are those of the splice-in life,
#: test_channels_crash_points_splice.py)
WINDOW = {"alice": range(18, 61), "bob": range(15, 56)}
FIRST_WINDOW = {"alice": range(18, 59), "bob": range(15, 57)}


def _in_window(points: dict[str, int], window: dict[str, range]) -> list[tuple[str, int, str]]:
    return [c for c in alternating_sample(points) if c[1] in window[c[0]]]


class SpliceBumpScript(SpliceInScript):
    """Alice's splice-in, bumped by her once signed, then the payments, the lock and the close."""

    #: who bumps the splice
    bumper = "alice"
    #: the splice's first version (signed), before the bump
    first_tx: bytes | None = None

    def bumped(self) -> bool:
        """Both hold the bump signed (the first version as its previous one)."""
        a, b = self.pending("alice"), self.pending("bob")
        return a is not None and b is not None and bool(a.previous) and bool(b.previous) and a.signed and b.signed

    #: the bump's txid, once both signed it
    bump_txid: bytes | None = None

    async def after_splice(self) -> None:
        sp = self.pending("alice")
        assert sp is not None
        if self.first_tx is None:  # (once a version is mined it is the current one: kept from the first run)
            self.first_tx = sp.previous[0].tx if sp.previous else sp.tx
        if self.bumped():
            self.bump_txid = self.bump_txid or sp.outpoint.txid  # type: ignore[union-attr]
            return
        await self.a_block_without_the_splice()
        cid = self.channel("alice").channel_id.hex()  # type: ignore[union-attr]
        feerate = -(-sp.feerate_per_kw * 3 // 250)
        bumper = channels(self.nodes[self.bumper])
        await bumper.bumpsplice(cid, feerate=feerate)  # (it waits for the reconnection to settle)
        await wait_until(lambda: self.agreed() and self.bumped(), "the bump signed by both")
        self.bump_txid = self.pending("alice").outpoint.txid  # type: ignore[union-attr]

    def opening_policies(self) -> dict[str, OpeningPolicy]:
        return {}  # (the default wait for a block between versions)

    async def a_block_without_the_splice(self) -> None:
        """Empty blocks until both counted one since the splice's signatures (a side down when one is
        mined does not count it: another follows)."""

        def both_waited() -> bool:
            return all((sp := self.pending(n)) is not None and sp.blocks_waited >= 1 for n in ("alice", "bob"))

        with trio.fail_after(60):
            while not both_waited():
                assert (await self.pair.source.submit_transactions_in_block([])).accepted
                with trio.move_on_after(1):
                    await wait_until(both_waited, "the block seen by both")

    def mined_txid(self) -> bytes | None:
        """The version of the splice the life mines."""
        return self.bump_txid

    async def check_end(self) -> None:
        await super().check_end()
        for name in ("alice", "bob"):
            channel = self.channel(name)
            assert channel is not None and channel.core.state.funding_outpoint is not None
            assert channel.core.state.funding_outpoint.txid == self.mined_txid(), "the channel is not on the version mined"


class FirstMinedBumpScript(SpliceBumpScript):
    """Bob bumps Alice's splice-in (he pays the bump's common fields), but a miner that saw only the
    first version puts it in a block: the channel locks on the first version."""

    bumper = "bob"

    def mined_txid(self) -> bytes | None:
        assert self.first_tx is not None
        return Tx.parse(self.first_tx).txid

    async def lock(self) -> None:
        """A block with the first version (unless a block has it already), then a block a second until both locked."""
        source = self.pair.source
        first = Tx.parse(self.first_tx)  # type: ignore[arg-type]
        with trio.fail_after(60):
            while not self.locked():
                found = await trio.to_thread.run_sync(source.core.find_transaction, first.txid)
                if found is None or found[1] is None:
                    assert (await source.submit_transactions_in_block([first])).accepted
                else:
                    await source.mine(1)
                with trio.move_on_after(1):
                    await wait_until(self.locked, "both locked on the first version")


@pytest.mark.trio
@pytest.mark.parametrize(("life", "points"), [(SpliceBumpScript, POINTS), (FirstMinedBumpScript, FIRST_POINTS)], ids=["bump", "first"])
async def test_the_script_counts_its_points(tmp_path: Path, life: type[SpliceBumpScript], points: dict[str, int]) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    assert await live_script(tmp_path, None, 0, "persisted", life) == points


@pytest.mark.trio
@pytest.mark.slow  # one to two seconds a case
@pytest.mark.parametrize(("victim", "point", "stage"), _in_window(POINTS, WINDOW))
async def test_crash_at_every_persistence_point_of_a_bumped_splice(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, SpliceBumpScript)


@pytest.mark.trio
@pytest.mark.slow  # one to two seconds a case
@pytest.mark.parametrize(("victim", "point", "stage"), _in_window(FIRST_POINTS, FIRST_WINDOW))
async def test_crash_at_every_persistence_point_of_a_bump_whose_first_version_is_mined(
    tmp_path: Path, victim: str, point: int, stage: str
) -> None:
    await live_script(tmp_path, victim, point, stage, FirstMinedBumpScript)
