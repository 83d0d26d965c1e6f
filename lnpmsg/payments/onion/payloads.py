"""Hop payloads (BOLT 4 ``payload`` TLV stream): typed, encoded with the
project's TLV codec, and checked as the reader rules say.

:class:`HopPayload` holds every record a payment onion carries for one hop.
:func:`decode_hop_payload` parses one (unknown odd records are kept, unknown
even ones refused) and :meth:`HopPayload.check` applies the reader's rules for
a forwarding or final, blinded or plain hop. Both report a problem as
:class:`~lnpmsg.payments.onion.errors.OnionPayloadError` carrying
``invalid_onion_payload`` with the offending TLV type and its byte offset,
ready to be sent back in a failure onion.

``ENCRYPTED_DATA_TLVS`` is the schema of ``encrypted_data_tlv`` (what a blinded
hop finds inside ``encrypted_recipient_data``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lnpmsg.payments.onion.errors import OnionPayloadError
from lnpmsg.payments.onion.failures import InvalidOnionPayload
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.fields import fixed_bytes, point, record, rest_bytes, short_channel_id, tu32, tu64, u16, u32
from lnpmsg.wire.primitives import ShortChannelId, bigsize_at
from lnpmsg.wire.tlv import TlvSchema, TlvStream

__all__ = [
    "ENCRYPTED_DATA_TLVS",
    "HOP_PAYLOAD_TLVS",
    "KEYSEND_TLV_TYPE",
    "HopPayload",
    "PaymentData",
    "decode_hop_payload",
]

#: bLIP 3 ``keysend_preimage``: a spontaneous payment's preimage, chosen by the payer
KEYSEND_TLV_TYPE = 5482373484

#: ``payment_data``: the invoice's secret and the total of a (multi-part) payment
PaymentData = record("payment_data", ("payment_secret", fixed_bytes(32, "payment_secret")), ("total_msat", tu64))

#: BOLT 4 ``tlv_stream: payload``
HOP_PAYLOAD_TLVS = TlvSchema(
    {
        2: ("amt_to_forward", tu64),
        4: ("outgoing_cltv_value", tu32),
        6: ("short_channel_id", short_channel_id),
        8: ("payment_data", PaymentData),
        10: ("encrypted_recipient_data", rest_bytes),
        12: ("current_path_key", point),
        16: ("payment_metadata", rest_bytes),
        18: ("total_amount_msat", tu64),
        # bLIP 3 keysend: the payer's preimage, for the final node (an even type: a node that does not know it refuses the payload)
        KEYSEND_TLV_TYPE: ("keysend_preimage", fixed_bytes(32, "keysend_preimage")),
    },
    name="payload",
)

#: BOLT 4 ``tlv_stream: encrypted_data_tlv`` (inside ``encrypted_recipient_data``)
ENCRYPTED_DATA_TLVS = TlvSchema(
    {
        1: ("padding", rest_bytes),
        2: ("short_channel_id", short_channel_id),
        4: ("next_node_id", point),
        6: ("path_id", rest_bytes),
        8: ("next_path_key_override", point),
        10: (
            "payment_relay",
            record("payment_relay", ("cltv_expiry_delta", u16), ("fee_proportional_millionths", u32), ("fee_base_msat", tu32)),
        ),
        12: ("payment_constraints", record("payment_constraints", ("max_cltv_expiry", u32), ("htlc_minimum_msat", tu64))),
        14: ("allowed_features", rest_bytes),
    },
    name="encrypted_data_tlv",
)

_TYPES = HOP_PAYLOAD_TLVS.types
_BLINDED_FORWARD_ONLY = frozenset({"encrypted_recipient_data", "current_path_key"})
_BLINDED_FINAL_ALLOWED = _BLINDED_FORWARD_ONLY | {"amt_to_forward", "outgoing_cltv_value", "total_amount_msat"}


@dataclass(frozen=True, slots=True)
class HopPayload:
    """One hop's payload. None means the record is absent.

    A forwarding hop gets ``amt_to_forward``, ``outgoing_cltv_value`` and
    ``short_channel_id``; the final one ``amt_to_forward``,
    ``outgoing_cltv_value`` and, when the invoice has a secret,
    ``payment_secret`` + ``total_msat`` (record ``payment_data``) and
    ``payment_metadata``; a keysend (bLIP 3) one ``keysend_preimage`` instead of
    an invoice's secret. Blinded hops use ``encrypted_recipient_data``,
    ``current_path_key`` and (final) ``total_amount_msat``. ``unknown`` keeps
    unknown odd records exactly as received.
    """

    amt_to_forward: int | None = None
    outgoing_cltv_value: int | None = None
    short_channel_id: ShortChannelId | None = None
    payment_secret: bytes | None = None
    total_msat: int | None = None
    payment_metadata: bytes | None = None
    encrypted_recipient_data: bytes | None = None
    current_path_key: bytes | None = None
    total_amount_msat: int | None = None
    keysend_preimage: bytes | None = None
    unknown: Mapping[int, bytes] = field(default_factory=dict)

    @classmethod
    def forward(cls, amt_to_forward: int, outgoing_cltv_value: int, short_channel_id: ShortChannelId) -> HopPayload:
        """The payload of a forwarding hop."""
        return cls(amt_to_forward=amt_to_forward, outgoing_cltv_value=outgoing_cltv_value, short_channel_id=short_channel_id)

    @classmethod
    def final(
        cls,
        amt_to_forward: int,
        outgoing_cltv_value: int,
        *,
        payment_secret: bytes | None = None,
        total_msat: int | None = None,
        payment_metadata: bytes | None = None,
        keysend_preimage: bytes | None = None,
    ) -> HopPayload:
        """The final node's payload; ``total_msat`` defaults to ``amt_to_forward`` (a single-part payment)."""
        if payment_secret is not None and total_msat is None:
            total_msat = amt_to_forward
        return cls(
            amt_to_forward=amt_to_forward,
            outgoing_cltv_value=outgoing_cltv_value,
            payment_secret=payment_secret,
            total_msat=total_msat,
            payment_metadata=payment_metadata,
            keysend_preimage=keysend_preimage,
        )

    def _records(self) -> dict[str, Any]:
        records: dict[str, Any] = {
            "amt_to_forward": self.amt_to_forward,
            "outgoing_cltv_value": self.outgoing_cltv_value,
            "short_channel_id": self.short_channel_id,
            "encrypted_recipient_data": self.encrypted_recipient_data,
            "current_path_key": self.current_path_key,
            "payment_metadata": self.payment_metadata,
            "total_amount_msat": self.total_amount_msat,
            "keysend_preimage": self.keysend_preimage,
        }
        if self.payment_secret is not None or self.total_msat is not None:
            if self.payment_secret is None or self.total_msat is None:
                raise WireError("payment_data needs both payment_secret and total_msat")
            records["payment_data"] = PaymentData(payment_secret=self.payment_secret, total_msat=self.total_msat)
        return records

    def encode(self) -> bytes:
        """The TLV stream (records in type order; ``WireError`` for a bad value)."""
        return HOP_PAYLOAD_TLVS.encode(TlvStream(self._records(), unknown=self.unknown))

    @property
    def is_blinded(self) -> bool:
        """True when this hop is inside a blinded route (it has ``encrypted_recipient_data``)."""
        return self.encrypted_recipient_data is not None

    def present(self) -> set[str]:
        """Names of the records present (``payment_data`` for the secret and total)."""
        return {name for name, value in self._records().items() if value is not None}

    def check(self, *, is_final: bool, shared_secret: bytes, path_key_in_htlc: bool = False) -> None:
        """Apply BOLT 4's reader rules for this hop (the ones a payload alone decides).

        ``is_final`` comes from the onion (all-zero next HMAC); ``path_key_in_htlc``
        tells whether ``update_add_htlc`` carried a ``path_key``. Raises
        :class:`OnionPayloadError` (``invalid_onion_payload``, the type of the
        missing or unwanted record) with ``shared_secret`` for the reply.
        Amount, expiry and channel checks against the HTLC are the forwarding
        logic's; decrypting ``encrypted_recipient_data`` is the blinding code's.
        """
        present = self.present()

        def fail(name: str, reason: str) -> OnionPayloadError:
            return OnionPayloadError(shared_secret, InvalidOnionPayload(type=_TYPES[name], offset=0), reason)

        if self.is_blinded:
            if path_key_in_htlc and self.current_path_key is not None:
                raise fail("current_path_key", "current_path_key given while update_add_htlc has a path_key")
            if not path_key_in_htlc and self.current_path_key is None:
                raise fail("current_path_key", "a blinded hop needs a path key, in update_add_htlc or current_path_key")
            allowed = _BLINDED_FINAL_ALLOWED if is_final else _BLINDED_FORWARD_ONLY
            unwanted = sorted(present - allowed, key=_TYPES.__getitem__)
            if unwanted:
                where = "final" if is_final else "forwarding"
                raise fail(unwanted[0], f"{unwanted[0]} is not allowed in a blinded {where} payload")
            if is_final:
                for name in ("amt_to_forward", "outgoing_cltv_value", "total_amount_msat"):
                    if name not in present:
                        raise fail(name, f"a blinded final payload needs {name}")
            return
        if path_key_in_htlc:
            raise fail("encrypted_recipient_data", "update_add_htlc has a path_key but the payload no encrypted_recipient_data")
        if self.current_path_key is not None:
            raise fail("current_path_key", "current_path_key outside a blinded route")
        for name in ("amt_to_forward", "outgoing_cltv_value"):
            if name not in present:
                raise fail(name, f"the payload has no {name}")
        if not is_final:
            if self.short_channel_id is None:
                raise fail("short_channel_id", "a forwarding payload needs short_channel_id")
            if self.payment_secret is not None:
                raise fail("payment_data", "payment_data is only for the final node")

    @property
    def total(self) -> int | None:
        """What the whole payment amounts to: ``total_msat`` (or ``total_amount_msat``), else ``amt_to_forward``."""
        if self.total_msat is not None:
            return self.total_msat
        if self.total_amount_msat is not None:
            return self.total_amount_msat
        return self.amt_to_forward


