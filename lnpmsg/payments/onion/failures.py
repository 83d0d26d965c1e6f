"""The failure messages of BOLT 4 ("Failure Messages"), as typed objects.

A failure message is laid out like a wire message: a 2-byte ``failure_code``
(its top byte holds the BADONION/PERM/NODE/UPDATE flags), the data of that
code, then an optional TLV stream. Each code is a frozen dataclass declared
with the project's :func:`~lnpmsg.wire.message.message` compiler, so encoding
and decoding are the wire codec's own. The optional TLV stream is kept as raw
bytes in ``extension`` (the origin node MUST ignore extra bytes, so a bad one
never makes a failure unreadable); :attr:`Failure.tlvs` parses it on demand.

:func:`decode_failure` gives the class of a known code, or :class:`UnknownFailure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from lnpmsg.wire.errors import WireError
from lnpmsg.wire.fields import bigsize, rest_bytes, sha256, u16, u16_prefixed_bytes, u32, u64
from lnpmsg.wire.message import Message, MessageRegistry, message
from lnpmsg.wire.tlv import TlvSchema, TlvStream

__all__ = [
    "BADONION",
    "FAILURES",
    "NODE",
    "PERM",
    "UPDATE",
    "AmountBelowMinimum",
    "ChannelDisabled",
    "ExpiryTooFar",
    "ExpiryTooSoon",
    "Failure",
    "FeeInsufficient",
    "FinalIncorrectCltvExpiry",
    "FinalIncorrectHtlcAmount",
    "IncorrectCltvExpiry",
    "IncorrectOrUnknownPaymentDetails",
    "InvalidOnionBlinding",
    "InvalidOnionHmac",
    "InvalidOnionKey",
    "InvalidOnionPayload",
    "InvalidOnionVersion",
    "MppTimeout",
    "PermanentChannelFailure",
    "PermanentNodeFailure",
    "RequiredChannelFeatureMissing",
    "RequiredNodeFeatureMissing",
    "TemporaryChannelFailure",
    "TemporaryNodeFailure",
    "UnknownFailure",
    "UnknownNextPeer",
    "decode_failure",
    "malformed_failure",
]

#: unparsable onion encrypted by the sending peer
BADONION = 0x8000
#: permanent failure (otherwise transient)
PERM = 0x4000
#: node failure (otherwise channel)
NODE = 0x2000
#: a channel forwarding parameter was violated
UPDATE = 0x1000

#: No failure TLV is defined yet: unknown odd records are kept, even ones refused.
FAILURE_TLVS = TlvSchema({}, name="failure_tlvs")


class _Flags:
    """What the flags of a failure code say (shared by known and unknown failures)."""

    __slots__ = ()
    code: int

    @property
    def is_bad_onion(self) -> bool:
        """BADONION: the sending peer's onion was unparsable (sent back as ``update_fail_malformed_htlc``)."""
        return bool(self.code & BADONION)

    @property
    def is_permanent(self) -> bool:
        """PERM: retrying the same thing will fail again."""
        return bool(self.code & PERM)

    @property
    def is_node_failure(self) -> bool:
        """NODE: the failing node as a whole (otherwise one of its channels)."""
        return bool(self.code & NODE)

    @property
    def is_update(self) -> bool:
        """UPDATE: a channel parameter was violated (a ``channel_update`` may be attached)."""
        return bool(self.code & UPDATE)


class Failure(_Flags, Message):
    """Base of the known failure messages. ``code`` is the ``failure_code``;
    every failure has ``extension``, the raw optional TLV stream after its data."""

    __slots__ = ()
    NAME: ClassVar[str]
    extension: bytes

    @property
    def code(self) -> int:
        """The 2-byte ``failure_code`` (flags included)."""
        return self.TYPE

    @property
    def name(self) -> str:
        """The spec's name of this failure (``temporary_channel_failure``...)."""
        return self.NAME

    @property
    def tlvs(self) -> TlvStream | None:
        """The extension parsed as a TLV stream, or None when it is not a valid one."""
        try:
            return FAILURE_TLVS.decode_stream(self.extension)
        except WireError:
            return None


FAILURES = MessageRegistry()
_EXT = ("extension", rest_bytes)


def _failure(code: int, name: str):  # type: ignore[no-untyped-def]
    """Declare a failure class: its code, its spec name, registered in :data:`FAILURES`."""

    def wrap(cls):  # type: ignore[no-untyped-def]
        cls.NAME = name
        return FAILURES.register(message(type=code)(cls))

    return wrap


