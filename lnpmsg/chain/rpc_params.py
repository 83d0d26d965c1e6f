"""Checks of RPC params with Bitcoin Core's error codes and messages (sans-IO)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from lnpmsg.bitcoin.hashes import hash_from_hex
from lnpmsg.bitcoin.tx import MAX_MONEY, Tx
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.rpc_methods import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_PARAMETER,
    RPC_TYPE_ERROR,
    RpcError,
    is_default,
)
from lnpmsg.chain.tx import as_tx

__all__ = [
    "DEFAULT_MAX_FEERATE_SAT_PER_KVB",
    "bool_param",
    "btc_param",
    "feerate_limit",
    "hash_param",
    "int_param",
    "json_type",
    "level_param",
    "tx_param",
]

#: Core's default ``maxfeerate`` for sendrawtransaction/testmempoolaccept: 0.10 BTC/kvB
DEFAULT_MAX_FEERATE_SAT_PER_KVB = 10_000_000


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def int_param(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {json_type(value)} for {name} is not of expected type number")
    return value


def bool_param(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {json_type(value)} for {name} is not of expected type bool")
    return value


def level_param(value: object, name: str, highest: int) -> int:
    """A verbosity given as a bool (Core's older form) or a number."""
    level = int(value) if isinstance(value, bool) else int_param(value, name)
    if not 0 <= level <= highest:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be between 0 and {highest}")
    return level


def hash_param(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise RpcError(RPC_TYPE_ERROR, f"JSON value of type {json_type(value)} for {name} is not of expected type string")
    if len(value) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(value)}, for '{value[:80]}')")
    try:
        return hash_from_hex(value)
    except Exception:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{value}')") from None


def tx_param(value: object, what: str = "TX decode failed") -> Tx:
    try:
        if not isinstance(value, str):
            raise ValueError
        return as_tx(bytes.fromhex(value))
    except (ValueError, ChainError):
        raise RpcError(RPC_DESERIALIZATION_ERROR, f"{what}. Make sure the tx has at least one input.") from None


def btc_param(value: object, name: str) -> int:
    """An amount in BTC (number or string) as satoshis."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise RpcError(RPC_TYPE_ERROR, f"Amount is not a number or string ({name})")
    try:
        sat = Decimal(str(value)) * 100_000_000
    except InvalidOperation:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from None
    if sat != sat.to_integral_value() or not 0 <= sat <= MAX_MONEY:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return int(sat)


def feerate_limit(value: object) -> int:
    """``maxfeerate`` (BTC/kvB; 0 means no limit) as sat/kvB."""
    return DEFAULT_MAX_FEERATE_SAT_PER_KVB if is_default(value) else btc_param(value, "maxfeerate")
