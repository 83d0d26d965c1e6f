"""Channel parameters: our secrets and limits, the peer's, and the checks of
``open_channel`` / ``accept_channel`` (BOLT 2 "The channel_establishment v1").

Every "MUST fail the negotiation" rule of BOLT 2 for these two messages is
one check in :func:`check_open` or :func:`check_accept`; the "MAY fail"
ones are bounds of :class:`OpeningPolicy` (what this node finds reasonable).
A failed check raises :class:`~lnpmsg.channels.errors.RemoteFault`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import OP_0, OP_RETURN, is_op_return
from lnpmsg.wire import Features

from .errors import ChannelError, RemoteFault
from .keys import (
    ChannelBasepoints,
    check_pubkey,
    derive_privkey,
    per_commitment_point,
    pubkey_from_privkey,
)
from .shachain import FIRST_INDEX, per_commitment_secret

if TYPE_CHECKING:
    # the BOLT-2 messages (their codecs are compiled at import) only where they are checked:
    # the node's options and secrets need these settings, not the messages
    from lnpmsg.bitcoin.tx import OutPoint

    from .messages import AcceptChannel, OpenChannel

__all__ = [
    "ANCHORS_BIT",
    "MAX_ACCEPTED_HTLCS_LIMIT",
    "MIN_DUST_LIMIT_SAT",
    "STATIC_REMOTEKEY_BIT",
    "ChannelConfig",
    "ChannelSecrets",
    "OpeningPolicy",
    "PeerParams",
    "check_accept",
    "check_open",
    "check_shutdown_script",
    "negotiate_channel_type",
    "opening_tlvs",
    "v1_channel_id",
]

#: BOLT 2: max_accepted_htlcs above 483 fails (the commitment must stay relayable).
MAX_ACCEPTED_HTLCS_LIMIT = 483
#: BOLT 2: a dust limit below 354 sat fails (the largest standard dust threshold).
MIN_DUST_LIMIT_SAT = 354
#: option_static_remotekey (required bit); option_anchors (zero-fee HTLC transactions).
STATIC_REMOTEKEY_BIT = 12
ANCHORS_BIT = 22
#: the variations a basic channel type may have (named in :mod:`.ready`, which imports this module)
_SCID_ALIAS_BIT, _ZEROCONF_BIT = 46, 50
#: The channel types this core builds commitments for: static_remotekey, and with anchors.
_SUPPORTED_TYPES = (
    Features.from_bits([STATIC_REMOTEKEY_BIT]),
    Features.from_bits([STATIC_REMOTEKEY_BIT, ANCHORS_BIT]),
)


@dataclass(frozen=True, slots=True)
class ChannelSecrets:
    """Our private keys for one channel: funding key, four basepoint secrets, shachain seed."""

    funding_privkey: bytes
    revocation_basepoint_secret: bytes
    payment_basepoint_secret: bytes
    delayed_payment_basepoint_secret: bytes
    htlc_basepoint_secret: bytes
    shachain_seed: bytes

    def basepoints(self) -> ChannelBasepoints:
        """The public side, as sent in open/accept_channel."""
        return ChannelBasepoints(
            funding_pubkey=pubkey_from_privkey(self.funding_privkey),
            revocation_basepoint=pubkey_from_privkey(self.revocation_basepoint_secret),
            payment_basepoint=pubkey_from_privkey(self.payment_basepoint_secret),
            delayed_payment_basepoint=pubkey_from_privkey(self.delayed_payment_basepoint_secret),
            htlc_basepoint=pubkey_from_privkey(self.htlc_basepoint_secret),
        )

    def for_funding_key(self, index: int) -> ChannelSecrets:
        """These secrets with the funding key of the channel's ``index``-th splice (0: the open's).

        BOLT 2: each splice SHOULD use a new funding key; it is derived from the first one and the
        shachain seed, so the node derives it again from the channel's secrets and the index.
        """
        if index == 0:
            return self
        tweak_point = pubkey_from_privkey(sha256(self.shachain_seed + b"splice funding key" + index.to_bytes(4, "big")))
        return replace(self, funding_privkey=derive_privkey(self.funding_privkey, tweak_point))

    def commitment_secret(self, commitment_number: int) -> bytes:
        """The per-commitment secret of our commitment ``commitment_number`` (0, 1, ...)."""
        return per_commitment_secret(self.shachain_seed, FIRST_INDEX - commitment_number)

    def commitment_point(self, commitment_number: int) -> bytes:
        """The per-commitment point of our commitment ``commitment_number``."""
        return per_commitment_point(self.commitment_secret(commitment_number))


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """The limits we announce for a channel (what the peer must respect towards us)."""

    dust_limit_sat: int = 546
    max_htlc_value_in_flight_msat: int = 2**64 - 1
    #: The reserve we ask the peer to keep; None: 1% of the funding (at least our dust limit).
    channel_reserve_sat: int | None = None
    htlc_minimum_msat: int = 1
    to_self_delay: int = 144
    max_accepted_htlcs: int = 30
    #: confirmations asked of a funder's funding (1 at least: 0 only for a trusted zero-conf channel_type)
    minimum_depth: int = 3
    upfront_shutdown_script: bytes = b""
    #: where our funds go in a cooperative close when no upfront script was given (a wallet address)
    close_script: bytes = b""
    #: the closing feerate we aim at when the peer starts the close (sat per 1000 weight)
    closing_feerate_per_kw: int = 1000

    def reserve_for(self, funding_sat: int, peer_dust_limit_sat: int = 0) -> int:
        """The reserve to ask of the peer for a channel of ``funding_sat`` (BOLT 2: never below
        either side's dust limit, so the peer's reserved output is never trimmed)."""
        if self.channel_reserve_sat is not None:
            return self.channel_reserve_sat
        return max(funding_sat // 100, self.dust_limit_sat, peer_dust_limit_sat)


@dataclass(frozen=True, slots=True)
class OpeningPolicy:
    """What we accept from a peer (BOLT 2's "MAY fail" bounds), with sensible defaults."""

    min_funding_sat: int = 20_000
    max_funding_sat: int = 16_777_215  # without option_support_large_channel
    max_to_self_delay: int = 2016
    max_minimum_depth: int = 144
    min_feerate_per_kw: int = 253
    max_feerate_per_kw: int = 100_000
    max_htlc_minimum_msat: int = 1_000_000
    min_max_accepted_htlcs: int = 1
    max_reserve_ratio: float = 0.2
    max_dust_limit_sat: int = 20_000
    anysegwit: bool = True
    simple_close: bool = False
    #: BOLT 2 (option_channel_type ASSUMED since 2025) fails an open_channel or accept_channel
    #: without channel_type. We always send one, but by default take a missing one as the type
    #: the init features imply (static_remotekey, or anchors when both offer them), as before
    #: that rule: peers and conformance scripts written earlier (lnprototest 0.0.7's BOLT 2
    #: peer) omit it, and the type is still unambiguous. True: the strict rule
    #: (``lnpmsg node --require-channel-type``).
    require_channel_type: bool = False
    #: peers whose zero-conf channels (channel_type option_zeroconf) we accept (``--zeroconf-peer``):
    #: their funding is trusted before it confirms, so none by default
    zeroconf_peers: tuple[bytes, ...] = ()
    #: option_dual_fund (``--dual-fund``): offer it, and open (and accept) v2 channels with peers that offer it
    dual_fund: bool = False
    #: what we put into a peer's dual-funded channel when our wallet can (``--dual-fund-contribute``)
    dual_fund_contribute_sat: int = 0
    #: BOLT 2 (splicing): an RBF attempt too soon after the last version is refused, to give that
    #: one time to confirm: a splice's fee is bumped (by either side) only once this many blocks
    #: were mined since its last version was signed (0: at once)
    rbf_wait_blocks: int = 1

    def check_feerate(self, feerate_per_kw: int) -> None:
        """A proposed commitment feerate out of our bounds fails the channel."""
        if not self.min_feerate_per_kw <= feerate_per_kw <= self.max_feerate_per_kw:
            raise RemoteFault(
                f"feerate_per_kw {feerate_per_kw} outside {self.min_feerate_per_kw}..{self.max_feerate_per_kw}"
            )


@dataclass(frozen=True, slots=True)
class PeerParams:
    """The limits and keys one side announced in open/accept_channel."""

    dust_limit_sat: int
    max_htlc_value_in_flight_msat: int
    channel_reserve_sat: int
    htlc_minimum_msat: int
    to_self_delay: int
    max_accepted_htlcs: int
    basepoints: ChannelBasepoints
    first_per_commitment_point: bytes
    upfront_shutdown_script: bytes = b""

    @classmethod
    def from_message(cls, msg: OpenChannel | AcceptChannel) -> PeerParams:
        """The peer's parameters from its message (keys checked on the curve)."""
        try:
            basepoints = ChannelBasepoints(
                msg.funding_pubkey, msg.revocation_basepoint, msg.payment_basepoint,
                msg.delayed_payment_basepoint, msg.htlc_basepoint,
            )  # fmt: skip
            check_pubkey(msg.first_per_commitment_point)
        except ChannelError as exc:
            raise RemoteFault(f"invalid key: {exc}") from None
        return cls(
            dust_limit_sat=msg.dust_limit_satoshis,
            max_htlc_value_in_flight_msat=msg.max_htlc_value_in_flight_msat,
            channel_reserve_sat=msg.channel_reserve_satoshis,
            htlc_minimum_msat=msg.htlc_minimum_msat,
            to_self_delay=msg.to_self_delay,
            max_accepted_htlcs=msg.max_accepted_htlcs,
            basepoints=basepoints,
            first_per_commitment_point=msg.first_per_commitment_point,
            upfront_shutdown_script=msg.tlvs.get("upfront_shutdown_script", b""),
        )


def check_shutdown_script(script: bytes, *, anysegwit: bool, simple_close: bool = False) -> None:
    """BOLT 2's allowed shutdown scripts: P2PKH, P2SH, P2WPKH, P2WSH, (anysegwit) witness v1-16,
    (simple_close) OP_RETURN; anything else is a :class:`RemoteFault`."""
    n = len(script)
    if n == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return
    if n == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87:
        return
    if script[:1] == bytes([OP_0]) and n in (22, 34) and script[1] == n - 2:
        return
    if anysegwit and 4 <= n <= 42 and 0x51 <= script[0] <= 0x60 and script[1] == n - 2:
        return
    if simple_close and is_op_return(script) and _valid_op_return(script):
        return
    raise RemoteFault(f"shutdown script {script.hex()} is not an allowed form")


def _valid_op_return(script: bytes) -> bool:
    body = script[1:]
    if len(body) >= 1 and 6 <= body[0] <= 75:
        return len(body) == 1 + body[0]
    return len(body) >= 2 and body[0] == 76 and 76 <= body[1] <= 80 and len(body) == 2 + body[1] and script[0] == OP_RETURN


def negotiate_channel_type(
    proposed: Features | None, local_features: Features, remote_features: Features
) -> Features:
    """The channel type: the one proposed if we build it, else the best both sides' init features allow."""
    if proposed is not None:
        # a basic type, optionally with option_scid_alias (46) and/or option_zeroconf (50) (BOLT 2)
        if proposed.clear(_SCID_ALIAS_BIT).clear(_ZEROCONF_BIT) not in _SUPPORTED_TYPES:
            raise RemoteFault(f"channel_type {proposed!r} is not one we support")
        return proposed
    if not (local_features.supports(STATIC_REMOTEKEY_BIT) and remote_features.supports(STATIC_REMOTEKEY_BIT)):
        raise RemoteFault("option_static_remotekey is needed (legacy commitments are not supported)")
    if local_features.supports(ANCHORS_BIT) and remote_features.supports(ANCHORS_BIT):
        return _SUPPORTED_TYPES[1]
    return _SUPPORTED_TYPES[0]


def _check_common(params: PeerParams, policy: OpeningPolicy, funding_sat: int) -> None:
    if params.to_self_delay > policy.max_to_self_delay:
        raise RemoteFault(f"to_self_delay {params.to_self_delay} is above our limit {policy.max_to_self_delay}")
    if params.max_accepted_htlcs > MAX_ACCEPTED_HTLCS_LIMIT:
        raise RemoteFault(f"max_accepted_htlcs {params.max_accepted_htlcs} is above 483")
    if params.max_accepted_htlcs < policy.min_max_accepted_htlcs:
        raise RemoteFault(f"max_accepted_htlcs {params.max_accepted_htlcs} is too small")
    if params.dust_limit_sat < MIN_DUST_LIMIT_SAT:
        raise RemoteFault(f"dust_limit_satoshis {params.dust_limit_sat} is below 354")
    if params.dust_limit_sat > policy.max_dust_limit_sat:
        raise RemoteFault(f"dust_limit_satoshis {params.dust_limit_sat} is unreasonably large")
    if params.htlc_minimum_msat > policy.max_htlc_minimum_msat:
        raise RemoteFault(f"htlc_minimum_msat {params.htlc_minimum_msat} is unreasonably large")
    if params.channel_reserve_sat > funding_sat * policy.max_reserve_ratio:
        raise RemoteFault(f"channel_reserve_satoshis {params.channel_reserve_sat} is unreasonably large")
    if params.upfront_shutdown_script:
        check_shutdown_script(params.upfront_shutdown_script, anysegwit=policy.anysegwit, simple_close=policy.simple_close)


def check_open(
    msg: OpenChannel, policy: OpeningPolicy, config: ChannelConfig, chain_hash: bytes, *, initial_fee_sat: int
) -> PeerParams:
    """The fundee's checks of ``open_channel``; ``initial_fee_sat`` is the first commitment's fee
    (and anchors) at the proposed feerate. Returns the funder's parameters."""
    if msg.chain_hash != chain_hash:
        raise RemoteFault("open_channel for a chain we are not on")
    if not policy.min_funding_sat <= msg.funding_satoshis <= policy.max_funding_sat:
        raise RemoteFault(f"funding_satoshis {msg.funding_satoshis} outside our bounds")
    if msg.push_msat > msg.funding_satoshis * 1000:
        raise RemoteFault("push_msat is greater than funding_satoshis * 1000")
    policy.check_feerate(msg.feerate_per_kw)
    params = PeerParams.from_message(msg)
    _check_common(params, policy, msg.funding_satoshis)
    if params.channel_reserve_sat < params.dust_limit_sat:
        raise RemoteFault("channel_reserve_satoshis is less than dust_limit_satoshis")
    if config.dust_limit_sat > params.channel_reserve_sat:
        raise RemoteFault("the reserve asked of us is below our dust limit")
    funder_msat = msg.funding_satoshis * 1000 - msg.push_msat
    if funder_msat < initial_fee_sat * 1000:
        raise RemoteFault("the funder cannot pay the first commitment's fee")
    if funder_msat // 1000 - initial_fee_sat <= params.channel_reserve_sat and msg.push_msat // 1000 <= params.channel_reserve_sat:
        raise RemoteFault("both balances would be at or below the channel reserve")
    return params


def check_accept(
    msg: AcceptChannel, sent: OpenChannel, policy: OpeningPolicy, channel_type: Features | None
) -> PeerParams:
    """The funder's checks of ``accept_channel`` against the ``open_channel`` it sent."""
    if msg.temporary_channel_id != sent.temporary_channel_id:
        raise RemoteFault("accept_channel for another temporary_channel_id")
    if msg.minimum_depth > policy.max_minimum_depth:
        raise RemoteFault(f"minimum_depth {msg.minimum_depth} is unreasonably large")
    params = PeerParams.from_message(msg)
    _check_common(params, policy, sent.funding_satoshis)
    if sent.channel_reserve_satoshis < params.dust_limit_sat:
        raise RemoteFault("the reserve we asked is below the fundee's dust limit")
    if params.channel_reserve_sat < sent.dust_limit_satoshis:
        raise RemoteFault("the reserve asked of us is below our dust limit")
    if params.channel_reserve_sat < params.dust_limit_sat:
        raise RemoteFault("channel_reserve_satoshis is less than dust_limit_satoshis")
    from .messages import channel_type_features

    answered = channel_type_features(msg.tlvs)
    if channel_type is not None and answered is not None and answered != channel_type:
        raise RemoteFault(f"accept_channel channel_type {answered!r} differs from ours {channel_type!r}")
    return params


def opening_tlvs(upfront_shutdown_script: bytes, channel_type: bytes | None) -> dict[str, bytes]:
    """open/accept_channel TLVs: with any TLV, BOLT 2 wants upfront_shutdown_script (empty: none)."""
    if channel_type is None and not upfront_shutdown_script:
        return {}
    tlvs = {"upfront_shutdown_script": upfront_shutdown_script}
    if channel_type is not None:
        tlvs["channel_type"] = channel_type
    return tlvs


def v1_channel_id(outpoint: OutPoint) -> bytes:
    """BOLT 2: the funding txid with the output index XORed into its last two bytes."""
    tail = int.from_bytes(outpoint.txid[30:], "big") ^ outpoint.vout
    return outpoint.txid[:30] + tail.to_bytes(2, "big")
