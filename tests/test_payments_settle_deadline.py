"""How long the HTLCs paying our invoice wait for it to be marked paid on a full disk (virtual time).

:func:`lnpmsg.payments.recording.record` tries a write again until it lands, or, given ``give_up``,
until that names a reason: then nothing of it is on disk and :class:`RecordAbandoned` says why.
:meth:`Receiving._settle_deadline` is that reason for an invoice's HTLCs: the MPP timeout from the
first part, or the chain within ``SETTLE_MARGIN_BLOCKS`` of the earliest expiry; never for an
invoice already paid on disk (its preimage may have left). The app around it is a stand-in
(``_FakeApp``) holding only what the method reads: the end-to-end cases, on a real full disk, are
``test_payments_mpp_disk_full.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from lnpmsg.payments.htlcs import InvoiceTerms, MppSets
from lnpmsg.payments.receiving import SETTLE_MARGIN_BLOCKS, Receiving
from lnpmsg.payments.recording import GIVE_UP_POLL, RecordAbandoned, record
from lnpmsg.payments.store import PaymentsStoreWriteFailed

HASH = b"\x01" * 32


class _Disk:
    """A write that fails ``failures`` times (a full disk), then lands."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tries = 0

    def write(self) -> str:
        self.tries += 1
        assert self.tries < 50, "tried on and on: never given up"
        if self.tries <= self.failures:
            raise PaymentsStoreWriteFailed("database or disk is full")
        return "written"


@pytest.mark.trio
async def test_a_write_with_a_deadline_is_given_up_once_it_passes_and_not_tried_after(autojump_clock: trio.testing.MockClock) -> None:
    disk = _Disk(failures=10**6)
    asked: list[float] = []

    async def give_up() -> str | None:
        asked.append(trio.current_time())
        return "the deadline passed" if trio.current_time() >= 10.0 else None

    start = trio.current_time()
    with pytest.raises(RecordAbandoned) as abandoned:
        await record(disk.write, "the invoice paid", give_up)
    assert abandoned.value.why == "the deadline passed" and "the invoice paid was not written" in str(abandoned.value)
    # given up within one look of the deadline, and the write not tried after the last look
    assert 10.0 <= trio.current_time() - start <= 10.0 + GIVE_UP_POLL
    assert asked and asked[-1] - start >= 10.0
    assert 2 <= disk.tries <= 6  # back-off: 0.5, 1, 2, 4, 8 s between tries
    tries = disk.tries
    await trio.sleep(60)
    assert disk.tries == tries


@pytest.mark.trio
async def test_a_write_that_lands_before_its_deadline_is_kept_and_one_that_lands_at_once_never_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    disk = _Disk(failures=2)
    looks = []

    async def later() -> str | None:
        looks.append(1)
        return "too late" if trio.current_time() >= 100.0 else None

    assert await record(disk.write, "the invoice paid", later) == "written" and disk.tries == 3 and looks

    async def always() -> str | None:
        raise AssertionError("asked although the write landed")

    assert await record(_Disk(failures=0).write, "the invoice paid", always) == "written"


@dataclass
class _FakeApp:
    """Stand-in for the payments app: only what ``Receiving._settle_deadline`` reads."""

    now: float
    height: int
    paid: bool
    expiries: dict[tuple[str, int], int]
    mpp: MppSets = field(default_factory=lambda: MppSets(timeout=60.0))

    def __post_init__(self) -> None:
        self._terms = {HASH: InvoiceTerms(HASH, b"\x02" * 32, b"\x03" * 32, 1000, 24, 10**10, paid=self.paid)}
        incoming = [SimpleNamespace(channel_key=k, add=SimpleNamespace(id=i, cltv_expiry=e)) for (k, i), e in self.expiries.items()]
        self.htlcs = SimpleNamespace(pending_incoming=lambda: incoming)

    def _now(self) -> float:
        return self.now

    async def _height(self) -> int:
        return self.height


async def _deadline(app: _FakeApp, started: float = 1000.0) -> str | None:
    fake: Any = app
    return await Receiving._settle_deadline(fake, list(app.expiries), HASH, started)


@pytest.mark.trio
async def test_an_unpaid_invoices_htlcs_wait_until_the_mpp_timeout_or_the_cltv_margin_and_a_paid_ones_always() -> None:
    parts = {("chan1", 0): 150, ("chan2", 3): 140}
    # within both deadlines: they wait
    assert await _deadline(_FakeApp(now=1059.0, height=140 - SETTLE_MARGIN_BLOCKS - 1, paid=False, expiries=parts)) is None
    # the MPP timeout, counted from the first part
    why = await _deadline(_FakeApp(now=1060.0, height=100, paid=False, expiries=parts))
    assert why is not None and "MPP timeout" in why
    # the chain within SETTLE_MARGIN_BLOCKS of the EARLIEST part's expiry
    why = await _deadline(_FakeApp(now=1001.0, height=140 - SETTLE_MARGIN_BLOCKS, paid=False, expiries=parts))
    assert why is not None and "expires at height 140" in why
    # an invoice paid on disk is never given up on: its preimage may have left
    assert await _deadline(_FakeApp(now=10**6, height=139, paid=True, expiries=parts)) is None
