"""The channels on chain: one :class:`~.monitor.ChannelMonitor` per channel, in a trio shell.

Fed only by what the channel app persists and by the chain:

- after each channel job's records are on disk, and before the job's
  messages leave, :meth:`OnchainWatch.persisted` turns the channel state into
  monitor updates (:mod:`.monitor.feed`), appends them to the channel's
  monitor log (fsynced) and applies them: a commitment the peer can hold us
  to is always known to the monitor first;
- blocks from the chain app's reliable subscription (connected and
  disconnected, full blocks), never the lossy event bus.

What the monitor asks is done through the chain app: its transactions are
broadcast after every block, its :class:`~.monitor.NeedFeeInput` is answered
with a wallet coin, and every sweep pays a wallet address (fixed in the
channel's ``ChannelSetup``). A static_remotekey ``to_remote`` output
(:class:`~.monitor.OutputToWallet`) is swept to the wallet with the payment
basepoint key.

After a restart each monitor is rebuilt from its log and fed the blocks
from the height its log starts at (the tip when the channel got its first
commitment, before the funding could confirm): it derives the same claims
and offers at once those whose timelocks passed meanwhile. Two records keep
that replay short on a node that runs for months:

- while the funding output is unspent, a monitor notes every
  :data:`CHECKPOINT_EVERY` blocks how far it has read (:data:`CHECKPOINT_LAG`
  blocks behind the tip, so a shallow reorg while the node was down is
  still replayed); a restart reads on from there;
- once everything is resolved and buried (``Irrevocable``), the monitor is
  archived: its final status is kept for ``listchannels`` and it reads no
  more blocks. A funding a splice spent is not archived: its monitor moves
  onto the splice's funding instead, whenever our lock comes
  (:mod:`.splice_watch`).

A restored channel whose funding is already spent reads the chain from the funding's
confirmation height instead (:mod:`.rescan`: at start through the subscription's start, on a
restore through a catch-up task that feeds that one monitor the blocks the live stream passed).

Monitor logs live in ``<channel dir>/monitors/<key>.mon``: the first frame
holds the start height (u32), each later frame one encoded update; the
records above in ``<key>.seen`` (JSON, replaced atomically).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockConnected, BlockDisconnected
from lnpmsg.node.full_disk import cannot

from lnpmsg.rpc.params import hex_param
from lnpmsg.wallet.app import ChainAppError

from .double_spend import double_spent
from .errors import ChannelError, ChannelStoreError, LocalMisuse
from .inputs import ForceClose
from .manager import ManagedChannel
from .monitor import (
    ChannelMonitor,
    CommitmentKind,
    CommitmentSeen,
    FeeInput,
    FundingSpent,
    HtlcResolved,
    Irrevocable,
    MonitorError,
    MonitorEvent,
    MonitorUpdate,
    NeedFeeInput,
    PaymentPreimage,
    UpstreamDeadline,
    OutputToWallet,
)
from .monitor.bump import sweep_at_most
from .monitor_files import MonitorLog, MonitorProgress
from .onchain_events import onchain_event
from .monitor.core import ANTI_REORG_DELAY
from .monitor.feed import channel_setup, monitor_secrets, updates_for
from .monitor.signer import sign_plan
from .monitor.status import monitor_status
from .rescan import restored_start, start_catch_up
from .splice import SpliceSession
from .splice_watch import carried_commitments, followed_core, move_of, spent_by_splice
from .state import Phase

__all__ = ["OnchainWatch", "WatchedChannel"]

log = logging.getLogger(__name__)

#: how often (blocks) a monitor with its funding unspent records how far it read
CHECKPOINT_EVERY = 144
#: ... and how far behind the tip it says it is (a reorg this shallow, while down, is replayed)
CHECKPOINT_LAG = ANTI_REORG_DELAY


@dataclass(eq=False)
class WatchedChannel:
    """A channel's monitor, its log, and what the shell did for it."""

    channel: ManagedChannel
    monitor: ChannelMonitor
    log: MonitorLog
    start_height: int
    wallet_swept: set[OutPoint]
    progress: MonitorProgress
    #: blocks below the live stream are being fed to it (a restored channel's spent funding, :mod:`.rescan`)
    catching_up: bool = False
    #: claims broadcast (and logged) already: each is broadcast again every block until mined
    claims_sent: set[str] = field(default_factory=set)


