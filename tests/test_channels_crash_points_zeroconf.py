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

A second life (:class:`InFlightScript`) leaves an HTLC of Alice's committed on both sides when the
double spend is mined: both fail the channel with the HTLC on their commitments, and nothing is
broadcast for it even once it expired (blocks are mined past its expiry). Its sweep takes only the
points from that HTLC's offer on (``IN_FLIGHT_WINDOW``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import FUNDING_SAT, channels, wait_until
from test_channels_crash_points import Script, _open_or_closed, alternating_sample, live_script
from test_channels_double_spend import _conflict

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.double_spend import DOUBLE_SPENT
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.state import Phase

#: Alice's one coin: the funding spends it, and so does the double spend (less its fee)
COIN_SAT = 3_000_000
DOUBLE_SPEND_FEE_SAT = 2_000
#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 22, "bob": 21}
#: the same for the life with an HTLC in flight (InFlightScript), and the points of each side from
#: that HTLC's offer to the end: the ones its sweep takes (the rest is the first life's)
IN_FLIGHT_POINTS = {"alice": 26, "bob": 25}
IN_FLIGHT_WINDOW = {"alice": range(21, 27), "bob": range(20, 26)}


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
            await self.before_the_double_spend()
            bob = self.channel("bob")
            assert bob is not None
            await wait_until(lambda: bob.core.state.funding_tx is not None, "bob found the funding transaction")
            alice = self.channel("alice")
            assert alice is not None and alice.core.state.funding_tx is not None
            conflict = _conflict(self.nodes["alice"], Tx.parse(alice.core.state.funding_tx))
            assert (await self.pair.source.submit_transactions_in_block([conflict])).accepted
            self.mined = True
        await wait_until(lambda: all(self.channel(n).phase is Phase.FAILED for n in ("alice", "bob")), "both failed")  # type: ignore[union-attr]

    async def before_the_double_spend(self) -> None:
        """What the channel carries before its funding is double-spent: the payments."""
        await self.pay_in_turn()

    def expected_spec(self, name: str) -> tuple[int, int, int]:
        """(to_local, to_remote, HTLCs) of ``name``'s last commitment: the payments made."""
        final = self.alice_msat(len(self.payments))
        ours = final if name == "alice" else FUNDING_SAT * 1000 - final
        return ours, FUNDING_SAT * 1000 - ours, 0

    async def check_end(self) -> None:
        for name in ("alice", "bob"):
            channel = self.channel(name)
            assert channel is not None and channel.phase is Phase.FAILED
            failure = channel.core.state.failure or ""
            assert failure.startswith(DOUBLE_SPENT), (name, failure)  # (Bob too: he saw it himself)
            spec = channel.core.state.local_commit.spec  # type: ignore[union-attr]
            assert (spec.to_local_msat, spec.to_remote_msat, len(spec.htlcs)) == self.expected_spec(name), name
        assert not await trio.to_thread.run_sync(self.pair.source.core.mempool_txids), "something was broadcast"
        wallet = self.nodes["alice"].apps["chain"].wallet  # type: ignore[attr-defined]
        await wallet.sync()
        assert not wallet.reserved()
        assert wallet.balances().total_sat == self.funded_sat - DOUBLE_SPEND_FEE_SAT


class InFlightScript(DoubleSpentScript):
    """The same life with an HTLC of Alice's committed, neither fulfilled nor failed, when the double
    spend is mined: each side fails the channel with the HTLC still on both commitments, and no
    transaction ever goes out for it (its commitment could never confirm), not even once it expired."""

    #: the HTLC in flight: its preimage is the script's alone (neither side settles it)
    in_flight_msat = 7_000_000
    #: its expiry, this many blocks after the tip when it is offered (check_end mines past it)
    in_flight_delta = 12

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.in_flight_hash = sha256(os.urandom(32))

    def in_flight(self, name: str) -> bool:
        """The HTLC is on ``name``'s commitment (the only one there)."""
        return [h.add.payment_hash for h in self.htlcs(name)] == [self.in_flight_hash]

    async def before_the_double_spend(self) -> None:
        """The payments, then the HTLC committed both ways (offered again if a crash dropped it)."""
        if not (self.in_flight("alice") and self.in_flight("bob")):
            await self.pay_in_turn()
            cid = self.channel("alice").channel_id.hex()  # type: ignore[union-attr]
            tip = (await self.pair.source.tip()).height
            await channels(self.nodes["alice"]).dev_addhtlc(cid, self.in_flight_msat, self.in_flight_hash.hex(),
                                                            cltv_expiry=tip + self.in_flight_delta)  # fmt: skip
            await wait_until(lambda: self.ready() and self.in_flight("alice") and self.in_flight("bob"), "the HTLC in flight on both commitments")

    def expected_spec(self, name: str) -> tuple[int, int, int]:
        """(to_local, to_remote, HTLCs) of ``name``'s last commitment: the payments made, the HTLC in flight."""
        final, capacity = self.alice_msat(len(self.payments)), FUNDING_SAT * 1000
        alice = (final - self.in_flight_msat, capacity - final)
        return (*alice, 1) if name == "alice" else (alice[1], alice[0], 1)

    async def check_end(self) -> None:
        await super().check_end()
        source = self.pair.source
        expiry = max(h.add.cltv_expiry for h in self.htlcs("alice"))
        await source.mine(expiry - (await source.tip()).height + 2)
        top = (await source.tip()).height
        for name in ("alice", "bob"):
            await wait_until(lambda: channels(self.nodes[name]).onchain.done_height == top, f"{name}'s monitors read the blocks")  # type: ignore[union-attr]
            channel = self.channel(name)
            assert channel is not None and channel.phase is Phase.FAILED and self.in_flight(name)
            assert (channel.core.state.failure or "").startswith(DOUBLE_SPENT), (name, channel.core.state.failure)  # (no force close at the expiry)
        assert not await trio.to_thread.run_sync(source.core.mempool_txids), "something was broadcast for the expired HTLC"


@pytest.mark.trio
@pytest.mark.parametrize(("life", "points"), [(DoubleSpentScript, POINTS), (InFlightScript, IN_FLIGHT_POINTS)], ids=["settled", "in_flight"])
async def test_the_script_counts_its_points(tmp_path: Path, life: type[DoubleSpentScript], points: dict[str, int]) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    assert await live_script(tmp_path, None, 0, "persisted", life) == points


@pytest.mark.trio
@pytest.mark.slow  # 43 cases of about a second each
@pytest.mark.parametrize(("victim", "point", "stage"), alternating_sample(POINTS))
async def test_crash_at_every_persistence_point(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage, DoubleSpentScript)


@pytest.mark.trio
@pytest.mark.slow  # 12 cases of about a second each
@pytest.mark.parametrize(("victim", "point", "stage"), [c for c in alternating_sample(IN_FLIGHT_POINTS) if c[1] in IN_FLIGHT_WINDOW[c[0]]])
async def test_crash_at_every_persistence_point_with_an_htlc_in_flight(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    """Each point from the offer of the HTLC left in flight to the double spend's failure."""
    await live_script(tmp_path, victim, point, stage, InFlightScript)