@_failure(NODE | 2, "temporary_node_failure")
@dataclass(frozen=True, slots=True)
class TemporaryNodeFailure(Failure):
    """General temporary failure of the processing node."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(PERM | NODE | 2, "permanent_node_failure")
@dataclass(frozen=True, slots=True)
class PermanentNodeFailure(Failure):
    """General permanent failure of the processing node."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(PERM | NODE | 3, "required_node_feature_missing")
@dataclass(frozen=True, slots=True)
class RequiredNodeFeatureMissing(Failure):
    """The processing node has a required feature which was not in this onion."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(BADONION | PERM | 4, "invalid_onion_version")
@dataclass(frozen=True, slots=True)
class InvalidOnionVersion(Failure):
    """The ``version`` byte was not understood by the processing node."""

    FIELDS = (("sha256_of_onion", sha256), _EXT)
    sha256_of_onion: bytes
    extension: bytes = b""


@_failure(BADONION | PERM | 5, "invalid_onion_hmac")
@dataclass(frozen=True, slots=True)
class InvalidOnionHmac(Failure):
    """The HMAC of the onion was incorrect when it reached the processing node."""

    FIELDS = (("sha256_of_onion", sha256), _EXT)
    sha256_of_onion: bytes
    extension: bytes = b""


@_failure(BADONION | PERM | 6, "invalid_onion_key")
@dataclass(frozen=True, slots=True)
class InvalidOnionKey(Failure):
    """The ephemeral key was unparsable by the processing node."""

    FIELDS = (("sha256_of_onion", sha256), _EXT)
    sha256_of_onion: bytes
    extension: bytes = b""


@_failure(UPDATE | 7, "temporary_channel_failure")
@dataclass(frozen=True, slots=True)
class TemporaryChannelFailure(Failure):
    """The outgoing channel could not handle this HTLC now (may later)."""

    FIELDS = (("channel_update", u16_prefixed_bytes), _EXT)
    channel_update: bytes = b""
    extension: bytes = b""


@_failure(PERM | 8, "permanent_channel_failure")
@dataclass(frozen=True, slots=True)
class PermanentChannelFailure(Failure):
    """The outgoing channel is unable to handle any HTLCs."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(PERM | 9, "required_channel_feature_missing")
@dataclass(frozen=True, slots=True)
class RequiredChannelFeatureMissing(Failure):
    """The outgoing channel requires features not present in the onion."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(PERM | 10, "unknown_next_peer")
@dataclass(frozen=True, slots=True)
class UnknownNextPeer(Failure):
    """The onion's ``short_channel_id`` does not lead anywhere from the processing node."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(UPDATE | 11, "amount_below_minimum")
@dataclass(frozen=True, slots=True)
class AmountBelowMinimum(Failure):
    """The HTLC amount was below the outgoing channel's ``htlc_minimum_msat``."""

    FIELDS = (("htlc_msat", u64), ("channel_update", u16_prefixed_bytes), _EXT)
    htlc_msat: int
    channel_update: bytes = b""
    extension: bytes = b""


@_failure(UPDATE | 12, "fee_insufficient")
@dataclass(frozen=True, slots=True)
class FeeInsufficient(Failure):
    """The fee was below what the outgoing channel requires."""

    FIELDS = (("htlc_msat", u64), ("channel_update", u16_prefixed_bytes), _EXT)
    htlc_msat: int
    channel_update: bytes = b""
    extension: bytes = b""


@_failure(UPDATE | 13, "incorrect_cltv_expiry")
@dataclass(frozen=True, slots=True)
class IncorrectCltvExpiry(Failure):
    """``cltv_expiry - cltv_expiry_delta < outgoing_cltv_value`` on the outgoing channel."""

    FIELDS = (("cltv_expiry", u32), ("channel_update", u16_prefixed_bytes), _EXT)
    cltv_expiry: int
    channel_update: bytes = b""
    extension: bytes = b""


@_failure(UPDATE | 14, "expiry_too_soon")
@dataclass(frozen=True, slots=True)
class ExpiryTooSoon(Failure):
    """The CLTV expiry is too close to the current block height for safe handling."""

    FIELDS = (("channel_update", u16_prefixed_bytes), _EXT)
    channel_update: bytes = b""
    extension: bytes = b""


