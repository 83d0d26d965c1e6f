"""The embedded chain's mempool file on a real full disk (a small tmpfs, :mod:`lnpmsg.testing.disk`):
a broadcast whose record does not fit is still accepted (the mempool in memory is the truth),
leaves no torn record behind, says so once, and the file is whole again at the next change
once the disk has room: a restart finds every transaction."""

from __future__ import annotations

import logging
from pathlib import Path

from lnpmsg.chain.datadir import MempoolFile
from lnpmsg.chain.regtest import FAUCET_SCRIPT, MEMPOOL_FILE, RegtestChain
from lnpmsg.testing.disk import DiskFiller, page_room, small_disk

#: the kernel wants 50 MB free to open a chain (Bitcoin Core's minimum), its files take ~17 MB after 120 blocks
DISK_KIB = 96 * 1024


def test_broadcasts_on_a_full_disk_are_kept_and_the_mempool_file_is_never_torn(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="lnpmsg.chain")
    with small_disk(tmp_path / "disk", size_kib=DISK_KIB) as disk:
        path = disk / "chain"
        with RegtestChain(path) as chain:
            chain.mine(120)
            chain.faucet(FAUCET_SCRIPT, 10_000)
            filler = DiskFiller(disk)
            filler.fill()
            # Records fit in the file's last page until one does not: that broadcast's append fails
            # (each record takes at least a byte of what the page has left, whatever its size).
            sent = []
            for _ in range(page_room(path / MEMPOOL_FILE) + 1):
                sent.append(chain.faucet(FAUCET_SCRIPT, 10_000).txid)  # never raises: accepted in memory
                if any(r.levelno >= logging.ERROR for r in caplog.records):
                    break
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and "No space left on device" in errors[0].getMessage() and MEMPOOL_FILE in errors[0].getMessage()
            assert sent[-1] in chain.mempool_txids()
            # The refused record was cut back off: the file reads whole (one fewer transaction).
            on_disk = MempoolFile(path / MEMPOOL_FILE).load()
            assert [tx.txid for tx in on_disk] == chain.mempool_txids()[:-1]
            more = chain.faucet(FAUCET_SCRIPT, 10_000).txid  # still full: kept, no second error
            assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
            filler.free()
            last = chain.faucet(FAUCET_SCRIPT, 10_000).txid  # room again: the file is written whole
            assert any("is written again" in r.getMessage() for r in caplog.records)
            waiting = chain.mempool_txids()
            assert {sent[-1], more, last} <= set(waiting)
        with RegtestChain(path) as chain:
            assert chain.mempool_txids() == waiting
            assert not list(path.glob(f"{MEMPOOL_FILE}.corrupt-*"))
