"""The gossip app's inbound side: peers' gossip (and our own) through one
bounded inbox, handled in batches (the graph's cheap checks, the batch's
signature checks in worker processes or threads, the chain lookups of
announced funding outputs, then the decisions in arrival order), and the
writer task that puts decisions and channel removals into the store, one
transaction a batch.

This is the hot path: :meth:`GossipIngest._on_gossip` queues a message
without a checkpoint while the inbox has room. A part of
:class:`~lnpmsg.gossip.app.GossipApp` (mixed into it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from lnpmsg.gossip.decision import ChannelRemoved, Decision, Outcome, Pending
from lnpmsg.gossip.errors import GossipStoreWriteError
from lnpmsg.gossip.events import ChannelRemovedEvent, GossipRejectedEvent, event_for
from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.gossip.pipeline import Verdicts
from lnpmsg.gossip.verify import SigCheck
from lnpmsg.wire import Message, ShortChannelId

if TYPE_CHECKING:
    from lnpmsg.gossip.app import GossipAppCounters, GossipConfig
    from lnpmsg.gossip.graph import Graph
    from lnpmsg.gossip.peers import PeerState
    from lnpmsg.gossip.pipeline import VerifyPool
    from lnpmsg.gossip.routing import RoutingFeed
    from lnpmsg.gossip.store import AsyncGossipStore
    from lnpmsg.gossip.store_backlog import StoreBacklog
    from lnpmsg.gossip.verify import SignatureVerifier
    from lnpmsg.node.node import Node
    from lnpmsg.node.peer import Peer

__all__ = ["FundingCheck", "FundingResult", "GossipIngest"]

log = logging.getLogger("lnpmsg.gossip")


@dataclass(frozen=True, slots=True)
class FundingResult:
    """A chain lookup of a channel's funding output: ``error`` is why it does not hold (None: it does)."""

    error: str | None = None
    capacity_sat: int | None = None


#: ``await check(announcement)``: look the funding output up on chain
FundingCheck = Callable[[ChannelAnnouncement], Awaitable[FundingResult]]
#: an inbox or writer item: wake whoever waits once everything before it is handled
_BARRIER = "barrier"
#: decisions a coalesced store transaction takes at most
MAX_WRITE = 8192
#: seconds between the reminders in the log that the store still cannot write
STORE_REMINDER = 600.0


