"""The channel app's interface for a payments layer (or any app that holds HTLCs).

The channel app knows nothing of onions, invoices or routes; a payments app
plugs in here:

- :meth:`HtlcHook.set_handler`: one :class:`HtlcHandler` is told of every
  incoming HTLC once it is irrevocably committed (in both commitments) and of
  every resolution of an HTLC we offered (fulfilled with the preimage, failed
  with the peer's reason or a malformed-onion code, or dropped unsigned);
- :meth:`add_htlc` offers an HTLC with its onion on the channel with a short
  channel id (for a forward, with the incoming HTLC's expiry: the channel's
  monitor goes on chain in time to fail that one back); :meth:`fulfill`,
  :meth:`fail`, :meth:`fail_malformed` resolve an incoming one; a change
  the channel could not write (a full disk) is refused with
  :class:`HtlcNotWritten` (nothing of it was sent: make it again once the
  channel has reconnected);
- :meth:`channels` lists our usable channels (short channel id, peer,
  capacity, what we can send and receive now); :meth:`pending_incoming`
  lists the incoming HTLCs committed and not yet resolved (what a restarted
  payments app must decide again: an HTLC is never left hanging);
  :meth:`incoming_on_chain` those of channels that went on chain;
  :meth:`offered` lists every HTLC we offered that is not yet removed (with
  its onion, so a restarted sender finds its parts), :meth:`fulfilled_offered` the
  preimages the peers gave for ours and that the channel state still holds
  (what a restarted payments app may have missed), :meth:`known_preimage`
  any preimage a channel monitor keeps;
- an HTLC we offered on a channel that went on chain ends there: the
  channel monitor tells the handler (:meth:`HtlcHandler.htlc_resolved_on_chain`)
  when a spend reveals its preimage or its timeout is buried, so the
  incoming HTLC of a forward is settled or failed while its channel is
  still open; :meth:`fulfill` on a channel that is on chain gives the
  preimage to its monitor, which claims the HTLC's output.

Events that come while no handler is set (a payments app starting after the
channels, or stopping before them) are kept, up to :data:`MAX_MISSED`, and
handed to the next handler.

A peer's failure of an HTLC we offered is on disk (:mod:`.failures`) before
anything is sent after it came, as a preimage is in the channel monitor: in
the job that received it the hook keeps it (:meth:`HtlcHook.persisted`), and
:meth:`HtlcHook.failed_offered` lists the kept ones whose HTLC has left the
channel, for a handler that was not listening when they came or whose
process died before it wrote what they meant. The handler says when it has
its own record of one (:meth:`HtlcHook.failure_handled`). The failure of an HTLC
whose channel went on chain before the failure was irrevocable is released
then: that HTLC ends on chain, and the chain's outcome is the one that counts.

The handler's methods run inside the channel manager's actor: they must
only queue work (never wait for another channel job).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .errors import LocalMisuse, StoreWriteFailed
from .failures import FailureStore, OfferedFailure
from .inputs import AddHtlc, FailHtlc, FailMalformedHtlc, FulfillHtlc, HtlcDropped, HtlcIncoming, HtlcSettled, Input, Output
from .messages import UpdateAddHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFulfillHtlc
from .monitor import HtlcResolved
from .ready import accepted_scids, alias_only, hint_scid, routing_scid
from .state import Phase

if TYPE_CHECKING:
    from .app import ChannelsApp
    from .manager import ChannelManager, ManagedChannel

__all__ = ["MAX_MISSED", "ChannelInfo", "HtlcHandler", "HtlcHook", "HtlcNotWritten", "HtlcRefused", "IncomingHtlc", "OfferedFailure"]

#: HTLC events kept for a handler not set yet (beyond it the oldest go: a restart's replay finds those)
MAX_MISSED = 10_000

#: weight of a commitment without HTLC outputs, and of each HTLC output (BOLT 3), for the funder's fee reserve
_COMMIT_WEIGHT = 1124
_HTLC_WEIGHT = 172
#: the funder keeps this many HTLCs' worth of fee (and twice the feerate: the fee spike buffer) aside
_SPARE_HTLCS = 2


class HtlcRefused(Exception):
    """The channel cannot take (or settle) this HTLC now; the text says why."""


class HtlcNotWritten(HtlcRefused):
    """The channel could not write the change (a full disk): nothing of it was sent, the channel is
    back to its state on disk and reconnects to its peer. Try again once it is usable again (the
    channel may still read as usable until the disconnection is processed)."""


@dataclass(frozen=True, slots=True)
class IncomingHtlc:
    """An incoming HTLC, irrevocably committed: ``channel_key`` + ``add.id`` name it."""

    channel_key: str
    peer_id: bytes
    short_channel_id: int
    add: UpdateAddHtlc


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One of our channels as a payments layer sees it."""

    key: str
    peer_id: bytes
    #: the id the node knows the channel by (:func:`~.ready.routing_scid`: a private channel's is our alias)
    short_channel_id: int
    capacity_sat: int
    #: what we could offer in a new HTLC now (balance minus reserve, fee and in-flight HTLCs)
    spendable_msat: int
    #: what the peer could send us now (likewise)
    receivable_msat: int
    htlc_minimum_msat: int
    usable: bool
    public: bool
    #: the ids an incoming HTLC may name to leave on this channel (:func:`~.ready.accepted_scids`)
    scids: tuple[int, ...] = ()
    #: the id a route hint to us over this channel names (the peer's alias; 0: none may be given)
    hint_scid: int = 0
    #: the real short channel id, where the type lets it be named (listchannels' ``short_channel_id``;
    #: 0: not confirmed yet, or option_scid_alias)
    real_scid: int = 0


