"""``lnpmsg node``'s channel options: what we announce to peers and what we accept from them.

The defaults are :class:`~.params.ChannelConfig`'s and :class:`~.params.OpeningPolicy`'s
(close to Core Lightning's: 3 confirmations, a 144-block to_self_delay, 30 HTLCs
each way, a 1% reserve, a 546 sat dust limit; peers' to_self_delay up to 2016
blocks, feerates 253..100000 sat per 1000 weight). In a config file each option
is its name without ``--`` (``channel-min-depth = 6``; a switch takes true or
false: ``require-channel-type = true``).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from lnpmsg.rpc.params import ParamsError
from lnpmsg.wire import Features

from .errors import RemoteFault
from .params import ChannelConfig, OpeningPolicy, check_shutdown_script

__all__ = ["CHANNEL_TYPES", "CHANNEL_TYPE_CHOICES", "HRPS", "OPTIONS", "SWITCHES", "add_node_options", "channel_settings", "options_from_args", "type_variations", "with_channel_type"]

#: the address prefix of each network (for --channel-upfront-shutdown-address)
HRPS = {"bitcoin": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}

#: option -> (ChannelConfig or OpeningPolicy field, help); every value is a non-negative integer
OPTIONS: dict[str, tuple[str, str]] = {
    "channel-min-depth": ("config.minimum_depth", "confirmations we ask of a funding before channel_ready (minimum_depth)"),
    "channel-to-self-delay": ("config.to_self_delay", "blocks the peer must wait to spend its own funds after a unilateral close"),
    "channel-max-accepted-htlcs": ("config.max_accepted_htlcs", "HTLCs the peer may offer us at once (at most 483)"),
    "channel-max-htlc-in-flight-msat": ("config.max_htlc_value_in_flight_msat", "the most the peer's HTLCs to us may hold at once"),
    "channel-htlc-minimum-msat": ("config.htlc_minimum_msat", "the smallest HTLC we accept"),
    "channel-dust-limit-sat": ("config.dust_limit_sat", "outputs of our commitment below this are left out (at least 354)"),
    "channel-reserve-sat": ("config.channel_reserve_sat", "the reserve the peer must keep (default: 1%% of the channel)"),
    "channel-max-peer-to-self-delay": ("policy.max_to_self_delay", "refuse a peer that makes us wait longer than this"),
    "channel-max-peer-min-depth": ("policy.max_minimum_depth", "refuse a peer that asks more confirmations than this"),
    "channel-min-feerate": ("policy.min_feerate_per_kw", "the lowest commitment feerate (sat per 1000 weight) we accept"),
    "channel-max-feerate": ("policy.max_feerate_per_kw", "the highest commitment feerate we accept"),
    "channel-min-funding-sat": ("policy.min_funding_sat", "refuse smaller channels"),
    "dual-fund-contribute": (
        "policy.dual_fund_contribute_sat",
        "with --dual-fund: satoshis our wallet puts into each dual-funded channel a peer opens to us",
    ),
    "channel-rbf-wait-blocks": (
        "policy.rbf_wait_blocks",
        "blocks mined since a splice's last version was signed before its fee may be bumped again, by us "
        "(bumpsplice) or the peer (tx_init_rbf): BOLT 2's wait for that version to confirm; 0: at once",
    ),
}

#: switch -> (OpeningPolicy field, help): off unless given (the field's default), on sets the field True
SWITCHES: dict[str, tuple[str, str]] = {
    "require-channel-type": (
        "policy.require_channel_type",
        "refuse a peer's open_channel or accept_channel that has no channel_type TLV (BOLT 2's strict rule; "
        "lnpmsg always sends one). Off by default: a missing channel_type is taken as the type both nodes' init "
        "features imply (for an accept_channel: the type we proposed), as before BOLT 2 made channel_type "
        "mandatory, so that peers written before that rule, like lnprototest 0.0.7's BOLT 2 scripts, still open "
        "channels; the type is unambiguous either way. Turn it on to hold peers to the current BOLTs",
    ),
    "dual-fund": (
        "policy.dual_fund",
        "offer option_dual_fund (feature bit 29) and open channels with peers that offer it by channel "
        "establishment v2 (BOLT 2: interactive funding, both sides may put in coins). Off by default: it is "
        "tested between lnpmsg nodes only, and offering it makes Core Lightning peers open v2 channels to us",
    ),
}


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """The ``Channels`` option group of ``lnpmsg node``."""
    group = parser.add_argument_group("Channels", "What the node announces in open/accept_channel and what it accepts from peers (with --chain or --bitcoind-rpc).")
    config, policy = ChannelConfig(), OpeningPolicy()
    for option, (target, text) in OPTIONS.items():
        owner, name = target.split(".")
        default = getattr(config if owner == "config" else policy, name)
        shown = "" if default is None or default >= 2**63 else f" (default: {default})"
        group.add_argument(f"--{option}", type=_non_negative, metavar="N", help=text + shown)
    group.add_argument("--channel-upfront-shutdown-address", metavar="ADDRESS",
                       help="commit every new channel to close to this address (upfront_shutdown_script)")  # fmt: skip
    for option, (_, text) in SWITCHES.items():
        # default None, not False: only a switch that was given reaches the channel settings
        group.add_argument(f"--{option}", action="store_true", default=None, help=text)
    group.add_argument("--zeroconf-peer", action="append", metavar="NODEID", type=_node_id,
                       help="accept zero-conf channels (option_zeroconf: usable before the funding confirms) from this "
                            "peer; repeat for more. Trusting a peer's unconfirmed funding is a decision of yours: none by default")  # fmt: skip


def _node_id(text: str) -> str:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 33 or raw[0] not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected a node id (66 hex digits), got {text!r}")
    return raw.hex()



def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The channel options given on the command line or in the config file (name -> value)."""
    chosen: dict[str, Any] = {}
    for option in (*OPTIONS, "channel-upfront-shutdown-address", *SWITCHES, "zeroconf-peer"):
        value = getattr(args, option.replace("-", "_"), None)
        if value is not None:
            chosen[option] = value
    return chosen


