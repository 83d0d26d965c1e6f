"""A node crashes at every persistence point of a scripted channel life, restarts
from its store on disk and reestablishes; the script then finishes.

Two nodes in one process (the channel app on each, the in-memory transport, one
embedded regtest chain, the channel store on disk with fsync). The script:
open (Alice funds, pushes to Bob), HTLCs both ways (a trimmed one too), each
fulfilled, an ``update_fee``, a cooperative close. One side (the victim) is
crashed at its N-th persistence point, i.e. the N-th time its channel manager
made channel records durable (funding_created/funding_signed, channel_ready,
each commitment_signed and revoke_and_ack, update_fee, shutdown,
closing_signed, ...), either right after the records reached the disk and
before that output's messages left (``persisted``) or right after they were
handed to the peer (``sent``). The crash is an exception out of the manager's
actor that takes the whole node down with it (nothing more is written or
sent); the node restarts from the same directories, reconnects and the script
resumes where the channel stands.

Afterwards: the balances are exactly the script's (no payment lost or made
twice), both sides agree, no HTLC is left, the only transaction that ever
spent the funding output is the closing transaction both signed (nothing
revoked, nor any commitment, reached the mempool or the chain), and once it
is mined the wallets hold what they were given less the funding's and the
close's fees.

The same injection is available to a whole process as the environment
variable ``LNPMSG_DEV_CRASH_AT_PERSIST=N[:persisted|:sent]`` (SIGKILL);
``test_channels_nodes.py`` uses it with real processes. An HTLC its receiver
fails, with a crash at each point of that on either side, is in
``test_channels_crash_failures.py`` (on :class:`CrashHarness`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from test_channels_app import FUNDING_SAT, PUSH_MSAT, Pair, chain, channels, wait_until

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.manager import CRASH_STAGES, ManagedChannel, _parse_crash_at
from lnpmsg.channels.params import OpeningPolicy
from lnpmsg.channels.state import Phase
from lnpmsg.node.node import Node
from lnpmsg.testing import MemoryNetwork

#: (sender, amount_msat) of the script's payments, in order; the last is under both dust limits
PAYMENTS = [("alice", 40_000_000), ("bob", 15_000_000), ("alice", 3_000_000), ("bob", 200_000)]
NEW_FEERATE = 3000
#: persistence points of each side in the script without a crash (test_the_script_counts_its_points checks)
POINTS = {"alice": 45, "bob": 43}
_LIVE = (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING)


class SimulatedCrash(BaseException):
    """The victim's process dies here (a BaseException: no handler of the node catches it)."""


def _is_crash(exc: BaseException) -> bool:
    if isinstance(exc, SimulatedCrash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_crash(e) for e in exc.exceptions) and all(
            _is_crash(e) or isinstance(e, trio.Cancelled) for e in exc.exceptions
        )
    return False


def _crash() -> None:
    raise SimulatedCrash


def _open_or_closed(channel: ManagedChannel | None) -> bool:
    """Established, or closed cooperatively (not the end of an open a crash cut short)."""
    if channel is None:
        return False
    return channel.phase in _LIVE or (channel.phase is Phase.CLOSED and channel.core.state.closing_tx is not None)


