"""Attribution data (BOLT 4, ``option_attribution_data``): hold times and
truncated HMACs that let the origin node check every hop of a failure or a
fulfilment, so a hop that garbles a reply can be named.

``attribution_data`` is ``20*u32 htlc_hold_times`` (in units of 100 ms, the
hop's own first) and ``210`` truncated (4-byte) HMACs. The HMACs are laid out
in blocks: block 0 holds the current hop's 20 HMACs, block ``j`` the
``20 - j`` HMACs of the hop ``j`` places downstream; within a block the HMAC
for route position ``y`` (hops left after this one up to the route's end)
sits at index ``19 - y``. Hop ``x``'s HMAC for ``y`` covers the return packet
before its ``ammag`` stream, the first ``y + 1`` hold times and the ``y``
downstream HMACs for the positions below it. Each hop then XORs the whole
block with its ``ammagext`` stream.

Every hop (the failing or fulfilling one starts from all zeros) calls
:func:`add_attribution` (or, for failures, :func:`fail_with_attribution` at
the failing hop and :func:`forward_with_attribution` at each hop back); the
origin calls :func:`verify_attribution`.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from lnpmsg.payments.onion._crypto import KEY_AMMAG, KEY_UM, chacha20_xor, derive_key
from lnpmsg.payments.onion.failure_onion import FAILURE_PAD_SIZE, failure_packet, wrap_failure_onion
from lnpmsg.payments.onion.failures import Failure, UnknownFailure

__all__ = [
    "ATTRIBUTION_DATA_SIZE",
    "MAX_ATTRIBUTED_HOPS",
    "AttributionCheck",
    "add_attribution",
    "fail_with_attribution",
    "forward_with_attribution",
    "verify_attribution",
]

#: the longest route attribution data describes
MAX_ATTRIBUTED_HOPS = 20
_HOLD_SIZE = 4
_TRUNCATED = 4
_HOLD_TIMES_SIZE = MAX_ATTRIBUTED_HOPS * _HOLD_SIZE
#: 20 + 19 + ... + 1
_HMAC_COUNT = MAX_ATTRIBUTED_HOPS * (MAX_ATTRIBUTED_HOPS + 1) // 2
ATTRIBUTION_DATA_SIZE = _HOLD_TIMES_SIZE + _HMAC_COUNT * _TRUNCATED
KEY_AMMAGEXT = KEY_AMMAG + b"ext"
_MAX_U32 = 0xFFFFFFFF
# where each hop's block of HMACs starts (block j has 20 - j entries)
_BLOCK_START = [sum(MAX_ATTRIBUTED_HOPS - k for k in range(j)) for j in range(MAX_ATTRIBUTED_HOPS)]


def _hmac_index(block: int, position: int) -> int:
    """Index (in 4-byte entries) of block ``block``'s HMAC for its own route position ``position``
    (block ``j`` holds positions ``19 - j`` down to 0)."""
    return _BLOCK_START[block] + MAX_ATTRIBUTED_HOPS - 1 - block - position


def _position_hmac(um_key: bytes, message: bytes, hold_times: bytes, hmacs: list[bytes], position: int) -> bytes:
    covered = [hmacs[_hmac_index(j, position - j)] for j in range(1, position + 1)]
    data = message + hold_times[: (position + 1) * _HOLD_SIZE] + b"".join(covered)
    return hmac.digest(um_key, data, "sha256")[:_TRUNCATED]


def _split(data: bytes) -> tuple[bytes, list[bytes]]:
    hmacs = data[_HOLD_TIMES_SIZE:]
    return data[:_HOLD_TIMES_SIZE], [hmacs[i : i + _TRUNCATED] for i in range(0, len(hmacs), _TRUNCATED)]


def add_attribution(shared_secret: bytes, message: bytes, hold_time: int, attribution_data: bytes | None = None) -> bytes:
    """This hop's attribution data, from what came from downstream (None: start from zeros).

    ``message`` is the return packet before this hop's ``ammag`` stream (for
    the failing hop: ``hmac || failure_len || failuremsg || pad_len || pad``),
    or empty for a fulfilment. ``hold_time`` is in units of 100 ms.
    ``ValueError`` for attribution data of the wrong size or a hold time beyond u32.
    """
    if not 0 <= hold_time <= _MAX_U32:
        raise ValueError(f"a hold time is a u32, not {hold_time}")
    if attribution_data is None:
        attribution_data = bytes(ATTRIBUTION_DATA_SIZE)
    if len(attribution_data) != ATTRIBUTION_DATA_SIZE:
        raise ValueError(f"attribution data has {ATTRIBUTION_DATA_SIZE} bytes, not {len(attribution_data)}")
    old_holds, old_hmacs = _split(attribution_data)
    # downstream hop j becomes hop j + 1: its block loses the HMAC for its highest position
    holds = struct.pack(">I", hold_time) + old_holds[:-_HOLD_SIZE]
    hmacs = [bytes(_TRUNCATED)] * MAX_ATTRIBUTED_HOPS
    for block in range(MAX_ATTRIBUTED_HOPS - 1):
        start = _BLOCK_START[block]
        hmacs += old_hmacs[start + 1 : start + MAX_ATTRIBUTED_HOPS - block]
    um_key = derive_key(KEY_UM, shared_secret)
    for position in range(MAX_ATTRIBUTED_HOPS):
        hmacs[_hmac_index(0, position)] = _position_hmac(um_key, message, holds, hmacs, position)
    return chacha20_xor(derive_key(KEY_AMMAGEXT, shared_secret), holds + b"".join(hmacs))


def fail_with_attribution(
    shared_secret: bytes, failure: Failure | UnknownFailure | bytes, hold_time: int, *, pad_to: int = FAILURE_PAD_SIZE
) -> tuple[bytes, bytes]:
    """The failing hop's ``(failure onion, attribution_data)`` for ``update_fail_htlc``."""
    plain = failure_packet(shared_secret, failure, pad_to=pad_to)
    return wrap_failure_onion(shared_secret, plain), add_attribution(shared_secret, plain, hold_time)


