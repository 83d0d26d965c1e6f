"""Our own gossip for a public channel (sans-IO): BOLT 7's announcement steps.

A channel opened with ``channel_flags`` bit 0 (announce) becomes public
once its funding is 6 blocks deep: each side sends ``announcement_signatures``
(its node and funding-key signatures over the ``channel_announcement``), and
with the peer's two signatures each side can build the complete
announcement. Then each side announces its node (``node_announcement``)
and its direction's forwarding policy (``channel_update``).

- :class:`ChannelFacts`: what both sides know of a channel (ids and keys);
  :func:`unsigned_announcement`, :func:`our_signatures`,
  :func:`check_their_signatures` and :func:`signed_announcement` are the
  four steps;
- :class:`FeePolicy`: our forwarding policy of a channel; :func:`build_update`
  signs one direction's ``channel_update`` with it;
- :func:`announced_addresses` picks what a ``node_announcement`` may carry
  (never a clearnet address for an onion-only node), :func:`build_node_announcement`
  signs it;
- :class:`UpdatePlanner`: when a channel_update is due (a changed policy at
  once, a lost peer only after ``disable_delay``, never more often than
  ``min_interval``), with strictly increasing timestamps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

import coincurve

from lnpmsg.gossip.messages import AnnouncementSignatures, ChannelAnnouncement, ChannelUpdate, NodeAnnouncement
from lnpmsg.gossip.sign import public_key, sign_channel_update, sign_digest, sign_node_announcement
from lnpmsg.gossip.verify import channel_announcement_digest
from lnpmsg.wire import Address, Features, ShortChannelId, parse_address
from lnpmsg.wire.features import FEATURES_BY_BIT

__all__ = [
    "ANNOUNCE_DEPTH",
    "AnnounceError",
    "ChannelFacts",
    "FeePolicy",
    "UpdatePlanner",
    "announced_addresses",
    "build_node_announcement",
    "build_update",
    "check_their_signatures",
    "default_alias",
    "default_color",
    "node_features",
    "our_signatures",
    "signed_announcement",
    "unsigned_announcement",
]

#: BOLT 7: announcement_signatures only once the funding has this many confirmations
ANNOUNCE_DEPTH = 6
_ZERO_SIG = bytes(64)


class AnnounceError(ValueError):
    """The peer's announcement_signatures do not hold (or do not match the channel)."""


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """Our forwarding policy for one channel (what our channel_update announces).

    Defaults are what Core Lightning and lnd users expect: 1 sat base, 10
    ppm, a CLTV delta of 40 blocks (HTLC maximum: the channel's capacity
    when None).
    """

    fee_base_msat: int = 1000
    fee_proportional_millionths: int = 10
    cltv_expiry_delta: int = 40
    htlc_minimum_msat: int = 1
    htlc_maximum_msat: int | None = None

    def __post_init__(self) -> None:
        for name in ("fee_base_msat", "fee_proportional_millionths"):
            if not 0 <= getattr(self, name) < 1 << 32:
                raise ValueError(f"{name} must be 0..4294967295, got {getattr(self, name)}")
        if not 0 < self.cltv_expiry_delta < 1 << 16:
            raise ValueError(f"cltv_expiry_delta must be 1..65535, got {self.cltv_expiry_delta}")
        if self.htlc_minimum_msat < 0:
            raise ValueError("htlc_minimum_msat must not be negative")
        if self.htlc_maximum_msat is not None and self.htlc_maximum_msat < max(self.htlc_minimum_msat, 1):
            raise ValueError("htlc_maximum_msat must be at least htlc_minimum_msat (and 1)")


