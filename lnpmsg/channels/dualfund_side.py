"""The channel app's side of channel establishment v2 (``option_dual_fund``, bits 28/29).

Off unless the node runs with ``--dual-fund``: then the app offers bit 29,
registers the v2 messages, opens v2 channels to peers that offer 28/29
(BOLT 2: once negotiated, ``open_channel`` is not used, and a peer's is
refused), and answers ``open_channel2``. The accepter contributes
``--dual-fund-contribute`` satoshis (default 0, as Core Lightning without a
funder policy) when its wallet has them.

The wallet picks and reserves the coins as if it funded a transaction of its
own (``fund_output`` to a placeholder script of the funding output's size;
that transaction is never broadcast); their previous transactions come from
the chain (the block of each coin) or the wallet's own unconfirmed
transactions. The change is computed again for the interactive rules (each
side pays for what it adds). An open that ends before our signatures left
frees the coins (by outpoint).

The fee bump of a funding (:mod:`.dualfund_rbf`): ``bumpchannelopen`` (the control
call; the feerate in sat/vB), every version checked at each block (the one that
confirmed becomes the funding), and the channel monitor moved to it. A mixin of
:class:`~lnpmsg.channels.app.ChannelsApp`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from lnpmsg.app import AppError
from lnpmsg.bitcoin.block import Block
from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.errors import ChainError
from lnpmsg.node.peer import Peer
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wallet.app import ChainAppError
from lnpmsg.wallet.errors import WalletError
from lnpmsg.wallet.spend import dust_limit
from lnpmsg.wire import CHAIN_HASHES, Error

from .dualfund import (
    AcceptV2Command,
    DualFundSession,
    FundingSignaturesNeeded,
    FundingWitnesses,
    InteractiveAborted,
    OpenV2Command,
)
from .dualfund_rbf import BumpCommand, BumpStarted, CandidatesDropped, FundingCandidateConfirmed, RbfAborted, candidate_outpoints, min_feerate
from .errors import LocalMisuse
from .inputs import ChannelFailed, Event, OpenCommand
from .interactive_rules import FUNDING_PLACEHOLDER
from .interactive_parts import OwnInput, OwnOutput, contribution_fee
from .manager import ChannelsStopped, ManagedChannel
from .reestablish import settling
from .state import Phase
from .messages_v2 import OpenChannel2

__all__ = ["DUAL_FUND_BITS", "DualFundSide"]

log = logging.getLogger("lnpmsg.channels.app")

#: option_dual_fund: we offer the optional bit
DUAL_FUND_BITS = (28, 29)


class DualFundSide:
    """v2 opens for the app; it supplies ``chain``, ``node``, ``policy``, ``config``, ``_manager``,
    ``_send``, ``_features``, ``_claim``, ``_close_script``, ``_publish``, ``spawn`` and ``_funding_errors``."""

    chain: Any
    node: Any
    policy: Any
    config: Any
    _manager: Any
    _send: Any
    _features: Any
    _claim: Any
    _close_script: Any
    _publish: Any
    _submit: Any
    _channel: Any
    onchain: Any
    write_backup: Any
    spawn: Any
    _funding_errors: dict[str, str]

    def dual_fund_negotiated(self, peer: Peer) -> bool:
        """Whether we and ``peer`` both offer option_dual_fund (then a channel opens with v2)."""
        remote = peer.session.remote_features
        return bool(self.policy.dual_fund) and remote is not None and any(remote.has(b) for b in DUAL_FUND_BITS)

    # ------------------------------------------------------------ the wallet's contribution

    async def _prevtx(self, outpoint: OutPoint) -> Tx:
        """The transaction a coin of the wallet comes from (the peer checks our inputs with it)."""
        wallet = self.chain.wallet
        for tx in wallet.held_transactions():
            if tx.txid == outpoint.txid:
                return tx
        height = next((u.height for u in wallet.list_funds() if u.outpoint == outpoint), None)
        if height is None:
            raise WalletError(f"no confirmed coin {outpoint}", code="invalid")
        try:
            block = Block.parse(await self.chain.source.block_at(height))
        except ChainError as exc:
            raise WalletError(f"cannot read the block of {outpoint}: {exc.reason}", code="chain") from None
        for tx in block.txs:
            if tx.txid == outpoint.txid:
                return tx
        raise WalletError(f"coin {outpoint} is not in the block at {height}", code="chain")

    async def _contribution(self, amount_sat: int, feerate: int, *, opener: bool,
                            shared: tuple[bytes, ...] = ()) -> tuple[tuple[OwnInput, ...], tuple[OwnOutput, ...]]:  # fmt: skip
        """Coins (reserved) paying ``amount_sat`` into the funding and our fee for what we add (``shared``: the
        scripts of a splice's shared input, whose weight the splice initiator pays too); WalletError if none."""
        wallet = self.chain.wallet
        funded = await wallet.fund_output(FUNDING_PLACEHOLDER, amount_sat, feerate)
        try:
            inputs, total, scripts = [], 0, []
            for txin in funded.tx.inputs:
                prev = await self._prevtx(txin.prevout)
                inputs.append(OwnInput(prev.raw, txin.prevout.vout))
                total += prev.outputs[txin.prevout.vout].amount_sat
                scripts.append(prev.outputs[txin.prevout.vout].script_pubkey)
            change_script = next((o.script_pubkey for o in funded.tx.outputs if o.script_pubkey != FUNDING_PLACEHOLDER), None)
            if change_script is None:
                change_script = script_for_address(wallet.new_address(), wallet.hrp)
            ours = [FUNDING_PLACEHOLDER] if opener else []  # the opener pays for the funding output's bytes
            change = total - amount_sat - contribution_fee([*shared, *scripts], [*ours, change_script], feerate, initiator=opener)
            if change >= dust_limit(change_script):
                return tuple(inputs), (OwnOutput(change, change_script),)
            if total - amount_sat < contribution_fee([*shared, *scripts], ours, feerate, initiator=opener):
                raise WalletError(f"the coins cannot pay {amount_sat} sat and their fee", code="funds")
            return tuple(inputs), ()  # a change below dust goes to the fee
        except BaseException:
            wallet.release(funded.tx.txid)
            raise

    def _release_inputs(self, inputs: tuple[OwnInput, ...]) -> None:
        """Free the wallet's coins of an open that ended before our signatures left."""
        try:
            wallet = self.chain.wallet
            for own in inputs:
                wallet.release_outpoint(own.outpoint)
        except (AttributeError, AppError, WalletError) as exc:
            log.warning("channels: cannot release the coins of an aborted open: %s", exc)
            return
        if inputs:
            log.info("channels: released %d coin(s) of an aborted dual-funded open", len(inputs))

    def _free_orphan_reservations(self) -> None:
        """At start: coins still held for v2 opens (and splices) that ended while the wallet could not free them
        (the node stopped or crashed first) are freed; those of opens that go on, or whose funding
        we signed (it may confirm), stay held."""
        try:
            wallet = self.chain.wallet
            held = wallet.held_transactions()
        except (AttributeError, AppError):
            return
        kept: set[OutPoint] = self._splice_inputs_kept()  # type: ignore[attr-defined]
        for channel in self._manager().channels.values():
            d = channel.core.state.dual
            if isinstance(d, DualFundSession) and (d.signatures_sent or channel.phase in (Phase.WAIT_ACCEPT2, Phase.INTERACTIVE, Phase.DUAL_SIGNING)):
                kept |= {i.outpoint for i in d.inputs}
        for tx in held:  # the wallet's picks for v2 opens and splices alike: the transactions paying the placeholder
            if any(o.script_pubkey == FUNDING_PLACEHOLDER for o in tx.outputs) and not any(i.prevout in kept for i in tx.inputs):
                freed = wallet.release(tx.txid)
                log.info("channels: freed %d coin(s) held for a dual-funded open or a splice that ended", freed)

    # ------------------------------------------------------------ opening

    async def _open_v2_command(self, peer: Peer, channel: ManagedChannel, v1: OpenCommand, feerate: int | None) -> OpenV2Command:
        """``fundchannel``'s open as v2: the same channel, our coins in (reserved); errors forget the channel."""
        try:
            if not self.dual_fund_negotiated(peer):
                raise ParamsError("v2 needs option_dual_fund on both nodes (--dual-fund, and the peer offering bit 28/29)")
            if v1.push_msat:
                raise ParamsError("a dual-funded channel has no push_msat")
            funding_feerate = feerate or v1.feerate_per_kw
            try:
                inputs, outputs = await self._contribution(v1.funding_sat, funding_feerate, opener=True)
            except WalletError as exc:
                raise ChainAppError(f"cannot fund the channel: {exc}", {"error": "ChannelError"}) from exc
        except BaseException:
            self._manager().forget(channel)
            raise
        tip = self.chain.wallet.tip
        return OpenV2Command(
            v1.chain_hash, v1.funding_sat, funding_feerate, v1.feerate_per_kw,
            tip.height if tip is not None else 0,  # locktime: the tip, against fee sniping (as the wallet does)
            v1.local_features, v1.remote_features, inputs, outputs, os.urandom(32), v1.config, v1.policy,
            v1.channel_flags, v1.type_bits, v1.local_alias, self.node.node_id, peer.node_id,
        )  # fmt: skip

    # ------------------------------------------------------------ accepting

    async def _accept_v2(self, peer: Peer, msg: OpenChannel2) -> None:
        """Answer ``open_channel2``, contributing what the node's option says when the wallet can."""
        if (opening := await self._inbound_channel(peer, msg.temporary_channel_id)) is None:
            return
        channel, local, remote, config = opening
        manager = self._manager()
        chain_hash = CHAIN_HASHES[self.node.config.network]
        amount = self.policy.dual_fund_contribute_sat
        inputs: tuple[OwnInput, ...] = ()
        outputs: tuple[OwnOutput, ...] = ()
        if amount and "require_confirmed_inputs" not in msg.tlvs:
            try:
                inputs, outputs = await self._contribution(amount, msg.funding_feerate_perkw, opener=False)
            except (WalletError, AppError) as exc:
                log.info("channels: contributing nothing to %s's channel: %s", peer.node_id.hex()[:16], exc)
                amount = 0
        else:
            amount = 0
        trusted = peer.node_id in self.policy.zeroconf_peers
        for attempt in (amount, 0) if amount else (0,):
            ins, outs = (inputs, outputs) if attempt else ((), ())
            command = AcceptV2Command(msg, chain_hash, local, remote, attempt, ins, outs, os.urandom(32), config,
                                      self.policy, manager.new_alias(), trusted, self.node.node_id, peer.node_id)  # fmt: skip
            try:
                await manager.submit(channel, command)
                break
            except ChannelsStopped:
                self._release_inputs(inputs)
                return
            except LocalMisuse as exc:  # our contribution cannot be made: accept without it
                log.info("channels: contributing nothing to %s's channel: %s", peer.node_id.hex()[:16], exc)
                self._release_inputs(inputs)
                if not attempt:
                    manager.forget(channel)
                    await self._send(peer.node_id, Error(channel_id=msg.temporary_channel_id, data=str(exc).encode()))
                    return
        self._claim(channel)

    # ------------------------------------------------------------ events (inside the actor)

    def _dual_event(self, channel: ManagedChannel, event: Event) -> bool:
        """The v2 events; True when handled (a failure is also left to the generic handling)."""
        if isinstance(event, FundingSignaturesNeeded):
            self.spawn(self._sign_funding, channel, event)
            return True
        if isinstance(event, InteractiveAborted):
            log.warning("channels: the dual-funded open %s ended: %s", channel.channel_id.hex(), event.reason)
            self._release_inputs(event.inputs)
            self._funding_errors[channel.key] = event.reason
            self._publish("channel.failed", channel, reason=event.reason)
            s = channel.core.state
            if s.local_commit is None and s.remote_commit is None:
                self._manager().forget(channel)  # nothing signed: nothing to keep
            return True
        if isinstance(event, BumpStarted):  # (in the actor's order: an earlier attempt's end came before)
            self._funding_errors.pop(channel.key, None)
            return True
        if isinstance(event, RbfAborted):
            log.info("channels: the fee bump of %s's funding ended: %s (the previous version stands)", channel.channel_id.hex(), event.reason)
            self._release_inputs(event.inputs)
            self._funding_errors[channel.key] = event.reason  # (bumpchannelopen reports it)
            self._publish("channel.bump_aborted", channel, reason=event.reason)
            return True
        if isinstance(event, CandidatesDropped):
            log.info("channels: the funding %s of %s confirmed; its other versions are forgotten", event.confirmed.txid_hex, channel.channel_id.hex())
            self._release_inputs(event.inputs)
            self.spawn(self._monitor_follows_funding, channel)
            self.spawn(self.write_backup)  # (the static backup names the funding outpoint)
            return True
        if isinstance(event, ChannelFailed):
            d = channel.core.state.dual
            if isinstance(d, DualFundSession) and not d.signatures_sent:
                self._release_inputs(d.inputs)
        return False

    async def _sign_funding(self, channel: ManagedChannel, event: FundingSignaturesNeeded) -> None:
        """The wallet signs our inputs of the negotiated funding; the core sends them in its turn."""
        try:
            witnesses = self.chain.wallet.sign_inputs(Tx.parse(event.raw_tx), event.indices)
        except WalletError as exc:
            log.warning("channels: cannot sign the funding of %s: %s", channel.channel_id.hex(), exc)
            return  # the open stays unsigned; a disconnection or restart ends it and frees the coins
        try:
            await self._manager().submit(channel, FundingWitnesses(tuple(tuple(w) for w in witnesses)))
        except (ChannelsStopped, LocalMisuse) as exc:
            log.debug("channels: funding signatures of %s not taken: %s", channel.channel_id.hex(), exc)

    # ------------------------------------------------------------ fee bumping (dualfund_rbf)

    async def bumpchannelopen(self, channel: str, feerate: int | None = None) -> dict[str, Any]:
        """Fee-bump the unconfirmed funding of the dual-funded CHANNEL we opened (BOLT 2 tx_init_rbf):
        FEERATE in sat per vbyte (default: the least the peer must take, 25/24 of the last one, or the
        chain's estimate if higher). Returns once both signed the new version and it is broadcast; the
        earlier versions stay valid until one of them confirms (the channel then opens on it)."""
        from .manager import describe

        target = self._channel(channel)
        d = target.core.state.dual
        if not isinstance(d, DualFundSession):
            raise ParamsError("not a dual-funded channel (only a v2 open's funding can be bumped)")
        least = min_feerate(d.feerate_per_kw)
        if feerate is None:
            try:
                estimate = await self.chain.source.estimate_feerate()
            except ChainError:
                estimate = 0
            per_kw = max(least, estimate)
        elif not isinstance(feerate, int) or isinstance(feerate, bool) or feerate <= 0:
            raise ParamsError(f"feerate must be a positive whole number of sat/vB, got {feerate!r}")
        else:
            per_kw = feerate * 250
        from .app import COMMAND_TIMEOUT

        await self._after_reestablish(target, COMMAND_TIMEOUT)
        tip = self.chain.wallet.tip
        before = target.core.state.funding_outpoint
        try:
            await self._manager().submit(target, BumpCommand(per_kw, tip.height if tip is not None else 0))
        except LocalMisuse as exc:
            raise ChainAppError(f"cannot bump: {exc}", {"error": "ChannelError", "state": target.phase.value}) from exc
        with trio.move_on_after(COMMAND_TIMEOUT):
            while not (target.phase is Phase.AWAIT_READY and target.core.state.funding_outpoint != before):
                if target.key in self._funding_errors or target.phase in (Phase.FAILED, Phase.CLOSED):
                    break
                await target.changed.wait()
        s = target.core.state
        if s.funding_outpoint == before or target.phase is not Phase.AWAIT_READY:
            reason = self._funding_errors.pop(target.key, None) or s.failure or f"no signatures in {COMMAND_TIMEOUT:g} s"
            raise ChainAppError(f"the bump did not complete: {reason}", {"error": "ChannelError", "state": target.phase.value})
        result = describe(target)
        assert s.funding_outpoint is not None
        result.update(funding_txid=s.funding_outpoint.txid_hex, feerate_per_kw=per_kw,
                      previous_funding_txids=[o.txid_hex for o in candidate_outpoints(target.core)[:-1]])  # fmt: skip
        return result

    async def _after_reestablish(self, target: ManagedChannel, timeout: float) -> None:
        """While the peer is connected, wait (at most ``timeout``) until the channel's reconnection settled
        (:func:`.reestablish.settling`): a new negotiation (a bump, a splice) sent before the peer's
        answer to our ``next_funding`` would cross its ``tx_abort``, which then ends the new one too."""
        with trio.move_on_after(timeout):
            while target.peer_id in self.node.peers and target.phase not in (Phase.CLOSED, Phase.FAILED) and settling(target.core):
                await target.changed.wait()

    async def _check_candidates(self) -> None:
        """A channel whose funding was bumped: when one of its versions confirmed, it is the funding."""
        for channel in list(self._manager().channels.values()):
            d = channel.core.state.dual
            if not isinstance(d, DualFundSession) or not d.previous:
                continue
            for outpoint in candidate_outpoints(channel.core):
                try:
                    info = await self.chain.source.get_txout(outpoint)
                except ChainError as exc:
                    log.warning("channels: cannot read the funding %s: %s", outpoint.txid_hex, exc)
                    return
                if info is not None and info.confirmations > 0:
                    await self._submit(channel, FundingCandidateConfirmed(outpoint.txid))
                    break

    async def _monitor_follows_funding(self, channel: ManagedChannel, splice: Any = None) -> None:
        """The monitor follows the version of the funding that confirmed, or ``splice``'s funding
        (:meth:`OnchainWatch.follow_funding`)."""
        onchain = self.onchain
        if onchain is not None and await onchain.follow_funding(channel, splice) and channel.phase is Phase.FAILED:
            await onchain.force_close(channel)  # failed before: our commitment of the version that confirmed goes out