def channel_settings(options: dict[str, Any], hrp: str) -> tuple[ChannelConfig, OpeningPolicy]:
    """The channel app's config and policy from :func:`options_from_args`'s dict; ValueError names a bad option."""
    # here, not at the top: ``lnpmsg node`` reads the options of this module without a chain
    from lnpmsg.chain.address import script_for_address
    from lnpmsg.chain.errors import ChainError

    config_changes: dict[str, Any] = {}
    policy_changes: dict[str, Any] = {}
    for option, value in options.items():
        if option == "channel-upfront-shutdown-address":
            try:
                script = script_for_address(value, hrp)
            except ChainError as exc:
                raise ValueError(f"--channel-upfront-shutdown-address: {exc.reason}") from None
            try:
                check_shutdown_script(script, anysegwit=True, simple_close=False)
            except RemoteFault:
                raise ValueError(f"--channel-upfront-shutdown-address: {value} is not a form a shutdown may pay") from None
            config_changes["upfront_shutdown_script"] = script
            continue
        if option == "zeroconf-peer":  # (a config file gives one line or a list)
            try:
                policy_changes["zeroconf_peers"] = tuple(bytes.fromhex(_node_id(n)) for n in ([value] if isinstance(value, str) else value))
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"--zeroconf-peer: {exc}") from None
            continue
        owner, name = (OPTIONS.get(option) or SWITCHES[option])[0].split(".")
        (config_changes if owner == "config" else policy_changes)[name] = value
    config = replace(ChannelConfig(), **config_changes)
    policy = replace(OpeningPolicy(), **policy_changes)
    if not 1 <= config.max_accepted_htlcs <= 483:
        raise ValueError("--channel-max-accepted-htlcs: between 1 and 483 (BOLT 2)")
    if config.dust_limit_sat < 354:
        raise ValueError("--channel-dust-limit-sat: at least 354 (BOLT 2)")
    if policy.min_feerate_per_kw > policy.max_feerate_per_kw:
        raise ValueError("--channel-min-feerate is above --channel-max-feerate")
    if not 1 <= config.to_self_delay <= 2016:
        # 0 leaves no time to punish a revoked commitment; peers refuse more than 2016
        raise ValueError(f"--channel-to-self-delay {config.to_self_delay}: give 1 to 2016 blocks")
    if config.minimum_depth > policy.max_minimum_depth or config.minimum_depth < 1:
        raise ValueError(f"--channel-min-depth: between 1 and --channel-max-peer-min-depth ({policy.max_minimum_depth})")
    return config, policy


#: the names ``fundchannel`` takes for a channel type (lnd's and the BOLTs' spellings); each may be
#: followed by ``+scid_alias`` (a private channel known by its aliases only), or ``scid_alias`` alone
#: (the default basic type with it)
CHANNEL_TYPES = {"static_remotekey": False, "tweakless": False, "anchors": True, "anchors_zero_fee_htlc_tx": True}
#: the ``--channel-type`` choices of ``lnpmsg fundchannel``
CHANNEL_TYPE_CHOICES = ("static_remotekey", "anchors", "scid_alias", "static_remotekey+scid_alias", "anchors+scid_alias")
_ANCHORS_BITS = (22, 23)
_SCID_ALIAS_BITS, _ZEROCONF_BITS = (46, 47), (50, 51)


def type_variations(remote: Features, channel_type: str | None, *, zeroconf: bool, announce: bool) -> tuple[str | None, tuple[int, ...]]:
    """``fundchannel``'s channel type split into its basic type (None: the default) and the variation
    bits to ask (option_scid_alias 46, option_zeroconf 50), checked against the peer's init features."""
    bits: list[int] = []
    if channel_type is not None and (channel_type == "scid_alias" or channel_type.endswith("+scid_alias")):
        channel_type = None if channel_type == "scid_alias" else channel_type.removesuffix("+scid_alias")
        if announce:
            raise ParamsError("option_scid_alias is for private channels only (BOLT 2): not with announce")
        if not any(remote.has(b) for b in _SCID_ALIAS_BITS):
            raise ParamsError("the peer does not offer option_scid_alias (bits 46/47)")
        bits.append(_SCID_ALIAS_BITS[0])
    if zeroconf:
        # BOLT 9: option_zeroconf depends on option_scid_alias (the channel is used by its alias until it confirms)
        if not any(remote.has(b) for b in _ZEROCONF_BITS) or not any(remote.has(b) for b in _SCID_ALIAS_BITS):
            raise ParamsError("the peer does not offer option_zeroconf (bits 50/51) with option_scid_alias (46/47)")
        bits.append(_ZEROCONF_BITS[0])
    return channel_type, tuple(bits)


def with_channel_type(local: int, remote: Features, channel_type: str | None) -> int:
    """Our init features as the open sees them: without the anchors bits for a static_remotekey channel."""
    if channel_type is None:
        return local
    if channel_type not in CHANNEL_TYPES:
        raise ParamsError(f"channel_type is one of {', '.join(CHANNEL_TYPES)} (each optionally +scid_alias), got {channel_type!r}")
    if not CHANNEL_TYPES[channel_type]:
        return local & ~sum(1 << b for b in _ANCHORS_BITS)
    if not any(remote.has(b) for b in _ANCHORS_BITS):
        raise ParamsError("the peer does not offer option_anchors_zero_fee_htlc_tx (bits 22/23)")
    return local
