"""BOLT-9 feature bits: the value type, the table of known features, and the checks.

Bits are numbered from the least significant bit of the big-endian byte
string (bit 0 is ``0x01`` of the last byte). They come in pairs: the even bit
means "required" (a peer that does not know it must disconnect), the odd bit
"optional". A feature is offered if either bit is set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from lnpmsg.wire.errors import UnknownRequiredFeatureError, WireError

__all__ = [
    "FEATURES_BY_BIT",
    "FEATURES_BY_NAME",
    "INITIAL_ROUTING_SYNC",
    "KNOWN_FEATURES",
    "LEGACY_BITS",
    "Feature",
    "Features",
    "check_dependencies",
    "check_features",
    "describe",
    "feature",
    "is_compatible",
    "known_features",
    "unknown_required",
]

# A features field is u16-length-prefixed bytes, so at most 65535 * 8 bits.
MAX_FEATURE_BIT = 65535 * 8 - 1


@dataclass(frozen=True, slots=True)
class Feature:
    """One row of the BOLT-9 table.

    ``bit`` is the even (required) bit, ``bit + 1`` the odd (optional) one;
    ``contexts`` the spec's letters (I init, N node_announcement, C
    channel_announcement, 9 invoices, B blinded paths, T channel_type);
    ``depends`` the names of the features it needs; ``assumed`` marks those
    the spec now assumes every node supports.
    """

    name: str
    bit: int
    contexts: str = ""
    depends: tuple[str, ...] = ()
    assumed: bool = False

    @property
    def required_bit(self) -> int:
        return self.bit

    @property
    def optional_bit(self) -> int:
        return self.bit + 1


#: The features of 09-features.md, in table order.
KNOWN_FEATURES: tuple[Feature, ...] = (
    Feature("option_data_loss_protect", 0, assumed=True),
    Feature("option_upfront_shutdown_script", 4, "IN"),
    Feature("gossip_queries", 6),
    Feature("var_onion_optin", 8, assumed=True),
    Feature("gossip_queries_ex", 10, "IN"),
    Feature("option_static_remotekey", 12, assumed=True),
    Feature("payment_secret", 14, assumed=True),
    Feature("basic_mpp", 16, "IN9", ("payment_secret",)),
    Feature("option_support_large_channel", 18, "IN"),
    Feature("option_anchors", 22, "INT"),
    Feature("option_route_blinding", 24, "IN9"),
    Feature("option_shutdown_anysegwit", 26, "IN"),
    Feature("option_dual_fund", 28, "IN"),
    Feature("option_quiesce", 34, "IN"),
    Feature("option_attribution_data", 36, "IN9"),
    Feature("option_onion_messages", 38, "IN"),
    Feature("option_provide_storage", 42, "IN"),
    Feature("option_channel_type", 44, assumed=True),
    Feature("option_scid_alias", 46, "INT"),
    Feature("option_payment_metadata", 48, "9"),
    Feature("option_zeroconf", 50, "INT", ("option_scid_alias",)),
    Feature("option_simple_close", 60, "IN", ("option_shutdown_anysegwit",)),
    Feature("option_splice", 62, "IN"),
)

#: bits the spec once assigned and then retired, named in logs but not "known": the
#: odd-only ``initial_routing_sync`` (a peer without gossip_queries asking for a full
#: gossip dump; the gossip app still honours it)
INITIAL_ROUTING_SYNC = 3
LEGACY_BITS: dict[int, str] = {INITIAL_ROUTING_SYNC: "initial_routing_sync"}

FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in KNOWN_FEATURES}
#: Both bits of every known feature.
FEATURES_BY_BIT: dict[int, Feature] = {b: f for f in KNOWN_FEATURES for b in (f.bit, f.bit + 1)}


def feature(name: str) -> Feature:
    """The known feature of that name (WireError if none)."""
    try:
        return FEATURES_BY_NAME[name]
    except KeyError:
        raise WireError(f"unknown feature name {name!r}") from None


def _pair_bit(which: int | str | Feature) -> int:
    """The even bit of a feature given by bit, name or Feature."""
    if isinstance(which, Feature):
        return which.bit
    if isinstance(which, str):
        return feature(which).bit
    if type(which) is not int or which < 0:
        raise WireError(f"a feature bit is a non-negative int, got {which!r}")
    return which & ~1


def _check_bit(bit: int) -> int:
    if type(bit) is not int or not 0 <= bit <= MAX_FEATURE_BIT:
        raise WireError(f"feature bit must be an int in 0..{MAX_FEATURE_BIT}, got {bit!r}")
    return bit


def _set_bits(value: int) -> list[int]:
    # Byte by byte: a peer can send 64 KiB of features, and bit-by-bit big-int
    # arithmetic on that would be quadratic.
    if not value:
        return []
    data = value.to_bytes((value.bit_length() + 7) // 8, "little")
    bits: list[int] = []
    for index, byte in enumerate(data):
        if byte:
            base = index * 8
            bits.extend(base + j for j in range(8) if byte >> j & 1)
    return bits


class Features:
    """An immutable set of feature bits.

    ``Features()`` is empty; ``Features.from_bytes(init.features)``,
    ``Features.from_bits([17, 23])``, ``Features.from_names(optional=["basic_mpp"])``
    build one. ``|`` joins two (init's ``globalfeatures | features``).
    """

    __slots__ = ("_value",)

    def __init__(self, value: int = 0) -> None:
        if type(value) is not int or value < 0:
            raise WireError(f"features value must be a non-negative int, got {value!r}")
        if value.bit_length() > MAX_FEATURE_BIT + 1:
            raise WireError("features value does not fit a features field (65535 bytes)")
        self._value = value

    # ---- construction
    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Features:
        """From the big-endian wire bytes (any length, leading zero bytes allowed)."""
        if len(data) > 65535:
            raise WireError("a features field holds at most 65535 bytes")
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def from_bits(cls, bits: Iterable[int]) -> Features:
        value = 0
        for bit in bits:
            value |= 1 << _check_bit(bit)
        return cls(value)

    @classmethod
    def from_names(cls, optional: Iterable[str] = (), required: Iterable[str] = ()) -> Features:
        """Known features by name: offered as optional (odd bit) or required (even bit)."""
        bits = [feature(n).optional_bit for n in optional] + [feature(n).required_bit for n in required]
        return cls.from_bits(bits)

    # ---- wire form
    def to_bytes(self, min_length: int = 0) -> bytes:
        """The big-endian bytes, of minimal length (BOLT 1 asks for it) unless ``min_length`` is more."""
        length = max((self._value.bit_length() + 7) // 8, min_length)
        return self._value.to_bytes(length, "big")

    @property
    def value(self) -> int:
        return self._value

    def __int__(self) -> int:
        return self._value

    # ---- bits
    def has(self, bit: int) -> bool:
        """Is this exact bit set?"""
        return bit >= 0 and bool(self._value >> bit & 1)

    def __contains__(self, which: object) -> bool:
        """``17 in f``: that exact bit; ``"basic_mpp" in f``: the feature is offered (either bit)."""
        if isinstance(which, str | Feature):
            return self.supports(which)
        return isinstance(which, int) and self.has(which)

    def supports(self, which: int | str | Feature) -> bool:
        """Is the feature offered (either bit of its pair)?"""
        return bool(self._value >> _pair_bit(which) & 3)

    def requires(self, which: int | str | Feature) -> bool:
        """Is the feature's even (required) bit set?"""
        return bool(self._value >> _pair_bit(which) & 1)

    def set(self, bit: int) -> Features:
        return Features(self._value | 1 << _check_bit(bit))

    def clear(self, bit: int) -> Features:
        return Features(self._value & ~(1 << _check_bit(bit)))

    def bits(self) -> list[int]:
        """The set bits, ascending."""
        return _set_bits(self._value)

    def __iter__(self) -> Iterator[int]:
        return iter(self.bits())

    def __len__(self) -> int:
        return self._value.bit_count()

    def __bool__(self) -> bool:
        return bool(self._value)

    def __or__(self, other: Features) -> Features:
        if not isinstance(other, Features):
            return NotImplemented
        return Features(self._value | other._value)

    def __and__(self, other: Features) -> Features:
        if not isinstance(other, Features):
            return NotImplemented
        return Features(self._value & other._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Features):
            return NotImplemented
        return self._value == other._value

    def __hash__(self) -> int:
        return hash(self._value)

    def describe(self) -> list[str]:
        return describe(self)

    def __repr__(self) -> str:
        return f"Features({', '.join(describe(self))})"


def known_features() -> Features:
    """Both bits of every feature in the BOLT-9 table: the bits this library understands."""
    return Features.from_bits(FEATURES_BY_BIT)


def check_dependencies(features: Features) -> list[str]:
    """What breaks BOLT 9's dependency rule: one line per known feature whose dependency is missing."""
    problems = []
    for f in KNOWN_FEATURES:
        if features.supports(f):
            for dep in f.depends:
                if not features.supports(dep):
                    problems.append(f"{f.name} needs {dep}")
    return problems


def unknown_required(features: Features, known: Features | Iterable[int], *, assume: bool = True) -> set[int]:
    """Even (required) bits set in ``features`` whose pair is not in ``known``.

    ``known`` is what this node understands (either bit of a pair counts).
    With ``assume`` (the default) the features BOLT 9 marks ASSUMED count as
    known too: every node supports them, and peers still set them.
    """
    known_value = known.value if isinstance(known, Features) else Features.from_bits(known).value
    unknown = set()
    for bit in features.bits():
        if bit & 1:
            continue
        if known_value >> bit & 3:
            continue
        if assume:
            f = FEATURES_BY_BIT.get(bit)
            if f is not None and f.assumed:
                continue
        unknown.add(bit)
    return unknown


def check_features(features: Features, known: Features | Iterable[int], *, assume: bool = True) -> None:
    """Everything a receiver of ``init`` must check, as one call.

    Raises :class:`UnknownRequiredFeatureError` when ``features`` requires bits
    not in ``known`` (see :func:`unknown_required`), and :class:`WireError`
    when a known feature's dependency is missing.
    """
    unknown = unknown_required(features, known, assume=assume)
    if unknown:
        raise UnknownRequiredFeatureError(unknown)
    problems = check_dependencies(features)
    if problems:
        raise WireError("feature dependencies not set: " + "; ".join(problems))


def is_compatible(local: Features, remote: Features, known: Features | None = None) -> bool:
    """Can the two nodes talk? Neither requires a feature the other lacks, and ``remote``'s
    dependencies hold. ``known`` defaults to ``local`` (what we understand)."""
    if unknown_required(remote, local if known is None else known):
        return False
    if check_dependencies(remote):
        return False
    # What we require, the remote must at least offer (else it would have to
    # disconnect, or does not support it).
    for bit in local.bits():
        if not bit & 1 and not remote.supports(bit):
            f = FEATURES_BY_BIT.get(bit)
            if f is None or not f.assumed:
                return False
    return True


def describe(features: Features) -> list[str]:
    """Readable names of the set bits, for logs and JSON: ``"basic_mpp (optional)"``, ``"bit 101 (unknown, optional)"``."""
    out = []
    for bit in features.bits():
        kind = "optional" if bit & 1 else "required"
        f = FEATURES_BY_BIT.get(bit)
        if f is not None:
            out.append(f"{f.name} ({kind})")
        elif bit in LEGACY_BITS:
            out.append(f"{LEGACY_BITS[bit]} ({kind}, legacy)")
        else:
            out.append(f"bit {bit} (unknown, {kind})")
    return out
