"""What goes into a channel core and what comes out (frozen dataclasses).

Inputs: commands from the node (open, fund, add/settle HTLCs, sign, fee,
close), chain events (funding depth), the connection's coming and going,
and received messages (:class:`Received`). Each call
``core.receive(input, now)`` returns one :class:`Output`: the records to
persist, the messages to send, and events for the node, in that order of
obligation: a record marked ``durable`` must be on disk before any of the
messages of the same output leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lnpmsg.bitcoin.tx import OutPoint
from lnpmsg.wire import Message

from .messages import OpenChannel, UpdateAddHtlc
from .params import ChannelConfig, OpeningPolicy

__all__ = [
    "AcceptCommand",
    "AddHtlc",
    "BlockHeight",
    "BroadcastFunding",
    "ChangeFee",
    "ChannelClosed",
    "ChannelFailed",
    "ChannelOpened",
    "ChannelReadyEvent",
    "CloseChannel",
    "ForceClose",
    "Disconnected",
    "Event",
    "FailHtlc",
    "FailMalformedHtlc",
    "FulfillHtlc",
    "FundingDepth",
    "FundingNeeded",
    "FundingTransaction",
    "HtlcDropped",
    "HtlcIncoming",
    "HtlcSettled",
    "Input",
    "OpenCommand",
    "Output",
    "Received",
    "Reconnected",
    "Record",
    "SignCommitment",
    "WeAreBehind",
]


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class OpenCommand:
    """Open a channel to a peer as its funder (the first input of a funder's core)."""

    temporary_channel_id: bytes
    chain_hash: bytes
    funding_sat: int
    push_msat: int
    feerate_per_kw: int
    local_features: int
    remote_features: int
    config: ChannelConfig = field(default_factory=ChannelConfig)
    policy: OpeningPolicy = field(default_factory=OpeningPolicy)
    channel_flags: int = 0
    #: ignored (open_channel always carries channel_type, which BOLT 2 now requires); kept so
    #: records written when it chose whether to send one still decode
    send_channel_type: bool = True
    #: channel_type variations to ask beyond the basic type: option_scid_alias (46), option_zeroconf (50)
    type_bits: tuple[int, ...] = ()
    #: our alias for the channel (:mod:`.ready`; chosen by the shell, 0: none, as in older records)
    local_alias: int = 0


@dataclass(frozen=True, slots=True)
class AcceptCommand:
    """Answer a peer's ``open_channel`` as fundee (the first input of a fundee's core)."""

    open_channel: OpenChannel
    chain_hash: bytes
    local_features: int
    remote_features: int
    config: ChannelConfig = field(default_factory=ChannelConfig)
    policy: OpeningPolicy = field(default_factory=OpeningPolicy)
    #: our alias for the channel (:mod:`.ready`; chosen by the shell, 0: none, as in older records)
    local_alias: int = 0
    #: we trust this funder with an unconfirmed funding (``--zeroconf-peer``): a zero-conf type is accepted
    zeroconf_trusted: bool = False


@dataclass(frozen=True, slots=True)
class FundingTransaction:
    """The funder's wallet built (and will broadcast, after funding_signed) this transaction."""

    raw_tx: bytes


@dataclass(frozen=True, slots=True)
class FundingDepth:
    """The funding transaction has ``depth`` confirmations, at ``short_channel_id`` (u64 form)."""

    depth: int
    short_channel_id: int


@dataclass(frozen=True, slots=True)
class BlockHeight:
    """The chain's tip is now ``height``: HTLC deadlines are checked."""

    height: int


@dataclass(frozen=True, slots=True)
class AddHtlc:
    """Offer an HTLC (the onion already built by the payment layer); ``path_key``: a forward inside a
    blinded path, the next node's path key (``update_add_htlc``'s ``blinded_path`` TLV)."""

    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int
    onion: bytes
    path_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class FulfillHtlc:
    """Settle incoming HTLC ``htlc_id`` with its preimage."""

    htlc_id: int
    preimage: bytes


@dataclass(frozen=True, slots=True)
class FailHtlc:
    """Fail incoming HTLC ``htlc_id`` with an (encrypted, opaque) reason."""

    htlc_id: int
    reason: bytes


@dataclass(frozen=True, slots=True)
class FailMalformedHtlc:
    """Fail incoming HTLC ``htlc_id`` whose onion was unreadable."""

    htlc_id: int
    sha256_of_onion: bytes
    failure_code: int


@dataclass(frozen=True, slots=True)
class SignCommitment:
    """Send commitment_signed for the changes so far."""


@dataclass(frozen=True, slots=True)
class ChangeFee:
    """As funder, propose a new commitment feerate."""

    feerate_per_kw: int


@dataclass(frozen=True, slots=True)
class CloseChannel:
    """Begin a cooperative close, paid to ``script_pubkey``; the fee range is what we accept."""

    script_pubkey: bytes
    feerate_per_kw: int
    max_fee_sat: int | None = None


@dataclass(frozen=True, slots=True)
class ForceClose:
    """Stop the channel and go on chain with our latest commitment (BOLT 5 unilateral close).

    No further update is accepted; the monitor broadcasts the commitment and
    sweeps. Refused after the peer proved we lost state (our commitment may
    be revoked: we wait for theirs).
    """

    reason: str = "force-closed by the local command"


@dataclass(frozen=True, slots=True)
class Received:
    """A message from the peer, for this channel."""

    message: Message


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection to the peer is gone: uncommitted updates are forgotten."""


@dataclass(frozen=True, slots=True)
class Reconnected:
    """The peer is back: we send channel_reestablish."""


Input = (
    OpenCommand | AcceptCommand | FundingTransaction | FundingDepth | BlockHeight | AddHtlc | FulfillHtlc | FailHtlc
    | FailMalformedHtlc | SignCommitment | ChangeFee | CloseChannel | Received | Disconnected | Reconnected
    | ForceClose
)  # fmt: skip


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class FundingNeeded:
    """The funder's wallet must build a transaction paying ``amount_sat`` to ``script_pubkey``."""

    script_pubkey: bytes
    amount_sat: int


@dataclass(frozen=True, slots=True)
class BroadcastFunding:
    """The funding transaction may now be broadcast (our first commitment is signed)."""

    raw_tx: bytes


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The first commitments are signed: watch ``funding_outpoint`` until ``minimum_depth``."""

    channel_id: bytes
    funding_outpoint: OutPoint
    minimum_depth: int


@dataclass(frozen=True, slots=True)
class ChannelReadyEvent:
    """Both sides sent channel_ready: the channel can carry HTLCs."""

    channel_id: bytes
    short_channel_id: int


@dataclass(frozen=True, slots=True)
class HtlcIncoming:
    """An incoming HTLC is irrevocably committed: decode its onion, forward or settle it."""

    add: UpdateAddHtlc


@dataclass(frozen=True, slots=True)
class HtlcSettled:
    """One of our HTLCs was fulfilled (``preimage``) or failed (``reason``/``failure_code``)."""

    htlc_id: int
    preimage: bytes | None = None
    reason: bytes | None = None
    failure_code: int | None = None


@dataclass(frozen=True, slots=True)
class HtlcDropped:
    """An HTLC we offered never reached a commitment before the connection dropped: it is gone."""

    htlc_id: int


@dataclass(frozen=True, slots=True)
class ChannelFailed:
    """The channel failed; ``commitment_tx`` is our latest signed commitment to broadcast (or None)."""

    reason: str
    commitment_tx: bytes | None
    by_peer: bool


@dataclass(frozen=True, slots=True)
class WeAreBehind:
    """The peer proved we lost state: do NOT broadcast our commitment; wait for theirs."""

    channel_id: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """A closing transaction both signed: broadcast it."""

    raw_tx: bytes
    fee_sat: int


Event = (
    FundingNeeded | BroadcastFunding | ChannelOpened | ChannelReadyEvent | HtlcIncoming | HtlcSettled | HtlcDropped
    | ChannelFailed | WeAreBehind | ChannelClosed
)  # fmt: skip


# ---------------------------------------------------------------- output


@dataclass(frozen=True, slots=True)
class Record:
    """One persistence record: the encoded input (with its time) that changed the channel.

    ``durable``: it must be synced to disk before this output's messages leave.
    """

    seq: int
    data: bytes
    durable: bool


@dataclass(frozen=True, slots=True)
class Output:
    """What one ``receive`` produced: persist ``records``, then send ``messages``, then handle ``events``."""

    records: tuple[Record, ...] = ()
    messages: tuple[Message, ...] = ()
    events: tuple[Event, ...] = ()
    #: close the peer's connection once the messages are sent (a warning's BOLT 2 asks it of)
    disconnect: bool = False
