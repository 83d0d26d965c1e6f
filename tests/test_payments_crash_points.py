"""A node crashes at every write of its payments store during a payment, restarts and finishes it.

A line A-B-C (nodes in one process, the in-memory transport, one embedded
regtest chain, every store on disk): A pays C through B: C's invoice, one C
refuses (signed for a hash C does not know), a hold invoice the test settles
or cancels once C lists it accepted (after C's restart if C crashed first;
again after C crashed in the call), or a keysend C accepts. One of the three
(the victim) crashes right after its N-th payments-store write reached the
disk and before the code that made it acts on it: the payer's payment and
each part before its HTLC leaves, the forwarder's forward before its outgoing
HTLC is offered and its preimage before it settles upstream, the payee's
invoice marked paid (a hold invoice's accepted, settled or cancelled; a
keysend's row) before it settles or fails. The crash takes the whole node
down (nothing more is written or sent); the victim restarts from the same
directories and dials its peers again.

Afterwards, whatever the point: the payment ended as its kind says (a paid
or held-and-settled invoice and a keysend complete, C's invoice or keysend
paid with A's preimage; a refused or cancelled one failed with C's
``incorrect_or_unknown_payment_details``), or, when the payer crashed before
any HTLC of it left, interrupted with nothing paid; the money moved exactly
once or not at all (A paid amount and fee, B kept the fee, C got the amount),
no HTLC is left on any channel, nothing went on chain, and no result of B's
outgoing HTLCs is left waiting for a forward.

A forward recorded before a crash and refused after the restart keeps the
failure it was refused with across one more crash.

A payment C refuses (an invoice C signed for a payment hash it does not
know): the payer or the forwarder crashes right before or right after its
channel app writes C's failure (the failure store), or at each of its
channel persistence points during the payment; the payer still reads the
payee's own failure (or, when the crash came before the HTLC left the
victim, that hop's), nothing is lost and no failure stays kept.

The channel store's own crash points are covered by
``test_channels_crash_points.py``.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from collections.abc import Awaitable, Callable, Collection
from typing import Any, NoReturn

import pytest
import trio
from test_payments_app import POLICY, TIMEOUT, Net, channels, net, payment_ended, payments, quiet, wait_until

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.channels.failures import FailureStore, OfferedFailure
from lnpmsg.channels.htlc_hook import IncomingHtlc
from lnpmsg.channels.manager import CRASH_STAGES
from lnpmsg.node.node import Node
from lnpmsg.payments import bolt11
from lnpmsg.payments.htlcs import FeePolicy
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.payments.store import PaymentsStore
from lnpmsg.wallet.calls import ChainAppError

AMOUNT_MSAT = 5_000_000
#: B's fee for AMOUNT_MSAT under the test policy (1000 msat + 100 ppm)
FEE_MSAT = 1_500
#: payments-store writes each node makes without a crash (the counting test checks), when C settles,
#: when C refuses the payment (an invoice signed by C for a payment hash C does not know), when C holds
#: it (a hold invoice) until the test settles or cancels it, and for a keysend C accepts
POINTS = {"settles": {"a": 4, "b": 3, "c": 1}, "refused": {"a": 3, "b": 3, "c": 0}, "hold_settled": {"a": 4, "b": 3, "c": 2},
          "hold_cancelled": {"a": 3, "b": 3, "c": 2}, "keysend": {"a": 4, "b": 3, "c": 1}}  # fmt: skip
NEIGHBOURS = {"a": ["b"], "b": ["a", "c"], "c": ["b"]}


class SimulatedCrash(BaseException):
    """The victim's process dies here (a BaseException: no handler of the node catches it)."""


def _crash_node(scope: trio.CancelScope, token: trio.lowlevel.TrioToken) -> NoReturn:
    """The node that runs in ``scope`` dies in the middle of a store write: its scope is cancelled
    (from the worker thread the write ran in, or the event loop's own) and the write raises."""
    try:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
    except RuntimeError:  # the write ran in the event loop's own thread
        scope.cancel()
    raise SimulatedCrash


