"""What a channel monitor reports (sans-IO): frozen events, each a fact about the chain.

Most events state a fact that a reorg can take back: the monitor then
reports :class:`Reorged` with the event that no longer holds (a learned
preimage stays learned). :class:`NeedFeeInput` is a request the shell
answers with :meth:`~.core.ChannelMonitor.provide_fee_input`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from lnpmsg.bitcoin.tx import OutPoint

__all__ = [
    "CommitmentKind",
    "CommitmentSeen",
    "FundingSpent",
    "HtlcResolved",
    "Irrevocable",
    "MonitorEvent",
    "NeedFeeInput",
    "OutputSwept",
    "OutputToWallet",
    "Reorged",
]


class CommitmentKind(Enum):
    """Whose commitment spent the funding output."""

    OURS = "ours"
    THEIRS_CURRENT = "theirs_current"
    THEIRS_PREVIOUS = "theirs_previous"
    #: a commitment of theirs newer than anything we know (we lost data)
    THEIRS_UNKNOWN = "theirs_unknown"
    REVOKED = "revoked"
    #: an older commitment of ours (revoked: e.g. a node started from an old copy of our store broadcast it)
    OURS_REVOKED = "ours_revoked"


@dataclass(frozen=True, slots=True)
class CommitmentSeen:
    """A commitment transaction spent the funding output at ``height``."""

    kind: CommitmentKind
    txid: bytes
    commitment_number: int
    height: int


@dataclass(frozen=True, slots=True)
class FundingSpent:
    """The funding output was spent by something that is no commitment we know
    (a cooperative close, or a leaked key): nothing to claim."""

    txid: bytes
    height: int


@dataclass(frozen=True, slots=True)
class OutputSwept:
    """An output the monitor was resolving was spent: by our claim (``ours``) or by the peer."""

    outpoint: OutPoint
    txid: bytes
    height: int
    amount_sat: int
    ours: bool
    what: str


@dataclass(frozen=True, slots=True)
class OutputToWallet:
    """An output that is already ours with no script to satisfy (static_remotekey's to_remote):
    the wallet spends it with the payment basepoint key."""

    outpoint: OutPoint
    amount_sat: int
    script_pubkey: bytes
    height: int


@dataclass(frozen=True, slots=True)
class HtlcResolved:
    """An HTLC's output was resolved on chain.

    ``offered`` is from our view (we paid it). ``preimage`` is set when the
    spend revealed it (forward it upstream!); ``None`` means it timed out.
    """

    htlc_id: int
    offered: bool
    payment_hash: bytes
    preimage: bytes | None
    txid: bytes
    height: int


@dataclass(frozen=True, slots=True)
class Irrevocable:
    """Everything is resolved and buried :data:`~.core.IRREVOCABLE_DEPTH` deep: the monitor may be archived."""

    height: int


@dataclass(frozen=True, slots=True)
class Reorged:
    """``event`` no longer holds: its transaction left the chain (the claim is re-evaluated)."""

    event: CommitmentSeen | FundingSpent | OutputSwept | OutputToWallet | HtlcResolved


@dataclass(frozen=True, slots=True)
class NeedFeeInput:
    """A claim needs a wallet coin of at least ``amount_sat`` to pay its fee (anchor CPFP, HTLC transactions)."""

    group: str
    amount_sat: int
    feerate_per_kw: int


MonitorEvent: TypeAlias = (
    CommitmentSeen | FundingSpent | OutputSwept | OutputToWallet | HtlcResolved | Irrevocable | Reorged | NeedFeeInput
)
