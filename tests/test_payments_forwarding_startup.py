"""The payments app's forwarding start-up (:meth:`~lnpmsg.payments.forwarding.Forwarding._adopt_forwards`) over a real store.

After a restart the app is given every HTLC we offered that is still in a
channel and every incoming HTLC still committed. The HTLCs no forward
claims (our own payments' among them) are looked up in one store call
however many there are, and those of forwards already failed or settled
only have their results released. A forward an older version recorded
without its outgoing onion's key (an older database) and left "offering"
is found all the same: the key is derived from its incoming onion and its
shared secret, and recorded. The store's side: outgoing HTLCs looked up
in bulk, keys filled in only where none is kept.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import coincurve
import pytest
import trio

from lnpmsg.channels.htlc_hook import IncomingHtlc
from lnpmsg.channels.messages import UpdateAddHtlc
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.payments.onion import ONION_PACKET_SIZE, construct_onion, peel_onion
from lnpmsg.payments.sender import onion_key
from lnpmsg.payments.store import _PAIRS_PER_QUERY, PaymentsStore

PREIMAGE = os.urandom(32)
HASH = hashlib.sha256(PREIMAGE).digest()
#: a hop payload the onion carries (peeling reads only its framing)
PAYLOAD = bytes([2, 1])


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
            await app._adopt_forwards([htlc("chan-bc", i, some_onion()) for i in range(3 + own)], [])
            made[own] = list(hops)
            assert app._finished == {("chan-bc", 0), ("chan-bc", 1)}
            assert set(app._forwards) == {("chan-bc", 2)} and app._forwards[("chan-bc", 2)][:2] == ("chan-ab", 2)
        finally:
            store.close()
    assert made[1] == made[6], made


def older_store(directory: Path, *rows: tuple[str, int, bytes]) -> None:
    """A payments store as an older version left it (forwards without the preimage, failure and
    outgoing onion's key columns), holding forwards ``rows`` (in channel, in htlc, shared secret) still offering."""
    directory.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(directory / "payments.sqlite3")
    try:
        old.executescript("""CREATE TABLE forwards (
            in_channel TEXT NOT NULL, in_htlc INTEGER NOT NULL, out_channel TEXT, out_htlc INTEGER,
            in_msat INTEGER NOT NULL, out_msat INTEGER NOT NULL, shared_secret BLOB NOT NULL,
            status TEXT NOT NULL, created_at INTEGER NOT NULL, payment_hash BLOB NOT NULL DEFAULT x'',
            in_cltv INTEGER NOT NULL DEFAULT 0, out_cltv INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (in_channel, in_htlc));""")  # fmt: skip
        old.executemany("INSERT INTO forwards (in_channel, in_htlc, in_msat, out_msat, shared_secret, status, created_at, payment_hash) "
                        "VALUES (?, ?, 2000, 1000, ?, 'offering', 1, ?)", [(*row, HASH) for row in rows])  # fmt: skip
        old.commit()
    finally:
        old.close()


@pytest.mark.trio
async def test_a_forward_an_older_store_kept_without_its_onion_key_is_found_by_the_derived_key(tmp_path: Path) -> None:
    """B forwarded an HTLC to C and stopped before it recorded the outgoing HTLC's id, under a version
    that kept no outgoing onion's key. Restarted with the incoming HTLC still committed and the
    outgoing one in the channel, B finds the forward by the key its incoming onion and shared secret
    give, records it offered (with the key) and waits for its result, rather than leaving it to be
    offered a second time. A forward whose incoming HTLC is gone keeps no key: nothing gives one."""
    b, c = coincurve.PrivateKey(), coincurve.PrivateKey()
    onion = construct_onion(os.urandom(32), [b.public_key.format(), c.public_key.format()], [PAYLOAD, PAYLOAD], HASH).packet
    peeled = peel_onion(b, onion, HASH)
    assert peeled.next_packet is not None
    older_store(tmp_path, ("chan-ab", 7, peeled.shared_secret), ("chan-ab", 8, os.urandom(32)))
    store = PaymentsStore(tmp_path)
    try:
        assert store.forward("chan-ab", 7)["out_onion_key"] is None  # type: ignore[index]
        app = app_on(store, tmp_path)
        offered = [htlc("chan-bc", 4, some_onion()), htlc("chan-bc", 5, peeled.next_packet)]
        await app._adopt_forwards(offered, [htlc("chan-ab", 7, onion)])
        row = store.forward("chan-ab", 7)
        assert row is not None and (row["status"], row["out_channel"], row["out_htlc"]) == ("offered", "chan-bc", 5), row
        assert row["out_onion_key"] == onion_key(peeled.next_packet)
        assert app._forwards == {("chan-bc", 5): ("chan-ab", 7, peeled.shared_secret, peeled.next_packet)}
        gone = store.forward("chan-ab", 8)
        assert gone is not None and (gone["status"], gone["out_onion_key"]) == ("offering", None), gone
    finally:
        store.close()


def test_the_store_looks_up_outgoing_htlcs_in_bulk_and_fills_only_missing_keys(tmp_path: Path) -> None:
    """More outgoing HTLCs than one statement holds come back by HTLC (unknown ones absent); a key is
    filled in where none was kept, and one kept stays."""
    store = PaymentsStore(tmp_path)
    try:
        count = _PAIRS_PER_QUERY + 50
        for i in range(count):
            store.add_forward("in", i, 2000, 1000, bytes(32), 1, out_onion_key=b"kept" if i == 1 else None)
            store.forward_out("in", i, f"out-{i % 3}", i)
        asked = [(f"out-{i % 3}", i) for i in range(count)] + [("out-0", 1), ("elsewhere", 4)]
        rows = store.forwards_by_out(asked)
        assert set(rows) == {(f"out-{i % 3}", i) for i in range(count)}
        assert all(row["in_htlc"] == out[1] for out, row in rows.items())
        assert store.forwards_by_out([]) == {}
        store.fill_out_onion_keys({("in", 0): b"derived", ("in", 1): b"derived", ("absent", 9): b"derived"})
        assert [store.forward("in", i)["out_onion_key"] for i in range(3)] == [b"derived", b"kept", None]  # type: ignore[index]
    finally:
        store.close()
