"""The channel manager: one actor that owns every channel of a node (trio).

Every input to any channel (a message, a command, a chain event, the peer
coming or going) becomes a job on one queue, and one task runs the jobs in
order: no two tasks ever change a channel, and a channel's inputs are
processed in the order they were queued. For each job the actor

1. feeds the input to the channel's :class:`~.state.ChannelCore`,
2. appends the output's records to the channel's log (fsynced when one is
   ``durable``, in a worker thread), then calls ``on_persisted`` (the
   channel monitor makes its own updates durable: :mod:`.onchain`),
3. only then sends the output's messages (a record always reaches the disk
   before a message that commits to it leaves),
4. hands the output's events to the shell (:mod:`.app`), and
5. signs what is left to sign (the node commits every change at once).

Steps 2-5 run shielded: stopping the node never cuts a job between the
record and its messages. When step 2 fails (a full disk), no message of the
job leaves: the channel goes back to its state on disk, its peer is
disconnected (both sides resume from what they hold, via
``channel_reestablish``), and the ``Disconnected`` it owes is written before
its next input (:class:`~.errors.StoreWriteFailed` to the submitter). At start every stored channel is replayed from its
log (snapshot, then records) and fed ``Disconnected``, as the core asks.

Crash tests (developer only): ``crash_at = (N, stage)`` calls ``crash`` (SIGKILL
by default) at the N-th persistence point of the process, once its records
are durable (``persisted``) or once its messages were handed to the peer
(``sent``); ``LNPMSG_DEV_CRASH_AT_PERSIST=N[:stage]`` sets it for a process.

A channel's key (its store name) is ``<peer node id>-<16 hex digits>``:
the peer is known from the key alone, and the channel's secrets are derived
from the node's channel seed and the key, so the log never holds a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets as random_secrets
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lnpmsg.node.full_disk import cannot
from lnpmsg.io.secret_file import create_secret_file
from lnpmsg.wire import Message

from .errors import ChannelStoreError, LocalMisuse, StoreWriteFailed
from .quiesce import quiescence_status
from .splice import splice_status
from .inputs import Disconnected, Event, Input, Output, Received, Record, SignCommitment
from .dev import DevOptions
from .params import ChannelSecrets
from .ready import accepted_scids, alias_from_bytes, alias_only, is_zeroconf
from .state import ChannelCore, Phase
from .store import ChannelLog, ChannelStore

__all__ = ["CRASH_AT_ENV", "SNAPSHOT_EVERY", "ChannelManager", "ChannelsStopped", "ManagedChannel", "channel_secrets"]

log = logging.getLogger(__name__)

#: records in a channel's log before the actor writes a snapshot (bounds the replay at start)
SNAPSHOT_EVERY = 1000
#: seconds one message may wait for room in a peer's queue before the actor moves on
SEND_TIMEOUT = 30.0
#: DEVELOPER fault injection for crash tests: the process kills itself (SIGKILL) right after
#: the record of a received message of this name is on disk, before anything is sent
CRASH_ENV = "LNPMSG_DEV_CRASH_AFTER_RECEIVING"
#: DEVELOPER fault injection for crash tests: ``N`` (or ``N:persisted``) kills the process right
#: after its N-th durable append of channel records (counted from the start of the process),
#: before that output's messages leave; ``N:sent`` right after they were handed to the peer
CRASH_AT_ENV = "LNPMSG_DEV_CRASH_AT_PERSIST"
#: the two moments of a persistence point where a crash may be injected
CRASH_STAGES = ("persisted", "sent")
_SEED_FILE = "channel_seed"
_ROLES = ("funding", "revocation", "payment", "delayed_payment", "htlc", "shachain")
_SIGNING_PHASES = {Phase.NORMAL, Phase.SHUTDOWN}

Sender = Callable[[bytes, Message], Awaitable[None]]
EventHandler = Callable[["ManagedChannel", Sequence[Event]], Awaitable[None]]


class ChannelsStopped(LocalMisuse):
    """The manager's actor has stopped (the node is stopping): the input was not processed."""


