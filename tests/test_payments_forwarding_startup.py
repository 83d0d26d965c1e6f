"""The payments app's forwarding start-up (:meth:`~lnpmsg.payments.forwarding.Forwarding._adopt_forwards`) over a real store.

After a restart the app is given every HTLC we offered that is still in a
channel. The HTLCs no forward claims (our own payments' among them) are
looked up in one store call however many there are, and those of forwards
already failed or settled only have their results released. The store's
side: outgoing HTLCs looked up in bulk.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import coincurve
import pytest
import trio

from lnpmsg.channels.htlc_hook import IncomingHtlc
from lnpmsg.channels.messages import UpdateAddHtlc
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.payments.onion import ONION_PACKET_SIZE
from lnpmsg.payments.store import _PAIRS_PER_QUERY, PaymentsStore

PREIMAGE = os.urandom(32)
HASH = hashlib.sha256(PREIMAGE).digest()


def htlc(channel: str, htlc_id: int, onion: bytes) -> IncomingHtlc:
    """An HTLC on ``channel`` as the channel app lists it (offered or incoming)."""
    add = UpdateAddHtlc(channel_id=bytes(32), id=htlc_id, amount_msat=1000, payment_hash=HASH, cltv_expiry=600,
                        onion_routing_packet=onion)  # fmt: skip
    return IncomingHtlc(channel, bytes(33), 0, add)


def some_onion() -> bytes:
    """An onion of one of our own payments' HTLCs (only its key is read at start-up)."""
    return bytes([0]) + coincurve.PrivateKey().public_key.format() + os.urandom(ONION_PACKET_SIZE - 34)


def app_on(store: PaymentsStore, directory: Path) -> PaymentsApp:
    app = PaymentsApp(directory)
    app.store = store
    return app


def count_thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the calls the app runs in a worker thread from now on."""
    hops: list[str] = []
    original = trio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await original(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    return hops


@pytest.mark.trio
async def test_the_offered_htlcs_no_forward_claims_are_looked_up_in_one_store_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forwards decided before the restart (one settled, one failed) and one still offered, and 1 or
    6 HTLCs of our own payments: the start-up makes as many worker-thread hops either way, releases
    only the decided forwards' HTLCs and waits for the offered one."""
    hops = count_thread_hops(monkeypatch)
    made: dict[int, list[str]] = {}
    for own in (1, 6):
        directory = tmp_path / f"own-{own}"
        store = PaymentsStore(directory)
        try:
            for i in range(3):
                store.add_forward("chan-ab", i, 2000, 1000, bytes(32), 1, HASH)
                store.forward_out("chan-ab", i, "chan-bc", i)
            store.forward_settled("chan-ab", 0, PREIMAGE)
            store.forward_failed("chan-ab", 1, b"a failure onion")
            app = app_on(store, directory)
            hops.clear()
            await app._adopt_forwards([htlc("chan-bc", i, some_onion()) for i in range(3 + own)])
            made[own] = list(hops)
            assert app._finished == {("chan-bc", 0), ("chan-bc", 1)}
            assert set(app._forwards) == {("chan-bc", 2)} and app._forwards[("chan-bc", 2)][:2] == ("chan-ab", 2)
        finally:
            store.close()
    assert made[1] == made[6], made


def test_the_store_looks_up_outgoing_htlcs_in_bulk(tmp_path: Path) -> None:
    """More outgoing HTLCs than one statement holds come back by HTLC (unknown ones absent)."""
    store = PaymentsStore(tmp_path)
    try:
        count = _PAIRS_PER_QUERY + 50
        for i in range(count):
            store.add_forward("in", i, 2000, 1000, bytes(32), 1)
            store.forward_out("in", i, f"out-{i % 3}", i)
        asked = [(f"out-{i % 3}", i) for i in range(count)] + [("out-0", 1), ("elsewhere", 4)]
        rows = store.forwards_by_out(asked)
        assert set(rows) == {(f"out-{i % 3}", i) for i in range(count)}
        assert all(row["in_htlc"] == out[1] for out, row in rows.items())
        assert store.forwards_by_out([]) == {}
    finally:
        store.close()
