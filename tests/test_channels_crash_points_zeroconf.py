"""A node crashes at every persistence point of a zero-conf channel whose funding is double-spent,
restarts from its store on disk and reestablishes; the script then finishes.

The nodes, the chain and the crash are those of ``test_channels_crash_points.py``
(:class:`CrashHarness`, :func:`live_script`), on another life: Bob trusts Alice's zero-conf
channels. The script: Alice opens a zero-conf channel to Bob (pushing to him), usable at once;
Bob, who is told only the funding's txid, finds the funding transaction at the chain source (the
``FundingFound`` record); a payment each way over the unconfirmed channel; then a block confirms
a transaction of Alice's wallet spending the funding's input elsewhere: each side fails the
channel (the ``FundingDoubleSpent`` record; Bob sees it himself, having the funding's inputs).
One side crashes at its N-th persistence point, right after the records reached the disk
(``persisted``) or right after that output's messages were handed to the peer (``sent``); it
restarts and the script resumes from where the channel stands (a double spend mined while a
side was down is found at its start).

Afterwards: both sides hold the channel failed as double-spent, with the balances of every
payment made exactly once and no HTLC; no commitment was broadcast (it would spend an output
that never exists: nothing is in the mempool), and Alice's wallet holds its coin back, less the
double spend's fee, with nothing held for the dead funding.

Each point of each side is crashed at one stage, alternating with the point
(:func:`alternating_sample`: every point, and both stages of each side, in half the cases),
each case running the whole life (about a second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import FUNDING_SAT, wait_until
from test_channels_crash_points import Script, _open_or_closed, alternating_sample, live_script
from test_channels_double_spend import _conflict

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.double_spend import DOUBLE_SPENT
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.state import Phase

#: Alice's one coin: the funding spends it, and so does the double spend (less its fee)
COIN_SAT = 3_000_000
DOUBLE_SPEND_FEE_SAT = 2_000
#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 22, "bob": 21}


class DoubleSpentScript(Script):
    """The zero-conf channel's life, resumable from wherever a crash left the channel."""

    payments = [("alice", 40_000_000), ("bob", 15_000_000)]

    #: the double spend is in a block
    mined = False

    def opening_policies(self) -> dict[str, OpeningPolicy]:
        return {"bob": OpeningPolicy(zeroconf_peers=(self.pair.keys["alice"].node_id,))}

    async def fund(self) -> None:
        await self.fund_wallet("alice", COIN_SAT)

    def open_options(self) -> dict[str, Any]:
        return {**super().open_options(), "zeroconf": True, "channel_type": "scid_alias"}

    async def run(self) -> None:
        if not self.mined:
            if not all(_open_or_closed(self.channel(n)) for n in ("alice", "bob")):
                await self.open()  # the crash came before both sides held the channel: open another
            await wait_until(self.ready, "the zero-conf channel ready and quiet")
            await self.pay_in_turn()
            bob = self.channel("bob")
            assert bob is not None
            await wait_until(lambda: bob.core.state.funding_tx is not None, "bob found the funding transaction")
            alice = self.channel("alice")
            assert alice is not None and alice.core.state.funding_tx is not None
            conflict = _conflict(self.nodes["alice"], Tx.parse(alice.core.state.funding_tx))
            assert (await self.pair.source.submit_transactions_in_block([conflict])).accepted
            self.mined = True
        await wait_until(lambda: all(self.channel(n).phase is Phase.FAILED for n in ("alice", "bob")), "both failed")  # type: ignore[union-attr]

    async def check_end(self) -> None:
        final = self.alice_msat(len(self.payments))
        for name in ("alice", "bob"):
            channel = self.channel(name)
            assert channel is not None and channel.phase is Phase.FAILED
            failure = channel.core.state.failure or ""
            assert failure.startswith(DOUBLE_SPENT), (name, failure)  # (Bob too: he saw it himself)
            spec = channel.core.state.local_commit.spec  # type: ignore[union-attr]
            ours = final if name == "alice" else FUNDING_SAT * 1000 - final
            assert (spec.to_local_msat, spec.to_remote_msat, spec.htlcs) == (ours, FUNDING_SAT * 1000 - ours, ()), name
        assert not await trio.to_thread.run_sync(self.pair.source.core.mempool_txids), "something was broadcast"
        wallet = self.nodes["alice"].apps["chain"].wallet  # type: ignore[attr-defined]
        await wallet.sync()
        assert not wallet.reserved()
        assert wallet.balances().total_sat == self.funded_sat - DOUBLE_SPEND_FEE_SAT


@pytest.mark.trio
async def test_the_script_counts_its_points(tmp_path: Path) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    assert await live_script(tmp_path, None, 0, "persisted", DoubleSpentScript) == POINTS


@pytest.mark.trio
@pytest.mark.slow  # 43 cases of about a second each
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(POINTS))
async def test_crash_at_every_persistence_point(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, DoubleSpentScript)
