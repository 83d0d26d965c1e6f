"""The ``onchain.*`` events the channel monitors' shell (:mod:`.onchain`) publishes: one per
monitor event, its detail JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lnpmsg.bitcoin.tx import OutPoint

from .monitor import CommitmentSeen, FundingSpent, HtlcResolved, Irrevocable, MonitorEvent, OutputSwept, OutputToWallet, Reorged

__all__ = ["OnchainEvent", "onchain_event"]


@dataclass(frozen=True, slots=True)
class OnchainEvent:
    """An ``onchain.*`` event: ``topic`` is ``onchain.commitment``, ``onchain.swept``,
    ``onchain.to_wallet``, ``onchain.htlc``, ``onchain.closed``, ``onchain.irrevocable``
    or ``onchain.reorged``; ``detail`` is JSON-ready."""

    topic: str
    channel_id: bytes
    detail: dict[str, Any]


def onchain_event(channel_id: bytes, event: MonitorEvent) -> OnchainEvent:
    """The event published for a monitor's ``event`` on channel ``channel_id``."""
    return OnchainEvent(_topic(event), channel_id, _detail(event))


def _topic(event: MonitorEvent) -> str:
    return {
        CommitmentSeen: "onchain.commitment", FundingSpent: "onchain.closed", OutputSwept: "onchain.swept",
        OutputToWallet: "onchain.to_wallet", HtlcResolved: "onchain.htlc", Irrevocable: "onchain.irrevocable",
        Reorged: "onchain.reorged",
    }.get(type(event), "onchain.event")  # fmt: skip


def _detail(event: Any) -> dict[str, Any]:
    if isinstance(event, Reorged):
        return {"event": _topic(event.event), **_detail(event.event)}
    out: dict[str, Any] = {}
    for name in event.__slots__:
        value = getattr(event, name)
        if isinstance(value, bytes):
            value = value[::-1].hex() if name == "txid" else value.hex()
        elif isinstance(value, OutPoint):
            value = str(value)
        elif hasattr(value, "value"):
            value = value.value
        out[name] = value
    return out
