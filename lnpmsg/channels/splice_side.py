"""The channel app's side of channel splicing (``option_splice``, bits 62/63; :mod:`.splice`).

The app offers the optional bit 63 and answers a peer's ``splice_init`` (contributing nothing).
``splice`` [channel, amount_sat, feerate?, address?] splices a channel of ours: a positive
AMOUNT_SAT comes in from the wallet (its coins picked and reserved as for a dual-funded open),
a negative one goes out to ADDRESS (default: a new address of the wallet), our balance paying
the splice transaction's fee. The call quiesces the channel (``stfu``), negotiates the splice
and returns once both signed it and it is broadcast; at each block the splice transaction's
depth goes to the channel, which sends ``splice_locked`` at its minimum depth and switches to
the new funding once the peer sent its own (``channel.spliced``): the channel monitor then
follows the new funding, the backup names it. A splice that ends before our signatures left
frees the coins (``channel.splice_aborted``).

``bumpsplice`` [channel, feerate?] bumps the fee of the pending splice (:mod:`.splice_rbf`): the
channel is quiesced again, a new version negotiated and signed, broadcast (it replaces the last in
mempools); every version may confirm until one does, the channel then locks on that one and the
others' coins are freed (``channel.splice_versions_dropped``). A mixin of
:class:`~lnpmsg.channels.app.ChannelsApp`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.app import ChainAppError
from lnpmsg.wallet.errors import WalletError
from lnpmsg.wallet.spend import dust_limit

from . import splice_sign
from .errors import LocalMisuse, StoreWriteFailed
from .inputs import Event
from .interactive_rules import FUNDING_PLACEHOLDER
from .interactive_parts import OwnInput, OwnOutput, contribution_fee
from .manager import ChannelsStopped, ManagedChannel, describe, format_scid
from .quiesce import Quiesce, is_quiescent, local_initiator
from .quiesce_side import QUIESCE_BITS
from .dualfund_rbf import min_feerate
from .splice import SPLICE_BITS, SpliceAborted, SpliceCommand, SpliceDepth, Spliced, SpliceSession, check_command
from .splice_forgotten import FORGOTTEN_SPENT_DEPTH, ForgottenSpliceMined, SpliceInputSpent, forgotten_inputs
from .splice_rbf import SpliceBump, SpliceTipHeight, SpliceVersionsDropped, check_bump, signed_versions, status
from .splice_watch import confirmed_unlocked_splice
from .state import Phase

__all__ = ["SPLICE_BITS", "SpliceSide"]

log = logging.getLogger("lnpmsg.channels.app")

#: at start, the last blocks read for a pending splice's transaction
SPLICE_LOOKBACK = 144


class SpliceSide:
    """``splice`` and the splice's chain work; the app supplies ``chain``, ``node``, ``_manager``,
    ``_channel``, ``_contribution``, ``_release_inputs``, ``_publish``, ``_submit``, ``_close_script``,
    ``_broadcast``, ``_monitor_follows_funding``, ``write_backup``, ``spawn``, ``disconnect_peer``, ``_watch_in`` and ``_after_reestablish``."""

    chain: Any
    node: Any
    _manager: Any
    _channel: Any
    _contribution: Any
    _release_inputs: Any
    _publish: Any
    _submit: Any
    _close_script: Any
    _broadcast: Any
    _monitor_follows_funding: Any
    write_backup: Any
    spawn: Any
    disconnect_peer: Any
    _watch_in: Any
    _after_reestablish: Any
    #: why a channel's last splice ended early (``splice`` reports it)
    _splice_errors: dict[str, str]
    #: splice txid -> (height, block hash, index in the block) where it was mined
    _splice_blocks: dict[bytes, tuple[int, bytes, int]]
    #: an input of a splice the peer forgot -> (height, block hash, txid) of the transaction that spent it
    _forgotten_spends: dict[OutPoint, tuple[int, bytes, bytes]]
    #: the inputs of splices the peer forgot whose spend was looked for in the last blocks already
    _forgotten_read: set[OutPoint]

    async def splice(self, channel: str, amount_sat: int, feerate: int | None = None, address: str | None = None) -> dict[str, Any]:
        """Splice CHANNEL (BOLT 2): AMOUNT_SAT > 0 adds that much from the wallet to our balance (and the
        capacity), AMOUNT_SAT < 0 sends that much from our balance to ADDRESS (default: a new wallet address),
        our balance also paying the fee. FEERATE in sat per vbyte (default: the chain's estimate). Returns
        once both signed the splice transaction and it is broadcast; the channel switches to the new
        funding after its confirmations (``listchannels`` shows the pending splice until then)."""
        from .app import COMMAND_TIMEOUT

        target = self._channel(channel)
        if not isinstance(amount_sat, int) or isinstance(amount_sat, bool) or amount_sat == 0:
            raise ParamsError(f"amount_sat must be a non-zero whole number (negative: a splice-out), got {amount_sat!r}")
        if feerate is not None and (not isinstance(feerate, int) or isinstance(feerate, bool) or feerate <= 0):
            raise ParamsError(f"feerate must be a positive whole number of sat/vB, got {feerate!r}")
        if address is not None and amount_sat > 0:
            raise ParamsError("an address is only for a splice-out (a negative amount)")
        peer = self.node.peers.get(target.peer_id)
        remote = peer.session.remote_features if peer is not None else None
        if remote is None:
            raise ChainAppError("cannot splice: the peer is not connected", {"error": "ChannelError"})
        if not any(remote.has(b) for b in SPLICE_BITS) or not any(remote.has(b) for b in QUIESCE_BITS):
            raise ChainAppError("cannot splice: the peer does not offer option_splice and option_quiesce", {"error": "ChannelError"})
        await self._after_reestablish(target, COMMAND_TIMEOUT)
        s = target.core.state
        if target.phase is not Phase.NORMAL or s.funding_outpoint is None:
            raise ChainAppError(f"cannot splice a channel in state {target.phase.value}", {"error": "ChannelError"})
        if isinstance(s.splice, SpliceSession):
            raise ChainAppError("cannot splice: another splice is pending", {"error": "ChannelError"})
        per_kw = await self._splice_feerate(feerate)
        inputs, outputs, contribution = await self._splice_contribution(amount_sat, per_kw, address)
        try:
            tip = self.chain.wallet.tip
            height = tip.height if tip is not None else None
            command = SpliceCommand(contribution, per_kw, height or 0, inputs, outputs, os.urandom(32), True, height)
            check_command(target.core, command)  # (before the channel is quiesced for nothing)
            await self._quiesce_for_splice(target, COMMAND_TIMEOUT)
            self._splice_errors.pop(target.key, None)
            try:
                await self._manager().submit(target, command)
            except LocalMisuse as exc:  # (what changed while the channel quiesced, e.g. our balance)
                self._end_quiescence_now(target, f"the splice was refused once the channel was quiescent: {exc}")
                raise
        except (LocalMisuse, StoreWriteFailed, ChannelsStopped) as exc:
            self._release_inputs(inputs)
            raise ChainAppError(f"cannot splice: {exc}", {"error": "ChannelError", "state": target.phase.value}) from exc
        except BaseException:
            self._release_inputs(inputs)
            raise
        await self._await_signed(target, lambda: self._splice_signed(target), "the splice")
        sp = target.core.state.splice
        assert isinstance(sp, SpliceSession) and sp.outpoint is not None
        result = describe(target)
        result.update(splice_txid=sp.outpoint.txid_hex, contribution_sat=contribution, feerate_per_kw=per_kw,
                      new_capacity_sat=result["splice"]["new_capacity_sat"])  # fmt: skip
        return result

    async def bumpsplice(self, channel: str, feerate: int | None = None) -> dict[str, Any]:
        """Bump the fee of CHANNEL's pending splice (BOLT 2 tx_init_rbf): FEERATE in sat per vbyte (default:
        the least the peer must take, 25/24 of the last version's rate, or the chain's estimate if higher).
        Returns once both signed the new version and it is broadcast; every version may confirm until one
        does (the channel locks on that one)."""
        from .app import COMMAND_TIMEOUT

        target = self._channel(channel)
        if feerate is not None and (not isinstance(feerate, int) or isinstance(feerate, bool) or feerate <= 0):
            raise ParamsError(f"feerate must be a positive whole number of sat/vB, got {feerate!r}")
        s = target.core.state
        sp = s.splice
        if not isinstance(sp, SpliceSession):
            raise ChainAppError("cannot bump the splice: no splice is pending", {"error": "ChannelError"})
        peer = self.node.peers.get(target.peer_id)
        if peer is None or peer.session.remote_features is None:
            raise ChainAppError("cannot bump the splice: the peer is not connected", {"error": "ChannelError"})
        await self._after_reestablish(target, COMMAND_TIMEOUT)
        sp = target.core.state.splice
        if not isinstance(sp, SpliceSession):
            raise ChainAppError("cannot bump the splice: no splice is pending", {"error": "ChannelError"})
        per_kw = feerate * 250 if feerate is not None else max(min_feerate(sp.feerate_per_kw), await self._splice_feerate(None))
        tip = self.chain.wallet.tip
        bump = SpliceBump(per_kw, tip.height if tip is not None else 0, tip.height if tip is not None else None)
        before = sp.outpoint
        try:
            check_bump(target.core, bump.feerate_per_kw, bump.locktime, bump.height)  # (before the channel is quiesced for nothing)
            await self._quiesce_for_splice(target, COMMAND_TIMEOUT)
            self._splice_errors.pop(target.key, None)
            try:
                await self._manager().submit(target, bump)
            except LocalMisuse as exc:
                self._end_quiescence_now(target, f"the bump was refused once the channel was quiescent: {exc}")
                raise
        except (LocalMisuse, StoreWriteFailed, ChannelsStopped) as exc:
            why = str(exc) if str(exc).startswith("cannot bump") else f"cannot bump the splice: {exc}"
            raise ChainAppError(why, {"error": "ChannelError", "state": target.phase.value}) from exc

        def done() -> bool:
            now = target.core.state.splice
            return isinstance(now, SpliceSession) and now.signed and now.outpoint != before

        await self._await_signed(target, done, "the bump")
        sp = target.core.state.splice
        assert isinstance(sp, SpliceSession) and sp.outpoint is not None
        result = describe(target)
        result.update(splice_txid=sp.outpoint.txid_hex, feerate_per_kw=per_kw, new_capacity_sat=result["splice"]["new_capacity_sat"],
                      previous_splice_txids=[v["txid"] for v in status(sp)])  # fmt: skip
        return result

    async def abandonsplice(self, channel: str, feerate: int | None = None) -> dict[str, Any]:
        """End CHANNEL's pending splice that the peer forgot after our tx_signatures left (``listchannels``
        shows ``peer_forgot``): our coins in it are spent back to the wallet, at FEERATE sat per vbyte
        (default: the chain's estimate), which double-spends the splice. Once that spend is 6 blocks deep
        the splice can never confirm and ends (``channel.splice_aborted``): the channel may splice again.
        Returns the channel with ``abandon_txid``, ``spent`` (our coins) and ``fee_sat``."""
        from .splice_forgotten import abandon_spend

        target = self._channel(channel)
        if feerate is not None and (not isinstance(feerate, int) or isinstance(feerate, bool) or feerate <= 0):
            raise ParamsError(f"feerate must be a positive whole number of sat/vB, got {feerate!r}")
        sp = target.core.state.splice
        if not isinstance(sp, SpliceSession):
            raise ChainAppError("cannot abandon the splice: no splice is pending", {"error": "ChannelError"})
        per_kw = await self._splice_feerate(feerate)
        wallet = self.chain.wallet
        try:
            spend = abandon_spend(sp, await self._close_script(None), per_kw)
            witnesses = wallet.sign_inputs(spend, range(len(spend.inputs)))
        except (LocalMisuse, WalletError) as exc:
            raise ChainAppError(f"cannot abandon the splice: {exc}", {"error": "ChannelError"}) from exc
        signed = replace(spend, inputs=tuple(replace(i, witness=w) for i, w in zip(spend.inputs, witnesses, strict=True)))
        try:
            await self.chain.source.broadcast(signed.raw)
        except ChainError as exc:
            raise ChainAppError(f"cannot abandon the splice: the chain refused the spend of our coins: {exc}", {"error": "ChainError"}) from exc
        log.info("channels: %s: our coins in the splice %s the peer forgot are spent back to the wallet by %s: the splice ends "
                 "once it is %d deep", target.channel_id.hex(), sp.outpoint.txid_hex if sp.outpoint else "-", signed.txid_hex,
                 FORGOTTEN_SPENT_DEPTH)  # fmt: skip
        spent = sum(Tx.parse(i.prevtx).outputs[i.vout].amount_sat for i in sp.inputs if i.outpoint in {t.prevout for t in spend.inputs})
        result = describe(target)
        result.update(abandon_txid=signed.txid_hex, spent=[str(t.prevout) for t in spend.inputs],
                      fee_sat=spent - spend.outputs[0].amount_sat, ends_at_depth=FORGOTTEN_SPENT_DEPTH)  # fmt: skip
        return result

    async def _await_signed(self, target: ManagedChannel, done: Callable[[], bool], what: str) -> None:
        """Wait (at most the command timeout) until ``done()``: both signed the splice's new version.
        Raises with the reason when the splice ended, failed or timed out first."""
        from .app import COMMAND_TIMEOUT

        with trio.move_on_after(COMMAND_TIMEOUT):
            while not done():
                if target.key in self._splice_errors or target.phase is not Phase.NORMAL or not isinstance(target.core.state.splice, SpliceSession):
                    break
                await target.changed.wait()
        if not done():
            reason = self._splice_errors.pop(target.key, None) or target.core.state.failure or f"no signatures in {COMMAND_TIMEOUT:g} s"
            raise ChainAppError(f"{what} did not complete: {reason}", {"error": "ChannelError", "state": target.phase.value})

    @staticmethod
    def _splice_signed(channel: ManagedChannel) -> bool:
        sp = channel.core.state.splice
        return isinstance(sp, SpliceSession) and sp.signed

    async def _splice_feerate(self, feerate: int | None) -> int:
        if feerate is not None:
            return feerate * 250
        try:
            return max(await self.chain.source.estimate_feerate(), 253)
        except ChainError:
            return 2500

    async def _splice_contribution(self, amount_sat: int, per_kw: int, address: str | None) -> tuple[tuple[OwnInput, ...], tuple[OwnOutput, ...], int]:
        """Our coins (splice-in, reserved) or our output (splice-out), and what our balance gains or loses."""
        if amount_sat > 0:
            try:
                inputs, outputs = await self._contribution(amount_sat, per_kw, opener=True, shared=(FUNDING_PLACEHOLDER,))
            except WalletError as exc:
                raise ChainAppError(f"cannot splice in: {exc}", {"error": "ChannelError"}) from exc
            return inputs, outputs, amount_sat
        script = await self._close_script(address)
        if -amount_sat < dust_limit(script):
            raise ParamsError(f"a splice-out of {-amount_sat} sat is below the dust limit of its output")
        fee = contribution_fee([FUNDING_PLACEHOLDER], [FUNDING_PLACEHOLDER, script], per_kw, initiator=True)
        return (), (OwnOutput(-amount_sat, script),), amount_sat - fee

    def _end_quiescence_now(self, target: ManagedChannel, reason: str) -> None:
        """We quiesced the channel for a splice we cannot start: BOLT 2 ends a quiescence only with its
        operation or a disconnection (a ``splice_init`` would commit us to it), so the peer is
        disconnected at once rather than at the quiescence timeout."""
        if not is_quiescent(target.core.state) or not local_initiator(target.core.state):
            return
        log.warning("channels: %s: %s; disconnecting %s to end the quiescence", target.channel_id.hex(), reason, target.peer_id.hex())
        self.disconnect_peer(target.peer_id, f"channel {target.channel_id.hex()[:16]}: {reason}")  # type: ignore[attr-defined]

    async def _quiesce_for_splice(self, target: ManagedChannel, timeout: float) -> None:
        """Quiesce the channel as its initiator (a LocalMisuse if that cannot be)."""
        s = target.core.state
        if not is_quiescent(s):
            await self._manager().submit(target, Quiesce(peer_supports=True))
            self._time_quiescence(target, self.node.peers.get(target.peer_id))  # type: ignore[attr-defined]
        with trio.move_on_after(timeout):
            while not is_quiescent(target.core.state):
                if target.phase is not Phase.NORMAL or target.core.state.quiesce is None:
                    break
                await target.changed.wait()
        if not is_quiescent(target.core.state):
            raise LocalMisuse("the channel did not become quiescent (the peer did not answer stfu)")
        if not local_initiator(target.core.state):
            raise LocalMisuse("the peer initiated the quiescence: it may splice, we may not")

    # ------------------------------------------------------------ events (inside the actor)

    def _splice_event(self, channel: ManagedChannel, event: Event | SpliceAborted | Spliced) -> bool:
        """The splice events; True when handled."""
        if isinstance(event, SpliceAborted):
            stands = "the last version of the splice stands" if isinstance(channel.core.state.splice, SpliceSession) else "the channel stays on its funding"
            log.info("channels: the splice of %s ended: %s (%s)", channel.channel_id.hex(), event.reason, stands)
            self._release_inputs(event.inputs)
            self._splice_errors[channel.key] = event.reason
            self._publish("channel.splice_aborted", channel, reason=event.reason)
            return True
        if isinstance(event, Spliced):
            log.info("channels: %s spliced: now %d sat on %s (%s)", channel.channel_id.hex(), event.capacity_sat,
                     event.funding_outpoint, format_scid(event.short_channel_id))  # fmt: skip
            self._publish("channel.spliced", channel, txid=event.funding_outpoint.txid_hex,
                          short_channel_id=format_scid(event.short_channel_id))  # fmt: skip
            if self._watch_in is not None:
                self._watch_in.send_nowait(channel)  # (the new funding output's spend)
            self.spawn(self._monitor_follows_funding, channel, event.session)
            self.spawn(self.write_backup)  # (the static backup names the funding outpoint)
            return True
        if isinstance(event, SpliceVersionsDropped):
            log.info("channels: %s locked its splice on %s; its other versions are dropped", channel.channel_id.hex(), event.confirmed.txid_hex)
            self._release_inputs(event.inputs)
            self._publish("channel.splice_versions_dropped", channel, txid=event.confirmed.txid_hex)
            return True
        return False

    # ------------------------------------------------------------ the chain

    async def _check_splice_depths(self, height: int | None = None) -> None:
        """Tell each channel with a signed splice how deep the splice transaction is. Its block is found
        by reading the blocks (the new block, or at start the last :data:`SPLICE_LOOKBACK`), not from
        the UTXO set: a commitment on the splice may spend its funding output before the lock."""
        # (a zero-conf splice is locked before it confirms: its depth still gives its real id)
        # (every signed version of a bumped splice: whichever is mined is the one)
        # (a confirmed splice the peer forgot, locked by us: its depth tells when to stop waiting for the peer's lock)
        waiting = [(c, v) for c in list(self._manager().channels.values())
                   if isinstance(sp := c.core.state.splice, SpliceSession)
                   and (not (sp.locked_sent and sp.short_channel_id) or (sp.peer_forgot and c.phase is Phase.NORMAL))
                   for v in signed_versions(c.core) if v.outpoint]  # fmt: skip
        # (a splice the peer forgot: the spend of one of its inputs by another transaction ends it; its
        # own transaction in a block is taken up, :mod:`.splice_forgotten`)
        live = [c for c in list(self._manager().channels.values()) if c.phase not in (Phase.FAILED, Phase.CLOSED)]
        forgotten = [(c, o) for c in live if isinstance(sp := c.core.state.splice, SpliceSession) for o in forgotten_inputs(sp)]
        unsigned = [(c, sp) for c in live if isinstance(sp := c.core.state.splice, SpliceSession) and sp.peer_forgot
                    and not sp.signed and sp.outpoint is not None]  # fmt: skip
        watched = {o for _, o in forgotten} | {sp.outpoint for _, sp in unsigned}  # (what is no longer watched is let go)
        self._forgotten_read &= watched
        self._forgotten_spends = {o: found for o, found in self._forgotten_spends.items() if o in watched}
        if not waiting and not watched:
            return
        source = self.chain.source
        try:
            tip = (await source.tip()).height
            reorged = await self._forget_reorged()
            wanted = ({sp.outpoint.txid for _, sp in (*waiting, *unsigned)} - set(self._splice_blocks))  # type: ignore[union-attr]
            spends = {o for _, o in forgotten} - set(self._forgotten_spends)
            # (a splice or input newly watched may have been mined before: the last blocks are read for it once)
            looked = spends | {sp.outpoint for _, sp in unsigned if sp.outpoint.txid in wanted}  # type: ignore[union-attr]
            fresh, self._forgotten_read = looked - self._forgotten_read, self._forgotten_read | looked
            whole = height is None or fresh or reorged
            heights = range(max(1, tip - SPLICE_LOOKBACK + 1), tip + 1) if whole else [height]
            mined: dict[bytes, bytes] = {}
            for at in heights if wanted or spends else ():
                block_hash = await source.block_hash(at)
                block = Block.parse(await source.block(block_hash)) if block_hash is not None else None
                for index, tx in enumerate(block.txs if block is not None else ()):
                    if tx.txid in wanted:
                        self._splice_blocks[tx.txid] = (at, block_hash, index)
                        mined[tx.txid] = tx.raw
                    for spent in {i.prevout for i in tx.inputs} & spends:
                        self._forgotten_spends[spent] = (at, block_hash, tx.txid)
            waiting += await self._take_up_forgotten(unsigned, mined)
            for channel in {c.key: c for c, _ in waiting}.values() if height is None else ():  # (at start: the blocks mined while stopped)
                await self._submit(channel, SpliceTipHeight(tip))
            for channel, sp in waiting:
                assert sp.outpoint is not None
                found = self._splice_blocks.get(sp.outpoint.txid)
                if found is None:
                    if sp.mined:  # seen in a block that is no longer in the chain: it may be bumped again
                        await self._submit(channel, SpliceDepth(sp.outpoint.txid, 0, 0))
                    continue
                at, _, index = found
                scid = (at << 40) | (index << 16) | sp.outpoint.vout
                await self._submit(channel, SpliceDepth(sp.outpoint.txid, tip - at + 1, scid))
                if confirmed_unlocked_splice(channel.core) is not None:
                    self.spawn(self._monitor_follows_splice, channel)  # (not in the chain's way: it may wait for a catch-up)
            await self._end_forgotten_splices(forgotten, tip)
        except ChainError as exc:
            log.warning("channels: cannot read the chain for splice depths: %s", exc)

    async def _take_up_forgotten(
        self, unsigned: list[tuple[ManagedChannel, SpliceSession]], mined: dict[bytes, bytes]
    ) -> list[tuple[ManagedChannel, SpliceSession]]:
        """The splices the peer forgot whose transaction is in a block (``mined``: txid -> the transaction
        as mined in the blocks read now): taken up as signed
        (:mod:`.splice_forgotten`). Returns them, whose depth then goes to the channel as any splice's."""
        taken = []
        for channel, sp in unsigned:
            assert sp.outpoint is not None
            raw, found = mined.get(sp.outpoint.txid), self._splice_blocks.get(sp.outpoint.txid)
            if raw is None and found is not None:  # (found before, not taken up then: its block is read again)
                block = Block.parse(await self.chain.source.block(found[1]))
                raw = block.txs[found[2]].raw if found[2] < len(block.txs) else None
            if raw is None:
                continue
            log.warning("channels: %s: the splice %s the peer forgot confirmed (it completed it with our signatures): "
                        "taken up", channel.channel_id.hex(), sp.outpoint.txid_hex)  # fmt: skip
            await self._submit(channel, ForgottenSpliceMined(raw))
            now = channel.core.state.splice
            if isinstance(now, SpliceSession) and now.signed and now.outpoint == sp.outpoint:
                self._publish("channel.splice_taken_up", channel, txid=sp.outpoint.txid_hex)
                taken.append((channel, now))
        return taken

    async def _forget_reorged(self) -> bool:
        """Drop the blocks found for splices and for the spends of forgotten splices' inputs that a
        reorganization took out; True when one was (the last blocks are read again: what it held may
        be in the block that replaced it, read already)."""
        source, dropped = self.chain.source, False
        for found in (self._splice_blocks, self._forgotten_spends):
            for key, (at, block_hash, _) in list(found.items()):
                if await source.block_hash(at) != block_hash:
                    del found[key]
                    dropped = True
        return dropped

    async def _end_forgotten_splices(self, forgotten: list[tuple[ManagedChannel, OutPoint]], tip: int) -> None:
        """A splice the peer forgot after our tx_signatures left can never confirm once one of its inputs
        is spent by another transaction: at :data:`~.splice_forgotten.FORGOTTEN_SPENT_DEPTH` the channel forgets it
        too (BOLT 2 keeps it until then), and our coins are free."""
        for channel, outpoint in forgotten:
            found = self._forgotten_spends.get(outpoint)
            sp = channel.core.state.splice
            if found is None or not isinstance(sp, SpliceSession) or sp.outpoint is None:
                continue
            at, block_hash, spender = found
            if await self.chain.source.block_hash(at) != block_hash:
                del self._forgotten_spends[outpoint]  # reorganized away: found again when mined again
            elif spender != sp.outpoint.txid and tip - at + 1 >= FORGOTTEN_SPENT_DEPTH:
                log.info("channels: %s: the splice %s the peer forgot can no longer confirm (%s spent by %s): it ends",
                         channel.channel_id.hex(), sp.outpoint.txid_hex, outpoint, spender[::-1].hex())  # fmt: skip
                await self._submit(channel, SpliceInputSpent(outpoint))

    def _splice_inputs_kept(self) -> set[OutPoint]:
        """Our coins in splices whose signatures left (they may confirm): kept reserved at start."""
        kept: set[OutPoint] = set()
        for channel in self._manager().channels.values():
            sp = channel.core.state.splice
            if isinstance(sp, SpliceSession):  # (every signed version may confirm, an attempt if kept)
                held = (*signed_versions(channel.core), *sp.previous, *((sp,) if splice_sign.kept(channel.core) else ()))
                kept |= {i.outpoint for v in held for i in v.inputs}
        return kept

    async def _monitor_follows_splice(self, channel: ManagedChannel) -> None:
        """We locked the splice at a confirmed depth: it spent the funding, so only a commitment on the
        splice's funding can confirm, whether or not the peer ever sends ``splice_locked``: the
        monitor follows the splice's funding now (:mod:`.splice_watch`)."""
        onchain = getattr(self, "onchain", None)
        sp = confirmed_unlocked_splice(channel.core)
        if onchain is None or sp is None or channel.phase is Phase.CLOSED:
            return
        if await onchain.follow_funding(channel, sp):
            log.info("channels: the splice %s of %s confirmed (locked by us, not yet by the peer): the channel monitor "
                     "follows its funding", sp.outpoint.txid_hex, channel.channel_id.hex())  # type: ignore[union-attr]  # fmt: skip

    async def _follow_spliced_fundings(self) -> None:
        """At start: a spliced channel's monitor follows its current funding (the node may have stopped
        between the lock and the move of the monitor), or the confirmed splice we locked."""
        onchain = getattr(self, "onchain", None)
        for channel in list(self._manager().channels.values()):
            if channel.core.state.splices and onchain is not None and channel.phase is not Phase.CLOSED:
                await onchain.persisted(channel)  # (loads its monitor)
                await self._monitor_follows_funding(channel)
            await self._monitor_follows_splice(channel)

    async def _rebroadcast_splices(self) -> None:
        """At start: each signed splice not locked yet goes out again (a crash may have come before its
        broadcast): of a bumped one, the version paying the highest feerate (it replaces the others)."""
        for channel in list(self._manager().channels.values()):
            sp = channel.core.state.splice
            signed = signed_versions(channel.core)
            if isinstance(sp, SpliceSession) and signed and not sp.locked_sent:
                best = max(signed, key=lambda v: v.feerate_per_kw)
                if best.tx is not None:
                    await self._broadcast(best.tx, "splice")