def forward_with_attribution(
    shared_secret: bytes, packet: bytes, attribution_data: bytes | None, hold_time: int
) -> tuple[bytes, bytes]:
    """An upstream hop's ``(failure onion, attribution_data)`` from what came back from downstream
    (``attribution_data`` None when the downstream hop sent none)."""
    return wrap_failure_onion(shared_secret, packet), add_attribution(shared_secret, packet, hold_time, attribution_data)


@dataclass(frozen=True, slots=True)
class AttributionCheck:
    """What the origin learned from attribution data.

    ``hold_times`` are the reported hold times (100 ms units) of the hops
    whose HMACs verified, in route order; ``first_bad_hop`` is the index of
    the first hop whose HMAC did not verify (it or its downstream neighbour
    tampered with the reply), or None when all verified.
    """

    hold_times: tuple[int, ...]
    first_bad_hop: int | None


def verify_attribution(
    shared_secrets: Sequence[bytes], attribution_data: bytes, failure_onion: bytes | None = None
) -> AttributionCheck:
    """Check each hop's HMAC for its position in the route, from the first hop on.

    ``failure_onion`` is the returned failure onion as the origin received it
    (None for a fulfilment, whose HMACs cover no packet). ``ValueError`` for
    a route longer than 20 hops or attribution data of the wrong size.
    """
    n = len(shared_secrets)
    if not 1 <= n <= MAX_ATTRIBUTED_HOPS:
        raise ValueError(f"attribution data covers 1 to {MAX_ATTRIBUTED_HOPS} hops, not {n}")
    if len(attribution_data) != ATTRIBUTION_DATA_SIZE:
        raise ValueError(f"attribution data has {ATTRIBUTION_DATA_SIZE} bytes, not {len(attribution_data)}")
    holds_seen: list[int] = []
    data = bytes(attribution_data)
    for i, secret in enumerate(shared_secrets):
        data = chacha20_xor(derive_key(KEY_AMMAGEXT, secret), data)
        holds, hmacs = _split(data)
        position = n - 1 - i
        message = b""
        if failure_onion is not None:
            # the packet as hop i saw it before its own ammag stream
            failure_onion = message = wrap_failure_onion(secret, failure_onion)
        expected = _position_hmac(derive_key(KEY_UM, secret), message, holds, hmacs, position)
        if not hmac.compare_digest(expected, hmacs[_hmac_index(0, position)]):
            return AttributionCheck(hold_times=tuple(holds_seen), first_bad_hop=i)
        holds_seen.append(struct.unpack_from(">I", holds)[0])
        # what the next hop produced: shift this hop's view back by one hop
        data = holds[_HOLD_SIZE:] + bytes(_HOLD_SIZE) + b"".join(_unshift(hmacs))
    return AttributionCheck(hold_times=tuple(holds_seen), first_bad_hop=None)


def _unshift(hmacs: list[bytes]) -> list[bytes]:
    """Blocks as the next hop downstream laid them out (its pruned HMACs come back as zeros)."""
    out: list[bytes] = []
    for block in range(1, MAX_ATTRIBUTED_HOPS):
        start = _BLOCK_START[block]
        out += [bytes(_TRUNCATED)] + hmacs[start : start + MAX_ATTRIBUTED_HOPS - block]
    out += [bytes(_TRUNCATED)]
    return out
