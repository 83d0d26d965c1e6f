"""Payments a restart left pending (:mod:`lnpmsg.payments.orphans`) and the store rows they come from.

A payment's parts go through the real store (route, onion secrets, the
onion's key) and come back after a "restart" (a new store on the same
file): a preimage completes the payment, a failure onion made by a hop is
read with the stored secrets and attributed to that hop, the last failed
part fails the payment with its reason, and a payment with no part left in
a channel is ``interrupted``. Forwards keep their preimage; an older store
gains the column.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import coincurve

from lnpmsg.payments.onion import create_failure_onion, wrap_failure_onion
from lnpmsg.payments.onion.failures import IncorrectOrUnknownPaymentDetails, TemporaryChannelFailure
from lnpmsg.payments.orphans import INTERRUPTED, Orphans
from lnpmsg.payments.route import Route, RouteHop
from lnpmsg.payments.scorer import MissionControl
from lnpmsg.payments.sender import OutgoingResult, Part, build_part, onion_key
from lnpmsg.payments.store import PaymentsStore

PREIMAGE = os.urandom(32)
HASH = hashlib.sha256(PREIMAGE).digest()
KEYS = [coincurve.PrivateKey() for _ in range(2)]  # B (forwards), D (the payee)
SCID_AB, SCID_BD = (101 << 40) | (1 << 16), (102 << 40) | (2 << 16) | 1


def route(amount: int) -> Route:
    b, d = (k.public_key.format() for k in KEYS)
    return Route((RouteHop(SCID_AB, 0, b, amount + 1000, 640, amount, 600), RouteHop(SCID_BD, 1, d, amount, 600, amount, 600)))


def stored_payment(store: PaymentsStore, *amounts: int) -> tuple[int, list[Part]]:
    payment_id = store.add_payment(HASH, "lnbcrt...", KEYS[1].public_key.format(), sum(amounts), 1)
    parts = [build_part(route(a), HASH, os.urandom(32), sum(amounts)) for a in amounts]
    for part in parts:
        store.add_part(payment_id, onion_key(part.onion), part.route.to_dict(), part.shared_secrets, part.route.final_amount_msat, 1)
    return payment_id, parts


def restarted(tmp_path: Path) -> tuple[PaymentsStore, dict]:  # type: ignore[type-arg]
    store = PaymentsStore(tmp_path)
    (row,) = [p for p in store.payments() if p["status"] == "pending"]
    return store, row


def test_a_route_reads_back_from_its_json() -> None:
    r = route(5000)
    assert Route.from_dict(r.to_dict()) == r


def test_a_preimage_completes_the_payment_a_restart_left_pending(tmp_path: Path) -> None:
    store = PaymentsStore(tmp_path)
    _, parts = stored_payment(store, 600, 400)
    store.close()
    store, row = restarted(tmp_path)
    orphans = Orphans(MissionControl())
    offered = {onion_key(p.onion): ("chan-ab", i) for i, p in enumerate(parts)}
    assert orphans.adopt(row, store.parts(row["id"]), offered) is None and len(orphans) == 1
    assert orphans.owns(("chan-ab", 0)) and orphans.owns(("chan-ab", 1))
    failed = create_failure_onion(parts[0].shared_secrets[0], TemporaryChannelFailure())  # B (hop 0) could not go on to D
    part, ended = orphans.result(("chan-ab", 0), OutgoingResult(reason=failed), 10.0)
    assert part.status == "failed" and ended is None  # one part still in flight
    assert part.failure is not None and part.failure.startswith("hop 0") and "temporary_channel_failure" in part.failure
    part, ended = orphans.result(("chan-ab", 1), OutgoingResult(preimage=PREIMAGE), 11.0)
    assert part.status == "complete" and ended is not None
    assert ended.status == "complete" and ended.preimage == PREIMAGE and ended.payment_id == row["id"]
    assert ended.routes == (parts[1].route,) and ended.fee_msat == 1000
    assert not orphans.owns(("chan-ab", 1)) and len(orphans) == 0


def test_a_failure_after_a_restart_is_read_with_the_stored_secrets_and_attributed(tmp_path: Path) -> None:
    store = PaymentsStore(tmp_path)
    _, (part,) = stored_payment(store, 700)
    store.close()
    store, row = restarted(tmp_path)
    scorer = MissionControl()
    orphans = Orphans(scorer)
    assert orphans.adopt(row, store.parts(row["id"]), {onion_key(part.onion): ("chan-ab", 7)}) is None
    # the payee (hop 1) refuses; B wraps the failure on its way back
    refusal = create_failure_onion(part.shared_secrets[1], IncorrectOrUnknownPaymentDetails(htlc_msat=700, height=600))
    ended_part, ended = orphans.result(("chan-ab", 7), OutgoingResult(reason=wrap_failure_onion(part.shared_secrets[0], refusal)), 5.0)
    assert ended_part.status == "failed" and "incorrect_or_unknown_payment_details" in (ended_part.failure or "")
    assert ended is not None and ended.status == "failed" and ended.preimage is None
    assert ended.error is not None and "the payee" in ended.error and "incorrect_or_unknown_payment_details" in ended.error
    (attempt,) = ended.attempts
    assert attempt["erring_index"] == 1 and attempt["erring_node"] == KEYS[1].public_key.format().hex() and attempt["code"] == 0x4000 | 15
    store.part_status(ended_part.onion_key, ended_part.status, ended_part.failure)
    assert store.parts(row["id"])[0]["status"] == "failed"


def test_a_payment_with_nothing_in_flight_is_interrupted_or_complete_with_its_stored_preimage(tmp_path: Path) -> None:
    store = PaymentsStore(tmp_path)
    payment_id, (part,) = stored_payment(store, 500)
    orphans = Orphans(MissionControl())
    (row,) = store.payments()
    ended = orphans.adopt(row, store.parts(payment_id), {})  # no HTLC of it in any channel
    assert ended is not None and ended.status == "interrupted" and ended.error == INTERRUPTED and not orphans.owns(("chan-ab", 0))
    store.update_payment(payment_id, preimage=PREIMAGE)  # a part brought it before the stop
    (row,) = store.payments()
    ended = orphans.adopt(row, store.parts(payment_id), {onion_key(part.onion): ("chan-ab", 0)})
    assert ended is not None and ended.status == "complete" and ended.preimage == PREIMAGE


def test_a_local_drop_of_the_last_part_fails_the_payment_naming_our_channel(tmp_path: Path) -> None:
    store = PaymentsStore(tmp_path)
    payment_id, (part,) = stored_payment(store, 500)
    (row,) = store.payments()
    orphans = Orphans(MissionControl())
    assert orphans.adopt(row, store.parts(payment_id), {onion_key(part.onion): ("chan-ab", 3)}) is None
    _, ended = orphans.result(("chan-ab", 3), OutgoingResult(local_error="dropped before it was committed"), 1.0)
    assert ended is not None and ended.status == "failed" and "101x1x0" in (ended.error or "")


def test_forwards_keep_their_preimage_and_an_older_store_gains_the_column(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "payments.sqlite3")
    old.executescript("""CREATE TABLE forwards (
        in_channel TEXT NOT NULL, in_htlc INTEGER NOT NULL, out_channel TEXT, out_htlc INTEGER,
        in_msat INTEGER NOT NULL, out_msat INTEGER NOT NULL, shared_secret BLOB NOT NULL,
        status TEXT NOT NULL, created_at INTEGER NOT NULL, payment_hash BLOB NOT NULL DEFAULT x'',
        in_cltv INTEGER NOT NULL DEFAULT 0, out_cltv INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (in_channel, in_htlc));
        INSERT INTO forwards (in_channel, in_htlc, in_msat, out_msat, shared_secret, status, created_at)
        VALUES ('in', 1, 2000, 1000, x'00', 'offered', 1);""")  # fmt: skip
    old.commit()
    old.close()
    store = PaymentsStore(tmp_path)
    assert store.forward("in", 1)["preimage"] is None  # type: ignore[index]
    assert store.add_forward("in", 2, 2000, 1000, b"s", 2) and not store.add_forward("in", 2, 2000, 1000, b"s", 2)
    store.forward_out("in", 2, "out", 5)
    assert [r["in_htlc"] for r in store.forwards("offered")] == [1, 2]
    store.forward_settled("in", 2, PREIMAGE)
    row = store.forward("in", 2)
    assert row is not None and row["status"] == "settled" and row["preimage"] == PREIMAGE
    store.forward_reset("in", 1)
    row = store.forward("in", 1)
    assert row is not None and row["status"] == "offering" and row["out_channel"] is None and row["out_htlc"] is None
