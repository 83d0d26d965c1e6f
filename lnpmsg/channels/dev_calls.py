"""The channel app's developer control calls (``channels.dev_*``): HTLCs and
fee changes driven by hand, for tests of channels without the payments layer
and for conformance suites. A mixin of :class:`~lnpmsg.channels.app.ChannelsApp`.
"""

from __future__ import annotations

import os
from typing import Any

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.rpc.params import hex_param
from lnpmsg.wallet.app import ChainAppError

from .errors import LocalMisuse, StoreWriteFailed
from .inputs import AddHtlc, ChangeFee, FailHtlc, FulfillHtlc
from .messages import ONION_PACKET_SIZE, UpdateAddHtlc

__all__ = ["DevCalls"]

#: blocks from the tip to a hand-made HTLC's expiry when none is given
_CLTV_DEFAULT = 144


class DevCalls:
    """``dev_addhtlc``, ``dev_fulfill``, ``dev_fail``, ``dev_updatefee``, ``dev_preimage``; the app
    supplies ``_channel`` (a channel by id, scid or key), ``_manager``, ``_onchain`` and ``chain``."""

    _channel: Any
    _manager: Any
    _onchain: Any
    chain: Any

    async def dev_addhtlc(self, channel: str, amount_msat: int, payment_hash: str | None = None,
                          cltv_expiry: int | None = None, onion: str | None = None) -> dict[str, Any]:  # fmt: skip
        """DEVELOPER: offer an HTLC and commit it; without PAYMENT_HASH a preimage is made and returned;
        ONION: the 1366-byte onion packet as hex (default: zeros, which only lnpmsg accepts unread).
        For tests of channels without the payments layer."""
        target = self._channel(channel)
        packet = bytes(ONION_PACKET_SIZE) if onion is None else hex_param(onion, "onion", ONION_PACKET_SIZE)
        preimage = None
        if payment_hash is None:
            preimage = os.urandom(32)
            hash_bytes = sha256(preimage)
        else:
            hash_bytes = hex_param(payment_hash, "payment_hash", 32)
        if cltv_expiry is None:
            cltv_expiry = (await self.chain.source.tip()).height + _CLTV_DEFAULT
        try:
            out = await self._manager().submit(target, AddHtlc(amount_msat, hash_bytes, cltv_expiry, packet))
        except (LocalMisuse, StoreWriteFailed) as exc:
            raise ChainAppError(f"cannot add the HTLC: {exc}", {"error": type(exc).__name__}) from exc
        # the id the core gave this add (another add queued before ours would have taken the next one)
        (add,) = [m for m in out.messages if isinstance(m, UpdateAddHtlc)]
        result: dict[str, Any] = {"htlc_id": add.id, "payment_hash": hash_bytes.hex()}
        if preimage is not None:
            result["preimage"] = preimage.hex()
        return result

    async def dev_fulfill(self, channel: str, htlc_id: int, preimage: str) -> dict[str, Any]:
        """DEVELOPER: settle incoming HTLC HTLC_ID with PREIMAGE (hex) and commit."""
        target = self._channel(channel)
        data = hex_param(preimage, "preimage", 32)
        try:
            await self._manager().submit(target, FulfillHtlc(htlc_id, data))
        except (LocalMisuse, StoreWriteFailed, ValueError) as exc:
            error = "StoreWriteFailed" if isinstance(exc, StoreWriteFailed) else "ChannelError"
            raise ChainAppError(f"cannot fulfill: {exc}", {"error": error}) from exc
        return {"htlc_id": htlc_id}

    async def dev_fail(self, channel: str, htlc_id: int) -> dict[str, Any]:
        """DEVELOPER: fail incoming HTLC HTLC_ID (an empty reason) and commit."""
        target = self._channel(channel)
        try:
            await self._manager().submit(target, FailHtlc(htlc_id, b""))
        except LocalMisuse as exc:
            raise ChainAppError(f"cannot fail: {exc}", {"error": "ChannelError"}) from exc
        return {"htlc_id": htlc_id}

    async def dev_updatefee(self, channel: str, feerate_per_kw: int) -> dict[str, Any]:
        """DEVELOPER: as the funder, propose a new commitment feerate (update_fee) and commit it."""
        target = self._channel(channel)
        try:
            await self._manager().submit(target, ChangeFee(feerate_per_kw))
        except LocalMisuse as exc:
            raise ChainAppError(f"cannot change the fee: {exc}", {"error": "ChannelError"}) from exc
        return {"feerate_per_kw": feerate_per_kw}

    async def dev_preimage(self, channel: str, preimage: str) -> dict[str, Any]:
        """DEVELOPER: give CHANNEL's monitor a PREIMAGE (hex) it may claim an incoming HTLC with on chain
        (as the payments layer does for an invoice it can settle); persisted before it returns."""
        return await self._onchain().dev_preimage(self._channel(channel), preimage)