class OnchainWatch:
    """Every channel's monitor (see the module docs); owned by the channel app.

    Args:
        directory: the channel store (monitor logs go in ``monitors/``).
        chain: the chain app (``source`` and ``wallet``).
        publish: how ``onchain.*`` events reach the node's event bus.
    """

    def __init__(self, directory: Path, chain: Any, publish: Any) -> None:
        self.directory = Path(directory) / "monitors"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a full disk has no room for the directory
            raise ChannelStoreError(cannot("create the channel monitors' directory", self.directory, exc)) from exc
        self.chain = chain
        self._publish = publish
        self.watched: dict[str, WatchedChannel] = {}
        #: the final on-chain status of each archived monitor (irrevocably resolved: no more blocks)
        self.archived: dict[str, dict[str, Any]] = {}
        self._height: int | None = None
        #: the last block the live stream reached (set before it is fed: a catch-up feeds it too)
        self.read_to: int | None = None
        self._nursery: trio.Nursery | None = None
        #: the last block every monitor has processed and acted on (claims broadcast)
        self.done_height: int | None = None
        # wallet coins lent to claims' fees (each pays one claim: two claims must not spend one coin)
        self._lent: set[OutPoint] = set()
        # one writer of the monitor logs at a time: an update's id is the log's next one
        self._write_lock = trio.Lock()
        #: the channel manager (set by the channel app): HTLC deadlines submit ``ForceClose`` to it
        self.manager: Any = None
        #: told of every HTLC the monitors resolve on chain (set by the channel app: its HTLC hook)
        self.on_htlc_resolved: Callable[[ManagedChannel, HtlcResolved], None] | None = None
        #: channel key -> the funding a new monitor is to follow, when not the channel's own: a confirmed
        #: splice the peer has not locked (:mod:`.splice_watch`)
        self._follows: dict[str, OutPoint] = {}

    # ------------------------------------------------------------ the channel side

    async def _load(self, channel: ManagedChannel) -> WatchedChannel | None:
        """Rebuild a stored channel's monitor from its log (None: it has none yet)."""
        path = self.directory / f"{channel.key}.mon"
        if not path.exists():
            return None
        progress = await trio.to_thread.run_sync(MonitorProgress, path.with_suffix(".seen"))
        if progress.final is not None:
            self.archived[channel.key] = progress.final
            return None
        mlog = await trio.to_thread.run_sync(MonitorLog, path)
        if mlog.start_height is None or not mlog.updates:
            return None
        core = followed_core(channel.core, getattr(mlog.updates[0].record, "funding_outpoint", None))
        monitor = ChannelMonitor(monitor_secrets(_secrets_of_setup(core, mlog.updates[0].record)), mlog.updates)
        start = max(mlog.start_height, progress.checkpoint + 1) if progress.checkpoint is not None else mlog.start_height
        # a restored channel whose funding is spent: the spend may be before the log's start (see .rescan)
        start = min(start, await restored_start(self.chain.source, channel.core.state, start))
        watched = WatchedChannel(channel, monitor, mlog, start, set(), progress)
        self.watched[channel.key] = watched
        return watched

    async def persisted(self, channel: ManagedChannel) -> None:
        """The channel's records are on disk: make the monitor's updates durable too (before any message)."""
        async with self._write_lock:
            await self._persisted(channel)

    async def _persisted(self, channel: ManagedChannel, carried: Collection[Any] = ()) -> None:
        """(Under the write lock.) A new monitor (a moved one also learns the peer's ``carried`` commitments)
        reads blocks only once all it knows from its start is applied."""
        if channel.key in self.archived:
            return
        watched = self.watched.get(channel.key) or await self._load(channel)
        if watched is None and channel.key in self.archived:
            return
        if watched is None:
            core = followed_core(channel.core, self._follows.get(channel.key))
            s = core.state
            if (s.local_commit is None and not s.restored) or s.funding_outpoint is None:
                return
            destination = script_for_address(self.chain.wallet.new_address(), self.chain.wallet.hrp)
            setup = channel_setup(core, destination)
            if setup is None:
                return
            start = self._height if self._height is not None else (await self.chain.source.tip()).height
            start = await restored_start(self.chain.source, s, start)
            if s.splices and s.short_channel_id:
                # a splice's funding: read from its block on (a commitment on it may confirm before the lock)
                start = min(start, s.short_channel_id >> 40)
            path = self.directory / f"{channel.key}.mon"
            mlog = await trio.to_thread.run_sync(MonitorLog, path)
            if mlog.start_height is None:
                await trio.to_thread.run_sync(mlog.begin, start)
            start = mlog.start_height or start
            monitor = ChannelMonitor(monitor_secrets(core.secrets))
            progress = await trio.to_thread.run_sync(MonitorProgress, path.with_suffix(".seen"))
            watched = WatchedChannel(channel, monitor, mlog, start, set(), progress)
            first = MonitorUpdate(0, setup)
            await trio.to_thread.run_sync(mlog.append, [first])
            monitor.apply(first)
            await self._append(watched, updates_for(core, monitor))  # (then the revoked ones on a splice)
            await self._append(watched, [r for r in carried if not monitor.has_remote_commitment(r.commitment_number)])
            self.watched[channel.key] = watched
            start_catch_up(self, watched, self._nursery)
            return
        await self._append(watched, updates_for(followed_core(channel.core, watched.monitor.setup.funding_outpoint), watched.monitor))

    async def _append(self, watched: WatchedChannel, records: list[Any]) -> None:
        """Log ``records`` as the monitor's next updates, then apply them (under the write lock)."""
        if not records:
            return
        monitor = watched.monitor
        updates = [MonitorUpdate(monitor.next_update_id + i, r) for i, r in enumerate(records)]
        await trio.to_thread.run_sync(watched.log.append, updates)
        for update in updates:
            monitor.apply(update)

    async def force_close_command(self, manager: Any, channel: ManagedChannel, described: dict[str, Any]) -> dict[str, Any]:
        """``closechannel --force``: the core stops the channel (``ForceClose``), the monitor broadcasts."""
        try:
            await manager.submit(channel, ForceClose())
        except LocalMisuse as exc:
            raise ChainAppError(f"cannot force-close: {exc}", {"error": "ChannelError", "state": channel.phase.value}) from exc
        result = described | {"state": channel.phase.value, "failure": channel.core.state.failure,
                              "onchain": self.status(channel)}  # fmt: skip
        watched = self.watched.get(channel.key)
        if watched is not None:
            result["commitment_txid"] = watched.monitor.signed_local_commitment().txid_hex
        return result

    async def dev_preimage(self, channel: ManagedChannel, preimage: str) -> dict[str, Any]:
        """The ``dev_preimage`` control call (see the channel app)."""
        data = hex_param(preimage, "preimage", 32)
        if not await self.learn_preimage(channel, data):
            raise ChainAppError("the channel has no monitor yet", {"error": "ChannelError"})
        return {"payment_hash": sha256(data).hex()}

    async def learn_preimage(self, channel: ManagedChannel, preimage: bytes) -> bool:
        """Persist and apply a preimage the node knows (False: the channel has no monitor yet)."""
        watched = self.watched.get(channel.key)
        if watched is not None and watched.monitor.knows_preimage(sha256(preimage)):
            return True
        return await self._record(channel, PaymentPreimage(preimage))

    async def note_upstream(self, channel: ManagedChannel, htlc_id: int, incoming_cltv_expiry: int) -> bool:
        """Our offered HTLC ``htlc_id`` forwards an incoming one expiring at ``incoming_cltv_expiry``:
        the monitor goes on chain in time to fail that one back (False: no monitor yet)."""
        return await self._record(channel, UpstreamDeadline(htlc_id, incoming_cltv_expiry))

    async def _record(self, channel: ManagedChannel, record: PaymentPreimage | UpstreamDeadline) -> bool:
        watched = self.watched.get(channel.key)
        if watched is None:
            return False
        async with self._write_lock:
            update = MonitorUpdate(watched.monitor.next_update_id, record)
            await trio.to_thread.run_sync(watched.log.append, [update])
            watched.monitor.apply(update)
        return True

    async def follow_funding(self, channel: ManagedChannel, splice: SpliceSession | None = None) -> bool:
        """A bumped funding (v2 RBF) confirmed in another version than the one the channel's monitor was set
        up on (a monitor's setup never changes): its log and progress are set aside (``*.replaced-<txid>``)
        and a new monitor follows the version that confirmed (nothing could spend the other versions'
        outputs: they never exist). ``splice``: a splice that confirmed, and so spent the funding: the
        monitor follows its funding, locked by the peer or not (:mod:`.splice_watch`). A monitor moving
        onto a splice's funding (this one, or the one the channel switched to last, also at a start after
        a stop between the switch and the move) learns the peer's commitments on it revoked so far.
        True when the monitor moved."""
        outpoint = splice.outpoint if splice is not None else channel.core.state.funding_outpoint
        if outpoint is None:
            return False
        current = self.watched.get(channel.key)
        if splice is None and current is not None and followed_core(channel.core, current.monitor.setup.funding_outpoint) is not channel.core:
            return False  # it follows the splice that spent the funding already
        with trio.move_on_after(60):  # a catch-up of the old monitor writes its progress file: let it end first
            while (w := self.watched.get(channel.key)) is not None and w.catching_up:
                await trio.sleep(0.05)
        async with self._write_lock:
            watched = self.watched.get(channel.key)
            if watched is None or watched.monitor.setup.funding_outpoint == outpoint:
                return False
            old = watched.monitor.setup.funding_outpoint
            move = move_of(channel.core, old, splice)
            carried = carried_commitments(watched.monitor.remote_commitments(), move) if move is not None else []
            del self.watched[channel.key]
            path = self.directory / f"{channel.key}.mon"
            for kept in (path, path.with_suffix(".seen")):
                if kept.exists():
                    kept.rename(kept.with_name(f"{kept.name}.replaced-{old.txid_hex}"))
            log.info("onchain: the monitor of %s follows the funding %s (was %s)", channel.channel_id.hex(), outpoint, old)
            if splice is not None and outpoint != channel.core.state.funding_outpoint:
                self._follows[channel.key] = outpoint
            try:
                await self._persisted(channel, carried)
            finally:
                self._follows.pop(channel.key, None)
        return True

    async def force_close(self, channel: ManagedChannel) -> bool:
        """The channel failed or was force-closed: the monitor broadcasts our latest commitment
        (False: the channel has no monitor, the caller broadcasts)."""
        watched = self.watched.get(channel.key)
        if watched is None:
            return False
        try:
            events = watched.monitor.force_close()
        except MonitorError as exc:
            log.warning("onchain: %s: not broadcasting our commitment: %s", channel.channel_id.hex(), exc)
            return True
        await self._act(watched, events)
        await self._broadcast_all(watched)
        return True

    def status(self, channel: ManagedChannel) -> dict[str, Any] | None:
        """The channel's on-chain state (``monitor/status.py``), or None before it has a monitor."""
        watched = self.watched.get(channel.key)
        if watched is None or watched.monitor.height is None:
            return self.archived.get(channel.key)
        return monitor_status(watched.monitor)

    def locked_funds(self) -> list[dict[str, Any]]:
        """For ``listfunds``: per channel, our balance while it is open, else what its outputs still lock."""
        funds = []
        for watched in self.watched.values():
            channel = watched.channel
            status = self.status(channel)
            entry: dict[str, Any] = {"channel_id": channel.channel_id.hex(), "funding": str(watched.monitor.setup.funding_outpoint)}
            if status is None or status["state"] == "open":
                commit = channel.core.state.local_commit
                entry |= {"state": "open", "our_amount_sat": commit.spec.to_local_msat // 1000 if commit else 0}
            else:
                entry |= {"state": status["state"], "locked_sat": status["locked_sat"],
                          "outputs": [o for o in status["outputs"] if o["state"] in ("awaiting_timelock", "broadcast")]}  # fmt: skip
            funds.append(entry)
        return funds

    # ------------------------------------------------------------ the chain side

    def known_preimage(self, payment_hash: bytes) -> bytes | None:
        """A preimage some channel's monitor holds (durable before any message went out after it came)."""
        return next((p for w in self.watched.values() if (p := w.monitor.preimage(payment_hash)) is not None), None)

    def start_height(self) -> int | None:
        """The lowest block some monitor still needs (None: no monitor)."""
        starts = [w.start_height if w.monitor.height is None else w.monitor.height + 1 for w in self.watched.values()]
        return min(starts) if starts else None

    async def resume(self, keep_back: Collection[str] = ()) -> None:
        """At start: keep broadcasting the commitments of failed channels not yet resolved, but those
        of ``keep_back`` (channel keys: a funding the chain does not have) and of a double-spent funding."""
        for watched in list(self.watched.values()):
            state = watched.channel.core.state
            if watched.channel.phase is Phase.FAILED and not state.behind and not double_spent(state) and watched.channel.key not in keep_back:
                try:
                    events = watched.monitor.force_close()
                except MonitorError:
                    continue
                await self._act(watched, events)

    async def follow(self, sub: Any) -> None:
        """Feed the monitors every block of ``sub`` (a chain subscription), act on what they ask."""
        # not ``sub.tip``: past the blocks read ahead into its buffer, which the stream feeds every monitor
        self.read_to = sub.start.height if sub.start is not None else None
        async with trio.open_nursery() as nursery:  # the catch-ups of restored channels (.rescan)
            self._nursery = nursery
            # a monitor added after ``sub`` opened and before now (a restore while the node starts)
            # may need blocks from before ``sub``'s first one: nobody would feed it those
            for watched in list(self.watched.values()):
                start_catch_up(self, watched, nursery)
            # the monitors not catching up have the blocks up to where the stream starts (a block mined
            # between the node's start and the subscription's comes as no event)
            self.note_done()
            try:
                async for event in sub:
                    if isinstance(event, BlockConnected):
                        txs: list[Tx] = []
                        if self.watched:  # no monitor yet: nothing to read the block for
                            txs = Block.parse(await self.chain.source.block(event.block_hash)).txs
                        await self._block(event.height, txs)
                        self.note_done()
                    elif isinstance(event, BlockDisconnected):
                        await self._unblock(event.height)
                        self.note_done()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def note_done(self) -> None:
        """Every monitor is done to where the live stream is (``read_to``), unless one is catching up:
        the live stream passes that one by, and its catch-up says so when it ends."""
        if self.read_to is not None and not any(w.catching_up for w in self.watched.values()):
            self.done_height = self.read_to

    async def _block(self, height: int, txs: Any) -> None:
        self._height = self.read_to = height
        try:
            feerate = await self.chain.source.estimate_feerate()
        except ChainError:
            feerate = None
        for watched in list(self.watched.values()):
            if not watched.catching_up:
                await self.feed(watched, height, txs, feerate)

    async def feed(self, watched: WatchedChannel, height: int, txs: Any, feerate: int | None) -> None:
        """Feed one monitor the block at ``height`` when it is its next one, and act on what it asks."""
        monitor = watched.monitor
        if height < watched.start_height:
            return
        if monitor.height is not None and monitor.height != height - 1:
            return  # not this monitor's next block (it started later)
        if feerate is not None:
            monitor.set_feerate(feerate)
        try:
            events = monitor.block_connected(height, txs)
        except MonitorError as exc:
            log.error("onchain: %s at block %d: %s", watched.channel.channel_id.hex(), height, exc)
            return
        await self._act(watched, events)
        other = [e for e in events if isinstance(e, CommitmentSeen) and e.kind is not CommitmentKind.OURS]
        if other:
            whose = "an old commitment of ours" if other[0].kind is CommitmentKind.OURS_REVOKED else "the peer's commitment"
            await self._stop(watched, f"{whose} {other[0].txid[::-1].hex()} is on chain")
        await self._go_on_chain_if_needed(watched, height)
        await self._broadcast_all(watched)
        await self._note_progress(watched, height)

    async def _note_progress(self, watched: WatchedChannel, height: int) -> None:
        """Shorten the next restart's replay (see the module docstring)."""
        monitor, channel, progress = watched.monitor, watched.channel, watched.progress
        facts = monitor.facts()
        spend = next((f.txid for f in facts if isinstance(f, FundingSpent)), None)
        if spend is not None and spent_by_splice(channel.core, monitor.setup.funding_outpoint, spend):
            return  # a splice spent the funding: kept (buried or not) until it moves onto the splice's funding
        if any(isinstance(f, Irrevocable) for f in facts):
            final = monitor_status(monitor)
            await trio.to_thread.run_sync(lambda: progress.save(final=final))
            del self.watched[channel.key]
            self.archived[channel.key] = final
            log.info("onchain: %s is irrevocably resolved at block %d; its monitor is archived", channel.channel_id.hex(), height)
            return
        if facts:
            return  # the funding was spent: every block from the spend on is needed after a restart
        checkpoint = height - CHECKPOINT_LAG
        last = progress.checkpoint if progress.checkpoint is not None else watched.start_height
        if checkpoint - last >= CHECKPOINT_EVERY:
            await trio.to_thread.run_sync(lambda: progress.save(checkpoint=checkpoint))

    async def _go_on_chain_if_needed(self, watched: WatchedChannel, height: int) -> None:
        """An HTLC deadline (monitor/deadlines.py) takes an open channel on chain, also right
        after a restart (the blocks replayed since the channel's start reach the deadline)."""
        channel = watched.channel
        if channel.phase in (Phase.FAILED, Phase.CLOSED) or self.manager is None:
            return
        reasons = watched.monitor.force_close_needed(height)
        if reasons:
            log.warning("onchain: %s goes on chain: %s", channel.channel_id.hex(), "; ".join(reasons))
            await self._stop(watched, "; ".join(reasons))

    async def _stop(self, watched: WatchedChannel, reason: str) -> None:
        """Stop an open channel (no more updates); our commitment is broadcast unless another is on chain."""
        channel = watched.channel
        if channel.phase in (Phase.FAILED, Phase.CLOSED) or self.manager is None:
            return
        try:
            await self.manager.submit(channel, ForceClose(reason))
        except LocalMisuse as exc:
            log.warning("onchain: %s cannot go on chain: %s", channel.channel_id.hex(), exc)

    async def _unblock(self, height: int) -> None:
        self._height = self.read_to = height - 1
        for watched in list(self.watched.values()):
            if watched.monitor.height == height:
                events = watched.monitor.block_disconnected(height)
                await self._act(watched, events)
                await self._broadcast_all(watched)

    # ------------------------------------------------------------ acting

    async def _act(self, watched: WatchedChannel, events: list[MonitorEvent]) -> None:
        channel_id = watched.channel.channel_id
        for event in events:
            if isinstance(event, NeedFeeInput):
                await self._lend(watched, event)
                continue
            if isinstance(event, OutputToWallet):
                await self._sweep_to_wallet(watched, event)
            elif isinstance(event, HtlcResolved) and self.on_htlc_resolved is not None:
                self.on_htlc_resolved(watched.channel, event)
            self._publish(onchain_event(channel_id, event))

    async def _lend(self, watched: WatchedChannel, need: NeedFeeInput) -> None:
        """A wallet coin pays a claim's fee (anchor CPFP, aggregated HTLC transactions)."""
        wallet = self.chain.wallet
        coin = wallet.lend_coin(need.amount_sat, self._lent)
        if coin is None:
            log.warning("onchain: %s needs a wallet coin of %d sat for %s: none", watched.channel.channel_id.hex(),
                        need.amount_sat, need.group)  # fmt: skip
            return
        outpoint, amount, privkey = coin
        self._lent.add(outpoint)
        events = watched.monitor.provide_fee_input(need.group, FeeInput(outpoint, amount, privkey))
        await self._act(watched, events)

    async def _sweep_to_wallet(self, watched: WatchedChannel, event: OutputToWallet) -> None:
        """static_remotekey's to_remote pays our payment basepoint: move it to a wallet address."""
        if event.outpoint in watched.wallet_swept:
            return
        secret = watched.channel.core.secrets.payment_basepoint_secret
        coin = FeeInput(event.outpoint, event.amount_sat, secret)
        if coin.spendable.script_pubkey != event.script_pubkey:
            log.warning("onchain: %s: to_remote %s is not ours to sweep", watched.channel.channel_id.hex(), event.outpoint)
            return
        rate = max(watched.monitor.feerate, 253)
        try:
            plan = sweep_at_most([(event.outpoint, coin.spendable, "wallet")], watched.monitor.setup.destination_script,
                                 rate, label="to_remote")  # fmt: skip
        except ChannelError as exc:
            log.warning("onchain: cannot sweep %s: %s", event.outpoint, exc)
            return
        tx = sign_plan(plan, {coin.pubkey: secret})
        if await self._broadcast(tx, "to_remote sweep"):
            watched.wallet_swept.add(event.outpoint)

    async def _broadcast_all(self, watched: WatchedChannel) -> list[str]:
        txids = []
        for tx in watched.monitor.transactions_to_broadcast():
            if await self._broadcast(tx, "claim", again=tx.txid_hex in watched.claims_sent):
                watched.claims_sent.add(tx.txid_hex)
                txids.append(tx.txid_hex)
        return txids

    async def _broadcast(self, tx: Tx, what: str, again: bool = False) -> bool:
        try:
            await self.chain.source.broadcast(tx.raw)
        except ChainError as exc:
            log.debug("onchain: %s %s not accepted (yet): %s", what, tx.txid_hex, exc)
            return False
        log.log(logging.DEBUG if again else logging.INFO, "onchain: broadcast %s %s%s", what, tx.txid_hex, " again" if again else "")
        return True


def _secrets_of_setup(core: Any, setup: Any) -> Any:
    """The channel's secrets with the funding key the monitor was set up with: a splice moves the
    channel to a new key, and a monitor of the funding before it (not yet replaced, see
    :meth:`OnchainWatch.follow_funding`) keeps the old one."""
    wanted = getattr(getattr(setup, "local_basepoints", None), "funding_pubkey", None)
    for index in range(core.state.funding_key_index, -1, -1):
        secrets, basepoints = core.keyed(index)
        if basepoints.funding_pubkey == wanted:
            return secrets
    return core.secrets
