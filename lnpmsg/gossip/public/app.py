"""Public channels: the announce app (the trio shell around :mod:`lnpmsg.gossip.announce`).

Mounted after the channel app and the gossip app (``lnpmsg node`` with a
chain does it)::

    node.mount(ChannelsApp(...)); node.mount(GossipApp(...)); node.mount(AnnounceApp())

For each channel opened with ``--announce`` (``channel_flags`` bit 0), once
its funding is :data:`~lnpmsg.gossip.announce.ANNOUNCE_DEPTH` (6) blocks
deep and the channel is normal, it sends the peer our
``announcement_signatures`` (it owns type 259: a protocol app) and, with
the peer's, hands the gossip app the ``channel_announcement``, our
``channel_update`` and our ``node_announcement`` (alias, color, the
addresses peers can reach: only the onion for an onion-only node). The
gossip app checks them like any gossip (signatures, the funding output on
the chain) and relays them at once.

Our channel_update is signed again when the fee policy changes
(``channels.setfee``, ``lnpmsg setchannelfee``; the payments app forwards by
:meth:`AnnounceApp.forwarding_policies`, which still accepts the previous
policy for ``policy_grace`` seconds), when the peer has been away
for ``disable_delay`` seconds (disabled bit) and when it is back; never
more than once per ``min_interval`` seconds a channel (BOLT 7's rate
limits), timestamps strictly increasing. Closed channels leave the graph;
a channel in shutdown is announced disabled.

BOLT 7's retransmission: until the announcement is built, our signatures go
out again on each reconnection; after, we answer the peer's
``announcement_signatures`` with ours once per connection. Bad signatures
from the peer get a ``warning`` (the connection stays). An announcement the
gossip graph did not take is built again after :data:`RESUBMIT_AFTER`.

A private channel's channel_update goes to its peer only (once per
connection, again on a new policy), naming the alias the peer gave us (BOLT 7;
the real short channel id without one, never for an ``option_scid_alias``
channel); the peer's, which the gossip graph ignores (unknown channel), names
our alias or the real id, is checked and kept in :attr:`AnnounceApp.peer_updates`
(for invoices' route hints). Policies are kept by a channel's routing id
(:func:`~lnpmsg.channels.ready.routing_scid`: a private channel's is our alias). The policies are kept in ``policies.json``
next to the channel store; ``announce.listpolicies`` lists them (:mod:`.policies`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockConnected
from lnpmsg.gossip.announce import (
    ANNOUNCE_DEPTH,
    AnnounceError,
    ChannelFacts,
    FeePolicy,
    UpdatePlanner,
    announced_addresses,
    build_node_announcement,
    build_update,
    node_features,
    our_signatures,
    signed_announcement,
)
from lnpmsg.gossip.messages import AnnouncementSignatures, ChannelUpdate
from lnpmsg.gossip.public.policies import OPEN_PHASES, POLICY_FILE, POLICY_GRACE, FeePolicies
from lnpmsg.gossip.verify import check_channel_update
from lnpmsg.node.peer import Peer
from lnpmsg.wire import Features, Message, WarningMessage

from lnpmsg.channels.manager import ManagedChannel, format_scid
from lnpmsg.channels.ready import accepted_scids, hint_scid, routing_scid
from lnpmsg.channels.state import Phase

__all__ = ["POLICY_FILE", "AnnounceApp", "AnnounceConfig"]

log = logging.getLogger(__name__)

#: seconds between checks of what to announce when nothing else wakes the app (addresses may change)
RECHECK_INTERVAL = 60.0
#: seconds between looks at a channel whose channel_reestablish is not done yet
REESTABLISH_POLL = 0.5
#: seconds after which a channel_announcement the gossip graph did not take is built again
RESUBMIT_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class AnnounceConfig:
    """What our public gossip says and how often.

    ``alias``/``rgb_color``: the node_announcement's (None: derived from the
    node id). ``extra_addresses``: host:port the operator announces besides
    the listeners. ``policy``: the fee policy of channels without their own.
    """

    alias: str | None = None
    rgb_color: bytes | None = None
    extra_addresses: tuple[str, ...] = ()
    policy: FeePolicy = field(default_factory=FeePolicy)
    #: seconds between two channel_updates of a channel (a flapping peer or policy is not spam)
    min_interval: float = 10.0
    #: seconds a peer may be away before its channels are announced disabled
    disable_delay: float = 60.0
    depth: int = ANNOUNCE_DEPTH
    #: seconds a channel's previous policy is still accepted after a change, while payers learn
    #: the new one (BOLT 7: 10 minutes)
    policy_grace: float = POLICY_GRACE


class AnnounceApp(FeePolicies, App):
    """Public channels and our channel_updates (see the module docs).

    Args:
        config: alias, color, default fee policy, rate limits.
        channels_app, gossip_app: the names of the apps it works with.
        clock: unix time (gossip timestamps, rate limits).
    """

    def __init__(
        self,
        config: AnnounceConfig | None = None,
        *,
        channels_app: str = "channels",
        gossip_app: str = "gossip",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("announce", protocol=True, handler_timeout=None)
        self.config = config or AnnounceConfig()
        self.channels_app_name = channels_app
        self.gossip_app_name = gossip_app
        self.clock = clock
        self.planner = UpdatePlanner(self.config.min_interval, self.config.disable_delay)
        #: per short channel id: our policy when it is not the default
        self.policies: dict[int, FeePolicy] = {}
        #: per short channel id: earlier policies still accepted, each until a time (config.policy_grace)
        self._previous: dict[int, list[tuple[FeePolicy, float]]] = {}
        self._theirs: dict[int, AnnouncementSignatures] = {}
        #: channels whose signatures went to the peer on its current connection
        self._sent: set[int] = set()
        #: channels whose peer sent us its signatures on its current connection (answer once)
        self._asked: set[int] = set()
        self._announced: set[int] = set()
        #: when we handed a channel_announcement to the gossip app (until it is in its graph)
        self._submitted_at: dict[int, float] = {}
        #: the peers' channel_updates of our private channels (their policy towards us: route hints)
        self.peer_updates: dict[int, ChannelUpdate] = {}
        self._node_announced: tuple[Any, ...] | None = None
        self._node_announced_at = -math.inf
        self._wake = trio.Event()
        self.add_control_method("setchannelfee", self.setchannelfee)
        self.add_control_method("listpolicies", self.listpolicies)

    def setup(self) -> None:
        self.message(AnnouncementSignatures)
        self.add_handler(AnnouncementSignatures, self._on_signatures)

    def attach(self, node: Any) -> None:
        super().attach(node)
        channels = node.apps.get(self.channels_app_name)
        if channels is not None and "setfee" not in channels.control_methods:
            # where users of Core Lightning's setchannel and lnd's updatechanpolicy look for it
            channels.add_control_method("setfee", self.setchannelfee)

    # ------------------------------------------------------------ wiring

    @property
    def channels(self) -> Any:
        app = self.node.apps.get(self.channels_app_name)
        if app is None:
            raise AppError(f"the announce app needs the channel app {self.channels_app_name!r}")
        return app

    @property
    def gossip(self) -> Any:
        app = self.node.apps.get(self.gossip_app_name)
        if app is None:
            raise AppError(f"the announce app needs the gossip app {self.gossip_app_name!r}")
        return app

    def kick(self) -> None:
        """Look at the channels now (a block, a peer, a message, a new policy)."""
        self._wake.set()

    async def serve(self) -> None:
        self.channels  # noqa: B018 - fail at start when an app is missing
        self.gossip  # noqa: B018
        await trio.to_thread.run_sync(self._load_policies)
        remove_listener = self.node.events.add_listener(self._on_event)
        self.gossip.on_unknown_update = self._on_unknown_update
        try:
            await self._serve()
        finally:
            remove_listener()
            self.gossip.on_unknown_update = None

    def _on_event(self, event: object) -> None:
        # a channel became normal, closed or failed, a zero-conf one confirmed, or a splice moved one to a new
        # funding (a new short channel id, announced anew): what to announce changed
        if getattr(event, "topic", "") in ("channel.ready", "channel.confirmed", "channel.closed", "channel.failed", "channel.spliced"):
            self.kick()

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_chain)
            while True:
                self._wake = trio.Event()
                try:
                    next_at = await self.tick()
                except (AppError, OSError) as exc:
                    # an app it needs stopped, a send or the store failed: the node goes on, we look again
                    log.warning("announce: %s", exc)
                    next_at = None
                deadline = min(next_at, self.clock() + RECHECK_INTERVAL) if next_at is not None else self.clock() + RECHECK_INTERVAL
                with trio.move_on_after(max(0.0, deadline - self.clock())):
                    await self._wake.wait()

    async def _follow_chain(self) -> None:
        async with self.channels.chain.source.subscribe() as sub:
            async for event in sub:
                if isinstance(event, BlockConnected):
                    self.kick()

    # ------------------------------------------------------------ peers and messages

    async def peer_ready(self, peer: Peer) -> None:
        self._forget_connection(peer.node_id)
        self.kick()
        await super().peer_ready(peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        self._forget_connection(peer.node_id)
        self.kick()
        await super().peer_gone(peer, reason)

    def is_announced(self, scid: int) -> bool:
        """Whether our channel ``scid`` is in the gossip graph. Until it is (before its announcement's depth,
        or while the peer never sends its announcement_signatures, as Electrum does), payers can learn of it
        only from route hints, whatever its announce flag."""
        return scid in self._announced and self.gossip.graph.has_channel(scid)

    def _forget_connection(self, peer_id: bytes) -> None:
        manager = self.channels.manager
        for channel in manager.of_peer(peer_id) if manager is not None else ():
            for scid in (channel.core.state.short_channel_id, routing_scid(channel.core.state)):
                self._sent.discard(scid)
                self._asked.discard(scid)

    async def _on_signatures(self, peer: Peer, msg: Message) -> None:
        assert isinstance(msg, AnnouncementSignatures)
        manager = self.channels.manager
        channel = manager.find(peer.node_id, msg.channel_id) if manager is not None else None
        scid = msg.short_channel_id.to_int()
        if channel is None:
            await self._warn(peer, msg.channel_id, "announcement_signatures for an unknown channel")
            return
        s = channel.core.state
        if not _wants_announce(channel):
            log.info("announce: %s sent announcement_signatures for the private channel %s: ignored", peer.node_id.hex()[:16], channel.channel_id.hex())
            return
        if s.short_channel_id and scid != s.short_channel_id:
            await self._warn(peer, msg.channel_id, f"announcement_signatures: short_channel_id {msg.short_channel_id} is not the funding's {format_scid(s.short_channel_id)}")
            return
        self._theirs[scid] = msg
        self._asked.add(scid)
        self.kick()

    async def _warn(self, peer: Peer | bytes, channel_id: bytes, text: str) -> None:
        node_id = peer.node_id if isinstance(peer, Peer) else peer
        log.warning("announce: %s: %s", node_id.hex()[:16], text)
        try:
            await self.send(node_id, WarningMessage(channel_id=channel_id, data=text.encode()))
        except Exception as exc:  # noqa: BLE001 - the peer may be gone; the log has it
            log.debug("announce: warning not sent: %s", exc)

    # ------------------------------------------------------------ the work

    def facts(self, channel: ManagedChannel) -> ChannelFacts:
        """What a channel_announcement of ``channel`` names."""
        s = channel.core.state
        assert s.remote is not None
        return ChannelFacts(
            chain_hash=s.chain_hash,
            short_channel_id=s.short_channel_id,
            channel_id=s.channel_id,
            our_node_id=self.node.node_id,
            their_node_id=channel.peer_id,
            our_funding_pubkey=channel.core.basepoints.funding_pubkey,
            their_funding_pubkey=s.remote.basepoints.funding_pubkey,
            capacity_sat=s.funding_sat,
        )

    async def tick(self) -> float | None:
        """Do what is due for every public channel; returns when to look again (None: at the next event)."""
        manager = self.channels.manager
        gossip = self.gossip
        if manager is None:
            return None
        try:
            tip = await self.channels.chain.source.tip()
        except ChainError as exc:
            log.warning("announce: cannot read the chain tip: %s", exc)
            return None
        now = self.clock()
        next_at: float | None = None
        own: list[Message] = []
        live: set[int] = set()
        moved = [self._follow_real_id(c.core.state) for c in list(manager.channels.values())]  # (each channel)
        if any(moved):  # a zero-conf channel's policy set under its alias follows its real id
            await trio.to_thread.run_sync(self._save_policies)
        for channel in list(manager.channels.values()):
            s = channel.core.state
            scid = s.short_channel_id
            if not _wants_announce(channel):
                again = await self._private_update(channel, now) if routing_scid(s) else None
                if again is not None:
                    next_at = again if next_at is None else min(next_at, again)
                continue
            if not scid:
                continue
            if channel.phase not in OPEN_PHASES:
                if scid in self._announced:
                    self._announced.discard(scid)
                    self.planner.forget(scid)
                    log.info("announce: %s is %s: leaves the graph", format_scid(scid), channel.phase.value)
                    await gossip.close_channel(scid, channel.phase.value)
                continue
            if tip.height - (scid >> 40) + 1 < self.config.depth:
                continue
            live.add(scid)
            facts = self.facts(channel)
            connected = self._connected(channel.peer_id)
            if gossip.graph.has_channel(scid):
                self._submitted_at.pop(scid, None)
                if scid not in self._announced:
                    self._announced.add(scid)  # announced before a restart
                    self.planner.known(scid, gossip.graph.channels[scid].update_ts[facts.direction])
            submitted = self._submitted_at.get(scid)
            if submitted is not None and not gossip.graph.has_channel(scid) and now - submitted >= RESUBMIT_AFTER:
                # the gossip app did not take it (e.g. the chain lookup failed): build it again
                log.warning("announce: %s is not in the gossip graph %.0f s after its announcement: again", format_scid(scid), now - submitted)
                self._announced.discard(scid)
                self._submitted_at.pop(scid, None)
                self.planner.again(scid)
            announced = scid in self._announced
            if connected and s.awaiting_reestablish:
                # BOLT 2: channel_reestablish first; look again shortly
                soon = now + REESTABLISH_POLL
                next_at = soon if next_at is None else min(next_at, soon)
            elif connected and channel.phase is Phase.NORMAL and scid not in self._sent and (not announced or scid in self._asked):
                ours = our_signatures(facts, self.node.key.secret, channel.core.secrets.funding_privkey)
                try:
                    await self.send(channel.peer_id, ours)
                    self._sent.add(scid)
                    log.info("announce: sent announcement_signatures for %s", format_scid(scid))
                except Exception as exc:  # noqa: BLE001 - the peer left: the next connection retries
                    log.debug("announce: announcement_signatures not sent: %s", exc)
            if not announced:
                theirs = self._theirs.get(scid)
                if theirs is None:
                    continue
                ours = our_signatures(facts, self.node.key.secret, channel.core.secrets.funding_privkey)
                try:
                    announcement = signed_announcement(facts, ours, theirs)
                except AnnounceError as exc:
                    del self._theirs[scid]
                    await self._warn(channel.peer_id, s.channel_id, str(exc))
                    continue
                own.append(announcement)
                self._announced.add(scid)
                self._submitted_at[scid] = now
                soon = now + RESUBMIT_AFTER
                next_at = soon if next_at is None else min(next_at, soon)
                log.info("announce: %s is public (channel_announcement to the gossip app)", format_scid(scid))
            self.planner.peer_state(scid, connected and channel.phase is Phase.NORMAL, now)
            policy = self.policy_of(scid)
            due, again = self.planner.due(scid, policy, now)
            if due:
                timestamp, disabled = self.planner.take(scid, policy, now)
                own.append(build_update(facts, self.node.key.secret, policy, timestamp, disabled=disabled))
                log.info("announce: channel_update for %s: %d msat + %d ppm, cltv %d%s", format_scid(scid),
                         policy.fee_base_msat, policy.fee_proportional_millionths, policy.cltv_expiry_delta,
                         " (disabled)" if disabled else "")  # fmt: skip
            if again is not None:
                next_at = again if next_at is None else min(next_at, again)
        if any(scid in self._announced for scid in live):
            node_announcement = self._node_announcement(now)
            if node_announcement is not None:
                own.append(node_announcement)
        if own:
            await gossip.add_own(own)
        return next_at

    async def _private_update(self, channel: ManagedChannel, now: float) -> float | None:
        """BOLT 7: our channel_update of a private channel goes to the peer only (for its route hints).

        Sent once per connection and again when the policy changes; returns when to look again.
        """
        s = channel.core.state
        scid, named = routing_scid(s), hint_scid(s)  # (BOLT 7: the peer's alias, else the real id)
        if channel.phase is not Phase.NORMAL or s.awaiting_reestablish or not self._connected(channel.peer_id) or not named:
            return None
        policy = self.policy_of(scid)
        due, again = self.planner.due(scid, policy, now)
        if not due and scid in self._sent:
            return again
        timestamp, _ = self.planner.take(scid, policy, now)
        update = build_update(replace(self.facts(channel), short_channel_id=named), self.node.key.secret, policy, timestamp, dont_forward=True)
        try:
            await self.send(channel.peer_id, update)
            self._sent.add(scid)
        except Exception as exc:  # noqa: BLE001 - the peer left: the next connection sends it
            log.debug("announce: private channel_update not sent: %s", exc)
        return None

    def _on_unknown_update(self, source: bytes, update: ChannelUpdate) -> None:
        """A channel_update the gossip graph does not know: our private channel's, from its peer?"""
        try:
            self._keep_peer_update(source, update)
        except Exception:  # the gossip app calls this: never fail it
            log.exception("announce: cannot handle a channel_update from %s", source.hex()[:16])

    def _keep_peer_update(self, source: bytes, update: ChannelUpdate) -> None:
        manager = self.channels.manager
        scid = update.short_channel_id.to_int()
        for channel in manager.of_peer(source) if manager is not None else ():
            # (it names our alias, or the real id: BOLT 7)
            if scid not in (channel.core.state.short_channel_id, *accepted_scids(channel.core.state)) or _wants_announce(channel):
                continue
            facts = self.facts(channel)
            if update.channel_flags & 1 != 1 - facts.direction:
                return  # not the peer's direction
            node_1, node_2 = sorted((facts.our_node_id, facts.their_node_id))
            if check_channel_update(update, node_1, node_2) is not None:
                log.info("announce: a bad private channel_update from %s for %s", source.hex()[:16], format_scid(scid))
                return
            scid = routing_scid(channel.core.state)  # (kept by the id the payments app knows the channel by)
            known = self.peer_updates.get(scid)
            if known is None or known.timestamp < update.timestamp:
                self.peer_updates[scid] = update
            return

    def _connected(self, peer_id: bytes) -> bool:
        peer = self.node.peers.get(peer_id)
        return peer is not None and peer.is_ready

    def _node_announcement(self, now: float) -> Message | None:
        """Our node_announcement when what it says changed (at most once per ``min_interval``)."""
        config = self.config
        addresses = announced_addresses(self.node.listen_addresses, onion_only=self.node.config.onion_only, extra=config.extra_addresses)
        announced_only = Features()
        for app in self.node.apps.values():
            announced_only = announced_only | app.node_announcement_features
        content = (config.alias, config.rgb_color, tuple(addresses), announced_only)
        if content == self._node_announced or now - self._node_announced_at < config.min_interval:
            return None
        known = self.gossip.graph.nodes.get(self.node.node_id)
        timestamp = max(int(now), (known.timestamp + 1) if known is not None else 0)
        self._node_announced = content
        self._node_announced_at = now
        log.info("announce: node_announcement with %d address(es): %s", len(addresses), ", ".join(str(a) for a in addresses) or "none")
        features = node_features(self.node.local_features(), announced_only)
        return build_node_announcement(self.node.key.secret, timestamp, alias=config.alias, rgb_color=config.rgb_color,
                                       addresses=addresses, features=features)  # fmt: skip


def _wants_announce(channel: ManagedChannel) -> bool:
    opened = channel.core.state.open_channel
    return opened is not None and bool(opened.channel_flags & 1)