def _only_crash(exc: BaseException) -> bool:
    """The exception is the simulated crash, alone or with the cancellations it caused."""
    if isinstance(exc, SimulatedCrash | trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_crash(e) for e in exc.exceptions)
    return False


def _node_runner(
    n: Net, live: dict[str, Node], scopes: dict[str, trio.CancelScope], may_crash: Callable[[str], bool], accept_keysend: Collection[str] = ()
) -> Callable[..., Awaitable[None]]:
    """``run_node(name)`` for ``nursery.start``: runs ``n``'s node ``name`` (a fresh one each call: a
    restart; accepting keysends if ``name`` is in ``accept_keysend``) in a cancel scope of its own, kept
    in ``live`` and ``scopes``; a node whose crash ``may_crash(name)`` allows ends quietly when the
    simulated crash is all that ended it."""

    async def run_node(name: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        node = live[name] = n.node(name, accept_keysend=name in accept_keysend)
        with trio.CancelScope() as scopes[name]:
            try:
                await node.run(task_status=task_status)
            except BaseException as exc:
                if not (may_crash(name) and _only_crash(exc)):
                    raise

    return run_node


async def _restarted(nursery: trio.Nursery, run_node: Callable[..., Awaitable[None]], live: dict[str, Node], victim: str) -> Node:
    """``victim`` starts again in ``nursery`` (the same key, the same directories) once its neighbours
    saw it go, and dials them; the new node."""
    await wait_until(lambda: all(live[victim].node_id not in live[x].peers for x in NEIGHBOURS[victim]), "the neighbours see the victim go")
    await nursery.start(run_node, victim)
    for neighbour in NEIGHBOURS[victim]:
        await live[victim].connect(live[neighbour].addresses[0])
    return live[victim]


async def _restart_once_crashed(nursery: trio.Nursery, run_node: Callable[..., Awaitable[None]], live: dict[str, Node], victim: str,
                                fired: Callable[[], bool]) -> None:  # fmt: skip
    """Wait for ``victim``'s crash (``fired``), then restart it (:func:`_restarted`)."""
    with trio.fail_after(60):
        while not fired():
            await trio.sleep(0.01)
    await _restarted(nursery, run_node, live, victim)


class CrashPlan:
    """Count each watched node's payments-store writes; crash ``victim`` right after its ``point``-th."""

    def __init__(self, victim: str | None, point: int) -> None:
        self.victim = victim
        self.point = point
        self.writes: dict[str, int] = {}
        self._names: dict[int, tuple[str, PaymentsStore]] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self.fired = False
        self.token = trio.lowlevel.current_trio_token()

    def watch(self, name: str, store: PaymentsStore | None, scope: trio.CancelScope) -> None:
        assert store is not None
        self._names[id(store)] = (name, store)  # (the store kept: its id stays its own)
        self._scopes[name] = scope
        self.writes[name] = 0

    def before_write(self, store: PaymentsStore) -> None:
        """The crashed victim writes nothing more, not even for a call that reached it as it crashed
        (the test's settleinvoice): that call ends as the crash ended the node's own tasks."""
        if self.fired and self._names.get(id(store), ("",))[0] == self.victim:
            raise SimulatedCrash

    def after_write(self, store: PaymentsStore) -> None:
        name = self._names.get(id(store), (None,))[0]
        if name is None or self.fired:
            return
        self.writes[name] += 1
        if name != self.victim or self.writes[name] != self.point:
            return
        self.fired = True
        _crash_node(self._scopes[name], self.token)


@pytest.fixture
def crash_plans(monkeypatch: pytest.MonkeyPatch) -> list[CrashPlan]:
    """Every payments store reports its committed writes to the plans in this list."""
    plans: list[CrashPlan] = []
    original = PaymentsStore._write

    def write(store: PaymentsStore, sql: str, args: tuple[Any, ...]) -> int:
        for plan in plans:
            plan.before_write(store)
        result = original(store, sql, args)
        for plan in plans:
            plan.after_write(store)
        return result

    monkeypatch.setattr(PaymentsStore, "_write", write)
    return plans


def balances(nodes: dict[str, Node]) -> dict[str, int]:
    """Each node's own msat over its channels' latest commitments."""
    totals = {}
    for name, node in nodes.items():
        manager = channels(node).manager
        assert manager is not None
        totals[name] = sum(c.core.state.local_commit.spec.to_local_msat for c in manager.channels.values()
                           if c.core.state.local_commit is not None)  # fmt: skip
    return totals


async def _open_line(n: Net, live: dict[str, Node]) -> tuple[Node, Node, Node]:
    """Fund A and open the channels A-B and B-C; the three nodes."""
    a, b, c = live["a"], live["b"], live["c"]
    await n.fund(a, b)
    await n.open([(a, b, 1_000_000, 1_000_000), (b, c, 1_000_000, 1_000_000)])
    return a, b, c


def _for_an_unknown_hash(n: Net, text: str) -> tuple[str, str]:
    """C's invoice ``text`` for a payment hash C does not know, signed by C: (bolt11, payment hash hex)."""
    unknown = replace(bolt11.decode(text), payment_hash=os.urandom(32), signature=None, payee=None)
    return bolt11.encode(bolt11.sign(unknown, n.keys["c"].secret)), unknown.payment_hash.hex()


#: the outcomes whose invoice C holds (a hold invoice): the call of C's that answers once C accepted the payment
HOLD_ANSWERS = {"hold_settled": "settleinvoice", "hold_cancelled": "cancelinvoice"}
#: how each outcome ends: (A's payment, C's invoice or keysend); a crash of the payer before any HTLC of
#: its payment left ends it ("interrupted", "unpaid") instead
ENDS = {"settles": ("complete", "paid"), "refused": ("failed", "unpaid"), "hold_settled": ("complete", "paid"),
        "hold_cancelled": ("failed", "cancelled"), "keysend": ("complete", "paid")}  # fmt: skip


async def _payees_invoice(n: Net, c: Node, outcome: str, preimage: bytes) -> dict[str, str]:
    """What A pays: C's invoice "crash" (a hold invoice for ``preimage``'s hash; signed by C for a hash C does
    not know when C refuses); none for a keysend."""
    if outcome == "keysend":
        return {}
    hold = {"payment_hash": sha256(preimage).hex(), "hold": True} if outcome in HOLD_ANSWERS else {}
    invoice = await payments(c).invoice(AMOUNT_MSAT, "crash", "a crash at every write", **hold)
    if outcome != "refused":
        return invoice  # type: ignore[no-any-return]
    text, payment_hash = _for_an_unknown_hash(n, invoice["bolt11"])
    return {"bolt11": text, "payment_hash": payment_hash}


async def _answer_hold(live: dict[str, Node], up: Callable[[str], bool], outcome: str, preimage: bytes) -> None:
    """C's owner: once C lists its hold invoice accepted (before or after C's restart), settle it with
    ``preimage`` or cancel it, again when C crashed in the call; returns once C lists it paid or cancelled."""
    with trio.fail_after(TIMEOUT):
        while True:
            app = payments(live["c"])
            try:
                if up("c"):
                    status = (await app.listinvoices("crash"))["invoices"][0]["status"]
                    if status in ("paid", "cancelled"):
                        return
                    if status == "accepted" and up("c"):
                        if HOLD_ANSWERS[outcome] == "settleinvoice":
                            await app.settleinvoice(preimage.hex())
                        else:
                            await app.cancelinvoice(sha256(preimage).hex())
            except SimulatedCrash:
                pass  # C crashed right after the write the call made (or the call reached C as it crashed)
            except Exception:
                if up("c"):
                    raise  # only C's crash may cut a call short
            await trio.sleep(0.05)


async def _scenario(tmp_path: Path, plans: list[CrashPlan], outcome: str, victim: str | None, point: int) -> dict[str, int]:
    """A pays C through B (as ``outcome`` says: see ``ENDS``), crashing ``victim`` at its ``point``-th write;
    each node's writes until then."""
    plan = CrashPlan(victim, point)
    plans.append(plan)
    async with net(tmp_path) as n, trio.open_nursery() as nursery:
        scopes: dict[str, trio.CancelScope] = {}
        live: dict[str, Node] = {}

        run_node = _node_runner(n, live, scopes, lambda name: plan.fired and name == victim,
                               ("c",) if outcome == "keysend" else ())  # fmt: skip

        for name in "abc":
            await nursery.start(run_node, name)
        a, b, c = await _open_line(n, live)
        before = balances(live)
        preimage = os.urandom(32)  # a hold invoice's: the test's until it settles
        invoice = await _payees_invoice(n, c, outcome, preimage)
        for name, node in live.items():
            plan.watch(name, payments(node).store, scopes[name])

        async def pay() -> None:
            try:
                if outcome == "keysend":
                    await payments(a).keysend(c.node_id.hex(), AMOUNT_MSAT)
                else:
                    await payments(a).pay(invoice["bolt11"])
            except ChainAppError as exc:
                if ENDS[outcome][0] == "failed" and "incorrect_or_unknown_payment_details" in str(exc):
                    return
                if not (victim == "a" and plan.fired and exc.details.get("error") == "Interrupted"):
                    raise  # only the crash may cut the call short

        def up(name: str) -> bool:
            """The node runs: started, and not crashed since."""
            return live[name].started.is_set() and not scopes[name].cancel_called

        async with trio.open_nursery() as answering:  # C's owner, for a hold invoice
            if outcome in HOLD_ANSWERS:
                answering.start_soon(_answer_hold, live, up, outcome, preimage)
            async with trio.open_nursery() as paying:
                paying.start_soon(pay)
                if victim is not None:
                    await _restart_once_crashed(nursery, run_node, live, victim, lambda: plan.fired)
            row = await payment_ended(live["a"], invoice.get("payment_hash", ""))  # (a keysend's: A's one payment)
            if row["status"] == "interrupted":
                answering.cancel_scope.cancel()  # no HTLC of it reached C: nothing to answer
        await wait_until(lambda: all(quiet(x) for x in live.values()), "no HTLC left")
        assert not payments(live["b"])._early, "a result of the forwarder's outgoing HTLC found no forward"
        received = (await payments(live["c"]).listinvoices(None if outcome == "keysend" else "crash"))["invoices"]
        assert len(received) <= 1 and all(r["keysend"] == (outcome == "keysend") for r in received), received  # a keysend counted once
        ended = (row["status"], received[0]["status"] if received else "unpaid")
        assert ended == (("interrupted", "unpaid") if victim == "a" and row["status"] == "interrupted" else ENDS[outcome]), (row, received)
        paid = ended[1] == "paid"
        if paid:  # A's proof of payment is the preimage C was paid with (a hold invoice's: the test's)
            assert row["preimage"] == received[0]["preimage"], (row, received)
            assert outcome not in HOLD_ANSWERS or row["preimage"] == preimage.hex(), row
        if row["status"] == "failed":
            assert "incorrect_or_unknown_payment_details" in row["error"], row["error"]
        moved = _moves(before, balances(live))
        assert moved == ({"a": -AMOUNT_MSAT - FEE_MSAT, "b": FEE_MSAT, "c": AMOUNT_MSAT} if paid else {"a": 0, "b": 0, "c": 0}), moved
        mempool = await trio.to_thread.run_sync(n.source.core.mempool_txids)
        assert not mempool, "something went on chain"
        for node in live.values():
            node.stop()
    return plan.writes


def _moves(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in before}


@pytest.mark.trio
@pytest.mark.parametrize("outcome", list(POINTS))
async def test_the_payment_counts_its_writes(tmp_path: Path, crash_plans: list[CrashPlan], outcome: str) -> None:
    """Without a crash the payment ends and each node makes the writes the crash tests cover."""
    assert await _scenario(tmp_path, crash_plans, outcome, None, 0) == POINTS[outcome]


CASES = [(outcome, victim, point) for outcome, points in POINTS.items() for victim in "abc" for point in range(1, points[victim] + 1)]


@pytest.mark.trio
@pytest.mark.parametrize(("outcome", "victim", "point"), CASES)
async def test_crash_at_every_payments_store_write(tmp_path: Path, crash_plans: list[CrashPlan], outcome: str, victim: str,
                                                   point: int) -> None:  # fmt: skip
    writes = await _scenario(tmp_path, crash_plans, outcome, victim, point)
    assert writes[victim] == point


class WriteCrash:
    """Crash the node whose payments store is under ``directory`` right after its store commits a
    write whose SQL starts with ``sql`` (once), or right before that write with ``before``; ``scope``
    is the node's, set when it starts."""

    def __init__(self, directory: Path, sql: str, *, before: bool = False) -> None:
        self.directory = directory
        self.sql = sql
        self.before = before
        self.scope: trio.CancelScope | None = None
        self.fired = False
        self.token = trio.lowlevel.current_trio_token()


@pytest.fixture
def write_crashes(monkeypatch: pytest.MonkeyPatch) -> list[WriteCrash]:
    """Every payments store checks its writes against the crashes in this list."""
    crashes: list[WriteCrash] = []
    directories: dict[int, tuple[PaymentsStore, Path]] = {}
    original_init, original_write = PaymentsStore.__init__, PaymentsStore._write

    def init(store: PaymentsStore, directory: str | Path) -> None:
        original_init(store, directory)
        directories[id(store)] = (store, Path(directory))  # (the store kept: its id stays its own)

    def check(store: PaymentsStore, sql: str, before: bool) -> None:
        for crash in crashes:
            if crash.fired or crash.before is not before or directories[id(store)][1] != crash.directory or not sql.startswith(crash.sql):
                continue
            crash.fired = True
            assert crash.scope is not None
            _crash_node(crash.scope, crash.token)

    def write(store: PaymentsStore, sql: str, args: tuple[Any, ...]) -> int:
        check(store, sql, True)
        result = original_write(store, sql, args)
        check(store, sql, False)
        return result

    monkeypatch.setattr(PaymentsStore, "__init__", init)
    monkeypatch.setattr(PaymentsStore, "_write", write)
    return crashes


@pytest.mark.trio
async def test_a_forward_refused_after_a_restart_keeps_its_failure_across_another(tmp_path: Path, write_crashes: list[WriteCrash]) -> None:
    """A pays C through B. B records the forward and crashes before offering it; B comes back asking a
    longer cltv_expiry_delta, so the recorded forward is refused now (incorrect_cltv_expiry), and B
    crashes right after recording that. Restarted once more, B sends upstream the failure it recorded:
    A reads incorrect_cltv_expiry from B, not the temporary_channel_failure of a forward lost downstream."""
    strict = replace(POLICY, cltv_expiry_delta=POLICY.cltv_expiry_delta + 50)
    async with net(tmp_path) as n, trio.open_nursery() as nursery:
        live: dict[str, Node] = {}

        async def run_node(name: str, crash: WriteCrash | None = None, policy: FeePolicy = POLICY, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:  # fmt: skip
            node = live[name] = n.node(name, policy)
            with trio.CancelScope() as scope:
                if crash is not None:
                    crash.scope = scope
                    write_crashes.append(crash)
                try:
                    await node.run(task_status=task_status)
                except BaseException as exc:
                    if not (crash is not None and crash.fired and _only_crash(exc)):
                        raise

        async def crashed_and_back(crash: WriteCrash, policy: FeePolicy | None, next_crash: WriteCrash | None) -> None:
            """Wait for B's crash, then start B again (``policy``) and dial its neighbours."""
            with trio.fail_after(60):
                while not crash.fired:
                    await trio.sleep(0.01)
            b_id = live["b"].node_id
            await wait_until(lambda: b_id not in live["a"].peers and b_id not in live["c"].peers, "the neighbours see B's crash")
            await nursery.start(run_node, "b", next_crash, policy)
            for neighbour in "ac":
                await live["b"].connect(live[neighbour].addresses[0])

        recorded = WriteCrash(tmp_path / "b" / "payments", "INSERT INTO forwards")
        for name in "abc":
            await nursery.start(run_node, name, recorded if name == "b" else None)
        a, b, c = await _open_line(n, live)
        invoice = await payments(c).invoice(AMOUNT_MSAT, "refused later", "a forward decided again")

        async def pay() -> None:
            with pytest.raises(ChainAppError):
                await payments(a).pay(invoice["bolt11"])

        nursery.start_soon(pay)
        refused = WriteCrash(tmp_path / "b" / "payments", "UPDATE forwards SET status")
        await crashed_and_back(recorded, strict, refused)
        await crashed_and_back(refused, strict, None)
        with trio.fail_after(90):
            while (row := (await payments(a).listpayments(invoice["payment_hash"]))["payments"][-1])["status"] == "pending":
                await trio.sleep(0.05)
        assert row["status"] == "failed", row
        assert "hop 0" in row["error"] and "incorrect_cltv_expiry" in row["error"], row["error"]
        forward = next(f for f in payments(live["b"]).store.forwards() if f["payment_hash"].hex() == invoice["payment_hash"])  # type: ignore[union-attr]
        assert forward["status"] == "failed" and forward["failure"], forward
        await wait_until(lambda: all(quiet(x) for x in live.values()), "no HTLC left")
        assert (await payments(c).listinvoices("refused later"))["invoices"][0]["status"] == "unpaid"
        for node in live.values():
            node.stop()


class FailureWriteCrash:
    """Crash the node whose channel app keeps its failures in ``directory`` at its first write of a
    peer's failure of our HTLC: ``before`` it (the channel's records are on disk, the failure is not)
    or right ``after`` it; ``scope`` is the node's, set when it starts."""

    def __init__(self, directory: Path, when: str) -> None:
        self.directory = directory
        self.when = when
        self.scope: trio.CancelScope | None = None
        self.fired = False
        self.token = trio.lowlevel.current_trio_token()

    def fire(self) -> None:
        self.fired = True
        assert self.scope is not None
        _crash_node(self.scope, self.token)


@pytest.fixture
def failure_crashes(monkeypatch: pytest.MonkeyPatch) -> list[FailureWriteCrash]:
    """Every failure store checks its writes against the crashes in this list."""
    crashes: list[FailureWriteCrash] = []
    original = FailureStore.add

    def add(store: FailureStore, failure: OfferedFailure) -> None:
        crash = next((c for c in crashes if not c.fired and store.directory == c.directory), None)
        if crash is not None and crash.when == "before":
            crash.fire()
        original(store, failure)
        if crash is not None:
            crash.fire()

    monkeypatch.setattr(FailureStore, "add", add)
    return crashes


#: channel persistence points the payer and the forwarder make during a refused payment (the counting test checks)
REFUSAL_POINTS = {"a": 8, "b": 16}
#: what the payer may read: the payee's own failure; when the crash came before the HTLC left the
#: victim (the payer's add, or the forwarder's offer to C), a well-defined failure of that hop
PAYEE_FAILURE = ("the payee", "incorrect_or_unknown_payment_details")
HOP_FAILURES = (("hop 0", "temporary_channel_failure"), ("our channel", "did not take the HTLC"))


async def _refused_payment(tmp_path: Path, victim: str | None, arm: Callable[[dict[str, Node], dict[str, trio.CancelScope]], Callable[[], bool]],
                           allowed: tuple[tuple[str, str], ...]) -> dict[str, int]:  # fmt: skip
    """A pays C through B an invoice C signed for a payment hash C does not know: C refuses. Once the
    channels are open, ``arm`` readies the victim's crash (given the nodes and their cancel scopes)
    and returns whether it fired. The victim restarts and dials its neighbours. Afterwards the payment
    failed with one of the ``allowed`` (words, words) errors, nothing moved, no HTLC is left, nothing
    went on chain, and no channel app keeps a failure (the payments apps recorded them). Returns the
    channel persistence points each node made during the payment (the victim's: since its restart)."""
    async with net(tmp_path) as n, trio.open_nursery() as nursery:
        live: dict[str, Node] = {}
        scopes: dict[str, trio.CancelScope] = {}
        fired: Callable[[], bool] = lambda: False  # noqa: E731

        run_node = _node_runner(n, live, scopes, lambda name: name == victim and fired())

        for name in "abc":
            await nursery.start(run_node, name)
        a, b, c = await _open_line(n, live)
        before = balances(live)
        text, payment_hash = _for_an_unknown_hash(n, (await payments(c).invoice(AMOUNT_MSAT, "template", "signed by C"))["bolt11"])
        base = {x: channels(live[x]).manager.persists for x in "abc"}  # type: ignore[union-attr]
        fired = arm(live, scopes)

        async def pay() -> None:
            try:
                await payments(a).pay(text)
            except ChainAppError:
                pass  # the outcome is read from the store (a crash of the payer cuts the call short)

        nursery.start_soon(pay)
        if victim is not None:
            await _restart_once_crashed(nursery, run_node, live, victim, fired)
            base[victim] = 0

        with trio.fail_after(90):
            while not (rows := (await payments(live["a"]).listpayments(payment_hash))["payments"]) or rows[-1]["status"] == "pending":
                await trio.sleep(0.05)
        assert rows[-1]["status"] == "failed", rows[-1]
        assert any(all(w in rows[-1]["error"] for w in words) for words in allowed), rows[-1]["error"]
        await wait_until(lambda: all(quiet(x) for x in live.values()), "no HTLC left")
        assert _moves(before, balances(live)) == {"a": 0, "b": 0, "c": 0}
        assert not await trio.to_thread.run_sync(n.source.core.mempool_txids), "something went on chain"
        for name in "ab":
            await wait_until(lambda name=name: not channels(live[name]).htlcs.failed_offered(), f"{name} keeps no failure")  # type: ignore[misc]
            assert not any((tmp_path / name / "channels" / "failures").iterdir())
        points = {x: channels(live[x]).manager.persists - base[x] for x in "abc"}  # type: ignore[union-attr]
        for node in live.values():
            node.stop()
    return points


@pytest.mark.trio
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("victim", ["a", "b"])
async def test_a_crash_around_the_write_of_a_peers_failure_loses_nothing(tmp_path: Path, failure_crashes: list[FailureWriteCrash],
                                                                       victim: str, when: str) -> None:  # fmt: skip
    """The victim (B, the forwarder; or A, the payer) crashes when its channel app writes the failure
    it got from downstream: after the channel's records and before the failure's write, or right
    after that write. Restarted, B sends upstream the payee's own failure and A attributes it to the
    payee (not a local ``temporary_channel_failure`` nor ``interrupted``); nothing is lost.

    (The first write of a failure comes in the job that received it, so the update is not yet
    committed there: a crash before the write leaves it to the peer to fail the HTLC again after
    the reconnection, and one after it leaves a kept failure of an HTLC still in the channel.)"""

    def arm(live: dict[str, Node], scopes: dict[str, trio.CancelScope]) -> Callable[[], bool]:
        crash = FailureWriteCrash(tmp_path / victim / "channels" / "failures", when)
        crash.scope = scopes[victim]
        failure_crashes.append(crash)
        return lambda: crash.fired

    await _refused_payment(tmp_path, victim, arm, (PAYEE_FAILURE,))


def _no_crash(live: dict[str, Node], scopes: dict[str, trio.CancelScope]) -> Callable[[], bool]:
    return lambda: False


@pytest.mark.trio
async def test_a_refused_payment_counts_its_points(tmp_path: Path) -> None:
    """Without a crash the payer reads the payee's failure, and A and B make the points the next test covers."""
    points = await _refused_payment(tmp_path, None, _no_crash, (PAYEE_FAILURE,))
    assert {x: points[x] for x in REFUSAL_POINTS} == REFUSAL_POINTS


@pytest.mark.trio
@pytest.mark.parametrize(("victim", "point", "stage"),
                         [(v, p, s) for v, n in REFUSAL_POINTS.items() for s in CRASH_STAGES for p in range(1, n + 1)])  # fmt: skip
async def test_a_refused_payment_loses_nothing_at_any_channel_persistence_point(tmp_path: Path, victim: str, point: int, stage: str) -> None:
    """The payer or the forwarder crashes at each of its channel persistence points during the refused
    payment (``persisted``: its records are on disk, the failure store written, nothing sent; ``sent``:
    the messages left). The payer reads the payee's failure, or, when the crash came before the HTLC
    left the victim, that hop's own failure; nothing is lost and no failure stays kept."""
    fired = False

    def crash() -> None:
        nonlocal fired
        fired = True
        raise SimulatedCrash

    def arm(live: dict[str, Node], scopes: dict[str, trio.CancelScope]) -> Callable[[], bool]:
        manager = channels(live[victim]).manager
        assert manager is not None
        manager.crash_at, manager.crash = (manager.persists + point, stage), crash
        return lambda: fired

    await _refused_payment(tmp_path, victim, arm, (PAYEE_FAILURE, *HOP_FAILURES))


def _as_an_old_database(directory: Path) -> None:
    """The store in ``directory`` as one written before forwards kept their outgoing onion's key."""
    db = sqlite3.connect(directory / "payments.sqlite3")
    try:
        db.execute("ALTER TABLE forwards DROP COLUMN out_onion_key")
        db.commit()
    finally:
        db.close()


def _forward_status(node: Node) -> str | None:
    """The status of the one forward the node's payments store holds (None: none, or not running)."""
    store = payments(node).store
    rows = store.forwards() if store is not None else []
    return rows[0]["status"] if rows else None


@pytest.mark.trio
@pytest.mark.parametrize("store_kind", ["current", "legacy"])
@pytest.mark.parametrize("order", ["c_refuses_first", "b_decides_first"])
async def test_a_forward_offered_right_before_a_crash_is_found_after_the_restart(tmp_path: Path, write_crashes: list[WriteCrash],
                                                                               monkeypatch: pytest.MonkeyPatch, store_kind: str,
                                                                               order: str) -> None:  # fmt: skip
    """B offers the forward to C and crashes before it records the outgoing HTLC's id. Restarted, B
    finds the forward by its outgoing onion, C's failure goes upstream, and C is never offered the
    payment a second time (a second offer C fulfilled would have B pay twice). ``c_refuses_first``:
    B decides the incoming HTLC again only once C has refused that HTLC (the worst order for B);
    ``b_decides_first``: C holds its decision until B has decided the forward again, so the HTLC
    is still in the channel when B does.

    ``legacy``: B restarts on its store as an older version left it, whose forwards lack the
    outgoing onion's key; B derives the key from the incoming onion and finds the forward all the same."""
    b_store = tmp_path / "b" / "payments"
    aged: list[Path] = []

    def arm(live: dict[str, Node], scopes: dict[str, trio.CancelScope]) -> Callable[[], bool]:
        crash = WriteCrash(b_store, "UPDATE forwards SET out_channel", before=True)
        crash.scope = scopes["b"]
        write_crashes.append(crash)
        if order == "c_refuses_first":
            replay = PaymentsApp._replay

            async def late_replay(app: PaymentsApp) -> None:  # (only the restarted B starts after this)
                await wait_until(lambda: not app.htlcs.offered(), "C refused the HTLC B offered before the crash")
                await replay(app)

            monkeypatch.setattr(PaymentsApp, "_replay", late_replay)
        else:
            decide = payments(live["c"])._on_incoming

            async def after_b_decided(htlc: IncomingHtlc) -> None:
                await wait_until(lambda: _forward_status(live["b"]) not in (None, "offering"), "B decided the forward after its restart")
                await decide(htlc)

            monkeypatch.setattr(payments(live["c"]), "_on_incoming", after_b_decided)
        if store_kind == "legacy":
            init = PaymentsStore.__init__

            def reopened_as_old(store: PaymentsStore, directory: str | Path) -> None:  # (only the restarted B opens one after this)
                if Path(directory) == b_store and not aged:
                    aged.append(Path(directory))
                    _as_an_old_database(b_store)
                init(store, directory)

            monkeypatch.setattr(PaymentsStore, "__init__", reopened_as_old)
        return lambda: crash.fired

    await _refused_payment(tmp_path, "b", arm, (PAYEE_FAILURE,))
    store = PaymentsStore(b_store)
    try:
        (forward,) = store.forwards()
    finally:
        store.close()
    assert (forward["status"], forward["out_htlc"]) == ("failed", 0), forward
    assert aged == ([b_store] if store_kind == "legacy" else [])
    assert forward["out_onion_key"], "the derived key is recorded"
