"""Blocks taken out of the embedded chain on purpose (``invalidateblock``).

The kernel has no call to mark a block invalid, so the chain does it the long
way: it remembers the blocks in ``invalidated.json`` (durably, before
anything else changes) and rebuilds the kernel's state from its block log
without them and their descendants. The file makes the choice survive a
restart: replaying the log on open skips the same blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.chain.blocklog import BlockLog
from lnpmsg.chain.errors import ChainError
from lnpmsg.io.atomic_file import write_atomic

__all__ = ["INVALIDATED_FILE", "Invalidated"]

INVALIDATED_FILE = "invalidated.json"


class Invalidated:
    """The set of invalidated block hashes of one chain dir, kept in a file."""

    def __init__(self, datadir: Path) -> None:
        self.path = datadir / INVALIDATED_FILE
        self.hashes: set[bytes] = set()
        if self.path.exists():
            try:
                self.hashes = {hash_from_hex(h) for h in json.loads(self.path.read_text())}
            except (ValueError, TypeError, OSError) as exc:
                raise ChainError(
                    f"{self.path} is unreadable ({exc}); it lists blocks taken out with "
                    "invalidateblock: delete it to let them back in",
                    code="corrupt",
                ) from exc

    def add(self, block_hash: bytes) -> None:
        """Remember one more block, durably."""
        self.hashes.add(block_hash)
        write_atomic(self.path, json.dumps(sorted(hash_to_hex(h) for h in self.hashes)).encode())

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.hashes

    def excluded(self, log: BlockLog) -> set[bytes]:
        """The invalidated blocks in ``log`` and every block built on one of them."""
        out = set(self.hashes)
        if not out:
            return out
        for block_hash in log.order:  # parents come before their children
            if log.read(block_hash)[4:36] in out:
                out.add(block_hash)
        return out

    def replayable(self, log: BlockLog) -> Iterable[bytes]:
        """The log's blocks, parents first, without the excluded ones."""
        excluded = self.excluded(log)
        return [h for h in log.order if h not in excluded]
