"""A peer fails an HTLC while either side crashes at each of its persistence points.

The nodes, the chain and the crash are those of ``test_channels_crash_points.py``
(its :class:`CrashHarness`). The channel is opened first, without a crash. Then
the stage: one side (the adder: Alice the funder, or Bob) offers an HTLC and the
other (the failer) fails it once it is irrevocably committed, with
``update_fail_htlc`` (a failure onion) or ``update_fail_malformed_htlc`` (a
BADONION code). One side, the victim, crashes at its N-th persistence point of
the stage, either once the records are on disk (``persisted``) or once that
output's messages left (``sent``), restarts from its directories and
reestablishes; the stage resumes from where the channel stands: an HTLC
committed on both sides and not being failed is failed, and an add both sides
forgot (it was dropped before it was committed) is offered again.

The adder's payments layer is played by a recorder on its channel app's HTLC
interface (``htlcs``): what its handler is told while the node runs, and at
each start the failures the app kept for it (``failed_offered``); it says when
it has recorded a failure (``failure_handled``), as a payments layer does once
its own store holds it. The recorder outlives the adder's crashes, as that
store would.

Afterwards: the adder heard of the failure exactly once, with the failer's
reason or code, and of every other HTLC it offered as dropped; the balances
are those before the stage; no HTLC is in any commitment of either side; the
channel works (one more HTLC added and fulfilled); nothing went on chain; no
failure is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import Pair, chain, channels, pay, wait_until
from test_channels_crash_points import CrashHarness, Script

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.channels.htlc_hook import HtlcHook, IncomingHtlc
from lnpmsg.channels.manager import CRASH_STAGES
from lnpmsg.channels.state import Phase
from lnpmsg.testing import MemoryNetwork

AMOUNT_MSAT = 30_000_000
#: the HTLC after the stage, fulfilled: the channel still works
LATER_MSAT = 7_000_000
#: the failer's failure onion (its content is the payments layer's business: the channel carries it unread)
REASON = bytes(range(256)) + b"\x00" * 36
#: invalid_onion_hmac (BADONION | PERM | 5)
MALFORMED_CODE = 0xC005
KINDS = ("fail", "malformed")
#: who adds the HTLC: the funder, or the fundee (the funder pays the commitment's fee either way)
ADDERS = ("alice", "bob")
#: persistence points the adder and the failer make in the stage without a crash (test_the_stage_counts_its_points checks)
POINTS = {"adder": 8, "failer": 8}


class AdderRecord:
    """What the adder's payments layer heard of the HTLCs it offered: ``(htlc id, how it ended, detail)``
    in order, ``detail`` the preimage, the (reason, failure code) of a failure, or None."""

    def __init__(self) -> None:
        self.resolutions: list[tuple[int, str, Any]] = []
        self.hook: HtlcHook | None = None
        #: failures recorded and not yet reported as handled to the channel app
        self._unreported: list[tuple[str, int]] = []

    def adopt(self, hook: HtlcHook) -> None:
        """The adder (re)started: listen from now on, and record the failures the channel app kept for it."""
        self.hook = hook
        hook.set_handler(self)
        for failure in hook.failed_offered():
            self._failed(failure.channel_key, failure.add.id, failure.reason, failure.failure_code)

    def htlc_incoming(self, htlc: IncomingHtlc) -> None:
        """(The adder is offered nothing here.)"""

    def htlc_resolved(self, channel_key: str, htlc_id: int, preimage: bytes | None, reason: bytes | None,
                      failure_code: int | None) -> None:  # fmt: skip
        if preimage is not None:
            self.resolutions.append((htlc_id, "fulfilled", preimage))
        elif reason is None and failure_code is None:
            self.resolutions.append((htlc_id, "dropped", None))
        else:
            self._failed(channel_key, htlc_id, reason, failure_code)

    def htlc_resolved_on_chain(self, channel_key: str, htlc_id: int, preimage: bytes | None) -> None:
        self.resolutions.append((htlc_id, "on chain", preimage))

    def _failed(self, channel_key: str, htlc_id: int, reason: bytes | None, failure_code: int | None) -> None:
        self.resolutions.append((htlc_id, "failed", (reason, failure_code)))
        self._unreported.append((channel_key, htlc_id))

    def outcomes(self) -> list[str]:
        """How each HTLC ended, in order."""
        return [how for _, how, _ in self.resolutions]

    def failures(self) -> list[tuple[int, str, Any]]:
        return [r for r in self.resolutions if r[1] == "failed"]

    async def report_handled(self) -> None:
        """The failures are in the payments layer's own record: the channel app may forget them."""
        assert self.hook is not None
        while self._unreported:
            await self.hook.failure_handled(*self._unreported[0])
            self._unreported.pop(0)


