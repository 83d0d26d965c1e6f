"""The channel app keeps the peers' failures of our HTLCs on disk (:mod:`lnpmsg.channels.failures`):
whole files only, read back as written, damaged ones skipped with a warning, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from lnpmsg.channels.failures import FailureStore, OfferedFailure
from lnpmsg.channels.messages import UpdateAddHtlc

KEY = "02" * 33 + "-00112233445566ff"


def failure(htlc_id: int, *, code: int | None = None) -> OfferedFailure:
    add = UpdateAddHtlc(channel_id=bytes(32), id=htlc_id, amount_msat=1000 + htlc_id, payment_hash=bytes([htlc_id % 256]) * 32,
                        cltv_expiry=500, onion_routing_packet=bytes([7]) * 1366)  # fmt: skip
    return OfferedFailure(KEY, add, None if code is not None else b"\x01" * 260, code)


def test_failures_survive_a_reopen_until_removed(tmp_path: Path) -> None:
    store = FailureStore(tmp_path)
    store.add(failure(1))
    store.add(failure(2, code=0x8000 | 0x4000 | 5))
    store.add(failure(3))
    store.remove((KEY, 3))
    again = FailureStore(tmp_path)
    assert list(again.kept.values()) == [failure(1), failure(2, code=0x8000 | 0x4000 | 5)]
    again.remove((KEY, 1))
    again.remove((KEY, 99))  # not kept: nothing to do
    assert list(FailureStore(tmp_path).kept) == [(KEY, 2)]


def test_a_cut_write_and_a_damaged_file_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FailureStore(tmp_path)
    store.add(failure(1))
    store.add(failure(2))
    (tmp_path / f"{KEY}-3.tmp").write_bytes(b"LNF1 cut short")  # a crash during a write: the channel state still has it
    path = tmp_path / f"{KEY}-2.fail"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    again = FailureStore(tmp_path)
    assert list(again.kept) == [(KEY, 1)]
    assert not (tmp_path / f"{KEY}-3.tmp").exists()
    assert "damaged" in caplog.text


def test_the_oldest_go_beyond_the_bound(tmp_path: Path) -> None:
    store = FailureStore(tmp_path, max_kept=3)
    for i in range(5):
        store.add(failure(i))
    assert list(store.kept) == [(KEY, 2), (KEY, 3), (KEY, 4)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{KEY}-{i}.fail" for i in (2, 3, 4))
