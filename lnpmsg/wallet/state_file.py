"""The wallet's state file, ``wallet.json``: read at open, replaced atomically at each change.

A full disk meets two kinds of change, and each fails its own way:

- what the wallet hands out (an address, coins reserved for a transaction,
  coins released) is written before it is handed out: a write that fails
  undoes the change in memory and the operation fails with ``WalletError``
  (code ``io``), so nothing is handed out that the file does not hold
  (:meth:`StateFile.write`);
- what the chain tells the wallet (a coin at a new index, a spend, a reorg)
  is in memory at once and the chain tells it again at the next open (coins
  are rebuilt from the chain), so a write that fails must not stop the
  wallet from following the chain: it is logged once and tried again at the
  next sync or change (:meth:`StateFile.write_or_retry_later`).

An open is neither: the wallet writes its state once before it serves
anything, and a write that fails fails the open (``WalletError``, ``io``,
naming the file and what to do), so a node does not start on a disk that
cannot hold its wallet.

:func:`~lnpmsg.io.atomic_file.write_atomic` leaves the old file whole, and no
temp file, when a write fails.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lnpmsg.io.atomic_file import write_atomic
from lnpmsg.node.full_disk import cannot
from lnpmsg.wallet.errors import WalletError

__all__ = ["DAMAGED_STATE_ADVICE", "WALLET_FILE", "StateFile"]

log = logging.getLogger("lnpmsg.wallet.wallet")

WALLET_FILE = "wallet.json"
#: what to do about a damaged wallet.json: the seed holds the keys, the chain the coins
DAMAGED_STATE_ADVICE = (
    "The keys are in the seed file, not there: move wallet.json aside and start again; "
    "the wallet rescans the chain from its start and finds every coin (unconfirmed "
    "transactions it held are forgotten: listfunds shows what is left)"
)


class StateFile:
    """``wallet.json`` in ``wallet_dir``; ``behind``: the last write failed (the file lacks a change)."""

    def __init__(self, wallet_dir: Path) -> None:
        self.path = wallet_dir / WALLET_FILE
        self.behind = False

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> dict[str, Any]:
        """The stored state; ``WalletError`` (``corrupt``) if it is unreadable or incomplete."""
        try:
            state = json.loads(self.path.read_text())
            if not isinstance(state, dict) or not {"network", "birth_height", "next_index"} <= state.keys():
                raise ValueError("missing keys")
        except (ValueError, OSError) as exc:
            raise self.damaged(exc) from exc
        return state

    def damaged(self, why: object) -> WalletError:
        """The error for a state the file holds that cannot be used (``corrupt``), with what to do about it."""
        return WalletError(f"wallet state {self.path} is damaged: {why}. {DAMAGED_STATE_ADVICE}", code="corrupt")

    def write(self, state: dict[str, Any]) -> None:
        """Replace the file with ``state``, fsynced; ``WalletError`` (``io``) if the disk refuses it."""
        try:
            write_atomic(self.path, json.dumps(state).encode())
        except OSError as exc:
            raise WalletError(cannot("write", self.path, exc), code="io") from exc
        if self.behind:
            self.behind = False
            log.info("wallet: %s is written again", self.path)

    def write_or_retry_later(self, state: dict[str, Any]) -> None:
        """Write a change the chain made; a failure is logged (once) and the next sync tries again."""
        try:
            self.write(state)
        except WalletError as exc:
            if not self.behind:
                log.error(
                    "wallet: %s; the wallet goes on following the chain and writes its state again at the next "
                    "block or change (what the file lacks, the chain gives again at the next start)",
                    exc.reason,
                )
            self.behind = True
