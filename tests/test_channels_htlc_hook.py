"""The channel app's HTLC interface keeps the events that come while no payments layer listens
(one starting after the channels, or stopping before them) and hands them to the next handler,
in order and bounded: a preimage learned then is not lost."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lnpmsg.channels.htlc_hook import MAX_MISSED, HtlcHook, IncomingHtlc
from lnpmsg.channels.inputs import HtlcDropped, HtlcIncoming, HtlcSettled
from lnpmsg.channels.messages import UpdateAddHtlc

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
