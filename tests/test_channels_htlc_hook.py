"""The channel app's HTLC interface keeps the events that come while no payments layer listens
(one starting after the channels, or stopping before them) and hands them to the next handler,
in order and bounded: a preimage learned then is not lost. A peer's failure of our HTLC is kept on
disk until the handler has it: a failure that came then is not lost either, not even with the process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lnpmsg.channels.htlc_hook import MAX_MISSED, HtlcHook, IncomingHtlc
from lnpmsg.channels.inputs import HtlcDropped, HtlcIncoming, HtlcSettled
from lnpmsg.channels.messages import UpdateAddHtlc
from lnpmsg.channels.monitor import HtlcResolved
from lnpmsg.channels.state import Phase

CHANNEL: Any = SimpleNamespace(key="chan", peer_id=b"\x02" * 33, core=SimpleNamespace(state=SimpleNamespace(short_channel_id=42)))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    def htlc_incoming(self, htlc: IncomingHtlc) -> None:
        self.seen.append(("incoming", htlc.add.id))

    def htlc_resolved(self, channel_key: str, htlc_id: int, preimage: bytes | None, reason: bytes | None, failure_code: int | None) -> None:
        self.seen.append(("resolved", (htlc_id, preimage)))

    def upstream_of(self, channel_key: str, htlc_id: int) -> None:
        return None


def add(htlc_id: int) -> UpdateAddHtlc:
    return UpdateAddHtlc(channel_id=bytes(32), id=htlc_id, amount_msat=1000, payment_hash=bytes(32), cltv_expiry=500,
                         onion_routing_packet=bytes(1366))  # fmt: skip


def test_events_without_a_handler_go_to_the_next_one_in_order() -> None:
    hook = HtlcHook(SimpleNamespace(manager=None))  # type: ignore[arg-type]
    hook.dispatch(CHANNEL, HtlcIncoming(add(3)))
    hook.dispatch(CHANNEL, HtlcSettled(1, preimage=b"\x07" * 32))
    hook.dispatch(CHANNEL, HtlcDropped(2))
    first = Recorder()
    hook.set_handler(first)
    assert first.seen == [("incoming", 3), ("resolved", (1, b"\x07" * 32)), ("resolved", (2, None))]
    hook.dispatch(CHANNEL, HtlcSettled(4, reason=b"r"))
    assert first.seen[-1] == ("resolved", (4, None))
    hook.set_handler(None)
    hook.dispatch(CHANNEL, HtlcSettled(5, preimage=b"\x08" * 32))
    second = Recorder()
    hook.set_handler(second)  # only what came while nobody listened
    assert second.seen == [("resolved", (5, b"\x08" * 32))] and len(first.seen) == 4


def test_the_kept_events_are_bounded() -> None:
    hook = HtlcHook(SimpleNamespace(manager=None))  # type: ignore[arg-type]
    for i in range(MAX_MISSED + 5):
        hook.dispatch(CHANNEL, HtlcDropped(i))
    recorder = Recorder()
    hook.set_handler(recorder)
    assert len(recorder.seen) == MAX_MISSED and recorder.seen[0] == ("resolved", (5, None))


def channel_with(key: str, offered: list[UpdateAddHtlc], remote_changes: tuple[object, ...], phase: Phase = Phase.NORMAL) -> Any:
    """A channel (in ``phase``) whose commitments hold our HTLCs ``offered`` and whose peer's updates are ``remote_changes``."""
    from lnpmsg.channels.updates import Changes, CommitSpec, DirectedHtlc

    local = CommitSpec(tuple(DirectedHtlc(False, a) for a in offered), 253, 0, 0)
    remote = CommitSpec(tuple(DirectedHtlc(True, a) for a in offered), 253, 0, 0)
    state = SimpleNamespace(short_channel_id=42, local_changes=Changes(), remote_changes=Changes(proposed=remote_changes),
                            local_commit=SimpleNamespace(spec=local), remote_commit=SimpleNamespace(spec=remote), remote_next_commit=None)  # fmt: skip
    return SimpleNamespace(key=key, peer_id=b"\x02" * 33, core=SimpleNamespace(state=state), phase=phase)


@pytest.mark.trio
async def test_a_peers_failure_is_kept_on_disk_until_the_handler_has_it(tmp_path: Path) -> None:
    """Kept in the job that received it (before any message); listed once the HTLC left the channel,
    also by a new hook after a restart; forgotten when the handler says so, or when a fulfill came after all."""
    from lnpmsg.channels.messages import UpdateFailHtlc, UpdateFailMalformedHtlc

    manager = SimpleNamespace(channels={})
    hook = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    hook.open_failures(tmp_path)
    fails = (UpdateFailHtlc(channel_id=bytes(32), id=1, reason=b"onion"),
             UpdateFailMalformedHtlc(channel_id=bytes(32), id=2, sha256_of_onion=bytes(32), failure_code=0xC005))  # fmt: skip
    channel = manager.channels["chan"] = channel_with("chan", [add(1), add(2), add(3)], fails)
    await hook.persisted(channel)
    assert hook.failed_offered() == []  # not irrevocable yet: the HTLCs are still in the channel
    manager.channels["chan"] = channel_with("chan", [add(3)], ())  # both left the commitments
    assert [(f.ref, f.reason, f.failure_code) for f in hook.failed_offered()] == [(("chan", 1), b"onion", None), (("chan", 2), None, 0xC005)]

    again = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    again.open_failures(tmp_path)  # a restart
    assert [f.add for f in again.failed_offered()] == [add(1), add(2)]
    await again.failure_handled("chan", 1)
    again.dispatch(CHANNEL, HtlcSettled(2, preimage=b"\x07" * 32))  # (CHANNEL's key is "chan")
    assert again.failed_offered() == []
    third = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    third.open_failures(tmp_path)
    assert third.failed_offered() == []