@dataclass(frozen=True, slots=True)
class ChannelFacts:
    """One channel as both sides see it: the ids and keys a channel_announcement names."""

    chain_hash: bytes
    short_channel_id: int
    channel_id: bytes
    our_node_id: bytes
    their_node_id: bytes
    our_funding_pubkey: bytes
    their_funding_pubkey: bytes
    capacity_sat: int

    @property
    def we_are_first(self) -> bool:
        """BOLT 7: ``node_id_1`` is the lesser key; our channel_update's direction is 0 then."""
        return self.our_node_id < self.their_node_id

    @property
    def direction(self) -> int:
        return 0 if self.we_are_first else 1


def unsigned_announcement(facts: ChannelFacts, features: bytes = b"") -> ChannelAnnouncement:
    """The channel_announcement without signatures (both sides build the same bytes)."""
    ours = (facts.our_node_id, facts.our_funding_pubkey)
    theirs = (facts.their_node_id, facts.their_funding_pubkey)
    (id_1, btc_1), (id_2, btc_2) = (ours, theirs) if facts.we_are_first else (theirs, ours)
    return ChannelAnnouncement(
        node_signature_1=_ZERO_SIG,
        node_signature_2=_ZERO_SIG,
        bitcoin_signature_1=_ZERO_SIG,
        bitcoin_signature_2=_ZERO_SIG,
        features=features,
        chain_hash=facts.chain_hash,
        short_channel_id=ShortChannelId.from_int(facts.short_channel_id),
        node_id_1=id_1,
        node_id_2=id_2,
        bitcoin_key_1=btc_1,
        bitcoin_key_2=btc_2,
    )


def _digest(facts: ChannelFacts) -> bytes:
    return channel_announcement_digest(unsigned_announcement(facts).encode())


def our_signatures(facts: ChannelFacts, node_secret: bytes, funding_secret: bytes) -> AnnouncementSignatures:
    """Our announcement_signatures for the peer (checks that the secrets are the announced keys)."""
    if public_key(node_secret) != facts.our_node_id or public_key(funding_secret) != facts.our_funding_pubkey:
        raise ValueError("the secrets are not this channel's node and funding keys")
    digest = _digest(facts)
    return AnnouncementSignatures(
        channel_id=facts.channel_id,
        short_channel_id=ShortChannelId.from_int(facts.short_channel_id),
        node_signature=sign_digest(node_secret, digest),
        bitcoin_signature=sign_digest(funding_secret, digest),
    )


def _verify(pubkey: bytes, signature: bytes, digest: bytes) -> bool:
    try:
        sig = coincurve.ecdsa.deserialize_compact(signature)
        return coincurve.PublicKey(pubkey).verify(coincurve.ecdsa.cdata_to_der(sig), digest, hasher=None)
    except Exception:  # noqa: BLE001 - any malformed signature or key is a failed check
        return False


def check_their_signatures(facts: ChannelFacts, theirs: AnnouncementSignatures) -> None:
    """Raise :class:`AnnounceError` unless the peer's signatures are for this channel and hold."""
    if theirs.channel_id != facts.channel_id:
        raise AnnounceError("announcement_signatures for another channel")
    if theirs.short_channel_id.to_int() != facts.short_channel_id:
        raise AnnounceError(
            f"announcement_signatures names short_channel_id {theirs.short_channel_id}, "
            f"the funding is at {ShortChannelId.from_int(facts.short_channel_id)}"
        )
    digest = _digest(facts)
    if not _verify(facts.their_node_id, theirs.node_signature, digest):
        raise AnnounceError("announcement_signatures: bad node_signature")
    if not _verify(facts.their_funding_pubkey, theirs.bitcoin_signature, digest):
        raise AnnounceError("announcement_signatures: bad bitcoin_signature")


