"""Inbound admission: which connections may handshake, and whom to evict (sans-IO).

A node accepting connections from anyone must not let a few sources hold
every handshake slot. The decisions here are made from counts and ``now``
only; the node's trio shell carries them out (it cancels an evicted
handshake, refuses a connection, logs a summary).

Rules (the limits are :class:`AdmissionLimits`):

- a pending handshake is bounded per IP (``max_pending_per_ip``) and per
  subnet (``/24`` IPv4, ``/64`` IPv6: ``max_pending_per_subnet``) and in total
  (``max_pending``);
- inbound over Tor all arrives from the onion service's loopback listener,
  so per-IP limits cannot tell its peers apart: it has its own budget
  (``max_pending_tor``) and never takes clearnet slots;
- a full budget evicts instead of refusing: the oldest pending handshake of
  the same IP (a reconnecting attacker replaces itself), else of the same
  subnet, else, for the total, the oldest one of the subnet holding the most
  slots. A legitimate peer finishes its handshake in one round trip, so
  sources that hold sockets open lose their slots to newcomers, and a flood
  from few subnets cannot evict peers from other subnets first;
- established connections per IP stay bounded (``max_connections_per_ip``):
  past it a connection is refused (nothing to evict: those are peers).
- a total peer limit (``max_peers``) with ``reserved_peer_slots`` kept for
  protected peers (those we have channels with) and our own outbound
  connections: an unprotected inbound peer is refused once
  ``max_peers - reserved_peer_slots`` peers are connected.

:class:`RefusalLog` aggregates refusals into one log line per interval.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable

__all__ = [
    "ACT_ONE_TIMEOUT",
    "MAX_CONNECTIONS_PER_IP",
    "MAX_PEERS",
    "MAX_PENDING_HANDSHAKES",
    "MAX_PENDING_PER_IP",
    "MAX_PENDING_PER_SUBNET",
    "MAX_PENDING_TOR",
    "REFUSAL_LOG_INTERVAL",
    "RESERVED_PEER_SLOTS",
    "Admission",
    "AdmissionLimits",
    "Decision",
    "RefusalLog",
    "subnet_of",
]

#: connections (handshaking or established) one remote IP may hold at once
MAX_CONNECTIONS_PER_IP = 16
#: inbound handshakes in progress at once, over all clearnet sources
MAX_PENDING_HANDSHAKES = 128
#: inbound handshakes in progress from one IP (more evict that IP's oldest)
MAX_PENDING_PER_IP = 4
#: inbound handshakes in progress from one /24 (IPv4) or /64 (IPv6)
MAX_PENDING_PER_SUBNET = 16
#: inbound handshakes in progress over Tor (all from the onion service's loopback)
MAX_PENDING_TOR = 32
#: act one (50 bytes) must arrive within this: a silent socket costs a slot no longer
ACT_ONE_TIMEOUT = 4.0
#: connected peers at most (inbound, outbound and protected together)
MAX_PEERS = 1000
#: of ``MAX_PEERS``, the slots unprotected inbound peers cannot take
RESERVED_PEER_SLOTS = 100
#: refusals are summed up in one log line per this many seconds
REFUSAL_LOG_INTERVAL = 10.0


#: source addresses whose subnet is remembered (parsing one costs about as much
#: as a tenth of a handshake's ECDHs; a busy node sees the same few again and again)
SUBNET_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=SUBNET_CACHE_SIZE)
def subnet_of(ip: str) -> str:
    """The subnet a limit groups ``ip`` into: its /24 (IPv4) or /64 (IPv6); other strings as they are."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass(frozen=True)
