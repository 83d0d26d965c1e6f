"""A node crashes at every persistence point of a bumped splice's life, restarts from its store on
disk and reestablishes; the script then finishes.

The life is the splice-in of ``test_channels_crash_points_splice.py`` (:class:`SpliceInScript`)
with a fee bump once both signed the splice: Alice quiesces the channel again and bumps the
splice to three times its feerate (``tx_init_rbf``/``tx_ack_rbf``, a second construction, its
commitments and signatures; the bump replaces the first version in the mempool); the payments
while the splice waits go as batches over the funding and both versions; the bump is mined and
locked, a payment on the new funding, and Alice closes.

A bump a crash ended before our ``tx_signatures`` left leaves the first version standing and is
asked again; one signed is resumed by ``channel_reestablish`` (``next_funding``). The checks are
those of the splice-in, and both sides end on the bump (the version mined).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_channels_app import channels, wait_until
from test_channels_crash_points import alternating_sample, live_script
from test_channels_crash_points_splice import SpliceInScript

from lnpmsg.wallet.calls import ChainAppError

#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 69, "bob": 63}


class SpliceBumpScript(SpliceInScript):
    """Alice's splice-in, bumped by her once signed, then the payments, the lock and the close."""

    def bumped(self) -> bool:
        """Both hold the bump signed (the first version as its previous one)."""
        a, b = self.pending("alice"), self.pending("bob")
        return a is not None and b is not None and bool(a.previous) and bool(b.previous) and a.signed and b.signed

    #: the bump's txid, once both signed it
    bump_txid: bytes | None = None

    async def after_splice(self) -> None:
        if self.bumped():
            self.bump_txid = self.pending("alice").outpoint.txid  # type: ignore[union-attr]
            return
        cid = self.channel("alice").channel_id.hex()  # type: ignore[union-attr]
        sp = self.pending("alice")
        assert sp is not None
        feerate = -(-sp.feerate_per_kw * 3 // 250)
        try:
            await channels(self.nodes["alice"]).bumpsplice(cid, feerate=feerate)
        except ChainAppError as exc:
            # right after a restart the peer's tx_abort answering our next_funding may cross the bump
            # (the limit the funding bump has too, docs/fee-bumping.md): asked once more, as a user would
            if "next_funding names no funding of ours" not in str(exc):
                raise
            await wait_until(self.agreed, "both hold the same signed splice after the crossed tx_abort")
            await channels(self.nodes["alice"]).bumpsplice(cid, feerate=feerate)
        await wait_until(lambda: self.agreed() and self.bumped(), "the bump signed by both")
        self.bump_txid = self.pending("alice").outpoint.txid  # type: ignore[union-attr]

    async def check_end(self) -> None:
        await super().check_end()
        for name in ("alice", "bob"):
            channel = self.channel(name)
            assert channel is not None and channel.core.state.funding_outpoint is not None
            assert channel.core.state.funding_outpoint.txid == self.bump_txid, "the channel is not on the bump (the version mined)"


@pytest.mark.trio
async def test_the_script_counts_its_points(tmp_path: Path) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    assert await live_script(tmp_path, None, 0, "persisted", SpliceBumpScript) == POINTS


@pytest.mark.trio
@pytest.mark.slow  # one to two seconds a case
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(POINTS))
async def test_crash_at_every_persistence_point_of_a_bumped_splice(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, SpliceBumpScript)