def signed_announcement(facts: ChannelFacts, ours: AnnouncementSignatures, theirs: AnnouncementSignatures) -> ChannelAnnouncement:
    """The complete channel_announcement from both sides' signatures (theirs checked first)."""
    check_their_signatures(facts, theirs)
    unsigned = unsigned_announcement(facts)
    first, second = (ours, theirs) if facts.we_are_first else (theirs, ours)
    return ChannelAnnouncement(
        node_signature_1=first.node_signature,
        node_signature_2=second.node_signature,
        bitcoin_signature_1=first.bitcoin_signature,
        bitcoin_signature_2=second.bitcoin_signature,
        features=unsigned.features,
        chain_hash=unsigned.chain_hash,
        short_channel_id=unsigned.short_channel_id,
        node_id_1=unsigned.node_id_1,
        node_id_2=unsigned.node_id_2,
        bitcoin_key_1=unsigned.bitcoin_key_1,
        bitcoin_key_2=unsigned.bitcoin_key_2,
    )


def build_update(
    facts: ChannelFacts, node_secret: bytes, policy: FeePolicy, timestamp: int, *, disabled: bool = False,
    dont_forward: bool = False,
) -> ChannelUpdate:
    """Our direction's channel_update (HTLC maximum: the policy's, else the capacity); ``dont_forward``
    for a private channel's, sent to its peer only (BOLT 7)."""
    capacity_msat = facts.capacity_sat * 1000
    maximum = policy.htlc_maximum_msat if policy.htlc_maximum_msat is not None else capacity_msat
    return sign_channel_update(
        node_secret,
        ShortChannelId.from_int(facts.short_channel_id),
        facts.chain_hash,
        timestamp,
        direction=facts.direction,
        disabled=disabled,
        cltv_expiry_delta=policy.cltv_expiry_delta,
        htlc_minimum_msat=policy.htlc_minimum_msat,
        htlc_maximum_msat=min(maximum, capacity_msat),
        fee_base_msat=policy.fee_base_msat,
        fee_proportional_millionths=policy.fee_proportional_millionths,
        dont_forward=dont_forward,
    )


def _host_of(listen: str) -> tuple[str, int] | None:
    """(host, port) of a TCP or Tor listen address; None for other transports (UDP, ZeroMQ, memory)."""
    from lnpmsg.transports.address import AddressError, parse_listen_address, split_host_port

    try:
        parsed = parse_listen_address(listen)
    except AddressError:
        return None
    if parsed.kind not in ("tcp", "tor"):
        return None
    return split_host_port(parsed.target)


def announced_addresses(listen_addresses: Iterable[str], *, onion_only: bool, extra: Iterable[str] = ()) -> list[Address]:
    """What our node_announcement carries: the onion service and reachable TCP listeners.

    BOLT 7 addresses are TCP (or onion) endpoints, so UDP, ZeroMQ and memory
    listeners are left out, and so are wildcard binds (0.0.0.0, ::), which
    name no host. ``extra``: addresses the operator announces (host:port).
    An onion-only node announces its onion addresses and nothing else.
    """
    out: list[Address] = []
    for text in [*listen_addresses, *extra]:
        host_port = _host_of(text)
        if host_port is None:
            continue
        host, port = host_port
        is_onion = host.lower().endswith(".onion")
        if onion_only and not is_onion:
            continue
        if not is_onion:
            try:
                if ipaddress.ip_address(host).is_unspecified:
                    continue
            except ValueError:
                pass  # a DNS name
        try:
            address = parse_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except ValueError:
            continue
        if address not in out:
            out.append(address)
    # BOLT 7: descriptors in ascending type order
    out.sort(key=lambda a: type(a).TYPE if hasattr(type(a), "TYPE") else 255)
    return out


def node_features(init_features: Features, announced_only: Features | None = None) -> bytes:
    """The features a node_announcement carries: those of our ``init`` BOLT 9 allows there (N), and
    the assumed ones (payment_secret, var_onion_optin...) that other implementations still look for;
    and ``announced_only``, the apps' bits for node_announcement alone (a bLIP's, such as keysend)."""
    bits = [b for b in init_features.bits() if (f := FEATURES_BY_BIT.get(b)) is not None and ("N" in f.contexts or f.assumed)]
    return (Features.from_bits(bits) | (announced_only or Features())).to_bytes()