def channel_secrets(seed: bytes, key: str) -> ChannelSecrets:
    """A channel's six secrets from the node's channel seed and the channel's key."""
    derived = [hmac.new(seed, f"{key}/{role}".encode(), hashlib.sha256).digest() for role in _ROLES]
    return ChannelSecrets(*derived)


@dataclass(eq=False)
class ManagedChannel:
    """One channel as the manager holds it: its core, its log, its peer."""

    key: str
    peer_id: bytes
    core: ChannelCore
    log: ChannelLog
    #: set (and replaced) after every job that touched the channel
    changed: trio.Event = field(default_factory=trio.Event)
    #: a write failed and the core went back to the disk's state, which may still count the
    #: peer as connected: a ``Disconnected`` is written before the channel's next input
    owes_disconnected: bool = False

    @property
    def channel_id(self) -> bytes:
        """The channel id (the temporary one before the funding is known)."""
        s = self.core.state
        return s.channel_id or s.temporary_channel_id

    @property
    def phase(self) -> Phase:
        return self.core.phase

    def has_changes_to_sign(self) -> bool:
        """Updates not yet in the peer's commitment (ours proposed, or theirs we acked)."""
        s = self.core.state
        return bool(s.local_changes.proposed or s.remote_changes.acked)


@dataclass(eq=False)
class _Job:
    channel: ManagedChannel
    item: Input
    done: trio.Event = field(default_factory=trio.Event)
    output: Output | None = None
    error: BaseException | None = None


