"""The parts of a BOLT-11 invoice that stand alone: the error type, currency
prefixes, on-chain fallbacks and route hint hops (sans-IO)."""

from __future__ import annotations

from dataclasses import dataclass

from embit import base58  # type: ignore[import-untyped]
from embit import bech32 as segwit  # type: ignore[import-untyped]

from lnpmsg.bitcoin.script import p2pkh_script

__all__ = ["CURRENCIES", "HINT_HOP_SIZE", "Currency", "Fallback", "InvoiceError", "RouteHintHop", "currency_for", "fallback_problem", "prefix_for_network"]

#: one route hint hop: node id, short_channel_id, fee base, fee rate, CLTV delta
HINT_HOP_SIZE = 33 + 8 + 4 + 4 + 2


class InvoiceError(ValueError):
    """A bad invoice (or a bad request to build one); ``code`` names the reason for programs."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Currency:
    """A BOLT-11 currency prefix and what its fallback addresses look like."""

    prefix: str
    network: str
    bech32_hrp: str
    p2pkh_version: int
    p2sh_version: int


#: BOLT 11 prefixes (``lntbs`` is signet, ``lnbcrt`` regtest; testnet4 shares ``lntb``)
CURRENCIES: dict[str, Currency] = {
    c.prefix: c
    for c in (
        Currency("bc", "mainnet", "bc", 0x00, 0x05),
        Currency("tb", "testnet", "tb", 0x6F, 0xC4),
        Currency("tbs", "signet", "tb", 0x6F, 0xC4),
        Currency("bcrt", "regtest", "bcrt", 0x6F, 0xC4),
    )
}


def prefix_for_network(network: str) -> str:
    """The currency prefix of invoices on ``network`` (the node's names: ``bitcoin`` is mainnet); regtest's for one not known."""
    name = "mainnet" if network == "bitcoin" else network
    return next((c.prefix for c in CURRENCIES.values() if c.network == name), "bcrt")


def currency_for(prefix: str) -> Currency:
    try:
        return CURRENCIES[prefix]
    except KeyError:
        raise InvoiceError(f"unknown currency prefix 'ln{prefix}' (known: {', '.join('ln' + p for p in CURRENCIES)})", "unknown_currency") from None


@dataclass(frozen=True, slots=True)
class Fallback:
    """An on-chain fallback: witness version 0..16 and its program, or 17 (P2PKH) / 18 (P2SH) and a 20-byte hash."""

    version: int
    program: bytes

    def __post_init__(self) -> None:
        problem = fallback_problem(self.version, self.program)
        if problem:
            raise InvoiceError(f"bad fallback address: {problem}", "bad_fallback")

    @property
    def script_pubkey(self) -> bytes:
        if self.version == 17:
            return p2pkh_script(self.program)
        if self.version == 18:
            return b"\xa9\x14" + self.program + b"\x87"
        return bytes([0x50 + self.version if self.version else 0, len(self.program)]) + self.program

    def address(self, currency: str) -> str:
        """The address text on ``currency``'s network (``bc1q...``, ``1...``, ``3...``)."""
        cur = currency_for(currency)
        if self.version == 17:
            return str(base58.encode_check(bytes([cur.p2pkh_version]) + self.program))
        if self.version == 18:
            return str(base58.encode_check(bytes([cur.p2sh_version]) + self.program))
        return str(segwit.encode(cur.bech32_hrp, self.version, self.program))

    @classmethod
    def from_address(cls, address: str, currency: str) -> Fallback:
        """Parse an address of ``currency``'s network."""
        cur = currency_for(currency)
        if address.lower().startswith(cur.bech32_hrp + "1"):
            version, program = segwit.decode(cur.bech32_hrp, address)
            if version is None:
                raise InvoiceError(f"not a valid {cur.network} segwit address: {address!r}", "bad_fallback")
            return cls(version, bytes(program))
        try:
            data = bytes(base58.decode_check(address))
        except Exception:
            raise InvoiceError(f"not a {cur.network} address: {address!r}", "bad_fallback") from None
        if len(data) == 21 and data[0] in (cur.p2pkh_version, cur.p2sh_version):
            return cls(17 if data[0] == cur.p2pkh_version else 18, data[1:])
        raise InvoiceError(f"not a {cur.network} address: {address!r}", "bad_fallback")


def fallback_problem(version: int, program: bytes) -> str:
    if version in (17, 18):
        return "" if len(program) == 20 else "a P2PKH/P2SH hash is 20 bytes"
    if not 0 <= version <= 16:
        return f"unknown version {version}"
    if not 2 <= len(program) <= 40:
        return "a witness program has 2 to 40 bytes"
    if version == 0 and len(program) not in (20, 32):
        return "a version 0 witness program has 20 or 32 bytes"
    return ""


@dataclass(frozen=True, slots=True)
class RouteHintHop:
    """One channel of a private route: from ``node_id`` over ``short_channel_id``, with its policy."""

    node_id: bytes
    short_channel_id: int
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int

    def __post_init__(self) -> None:
        for name, value, bits in (
            ("short_channel_id", self.short_channel_id, 64),
            ("fee_base_msat", self.fee_base_msat, 32),
            ("fee_proportional_millionths", self.fee_proportional_millionths, 32),
            ("cltv_expiry_delta", self.cltv_expiry_delta, 16),
        ):
            if type(value) is not int or not 0 <= value < 1 << bits:
                raise InvoiceError(f"route hint {name} must be an unsigned {bits}-bit int", "bad_route_hint")
        if len(self.node_id) != 33:
            raise InvoiceError("route hint node id must be 33 bytes", "bad_route_hint")

    def to_bytes(self) -> bytes:
        return (
            self.node_id
            + self.short_channel_id.to_bytes(8, "big")
            + self.fee_base_msat.to_bytes(4, "big")
            + self.fee_proportional_millionths.to_bytes(4, "big")
            + self.cltv_expiry_delta.to_bytes(2, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RouteHintHop:
        return cls(
            data[:33],
            int.from_bytes(data[33:41], "big"),
            int.from_bytes(data[41:45], "big"),
            int.from_bytes(data[45:49], "big"),
            int.from_bytes(data[49:51], "big"),
        )
