"""The payments app's pure helpers: the JSON shapes of its listings (store rows in, dicts
out), making an invoice, and the checks of an invoice before paying it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lnpmsg.channels.monitor.deadlines import CLTV_CLAIM_BUFFER
from lnpmsg.payments import bolt11
from lnpmsg.payments.bolt11 import Invoice, RouteHintHop
from lnpmsg.payments.htlcs import FeePolicy
from lnpmsg.wire import Features
from lnpmsg.payments.graph import RoutingGraph
from lnpmsg.payments.plan import plan_payment
from lnpmsg.payments.route import NoRouteError
from lnpmsg.rpc.params import ParamsError, hex_param

if TYPE_CHECKING:
    from lnpmsg.channels.htlc_hook import ChannelInfo

__all__ = ["check_invoice", "decode_invoice", "forward_view", "invoice_params", "invoice_view", "name_failure", "name_own_channels", "new_invoice",
           "own_channel_names", "payment_view", "route_hints"]


def invoice_view(row: dict[str, Any], now: float, held: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """An invoice for ``listinvoices``: an unpaid one past its expiry shows as ``expired``. A hold
    invoice's payment held (status ``accepted``) shows ``held``: (HTLCs, their total msat, the earliest one's cltv_expiry).
    A keysend we received (``keysend``) is a paid one without bolt11."""
    status = "expired" if row["status"] == "unpaid" and now > row["expires_at"] else row["status"]
    out = {
        "label": row["label"], "bolt11": row["bolt11"], "payment_hash": row["payment_hash"].hex(), "amount_msat": row["amount_msat"],
        "status": status, "description": row["description"], "expires_at": row["expires_at"],
        "received_msat": row["received_msat"], "paid_at": row["paid_at"], "hold": bool(row.get("hold")),
        "keysend": bool(row.get("keysend")),
    }  # fmt: skip
    if row["status"] == "paid":
        out["preimage"] = row["preimage"].hex()
    if row["status"] == "accepted" and held is not None:
        out["held_htlcs"], out["held_msat"], out["held_cltv_expiry"] = held
    return out


def _scid_text(scid: int) -> str:
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


def own_channel_names(channels: Iterable[ChannelInfo]) -> dict[str, str]:
    """Our channels' ids as our routes name them (:attr:`ChannelInfo.short_channel_id`: a private
    channel's is our local alias) -> the id users know them by (listchannels' ``short_channel_id``):
    the real id where there is one and the type allows it (not ``option_scid_alias``). Channels
    routes already name so are left out."""
    return {_scid_text(c.short_channel_id): _scid_text(c.real_scid) for c in channels if c.real_scid and c.real_scid != c.short_channel_id}


def name_own_channels(routes: list[list[dict[str, Any]]] | None, names: Mapping[str, str]) -> list[list[dict[str, Any]]] | None:
    """``routes`` (JSON hops, ours first) with the first hop's channel, ours, named as users know it
    (``names``: :func:`own_channel_names`); the later hops name the channels the payer's onion did."""
    if not routes or not names:
        return routes
    return [[{**r[0], "short_channel_id": names.get(r[0]["short_channel_id"], r[0]["short_channel_id"])}, *r[1:]] if r else r for r in routes]


