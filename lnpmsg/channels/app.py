"""The channel app: BOLT-2 channels on a node (the trio shell around :mod:`.manager`).

Mount it after the chain app (``lnpmsg node --chain regtest`` or
``--bitcoind-rpc`` does both)::

    node.mount(ChainApp(...))
    node.mount(ChannelsApp(data_dir / "channels"))

It owns the BOLT-2 message types (a protocol app), offers the channel
features in ``init`` (option_data_loss_protect, upfront_shutdown_script,
option_static_remotekey, option_anchors_zero_fee_htlc_tx,
option_shutdown_anysegwit, option_quiesce, option_channel_type, option_scid_alias,
option_zeroconf, option_splice: all optional bits), and
feeds the manager:

- ``peer_ready``: ``Reconnected`` for each channel with the peer (the core
  sends ``channel_reestablish``) before any message of the peer is handled;
  ``peer_gone``: ``Disconnected``, and a channel peer we dialed before is
  dialed again with back-off, also at start (:mod:`.reconnect`);
- each message, by channel id (``open_channel`` starts a channel);
  handlers are ``shield=True``: the record, then the messages, never cut;
- a channel-scoped ``error`` (claimed with ``claim_channel``) fails the channel;
- the chain, from a reliable subscription of the chain app's source (not
  the lossy event bus): each block's height, the funding depth (then
  ``channel_ready``), spends of funding outputs (``channel.spent``).

The wallet funds the funder's channels (``fund_output``: the coins stay
reserved) and the app broadcasts the funding once the peer's
``funding_signed`` is on disk; closing transactions and, when a channel
fails, our latest commitment are broadcast too.

Control calls (``channels.<call>``): ``fundchannel`` [node_id, amount_sat, push_msat?, feerate?,
announce?], ``listchannels`` [peer_id?], ``closechannel`` [channel, feerate?, destination?],
``exportchannelbackup`` [file?], ``listchannelbackup`` [backup? | file?], ``restorechannels`` [backup? | file?] (:mod:`.backup_calls`),
``bumpchannelopen`` [channel, feerate?] (:mod:`.dualfund_side`), ``splice`` [channel, amount_sat, feerate?,
address?], ``bumpsplice`` and ``abandonsplice`` [channel, feerate?] (:mod:`.splice_side`), and,
for tests without the payments layer, ``dev_addhtlc``, ``dev_fulfill``, ``dev_fail``, ``dev_updatefee``,
``dev_preimage`` (:mod:`.dev_calls`), ``dev_quiesce`` (:mod:`.quiesce_side`). Events: ``channel.opened``,
``channel.ready``, ``channel.confirmed`` (a zero-conf channel's funding), ``channel.htlc``, ``channel.closed``,
``channel.failed``, ``channel.spent``, ``channel.quiescent``, ``channel.spliced``, ``channel.splice_aborted``,
``channel.splice_versions_dropped``, ``channel.splice_taken_up``.

A payments app plugs in through ``htlcs`` (:class:`~.htlc_hook.HtlcHook`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import BlockConnected, OutputSpent
from lnpmsg.node.peer import Peer
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.app import ChainAppError
from lnpmsg.wire import CHAIN_HASHES, Error, Features, Message

from . import messages as M
from .errors import LocalMisuse, StoreWriteFailed
from .inputs import (
    AcceptCommand,
    BroadcastFunding,
    ChannelClosed,
    ChannelFailed,
    ChannelOpened,
    ChannelReadyEvent,
    CloseChannel,
    Disconnected,
    Event,
    FundingNeeded,
    HtlcDropped,
    HtlcIncoming,
    HtlcSettled,
    OpenCommand,
    Received,
    Reconnected,
    WeAreBehind,
)
from .dev import DevOptions
from .backup_calls import BackupCalls
from .chain_side import FIND_FUNDING_DELAYS, ChainSide
from .double_spend import funding_wanted
from .dev_calls import DevCalls
from .manager import ChannelManager, ManagedChannel, describe, format_scid
from .onchain import OnchainWatch
from .options import type_variations, with_channel_type
from .htlc_hook import HtlcHook
from .reconnect import PeerAddressBook, Reconnector
from .dualfund_side import DUAL_FUND_BITS, DualFundSide
from .quiesce_side import QUIESCE_BITS, QuiesceSide
from .splice_side import SPLICE_BITS, SpliceSide
from .messages_splice import SPLICING_MESSAGES
from .messages_v2 import DUAL_FUND_MESSAGES, AcceptChannel2, OpenChannel2
from .params import ChannelConfig, OpeningPolicy
from .state import Phase

__all__ = ["CHANNEL_FEATURE_BITS", "ChannelEvent", "ChannelsApp"]

log = logging.getLogger(__name__)

#: optional bits: data_loss_protect, upfront_shutdown_script, static_remotekey, anchors_zero_fee_htlc_tx,
#: shutdown_anysegwit, quiesce, channel_type, scid_alias, zeroconf (BOLT 9: needs scid_alias), splice
CHANNEL_FEATURE_BITS = (1, 5, 13, 23, 27, QUIESCE_BITS[1], 45, 47, 51, SPLICE_BITS[1])
#: the BOLT-2 messages the app owns (the node decodes them for it)
_MESSAGES: tuple[type[Message], ...] = (
    M.OpenChannel, M.AcceptChannel, M.FundingCreated, M.FundingSigned, M.ChannelReady, M.Shutdown,
    M.ClosingSigned, M.ClosingComplete, M.ClosingSig, M.UpdateAddHtlc, M.UpdateFulfillHtlc, M.UpdateFailHtlc,
    M.UpdateFailMalformedHtlc, M.CommitmentSigned, M.RevokeAndAck, M.UpdateFee, M.ChannelReestablish, M.Stfu,
)  # fmt: skip
#: the interactive-tx messages, which splicing uses on every channel (v2 opens only with --dual-fund)
_INTERACTIVE_MESSAGES = tuple(m for m in DUAL_FUND_MESSAGES if m not in (OpenChannel2, AcceptChannel2))
#: seconds ``fundchannel`` waits for the peer's funding_signed, ``closechannel`` for the closing transaction
COMMAND_TIMEOUT = 50.0


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """A ``channel.*`` event (``topic`` says which); fields a kind does not use are empty."""

    topic: str
    channel_id: bytes
    node_id: bytes
    state: str
    short_channel_id: str = ""
    txid: str = ""
    htlc_id: int = -1
    amount_msat: int = 0
    payment_hash: bytes = b""
    preimage: bytes = b""
    reason: str = ""


class ChannelsApp(BackupCalls, DevCalls, ChainSide, DualFundSide, QuiesceSide, SpliceSide, App):
    """BOLT-2 channels (see the module docs).

    Args:
        directory: the channel store.
        chain_app: the name of the chain app (its source and wallet).
        config: the limits we announce (minimum_depth, to_self_delay, ...).
        policy: what we accept from peers.
        now: the cores' clock (default: wall time).
        dev: the ``--dev-*`` options: forced channel secrets, ``minimum_depth``
            from ``--dev-funding-confirms`` (conformance suites).
        reconnect: keep channel peers connected (see :mod:`.reconnect`).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        chain_app: str = "chain",
        config: ChannelConfig | None = None,
        policy: OpeningPolicy | None = None,
        now: Any = None,
        dev: DevOptions | None = None,
        reconnect: bool = True,
    ) -> None:
        policy = policy or OpeningPolicy()
        bits = CHANNEL_FEATURE_BITS + (DUAL_FUND_BITS[1:] if policy.dual_fund else ())
        super().__init__("channels", protocol=True, handler_timeout=None, features=Features.from_bits(bits))
        self.directory = Path(directory)
        self.chain_app_name = chain_app
        self.dev = dev or DevOptions()
        self.config = self.dev.channel_config(config or ChannelConfig())
        self.policy = policy
        self._now = now
        self.manager: ChannelManager | None = None
        self._funding_feerate: dict[str, int | None] = {}
        self._funding_errors: dict[str, str] = {}
        self._splice_errors: dict[str, str] = {}
        self._splice_blocks: dict[bytes, tuple[int, bytes, int]] = {}
        self._forgotten_spends: dict[OutPoint, tuple[int, bytes, bytes]] = {}
        self._forgotten_read: set[OutPoint] = set()
        self._closing_txids: dict[str, str] = {}
        #: zero-conf channels whose funding is not confirmed: the height we first saw them so
        self._unconfirmed_since: dict[str, int] = {}
        self._funding_unseen: set[str] = set()
        self._quiescence_timed: dict[str, Any] = {}
        self._commitment_unfunded: set[str] = set()
        self._watch_in: trio.MemorySendChannel[Any] | None = None
        self.onchain: OnchainWatch | None = None
        #: the interface a payments app uses (add, settle, hear of HTLCs; our channels)
        self.htlcs = HtlcHook(self)
        self._reconnect = reconnect
        self.backup_watchers = []
        #: dials channel peers that are away (None with ``reconnect=False``)
        self.reconnector: Reconnector | None = None
        for call, fn in {
            "fundchannel": self.fundchannel, "listchannels": self.listchannels, "closechannel": self.closechannel,
            "dev_addhtlc": self.dev_addhtlc, "dev_fulfill": self.dev_fulfill, "dev_fail": self.dev_fail,
            "dev_updatefee": self.dev_updatefee, "dev_preimage": self.dev_preimage, "dev_quiesce": self.dev_quiesce,
            "exportchannelbackup": self.exportchannelbackup, "listchannelbackup": self.listchannelbackup,
            "restorechannels": self.restorechannels, "bumpchannelopen": self.bumpchannelopen,
            "splice": self.splice, "abandonsplice": self.abandonsplice,
            "bumpsplice": self.bumpsplice,
        }.items():  # fmt: skip
            self.add_control_method(call, fn)

    def setup(self) -> None:
        opening = (OpenChannel2, AcceptChannel2) if self.policy.dual_fund else ()
        for cls in _MESSAGES + _INTERACTIVE_MESSAGES + SPLICING_MESSAGES + opening:
            self.message(cls)
            self.add_handler(cls, self._on_message, shield=True)

    # ------------------------------------------------------------ lifecycle

    @property
    def chain(self) -> Any:
        """The chain app (its ``source`` and ``wallet``)."""
        chain = self.node.apps.get(self.chain_app_name)
        if chain is None:
            raise AppError(f"the channels app needs the chain app {self.chain_app_name!r} mounted before it")
        return chain

    def _manager(self) -> ChannelManager:
        if self.manager is None:
            raise AppError("the channels app is not running")
        return self.manager

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the channels, run the manager's actor and follow the chain."""
        kwargs = {} if self._now is None else {"now": self._now}
        onchain = OnchainWatch(self.directory, self.chain, self.node.events.publish)
        self.onchain = onchain
        onchain.on_htlc_resolved = self.htlcs.dispatch_on_chain
        await trio.to_thread.run_sync(self.htlcs.open_failures, self.directory / "failures")
        manager = ChannelManager(self.directory, send=self._send, on_events=self._on_events, dev=self.dev,
                                 on_persisted=self._persisted, disconnect=self.disconnect_peer, **kwargs)  # fmt: skip
        onchain.manager = manager
        self.manager = manager
        self.chain  # noqa: B018 - fail at start when the chain app is missing
        loaded = await manager.load()
        self._free_orphan_reservations()
        for channel in manager.channels.values():
            self._claim(channel)
        if self._reconnect:
            book = await trio.to_thread.run_sync(PeerAddressBook, self.directory / "peers.json")
            self.reconnector = Reconnector(self, book)
        log.info("channels: %d channel(s) in %s", loaded, self.directory)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(manager.run)
                for channel in manager.channels.values():
                    s = channel.core.state  # (a zero-conf channel may be in use with its funding unconfirmed; never
                    # a failed one: its funding may never have been signed for, and its coins may fund another)
                    unconfirmed = channel.phase in (Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING) and not s.short_channel_id
                    if (channel.phase is Phase.AWAIT_READY or unconfirmed) and (s.funder or s.dual) and s.funding_tx:
                        nursery.start_soon(self._broadcast, channel.core.state.funding_tx, "funding")
                    if channel.phase is Phase.CLOSED and channel.core.state.closing_tx:
                        nursery.start_soon(self._rebroadcast_closing, channel)
                    self._fail_back_double_spent(channel)
                nursery.start_soon(self._rebroadcast_splices)
                await super().run(task_status=task_status)
        finally:
            self.manager = None

    async def _persisted(self, channel: ManagedChannel) -> None:
        """A job's records are on disk: the monitor's updates and the peer's failures of our HTLCs too, before any message."""
        assert self.onchain is not None
        await self.onchain.persisted(channel)
        await self.htlcs.persisted(channel)

    async def serve(self) -> None:
        """Follow the chain (:meth:`_follow_chain`); meanwhile a channel peer's new alias rewrites the backup."""
        self.channel_peers_changed()  # (the channels of this run)
        remove_listener = self.node.events.add_listener(self.on_peer_announced)
        try:
            await self._follow_chain()
        finally:
            remove_listener()

    async def _follow_chain(self) -> None:
        """Follow the chain: block heights and funding depths to the channels, funding spends."""
        source = self.chain.source
        self._watch_in, watch_out = trio.open_memory_channel[Any](1000)
        onchain = self.onchain
        assert onchain is not None
        if self.reconnector is not None:
            self.reconnector.start()
        await self.write_backup()
        async with source.subscribe() as sub, source.subscribe(start_height=onchain.start_height()) as monitor_sub:
            await self._hold_unfunded_commitments()
            await onchain.resume(keep_back=self._commitment_unfunded)
            await self._follow_spliced_fundings()
            for channel in list(self._manager().channels.values()):
                await self._watch(sub, channel)
            await self._check_depths()
            await self._check_splice_depths()
            await self._check_double_spends_at_start()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._add_watches, sub, watch_out)
                nursery.start_soon(onchain.follow, monitor_sub)
                async for event in sub:
                    if isinstance(event, BlockConnected):
                        await self._on_block(event.height)
                    elif isinstance(event, OutputSpent):
                        self._on_funding_spent(event)

    # ------------------------------------------------------------ peers and messages

    async def peer_ready(self, peer: Peer) -> None:
        for channel in self._manager().of_peer(peer.node_id):
            await self._submit(channel, Reconnected())
        if self.reconnector is not None:
            await self.reconnector.peer_ready(peer.node_id, peer.dialed)
        await self.ask_to_close(peer.node_id)  # channels restored from a backup
        await super().peer_ready(peer)

    async def peer_gone(self, peer: Peer, reason: str) -> None:
        manager = self.manager
        for channel in manager.of_peer(peer.node_id) if manager is not None else ():
            manager.post(channel, Disconnected())  # type: ignore[union-attr]
        if self.reconnector is not None:
            self.reconnector.peer_gone(peer.node_id)
        await super().peer_gone(peer, reason)

    async def channel_error(self, peer: Peer, channel_id: bytes, text: str) -> None:
        channel = self._manager().find(peer.node_id, channel_id)
        if channel is not None:
            await self._before_peer_error(channel)
            await self._submit(channel, Received(Error(channel_id=channel_id, data=text.encode())))
        await super().channel_error(peer, channel_id, text)

    async def _on_message(self, peer: Peer, msg: Message) -> None:
        manager = self._manager()
        if isinstance(msg, M.OpenChannel | OpenChannel2):
            if isinstance(msg, OpenChannel2) or self.dual_fund_negotiated(peer):  # (BOLT 2: then no open_channel)
                await (self._accept_v2(peer, msg) if isinstance(msg, OpenChannel2) else self._send(
                    peer.node_id, Error(channel_id=msg.temporary_channel_id, data=b"option_dual_fund: open_channel2 only")))
            else:
                await self._accept(peer, msg)
            return
        channel_id = getattr(msg, "channel_id", None) or getattr(msg, "temporary_channel_id")
        channel = manager.find(peer.node_id, channel_id)
        if channel is None:
            # BOLT 2: a message for a channel we do not know gets an error naming it.
            await self._send(peer.node_id, Error(channel_id=channel_id, data=b"unknown channel"))
            return
        await self._submit(channel, Received(msg))
        if isinstance(msg, AcceptChannel2):
            self._claim(channel)  # a v2 open's channel id is known from here: its errors come to us

    async def _accept(self, peer: Peer, msg: M.OpenChannel) -> None:
        if (opening := await self._inbound_channel(peer, msg.temporary_channel_id)) is None:
            return
        channel, local, remote, config = opening
        chain_hash = CHAIN_HASHES[self.node.config.network]
        trusted = peer.node_id in self.policy.zeroconf_peers  # (--zeroconf-peer)
        await self._submit(channel, AcceptCommand(msg, chain_hash, local, remote, config, self.policy, self._manager().new_alias(), trusted))
        self._claim(channel)

    async def _inbound_channel(self, peer: Peer, temporary_channel_id: bytes) -> tuple[ManagedChannel, int, int, ChannelConfig] | None:
        """A new channel for a peer's open (v1 or v2), with both sides' features and our config; None
        (the peer told) when its temporary id is in use."""
        manager = self._manager()
        if manager.find(peer.node_id, temporary_channel_id) is not None:
            await self._send(peer.node_id, Error(channel_id=temporary_channel_id, data=b"temporary_channel_id in use"))
            return None
        local, remote = self._features(peer)
        return manager.new_channel(peer.node_id), local, remote, replace(self.config, close_script=await self._close_script())

    def _features(self, peer: Peer) -> tuple[int, int]:
        remote = peer.session.remote_features
        return self.node.local_features(peer.node_id).value, remote.value if remote is not None else 0

    async def _send(self, peer_id: bytes, msg: Message) -> None:
        await self.send(peer_id, msg)

    async def _submit(self, channel: ManagedChannel, item: Any) -> Any:
        try:
            return await self._manager().submit(channel, item)
        except (LocalMisuse, StoreWriteFailed) as exc:  # (the manager logged a failed write as an error)
            log.debug("channels: %s refused %s: %s", channel.channel_id.hex(), type(item).__name__, exc)
            return None

    def _claim(self, channel: ManagedChannel) -> None:
        """Route ``error``/``warning`` for the channel (its temporary id before the funding) to us."""
        s = channel.core.state
        for channel_id in (s.channel_id, s.temporary_channel_id if not s.channel_id else b""):
            if channel_id:
                try:
                    self.claim_channel(channel_id)
                except Exception as exc:  # another app holds it: errors still reach the event bus
                    log.warning("channels: cannot claim %s: %s", channel_id.hex(), exc)

    # ------------------------------------------------------------ events (inside the actor)

    async def _on_events(self, channel: ManagedChannel, events: Sequence[Event]) -> None:
        for event in events:
            if self._dual_event(channel, event) or self._quiesce_event(channel, event) or self._splice_event(channel, event):
                continue
            if isinstance(event, HtlcIncoming | HtlcSettled | HtlcDropped):
                self.htlcs.dispatch(channel, event)
            if isinstance(event, FundingNeeded):
                self.spawn(self._fund, channel, event)
            elif isinstance(event, BroadcastFunding):
                await self._broadcast(event.raw_tx, "funding")
            elif isinstance(event, ChannelOpened):
                self.release_channel(channel.core.state.temporary_channel_id)
                self._claim(channel)
                if self._watch_in is not None:
                    self._watch_in.send_nowait(channel)
                self._publish("channel.opened", channel, txid=event.funding_outpoint.txid_hex)
                self.channel_peers_changed()
                self.spawn(self._check_depths)
                if self.reconnector is not None:
                    self.spawn(self.reconnector.channel_opened, channel.peer_id)
                self.spawn(self.write_backup)
            elif isinstance(event, ChannelReadyEvent):  # (its id: our alias when the funding is not confirmed yet)
                self._publish("channel.ready", channel, short_channel_id=format_scid(event.short_channel_id))
                log.info("channels: %s is ready (%s%s)", channel.channel_id.hex(), format_scid(event.short_channel_id),
                         "" if channel.core.state.short_channel_id else ", zero-conf: the funding is not confirmed yet")  # fmt: skip
                self.spawn(self.write_backup)  # (the short channel id: where a restore reads the chain from)
                if funding_wanted(channel.core.state):  # (a zero-conf fundee: the funding's inputs show a double spend)
                    self.spawn(self._find_funding, channel, FIND_FUNDING_DELAYS)
            elif isinstance(event, HtlcIncoming):
                add = event.add
                self._publish("channel.htlc", channel, htlc_id=add.id, amount_msat=add.amount_msat,
                              payment_hash=add.payment_hash, reason="incoming")  # fmt: skip
            elif isinstance(event, HtlcSettled):
                self._publish("channel.htlc", channel, htlc_id=event.htlc_id, preimage=event.preimage or b"",
                              reason="fulfilled" if event.preimage else "failed")  # fmt: skip
            elif isinstance(event, ChannelClosed):
                txid = Tx.parse(event.raw_tx).txid_hex
                self._closing_txids[channel.key] = txid
                await self._broadcast(event.raw_tx, "closing")
                self._publish("channel.closed", channel, txid=txid)
                self.channel_peers_changed()
                self.spawn(self.write_backup)
                log.info("channels: %s closed by %s (fee %d sat)", channel.channel_id.hex(), txid, event.fee_sat)
            elif isinstance(event, ChannelFailed):
                log.warning("channels: %s failed: %s", channel.channel_id.hex(), event.reason)
                s = channel.core.state
                if s.funder and s.funding_tx and s.local_commit is None:  # never signed, never broadcast
                    self._release_funding(s.funding_tx)
                txid = ""
                if event.commitment_tx is not None and await self._commitment_failed(channel, event.commitment_tx):
                    txid = Tx.parse(event.commitment_tx).txid_hex
                self._publish("channel.failed", channel, txid=txid, reason=event.reason)
            elif isinstance(event, WeAreBehind):
                log.error("channels: the peer proved %s lost state: not broadcasting, waiting for theirs", channel.channel_id.hex())
                self._publish("channel.failed", channel, reason="we are behind: waiting for the peer's commitment")

    def _publish(self, topic: str, channel: ManagedChannel, **fields: Any) -> None:
        self.node.events.publish(ChannelEvent(topic, channel.channel_id, channel.peer_id, channel.phase.value, **fields))

    async def _close_script(self, destination: str | None = None) -> bytes:
        wallet = self.chain.wallet
        address = destination or wallet.new_address()
        try:
            return script_for_address(address, wallet.hrp)
        except ChainError as exc:
            raise ParamsError(f"bad destination: {exc.reason}") from None

    # ------------------------------------------------------------ control calls

    def _channel(self, channel: str) -> ManagedChannel:
        try:
            return self._manager().lookup(channel)
        except KeyError:
            raise ParamsError(f"no channel {channel!r} (give a channel id, short channel id or key)") from None

    async def fundchannel(self, node_id: str, amount_sat: int, push_msat: int = 0, feerate: int | None = None,
                          announce: bool = False, channel_type: str | None = None, zeroconf: bool = False,
                          v2: bool = False) -> dict[str, Any]:  # fmt: skip
        """Open a channel of AMOUNT_SAT to the connected peer NODE_ID, funded by the wallet; returns once
        the peer signed our first commitment and the funding is broadcast (then confirmations follow).
        CHANNEL_TYPE: ``static_remotekey`` or ``anchors`` (default: anchors when the peer offers it), either
        with ``+scid_alias`` (or ``scid_alias`` alone): a private channel known by its aliases only.
        ZEROCONF: ask option_zeroconf: the channel is usable before the funding confirms, if the peer trusts us.
        V2: insist on channel establishment v2 (it is used whenever both nodes offer option_dual_fund)."""
        try:
            peer = self.peer(node_id)
        except AppError as exc:
            raise ParamsError(str(exc)) from None
        if not isinstance(amount_sat, int) or amount_sat <= 0:
            raise ParamsError(f"amount_sat must be a positive integer, got {amount_sat!r}")
        local, remote = self._features(peer)
        remote_features = Features(remote)
        channel_type, type_bits = type_variations(remote_features, channel_type, zeroconf=bool(zeroconf), announce=bool(announce))
        local = with_channel_type(local, remote_features, channel_type)
        try:
            commit_feerate = await self.chain.source.estimate_feerate()
        except ChainError:
            commit_feerate = 2500
        commit_feerate = max(commit_feerate, self.policy.min_feerate_per_kw)
        config = replace(self.config, close_script=await self._close_script())
        manager = self._manager()
        channel = manager.new_channel(peer.node_id)
        self._funding_feerate[channel.key] = feerate
        command: Any = OpenCommand(
            os.urandom(32), CHAIN_HASHES[self.node.config.network], amount_sat, push_msat, commit_feerate,
            local, remote, config, self.policy, channel_flags=1 if announce else 0,
            type_bits=type_bits, local_alias=manager.new_alias(),
        )  # fmt: skip
        if v2 or self.dual_fund_negotiated(peer):
            command = await self._open_v2_command(peer, channel, command, feerate)
        try:
            await manager.submit(channel, command)
        except LocalMisuse as exc:
            self._release_inputs(getattr(command, "inputs", ()))
            manager.forget(channel)
            raise ChainAppError(f"cannot open: {exc}", {"error": "ChannelError"}) from exc
        self._claim(channel)
        with trio.move_on_after(COMMAND_TIMEOUT):
            while channel.phase not in (Phase.AWAIT_READY, Phase.NORMAL, Phase.FAILED, Phase.CLOSED):
                if channel.key in self._funding_errors:
                    break
                await channel.changed.wait()
        self._funding_feerate.pop(channel.key, None)
        if channel.phase is not Phase.AWAIT_READY and channel.phase is not Phase.NORMAL:
            reason = self._funding_errors.pop(channel.key, None) or channel.core.state.failure or f"no funding_signed in {COMMAND_TIMEOUT:g} s"
            raise ChainAppError(f"the channel did not open: {reason}", {"error": "ChannelError", "state": channel.phase.value})
        result = describe(channel)
        result["funding_txid"] = channel.core.state.funding_outpoint.txid_hex  # type: ignore[union-attr]
        return result

    async def listchannels(self, peer_id: str | None = None) -> dict[str, Any]:
        """Every channel (with PEER_ID only): state, capacity, balances, HTLCs, short channel id,
        funding outpoint, and ``peer_alias``: the alias of the peer's ``node_announcement`` in the
        gossip (None: no gossip app, or no announcement of the peer known)."""
        shown = [c for c in self._manager().channels.values() if c.phase is not Phase.NEW]
        if peer_id:
            shown = [c for c in shown if c.peer_id.hex() == peer_id.lower()]
        aliases = await self._peer_aliases({c.peer_id for c in shown})
        return {"channels": [self._describe(c) | {"peer_alias": aliases.get(c.peer_id)} for c in shown]}

    def _onchain(self) -> OnchainWatch:
        if self.onchain is None:
            raise AppError("the channels app is not running")
        return self.onchain

    def _describe(self, channel: ManagedChannel) -> dict[str, Any]:
        result = describe(channel)
        if self.onchain is not None:
            result["onchain"] = self.onchain.status(channel)
        result["commitment_waits_for_funding"] = channel.key in self._commitment_unfunded
        return result

    async def closechannel(self, channel: str, feerate: int | None = None, destination: str | None = None,
                           force: bool = False) -> dict[str, Any]:  # fmt: skip
        """Close CHANNEL cooperatively (shutdown, then closing_signed); returns the closing txid once both signed.
        FORCE: go on chain with our latest commitment at once (the monitor sweeps after the delays;
        ``commitment_waits_for_funding``: kept back until the chain sees the unconfirmed funding)."""
        target = self._channel(channel)
        if force:
            result = await self._onchain().force_close_command(self._manager(), target, self._describe(target))
            return result | {"commitment_waits_for_funding": target.key in self._commitment_unfunded}
        if feerate is None:
            try:
                feerate = max(await self.chain.source.estimate_feerate(), 253)
            except ChainError:
                feerate = 253
        script = await self._close_script(destination)
        if target.core.state.config.upfront_shutdown_script:
            script = target.core.state.config.upfront_shutdown_script
        try:
            await self._manager().submit(target, CloseChannel(script, feerate))
        except LocalMisuse as exc:
            raise ChainAppError(f"cannot close: {exc}", {"error": "ChannelError", "state": target.phase.value}) from exc
        with trio.move_on_after(COMMAND_TIMEOUT):
            while target.phase not in (Phase.CLOSED, Phase.FAILED):
                await target.changed.wait()
        result = describe(target)
        if target.key in self._closing_txids:
            result["closing_txid"] = self._closing_txids[target.key]
        return result
