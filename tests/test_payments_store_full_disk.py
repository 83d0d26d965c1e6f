"""The payments store on a real full disk (a small tmpfs, :mod:`lnpmsg.testing.disk`): a write
that does not fit raises ``PaymentsStoreWriteFailed``, records nothing, leaves no transaction
open behind it (a write after it would otherwise sit in that transaction, never committed),
and the next write once there is space lands, on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lnpmsg.payments.store import PaymentsStore, PaymentsStoreWriteFailed
from lnpmsg.testing.disk import DiskFiller, small_disk

#: forwards written before the disk fills: enough that filling in their onion keys needs new pages
FORWARDS = 200


def _invoice(label: str) -> dict[str, object]:
    return dict(payment_hash=os.urandom(32), label=label, bolt11="lnbcrt1...", preimage=os.urandom(32), payment_secret=os.urandom(32),
                amount_msat=1000, description="", created_at=1, expires_at=2, min_final_cltv=18)  # fmt: skip


def test_a_write_on_a_full_disk_records_nothing_and_the_next_one_lands_once_there_is_space(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size_kib=1024) as disk:
        store = PaymentsStore(disk / "payments")
        try:
            store.add_invoice(**_invoice("before"))
            filler = DiskFiller(disk)
            filler.fill()
            with pytest.raises(PaymentsStoreWriteFailed, match="disk is full"):
                store.add_invoice(**_invoice("on a full disk"))
            assert [row["label"] for row in store.invoices()] == ["before"]
            filler.free()
            store.add_invoice(**_invoice("after"))
        finally:
            store.close()
        again = PaymentsStore(disk / "payments")
        try:
            assert [row["label"] for row in again.invoices()] == ["before", "after"]
        finally:
            again.close()


def test_a_transaction_that_cannot_commit_on_a_full_disk_is_rolled_back_and_leaves_none_open(tmp_path: Path) -> None:
    # (each write appends its pages to the write-ahead log, which grows until a checkpoint: room for them all)
    with small_disk(tmp_path / "disk", size_kib=16384) as disk:
        store = PaymentsStore(disk / "payments")
        try:
            for i in range(FORWARDS):
                assert store.add_forward("in", i, 2000, 1000, os.urandom(32), 1)
            filler = DiskFiller(disk)
            filler.fill()
            with pytest.raises(PaymentsStoreWriteFailed):
                store.fill_out_onion_keys({("in", i): os.urandom(32) for i in range(FORWARDS)})
            assert not store._db.in_transaction  # nothing left open to swallow the next writes
            assert all(row["out_onion_key"] is None for row in store.forwards())
            filler.free()
            store.forward_status("in", 0, "failed")
        finally:
            store.close()
        again = PaymentsStore(disk / "payments")  # what was written after the failure is on disk
        try:
            assert again.forward("in", 0)["status"] == "failed"  # type: ignore[index]
            assert all(row["out_onion_key"] is None for row in again.forwards())
        finally:
            again.close()
