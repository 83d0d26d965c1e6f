"""The BOLT 12 field types the wire layer lacks: UTF-8 text, blinded paths, ``blinded_payinfo``,
``fallback_address``, ``invreq_bip_353_name``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import coincurve

from lnpmsg.payments.blinded import BlindedPayInfo
from lnpmsg.payments.onion.blinding import BlindedPath, BlindingError, decode_blinded_path, encode_blinded_path
from lnpmsg.wire.errors import WireError
from lnpmsg.wire.fields import Field

__all__ = ["BIP353_CHARS", "Bip353Name", "BlindedPaths", "FallbackAddress", "Fallbacks", "PayInfos", "PayInfo", "Utf8", "blinded_paths",
           "bip353_name", "fallbacks", "payinfos", "utf8"]


class Utf8(Field):
    """``...*utf8``: the rest of the value, valid UTF-8 (a ``str``)."""

    name = "utf8"
    greedy = True

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[str, int]:
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise WireError(f"utf8: not valid UTF-8 ({exc.reason})") from None

    def validate(self, value: Any) -> str:
        if not isinstance(value, str):
            raise WireError(f"utf8 must be a str, got {type(value).__name__}")
        return value

    def encode(self, value: Any) -> bytes:
        return self.validate(value).encode("utf-8")


def _truncated(what: str, need: int, left: int) -> WireError:
    return WireError(f"{what}: truncated (need {need} byte(s), {left} left)")


def _on_curve(key: bytes, what: str) -> None:
    try:
        coincurve.PublicKey(key)
    except Exception:  # noqa: BLE001 - coincurve raises ValueError or its own error
        raise WireError(f"blinded_path: {what} is not a point on secp256k1") from None


class BlindedPaths(Field):
    """``...*blinded_path``: one or more blinded paths, every key on the curve and every path with hops."""

    name = "blinded_paths"
    greedy = True

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[tuple[BlindedPath, ...], int]:
        paths = []
        while pos < end:
            try:
                path, pos = decode_blinded_path(data[:end], pos)
            except BlindingError as exc:
                raise WireError(str(exc)) from None
            if path.introduction_is_node_id:
                _on_curve(path.first_node_id, "first_node_id")
            _on_curve(path.first_path_key, "first_path_key")
            for hop in path.hops:
                _on_curve(hop.blinded_node_id, "blinded_node_id")
            paths.append(path)
        return tuple(paths), pos

    def validate(self, value: Any) -> tuple[BlindedPath, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(p, BlindedPath) for p in value):
            raise WireError("blinded_paths must be a sequence of BlindedPath")
        return tuple(value)

    def encode(self, value: Any) -> bytes:
        try:
            return b"".join(encode_blinded_path(p) for p in self.validate(value))
        except BlindingError as exc:
            raise WireError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class PayInfo:
    """``blinded_payinfo``: what paying through one blinded path adds, and its ``features``."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    features: bytes = b""

    @classmethod
    def from_blinded(cls, info: BlindedPayInfo, htlc_maximum_msat: int) -> PayInfo:
        """The payinfo of a path we made (:func:`~lnpmsg.payments.blinded.create_payment_path`'s totals)."""
        return cls(info.fee_base_msat, info.fee_proportional_millionths, info.cltv_expiry_delta, info.htlc_minimum_msat, htlc_maximum_msat)

    def to_blinded(self) -> BlindedPayInfo:
        """What the payer's route finder takes (:class:`~lnpmsg.payments.blinded.BlindedPayInfo`)."""
        return BlindedPayInfo(self.fee_base_msat, self.fee_proportional_millionths, self.cltv_expiry_delta, self.htlc_minimum_msat)


_PAYINFO_FIXED = 4 + 4 + 2 + 8 + 8 + 2