class Script:
    """The scripted channel life, resumable from wherever a crash left the channel.

    A subclass scripts another life on the same harness (:func:`live_script`): it names the nodes'
    opening policies, the channel's capacity, Alice's balance once open, the payments and the
    feerate at the close, runs its life in :meth:`run` and checks its end in :meth:`check_end`."""

    capacity_sat = FUNDING_SAT
    #: Alice's balance once the channel is open
    opening_msat = FUNDING_SAT * 1000 - PUSH_MSAT
    payments = PAYMENTS
    #: both commitments' feerate at the close
    final_feerate = NEW_FEERATE

    def __init__(self, pair: Pair, nodes: dict[str, Node]) -> None:
        self.pair = pair
        #: the running nodes by name (shared with the harness that restarts them)
        self.nodes = nodes
        self.preimages = {sha256(p): p for p in (os.urandom(32) for _ in self.payments)}
        self.hashes = list(self.preimages)
        self.channel_key: str | None = None
        self.closing_txid: str | None = None

    def channel(self, name: str) -> ManagedChannel | None:
        """The script's channel on ``name`` (None before both sides hold it)."""
        manager = channels(self.nodes[name]).manager
        if manager is None or self.channel_key is None:
            return None
        funding = self.funding_outpoint
        for channel in manager.channels.values():
            if channel.core.state.funding_outpoint == funding and funding is not None:
                return channel
        return None

    @property
    def funding_outpoint(self) -> Any:
        manager = channels(self.nodes["alice"]).manager
        assert manager is not None
        channel = manager.channels.get(self.channel_key or "")
        return channel.core.state.funding_outpoint if channel is not None else None

    def quiet(self) -> bool:
        """Both sides connected, reestablished, nothing pending."""
        for name in ("alice", "bob"):
            channel = self.channel(name)
            if channel is None:
                return False
            s = channel.core.state
            if channel.phase in (Phase.CLOSED, Phase.FAILED):
                continue
            if not s.connected or s.awaiting_reestablish or s.local_changes.all() or s.remote_changes.all():
                return False
            if s.remote_next_commit is not None:
                return False
        return True

    def ready(self) -> bool:
        return self.quiet() and all(self.channel(n).phase is Phase.NORMAL for n in ("alice", "bob"))  # type: ignore[union-attr]

    def alice_msat(self, done: int | Iterable[int]) -> int:
        """Alice's balance after the first ``done`` payments (or those of these indexes)."""
        msat = self.opening_msat
        for index in range(done) if isinstance(done, int) else done:
            sender, amount = self.payments[index]
            msat += -amount if sender == "alice" else amount
        return msat

    def opening_policies(self) -> dict[str, OpeningPolicy]:
        """Each node's opening policy (the default's for a node not named)."""
        return {}

    #: what :meth:`fund` put in the wallets
    funded_sat = 0

    async def fund(self) -> None:
        """Coins for the open, before the crash is armed: Alice's."""
        await self.fund_wallet("alice", 3_000_000)

    async def fund_wallet(self, name: str, amount_sat: int) -> None:
        await self.pair.fund_wallet(self.nodes[name], amount_sat)
        self.funded_sat += amount_sat

    async def check_end(self) -> None:
        """What must hold once the script ran through (a subclass adds its own, or checks another end)."""
        source = self.pair.source
        # Balances exact: every payment made once, nothing in flight, both sides agree.
        a, b = self.channel("alice"), self.channel("bob")
        assert a is not None and b is not None
        a_spec, b_spec = a.core.state.local_commit.spec, b.core.state.local_commit.spec  # type: ignore[union-attr]
        final, capacity_msat = self.alice_msat(len(self.payments)), self.capacity_sat * 1000
        assert (a_spec.to_local_msat, a_spec.to_remote_msat, a_spec.htlcs) == (final, capacity_msat - final, ())
        assert (b_spec.to_local_msat, b_spec.to_remote_msat, b_spec.htlcs) == (capacity_msat - final, final, ())
        assert a_spec.feerate_per_kw == b_spec.feerate_per_kw == self.final_feerate

        # The closing transaction is the only spend of the funding: nothing revoked, no commitment.
        mempool = [txid[::-1].hex() for txid in await trio.to_thread.run_sync(source.core.mempool_txids)]
        assert len(mempool) == 1, mempool
        if self.closing_txid is not None:
            assert mempool == [self.closing_txid]
        closers = [c for c in (a, b) if c.phase is Phase.CLOSED]
        assert closers and all(Tx.parse(c.core.state.closing_tx).txid_hex == mempool[0] for c in closers)  # type: ignore[arg-type]
        for name in ("alice", "bob"):
            manager = channels(self.nodes[name]).manager
            assert manager is not None
            for channel in manager.channels.values():
                if channel.core.state.funding_outpoint == a.core.state.funding_outpoint:
                    assert channel.phase in (Phase.CLOSED, Phase.NEGOTIATING), (name, channel.phase, channel.core.state.failure)
                    assert not channel.core.state.failure

        # No satoshi lost: once the close is mined, the wallets hold what they were given less the fees
        # of the funding and of the close (an open or a fee bump a crash ended cost nothing).
        await source.mine(1)
        closing = Tx.parse(await source.find_transaction(bytes.fromhex(mempool[0])[::-1]))  # type: ignore[arg-type]
        fees = await self.gone_sat(closing)
        held = 0
        for node in self.nodes.values():
            wallet = node.apps["chain"].wallet  # type: ignore[attr-defined]
            await wallet.sync()
            held += wallet.balances().total_sat
        assert held == self.funded_sat - fees, (held, self.funded_sat, fees)

    async def gone_sat(self, closing: Tx) -> int:
        """What left the wallets for good once ``closing`` is mined: the fees of the funding it spends
        and its own (a life whose channel changed its funding counts those transactions too)."""
        funding = Tx.parse(await self.pair.source.find_transaction(closing.inputs[0].prevout.txid))
        return await _fee(self.pair.source, funding) + await _fee(self.pair.source, closing)

    async def run(self) -> None:
        """Run the script from where the channel stands (the whole of it at first)."""
        channel = await self.opened()
        if channel.phase in (Phase.AWAIT_READY, Phase.NORMAL):
            await wait_until(self.ready, "the channel ready and quiet")
            await self.pay_in_turn()
            if self.feerate() != NEW_FEERATE:
                await channels(self.nodes["alice"]).dev_updatefee(channel.channel_id.hex(), NEW_FEERATE)
                await wait_until(lambda: self.ready() and self.feerate() == NEW_FEERATE, "the fee changed")
        await self.close()

    async def opened(self) -> ManagedChannel:
        """Alice's channel, open and its funding confirmed (opened again if a crash came before both held it)."""
        if not all(_open_or_closed(self.channel(n)) for n in ("alice", "bob")):
            await self.open()  # the crash came before both sides held the channel: open another
        channel = self.channel("alice")
        assert channel is not None
        if channel.phase is Phase.AWAIT_READY:
            await self.confirm_the_funding()
        return channel

    async def pay_in_turn(self, upto: int | None = None) -> None:
        """The payments not made yet (of the first ``upto``: all by default), one after the other (the
        one in flight settled first)."""
        await self.settle_in_flight()
        cid = self.channel("alice").channel_id.hex()  # type: ignore[union-attr]
        for index in range(self.payments_done(), len(self.payments) if upto is None else upto):
            sender, amount = self.payments[index]
            await channels(self.nodes[sender]).dev_addhtlc(cid, amount, self.hashes[index].hex())
            await wait_until(lambda: self.ready() and len(self.htlcs("alice")) == 1, "the HTLC committed")
            await self.settle_in_flight()

    async def confirm_the_funding(self) -> None:
        """Mine the funding to the channel's depth (one broadcast late too)."""
        await self.pair.source.mine(2)
        await self.mine_a_late_funding()

    async def close(self) -> None:
        """Alice closes the channel cooperatively (unless it is closing or closed), until both hold it closed."""
        channel = self.channel("alice")
        assert channel is not None
        if channel.phase is Phase.NORMAL:
            result = await channels(self.nodes["alice"]).closechannel(channel.channel_id.hex())
            self.closing_txid = result.get("closing_txid")
        await wait_until(self.closed, "both closed")

    def closed(self) -> bool:
        """Both sides closed; or one closed (its closing transaction broadcast) and the other still
        negotiating: a side that crashed between storing the last closing_signed and sending it has
        the close complete, and the peer learns of it from the chain only (the on-chain monitor)."""
        phases = {n: self.channel(n).phase for n in ("alice", "bob")}  # type: ignore[union-attr]
        if all(p is Phase.CLOSED for p in phases.values()):
            return True
        return sorted(p.value for p in phases.values()) == ["closed", "negotiating"] and self.closing_broadcast

    #: set by the test once the closing transaction of the side that closed is in the mempool
    closing_broadcast = False

    async def mine_a_late_funding(self) -> None:
        """A funder that crashed before it broadcast the funding broadcasts it at its restart, maybe
        only after the blocks the script just mined (a loaded machine): mine it then, once it is in
        the mempool, until its depth makes the channel ready."""
        source = self.pair.source
        late = False
        with trio.fail_after(60):
            while not self.ready():
                funding = self.funding_outpoint
                if funding is not None and funding.txid in await trio.to_thread.run_sync(source.core.mempool_txids):
                    late = True
                    await source.mine(2)
                elif late:
                    # (it may have come between those two blocks: one more a second until deep enough)
                    with trio.move_on_after(1):
                        await wait_until(self.ready, "the channel ready and quiet")
                        return
                    await source.mine(1)
                await trio.sleep(0.05)

    def open_options(self) -> dict[str, Any]:
        """Alice's ``fundchannel`` arguments besides the peer."""
        return {"amount_sat": FUNDING_SAT, "push_msat": PUSH_MSAT}

    async def open(self) -> None:
        """Alice opens the channel to Bob (:meth:`open_options`); it is the script's from then on."""
        alice, bob = self.nodes["alice"], self.nodes["bob"]
        manager = channels(alice).manager
        assert manager is not None
        before = set(manager.channels)
        try:
            await channels(alice).fundchannel(bob.node_id.hex(), **self.open_options())
        finally:
            new = [k for k in manager.channels if k not in before]
            if new:
                self.channel_key = new[-1]
        await wait_until(lambda: self.channel("bob") is not None, "bob holds the channel")

    def htlcs(self, name: str) -> list[Any]:
        channel = self.channel(name)
        assert channel is not None and channel.core.state.local_commit is not None
        return list(channel.core.state.local_commit.spec.htlcs)

    def feerate(self) -> int:
        channel = self.channel("alice")
        assert channel is not None and channel.core.state.local_commit is not None
        return channel.core.state.local_commit.spec.feerate_per_kw

    async def settle_in_flight(self) -> None:
        """The receiver of each committed HTLC fulfills it with the script's preimage."""
        for name in ("alice", "bob"):
            channel = self.channel(name)
            assert channel is not None
            for htlc in self.htlcs(name):
                if htlc.incoming:
                    preimage = self.preimages[htlc.add.payment_hash]
                    await channels(self.nodes[name]).dev_fulfill(channel.channel_id.hex(), htlc.add.id, preimage.hex())
        await wait_until(lambda: self.ready() and not self.htlcs("alice") and not self.htlcs("bob"), "HTLCs settled")

    def payments_done(self) -> int:
        """How many of the script's payments are settled: the one prefix Alice's balance matches."""
        channel = self.channel("alice")
        assert channel is not None and channel.core.state.local_commit is not None
        msat = channel.core.state.local_commit.spec.to_local_msat
        matches = [done for done in range(len(self.payments) + 1) if self.alice_msat(done) == msat]
        assert len(matches) == 1, (msat, matches)
        return matches[0]


