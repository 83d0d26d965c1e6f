"""The channel monitor (BOLT 5): watches a channel's funding output and claims what is ours (sans-IO).

- :mod:`.updates`: the records a channel streams to its monitor, and their bytes
- :mod:`.signer`: the secrets the monitor signs with (kept out of the records)
- :mod:`.resolve`: what to claim when a commitment confirms
- :mod:`.bump`: fee schedule, re-bids, anchor CPFP, HTLC transaction aggregation
- :mod:`.deadlines`: when the channel must go on chain for its HTLCs
- :mod:`.core`: :class:`ChannelMonitor`, blocks in, transactions and events out
- :mod:`.bids`: its claims' fee bids: batching, re-bids, the anchor's CPFP child
- :mod:`.events`: what it reports
- :mod:`.status`: its on-chain state as JSON-ready data
"""

from .bump import FeeInput, target_feerate
from .core import CLTV_CLAIM_BUFFER, IRREVOCABLE_DEPTH, ChannelMonitor, MonitorError
from .events import (
    CommitmentKind,
    CommitmentSeen,
    FundingSpent,
    HtlcResolved,
    Irrevocable,
    MonitorEvent,
    NeedFeeInput,
    OutputSwept,
    OutputToWallet,
    Reorged,
)
from .signer import MonitorSecrets
from .updates import (
    ChannelSetup,
    DataLossDetected,
    LocalCommitment,
    MonitorUpdate,
    MonitorUpdateError,
    PaymentPreimage,
    RemoteCommitment,
    RemoteRevocation,
    UpstreamDeadline,
    decode_stream,
    decode_update,
    encode_stream,
    encode_update,
)

__all__ = [
    "CLTV_CLAIM_BUFFER",
    "IRREVOCABLE_DEPTH",
    "ChannelMonitor",
    "ChannelSetup",
    "CommitmentKind",
    "CommitmentSeen",
    "DataLossDetected",
    "FeeInput",
    "FundingSpent",
    "HtlcResolved",
    "Irrevocable",
    "LocalCommitment",
    "MonitorError",
    "MonitorEvent",
    "MonitorSecrets",
    "MonitorUpdate",
    "MonitorUpdateError",
    "NeedFeeInput",
    "OutputSwept",
    "OutputToWallet",
    "PaymentPreimage",
    "RemoteCommitment",
    "RemoteRevocation",
    "Reorged",
    "UpstreamDeadline",
    "decode_stream",
    "decode_update",
    "encode_stream",
    "encode_update",
    "target_feerate",
]