def name_failure(text: str, details: dict[str, Any], names: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """A failed payment's text and details (its last attempt's ``route`` and each of its ``attempts``'
    routes) with our first-hop channel named as in :func:`name_own_channels`; where our channel itself
    refused the HTLC (``erring_index`` -1), ``erring_channel`` and the text name it so too."""
    if not names:
        return text, details

    def said(text: str) -> str:  # (the text of a refusal by our channel names it)
        for alias, real in names.items():
            text = text.replace(f"our channel {alias} ", f"our channel {real} ")
        return text

    def attempt(a: dict[str, Any]) -> dict[str, Any]:
        a = dict(a)
        if a.get("route"):
            (a["route"],) = name_own_channels([a["route"]], names) or [a["route"]]
        if a.get("erring_index") == -1 and a.get("erring_channel") in names:
            a["erring_channel"], a["failure"] = names[a["erring_channel"]], said(str(a.get("failure", "")))
        return a

    named = attempt(details)
    if isinstance(details.get("attempts"), list):
        named["attempts"] = [attempt(a) for a in details["attempts"]]
    return said(text), named


def payment_view(row: dict[str, Any], names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A payment for ``listpayments`` (a keysend's has no bolt11; one into blinded paths has them, ``blinded:`` and hex,
    comma-separated, instead: ``blinded_path`` the first, ``blinded_paths`` each).
    ``names``: our channels' names for the first hops (:func:`own_channel_names`; a payment stored before they
    were named so shows our local alias of a private channel)."""
    blinded = row["bolt11"].startswith("blinded:") if row["bolt11"] else False
    return {
        "id": row["id"], "payment_hash": row["payment_hash"].hex(), "bolt11": (row["bolt11"] or None) if not blinded else None,
        "keysend": not row["bolt11"], **(_blinded_paths(row["bolt11"]) if blinded else {}),
        "destination": row["payee"].hex(),
        "amount_msat": row["amount_msat"], "fee_msat": row["fee_msat"], "status": row["status"],
        "routes": name_own_channels(row["routes"], names or {}),
        "preimage": row["preimage"].hex() if row["preimage"] else None, "error": row["error"], "attempts": row["attempts"],
        "created_at": row["created_at"], "completed_at": row["completed_at"],
    }  # fmt: skip


def _blinded_paths(stored: str) -> dict[str, Any]:
    paths = stored.removeprefix("blinded:").split(",")
    return {"blinded_path": paths[0], "blinded_paths": paths}


def forward_view(row: dict[str, Any]) -> dict[str, Any]:
    """A forward for ``listforwards`` (the onion's shared secret and the outgoing onion's key stay private)."""
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items() if k not in ("shared_secret", "out_onion_key")}


def decode_invoice(text: str) -> Invoice:
    """Decode and verify a BOLT-11 invoice; a clear ParamsError when it is not one."""
    if not isinstance(text, str):
        raise ParamsError("bolt11 is the invoice's text")
    try:
        return bolt11.decode(text.strip())
    except ValueError as exc:
        raise ParamsError(f"not a valid BOLT-11 invoice: {exc}") from None


def check_invoice(invoice: Invoice, amount_msat: int | None, me: bytes, network: str, now: float) -> None:
    """The payer's checks of BOLT 11 (what :func:`plan_payment` checks before it looks for routes)."""
    try:
        plan_payment(invoice, graph=RoutingGraph(), our_node_id=me, now=now, current_height=0, amount_msat=amount_msat, network=network)
    except NoRouteError:
        pass


#: what our invoices ask of the last hop (min_final_cltv_expiry_delta): more than the blocks before
#: its expiry at which the channel monitor claims a received HTLC on chain (CLTV_CLAIM_BUFFER), so
#: a payment settles off chain with room to spare (BOLT 11's default of 18 would equal that buffer,
#: and the payee would go on chain the moment it held the HTLC); LDK asks 24 for the same reason
DEFAULT_MIN_FINAL_CLTV = CLTV_CLAIM_BUFFER + 6
#: what a hold invoice asks of the last hop unless told: its payment is held until 20 blocks before
#: the HTLCs' expiry (:data:`lnpmsg.payments.receiving.SETTLE_MARGIN_BLOCKS`), so some 60 blocks
#: (about ten hours) for the payee to settle or cancel; DEFAULT_MIN_FINAL_CLTV would leave 4
HOLD_MIN_FINAL_CLTV = 80
#: the most an invoice may ask (payers cap a route's whole CLTV delta at 2016 blocks, and the hops before us need room)
MAX_MIN_FINAL_CLTV = 1008
#: invoice features: var_onion_optin, payment_secret (required), basic_mpp (optional)
INVOICE_FEATURES = Features.from_bits([8, 14, 17])
#: route hints one invoice carries at most
MAX_ROUTE_HINTS = 8


def route_hints(channels: Iterable[ChannelInfo], policy: FeePolicy, peer_policies: Mapping[int, FeePolicy] | None = None,
                announced: Callable[[int], bool] = lambda scid: False) -> tuple[tuple[RouteHintHop, ...], ...]:  # fmt: skip
    """One hint per channel a peer could pay us over that payers cannot find in the gossip: private
    channels, and public ones not ``announced`` yet (below the announcement's depth, or a peer that never
    sends its announcement_signatures); with the peer's policy towards us (``peer_policies`` by short
    channel id; when unknown, assumed to be ours: ``policy``). A hint names the alias the peer gave us
    (BOLT 2), the real id only without one (never for an scid_alias channel)."""
    hints = []
    for c in channels:
        if (c.public and announced(c.short_channel_id)) or c.receivable_msat <= 0 or not c.hint_scid:
            continue
        p = (peer_policies or {}).get(c.short_channel_id, policy)
        hints.append((RouteHintHop(c.peer_id, c.hint_scid, p.fee_base_msat, p.fee_proportional_millionths, p.cltv_expiry_delta),))
    return tuple(hints[:MAX_ROUTE_HINTS])


def invoice_params(preimage: str | None, payment_hash: str | None, hold: bool,
                   min_final_cltv: int | None) -> tuple[bytes | None, bytes | None, int]:  # fmt: skip
    """``payments.invoice``'s (preimage, payment hash, min_final_cltv), checked: a hold invoice names its
    payment hash and no preimage; ``min_final_cltv`` (default: DEFAULT_MIN_FINAL_CLTV, HOLD_MIN_FINAL_CLTV for a hold
    invoice) is at least DEFAULT_MIN_FINAL_CLTV (room to settle off chain) and at most MAX_MIN_FINAL_CLTV."""
    if not isinstance(hold, bool):
        raise ParamsError(f"hold must be true or false, got {hold!r}")
    if hold != (payment_hash is not None):
        raise ParamsError("a hold invoice needs its payment_hash (and only a hold invoice takes one)")
    if hold and preimage is not None:
        raise ParamsError("a hold invoice is made without its preimage: settleinvoice gives it")
    if min_final_cltv is None:
        min_final_cltv = HOLD_MIN_FINAL_CLTV if hold else DEFAULT_MIN_FINAL_CLTV
    if not isinstance(min_final_cltv, int) or not DEFAULT_MIN_FINAL_CLTV <= min_final_cltv <= MAX_MIN_FINAL_CLTV:
        raise ParamsError(f"min_final_cltv must be a number of blocks from {DEFAULT_MIN_FINAL_CLTV} to {MAX_MIN_FINAL_CLTV}, "
                          f"got {min_final_cltv!r}")  # fmt: skip
    return (None if preimage is None else hex_param(preimage, "preimage", 32),
            None if payment_hash is None else hex_param(payment_hash, "payment_hash", 32), min_final_cltv)  # fmt: skip


def new_invoice(node_secret: bytes, hrp: str, amount_msat: int | None, label: str, description: str, expiry: int, now: int,
                hints: tuple[tuple[RouteHintHop, ...], ...], preimage: bytes | None = None,
                payment_hash: bytes | None = None, min_final_cltv: int = DEFAULT_MIN_FINAL_CLTV) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """A signed invoice's text and its store row (a fresh payment secret; a fresh preimage unless given).

    With ``payment_hash``, a hold invoice: the preimage is not ours to know (empty in the row until it is settled)."""
    secret = b"" if payment_hash is not None else os.urandom(32) if preimage is None else preimage
    payment_hash = payment_hash or hashlib.sha256(secret).digest()
    payment_secret = os.urandom(32)
    unsigned = Invoice(
        currency=hrp, timestamp=now, payment_hash=payment_hash, payment_secret=payment_secret, amount_msat=amount_msat,
        description=description, expiry=expiry, min_final_cltv_expiry_delta=min_final_cltv, route_hints=hints,
        features=INVOICE_FEATURES,
    )  # fmt: skip
    text = bolt11.encode(bolt11.sign(unsigned, node_secret))
    row = dict(payment_hash=payment_hash, label=label, bolt11=text, preimage=secret, payment_secret=payment_secret,
               amount_msat=amount_msat, description=description, created_at=now, expires_at=now + expiry,
               min_final_cltv=min_final_cltv, hold=int(not secret))  # fmt: skip
    return text, row