class HtlcHandler(Protocol):
    """What the channel app tells a payments layer (called in the actor: queue, never wait)."""

    def htlc_incoming(self, htlc: IncomingHtlc) -> None: ...

    def htlc_resolved(self, channel_key: str, htlc_id: int, preimage: bytes | None, reason: bytes | None,
                      failure_code: int | None) -> None: ...  # fmt: skip

    def htlc_resolved_on_chain(self, channel_key: str, htlc_id: int, preimage: bytes | None) -> None: ...


class HtlcHook:
    """The HTLC interface of one :class:`~lnpmsg.channels.app.ChannelsApp` (its ``htlcs``)."""

    def __init__(self, app: ChannelsApp) -> None:
        self._app = app
        self._handler: HtlcHandler | None = None
        self._missed: deque[tuple[ManagedChannel, object]] = deque(maxlen=MAX_MISSED)
        self._failures: FailureStore | None = None

    def open_failures(self, directory: str | Path) -> None:
        """Keep the peers' failures of our HTLCs in ``directory`` (blocking: before the channels load)."""
        self._failures = FailureStore(directory)

    def set_handler(self, handler: HtlcHandler | None) -> None:
        """Route HTLC events to ``handler`` (None: back to nobody; ``dev_*`` calls still work).

        The events that came while there was no handler go to the new one first."""
        self._handler = handler
        while handler is not None and self._missed:
            self._deliver(handler, *self._missed.popleft())

    # ------------------------------------------------------------ events (from the actor)

    def dispatch(self, channel: ManagedChannel, event: object) -> None:
        """The channel app hands each HTLC event here."""
        if isinstance(event, HtlcSettled) and event.preimage is not None and self._failures is not None:
            # fulfilled after all (a failure not yet committed is forgotten on a reconnection)
            self._failures.remove((channel.key, event.htlc_id))
        handler = self._handler
        if handler is None:
            self._missed.append((channel, event))
            return
        self._deliver(handler, channel, event)

    async def persisted(self, channel: ManagedChannel) -> None:
        """The channel's records are on disk (a job's, or the replay at start): keep every failure
        of our HTLCs its state holds that is not kept yet (or kept as another failure), before any message leaves."""
        store = self._failures
        s = channel.core.state
        if store is None:
            return
        if channel.phase in (Phase.FAILED, Phase.CLOSED):
            await self._release_cut_short(store, channel)
            return
        for update in s.remote_changes.all():
            if not isinstance(update, UpdateFailHtlc | UpdateFailMalformedHtlc):
                continue
            reason, code = (update.reason, None) if isinstance(update, UpdateFailHtlc) else (None, update.failure_code)
            # kept with another failure: the first was not committed when the connection dropped
            # (both sides forgot it), and the peer then failed the HTLC otherwise: this one counts
            kept = store.kept.get((channel.key, update.id))
            if kept is not None and (kept.reason, kept.failure_code) == (reason, code):
                continue
            # the peer's commitment holds our HTLC until the failure is irrevocable (the core checked)
            add = s.remote_commit.spec.htlc(True, update.id) if s.remote_commit is not None else None
            if add is None:
                continue
            await trio.to_thread.run_sync(store.add, OfferedFailure(channel.key, add, reason, code))

    @staticmethod
    async def _release_cut_short(store: FailureStore, channel: ManagedChannel) -> None:
        """The channel went on chain, and its state never changes again: a failure of an HTLC still
        in it was cut short. That HTLC ends on chain, and what the chain does with it is what counts
        (:meth:`HtlcHandler.htlc_resolved_on_chain`, also after a restart: the monitor replays the
        chain, and a restarted handler adopts the HTLC from :meth:`offered`), so its failure is
        never listed (:meth:`failed_offered`) and is released now. The replay at start releases
        any such failure left on disk too (its HTLC resolved on chain before, or the monitor
        archived since)."""
        still = _offered_ids(channel)
        for ref in [ref for ref in store.kept if ref[0] == channel.key and ref[1] in still]:
            await trio.to_thread.run_sync(store.remove, ref)

    def failed_offered(self) -> list[OfferedFailure]:
        """The kept failures of our HTLCs that have left their channel (irrevocably failed) and that
        no handler has recorded yet (:meth:`failure_handled`), oldest first: what a restarted
        payments app must still read."""
        store = self._failures
        if store is None:
            return []
        out, still = [], {}
        for failure in list(store.kept.values()):
            key = failure.channel_key
            if key not in still:
                still[key] = self.outgoing_ids(key)
            if failure.add.id not in still[key]:
                out.append(failure)
        return out

    async def failure_handled(self, channel_key: str, htlc_id: int) -> None:
        """The handler has its own durable record of what the failure of our HTLC meant: forget it."""
        store = self._failures
        if store is not None and (channel_key, htlc_id) in store.kept:
            await trio.to_thread.run_sync(store.remove, (channel_key, htlc_id))

    @staticmethod
    def _deliver(handler: HtlcHandler, channel: ManagedChannel, event: object) -> None:
        if isinstance(event, HtlcIncoming):
            handler.htlc_incoming(IncomingHtlc(channel.key, channel.peer_id, channel.core.state.short_channel_id or 0, event.add))
        elif isinstance(event, HtlcSettled):
            handler.htlc_resolved(channel.key, event.htlc_id, event.preimage, event.reason, event.failure_code)
        elif isinstance(event, HtlcDropped):
            handler.htlc_resolved(channel.key, event.htlc_id, None, None, None)
        elif isinstance(event, HtlcResolved):
            handler.htlc_resolved_on_chain(channel.key, event.htlc_id, event.preimage)

    def dispatch_on_chain(self, channel: ManagedChannel, event: HtlcResolved) -> None:
        """The channel's monitor resolved an HTLC on chain (a preimage at once, a timeout once deep).

        Only HTLCs we offered concern a payments layer: an incoming one claimed or timed out on
        chain has nothing upstream of us. The monitor reports again after a restart (it replays
        the chain), so the handler must accept a resolution it has already acted on."""
        if event.offered:
            if self._failures is not None:  # a failure not yet irrevocable when the channel went on chain is moot
                self._failures.remove((channel.key, event.htlc_id))
            self.dispatch(channel, event)

    # ------------------------------------------------------------ queries

    def channels(self) -> list[ChannelInfo]:
        """Our channels with a short channel id (ready or closing), with their balances now."""
        manager = self._app.manager
        if manager is None:
            return []
        return [info for c in manager.channels.values() if (info := _info(c)) is not None]

    def by_scid(self, short_channel_id: int) -> ChannelInfo | None:
        """Our channel with this short channel id (or one of our aliases of it), if any."""
        return next((c for c in self.channels() if c.short_channel_id == short_channel_id or short_channel_id in c.scids), None)

    def pending_incoming(self) -> list[IncomingHtlc]:
        """Incoming HTLCs in both commitments that nobody settles yet (to decide again after a restart)."""
        manager = self._app.manager
        out: list[IncomingHtlc] = []
        for channel in manager.channels.values() if manager is not None else ():
            s = channel.core.state
            if channel.phase not in (Phase.NORMAL, Phase.SHUTDOWN) or s.local_commit is None or s.remote_commit is None:
                continue
            settling = {u.id for u in s.local_changes.all() if not isinstance(u, UpdateAddHtlc) and hasattr(u, "id")}
            remote_spec = (s.remote_next_commit or s.remote_commit).spec
            for h in s.local_commit.spec.htlcs:
                if h.incoming and h.add.id not in settling and remote_spec.htlc(False, h.add.id) is not None:
                    out.append(IncomingHtlc(channel.key, channel.peer_id, s.short_channel_id or 0, h.add))
        return out

    def incoming_on_chain(self) -> list[IncomingHtlc]:
        """Incoming HTLCs of channels that went on chain (failed or closed), in any commitment that
        may be the one mined: none of them is decided again (:meth:`pending_incoming`), and one we
        learn the preimage of is claimed on chain once :meth:`fulfill` gives it to the monitor."""
        manager = self._app.manager
        out: list[IncomingHtlc] = []
        for channel in manager.channels.values() if manager is not None else ():
            if channel.phase not in (Phase.FAILED, Phase.CLOSED):
                continue
            s = channel.core.state
            adds = _committed_adds(channel, offered=False)
            out.extend(IncomingHtlc(channel.key, channel.peer_id, s.short_channel_id or 0, add) for add in adds.values())
        return out

    def outgoing(self, channel_key: str) -> list[IncomingHtlc]:
        """The HTLCs we offered on a channel that are still in a commitment (``IncomingHtlc`` shape: key + add)."""
        manager = self._app.manager
        channel = manager.channels.get(channel_key) if manager is not None else None
        if channel is None or channel.core.state.local_commit is None:
            return []
        s = channel.core.state
        return [IncomingHtlc(channel.key, channel.peer_id, s.short_channel_id or 0, h.add) for h in s.local_commit.spec.htlcs if not h.incoming]

    def offered(self) -> list[IncomingHtlc]:
        """Every HTLC we offered, on any channel, that is not yet removed from it (proposed,
        in a commitment or being settled), once each (``IncomingHtlc`` shape: key + add)."""
        manager = self._app.manager
        out: list[IncomingHtlc] = []
        for channel in manager.channels.values() if manager is not None else ():
            s = channel.core.state
            adds = {u.id: u for u in s.local_changes.all() if isinstance(u, UpdateAddHtlc)}
            adds.update(_committed_adds(channel, offered=True))
            out.extend(IncomingHtlc(channel.key, channel.peer_id, s.short_channel_id or 0, add) for add in adds.values())
        return out

    def fulfilled_offered(self) -> list[tuple[str, int, bytes]]:
        """(channel key, htlc id, preimage) of our HTLCs a peer fulfilled, while the channel state
        still holds the fulfill (until it is out of both commitments)."""
        manager = self._app.manager
        return [(channel.key, u.id, u.payment_preimage) for channel in (manager.channels.values() if manager is not None else ())
                for u in channel.core.state.remote_changes.all() if isinstance(u, UpdateFulfillHtlc)]  # fmt: skip

    def known_preimage(self, payment_hash: bytes) -> bytes | None:
        """The preimage of ``payment_hash`` if a channel learned it (a peer's ``update_fulfill_htlc`` or a
        spend on chain): the channel monitors keep it on disk, also once the HTLC is gone from the channel."""
        onchain = self._app.onchain
        return onchain.known_preimage(payment_hash) if onchain is not None else None

    def outgoing_ids(self, channel_key: str) -> set[int]:
        """The ids of the HTLCs we offered on a channel that are not yet removed from it."""
        manager = self._app.manager
        channel = manager.channels.get(channel_key) if manager is not None else None
        return set() if channel is None else _offered_ids(channel)

    # ------------------------------------------------------------ commands

    async def add_htlc(self, short_channel_id: int, amount_msat: int, payment_hash: bytes, cltv_expiry: int,
                       onion: bytes, upstream_cltv_expiry: int | None = None, path_key: bytes | None = None) -> tuple[str, int]:  # fmt: skip
        """Offer an HTLC on our channel ``short_channel_id`` and commit it; returns (channel key, htlc id).
        ``path_key``: a forward inside a blinded path, sent in ``update_add_htlc``'s ``blinded_path`` TLV.

        ``upstream_cltv_expiry``: the HTLC forwards an incoming one that expires then (recorded in the
        channel's monitor, which then goes on chain early enough to fail the incoming HTLC back).

        :class:`HtlcRefused` when there is no such usable channel or it cannot take the HTLC now
        (:class:`HtlcNotWritten` when the channel could not write it).
        """
        manager = self._app.manager
        # (an scid_alias channel is never found by its real id: BOLT 2 refuses forwards over it)
        channel = next((c for c in manager.channels.values() if short_channel_id in _scids(c.core.state)), None) if manager else None
        if channel is None:
            raise HtlcRefused("no channel with that short channel id")
        s = channel.core.state
        if channel.phase is not Phase.NORMAL or not s.connected or s.awaiting_reestablish:
            raise HtlcRefused(f"the channel is {channel.phase.value}{'' if s.connected else ', peer offline'}")
        out = await _submitted(manager, channel, AddHtlc(amount_msat, payment_hash, cltv_expiry, onion, path_key))  # type: ignore[arg-type]
        # the id is the one the core gave (other adds may have been queued before ours)
        (add,) = [m for m in out.messages if isinstance(m, UpdateAddHtlc)]
        if upstream_cltv_expiry is not None and self._app.onchain is not None:
            await self._app.onchain.note_upstream(channel, add.id, upstream_cltv_expiry)
        return channel.key, add.id

    async def fulfill(self, channel_key: str, htlc_id: int, preimage: bytes) -> None:
        """Settle incoming HTLC ``htlc_id`` with its preimage; on a channel that went on chain, the
        monitor learns the preimage (durably) and claims the HTLC's output before the peer can time it out."""
        manager = self._app.manager
        channel = manager.channels.get(channel_key) if manager is not None else None
        if channel is not None and channel.phase in (Phase.FAILED, Phase.CLOSED):
            onchain = self._app.onchain
            if onchain is None or not await onchain.learn_preimage(channel, preimage):
                raise HtlcRefused(f"the channel is {channel.phase.value} and has no monitor to claim the HTLC on chain")
            return
        await self._submit(channel_key, FulfillHtlc(htlc_id, preimage))

    async def fail(self, channel_key: str, htlc_id: int, reason: bytes) -> None:
        """Fail incoming HTLC ``htlc_id`` with a failure onion (``update_fail_htlc``)."""
        await self._submit(channel_key, FailHtlc(htlc_id, reason))

    async def fail_malformed(self, channel_key: str, htlc_id: int, sha256_of_onion: bytes, failure_code: int) -> None:
        """Fail incoming HTLC ``htlc_id`` whose onion we could not read (``update_fail_malformed_htlc``)."""
        await self._submit(channel_key, FailMalformedHtlc(htlc_id, sha256_of_onion, failure_code))

    async def _submit(self, channel_key: str, item: object) -> None:
        manager = self._app.manager
        channel = manager.channels.get(channel_key) if manager is not None else None
        if channel is None:
            raise HtlcRefused(f"no channel {channel_key}")
        await _submitted(manager, channel, item)  # type: ignore[arg-type]