@pytest.mark.trio
async def test_a_failure_the_peer_replaced_after_a_reconnection_replaces_the_kept_one(tmp_path: Path) -> None:
    """The peer's first failure was not committed when the connection dropped (both sides forget it);
    it then fails the HTLC with another reason (or a malformed code): the kept failure is the new one,
    also for a restart that lists it once the HTLC left the channel."""
    from lnpmsg.channels.messages import UpdateFailHtlc, UpdateFailMalformedHtlc

    manager = SimpleNamespace(channels={})
    hook = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    hook.open_failures(tmp_path)
    first = (UpdateFailHtlc(channel_id=bytes(32), id=1, reason=b"first"), UpdateFailHtlc(channel_id=bytes(32), id=2, reason=b"first"))
    await hook.persisted(manager.channels.setdefault("chan", channel_with("chan", [add(1), add(2)], first)))
    after = (UpdateFailHtlc(channel_id=bytes(32), id=1, reason=b"second"),
             UpdateFailMalformedHtlc(channel_id=bytes(32), id=2, sha256_of_onion=bytes(32), failure_code=0xC005))  # fmt: skip
    await hook.persisted(channel_with("chan", [add(1), add(2)], after))
    manager.channels["chan"] = channel_with("chan", [], ())  # both failures irrevocable
    again = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    again.open_failures(tmp_path)  # a restart
    for kept in (hook.failed_offered(), again.failed_offered()):
        assert [(f.ref, f.reason, f.failure_code) for f in kept] == [(("chan", 1), b"second", None), (("chan", 2), None, 0xC005)]


@pytest.mark.trio
async def test_a_failure_cut_short_by_the_chain_is_released_and_not_kept_again(tmp_path: Path) -> None:
    """The peer failed HTLC 1, and its channel went on chain before the failure was irrevocable: the
    HTLC ends on chain, its failure is never listed, and it is released then (when the channel fails,
    and again when the monitor resolves the HTLC). A restart's replay of the channel (whose monitor
    may be archived: nothing on chain is reported again) keeps it no more, and releases one left on
    disk. HTLC 2's failure was irrevocable before the channel failed: it stays until the handler has it."""
    from lnpmsg.channels.failures import FailureStore, OfferedFailure
    from lnpmsg.channels.messages import UpdateFailHtlc

    manager = SimpleNamespace(channels={})
    hook = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    hook.open_failures(tmp_path)
    fails = (UpdateFailHtlc(channel_id=bytes(32), id=1, reason=b"one"), UpdateFailHtlc(channel_id=bytes(32), id=2, reason=b"two"))
    await hook.persisted(manager.channels.setdefault("chan", channel_with("chan", [add(1), add(2)], fails)))
    failed = manager.channels["chan"] = channel_with("chan", [add(1)], fails[:1], Phase.FAILED)  # HTLC 2 left first
    await hook.persisted(failed)  # the job that failed the channel
    assert list(hook._failures.kept) == [("chan", 2)]  # type: ignore[union-attr]
    assert [f.ref for f in hook.failed_offered()] == [("chan", 2)]
    hook.dispatch_on_chain(failed, HtlcResolved(1, True, bytes(32), None, bytes(32), 500))  # (nothing left to release)

    FailureStore(tmp_path).add(OfferedFailure("chan", add(1), b"one", None))  # left on disk (a release the crash undid)
    again = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    again.open_failures(tmp_path)  # a restart
    await again.persisted(failed)  # the channel's replay at start
    assert [f.ref for f in again.failed_offered()] == [("chan", 2)]
    assert list(again._failures.kept) == [("chan", 2)]  # type: ignore[union-attr]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chan-2.fail"]


@pytest.mark.trio
async def test_an_htlc_only_in_the_peers_commitment_is_still_in_the_channel(tmp_path: Path) -> None:
    """The peer failed our HTLC and signed our commitment without it, but its own commitment (not
    revoked yet) still holds it, as an HTLC incoming to the peer: the failure is not irrevocable. It is
    not listed (a forward would fail upstream while the peer can still claim the HTLC on chain with
    that commitment), and the HTLC is among the offered ones; listed once the peer revoked that commitment."""
    from lnpmsg.channels.messages import UpdateFailHtlc
    from lnpmsg.channels.updates import Changes, CommitSpec, DirectedHtlc

    def channel(in_theirs: bool) -> Any:
        remote = CommitSpec((DirectedHtlc(True, add(1)),) if in_theirs else (), 253, 0, 0)
        changes = Changes(signed=(UpdateFailHtlc(channel_id=bytes(32), id=1, reason=b"onion"),)) if in_theirs else Changes()
        state = SimpleNamespace(short_channel_id=42, local_changes=Changes(), remote_changes=changes, remote_next_commit=None,
                                local_commit=SimpleNamespace(spec=CommitSpec((), 253, 0, 0)), remote_commit=SimpleNamespace(spec=remote))  # fmt: skip
        return SimpleNamespace(key="chan", peer_id=b"\x02" * 33, core=SimpleNamespace(state=state), phase=Phase.NORMAL)

    manager = SimpleNamespace(channels={"chan": channel(True)})
    hook = HtlcHook(SimpleNamespace(manager=manager, onchain=None))  # type: ignore[arg-type]
    hook.open_failures(tmp_path)
    await hook.persisted(manager.channels["chan"])
    assert hook.failed_offered() == []
    assert [h.add for h in hook.offered()] == [add(1)] and hook.outgoing_ids("chan") == {1}
    manager.channels["chan"] = channel(False)  # the peer revoked it
    assert [f.ref for f in hook.failed_offered()] == [("chan", 1)] and hook.offered() == []