class ChannelManager:
    """Every channel of a node, changed by one task (:meth:`run`).

    Args:
        directory: the channel store (one log per channel) and the seed.
        send: ``await send(peer_id, message)``: queue a message to a peer
            (raise or return quietly when the peer is gone).
        on_events: ``await on_events(channel, events)``: the shell acts on a
            job's events (fund, broadcast, publish); it must not wait for
            another job (it runs inside the actor).
        now: the time fed to the cores (seconds; the default is the wall clock,
            so that records stay meaningful across restarts).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        send: Sender,
        on_events: EventHandler,
        now: Callable[[], float] = time.time,
        dev: DevOptions | None = None,
        on_persisted: Callable[[ManagedChannel], Awaitable[None]] | None = None,
        disconnect: Callable[[bytes, str], None] | None = None,
    ) -> None:
        self.store = ChannelStore(directory)
        #: --dev-force-channel-secrets: the same secrets for every channel (conformance suites)
        self.dev = dev or DevOptions()
        self.seed = _load_or_create_seed(self.store.directory / _SEED_FILE)
        self._send = send
        self._on_events = on_events
        #: after a job's records are on disk, before its messages leave (the channel monitor's updates)
        self._on_persisted = on_persisted
        #: ``disconnect(peer_id, reason)``: close a peer's connection, without waiting
        self._disconnect = disconnect
        self._now = now
        self.channels: dict[str, ManagedChannel] = {}
        # No buffer limit, yet bounded: each submitter waits for its job (a peer's reading task,
        # a command, the chain follower: one job each at most), and post() queues one
        # Disconnected per channel of a peer that left.
        self._jobs_in, self._jobs = trio.open_memory_channel[_Job](math.inf)
        #: jobs queued and not yet finished (the one running included): see :attr:`idle`
        self._unfinished = 0
        self._running = False
        self._loading = False
        self._crash_after = os.environ.get(CRASH_ENV) or None
        if self._crash_after:
            log.warning("channels: DEVELOPER fault injection: SIGKILL after receiving %s", self._crash_after)
        #: durable appends of channel records so far (the persistence points of this process)
        self.persists = 0
        #: DEVELOPER fault injection: ``(N, stage)``: :attr:`crash` is called at the N-th persistence
        #: point, when its records are on disk (``persisted``) or its messages were sent (``sent``)
        self.crash_at: tuple[int, str] | None = _parse_crash_at(os.environ.get(CRASH_AT_ENV))
        #: what a crash does: SIGKILL of this process (an in-process test raises instead)
        self.crash: Callable[[], None] = _sigkill
        if self.crash_at is not None:
            log.warning("channels: DEVELOPER fault injection: SIGKILL at persistence point %d (%s)", *self.crash_at)

    def _secrets(self, key: str) -> ChannelSecrets:
        """The channel's secrets: derived from the seed, unless the developer options force them."""
        return self.dev.channel_secrets_or(channel_secrets(self.seed, key))

    # ------------------------------------------------------------ lookup

    def new_channel(self, peer_id: bytes) -> ManagedChannel:
        """A fresh channel with ``peer_id`` (its first input opens or accepts it)."""
        key = f"{peer_id.hex()}-{random_secrets.token_hex(8)}"
        channel = ManagedChannel(key, peer_id, ChannelCore(self._secrets(key)), self.store.open(key))
        self.channels[key] = channel
        return channel

    def forget(self, channel: ManagedChannel) -> None:
        """Drop a channel that never got funded (nothing was signed: nothing to keep), with its log."""
        if channel.core.state.local_commit is not None or channel.core.state.remote_commit is not None:
            raise LocalMisuse("a channel with a signed commitment is never forgotten")
        self.channels.pop(channel.key, None)
        channel.log.close()
        for path in (channel.log.log_path, channel.log.snap_path):
            path.unlink(missing_ok=True)
        channel.changed.set()

    async def adopt(self, key: str, peer_id: bytes, state: Any) -> ManagedChannel:
        """Store a channel made outside the core (a static backup's, :mod:`.backup`) as a snapshot of
        ``state``; the monitor takes it up at once. ``LocalMisuse`` when the key is taken."""
        if key in self.channels or key in self.store.keys():
            raise LocalMisuse(f"channel {key} is in the store already")
        channel_log = await trio.to_thread.run_sync(self.store.open, key)
        core = ChannelCore(self._secrets(key))
        core.state = state
        try:
            await trio.to_thread.run_sync(channel_log.write_snapshot, core)
        except OSError:
            channel_log.close()
            raise
        channel = ManagedChannel(key, peer_id, core, channel_log)
        self.channels[key] = channel
        if self._on_persisted is not None:
            await self._on_persisted(channel)
        return channel

    def new_alias(self) -> int:
        """A fresh random local alias no channel of the node has (BOLT 2: an alias is never sent for
        two channels, nor equal to one of the node's short channel ids)."""
        taken = {scid for c in self.channels.values() for scid in (c.core.state.local_alias, c.core.state.short_channel_id)}
        while (alias := alias_from_bytes(os.urandom(8))) in taken:
            pass
        return alias

    def of_peer(self, peer_id: bytes) -> list[ManagedChannel]:
        """The channels with ``peer_id``, oldest first."""
        return [c for c in self.channels.values() if c.peer_id == peer_id]

    def find(self, peer_id: bytes | None, channel_id: bytes) -> ManagedChannel | None:
        """The channel with ``channel_id`` (or, before the funding, that temporary id) with the peer."""
        for channel in self.channels.values():
            if peer_id is not None and channel.peer_id != peer_id:
                continue
            s = channel.core.state
            if s.channel_id == channel_id or (not s.channel_id and s.temporary_channel_id == channel_id):
                return channel
        return None

    def lookup(self, text: str) -> ManagedChannel:
        """A channel by channel id (hex), short channel id or our alias (``BxTxO``) or key; KeyError if none."""
        text = text.strip().lower()
        for channel in self.channels.values():
            s = channel.core.state
            if text in (channel.key, channel.channel_id.hex()) or text in {format_scid(x) for x in (s.short_channel_id, s.local_alias) if x}:
                return channel
        raise KeyError(text)

    # ------------------------------------------------------------ start

    async def load(self) -> int:
        """Replay every stored channel; feed each ``Disconnected`` (call before :meth:`run`).

        :class:`ChannelStoreError` when a log cannot be opened or written (a full disk): the
        node does not start, and what the logs hold stays as it was.
        """
        self._loading = True
        try:
            return await self._load()
        except OSError as exc:  # a log, a monitor or a failure file that cannot be opened or written (each names its file)
            what, where = ("open or write", exc.filename) if exc.filename else ("open the channel store at", self.store.directory)
            raise ChannelStoreError(cannot(what, where, exc)) from exc
        finally:
            self._loading = False

    async def _load(self) -> int:
        for key in self.store.keys():
            peer_hex = key.split("-", 1)[0]
            try:
                peer_id = bytes.fromhex(peer_hex)
            except ValueError:
                log.warning("channels: skipping %s in the store: not a channel key", key)
                continue
            channel_log = await trio.to_thread.run_sync(self.store.open, key)
            core = await trio.to_thread.run_sync(channel_log.restore, self._secrets(key))
            if core.phase is Phase.NEW:
                channel_log.close()
                continue  # never got past its first input: nothing was promised to anyone
            channel = ManagedChannel(key, peer_id, core, channel_log)
            self.channels[key] = channel
            if self._on_persisted is not None:
                await self._on_persisted(channel)
            job = _Job(channel, Disconnected())
            await self._process(job)
            if isinstance(job.error, StoreWriteFailed) and isinstance(cause := job.error.__cause__, OSError):
                # the channel's log, or the monitor's or a failure's file written after it (they name theirs)
                raise ChannelStoreError(cannot("write", cause.filename or channel.log.log_path, cause)) from job.error
            log.info("channels: loaded %s with %s (%s)", channel.channel_id.hex(), peer_hex[:16], core.phase.value)
        return len(self.channels)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor: run every queued job, in order, until cancelled."""
        self._running = True
        task_status.started()
        try:
            async for job in self._jobs:
                try:
                    await self._process(job)
                finally:
                    self._unfinished -= 1
        finally:
            # Nobody may wait forever on a job that will never run (a shielded handler would
            # hold the node's shutdown): refuse new jobs, answer the queued ones.
            self._running = False
            self._jobs_in.close()
            while True:
                try:
                    job = self._jobs.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._unfinished -= 1
                job.error = ChannelsStopped("the channels are stopping")
                job.done.set()
            self.close()

    @property
    def idle(self) -> bool:
        """No job queued or running: every input so far is processed, its records on disk and its
        messages handed on. (A core's state changes before its records reach the disk: a channel
        that looks settled may still have a job writing; waiting for ``idle`` covers that.)"""
        return self._unfinished == 0

    def close(self) -> None:
        """Close every channel's log (``run`` does it when it ends; for a manager never run)."""
        for channel in self.channels.values():
            channel.log.close()

    # ------------------------------------------------------------ jobs

    async def submit(self, channel: ManagedChannel, item: Input) -> Output:
        """Queue ``item`` for ``channel`` and wait until it was processed.

        Raises :class:`~.errors.LocalMisuse` when the core refuses a command.
        """
        job = _Job(channel, item)
        self._unfinished += 1  # before the send: the actor may take the job before the send returns
        try:
            await self._jobs_in.send(job)
        except trio.ClosedResourceError:
            self._unfinished -= 1
            raise ChannelsStopped("the channels are stopping") from None
        except BaseException:  # cancelled: a trio send that raises sent nothing
            self._unfinished -= 1
            raise
        await job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.output is not None
        return job.output

    def post(self, channel: ManagedChannel, item: Input) -> None:
        """Queue ``item`` without waiting for it (the peer-gone hook: it must stay short).

        Dropped when the actor has stopped: a restart feeds ``Disconnected`` anyway.
        """
        if not self._running:
            return
        try:
            self._jobs_in.send_nowait(_Job(channel, item))
        except trio.ClosedResourceError:
            return
        self._unfinished += 1

    async def _process(self, job: _Job) -> None:
        channel = job.channel
        with trio.CancelScope(shield=True):
            try:
                job.output = await self._apply(channel, job.item)
                await self._sign_if_needed(channel)
            except (LocalMisuse, StoreWriteFailed) as exc:
                job.error = exc
            except Exception as exc:  # a bug must not kill every channel: report it to the submitter
                log.exception("channels: %s on %s failed", type(job.item).__name__, channel.key)
                job.error = exc
            finally:
                if job.output is None and job.error is None:  # cut by a crash: the submitter hears of it
                    job.error = ChannelsStopped("the channels stopped during the job")
                job.done.set()
                channel.changed.set()
                channel.changed = trio.Event()

    async def _apply(self, channel: ManagedChannel, item: Input) -> Output:
        if channel.owes_disconnected and not isinstance(item, Disconnected):
            await self._apply(channel, Disconnected())
        out = channel.core.receive(item, self._now())
        point = None
        if out.records:
            try:
                await self._persist(channel, out.records)
                self.persists += 1
                point = self.persists
                if self._on_persisted is not None:
                    await self._on_persisted(channel)
            except OSError as exc:
                await self._back_to_disk(channel, item, exc)
                raise StoreWriteFailed(
                    f"channel {channel.channel_id.hex()}: its change ({type(item).__name__}) could not be written: {exc}"
                ) from exc
            if self._crash_after and isinstance(item, Received) and type(item.message).__name__ == self._crash_after:
                _sigkill()
            self._maybe_crash(point, "persisted")
        if isinstance(item, Disconnected):
            channel.owes_disconnected = False
        for message in out.messages:
            await self._deliver(channel.peer_id, message)
        if self._disconnect is not None and out.disconnect:
            # BOLT 2's "send a warning and close the connection" (the channel stays;
            # channel_reestablish resumes it)
            self._disconnect(channel.peer_id, f"channel {channel.channel_id.hex()[:16]}: sent a warning")
        if point is not None:
            self._maybe_crash(point, "sent")
        if out.events:
            await self._on_events(channel, out.events)
        return out

    def _maybe_crash(self, point: int, stage: str) -> None:
        if self.crash_at == (point, stage):
            log.warning("channels: DEVELOPER fault injection: crashing at persistence point %d (%s)", point, stage)
            self.crash()

    async def _persist(self, channel: ManagedChannel, records: Sequence[Record]) -> None:
        await trio.to_thread.run_sync(channel.log.append, records)
        if len(channel.log.records()) >= SNAPSHOT_EVERY:
            try:
                await trio.to_thread.run_sync(channel.log.write_snapshot, channel.core)
            except OSError as exc:  # the records are in the log: the snapshot only bounds the replay
                log.warning("channels: %s: snapshot not written (%s); the log keeps every record, the next job tries again", channel.key, exc)

    async def _back_to_disk(self, channel: ManagedChannel, item: Input, exc: OSError) -> None:
        """A job's write failed: its messages stay unsent, and the core in memory, which has
        moved past the disk, is replaced by the one on disk (the log dropped the failed append).
        The peer is disconnected: it may have sent what that core never took (a
        ``commitment_signed``), and ``channel_reestablish`` sorts that out from both sides' disks.
        While loading no peer is there: :meth:`load` raises instead."""
        if not self._loading:
            log.error(
                "channels: %s on %s could not be written (%s): nothing of it was sent; the channel goes back to "
                "its state on disk and reconnects with %s to resume from there (free some space)",
                type(item).__name__, channel.channel_id.hex(), exc, channel.peer_id.hex(),
            )  # fmt: skip
        channel.core = await trio.to_thread.run_sync(channel.log.restore, self._secrets(channel.key))
        channel.owes_disconnected = True
        if self._disconnect is not None:
            self._disconnect(channel.peer_id, f"channel {channel.channel_id.hex()[:16]}: a write to disk failed")

    async def _deliver(self, peer_id: bytes, message: Message) -> None:
        with trio.move_on_after(SEND_TIMEOUT):
            try:
                await self._send(peer_id, message)
            except Exception as exc:  # the peer left: channel_reestablish retransmits what counts
                log.debug("channels: %s to %s not sent: %s", type(message).__name__, peer_id.hex()[:16], exc)

    async def _sign_if_needed(self, channel: ManagedChannel) -> None:
        """Commit at once: sign whenever something is left to sign and the core allows it."""
        s = channel.core.state
        if channel.phase not in _SIGNING_PHASES or not s.connected or s.awaiting_reestablish:
            return
        if not channel.has_changes_to_sign() or s.remote_next_commit is not None:
            return  # nothing to sign, or waiting for the peer's revoke_and_ack
        try:
            await self._apply(channel, SignCommitment())
        except LocalMisuse as exc:
            log.debug("channels: not signing %s yet: %s", channel.key, exc)


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _parse_crash_at(text: str | None) -> tuple[int, str] | None:
    """``N`` or ``N:persisted`` or ``N:sent`` (see :data:`CRASH_AT_ENV`)."""
    if not text:
        return None
    number, _, stage = text.partition(":")
    stage = stage or "persisted"
    if not number.isdigit() or int(number) < 1 or stage not in CRASH_STAGES:
        raise ValueError(f"{CRASH_AT_ENV}={text!r}: expected N, N:persisted or N:sent (N >= 1)")
    return int(number), stage


