"""``channel_ready``, short channel id aliases and zero-conf channels (sans-IO, BOLT 2 / BOLT 7).

Every channel made by this node has a *local alias*: a random short channel id
the node gives the channel (in a block range no real funding can have: see
:data:`ALIAS_MIN_BLOCK`), chosen by the shell before the channel's first input
and carried in that input (:class:`~.inputs.OpenCommand`,
:class:`~.inputs.AcceptCommand`), so it is on disk before any message names it.
Our ``channel_ready`` carries it in its ``short_channel_id`` TLV (type 1, an
odd TLV: a peer that does not know it ignores it); the peer's alias from its
``channel_ready`` is kept as the *remote alias* (the id our invoices' route
hints use: the peer is the one who forwards over it).

Channel types (``channel_type``) may add two variations to a basic type:

- ``option_scid_alias`` (bit 46): a private channel known by its aliases only:
  a forward naming the real short channel id is refused (BOLT 2);
- ``option_zeroconf`` (bit 50): the fundee trusts the funder and asks
  ``minimum_depth`` 0; both send ``channel_ready`` at once, and the channel
  carries payments (by alias) before the funding confirms. The real short
  channel id is learned when it does (:func:`on_funding_depth`).

:func:`routing_scid` is the one id the node's payments layer knows a channel
by; :func:`accepted_scids` the ids an incoming HTLC may name to go out on it;
:func:`hint_scid` the id a route hint to us over it names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lnpmsg.wire import Features, ShortChannelId

from .errors import RemoteFault
from .inputs import ChannelReadyEvent
from .messages import CHANNEL_FLAG_ANNOUNCE, ChannelReady

if TYPE_CHECKING:
    from .state import ChannelCore, ChannelState, _Out

__all__ = [
    "ALIAS_MAX_BLOCK",
    "ALIAS_MIN_BLOCK",
    "SCID_ALIAS_BIT",
    "ZEROCONF_BIT",
    "accepted_scids",
    "alias_from_bytes",
    "alias_only",
    "channel_ready_message",
    "check_type_variations",
    "hint_scid",
    "is_alias",
    "is_zeroconf",
    "on_channel_ready",
    "on_funding_depth",
    "routing_scid",
    "send_ready_if_zero_depth",
]

#: channel_type variations (even bits, as channel types always are)
SCID_ALIAS_BIT = 46
ZEROCONF_BIT = 50
#: Aliases take block heights from here to the largest a short channel id holds (2^24 - 1): a chain
#: reaches block 16,000,000 in about three centuries, so an alias never equals a real funding's id
#: (lnd starts its aliases at the same height).
ALIAS_MIN_BLOCK = 16_000_000
ALIAS_MAX_BLOCK = 0xFFFFFF


def alias_from_bytes(random: bytes) -> int:
    """A fresh alias (u64 short channel id form) from 8 random bytes."""
    if len(random) != 8:
        raise ValueError("an alias is made of 8 random bytes")
    n = int.from_bytes(random, "big")
    block = ALIAS_MIN_BLOCK + (n >> 40) % (ALIAS_MAX_BLOCK - ALIAS_MIN_BLOCK + 1)
    return ShortChannelId(block, (n >> 16) & 0xFFFFFF, n & 0xFFFF).to_int()


def is_alias(scid: int) -> bool:
    """Is this short channel id in the alias range (never a real funding's)?"""
    return scid >> 40 >= ALIAS_MIN_BLOCK


def _type_has(state: ChannelState, bit: int) -> bool:
    return state.channel_type is not None and Features.from_bytes(state.channel_type).has(bit)


def alias_only(state: ChannelState) -> bool:
    """The channel's type has ``option_scid_alias``: its real short channel id is never used for routing."""
    return _type_has(state, SCID_ALIAS_BIT)


def is_zeroconf(state: ChannelState) -> bool:
    """The channel's type has ``option_zeroconf``."""
    return _type_has(state, ZEROCONF_BIT)


def _announced(state: ChannelState) -> bool:
    return state.open_channel is not None and bool(state.open_channel.channel_flags & CHANNEL_FLAG_ANNOUNCE)


def routing_scid(state: ChannelState) -> int:
    """The id the node knows the channel by for payments and fee policies (0: none yet).

    A public channel: its real short channel id (the local alias until it confirms); a private one:
    its local alias (stable from the start, also for a zero-conf channel that confirms later), or the
    real id for a channel made before aliases were."""
    if _announced(state) and not alias_only(state):
        return state.short_channel_id or state.local_alias
    return state.local_alias or (0 if alias_only(state) else state.short_channel_id)


def accepted_scids(state: ChannelState) -> tuple[int, ...]:
    """The ids an incoming HTLC's onion may name to go out on this channel: our alias always
    (BOLT 2: "MUST always recognize the alias"), the real id unless the type is ``option_scid_alias``
    (and the one before the last splice: payers may not have heard of the new one yet)."""
    ids = [state.local_alias] if state.local_alias else []
    if state.short_channel_id and not alias_only(state):
        ids.append(state.short_channel_id)
        if state.previous_short_channel_id:
            ids.append(state.previous_short_channel_id)
    return tuple(ids)


def hint_scid(state: ChannelState) -> int:
    """The id a BOLT 11 route hint names for this channel (the peer forwards over it): the alias the
    peer gave us (BOLT 2: "use the alias in route hints"), else the real id unless the type forbids it."""
    if state.remote_alias:
        return state.remote_alias
    return 0 if alias_only(state) else state.short_channel_id


def check_type_variations(channel_type: Features, *, announce: bool, zeroconf_trusted: bool | None) -> None:
    """BOLT 2's rules on the variations of a proposed type (:class:`RemoteFault` when broken).

    ``zeroconf_trusted``: the fundee's trust in this funder for a zero-conf channel (None: the funder
    checks its own proposal, which it trusts)."""
    if channel_type.has(SCID_ALIAS_BIT) and announce:
        # BOLT 2: the funder MUST NOT set option_scid_alias on an announced channel
        raise RemoteFault("channel_type option_scid_alias on an announced channel")
    if channel_type.has(ZEROCONF_BIT) and zeroconf_trusted is False:
        raise RemoteFault("channel_type option_zeroconf: we do not accept unconfirmed channels from this peer")


def channel_ready_message(core: ChannelCore) -> ChannelReady:
    """Our channel_ready, with our alias when we have one (also retransmitted on reestablish)."""
    s = core.state
    tlvs = ChannelReady.tlv_stream({"short_channel_id": ShortChannelId.from_int(s.local_alias)} if s.local_alias else {})
    return ChannelReady(channel_id=s.channel_id, second_per_commitment_point=core.secrets.commitment_point(1), tlvs=tlvs)


def on_channel_ready(core: ChannelCore, msg: ChannelReady, out: _Out) -> None:
    """The peer's channel_ready: its second point the first time; its alias each time (BOLT 2: a
    peer MAY send channel_ready again with another alias; the receiver keeps one)."""
    s = core.state
    alias = msg.tlvs.get("short_channel_id")
    if alias is not None:
        s.remote_alias = alias.to_int()
    if s.ready_received:
        return  # a retransmission after channel_reestablish (its point is already in use)
    s.ready_received = True
    s.remote_next_point = msg.second_per_commitment_point
    maybe_normal(core, out)


def send_ready_if_zero_depth(core: ChannelCore, out: _Out) -> None:
    """Both commitments are signed: with ``minimum_depth`` 0 (a zero-conf channel; or the fundee asked
    none, and the funder trusts its own funding) channel_ready goes now, before any confirmation."""
    s = core.state
    if s.minimum_depth != 0 or s.ready_sent:
        return
    s.ready_sent = True
    if s.connected and not s.awaiting_reestablish:
        out.send(channel_ready_message(core))
    maybe_normal(core, out)


def on_funding_depth(core: ChannelCore, depth: int, short_channel_id: int, out: _Out) -> None:
    """The funding is ``depth`` deep at ``short_channel_id``: channel_ready at ``minimum_depth``
    (at least 1), and a channel that was ready before it confirmed learns its real id."""
    s = core.state
    if s.ready_sent:
        if not s.short_channel_id and depth >= 1:
            s.short_channel_id = short_channel_id  # a zero-conf channel's funding confirmed
        return
    if depth < max(s.minimum_depth, 1):
        return
    s.short_channel_id = short_channel_id
    s.ready_sent = True
    if s.connected and not s.awaiting_reestablish:
        out.send(channel_ready_message(core))  # else channel_reestablish brings it
    maybe_normal(core, out)


def maybe_normal(core: ChannelCore, out: _Out) -> None:
    """Both channel_ready: the channel is normal (its id: the real one, else our alias)."""
    from .state import Phase

    s = core.state
    if s.ready_sent and s.ready_received and s.phase is Phase.AWAIT_READY:
        s.phase = Phase.NORMAL
        out.emit(ChannelReadyEvent(s.channel_id, s.short_channel_id or s.local_alias))
