"""Route hints given by hand (``getroute``'s ``route_hints``), checked into BOLT 11 :class:`RouteHintHop` s.

A route hint is what an invoice's ``r`` field carries: the private channels from a node the graph
knows to the payee, each hop the channel's start node, its ``short_channel_id`` and the fee and
expiry delta that node asks to forward over it, in order, the last hop's channel ending at the payee.

The control API takes hints as a list of hints, each a list of hops as ``decodepay`` prints an
invoice's ``route_hints`` (so an invoice's hints may be pasted, edited, or written from a peer's
``listchannels``): ``{"node_id": HEX, "short_channel_id": "BLOCKxTXxOUT", "fee_base_msat": N,
"fee_proportional_millionths": N, "cltv_expiry_delta": N}``. The command line takes one hint per
``--routehint`` in a compact form, hops separated by commas:
``NODEID:BLOCKxTXxOUT:FEE_BASE_MSAT:FEE_PPM:CLTV_DELTA[,...]`` (:func:`hint_from_text`).
"""

from __future__ import annotations

from typing import Any

from lnpmsg.payments.bolt11_parts import RouteHintHop
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wire.primitives import ShortChannelId, WireError

__all__ = ["HOP_FIELDS", "MAX_HINT_HOPS", "MAX_ROUTE_HINTS", "hint_from_text", "route_hints_param"]

#: the fields of a hop, in the compact form's order
HOP_FIELDS = ("node_id", "short_channel_id", "fee_base_msat", "fee_proportional_millionths", "cltv_expiry_delta")
#: at most this many hints (an invoice carries a handful; each one widens the search)
MAX_ROUTE_HINTS = 32
#: at most this many hops in one hint (an invoice's ``r`` field holds 12 at most)
MAX_HINT_HOPS = 12
_BITS = {"fee_base_msat": 32, "fee_proportional_millionths": 32, "cltv_expiry_delta": 16}


def route_hints_param(value: Any, payee: bytes) -> tuple[tuple[RouteHintHop, ...], ...]:
    """``value`` (a list of hints, each a list of hop objects: see the module docs) as route hints to
    ``payee``; :class:`ParamsError` naming the hint, hop and field at fault otherwise."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ROUTE_HINTS:
        raise ParamsError(f"route_hints must be a list of 1 to {MAX_ROUTE_HINTS} route hints (each a list of hops), got {value!r}")
    return tuple(_hint(hint, f"route_hints[{i}]", payee) for i, hint in enumerate(value))


def _hint(value: Any, where: str, payee: bytes) -> tuple[RouteHintHop, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_HINT_HOPS:
        raise ParamsError(f"{where} must be a list of 1 to {MAX_HINT_HOPS} hops, got {value!r}")
    hops = tuple(_hop(hop, f"{where}[{j}]") for j, hop in enumerate(value))
    starts = [hop.node_id for hop in hops]
    if payee in starts:
        raise ParamsError(f"{where}: a hop starts at the payee; a hint's hops lead to the payee, each naming the node at its channel's start")
    if len(set(starts)) != len(starts):
        raise ParamsError(f"{where}: a node starts two of its hops (a hint is a path, without loops)")
    return hops


def _hop(value: Any, where: str) -> RouteHintHop:
    if not isinstance(value, dict) or set(value) != set(HOP_FIELDS):
        raise ParamsError(f"{where} must be an object with exactly {', '.join(HOP_FIELDS)}, got {value!r}")
    node_id = hex_param(value["node_id"], f"{where}.node_id", 33)
    try:
        scid = ShortChannelId.parse(value["short_channel_id"]).to_int()
    except WireError as exc:
        raise ParamsError(f"{where}.short_channel_id: {exc}") from None
    numbers = {}
    for name, bits in _BITS.items():
        number = value[name]
        if type(number) is not int or not 0 <= number < 1 << bits:
            raise ParamsError(f"{where}.{name} must be an integer from 0 to {(1 << bits) - 1}, got {number!r}")
        numbers[name] = number
    return RouteHintHop(node_id, scid, **numbers)


def hint_from_text(text: str) -> list[dict[str, Any]]:
    """One route hint in the command line's compact form (``NODEID:SCID:FEE_BASE_MSAT:FEE_PPM:CLTV_DELTA``,
    hops separated by commas) as the control API's list of hop objects; ValueError saying what is wrong.
    Only the form is checked here: the node checks the values (:func:`route_hints_param`)."""
    hops = []
    for j, hop in enumerate(text.split(","), 1):
        parts = hop.strip().split(":")
        if len(parts) != len(HOP_FIELDS):
            raise ValueError(f"hop {j} ({hop!r}) is not NODEID:BLOCKxTXxOUT:FEE_BASE_MSAT:FEE_PPM:CLTV_DELTA")
        node_id, scid, *numbers = parts
        if not all(n.isdigit() for n in numbers):
            raise ValueError(f"hop {j} ({hop!r}): the base fee, proportional fee and expiry delta are whole numbers")
        hops.append(dict(zip(HOP_FIELDS, [node_id, scid, *map(int, numbers)], strict=True)))
    return hops
