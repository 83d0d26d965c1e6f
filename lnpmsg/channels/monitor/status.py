"""A channel monitor's on-chain state as JSON-ready data (for ``listchannels``/``listfunds``-style views).

``monitor_status(monitor)`` says whether the channel is still open on chain,
which commitment closed it, and per output what it waits for: its timelock
(``awaiting_timelock`` with the height it opens at), a confirmation of the
claim being broadcast (``broadcast``), or nothing (``swept``, with height
and whether we or the peer took it).
"""

from __future__ import annotations

from typing import Any

from .core import ChannelMonitor
from .events import CommitmentSeen, FundingSpent, Irrevocable, OutputSwept, OutputToWallet

__all__ = ["monitor_status"]


def monitor_status(monitor: ChannelMonitor) -> dict[str, Any]:
    """The state of ``monitor``'s channel on chain, as plain data."""
    facts = monitor.facts()
    height = monitor.height
    status: dict[str, Any] = {"funding": str(monitor.setup.funding_outpoint), "height": height}
    seen = [f for f in facts if isinstance(f, CommitmentSeen)]
    closed = [f for f in facts if isinstance(f, FundingSpent)]
    if seen:
        status["commitment"] = {"kind": seen[0].kind.value, "txid": seen[0].txid[::-1].hex(),
                                "number": seen[0].commitment_number, "height": seen[0].height}  # fmt: skip
    elif closed:
        status["closing_txid"] = closed[0].txid[::-1].hex()
    if any(isinstance(f, Irrevocable) for f in facts):
        status["state"] = "irrevocably_resolved"
    elif seen or closed:
        status["state"] = "resolving"
    else:
        status["state"] = "open"
    next_block = (height or 0) + 1
    outputs = []
    for claim in monitor.pending_claims():
        entry = {"outpoint": str(claim.outpoint), "what": claim.what, "amount_sat": claim.spendable.amount_sat,
                 "deadline": claim.deadline}  # fmt: skip
        if claim.earliest > next_block:
            entry |= {"state": "awaiting_timelock", "spendable_at": claim.earliest}
        else:
            entry["state"] = "broadcast"
        outputs.append(entry)
    for fact in facts:
        if isinstance(fact, OutputSwept):
            outputs.append({"outpoint": str(fact.outpoint), "what": fact.what, "amount_sat": fact.amount_sat,
                            "state": "swept", "by": "us" if fact.ours else "peer", "height": fact.height,
                            "txid": fact.txid[::-1].hex()})  # fmt: skip
        elif isinstance(fact, OutputToWallet):
            outputs.append({"outpoint": str(fact.outpoint), "what": "to_remote", "amount_sat": fact.amount_sat,
                            "state": "in_wallet", "height": fact.height})  # fmt: skip
    status["outputs"] = outputs
    status["locked_sat"] = sum(o["amount_sat"] for o in outputs if o["state"] in ("awaiting_timelock", "broadcast"))
    return status