class GossipIngest:
    """Inbound gossip and the store writer of the :class:`~lnpmsg.gossip.app.GossipApp` (mixed into it)."""

    config: GossipConfig
    clock: Callable[[], float]
    graph: Graph
    verifier: SignatureVerifier
    verify_pool: VerifyPool | None
    funding_check: FundingCheck | None
    routing: RoutingFeed
    astore: AsyncGossipStore
    store_backlog: StoreBacklog
    _store_reminder_at: float
    on_unknown_update: Callable[[bytes, ChannelUpdate], None] | None
    counters: GossipAppCounters
    node: Node
    _peers: dict[bytes, PeerState]
    _held: OrderedDict[int, Decision]
    _inbox_send: trio.MemorySendChannel[tuple[Any, ...]]
    _inbox: trio.MemoryReceiveChannel[tuple[Any, ...]]
    _writes_send: trio.MemorySendChannel[tuple[Any, ...]]
    _writes: trio.MemoryReceiveChannel[tuple[Any, ...]]
    _state: Callable[[Peer], PeerState | None]
    _warn: Callable[..., None]
    _handle_control: Callable[[bytes, Message], None]
    _relay: Callable[[Decision], None]
    flush_relay: Callable[[], None]

    # ------------------------------------------------------------ inbound gossip

    def _on_gossip(self, peer: Peer, message: Message) -> Awaitable[None] | None:
        """The hot path: a plain function (the node awaits only what it returns), queueing
        the message without a checkpoint while the inbox has room, waiting when it is full."""
        if peer.node_id not in self._peers:
            self._state(peer)
        self.counters.received[type(message).__name__] += 1
        item = ("gossip", peer.node_id, message)
        try:
            self._inbox_send.send_nowait(item)
        except trio.WouldBlock:
            return self._inbox_send.send(item)
        return None

    async def _on_ordered(self, peer: Peer, message: Message) -> None:
        """Replies to our queries go through the inbox too, after the gossip before them."""
        self._state(peer)
        self.counters.received[type(message).__name__] += 1
        await self._inbox_send.send(("control", peer.node_id, message))

    async def drain(self) -> None:
        """Wait until everything received so far is decided and written to the store
        (or, while the store cannot write, waiting in :attr:`store_backlog`)."""
        done = trio.Event()
        await self._inbox_send.send((_BARRIER, done))
        await done.wait()

    async def _stored(self) -> None:
        """Wait until every decision made so far is written to the store (or, while it
        cannot write, waits in :attr:`store_backlog`: a backfill then lacks it, and the
        peer gets it at its next sync, or from its other peers)."""
        done = trio.Event()
        await self._writes_send.send((_BARRIER, done))
        await done.wait()

    async def _process_loop(self) -> None:
        """Read the inbox in batches; prepare each run of gossip (the graph's cheap checks)
        and start its signature checks, while the committer decides earlier runs in order.

        Control messages and barriers go through the same bounded queue of stages, so
        each is handled after the gossip that came before it, as received."""
        inbox = self._inbox
        limit = self.config.batch_size
        staged_send, staged = trio.open_memory_channel[tuple[Any, ...]](max(0, self.config.batches_in_flight - 1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._commit_loop, staged)
            while True:
                batch = [await inbox.receive()]
                while len(batch) < limit:
                    try:
                        batch.append(inbox.receive_nowait())
                    except trio.WouldBlock:
                        break
                run: list[tuple[bytes, Message]] = []
                for item in batch:
                    if item[0] == "gossip":
                        run.append((item[1], item[2]))
                        continue
                    if run:
                        await staged_send.send(("gossip", self._stage_gossip(run, nursery)))
                        run = []
                    await staged_send.send(item)
                if run:
                    await staged_send.send(("gossip", self._stage_gossip(run, nursery)))

    async def _commit_loop(self, staged: trio.MemoryReceiveChannel[tuple[Any, ...]]) -> None:
        async for item in staged:
            if item[0] == "gossip":
                await self._commit_gossip(*item[1])
            elif item[0] == _BARRIER:
                await self._writes_send.send(item)
            else:
                self._handle_control(item[1], item[2])

    def _stage_gossip(self, items: Sequence[tuple[bytes, Message]], nursery: trio.Nursery) -> tuple[Any, ...]:
        """Prepare a run of gossip messages (in arrival order) and start checking their signatures."""
        self.counters.batches += 1
        graph = self.graph
        now = self.clock()
        steps: list[Pending | Decision] = [graph.prepare(message, message.encode(), now, source=source) for source, message in items]
        pendings = [s for s in steps if isinstance(s, Pending)]
        verdicts = Verdicts([c for p in pendings for c in p.checks])
        if verdicts.checks:
            nursery.start_soon(verdicts.fill, self._verify)
        else:
            verdicts.set([])
        return steps, pendings, now, verdicts

    async def _commit_gossip(self, steps: list[Pending | Decision], pendings: list[Pending], now: float, verdicts: Verdicts) -> None:
        """Decide on a prepared run once its signatures are checked, then store, publish and relay."""
        graph = self.graph
        try:
            results = await verdicts.wait()
            funding = await self._check_funding(pendings, results) if self.funding_check is not None else {}
        except BaseException:
            for p in pendings:
                graph.abandon(p)
            raise
        decisions: list[Decision] = []
        keep = decisions.append
        commit = graph.commit
        position = 0
        for step in steps:
            if type(step) is Decision:
                keep(step)
                continue
            n = len(step.checks)
            found = funding.get(id(step)) if funding else None
            if found is None:
                keep(commit(step, results[position : position + n], now))
            else:
                keep(commit(step, results[position : position + n], now, funding_error=found.error, capacity_sat=found.capacity_sat))
            position += n
        accepted_outcome = Outcome.ACCEPTED
        accepted = [d for d in decisions if d.outcome is accepted_outcome]
        if accepted:
            self.routing.apply(accepted)
            await self._writes_send.send(("write", accepted, ()))
        # Read once per run, not per message: nothing below awaits, so neither changes meanwhile.
        publish = self.node.events.has_subscribers
        relay = self.config.relay
        for decision in decisions:
            if decision.outcome is accepted_outcome:
                if publish:
                    self._publish(decision)
                if relay and decision.relay:
                    self._relay(decision)
            elif decision.outcome is Outcome.REJECTED and decision.source is not None:
                self._rejected(decision)
            elif self.on_unknown_update is not None and decision.source is not None and type(decision.message) is ChannelUpdate and decision.reason == "unknown channel":
                self.on_unknown_update(decision.source, decision.message)  # type: ignore[arg-type]
            elif decision.source is None:
                log.warning("our own %s %s was not taken: %s", decision.kind, _subject(decision.message), decision.reason)
        if any(d.source is None and d.accepted for d in decisions) and self.config.relay:
            self.flush_relay()  # our own gossip goes out now, not at the next staggered flush

    async def _verify(self, checks: list[SigCheck]) -> list[bool]:
        if self.verify_pool is not None:
            return await self.verify_pool.verify(checks)
        threads = self.config.verify_threads
        if threads <= 0 or len(checks) < self.config.verify_thread_min:
            return self.verifier.verify_many(checks)
        size = -(-len(checks) // threads)
        parts = [checks[i : i + size] for i in range(0, len(checks), size)]
        results: list[list[bool]] = [[] for _ in parts]

        async def run(i: int) -> None:
            results[i] = await trio.to_thread.run_sync(self.verifier.verify_many, parts[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(parts)):
                nursery.start_soon(run, i)
        return [ok for part in results for ok in part]

    async def _check_funding(self, pendings: list[Pending], results: list[bool]) -> dict[int, FundingResult]:
        """Chain lookups of the announcements whose signatures hold, concurrently."""
        assert self.funding_check is not None
        check = self.funding_check
        out: dict[int, FundingResult] = {}
        position = 0
        todo = []
        for p in pendings:
            n = len(p.checks)
            if type(p.message) is ChannelAnnouncement and all(results[position : position + n]):
                todo.append(p)
            position += n

        async def one(p: Pending) -> None:
            try:
                out[id(p)] = await check(p.message)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - a failing lookup must not stop gossip
                out[id(p)] = FundingResult(error=f"funding lookup failed: {exc}")

        async with trio.open_nursery() as nursery:
            for p in todo:
                nursery.start_soon(one, p)
        return out

    def _rejected(self, decision: Decision) -> None:
        assert decision.source is not None
        state = self._peers.get(decision.source)
        if state is None:
            return
        state.invalid += 1
        if self.node.events.has_subscribers:
            self.node.events.publish(GossipRejectedEvent(decision.kind, _subject(decision.message), decision.source, decision.reason))
        if decision.warn or decision.close:
            self._warn(state, f"{decision.kind} {_subject(decision.message)}: {decision.reason}", always=decision.close)
        if decision.close and state.peer.is_ready:
            self.counters.disconnected += 1
            log.warning("closing %s: %s %s: %s (BOLT 7)", state.node_id.hex(), decision.kind, _subject(decision.message), decision.reason)
            state.peer.close(f"{decision.kind} {_subject(decision.message)}: {decision.reason}")
        elif state.invalid > self.config.max_invalid and state.peer.is_ready:
            self.counters.disconnected += 1
            log.warning("closing %s: %d invalid gossip messages", state.node_id.hex(), state.invalid)
            state.peer.close(f"too many invalid gossip messages ({state.invalid})")

    def _publish(self, decision: Decision) -> None:
        events = self.node.events
        if not events.has_subscribers:
            return
        node_ids = None
        if type(decision.message) is ChannelUpdate:
            channel = self.graph.channels.get(decision.message.short_channel_id.to_int())
            if channel is not None:
                node_ids = (channel.node_id_1, channel.node_id_2)
        events.publish(event_for(decision, node_ids))

    async def _writer_loop(self) -> None:
        """Write queued decisions and removals in order. Writes that queued up while the
        last transaction ran go into one transaction (fewer commits, each index page
        written once for all of them), up to the first barrier or removal: the store
        applies a transaction's inserts before its deletes.

        A write the store refuses (a full disk) waits in :attr:`store_backlog`, and so
        does every write after it, until a retry gets them in: the writer never stops
        taking writes, so a failing disk never holds up the inbox, and so the peers.
        A barrier is passed once what is before it is written or waiting there."""
        writes = self._writes
        backlog = self.store_backlog
        held: tuple[Any, ...] | None = None
        try:
            while True:
                if held is None:
                    try:
                        if backlog:
                            item = None
                            with trio.move_on_at(backlog.retry_at):
                                item = await writes.receive()
                            if item is None:
                                await self._retry_store_backlog()
                                continue
                        else:
                            item = await writes.receive()
                    except trio.EndOfChannel:
                        return
                else:
                    item, held = held, None
                if item[0] == _BARRIER:
                    item[1].set()
                    continue
                _, decisions, removals = item
                while not removals and len(decisions) < MAX_WRITE:
                    try:
                        held = writes.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if held[0] == _BARRIER:
                        break
                    decisions = [*decisions, *held[1]]
                    removals = held[2]
                    held = None
                if backlog:
                    self._hold_for_store(decisions, removals)
                    continue
                try:
                    await self.astore.apply(decisions, removals)
                except GossipStoreWriteError as exc:
                    self._store_failed(exc)
                    self._hold_for_store(decisions, removals)
                except Exception:
                    log.exception("gossip store write failed (%d decisions)", len(decisions))
        finally:
            if backlog or backlog.dropped:  # (messages held means writes held)
                log.warning(
                    "gossip store: %d accepted gossip message(s) were never written (%s): peers send them again after the restart",
                    backlog.messages + backlog.dropped,
                    backlog.error,
                )

    def _store_failed(self, exc: GossipStoreWriteError) -> None:
        """Say once that the store stopped taking writes (and again every :data:`STORE_REMINDER` s)."""
        backlog = self.store_backlog
        now = trio.current_time()
        if backlog.fail(str(exc), now, self.config.store_retry_interval):
            self._store_reminder_at = now + STORE_REMINDER
            hint = ": the disk is full, free some space" if exc.disk_full else ""
            log.error(
                "%s%s; accepted gossip waits in memory (up to %d messages) and is written once the store takes writes "
                "again (tried every %g s); the node and its peers go on",
                exc,
                hint,
                backlog.limit,
                self.config.store_retry_interval,
            )
        elif now >= self._store_reminder_at:
            self._store_reminder_at = now + STORE_REMINDER
            log.warning(
                "gossip store still cannot write for %.0f s (%s): %d message(s) waiting, %d not kept",
                now - (backlog.failing_since or now),
                exc,
                backlog.messages,
                backlog.dropped,
            )

    def _hold_for_store(self, decisions: list[Decision], removals: Sequence[ChannelRemoved]) -> None:
        backlog = self.store_backlog
        before = backlog.dropped
        backlog.hold(decisions, removals)
        if before == 0 and backlog.dropped:
            log.warning(
                "gossip store backlog full (%d messages): newer gossip is not kept for the store while it cannot write "
                "(the graph has it; a restart syncs it from peers again)",
                backlog.limit,
            )

    async def _retry_store_backlog(self) -> None:
        """Write the held writes, oldest first, until the store refuses one again."""
        backlog = self.store_backlog
        while backlog:
            decisions, removals = backlog.first()
            try:
                await self.astore.apply(decisions, removals)
            except GossipStoreWriteError as exc:
                self._store_failed(exc)
                return
            except Exception:
                # Not the disk: a write that can never go in must not hold up the rest.
                log.exception("gossip store write failed (%d decisions)", len(decisions))
            backlog.written()
        since, dropped = backlog.recovered()
        log.info(
            "gossip store writes again after %.0f s: the gossip that waited is written%s",
            trio.current_time() - since,
            f"; {dropped} message(s) were not kept (a restart syncs them from peers again)" if dropped else "",
        )

    async def apply_removals(self, removals: Sequence[ChannelRemoved]) -> None:
        """Write channel removals (closed, pruned) to the store, after what is queued before them,
        and publish each (``gossip.channel_removed``)."""
        if removals:
            self.routing.remove(removals)
            await self._writes_send.send(("write", [], list(removals)))
            events = self.node.events
            if events.has_subscribers:
                for change in removals:
                    events.publish(
                        ChannelRemovedEvent(
                            str(ShortChannelId.from_int(change.short_channel_id)), change.node_ids, change.orphaned_nodes, change.reason
                        )
                    )

    async def close_channel(self, short_channel_id: ShortChannelId | int, reason: str = "closed") -> bool:
        """Forget a channel whose funding output was spent (e.g. told by a chain watcher)."""
        scid = short_channel_id if isinstance(short_channel_id, int) else short_channel_id.to_int()
        change = self.graph.remove_channel(scid, reason)
        if change is None:
            return False
        self._held.pop(scid, None)
        await self.apply_removals([change])
        return True

    async def add_own(self, messages: Sequence[Message]) -> None:
        """Our own gossip (announcements, updates): checked and relayed like any other.

        The messages join the inbox in order (after what peers sent before);
        call :meth:`drain` to wait until they are decided and stored.
        """
        for message in messages:
            await self._inbox_send.send(("gossip", None, message))


def _subject(message: Message) -> str:
    if type(message) is NodeAnnouncement:
        return message.node_id.hex()
    return str(message.short_channel_id)  # type: ignore[attr-defined]