async def _submitted(manager: ChannelManager, channel: ManagedChannel, item: Input) -> Output:
    """Run ``item`` on ``channel``; the manager's refusals as :class:`HtlcRefused`, a change it could not
    write as :class:`HtlcNotWritten` (nothing of it was sent: the channel is as on its disk)."""
    try:
        return await manager.submit(channel, item)
    except StoreWriteFailed as exc:
        raise HtlcNotWritten(str(exc)) from exc
    except LocalMisuse as exc:
        raise HtlcRefused(str(exc)) from exc


def _offered_ids(channel: ManagedChannel) -> set[int]:
    """The ids of the HTLCs we offered on ``channel`` that are not yet removed from it."""
    s = channel.core.state
    return {u.id for u in s.local_changes.all() if isinstance(u, UpdateAddHtlc)} | _committed_adds(channel, offered=True).keys()


def _committed_adds(channel: ManagedChannel, *, offered: bool) -> dict[int, UpdateAddHtlc]:
    """By id, the HTLCs we offered (``offered``) or were offered on ``channel`` that are in any
    commitment that may still be signed or mined: ours, the peer's, the peer's next."""
    s = channel.core.state
    adds: dict[int, UpdateAddHtlc] = {}
    for commit, ours in ((s.local_commit, True), (s.remote_commit, False), (s.remote_next_commit, False)):
        if commit is not None:  # (in the peer's commitments our offered HTLCs are the incoming ones)
            adds.update((h.add.id, h.add) for h in commit.spec.htlcs if h.incoming is (ours is not offered))
    return adds