@_failure(PERM | 15, "incorrect_or_unknown_payment_details")
@dataclass(frozen=True, slots=True)
class IncorrectOrUnknownPaymentDetails(Failure):
    """Unknown payment hash, wrong secret, amount too low or expiry too soon at the final node."""

    FIELDS = (("htlc_msat", u64), ("height", u32), _EXT)
    htlc_msat: int
    height: int
    extension: bytes = b""


@_failure(18, "final_incorrect_cltv_expiry")
@dataclass(frozen=True, slots=True)
class FinalIncorrectCltvExpiry(Failure):
    """The HTLC's CLTV expiry is less than the value in the final onion payload."""

    FIELDS = (("cltv_expiry", u32), _EXT)
    cltv_expiry: int
    extension: bytes = b""


@_failure(19, "final_incorrect_htlc_amount")
@dataclass(frozen=True, slots=True)
class FinalIncorrectHtlcAmount(Failure):
    """The HTLC's amount is less than the value in the final onion payload."""

    FIELDS = (("incoming_htlc_amt", u64), _EXT)
    incoming_htlc_amt: int
    extension: bytes = b""


@_failure(UPDATE | 20, "channel_disabled")
@dataclass(frozen=True, slots=True)
class ChannelDisabled(Failure):
    """The outgoing channel has been disabled (no ``disabled_flags`` are defined yet)."""

    FIELDS = (("disabled_flags", u16), ("channel_update", u16_prefixed_bytes), _EXT)
    disabled_flags: int = 0
    channel_update: bytes = b""
    extension: bytes = b""


@_failure(21, "expiry_too_far")
@dataclass(frozen=True, slots=True)
class ExpiryTooFar(Failure):
    """The CLTV expiry is too far in the future (beyond ``max_htlc_cltv``)."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(PERM | 22, "invalid_onion_payload")
@dataclass(frozen=True, slots=True)
class InvalidOnionPayload(Failure):
    """The hop payload was not understood or is incomplete: the TLV ``type`` at byte ``offset``."""

    FIELDS = (("type", bigsize), ("offset", u16), _EXT)
    type: int = 0
    offset: int = 0
    extension: bytes = b""


@_failure(23, "mpp_timeout")
@dataclass(frozen=True, slots=True)
class MppTimeout(Failure):
    """The whole multi-part payment did not arrive in time."""

    FIELDS = (_EXT,)
    extension: bytes = b""


@_failure(BADONION | PERM | 24, "invalid_onion_blinding")
@dataclass(frozen=True, slots=True)
class InvalidOnionBlinding(Failure):
    """An error occurred within a blinded path."""

    FIELDS = (("sha256_of_onion", sha256), _EXT)
    sha256_of_onion: bytes
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class UnknownFailure(_Flags):
    """A failure code this node does not know: its flags still tell how to react."""

    code: int
    data: bytes = b""

    @property
    def name(self) -> str:
        """``unknown_failure_<code>``."""
        return f"unknown_failure_{self.code:#06x}"

    def encode(self) -> bytes:
        """The 2-byte code, then the data as received."""
        return self.code.to_bytes(2, "big") + self.data


def decode_failure(data: bytes) -> Failure | UnknownFailure:
    """A ``failuremsg``: its known class, or :class:`UnknownFailure`.

    ``WireError`` if it is shorter than its code or its code's data is truncated.
    """
    decoded = FAILURES.decode(data)
    if isinstance(decoded, Failure):
        return decoded
    return UnknownFailure(code=int.from_bytes(data[:2], "big"), data=bytes(data[2:]))


def malformed_failure(failure_code: int, sha256_of_onion: bytes) -> Failure | UnknownFailure:
    """The failure an upstream hop puts in its failure onion for an ``update_fail_malformed_htlc``
    it received (``invalid_onion_hmac``...); an unknown BADONION code is kept as it came.

    ``ValueError`` when ``failure_code`` lacks the BADONION bit: BOLT 2 says the
    channel is then failed, not the HTLC.
    """
    if not failure_code & BADONION:
        raise ValueError(f"update_fail_malformed_htlc with failure code {failure_code:#06x}: the BADONION bit is not set")
    cls = FAILURES.get(failure_code)
    if cls is not None and [name for name, _ in cls.FIELDS] == ["sha256_of_onion", "extension"]:
        return cls(sha256_of_onion=sha256_of_onion)  # type: ignore[call-arg,no-any-return]
    return UnknownFailure(code=failure_code, data=bytes(sha256_of_onion))
