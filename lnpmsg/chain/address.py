"""Addresses to scripts and back, for one network (bech32/bech32m via embit,
base58 for legacy and P2SH addresses)."""

from __future__ import annotations

from embit import base58, bech32  # type: ignore[import-untyped]

from lnpmsg.bitcoin.script import p2pkh_script
from lnpmsg.chain.errors import ChainError

__all__ = [
    "NETWORK_HRPS",
    "address_for_script",
    "script_for_address",
    "script_for_destination",
]

#: bech32 human-readable part per network, and base58 version bytes (p2pkh, p2sh)
NETWORK_HRPS = {"bc": (0x00, 0x05), "tb": (0x6F, 0xC4), "bcrt": (0x6F, 0xC4)}


def script_for_address(address: str, hrp: str = "bcrt") -> bytes:
    """The scriptPubKey an address of network ``hrp`` pays to."""
    if hrp not in NETWORK_HRPS:
        raise ChainError(f"unknown network {hrp!r}", code="malformed")
    if not isinstance(address, str) or not address or len(address) > 90:
        raise ChainError(f"not an address: {address!r}", code="malformed")
    lowered = address.lower()
    if lowered.startswith(hrp + "1"):
        try:
            version, program = bech32.decode(hrp, address)
        except Exception as exc:
            raise ChainError(
                f"bad bech32 address {address!r}", code="malformed"
            ) from exc
        if version is None or program is None:
            raise ChainError(f"bad bech32 address {address!r}", code="malformed")
        op = 0 if version == 0 else 0x50 + version
        return bytes([op, len(program)]) + bytes(program)
    p2pkh, p2sh = NETWORK_HRPS[hrp]
    try:
        data = bytes(base58.decode_check(address))
    except Exception as exc:
        raise ChainError(f"not a {hrp} address: {address!r}", code="malformed") from exc
    if len(data) == 21 and data[0] == p2pkh:
        return p2pkh_script(data[1:])
    if len(data) == 21 and data[0] == p2sh:
        return b"\xa9\x14" + data[1:] + b"\x87"
    raise ChainError(f"not a {hrp} address: {address!r}", code="malformed")


def script_for_destination(destination: str | bytes, hrp: str = "bcrt") -> bytes:
    """An address (text) or a raw scriptPubKey (bytes) as a scriptPubKey."""
    if isinstance(destination, (bytes, bytearray)):
        if not destination or len(destination) > 10_000:
            raise ChainError("a scriptPubKey has 1 to 10000 bytes", code="malformed")
        return bytes(destination)
    return script_for_address(destination, hrp)


def address_for_script(script_pubkey: bytes, hrp: str = "bcrt") -> str:
    """The segwit address of a witness program script (v0..v16)."""
    if len(script_pubkey) < 4 or script_pubkey[1] != len(script_pubkey) - 2:
        raise ChainError("not a witness program script", code="malformed")
    op = script_pubkey[0]
    if op == 0:
        version = 0
    elif 0x51 <= op <= 0x60:
        version = op - 0x50
    else:
        raise ChainError("not a witness program script", code="malformed")
    encoded = bech32.encode(hrp, version, script_pubkey[2:])
    if encoded is None:
        raise ChainError("not a valid witness program", code="malformed")
    return str(encoded)