class FailureStage:
    """``adder``'s HTLC added and failed by the other (``kind``: fail or malformed), resumable from
    wherever a crash left the channel."""

    def __init__(self, script: Script, kind: str, adder: str, record: AdderRecord) -> None:
        self.script = script
        self.kind = kind
        self.adder, self.failer = adder, _other(adder)
        self.record = record
        #: adds the adder was asked for (one a crash cut short too: its record was on disk first)
        self.attempts = 0
        self.payment_hash = sha256(b"the failure stage")

    def no_htlc(self) -> bool:
        return not self.script.htlcs(self.adder) and not self.script.htlcs(self.failer)

    async def run(self) -> None:
        script = self.script
        while True:
            await wait_until(script.ready, "the channel ready and quiet")
            incoming = channels(script.nodes[self.failer]).htlcs.pending_incoming()
            if incoming:  # committed both ways and nobody fails it: the failer does
                for htlc in incoming:
                    await self.fail(htlc)
                await wait_until(lambda: script.ready() and self.no_htlc(), "the HTLC failed")
                continue
            # (at least: a resolution heard twice is for the checks after the stage to name)
            await wait_until(lambda: len(self.record.resolutions) >= self.attempts, "the adder heard how each of its HTLCs ended")
            if self.record.failures():
                break
            self.attempts += 1  # first, or again: both sides forgot the add before it was committed
            cid = script.channel(self.adder).channel_id.hex()  # type: ignore[union-attr]
            await channels(script.nodes[self.adder]).dev_addhtlc(cid, AMOUNT_MSAT, self.payment_hash.hex())
            await wait_until(lambda: script.ready() and len(script.htlcs(self.failer)) == 1, "the HTLC committed")
        await self.record.report_handled()

    async def fail(self, htlc: IncomingHtlc) -> None:
        hook = channels(self.script.nodes[self.failer]).htlcs
        if self.kind == "fail":
            await hook.fail(htlc.channel_key, htlc.add.id, REASON)
        else:
            await hook.fail_malformed(htlc.channel_key, htlc.add.id, sha256(htlc.add.onion_routing_packet), MALFORMED_CODE)