def _scids(s: Any) -> tuple[int, ...]:
    """The ids a channel answers to: its routing id and the ones forwards may name."""
    return tuple(x for x in (routing_scid(s), *accepted_scids(s)) if x)


def _info(channel: ManagedChannel) -> ChannelInfo | None:
    s = channel.core.state
    if not routing_scid(s) or s.local_commit is None or s.remote is None or channel.phase in (Phase.CLOSED, Phase.FAILED):
        return None
    spec = s.local_commit.spec
    pending_out = sum(u.amount_msat for u in s.local_changes.all() if isinstance(u, UpdateAddHtlc))
    pending_in = sum(u.amount_msat for u in s.remote_changes.all() if isinstance(u, UpdateAddHtlc))
    feerate = spec.feerate_per_kw
    fee_msat = 2 * feerate * (_COMMIT_WEIGHT + _HTLC_WEIGHT * (len(spec.htlcs) + _SPARE_HTLCS))
    anchors_msat = 660_000 if s.anchors else 0
    spendable = spec.to_local_msat - pending_out - s.remote.channel_reserve_sat * 1000
    receivable = spec.to_remote_msat - pending_in - s.local_reserve_ask_sat * 1000
    if s.funder:
        spendable -= fee_msat + anchors_msat
    else:
        receivable -= fee_msat + anchors_msat
    usable = channel.phase is Phase.NORMAL and s.connected and not s.awaiting_reestablish
    return ChannelInfo(
        key=channel.key, peer_id=channel.peer_id, short_channel_id=routing_scid(s), capacity_sat=s.funding_sat,
        spendable_msat=max(0, spendable), receivable_msat=max(0, receivable),
        htlc_minimum_msat=s.remote.htlc_minimum_msat, usable=usable, public=bool(getattr(s.open_channel, "channel_flags", 0) & 1),
        scids=accepted_scids(s), hint_scid=hint_scid(s), real_scid=0 if alias_only(s) else s.short_channel_id,
    )  # fmt: skip