class AdmissionLimits:
    """The numbers :class:`Admission` decides by (see the module's docstring)."""

    max_pending: int = MAX_PENDING_HANDSHAKES
    max_pending_per_ip: int = MAX_PENDING_PER_IP
    max_pending_per_subnet: int = MAX_PENDING_PER_SUBNET
    max_pending_tor: int = MAX_PENDING_TOR
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP
    max_peers: int = MAX_PEERS
    reserved_peer_slots: int = RESERVED_PEER_SLOTS

    def __post_init__(self) -> None:
        for name in ("max_pending", "max_pending_per_ip", "max_pending_per_subnet", "max_pending_tor", "max_connections_per_ip", "max_peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0 <= self.reserved_peer_slots < self.max_peers:
            raise ValueError("reserved_peer_slots must be at least 0 and below max_peers")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with a new connection: admit it (after evicting ``evict``) or refuse it (``reason``)."""

    admitted: bool
    evict: tuple[Hashable, ...] = ()
    reason: str = ""


#: the usual decision (nothing to evict), made once: every accepted connection asks
_ADMITTED = Decision(True)
#: a key :meth:`Admission.closed` does not know (released already)
_UNKNOWN = object()


@dataclass(slots=True)
class _Pending:
    ip: str
    subnet: str
    tor: bool
    since: float


class Admission:
    """Counts of inbound connections and pending handshakes, and the decisions from them.

    Each connection is known by a key the caller chooses (any hashable).
    Calls: :meth:`admit` when it arrives, :meth:`handshake_done` when its
    handshake ends (either way), :meth:`closed` when it is gone;
    :meth:`admit_peer` once its node id is known.
    """

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        #: pending handshakes, oldest first (a dict keeps its insertion order)
        self._pending: dict[Hashable, _Pending] = {}
        self._pending_per_ip: Counter[str] = Counter()
        self._pending_per_subnet: Counter[str] = Counter()
        self._pending_tor = 0
        self._connections_per_ip: Counter[str] = Counter()
        self._connection_ip: dict[Hashable, str | None] = {}

    @property
    def pending(self) -> int:
        """Handshakes in progress now (clearnet and Tor)."""
        return len(self._pending)

    def connections_from(self, ip: str) -> int:
        return self._connections_per_ip[ip]

    def admit(self, key: Hashable, ip: str | None, now: float) -> Decision:
        """A connection arrived from ``ip`` (``None``: over Tor). Admit it, maybe evicting others.

        An admitted connection is counted until :meth:`closed`; the keys in
        ``evict`` must be stopped by the caller (their counts are released
        here already, and their later :meth:`handshake_done` is harmless).
        """
        limits = self.limits
        if ip is not None and self._connections_per_ip[ip] >= limits.max_connections_per_ip:
            # Those are mostly established peers: nothing to evict.
            held = self._connections_per_ip[ip]
            if self._pending_per_ip[ip] == 0:
                return Decision(False, reason=f"per-IP limit ({held} connections from that IP already)")
        evict: list[Hashable] = []
        subnet = subnet_of(ip) if ip is not None else ""
        if ip is None:
            if self._pending_tor >= limits.max_pending_tor:
                evict.append(self._oldest(lambda p: p.tor))
        else:
            if self._connections_per_ip[ip] >= limits.max_connections_per_ip or self._pending_per_ip[ip] >= limits.max_pending_per_ip:
                evict.append(self._oldest(lambda p: p.ip == ip))
            elif self._pending_per_subnet[subnet] >= limits.max_pending_per_subnet:
                evict.append(self._oldest(lambda p: p.subnet == subnet))
            elif len(self._pending) - self._pending_tor >= limits.max_pending:
                heaviest = self._pending_per_subnet.most_common(1)[0][0]
                evict.append(self._oldest(lambda p: p.subnet == heaviest))
        for old in evict:
            self._forget_pending(old)
            self._release(old)
        self._pending[key] = _Pending(ip or "", subnet, ip is None, now)
        if ip is None:
            self._pending_tor += 1
        else:
            self._pending_per_ip[ip] += 1
            self._pending_per_subnet[subnet] += 1
            self._connections_per_ip[ip] += 1
        self._connection_ip[key] = ip
        return Decision(True, tuple(evict)) if evict else _ADMITTED

    def handshake_done(self, key: Hashable) -> None:
        """Its handshake ended (completed or failed): the slot is free."""
        self._forget_pending(key)

    def closed(self, key: Hashable) -> None:
        """The connection is gone: it no longer counts for its IP."""
        if key in self._pending:  # usually its handshake_done came first
            self._forget_pending(key)
        self._release(key)

    def admit_peer(self, *, peers: int, outbound: bool, protected: bool) -> str | None:
        """May one more peer join ``peers`` connected ones? None if so, else why not.

        Outbound (we chose it) and protected peers may use the reserved
        slots; unprotected inbound peers may not.
        """
        limits = self.limits
        if peers >= limits.max_peers:
            return f"peer limit ({limits.max_peers} peers connected)"
        if not outbound and not protected and peers >= limits.max_peers - limits.reserved_peer_slots:
            return f"peer limit for unprotected inbound peers ({limits.max_peers - limits.reserved_peer_slots}; {limits.reserved_peer_slots} kept for channel peers and our own connections)"
        return None

    # ------------------------------------------------------------ internal

    def _oldest(self, match) -> Hashable:  # type: ignore[no-untyped-def]
        for key, pending in self._pending.items():
            if match(pending):
                return key
        raise AssertionError("a count said there was a pending handshake to evict")

    def _forget_pending(self, key: Hashable) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.tor:
            self._pending_tor -= 1
            return
        # Written out for the two counters: every inbound handshake ends here.
        per_ip, ip = self._pending_per_ip, pending.ip
        left = per_ip[ip] - 1
        if left:
            per_ip[ip] = left
        else:
            del per_ip[ip]
        per_subnet, subnet = self._pending_per_subnet, pending.subnet
        left = per_subnet[subnet] - 1
        if left:
            per_subnet[subnet] = left
        else:
            del per_subnet[subnet]

    def _release(self, key: Hashable) -> None:
        ip = self._connection_ip.pop(key, _UNKNOWN)
        if ip is _UNKNOWN or ip is None:
            return  # released already, or over Tor (not counted per IP)
        per_ip = self._connections_per_ip
        left = per_ip[ip] - 1  # type: ignore[index]
        if left:
            per_ip[ip] = left  # type: ignore[index]
        else:
            del per_ip[ip]  # type: ignore[arg-type]


@dataclass
class RefusalLog:
    """Refused and evicted connections summed up into one line per ``interval`` (sans-IO).

    :meth:`record` returns a line to log at once for the first refusal of a
    quiet period; later ones are counted, and :meth:`flush` (called on each
    record and by a timer) returns the summary once the interval is over.
    """

    interval: float = REFUSAL_LOG_INTERVAL
    _since: float | None = None
    _count: int = 0
    _ips: set[str] = field(default_factory=set)
    _reasons: Counter[str] = field(default_factory=Counter)
    _quiet: bool = True

    def record(self, ip: str, reason: str, now: float) -> str | None:
        summary = self.flush(now)
        if self._quiet:
            # The first one after a quiet interval is told at once, with its address.
            self._quiet = False
            self._since = now
            return f"refused a connection from {ip}: {reason} (more are summed up every {self.interval:g} s)"
        if self._since is None:
            self._since = now
        self._count += 1
        if len(self._ips) < 100_000:
            self._ips.add(ip)
        self._reasons[reason.split(" (")[0]] += 1
        return summary

    def flush(self, now: float) -> str | None:
        """The summary of the interval, if it is over (None otherwise, or if nothing was refused)."""
        if self._since is None or now - self._since < self.interval:
            return None
        if not self._count:
            self._since = None
            self._quiet = True
            return None
        reasons = ", ".join(f"{reason}: {n:,}" for reason, n in self._reasons.most_common())
        line = f"refused {self._count:,} connection(s) from {len(self._ips):,} IP(s) in the last {now - self._since:.0f} s ({reasons})"
        self._since = now
        self._count = 0
        self._ips.clear()
        self._reasons.clear()
        return line