async def _failure_stage(tmp_path: Path, kind: str, adder: str, victim: str | None, point: int, stage: str) -> dict[str, int]:
    """Open, then run the stage (``adder`` adds) crashing ``victim`` ("adder" or "failer") at its
    ``point``-th persistence point of it (``stage``), check what must hold, and return the persistence
    points the adder and the failer made in the stage."""
    failer = _other(adder)
    async with chain(tmp_path) as source, trio.open_nursery() as nursery:
        pair = Pair(source, tmp_path, MemoryNetwork())
        harness = CrashHarness(pair, nursery)
        script = Script(pair, harness.nodes)
        record = AdderRecord()
        harness.on_start = lambda name: record.adopt(channels(harness.nodes[name]).htlcs) if name == adder else None
        await harness.start("alice")
        await harness.start("bob")
        await pair.fund_wallet(harness.nodes["alice"], 3_000_000)
        await harness.connect()
        await script.open()
        await source.mine(2)
        # The side that receives the last channel_ready is ready in memory before that record is on
        # disk: its point would count as the stage's first (and a crash armed at 1 would hit it).
        await wait_until(lambda: script.ready() and harness.idle(), "the channel ready, both channel managers idle")
        before = {name: _spec(script, name) for name in ("alice", "bob")}
        points = {name: channels(node).manager.persists for name, node in harness.nodes.items()}  # type: ignore[union-attr]
        victim_name = {"adder": adder, "failer": failer}.get(victim or "")
        if victim_name is not None:
            harness.arm(victim_name, point, stage)
        failure_stage = FailureStage(script, kind, adder, record)
        await harness.crash_during(failure_stage.run)
        if victim_name is not None:
            await failure_stage.run()
            points[victim_name] = 0  # counted again from its restart
        await wait_until(harness.idle, "both channel managers idle")
        made = {name: channels(node).manager.persists - points[name] for name, node in harness.nodes.items()}  # type: ignore[union-attr]

        # The adder heard of the failure once, with what the failer gave; every other HTLC it offered was dropped.
        assert record.outcomes() == ["dropped"] * (failure_stage.attempts - 1) + ["failed"], record.outcomes()
        assert [detail for _, _, detail in record.failures()] == [(REASON, None) if kind == "fail" else (None, MALFORMED_CODE)]
        assert channels(harness.nodes[adder]).htlcs.failed_offered() == []
        assert not any((tmp_path / adder / "channels" / "failures").iterdir()), "a failure is still kept"
        # The failed HTLC moved nothing and left nothing in any commitment.
        for name in ("alice", "bob"):
            assert _spec(script, name) == before[name], name
            state = script.channel(name).core.state  # type: ignore[union-attr]
            assert state.remote_commit is not None and state.remote_commit.spec.htlcs == (), name

        # The channel still works, and nothing ever went on chain.
        await pay(harness.nodes[adder], harness.nodes[failer], LATER_MSAT)
        assert record.outcomes() == ["dropped"] * (failure_stage.attempts - 1) + ["failed", "fulfilled"], record.outcomes()
        to_local, to_remote, _ = before[adder]
        assert _spec(script, adder) == (to_local - LATER_MSAT, to_remote + LATER_MSAT, ())
        assert not await trio.to_thread.run_sync(source.core.mempool_txids), "something went on chain"
        for name in ("alice", "bob"):
            channel = script.channel(name)
            assert channel is not None and channel.phase is Phase.NORMAL and not channel.core.state.failure, name
        harness.stop()
        return {"adder": made[adder], "failer": made[failer]}


def _other(name: str) -> str:
    return "bob" if name == "alice" else "alice"


def _spec(script: Script, name: str) -> tuple[int, int, tuple[Any, ...]]:
    """(to_local, to_remote, HTLCs) of ``name``'s latest commitment."""
    channel = script.channel(name)
    assert channel is not None and channel.core.state.local_commit is not None
    spec = channel.core.state.local_commit.spec
    return spec.to_local_msat, spec.to_remote_msat, spec.htlcs


@pytest.mark.trio
@pytest.mark.parametrize("adder", ADDERS)
@pytest.mark.parametrize("kind", KINDS)
async def test_the_stage_counts_its_points(tmp_path: Path, kind: str, adder: str) -> None:
    """Without a crash the failure reaches the adder once, and each side makes the points the crash tests cover."""
    assert await _failure_stage(tmp_path, kind, adder, None, 0, "persisted") == POINTS


@pytest.mark.trio
@pytest.mark.slow  # 128 cases of a fraction of a second each
@pytest.mark.parametrize(
    ("kind", "adder", "victim", "point", "stage"),
    [(kind, adder, victim, point, stage) for kind in KINDS for adder in ADDERS for victim in POINTS for stage in CRASH_STAGES
     for point in range(1, POINTS[victim] + 1)],
)  # fmt: skip
async def test_crash_at_every_persistence_point_of_a_failed_htlc(tmp_path: Path, kind: str, adder: str, victim: str, point: int,
                                                               stage: str) -> None:  # fmt: skip
    await _failure_stage(tmp_path, kind, adder, victim, point, stage)
