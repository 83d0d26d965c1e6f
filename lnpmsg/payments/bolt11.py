"""BOLT-11 invoices: decode, verify, build, sign and encode (sans-IO).

``decode(text)`` gives a verified :class:`Invoice` or raises
:class:`InvoiceError` whose ``code`` names the reason. ``sign(invoice,
secret)`` signs an unsigned invoice (recoverable ECDSA, RFC 6979 nonces, as
the spec's examples are made) and ``encode(invoice)`` writes it.

Reading follows the spec's reader rules: fields of unknown type, ``p``/``h``/
``s``/``n`` of the wrong length and fallbacks of unknown version are
skipped (and kept, so that the invoice re-encodes to the same string);
unknown odd feature bits are ignored, unknown even ones fail; ``x``, ``c``
and ``9`` with a leading zero word are refused; with an ``n`` field the
signature must verify under that key and be low-S, without one the payee
is recovered from the signature (high-S accepted).

Field order: an invoice built here writes its fields in a fixed order
(``p s d h m n x c f r 9``); a decoded one remembers the order it was read
in (``field_order``), so the same fields and signature give the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import coincurve

from lnpmsg.bitcoin.ecdsa import compact_to_der
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.payments.bech32 import (
    Bech32Error,
    bech32_decode,
    bech32_encode,
    bytes_to_words,
    int_to_words,
    words_to_bytes,
    words_to_int,
)
from lnpmsg.payments.bolt11_parts import (
    CURRENCIES,
    HINT_HOP_SIZE,
    Currency,
    Fallback,
    InvoiceError,
    RouteHintHop,
    currency_for,
    fallback_problem,
)
from lnpmsg.wire.features import Features, check_dependencies, known_features, unknown_required

__all__ = [
    "CURRENCIES",
    "DEFAULT_EXPIRY",
    "DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA",
    "MAX_INVOICE_LENGTH",
    "Currency",
    "Fallback",
    "Invoice",
    "InvoiceError",
    "RouteHintHop",
    "decode",
    "encode",
    "sign",
    "signing_message",
]

#: BOLT 11 lifts bech32's 90-character limit but names no other; 7089 is the most
#: a QR code holds (alphanumeric), and bounds the work a pasted string can cause.
MAX_INVOICE_LENGTH = 7089
#: BOLT 11 defaults when ``x`` / ``c`` are absent
DEFAULT_EXPIRY = 3600
DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA = 18
#: 21 million bitcoin, in millisatoshi: no amount above it is meaningful
MAX_AMOUNT_MSAT = 21_000_000 * 100_000_000_000
_TIMESTAMP_WORDS = 7
_SIGNATURE_WORDS = 104
#: a tagged field's 10-bit data_length
_MAX_FIELD_WORDS = 1023
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

#: multiplier letter -> millisatoshi per unit; ``p`` (0.1 msat) is handled apart
_MULTIPLIERS = {"": 100_000_000_000, "m": 100_000_000, "u": 100_000, "n": 100}
_HRP = re.compile(r"ln([a-z]+)([0-9]+[a-z]?)?")
_AMOUNT = re.compile(r"([0-9]+)([a-z]?)")

# tag letters (bech32 characters) and their 5-bit values
_TAGS = {"p": 1, "s": 16, "d": 13, "m": 27, "n": 19, "h": 23, "x": 6, "c": 24, "f": 9, "r": 3, "9": 5}
_TAG_NAMES = {v: k for k, v in _TAGS.items()}
#: where a built invoice puts its fields
_CANONICAL_ORDER = "psdhmnxcfr9"
#: the ``field_order`` entry that stands for the next skipped field
SKIPPED = "?"


@dataclass(frozen=True, slots=True)
class Invoice:
    """A BOLT-11 invoice. Unsigned until :func:`sign` (``signature`` and ``payee`` None).

    ``expiry`` and ``min_final_cltv_expiry_delta`` are None when the invoice
    does not carry them (the spec's defaults then apply: see
    :attr:`expiry_seconds`, :attr:`min_final_cltv`).
    """

    currency: str
    timestamp: int
    payment_hash: bytes
    payment_secret: bytes
    amount_msat: int | None = None
    description: str | None = None
    description_hash: bytes | None = None
    expiry: int | None = None
    min_final_cltv_expiry_delta: int | None = None
    fallbacks: tuple[Fallback, ...] = ()
    route_hints: tuple[tuple[RouteHintHop, ...], ...] = ()
    features: Features = field(default_factory=Features)
    payment_metadata: bytes | None = None
    #: write the payee's node id (``n``) rather than leave it to key recovery
    include_node_id: bool = False
    payee: bytes | None = None
    #: 64-byte r || s, then the recovery id
    signature: bytes | None = None
    #: tag letters in the order the fields are written; ``"?"`` takes the next of ``skipped``
    field_order: tuple[str, ...] = ()
    #: fields a reader skips (unknown type, wrong length): (type, data words)
    skipped: tuple[tuple[int, tuple[int, ...]], ...] = ()
    #: the amount as written when it was not the shortest form (``2500000n``), kept
    #: because the signature covers it; ignored unless it still means ``amount_msat``
    amount_text: str | None = None

    def __post_init__(self) -> None:
        currency_for(self.currency)
        if self.amount_msat is not None and (type(self.amount_msat) is not int or not 0 < self.amount_msat <= MAX_AMOUNT_MSAT):
            raise InvoiceError(f"amount must be 1..{MAX_AMOUNT_MSAT} msat, got {self.amount_msat!r}", "bad_amount")
        if type(self.timestamp) is not int or not 0 <= self.timestamp < 1 << 35:
            raise InvoiceError("timestamp must fit 35 bits", "bad_timestamp")
        for name, value in (("payment_hash", self.payment_hash), ("payment_secret", self.payment_secret)):
            if not isinstance(value, bytes) or len(value) != 32:
                raise InvoiceError(f"a valid 32-byte {name} ({'p' if name == 'payment_hash' else 's'} field) is required", f"missing_{name}")
        if (self.description is None) == (self.description_hash is None):
            which = "both" if self.description is not None else "neither"
            raise InvoiceError(f"exactly one of description (d) and description_hash (h) is required, got {which}", "bad_description")
        if self.description_hash is not None and len(self.description_hash) != 32:
            raise InvoiceError("description_hash must be 32 bytes", "bad_description")
        for name, value in (("expiry", self.expiry), ("min_final_cltv_expiry_delta", self.min_final_cltv_expiry_delta)):
            if value is not None and (type(value) is not int or value < 0 or value.bit_length() > 5 * _MAX_FIELD_WORDS):
                raise InvoiceError(f"{name} must be a non-negative int", f"bad_{name}")
        if self.amount_text is not None:
            _amount_msat(self.amount_text)
        if self.payee is not None and len(self.payee) != 33:
            raise InvoiceError("payee must be a 33-byte node id", "bad_payee")
        if self.signature is not None and len(self.signature) != 65:
            raise InvoiceError("signature must be 65 bytes (r, s, recovery id)", "bad_signature")

    # ---- what a payer needs
    @property
    def expiry_seconds(self) -> int:
        return DEFAULT_EXPIRY if self.expiry is None else self.expiry

    @property
    def min_final_cltv(self) -> int:
        """``min_final_cltv_expiry_delta``, or the spec's 18 when absent."""
        return DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA if self.min_final_cltv_expiry_delta is None else self.min_final_cltv_expiry_delta

    @property
    def expires_at(self) -> int:
        return self.timestamp + self.expiry_seconds

    def is_expired(self, now: float) -> bool:
        return now >= self.expires_at

    @property
    def network(self) -> str:
        return CURRENCIES[self.currency].network

    @property
    def hrp(self) -> str:
        if self.amount_msat is None:
            return "ln" + self.currency
        text = self.amount_text
        if text is None or _amount_msat(text) != self.amount_msat:
            text = _amount_text(self.amount_msat)
        return "ln" + self.currency + text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (what ``decodepay`` prints)."""
        return {
            "currency": self.currency,
            "network": self.network,
            "amount_msat": self.amount_msat,
            "timestamp": self.timestamp,
            "expiry": self.expiry_seconds,
            "expires_at": self.expires_at,
            "payee": self.payee.hex() if self.payee else None,
            "payment_hash": self.payment_hash.hex(),
            "payment_secret": self.payment_secret.hex(),
            "description": self.description,
            "description_hash": self.description_hash.hex() if self.description_hash else None,
            "min_final_cltv_expiry_delta": self.min_final_cltv,
            "fallbacks": [fb.address(self.currency) for fb in self.fallbacks],
            "route_hints": [
                [
                    {
                        "node_id": h.node_id.hex(),
                        "short_channel_id": _scid_text(h.short_channel_id),
                        "fee_base_msat": h.fee_base_msat,
                        "fee_proportional_millionths": h.fee_proportional_millionths,
                        "cltv_expiry_delta": h.cltv_expiry_delta,
                    }
                    for h in route
                ]
                for route in self.route_hints
            ],
            "features": self.features.describe(),
            "payment_metadata": self.payment_metadata.hex() if self.payment_metadata is not None else None,
            "signature": self.signature.hex() if self.signature else None,
        }


def _scid_text(scid: int) -> str:
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


# ------------------------------------------------------------ amounts


def _amount_text(msat: int) -> str:
    """The shortest amount + multiplier for ``msat``."""
    for letter, unit in _MULTIPLIERS.items():
        if msat % unit == 0:
            return f"{msat // unit}{letter}"
    return f"{msat * 10}p"


def _amount_msat(text: str) -> int:
    """``2500u`` -> 250,000,000 msat (InvoiceError for anything BOLT 11 does not allow)."""
    match = _AMOUNT.fullmatch(text)
    if match is None:
        raise InvoiceError(f"amount {text!r} is not digits and an optional multiplier", "bad_amount")
    digits, letter = match.groups()
    if letter not in _MULTIPLIERS and letter != "p":
        raise InvoiceError(f"unknown amount multiplier {letter!r} (m, u, n, p or none)", "bad_multiplier")
    if digits[0] == "0":
        raise InvoiceError(f"amount {digits!r} must be a positive number without leading zeros", "bad_amount")
    value = int(digits)
    if letter == "p":
        if value % 10:
            raise InvoiceError(f"amount {digits}p is not a whole number of millisatoshi (a 'p' amount must end in 0)", "sub_msat_precision")
        msat = value // 10
    else:
        msat = value * _MULTIPLIERS[letter]
    if msat > MAX_AMOUNT_MSAT:
        raise InvoiceError(f"amount {digits}{letter} is more than 21 million bitcoin", "bad_amount")
    return msat


def _parse_hrp(hrp: str) -> tuple[str, int | None, str | None]:
    """Currency prefix, amount in msat, and the amount's text (None when not the shortest form's)."""
    match = _HRP.fullmatch(hrp)
    if match is None:
        raise InvoiceError(f"human-readable part {hrp!r} is not 'ln' + currency + optional amount", "bad_prefix")
    prefix, amount = match.group(1), match.group(2)
    currency_for(prefix)
    if amount is None:
        return prefix, None, None
    msat = _amount_msat(amount)
    return prefix, msat, None if amount == _amount_text(msat) else amount


# ------------------------------------------------------------ fields


def _minimal_int(tag: str, words: list[int]) -> int:
    if words and words[0] == 0:
        raise InvoiceError(f"field {tag!r} has a non-minimal length (leading zero)", "non_minimal_field")
    return words_to_int(words)


def _parse_fields(data: list[int]) -> tuple[dict[str, Any], list[str], list[tuple[int, tuple[int, ...]]]]:
    values: dict[str, Any] = {"fallbacks": [], "route_hints": []}
    order: list[str] = []
    skipped: list[tuple[int, tuple[int, ...]]] = []
    pos = 0
    while pos < len(data):
        if pos + 3 > len(data):
            raise InvoiceError("tagged field header runs past the data", "truncated_field")
        tag, length = data[pos], data[pos + 1] << 5 | data[pos + 2]
        words = data[pos + 3 : pos + 3 + length]
        if len(words) != length:
            raise InvoiceError(f"tagged field {_TAG_NAMES.get(tag, tag)!r} runs past the data", "truncated_field")
        pos += 3 + length
        name = _TAG_NAMES.get(tag)
        if name is not None and _take_field(name, words, values):
            order.append(name)
        else:
            order.append(SKIPPED)
            skipped.append((tag, tuple(words)))
    return values, order, skipped


_FIXED = {"p": ("payment_hash", 52), "s": ("payment_secret", 52), "h": ("description_hash", 52), "n": ("payee", 53)}


def _take_field(name: str, words: list[int], values: dict[str, Any]) -> bool:
    """Store one known field; False when a reader skips it (wrong length, unknown version, a repeat)."""
    if name in _FIXED:
        key, length = _FIXED[name]
        if len(words) != length or key in values:
            return False
        value = words_to_bytes(words)
        if name == "n":
            try:
                coincurve.PublicKey(value)
            except ValueError:
                return False
        values[key] = value
    elif name == "d":
        if "description" in values:
            return False
        try:
            values["description"] = words_to_bytes(words).decode("utf-8")
        except UnicodeDecodeError:
            raise InvoiceError("description (d) is not valid UTF-8", "bad_description") from None
    elif name in ("x", "c", "9"):
        key = {"x": "expiry", "c": "min_final_cltv_expiry_delta", "9": "features"}[name]
        if key in values:
            return False
        values[key] = _minimal_int(name, words)
    elif name == "m":
        if "payment_metadata" in values:
            return False
        values["payment_metadata"] = words_to_bytes(words)
    elif name == "f":
        if not words:
            return False
        version, program = words[0], words_to_bytes(words[1:])
        if fallback_problem(version, program):
            return False
        values["fallbacks"].append(Fallback(version, program))
    else:  # "r"
        raw = words_to_bytes(words)
        if not raw or len(raw) % HINT_HOP_SIZE:
            return False
        hops = tuple(RouteHintHop.from_bytes(raw[i : i + HINT_HOP_SIZE]) for i in range(0, len(raw), HINT_HOP_SIZE))
        values["route_hints"].append(hops)
    return True


def _field_words(invoice: Invoice) -> dict[str, list[list[int]]]:
    """Each known field's data words, per tag letter, in preference order."""
    out: dict[str, list[list[int]]] = {name: [] for name in _CANONICAL_ORDER}
    out["p"].append(bytes_to_words(invoice.payment_hash))
    out["s"].append(bytes_to_words(invoice.payment_secret))
    if invoice.description is not None:
        out["d"].append(bytes_to_words(invoice.description.encode("utf-8")))
    if invoice.description_hash is not None:
        out["h"].append(bytes_to_words(invoice.description_hash))
    if invoice.payment_metadata is not None:
        out["m"].append(bytes_to_words(invoice.payment_metadata))
    if invoice.include_node_id:
        if invoice.payee is None:
            raise InvoiceError("include_node_id needs the payee's node id (sign first)", "bad_payee")
        out["n"].append(bytes_to_words(invoice.payee))
    if invoice.expiry is not None:
        out["x"].append(int_to_words(invoice.expiry))
    if invoice.min_final_cltv_expiry_delta is not None:
        out["c"].append(int_to_words(invoice.min_final_cltv_expiry_delta))
    for fb in invoice.fallbacks:
        out["f"].append([fb.version, *bytes_to_words(fb.program)])
    for route in invoice.route_hints:
        if not route:
            raise InvoiceError("a route hint needs at least one hop", "bad_route_hint")
        out["r"].append(bytes_to_words(b"".join(hop.to_bytes() for hop in route)))
    if invoice.features:
        out["9"].append(int_to_words(invoice.features.value))
    return out