def _locate(data: bytes) -> tuple[int, int]:
    """The TLV type and byte offset of the first record that makes ``data`` invalid."""
    pos = 0
    end = len(data)
    while pos < end:
        start = pos
        try:
            tlv_type, pos = bigsize_at(data, pos, end)
        except WireError:
            return 0, start
        try:
            length, pos = bigsize_at(data, pos, end)
            HOP_PAYLOAD_TLVS.decode_stream(data[: pos + length] if pos + length <= end else data)
        except WireError:
            return tlv_type, start
        pos += length
    return 0, 0


def decode_hop_payload(data: bytes, shared_secret: bytes) -> HopPayload:
    """Parse a hop's payload (from :func:`~lnpmsg.payments.onion.sphinx.peel_onion`).

    ``OnionPayloadError`` (``invalid_onion_payload`` naming the first bad
    record and where it starts) when it is not a valid ``payload`` stream.
    """
    try:
        stream = HOP_PAYLOAD_TLVS.decode_stream(data)
    except WireError as exc:
        tlv_type, offset = _locate(bytes(data))
        failure = InvalidOnionPayload(type=tlv_type, offset=min(offset, 0xFFFF))
        raise OnionPayloadError(shared_secret, failure, str(exc)) from None
    payment_data = stream.get("payment_data")
    return HopPayload(
        amt_to_forward=stream.get("amt_to_forward"),
        outgoing_cltv_value=stream.get("outgoing_cltv_value"),
        short_channel_id=stream.get("short_channel_id"),
        payment_secret=payment_data.payment_secret if payment_data is not None else None,
        total_msat=payment_data.total_msat if payment_data is not None else None,
        payment_metadata=stream.get("payment_metadata"),
        encrypted_recipient_data=stream.get("encrypted_recipient_data"),
        current_path_key=stream.get("current_path_key"),
        total_amount_msat=stream.get("total_amount_msat"),
        keysend_preimage=stream.get("keysend_preimage"),
        unknown=dict(stream.unknown),
    )