class CrashHarness:
    """Alice (listening) and Bob run in ``nursery``; one of them, the victim, may be armed to crash
    once at a persistence point (:meth:`arm`), and then starts again from the same directories."""

    def __init__(self, pair: Pair, nursery: trio.Nursery) -> None:
        self.pair = pair
        self.nursery = nursery
        #: the running nodes by name (the victim's entry is its new node once it restarted)
        self.nodes: dict[str, Node] = {}
        self.crashed = trio.Event()
        self.victim: str | None = None
        self.crash_at: tuple[int, str] | None = None
        #: called with a node's name each time it has started (a handler it needs from its start)
        self.on_start: Callable[[str], None] = lambda name: None

    async def start(self, name: str) -> None:
        """Start ``name`` from its directories (the same key every time)."""
        await self.nursery.start(self._run_node, name)
        self.on_start(name)

    async def _run_node(self, name: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        node = self.pair.node(name, name == "alice")
        self.nodes[name] = node
        try:
            await node.run(task_status=task_status)
        except BaseException as exc:
            if not _is_crash(exc):
                raise
            self.crashed.set()

    async def connect(self) -> None:
        """Bob dials Alice."""
        alice, bob = self.nodes["alice"], self.nodes["bob"]
        await bob.connect(alice.addresses[0])
        await wait_until(lambda: bob.node_id in alice.peers, "connected")

    def arm(self, victim: str, point: int, stage: str) -> None:
        """Crash ``victim`` at its ``point``-th persistence point from now, at ``stage`` (see CRASH_STAGES)."""
        manager = channels(self.nodes[victim]).manager
        assert manager is not None
        self.victim, self.crash_at = victim, (manager.persists + point, stage)
        manager.crash_at, manager.crash = self.crash_at, _crash

    async def crash_during(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step``; when armed, the victim crashes during it (``step`` is cut there), the survivor
        sees it go, and the victim starts again and reconnects: resuming ``step`` is the caller's."""

        async def first_run() -> None:
            try:
                await step()
            except Exception:
                with trio.move_on_after(30):  # the crash reaches the command first, then the node
                    await self.crashed.wait()
                if not self.crashed.is_set():
                    raise
                await trio.sleep_forever()  # the crash cut a command: the resumed step does it
            done.cancel()

        async with trio.open_nursery() as inner:
            done = inner.cancel_scope
            inner.start_soon(first_run)
            if self.victim is not None:
                await self.crashed.wait()
                inner.cancel_scope.cancel()
        victim = self.victim
        if victim is None:
            return
        with trio.move_on_after(30):  # the step may end on the victim's last point first
            await self.crashed.wait()
        assert self.crashed.is_set(), f"{victim} never reached persistence point {self.crash_at}"
        survivor = "bob" if victim == "alice" else "alice"
        victim_id = self.nodes[victim].node_id
        await wait_until(lambda: victim_id not in self.nodes[survivor].peers, "the survivor sees the crash")
        await self.start(victim)
        await self.nodes["bob"].connect(self.nodes["alice"].addresses[0])

    def idle(self) -> bool:
        """Every job each node's channel manager took is done: its persistence point counted.

        A core's state changes in memory before its records reach the disk, so a channel can look
        settled while the job that settled it is still writing; a count read then misses that
        point, or a count started then takes it for one of what follows."""
        managers = [channels(node).manager for node in self.nodes.values()]
        return all(manager is not None and manager.idle for manager in managers)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


async def live_script(tmp_path: Path, victim: str | None, point: int, stage: str, life: type[Script] = Script) -> dict[str, int]:
    """Run the script (``life``), crashing ``victim`` at ``point`` (``stage``); the persistence points each side made."""
    network = MemoryNetwork()
    async with chain(tmp_path) as source, trio.open_nursery() as nursery:
        pair = Pair(source, tmp_path, network)
        harness = CrashHarness(pair, nursery)
        script = life(pair, harness.nodes)
        pair.policies = script.opening_policies()
        await harness.start("alice")
        await harness.start("bob")
        await script.fund()
        if victim is not None:
            harness.arm(victim, point, stage)
        await harness.connect()
        await harness.crash_during(script.run)
        if victim is not None:
            async with trio.open_nursery() as watch:
                watch.start_soon(_watch_closing, script, source)
                await script.run()
                watch.cancel_scope.cancel()
        await wait_until(harness.idle, "both channel managers idle")
        counts = {name: channels(node).manager.persists for name, node in script.nodes.items()}  # type: ignore[union-attr]

        await script.check_end()
        harness.stop()
        return counts


async def _fee(source: Any, tx: Tx) -> int:
    """What ``tx`` pays in fees (its inputs' amounts read from the chain)."""
    spent = 0
    for txin in tx.inputs:
        previous = Tx.parse(await source.find_transaction(txin.prevout.txid))
        spent += previous.outputs[txin.prevout.vout].amount_sat
    return spent - sum(o.amount_sat for o in tx.outputs)


def alternating_sample(points: dict[str, int]) -> list[tuple[str, int, str]]:
    """(victim, point, stage): each of ``points[victim]`` points of each side at one stage, odd points
    ``persisted`` and even ones ``sent`` for Alice, swapped for Bob: every point, and both stages of
    each side, in half the cases of a sweep over both stages."""
    return [(victim, point, CRASH_STAGES[(point + (victim == "alice")) % 2]) for victim in ("alice", "bob")
            for point in range(1, points[victim] + 1)]  # fmt: skip


async def _watch_closing(script: Script, source: Any) -> None:
    """Note when a closed side's closing transaction is in the mempool."""
    while True:
        mempool = {t[::-1].hex() for t in await trio.to_thread.run_sync(source.core.mempool_txids)}
        for name in ("alice", "bob"):
            channel = script.channel(name)
            if channel is not None and channel.core.state.closing_tx and Tx.parse(channel.core.state.closing_tx).txid_hex in mempool:
                script.closing_broadcast = True
        await trio.sleep(0.1)


@pytest.mark.trio
async def test_the_script_counts_its_points(tmp_path: Path) -> None:
    """Without a crash the script runs through and makes the number of points the crash tests cover."""
    counts = await live_script(tmp_path, None, 0, "persisted")
    assert counts == POINTS


@pytest.mark.trio
@pytest.mark.slow  # 176 cases of about a second each
@pytest.mark.parametrize(
    ("victim", "point", "stage"),
    [(victim, point, stage) for victim in ("alice", "bob") for stage in CRASH_STAGES for point in range(1, POINTS[victim] + 1)],
)
async def test_crash_at_every_persistence_point(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    await live_script(tmp_path, victim, point, stage)


def test_the_alternating_sample_covers_every_point_and_both_stages() -> None:
    points = {"alice": 5, "bob": 4}
    sample = alternating_sample(points)
    for victim in ("alice", "bob"):
        cases = [(point, stage) for v, point, stage in sample if v == victim]
        assert [point for point, _ in cases] == list(range(1, points[victim] + 1))
        assert {stage for _, stage in cases} == set(CRASH_STAGES)
    assert ("alice", 1, "persisted") in sample and ("bob", 1, "sent") in sample


def test_the_crash_variable_is_parsed_strictly() -> None:
    assert _parse_crash_at(None) is None and _parse_crash_at("") is None
    assert _parse_crash_at("7") == (7, "persisted")
    assert _parse_crash_at("7:sent") == (7, "sent")
    for bad in ("0", "x", "3:later", "-1"):
        with pytest.raises(ValueError, match="LNPMSG_DEV_CRASH_AT_PERSIST"):
            _parse_crash_at(bad)