def default_alias(node_id: bytes) -> str:
    """An alias for a node that set none: recognisable and stable."""
    return f"lnpmsg-{node_id[1:4].hex()}"


def default_color(node_id: bytes) -> bytes:
    """A color for a node that set none: the first bytes of its key (as Core Lightning does)."""
    return node_id[:3]


def build_node_announcement(
    node_secret: bytes,
    timestamp: int,
    *,
    alias: str | None,
    rgb_color: bytes | None,
    addresses: Iterable[Address],
    features: bytes = b"",
) -> NodeAnnouncement:
    """Our node_announcement (default alias and color from the node id)."""
    node_id = public_key(node_secret)
    return sign_node_announcement(
        node_secret,
        timestamp,
        alias=alias if alias is not None else default_alias(node_id),
        rgb_color=rgb_color if rgb_color is not None else default_color(node_id),
        addresses=addresses,
        features=features,
        node_id=node_id,
    )


@dataclass(slots=True)
class _Sent:
    timestamp: int = 0
    at: float = float("-inf")
    policy: FeePolicy | None = None
    disabled: bool | None = None


@dataclass(slots=True)
class UpdatePlanner:
    """When to sign our next channel_update of each channel (sans-IO: ``now`` is passed in).

    BOLT 7 asks for no redundant updates and strictly increasing timestamps,
    and nodes rate-limit updates that flap: a changed policy is due at once
    (but at most one update per ``min_interval`` seconds); a peer that went
    away disables the channel only after ``disable_delay`` seconds (a quick
    reconnection announces nothing); re-enabling is due at once.
    """

    min_interval: float = 60.0
    disable_delay: float = 60.0
    _sent: dict[int, _Sent] = field(default_factory=dict)
    _gone_since: dict[int, float] = field(default_factory=dict)

    def known(self, scid: int, timestamp: int) -> None:
        """The latest timestamp already announced for the channel (e.g. from the gossip store)."""
        sent = self._sent.setdefault(scid, _Sent())
        sent.timestamp = max(sent.timestamp, timestamp)

    def peer_state(self, scid: int, connected: bool, now: float) -> None:
        """The channel's peer is connected or not (only the change matters)."""
        if connected:
            self._gone_since.pop(scid, None)
        else:
            self._gone_since.setdefault(scid, now)

    def wanted_disabled(self, scid: int, now: float) -> bool:
        since = self._gone_since.get(scid)
        return since is not None and now - since >= self.disable_delay

    def due(self, scid: int, policy: FeePolicy, now: float) -> tuple[bool, float | None]:
        """(due now?, when to ask again: None if nothing waits)."""
        sent = self._sent.get(scid)
        disabled = self.wanted_disabled(scid, now)
        next_check: float | None = None
        since = self._gone_since.get(scid)
        if since is not None and not disabled:
            next_check = since + self.disable_delay
        if sent is not None and sent.policy == policy and sent.disabled == disabled:
            return False, next_check
        if sent is not None and now - sent.at < self.min_interval:
            return False, sent.at + self.min_interval
        return True, next_check

    def take(self, scid: int, policy: FeePolicy, now: float) -> tuple[int, bool]:
        """Record an update signed now: its (timestamp, disabled)."""
        sent = self._sent.setdefault(scid, _Sent())
        disabled = self.wanted_disabled(scid, now)
        sent.timestamp = max(int(now), sent.timestamp + 1)
        sent.at = now
        sent.policy = policy
        sent.disabled = disabled
        return sent.timestamp, disabled

    def again(self, scid: int) -> None:
        """Sign the next update now (what was sent was lost), still after the last timestamp."""
        sent = self._sent.get(scid)
        if sent is not None:
            sent.policy = None
            sent.at = float("-inf")

    def forget(self, scid: int) -> None:
        self._sent.pop(scid, None)
        self._gone_since.pop(scid, None)