def _data_words(invoice: Invoice) -> list[int]:
    """Timestamp and tagged fields: the signed part of the data."""
    pending = _field_words(invoice)
    skipped = list(invoice.skipped)
    entries: list[tuple[int, list[int]]] = []
    for name in invoice.field_order:
        if name == SKIPPED:
            if skipped:
                tag, words = skipped.pop(0)
                entries.append((tag, list(words)))
        elif pending.get(name):
            entries.append((_TAGS[name], pending[name].pop(0)))
    for name in _CANONICAL_ORDER:  # whatever field_order did not place
        entries.extend((_TAGS[name], words) for words in pending[name])
    entries.extend((tag, list(words)) for tag, words in skipped)
    out = int_to_words(invoice.timestamp, _TIMESTAMP_WORDS)
    for tag, words in entries:
        if len(words) > _MAX_FIELD_WORDS:
            name = _TAG_NAMES.get(tag, str(tag))
            hint = " (use description_hash for a long description)" if name == "d" else ""
            raise InvoiceError(f"field {name!r} has {len(words)} words, at most {_MAX_FIELD_WORDS} fit{hint}", "field_too_long")
        out += [tag, len(words) >> 5, len(words) & 31, *words]
    return out


def _signing_message(hrp: str, data: list[int]) -> bytes:
    nbits = 5 * len(data)
    nbytes = -(-nbits // 8)
    return hrp.encode("utf-8") + (words_to_int(data) << (8 * nbytes - nbits)).to_bytes(nbytes, "big")


def _signing_digest(hrp: str, data: list[int]) -> bytes:
    return sha256(_signing_message(hrp, data))


def signing_message(invoice: Invoice) -> bytes:
    """What the signature commits to (before hashing): the human-readable part and the
    data part without the signature, zero-padded to whole bytes."""
    return _signing_message(invoice.hrp, _data_words(invoice))


# ------------------------------------------------------------ the three operations


def sign(invoice: Invoice, node_secret: bytes) -> Invoice:
    """``invoice`` signed by the payee's 32-byte ``node_secret`` (its node id becomes ``payee``)."""
    key = coincurve.PrivateKey(node_secret)
    node_id = key.public_key.format()
    if invoice.payee is not None and invoice.payee != node_id:
        raise InvoiceError("payee is not the signing key's node id", "bad_payee")
    unsigned = replace(invoice, payee=node_id, signature=None)
    signature = key.sign_recoverable(_signing_digest(invoice.hrp, _data_words(unsigned)), hasher=None)
    return replace(unsigned, signature=signature)


def encode(invoice: Invoice) -> str:
    """The invoice's bech32 text (lower case)."""
    if invoice.signature is None:
        raise InvoiceError("the invoice is not signed (call sign first)", "unsigned")
    return bech32_encode(invoice.hrp, _data_words(invoice) + bytes_to_words(invoice.signature))


def decode(text: str, *, max_length: int = MAX_INVOICE_LENGTH) -> Invoice:
    """Parse and verify an invoice (a ``lightning:`` prefix is accepted); :class:`InvoiceError` if bad."""
    if not isinstance(text, str):
        raise InvoiceError("an invoice is text", "bad_type")
    text = text.strip()
    if text[:10].lower() == "lightning:":
        text = text[10:]
    try:
        hrp, words = bech32_decode(text, max_length)
    except Bech32Error as exc:
        raise InvoiceError(f"not a valid bech32 invoice: {exc}", exc.code) from None
    currency, amount, amount_text = _parse_hrp(hrp)
    if len(words) < _TIMESTAMP_WORDS + _SIGNATURE_WORDS:
        raise InvoiceError(f"too short: {len(words)} data words, a timestamp and signature need {_TIMESTAMP_WORDS + _SIGNATURE_WORDS}", "too_short")
    data, sig_words = words[:-_SIGNATURE_WORDS], words[-_SIGNATURE_WORDS:]
    values, order, skipped = _parse_fields(data[_TIMESTAMP_WORDS:])
    features = Features(values.pop("features", 0))
    unknown = unknown_required(features, known_features())
    if unknown:
        raise InvoiceError(f"invoice requires unknown feature bits {sorted(unknown)}", "unknown_required_feature")
    problems = check_dependencies(features)
    if problems:
        raise InvoiceError("invoice feature dependencies not set: " + "; ".join(problems), "feature_dependency")
    explicit_payee = values.pop("payee", None)
    invoice = Invoice(
        currency=currency,
        timestamp=words_to_int(data[:_TIMESTAMP_WORDS]),
        amount_msat=amount,
        payment_hash=values.pop("payment_hash", b""),
        payment_secret=values.pop("payment_secret", b""),
        fallbacks=tuple(values.pop("fallbacks")),
        route_hints=tuple(values.pop("route_hints")),
        features=features,
        include_node_id=explicit_payee is not None,
        field_order=tuple(order),
        skipped=tuple(skipped),
        amount_text=amount_text,
        **values,
    )
    signature = words_to_bytes(sig_words)
    payee = _verify(signature, _signing_digest(hrp, data), explicit_payee)
    return replace(invoice, payee=payee, signature=signature)


def _verify(signature: bytes, digest: bytes, node_id: bytes | None) -> bytes:
    """The payee's node id: ``node_id`` if the signature verifies under it, else the recovered key."""
    if node_id is not None:
        if int.from_bytes(signature[32:64], "big") > _CURVE_ORDER // 2:
            raise InvoiceError("signature is not low-S, which an invoice with an 'n' field requires", "high_s_signature")
        if not coincurve.PublicKey(node_id).verify(compact_to_der(signature[:64]), digest, hasher=None):
            raise InvoiceError("signature does not verify under the 'n' field's node id", "bad_signature")
        return node_id
    if signature[64] > 3:
        raise InvoiceError(f"recovery id {signature[64]} is not 0..3: the payee cannot be recovered", "unrecoverable_signature")
    s = int.from_bytes(signature[32:64], "big")
    if s > _CURVE_ORDER // 2:
        # A high-S signature is read as its low-S twin with the same recovery id,
        # which is how the spec's high-S example recovers the payee.
        signature = signature[:32] + (_CURVE_ORDER - s).to_bytes(32, "big") + signature[64:]
    try:
        return bytes(coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None).format())
    except (ValueError, TypeError):
        raise InvoiceError("no public key can be recovered from the signature", "unrecoverable_signature") from None
