"""The channel app's dealings with the chain and the wallet: following the chain (block heights and
funding depths to the channels, then the short channel id; watches on funding outputs, their
spends), funding the funder's channels from the wallet (an open it cannot fund is abandoned),
freeing the coins of a funding never broadcast, broadcasting (a close both signed, again after a
crash before its broadcast), warning of a
zero-conf channel's funding left unconfirmed and failing a channel whose unconfirmed funding was
double-spent (:mod:`.double_spend`; the HTLCs we offered on it fail back upstream). The fundee of a
single-funded zero-conf channel looks its funding transaction up at the chain source (once the
channel is ready, at start and at each block until found) to see its inputs too, and before it
takes a peer's ``error`` on such a channel it reads the last blocks (the funder may have seen the
double spend first: failed for it, the channel broadcasts no commitment that could never confirm).
A channel failed while its funding is unconfirmed and its transaction unknown to us and to the
chain source (the fundee's, the funder never broadcast it) keeps its commitment back (it would be
refused: it spends an output that does not exist); at each block the source is asked again, and
once the funding shows (waiting or mined) the commitment goes out; at start the failed channels
are looked at again (their monitors broadcast nothing meanwhile).
A mixin of :class:`~lnpmsg.channels.app.ChannelsApp`.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from lnpmsg.app import AppError
from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import OutputSpent
from lnpmsg.wallet.errors import WalletError
from lnpmsg.wire import Error

from .dualfund_rbf import candidate_outpoints, funding_mined
from .double_spend import FundingDoubleSpent, FundingFound, conflicting_spend, double_spent, funding_wanted, unconfirmed_funding
from .errors import LocalMisuse
from .htlc_hook import _committed_adds
from .monitor.events import HtlcResolved
from .inputs import BlockHeight, FundingDepth, FundingNeeded, FundingTransaction
from .manager import ChannelsStopped, ManagedChannel, format_scid
from .ready import is_zeroconf
from .state import Phase

__all__ = ["ChainSide"]

log = logging.getLogger("lnpmsg.channels.app")

#: blocks a zero-conf channel's funding may stay unconfirmed before the log warns (then every day of blocks)
ZEROCONF_WARN_BLOCKS = 6
#: at start, the last blocks looked at for a double spend of an unconfirmed funding (mined while the node was down)
DOUBLE_SPEND_LOOKBACK = 144
#: blocks read for a double spend before a peer's ``error`` on a channel whose funding is unconfirmed
PEER_ERROR_LOOKBACK = 6
#: seconds between the looks for a just-ready zero-conf channel's funding (the funder broadcasts it
#: after sending channel_ready: it may not have reached the source yet)
FIND_FUNDING_DELAYS = (0.0, 0.2, 0.5, 1.0, 2.0)


class ChainSide:
    """The chain followed, funding, abandoned opens and broadcasts; the app supplies ``chain``, ``_manager``, ``_send``,
    ``_submit``, ``_publish``, ``spawn``, ``write_backup``, ``htlcs``,
    ``_funding_feerate`` (key -> the feerate asked) and ``_funding_errors`` (key -> why an open was abandoned)."""

    chain: Any
    onchain: Any
    _manager: Any
    _send: Any
    _funding_feerate: dict[str, int | None]
    _funding_errors: dict[str, str]
    _unconfirmed_since: dict[str, int]
    #: channels whose funding the source did not have (logged once)
    _funding_unseen: set[str]
    #: failed channels whose commitment waits for its funding to show at the chain source
    _commitment_unfunded: set[str]
    _submit: Any
    _publish: Any
    spawn: Any
    write_backup: Any
    htlcs: Any

    async def _broadcast(self, raw_tx: bytes, what: str) -> None:
        try:
            txid = await self.chain.source.broadcast(raw_tx)
            log.info("channels: broadcast the %s transaction %s", what, txid[::-1].hex())
        except ChainError as exc:
            log.warning("channels: the chain refused the %s transaction: %s", what, exc)

    async def _broadcast_commitment(self, channel: ManagedChannel, raw_tx: bytes) -> None:
        """Our latest commitment of a failed channel on chain: its monitor broadcasts it (and its anchor
        child) and sweeps; without a monitor it goes out as it is."""
        if self.onchain is None or not await self.onchain.force_close(channel):
            await self._broadcast(raw_tx, "commitment")

    async def _funding_unknown(self, channel: ManagedChannel) -> bool:
        """The funding is unconfirmed, we lack its transaction and the chain source has no trace of it
        (not waiting, not mined, its output not seen): a commitment spending it would be refused."""
        s = channel.core.state
        if s.short_channel_id or s.funding_tx or s.funding_outpoint is None:
            return False
        source = self.chain.source
        try:
            return await source.find_transaction(s.funding_outpoint.txid) is None and await source.get_txout(s.funding_outpoint) is None
        except ChainError as exc:
            log.debug("channels: cannot look up the funding of %s: %s", channel.channel_id.hex(), exc)
            return False  # (unknown whether it is known: the broadcast tells)

    async def _commitment_failed(self, channel: ManagedChannel, raw_tx: bytes) -> bool:
        """A failed channel's commitment: broadcast, or kept back while its funding is unknown to the chain
        (False then)."""
        if not await self._funding_unknown(channel):
            await self._broadcast_commitment(channel, raw_tx)
            return True
        self._commitment_unfunded.add(channel.key)
        outpoint = channel.core.state.funding_outpoint
        log.warning("channels: not broadcasting the commitment of %s: its funding %s is unconfirmed and unknown to the "
                    "chain source (nothing to spend); the channel is kept, and the commitment goes out if the funding "
                    "appears", channel.channel_id.hex(), outpoint.txid_hex if outpoint else "-")  # fmt: skip
        return False

    async def _hold_unfunded_commitments(self) -> None:
        """At start: the failed channels whose commitment still waits for its funding to show."""
        for channel in list(self._manager().channels.values()):
            s = channel.core.state
            if channel.phase is not Phase.FAILED or s.short_channel_id or s.funding_tx or channel.core.latest_commitment_tx() is None:
                continue
            if await self._funding_unknown(channel):
                self._commitment_unfunded.add(channel.key)
                log.warning("channels: the commitment of the failed channel %s still waits for its funding %s to appear at "
                            "the chain source", channel.channel_id.hex(), s.funding_outpoint.txid_hex if s.funding_outpoint else "-")  # fmt: skip

    async def _broadcast_funded_commitments(self) -> None:
        """The commitments kept back for a funding unknown to the chain: those whose funding now shows go out."""
        for key in sorted(self._commitment_unfunded):
            channel = self._manager().channels.get(key)
            commitment = channel.core.latest_commitment_tx() if channel is not None and channel.phase is Phase.FAILED else None
            status = self.onchain.status(channel) if self.onchain is not None and channel is not None else None
            if commitment is None or (status is not None and status["state"] != "open"):
                # (its monitor saw the funding spent: the chain had it after all, which a source without a
                # transaction index cannot tell once the funding is mined and spent)
                self._commitment_unfunded.discard(key)
            elif not await self._funding_unknown(channel):
                self._commitment_unfunded.discard(key)
                log.warning("channels: the funding of the failed channel %s appeared: broadcasting our commitment %s",
                            channel.channel_id.hex(), Tx.parse(commitment).txid_hex)  # fmt: skip
                await self._broadcast_commitment(channel, commitment)

    async def _rebroadcast_closing(self, channel: ManagedChannel) -> None:
        """A close both signed whose funding is still unspent (a crash came before the broadcast): again."""
        s = channel.core.state
        if s.funding_outpoint is None or s.closing_tx is None:
            return
        try:
            unspent = await self.chain.source.get_txout(s.funding_outpoint)
        except ChainError:
            return
        if unspent is not None:
            await self._broadcast(s.closing_tx, "closing")

    def _release_funding(self, raw_tx: bytes) -> None:
        """Free the wallet's coins held for a funding that will never be broadcast."""
        try:
            freed = self.chain.wallet.release(Tx.parse(raw_tx).txid)
        except (AttributeError, WalletError) as exc:  # no wallet (yet): a later releasecoins frees them
            log.warning("channels: cannot release the coins of an abandoned funding: %s", exc)
            return
        log.info("channels: released %d coin(s) of a funding never broadcast", freed)

    async def _fund(self, channel: ManagedChannel, needed: FundingNeeded) -> None:
        """The wallet builds the funding transaction (its coins stay reserved); the core signs on.

        Without the coins the open is abandoned: the peer gets an ``error`` for the temporary
        channel id and the channel (nothing signed yet) is forgotten.
        """
        try:
            funded = await self.chain.wallet.fund_output(needed.script_pubkey, needed.amount_sat, self._funding_feerate.get(channel.key))
        except WalletError as exc:
            await self._abandon(channel, f"cannot fund the channel: {exc}")
            return
        try:
            await self._manager().submit(channel, FundingTransaction(funded.tx.raw))
        except ChannelsStopped:
            return  # the node stops (maybe mid-job): the channel stays as stored; a restart goes on from there
        except LocalMisuse as exc:
            self.chain.wallet.release(funded.tx.txid)
            await self._abandon(channel, f"cannot fund the channel: {exc}")

    async def _abandon(self, channel: ManagedChannel, reason: str) -> None:
        log.warning("channels: abandoning the open of %s: %s", channel.channel_id.hex(), reason)
        self._funding_errors[channel.key] = reason
        try:
            await self._send(channel.peer_id, Error(channel_id=channel.core.state.temporary_channel_id, data=reason.encode()))
        except AppError:  # the peer is gone: it forgets the unsigned channel on its own
            pass
        self._manager().forget(channel)

    def _warn_unconfirmed(self, channel: ManagedChannel, height: int) -> None:
        """A zero-conf channel in use whose funding does not confirm: its balance is only as good as
        the funder's word (a double-spent funding leaves nothing to claim). Said loudly in the log;
        the channel stays (a force close or a cooperative one is the operator's decision)."""
        s = channel.core.state
        if not (is_zeroconf(s) and s.ready_sent and not s.short_channel_id):
            return
        since = self._unconfirmed_since.setdefault(channel.key, height)
        waited = height - since
        if waited == ZEROCONF_WARN_BLOCKS or (waited > 0 and waited % 144 == 0):
            log.warning("channels: the funding %s of the zero-conf channel %s is still unconfirmed after %d blocks: if it was "
                        "double-spent, what the channel holds is not real; stop using it (closechannel)",
                        s.funding_outpoint.txid_hex if s.funding_outpoint else "-", channel.channel_id.hex(), waited)  # fmt: skip

    async def _find_funding(self, channel: ManagedChannel, delays: tuple[float, ...] = (0.0,)) -> None:
        """Look up the funding transaction of a zero-conf channel we did not fund (its inputs show a double
        spend), trying after each of ``delays``; not found, it is said once (the peer's ``error`` tells then)."""
        for delay in delays:
            if not funding_wanted(channel.core.state):
                return
            await trio.sleep(delay)
            txid = channel.core.state.funding_outpoint.txid  # type: ignore[union-attr]
            try:
                raw = await self.chain.source.find_transaction(txid)
            except ChainError as exc:
                log.debug("channels: cannot look up the funding of %s: %s", channel.channel_id.hex(), exc)
                raw = None
            if raw is not None:
                await self._submit(channel, FundingFound(raw))
                self._funding_unseen.discard(channel.key)
                log.info("channels: found the funding %s of the zero-conf channel %s: a double spend of its inputs "
                         "fails the channel", txid[::-1].hex(), channel.channel_id.hex())  # fmt: skip
                return
        if channel.key not in self._funding_unseen:
            self._funding_unseen.add(channel.key)
            log.info("channels: the chain source does not have the funding %s of the zero-conf channel %s (yet): a double "
                     "spend of it is known only from the peer", txid[::-1].hex(), channel.channel_id.hex())  # fmt: skip

    async def _before_peer_error(self, channel: ManagedChannel) -> None:
        """A peer's ``error`` on a channel whose funding is unconfirmed may come from a double spend we have
        not read yet: the last blocks first (failed for it, no commitment is broadcast)."""
        if unconfirmed_funding(channel.core.state) is None:
            return
        try:
            tip = (await self.chain.source.tip()).height
        except ChainError:
            return
        for height in range(max(1, tip - PEER_ERROR_LOOKBACK + 1), tip + 1):
            if not await self._check_double_spends(height):
                return

    async def _check_double_spends(self, height: int) -> bool:
        """Fail each channel whose unconfirmed funding (that we have) an input of which the block at
        ``height`` spends in another transaction: the funding can never confirm."""
        for channel in [c for c in self._manager().channels.values() if funding_wanted(c.core.state)]:
            await self._find_funding(channel)
        waiting = [(c, f) for c in list(self._manager().channels.values()) if (f := unconfirmed_funding(c.core.state)) is not None]
        if not waiting:
            return True
        try:
            block = Block.parse(await self.chain.source.block_at(height))
        except ChainError as exc:
            log.warning("channels: cannot read block %d for double-spent fundings: %s", height, exc)
            return False
        for channel, funding in waiting:
            conflict = conflicting_spend(funding, block.txs)
            if conflict is None:
                continue
            # (refused if it failed meanwhile; another version of a bumped funding is adopted instead)
            await self._submit(channel, FundingDoubleSpent(conflict.txid, height))
            s = channel.core.state
            if not double_spent(s):
                continue
            log.warning("channels: the funding %s of %s was double-spent by %s in block %d: failing the channel (no "
                        "commitment can be broadcast; the HTLCs we offered on it fail back)", funding.txid_hex,
                        channel.channel_id.hex(), conflict.txid_hex, height)  # fmt: skip
            if s.funder or s.dual:
                self._release_funding(funding.raw)  # its other coins (if any) are ours to spend again
            self._fail_back_double_spent(channel)
        return True

    async def _check_double_spends_at_start(self) -> None:
        """The blocks mined while the node was down, up to :data:`DOUBLE_SPEND_LOOKBACK` (only with an
        unconfirmed funding that we have: each block is read)."""
        for channel in [c for c in self._manager().channels.values() if funding_wanted(c.core.state)]:
            await self._find_funding(channel)
        if not any(unconfirmed_funding(c.core.state) for c in self._manager().channels.values()):
            return
        try:
            tip = (await self.chain.source.tip()).height
        except ChainError as exc:
            log.warning("channels: cannot read the chain tip for double-spent fundings: %s", exc)
            return
        for height in range(max(1, tip - DOUBLE_SPEND_LOOKBACK + 1), tip + 1):
            if not await self._check_double_spends(height):
                return  # (a source that serves no blocks: once logged)

    def _fail_back_double_spent(self, channel: ManagedChannel) -> None:
        """The HTLCs we offered on a channel whose funding was double-spent end as if timed out on chain
        (nothing ever resolves them: no commitment can confirm): a forward's incoming HTLC fails back
        at once. Also at start (the handler accepts a resolution it has already acted on)."""
        if not double_spent(channel.core.state):
            return
        for htlc_id, add in sorted(_committed_adds(channel, offered=True).items()):
            self.htlcs.dispatch_on_chain(channel, HtlcResolved(htlc_id, True, add.payment_hash, None, b"", 0))

    # ------------------------------------------------------------ following the chain (the app's serve)

    async def _add_watches(self, sub: Any, watch_out: trio.MemoryReceiveChannel[ManagedChannel]) -> None:
        async for channel in watch_out:
            await self._watch(sub, channel)

    async def _watch(self, sub: Any, channel: ManagedChannel) -> None:
        for outpoint in candidate_outpoints(channel.core) if channel.phase not in (Phase.CLOSED, Phase.FAILED) else ():
            await sub.watch_outpoint(outpoint)  # (every version of a bumped funding: any may confirm)

    async def _on_block(self, height: int) -> None:
        manager = self._manager()
        for channel in list(manager.channels.values()):
            if channel.phase in (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING):
                await self._submit(channel, BlockHeight(height))
                self._warn_unconfirmed(channel, height)
        await self._check_candidates()  # (before: a version of a bumped funding spends the others' inputs)
        await self._check_double_spends(height)
        await self._check_depths()
        if self._commitment_unfunded:
            await self._broadcast_funded_commitments()
        await self._check_splice_depths(height)  # type: ignore[attr-defined]

    async def _depth_and_scid(self, channel: ManagedChannel, outpoint: OutPoint) -> tuple[int, int] | None:
        """How deep ``outpoint``'s transaction is and its short channel id ((0, 0): unconfirmed; None: not
        known, the tip moved)."""
        source = self.chain.source
        try:
            info = await source.get_txout(outpoint)
            if info is None or info.confirmations <= 0:
                return 0, 0
            tip = await source.tip()
            height = tip.height - info.confirmations + 1
            block = Block.parse(await source.block_at(height))
        except ChainError as exc:
            log.warning("channels: cannot read the funding of %s: %s", channel.channel_id.hex(), exc)
            return None
        index = next((i for i, tx in enumerate(block.txs) if tx.txid == outpoint.txid), None)
        if index is None:
            return None  # the tip moved under us: the next block tells again
        return info.confirmations, (height << 40) | (index << 16) | outpoint.vout

    async def _check_depths(self) -> None:
        """Tell each channel waiting for its funding how deep it is (with its short channel id)."""
        await self._check_candidates()  # (a bumped funding: the version that confirmed first)
        for channel in list(self._manager().channels.values()):
            s = channel.core.state
            # waiting for channel_ready's depth, or ready before its funding confirmed (zero-conf)
            unconfirmed = s.ready_sent and not s.short_channel_id and channel.phase in (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN)
            if not (channel.phase is Phase.AWAIT_READY and not s.ready_sent or unconfirmed) or s.funding_outpoint is None:
                continue
            found = await self._depth_and_scid(channel, s.funding_outpoint)
            if found is None:
                continue
            depth, scid = found
            if depth == 0 and not funding_mined(s):
                continue  # (depth 0 tells only a funding seen in a block that a reorganization took out)
            await self._submit(channel, FundingDepth(depth, scid))
            if unconfirmed and channel.core.state.short_channel_id:
                self._unconfirmed_since.pop(channel.key, None)
                log.info("channels: the zero-conf channel %s confirmed at %s", channel.channel_id.hex(), format_scid(scid))
                self._publish("channel.confirmed", channel, short_channel_id=format_scid(scid))  # (a public one: announce it)
                self.spawn(self.write_backup)  # (a restore reads the chain from the short channel id)

    def _on_funding_spent(self, event: OutputSpent) -> None:
        for channel in self._manager().channels.values():
            if channel.core.state.funding_outpoint == event.outpoint:
                self._publish("channel.spent", channel, txid=event.spending_tx.txid_hex)
                log.info("channels: the funding of %s was spent by %s", channel.channel_id.hex(), event.spending_tx.txid_hex)