def format_scid(scid: int) -> str:
    """A short channel id as ``BLOCKxTXxOUTPUT`` (as Core Lightning and lnd print it)."""
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


def _load_or_create_seed(path: Path) -> bytes:
    """The node's channel seed (32 random bytes made once, readable by the owner only)."""
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != 32:
            raise ChannelStoreError(f"the channel seed {path} is damaged: a channel seed is 32 bytes, found {len(seed)}")
        return seed
    seed = os.urandom(32)
    try:
        create_secret_file(path, seed)
    except FileExistsError:  # another process made it meanwhile: that one is the seed
        return _load_or_create_seed(path)
    except OSError as exc:
        raise ChannelStoreError(cannot("create the channel seed", path, exc)) from exc
    return seed


def describe(channel: ManagedChannel) -> dict[str, Any]:
    """A channel for ``listchannels`` (JSON-able)."""
    s = channel.core.state
    commit = s.local_commit
    htlcs: list[dict[str, Any]] = []
    to_local = to_remote = None
    if commit is not None:
        to_local, to_remote = commit.spec.to_local_msat, commit.spec.to_remote_msat
        for h in commit.spec.htlcs:
            htlcs.append({
                "direction": "in" if h.incoming else "out", "id": h.add.id, "amount_msat": h.add.amount_msat,
                "payment_hash": h.add.payment_hash.hex(), "cltv_expiry": h.add.cltv_expiry,
            })  # fmt: skip
    outpoint = s.funding_outpoint
    return {
        "channel_id": channel.channel_id.hex(),
        "peer_id": channel.peer_id.hex(),
        # the peer proved we lost state: we never broadcast ours (Core Lightning's AWAITING_UNILATERAL)
        # (restored from a static backup: the same, knowing no commitment at all)
        "state": "restored_awaiting_close" if s.restored else "awaiting_unilateral" if s.behind else s.phase.value,
        "opener": "local" if s.funder else "remote",
        "capacity_sat": s.funding_sat,
        "to_local_msat": to_local,
        "to_remote_msat": to_remote,
        "htlcs": htlcs,
        "short_channel_id": format_scid(s.short_channel_id) if s.short_channel_id else None,
        "funding_outpoint": f"{outpoint.txid[::-1].hex()}:{outpoint.vout}" if outpoint is not None else None,
        # a bumped funding's earlier versions, any of which may still confirm (dualfund_rbf)
        "funding_candidates": [f"{c.outpoint.txid[::-1].hex()}:{c.outpoint.vout}" for c in getattr(s.dual, "previous", ())],
        "channel_type": "anchors_zero_fee_htlc_tx" if s.anchors else "static_remotekey",
        # BOLT 2 aliases: ours (the peer's route hints name it) and the peer's (our invoices' route hints name it)
        "local_alias": format_scid(s.local_alias) if s.local_alias else None,
        "remote_alias": format_scid(s.remote_alias) if s.remote_alias else None,
        "scid_alias": alias_only(s),
        "zeroconf": is_zeroconf(s),
        # the ids a forward may name to leave on this channel (not the real one for an scid_alias channel)
        "forwarding_scids": [format_scid(x) for x in accepted_scids(s)],
        "feerate_per_kw": commit.spec.feerate_per_kw if commit is not None else None,
        "connected": s.connected and not s.awaiting_reestablish,
        "failure": s.failure,
        "behind": s.behind,
        "restored": s.restored,
        "quiescence": quiescence_status(s),  # BOLT 2 stfu on this connection (None: not quiescing)
        "splice": splice_status(s),  # a splice until both sent splice_locked (None: none)
        "splices": s.splices,
    }
