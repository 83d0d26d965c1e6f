"""Synthetic, validly signed gossip networks, for tests and benchmarks.

Every key is derived from a seed (``sha256(seed || label || index)``), and
signing is deterministic, so the same parameters give the same bytes.
Channel ``i`` gets the id ``(first_block + i // 100) x (i % 100) x 0``; the
first ``nodes`` channels form a ring (so every node has a channel), the
others join random pairs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from lnpmsg.gossip.sign import (
    public_key,
    sign_channel_announcement,
    sign_channel_update,
    sign_node_announcement,
)
from lnpmsg.wire import IPv4Addr, ShortChannelId

__all__ = ["SyntheticNetwork"]

_PER_BLOCK = 100


def _secret(seed: bytes, label: bytes, index: int) -> bytes:
    return hashlib.sha256(seed + label + index.to_bytes(8, "big")).digest()


@dataclass(frozen=True)
class SyntheticNetwork:
    """A network of ``nodes`` nodes and ``channels`` channels, each channel with
    ``updates_per_channel`` channel_updates (alternating directions, rising timestamps)."""

    nodes: int
    channels: int
    chain_hash: bytes
    updates_per_channel: int = 2
    seed: bytes = b"lnpmsg synthetic network"
    base_timestamp: int = 1_700_000_000
    first_block: int = 700_000
    node_announcements: bool = True

    def __post_init__(self) -> None:
        if self.nodes < 2 or self.channels < 1:
            raise ValueError("a network needs at least 2 nodes and 1 channel")

    def node_secret(self, i: int) -> bytes:
        return _secret(self.seed, b"node", i)

    @cached_property
    def node_ids(self) -> list[bytes]:
        return [public_key(self.node_secret(i)) for i in range(self.nodes)]

    def ends(self, i: int) -> tuple[int, int]:
        """The two node indexes of channel ``i``."""
        if i < self.nodes:
            return i, (i + 1) % self.nodes
        rng = random.Random(self.seed + i.to_bytes(8, "big"))
        a = rng.randrange(self.nodes)
        b = rng.randrange(self.nodes - 1)
        return a, b if b < a else b + 1

    def short_channel_id(self, i: int) -> ShortChannelId:
        return ShortChannelId(self.first_block + i // _PER_BLOCK, i % _PER_BLOCK, 0)

    def channel_messages(self, i: int) -> list[bytes]:
        """Channel ``i``'s announcement and updates (raw, type included)."""
        a, b = self.ends(i)
        ids = self.node_ids
        scid = self.short_channel_id(i)
        announcement = sign_channel_announcement(
            self.node_secret(a),
            self.node_secret(b),
            _secret(self.seed, b"funding", 2 * i),
            _secret(self.seed, b"funding", 2 * i + 1),
            scid,
            self.chain_hash,
            node_ids=(ids[a], ids[b]),
        )
        out = [announcement.encode()]
        secrets = {ids[a]: self.node_secret(a), ids[b]: self.node_secret(b)}
        for k in range(self.updates_per_channel):
            direction = k % 2
            signer = secrets[announcement.node_id_1 if direction == 0 else announcement.node_id_2]
            update = sign_channel_update(
                signer,
                scid,
                self.chain_hash,
                self.base_timestamp + i % 86_400 + k,
                direction=direction,
                fee_base_msat=1000 + i % 7,
                fee_proportional_millionths=1 + i % 1000,
            )
            out.append(update.encode())
        return out

    def node_announcement(self, n: int) -> bytes:
        return sign_node_announcement(
            self.node_secret(n),
            self.base_timestamp + n % 86_400,
            alias=f"synthetic-{n}",
            rgb_color=bytes((n & 0xFF, (n >> 8) & 0xFF, 0x42)),
            addresses=[IPv4Addr(f"10.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}", 9735)],
            node_id=self.node_ids[n],
        ).encode()

    def messages(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Channels ``start..stop`` in order, each node's announcement right after its first channel."""
        stop = self.channels if stop is None else min(stop, self.channels)
        for i in range(start, stop):
            yield from self.channel_messages(i)
            if self.node_announcements and i < self.nodes:
                # In the ring, node i's first channel is i (node 0's too; node i+1 also joins
                # channel i, but is announced after its own, which is enough).
                yield self.node_announcement(i)

    @property
    def message_count(self) -> int:
        announced = min(self.nodes, self.channels) if self.node_announcements else 0
        return self.channels * (1 + self.updates_per_channel) + announced