class PayInfos(Field):
    """``...*blinded_payinfo``."""

    name = "blinded_payinfos"
    greedy = True

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[tuple[PayInfo, ...], int]:
        out = []
        while pos < end:
            if end - pos < _PAYINFO_FIXED:
                raise _truncated("blinded_payinfo", _PAYINFO_FIXED, end - pos)
            d = data[pos : pos + _PAYINFO_FIXED]
            flen = int.from_bytes(d[26:28], "big")
            pos += _PAYINFO_FIXED
            if end - pos < flen:
                raise _truncated("blinded_payinfo features", flen, end - pos)
            out.append(PayInfo(int.from_bytes(d[0:4], "big"), int.from_bytes(d[4:8], "big"), int.from_bytes(d[8:10], "big"),
                               int.from_bytes(d[10:18], "big"), int.from_bytes(d[18:26], "big"), data[pos : pos + flen]))  # fmt: skip
            pos += flen
        return tuple(out), pos

    def validate(self, value: Any) -> tuple[PayInfo, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(p, PayInfo) for p in value):
            raise WireError("blinded_payinfos must be a sequence of PayInfo")
        return tuple(value)

    def encode(self, value: Any) -> bytes:
        out = []
        for p in self.validate(value):
            try:
                out.append(p.fee_base_msat.to_bytes(4, "big") + p.fee_proportional_millionths.to_bytes(4, "big")
                           + p.cltv_expiry_delta.to_bytes(2, "big") + p.htlc_minimum_msat.to_bytes(8, "big")
                           + p.htlc_maximum_msat.to_bytes(8, "big") + len(p.features).to_bytes(2, "big") + p.features)  # fmt: skip
            except OverflowError as exc:
                raise WireError(f"blinded_payinfo: {exc}") from None
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class FallbackAddress:
    """``fallback_address``: a witness version and program."""

    version: int
    address: bytes


class Fallbacks(Field):
    """``...*fallback_address``."""

    name = "fallbacks"
    greedy = True

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[tuple[FallbackAddress, ...], int]:
        out = []
        while pos < end:
            if end - pos < 3:
                raise _truncated("fallback_address", 3, end - pos)
            version, length = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "big")
            pos += 3
            if end - pos < length:
                raise _truncated("fallback_address", length, end - pos)
            out.append(FallbackAddress(version, data[pos : pos + length]))
            pos += length
        return tuple(out), pos

    def validate(self, value: Any) -> tuple[FallbackAddress, ...]:
        if not isinstance(value, list | tuple) or not all(isinstance(f, FallbackAddress) for f in value):
            raise WireError("fallbacks must be a sequence of FallbackAddress")
        return tuple(value)

    def encode(self, value: Any) -> bytes:
        return b"".join(bytes([f.version]) + len(f.address).to_bytes(2, "big") + f.address for f in self.validate(value))


#: the bytes a BIP 353 name or domain may hold
BIP353_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.")


@dataclass(frozen=True, slots=True)
class Bip353Name:
    """``invreq_bip_353_name``: the name and domain of a BIP 353 human-readable name."""

    name: bytes
    domain: bytes


class Bip353NameField(Field):
    """``invreq_bip_353_name``: u8-prefixed name, u8-prefixed domain."""

    name = "bip_353_name"

    def unpack(self, data: bytes, pos: int, end: int) -> tuple[Bip353Name, int]:
        parts = []
        for what in ("name", "domain"):
            if pos >= end:
                raise _truncated(f"bip_353 {what}_len", 1, 0)
            n = data[pos]
            pos += 1
            if end - pos < n:
                raise _truncated(f"bip_353 {what}", n, end - pos)
            parts.append(data[pos : pos + n])
            pos += n
        return Bip353Name(parts[0], parts[1]), pos

    def validate(self, value: Any) -> Bip353Name:
        if not isinstance(value, Bip353Name) or len(value.name) > 255 or len(value.domain) > 255:
            raise WireError("bip_353_name must be a Bip353Name of at most 255-byte parts")
        return value

    def encode(self, value: Any) -> bytes:
        v = self.validate(value)
        return bytes([len(v.name)]) + v.name + bytes([len(v.domain)]) + v.domain


utf8 = Utf8()
blinded_paths = BlindedPaths()
payinfos = PayInfos()
fallbacks = Fallbacks()
bip353_name = Bip353NameField()
