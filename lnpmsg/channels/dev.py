"""Developer overrides for channels, as conformance suites need them
(sans-IO: values in, values out).

A suite such as lnprototest scripts the peer side of a channel byte for
byte, so it must know the node's channel keys in advance. Core Lightning
lets it force them with ``--dev-force-channel-secrets``; ``lnpmsg node``
takes the same option in the same format (six 32-byte hex values joined
by ``/``: funding key, revocation, payment, delayed-payment and HTLC
basepoint secrets, shachain seed) and ``--dev-funding-confirms N``.

How the channel app uses a :class:`DevOptions`:

- every new channel's secrets: ``dev.channel_secrets_or(derived)``, i.e. the
  forced :class:`~lnpmsg.channels.params.ChannelSecrets` when given (the same
  for every channel, as in Core Lightning), else the app's own derivation;
- the channel limits: ``dev.channel_config(config)`` (``minimum_depth``
  replaced by ``--dev-funding-confirms``).

Never use forced secrets with real funds: anyone who knows them can take
the channel's money.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lnpmsg._hex import parse_hex

from .errors import ChannelError
from .keys import pubkey_from_privkey
from .params import ChannelConfig, ChannelSecrets

__all__ = ["MAX_FUNDING_CONFIRMS", "DevOptions", "format_channel_secrets", "parse_channel_secrets"]

#: the largest --dev-funding-confirms: BOLT 2 lets an accepter refuse a
#: minimum_depth it finds unreasonable, and a week of blocks is past any
MAX_FUNDING_CONFIRMS = 1008

_SECRET_NAMES = (
    "funding key",
    "revocation basepoint secret",
    "payment basepoint secret",
    "delayed-payment basepoint secret",
    "HTLC basepoint secret",
    "shachain seed",
)


def parse_channel_secrets(text: str) -> ChannelSecrets:
    """Parse Core Lightning's ``--dev-force-channel-secrets`` value:
    ``FUNDING/REVOCATION/PAYMENT/DELAYEDPAYMENT/HTLC/SHASEED``, each 64 hex chars.

    Raises ``ChannelError`` naming the bad part.
    """
    parts = text.strip().split("/")
    if len(parts) != len(_SECRET_NAMES):
        raise ChannelError(
            f"channel secrets take {len(_SECRET_NAMES)} hex values joined by '/' "
            f"(funding/revocation/payment/delayedpayment/htlc/shaseed), got {len(parts)}"
        )
    values: list[bytes] = []
    for name, part in zip(_SECRET_NAMES, parts):
        try:
            value = parse_hex(part, f"the {name}", 32, quote=False)
        except ValueError as exc:
            raise ChannelError(str(exc)) from None
        if name != "shachain seed":
            try:
                pubkey_from_privkey(value)
            except ChannelError as exc:
                raise ChannelError(f"the {name} is not a valid secret key: {exc}") from None
        values.append(value)
    return ChannelSecrets(*values)


def format_channel_secrets(secrets: ChannelSecrets) -> str:
    """The ``--dev-force-channel-secrets`` value for ``secrets`` (inverse of :func:`parse_channel_secrets`)."""
    return "/".join(
        getattr(secrets, field).hex()
        for field in (
            "funding_privkey",
            "revocation_basepoint_secret",
            "payment_basepoint_secret",
            "delayed_payment_basepoint_secret",
            "htlc_basepoint_secret",
            "shachain_seed",
        )
    )


@dataclass(frozen=True, slots=True)
class DevOptions:
    """What the ``--dev-*`` options of ``lnpmsg node`` ask of the apps.

    Attributes:
        channel_secrets: use these secrets for every channel (None: derive them).
        funding_confirms: the funding depth to ask of channel peers (None: the app's default).
        fast_gossip: flush and prune gossip on short intervals (seconds, not minutes).
        import_privkeys: raw secp256k1 keys whose P2WPKH outputs the wallet watches and spends.
        policy_grace: seconds a channel's previous fee policy is still accepted after
            ``setchannelfee`` (None: BOLT 7's 10 minutes; 0: the new one at once).
        update_interval: the least seconds between two of our channel_updates of one
            channel, and two node_announcements (None: the announce app's 10 s; 0: none).
    """

    channel_secrets: ChannelSecrets | None = None
    funding_confirms: int | None = None
    fast_gossip: bool = False
    import_privkeys: tuple[bytes, ...] = ()
    policy_grace: float | None = None
    update_interval: float | None = None

    def __post_init__(self) -> None:
        if self.funding_confirms is not None and not 1 <= self.funding_confirms <= MAX_FUNDING_CONFIRMS:
            raise ChannelError(f"funding confirms must be 1..{MAX_FUNDING_CONFIRMS}, got {self.funding_confirms}")
        for key in self.import_privkeys:
            pubkey_from_privkey(key)
        if self.policy_grace is not None and not 0 <= self.policy_grace <= 86_400:
            raise ChannelError(f"the policy grace must be 0..86400 seconds, got {self.policy_grace:g}")
        if self.update_interval is not None and not 0 <= self.update_interval <= 86_400:
            raise ChannelError(f"the update interval must be 0..86400 seconds, got {self.update_interval:g}")

    @property
    def active(self) -> bool:
        """Whether any developer option is set (the node logs a warning then)."""
        return bool(self.channel_secrets or self.funding_confirms or self.fast_gossip or self.import_privkeys
                    or self.policy_grace is not None or self.update_interval is not None)  # fmt: skip

    def channel_secrets_or(self, derived: ChannelSecrets) -> ChannelSecrets:
        """The forced secrets if any, else ``derived`` (the app's own, per channel)."""
        return self.channel_secrets if self.channel_secrets is not None else derived

    def channel_config(self, config: ChannelConfig) -> ChannelConfig:
        """``config`` with ``minimum_depth`` set by ``funding_confirms`` (unchanged if None)."""
        if self.funding_confirms is None:
            return config
        return replace(config, minimum_depth=self.funding_confirms)
