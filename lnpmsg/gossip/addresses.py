"""Reading ``node_announcement`` address descriptors (BOLT 7) leniently.

A descriptor we cannot read (a bad Tor checksum, a new type) must not make a
validly signed announcement unusable: reading stops there and says why.
:func:`check_addresses` gives the gossip graph the same verdict as
:func:`parse_addresses` without building the addresses.
"""

from __future__ import annotations

from lnpmsg.wire import Address, UnknownAddr, WireError, decode_address

__all__ = ["check_addresses", "parse_addresses"]

#: data length after the type byte of the fixed-size address types
_ADDRESS_LENGTH = {1: 6, 2: 18, 3: 12, 4: 37}


#: descriptor types whose every value of the right length is valid (IPv4, IPv6:
#: any address bytes, a 2-byte port): checked by their length alone
_ALWAYS_VALID = frozenset((1, 2))


def _descriptor_end(data: bytes, pos: int, end: int) -> tuple[int, str | None]:
    """Where the address descriptor at ``pos`` ends: ``(stop, None)``; ``(-1, why)`` if it is
    truncated; ``(-1, None)`` for an unknown type (it takes the rest of the list)."""
    kind = data[pos]
    if kind in _ADDRESS_LENGTH:
        stop = pos + 1 + _ADDRESS_LENGTH[kind]
    elif kind == 5:
        if pos + 1 >= end:
            return -1, "dns address descriptor truncated"
        stop = pos + 2 + data[pos + 1] + 2
    else:
        return -1, None
    if stop > end:
        return -1, f"address descriptor of type {kind} truncated"
    return stop, None


def check_addresses(data: bytes) -> tuple[str | None, int]:
    """What the gossip graph needs of node_announcement addresses, without building them:
    why reading stopped early, as :func:`parse_addresses` says (None: it did not), and
    how many DNS names were read before that."""
    pos, end = 0, len(data)
    dns = 0
    while pos < end:
        kind = data[pos]
        stop, problem = _descriptor_end(data, pos, end)
        if stop < 0:
            return (parse_addresses(data[pos:])[1] if problem is None else problem), dns
        if kind not in _ALWAYS_VALID:
            try:
                decode_address(data[pos:stop])
            except WireError as exc:
                return str(exc), dns
            dns += kind == 5
        pos = stop
    return None, dns


def parse_addresses(data: bytes) -> tuple[tuple[Address, ...], str | None]:
    """Read node_announcement address descriptors leniently.

    Returns the descriptors read and, if reading stopped early, why (a
    truncated or malformed descriptor). An unknown type ends the list as an
    :class:`~lnpmsg.wire.UnknownAddr` holding the rest, as BOLT 7 asks.
    """
    out: list[Address] = []
    pos, end = 0, len(data)
    while pos < end:
        kind = data[pos]
        stop, problem = _descriptor_end(data, pos, end)
        if problem is not None:
            return tuple(out), problem
        if stop < 0:
            try:
                out.append(UnknownAddr(kind, data[pos + 1 :]))
            except WireError as exc:
                return tuple(out), str(exc)
            return tuple(out), None
        try:
            out.append(decode_address(data[pos:stop]))
        except WireError as exc:
            return tuple(out), str(exc)
        pos = stop
    return tuple(out), None
