"""The sans-IO BOLT-1 session: init, ping/pong, errors, odd/even, timers."""

from dataclasses import dataclass

import pytest

from lnpmsg.node.session import (
    LocalProtocolError,
    MessagesReceived,
    PeerReady,
    PeerSession,
    PongReceived,
    RemoteError,
    RemoteWarning,
    RunReceived,
    SessionClosed,
    SessionState,
)
from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    Error,
    Features,
    Init,
    Message,
    Ping,
    Pong,
    UnknownMessage,
    WarningMessage,
    message,
)
from lnpmsg.wire.bolt1 import CHAIN_HASH_MAINNET, CHAIN_HASH_REGTEST, INIT_TLVS
from lnpmsg.wire.fields import u32

CHANNEL = bytes(range(32))


def make_session(now=0.0, **kwargs):
    local = Init(features=Features.from_names(optional=["var_onion_optin"]).to_bytes())
    return PeerSession(local, now, ping_interval=60, pong_timeout=30, init_timeout=30, **kwargs)


def ready_session(now=0.0, **kwargs):
    session = make_session(now, **kwargs)
    events = session.receive_message(Init().encode(), now)
    assert [type(e) for e in events] == [PeerReady]
    session.outbox.clear()
    return session


def sent(session):
    out = [DEFAULT_REGISTRY.decode(m) for m in session.outbox]
    session.outbox.clear()
    return out


def closed_with(events, text):
    assert len(events) == 1 and isinstance(events[0], SessionClosed), events
    assert text in events[0].reason
    return events[0]


def test_our_init_goes_first_and_peer_init_makes_the_session_active():
    session = make_session()
    (first,) = sent(session)
    assert isinstance(first, Init)
    assert first.all_features.supports("var_onion_optin")
    remote = Init(features=Features.from_names(optional=["gossip_queries"]).to_bytes())
    (event,) = session.receive_message(remote.encode(), 1.0)
    assert isinstance(event, PeerReady)
    assert event.features.supports("gossip_queries")
    assert session.state is SessionState.ACTIVE


def test_first_message_must_be_init():
    session = make_session()
    session.outbox.clear()
    closed_with(session.receive_message(Ping(num_pong_bytes=1).encode(), 1), "expected init")
    (error,) = sent(session)
    assert isinstance(error, WarningMessage) and b"expected init" in error.data
    assert session.state is SessionState.CLOSED
    # sticky: nothing more is accepted or produced
    assert session.receive_message(Init().encode(), 2) == []
    with pytest.raises(LocalProtocolError):
        session.send(Ping(num_pong_bytes=0))


def test_unknown_required_feature_fails_with_the_bit_named():
    session = make_session()
    remote = Init(features=Features.from_bits([200]).to_bytes())
    closed_with(session.receive_message(remote.encode(), 1), "bit(s) 200")


def test_unknown_optional_feature_is_fine():
    session = make_session()
    remote = Init(features=Features.from_bits([201]).to_bytes())
    assert isinstance(session.receive_message(remote.encode(), 1)[0], PeerReady)


def test_broken_feature_dependency_fails():
    session = make_session()
    # basic_mpp needs payment_secret (BOLT 9)
    remote = Init(features=Features.from_names(optional=["basic_mpp"]).to_bytes())
    closed_with(session.receive_message(remote.encode(), 1), "dependencies")


def test_peer_on_another_chain_is_refused():
    session = make_session(chains=[CHAIN_HASH_REGTEST])
    remote = Init(tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_MAINNET]))
    closed_with(session.receive_message(remote.encode(), 1), "chains")
    session = make_session(chains=[CHAIN_HASH_REGTEST])
    remote = Init(tlvs=INIT_TLVS.stream(networks=[CHAIN_HASH_MAINNET, CHAIN_HASH_REGTEST]))
    assert isinstance(session.receive_message(remote.encode(), 1)[0], PeerReady)


def test_malformed_init_fails():
    session = make_session()
    closed_with(session.receive_message(b"\x00\x10\x00\x05ab", 1), "malformed init")


def test_init_timeout():
    session = make_session(now=100.0)
    assert session.get_timer() == 130.0
    assert session.handle_timer(129.0) == []
    closed_with(session.handle_timer(130.0), "no init")


def test_ping_is_answered_with_the_asked_number_of_bytes():
    session = ready_session()
    assert session.receive_message(Ping(num_pong_bytes=10, ignored=b"xyz").encode(), 1) == []
    (pong,) = sent(session)
    assert pong == Pong(ignored=bytes(10))


def test_ping_asking_for_too_many_bytes_gets_no_pong():
    session = ready_session()
    session.receive_message(Ping(num_pong_bytes=65532).encode(), 1)
    assert sent(session) == []
    session.receive_message(Ping(num_pong_bytes=65531).encode(), 2)
    assert len(sent(session)[0].ignored) == 65531


def test_ping_flood_closes():
    session = ready_session()
    events = []
    for i in range(25):
        events += session.receive_message(Ping(num_pong_bytes=0).encode(), 1 + i * 0.01)
    closed_with(events, "ping flood")


def test_keepalive_ping_and_pong_rtt():
    session = ready_session(now=0.0)
    assert session.get_timer() == 60.0
    session.handle_timer(60.0)
    (ping,) = sent(session)
    assert isinstance(ping, Ping)
    assert session.get_timer() == 90.0
    (event,) = session.receive_message(Pong(ignored=bytes(ping.num_pong_bytes)).encode(), 60.25)
    assert event == PongReceived(0.25)
    assert session.get_timer() == 120.0


def test_silent_peer_is_dropped_after_pong_timeout():
    session = ready_session(now=0.0)
    session.handle_timer(60.0)
    assert session.handle_timer(89.0) == []
    closed_with(session.handle_timer(90.0), "did not answer ping")


def test_pong_of_wrong_length_fails():
    session = ready_session()
    session.ping(1.0, num_pong_bytes=4)
    closed_with(session.receive_message(Pong(ignored=b"12").encode(), 1.1), "pong carries 2 bytes")


def test_unsolicited_pong_is_ignored():
    session = ready_session()
    assert session.receive_message(Pong(ignored=b"").encode(), 1) == []
    assert session.state is SessionState.ACTIVE


def test_error_for_all_channels_closes_and_names_the_peer_text():
    session = ready_session()
    event = closed_with(
        session.receive_message(Error(channel_id=bytes(32), data=b"go away\x07").encode(), 1), "go away\\x07"
    )
    assert event.by_peer
    assert sent(session) == []  # no error is sent back to an error


def test_error_for_one_channel_and_warning_keep_the_connection():
    session = ready_session()
    (event,) = session.receive_message(Error(channel_id=CHANNEL, data=b"bad htlc").encode(), 1)
    assert event == RemoteError(CHANNEL, "bad htlc")
    (event,) = session.receive_message(WarningMessage(channel_id=bytes(32), data=b"careful").encode(), 1)
    assert event == RemoteWarning(bytes(32), "careful")
    assert session.state is SessionState.ACTIVE


def test_unknown_odd_message_is_passed_up_unknown_even_fails():
    session = ready_session()
    (event,) = session.receive_message(b"\x80\x01hello", 1)
    assert event == MessagesReceived((UnknownMessage(type=0x8001, payload=b"hello"),))
    closed_with(session.receive_message(b"\x80\x02hello", 2), "unknown even message type 32770")
    (error,) = sent(session)
    assert isinstance(error, WarningMessage)


def test_second_init_fails():
    session = ready_session()
    closed_with(session.receive_message(Init().encode(), 1), "init twice")


def test_message_shorter_than_type_fails():
    session = ready_session()
    closed_with(session.receive_message(b"\x01", 1), "shorter than its 2-byte type")


@message(type=32800)
@dataclass(frozen=True, slots=True)
class Counter(Message):
    FIELDS = (("value", u32),)
    value: int


def test_registered_app_message_is_decoded_and_malformed_one_fails():
    registry = DEFAULT_REGISTRY.copy()
    registry.register(Counter)
    session = ready_session(registry=registry)
    (event,) = session.receive_message(Counter(value=7).encode(), 1)
    assert event == MessagesReceived((Counter(value=7),))
    closed_with(session.receive_message(b"\x80\x20\x00", 2), "malformed message of type 32800")


def test_batch_stops_at_the_first_failure():
    session = ready_session()
    batch = [b"\x80\x01a", b"\x80\x02b", b"\x80\x01c"]
    events = session.receive_messages(batch, 1)
    assert events[0] == MessagesReceived((UnknownMessage(type=0x8001, payload=b"a"),))
    assert [type(e) for e in events] == [MessagesReceived, SessionClosed]


def test_a_batch_of_app_messages_is_one_event_split_around_housekeeping():
    session = ready_session()
    batch = [b"\x80\x01a", b"\x80\x03b", Error(channel_id=CHANNEL, data=b"x").encode(), b"\x80\x05c"]
    events = session.receive_messages(batch, 1)
    assert events == [
        MessagesReceived((UnknownMessage(type=0x8001, payload=b"a"), UnknownMessage(type=0x8003, payload=b"b"))),
        RemoteError(CHANNEL, "x"),
        MessagesReceived((UnknownMessage(type=0x8005, payload=b"c"),)),
    ]
    assert session.stats.messages_in == 1 + len(batch)  # init included


@pytest.mark.parametrize(
    "odd_one",
    [None, b"\x80\x03b", b"\x80\x02b", b"\x80", bytearray(b"\x80\x01b"), memoryview(b"\x80\x01b"), Ping(num_pong_bytes=1).encode(), b"\x81\x01b"],
    ids=["all-alike", "another-odd-type", "even-type", "short", "bytearray", "memoryview", "ping", "same-low-byte"],
)
def test_a_batch_of_one_type_gives_what_message_by_message_gives(odd_one):
    # A batch of one unknown odd type is built at once; anything else in it goes
    # message by message: events, stats, replies and state must be the same.
    batch = [b"\x80\x01" + bytes([n]) * n for n in range(6)]
    if odd_one is not None:
        batch.insert(4, odd_one)
    together, one_by_one = ready_session(), ready_session()
    events = together.receive_messages(list(batch), 1)
    expected = []
    joins = False  # app messages in a row share one event; housekeeping splits them
    for data in batch:
        caused = one_by_one.receive_message(bytes(data), 1)
        if joins and [type(e) for e in caused] == [MessagesReceived]:
            expected[-1] = MessagesReceived(expected[-1].messages + caused[0].messages)
        else:
            expected += caused
        joins = [type(e) for e in caused] == [MessagesReceived]
        if one_by_one.is_closed:
            break
    assert events == expected
    assert together.stats == one_by_one.stats
    assert together.outbox == one_by_one.outbox and together.state is one_by_one.state
    # a payload never aliases the caller's buffer (a bytearray would compare equal)
    assert all(type(m.payload) is bytes for e in events if type(e) is MessagesReceived for m in e.messages)
    if odd_one is None:
        (event,) = events
        assert event.messages[5] == UnknownMessage(type=0x8001, payload=bytes([5]) * 5)


# ---------------------------------------------------------------- batch types

ODD_RUN, EVEN_RUN = 0x8101, 0x8102  # types an app takes in runs (the node's batch_types)


def run_of(type_number, *payloads):
    return [type_number.to_bytes(2, "big") + payload for payload in payloads]


def test_a_batch_of_one_batch_type_is_one_run_of_its_bytes():
    for type_number in (ODD_RUN, EVEN_RUN):  # an even batch type is owned: it does not fail
        session = ready_session(batch_types={ODD_RUN, EVEN_RUN})
        batch = run_of(type_number, b"", b"a", b"bc" * 600)
        (event,) = session.receive_messages(batch, 1)
        assert event == RunReceived(type_number, batch)
        assert all(type(m) is bytes for m in event.messages)
        # the same from the message-by-message loop (a tuple skips the list's fast path)
        assert session.receive_messages(tuple(batch), 2) == [event]
        assert session.stats.messages_in == 1 + 2 * len(batch) and session.state is SessionState.ACTIVE


def test_runs_end_where_another_type_comes_and_keep_the_order():
    registry = DEFAULT_REGISTRY.copy()
    registry.register(Counter)
    session = ready_session(registry=registry, batch_types={ODD_RUN, EVEN_RUN})
    batch = [
        *run_of(ODD_RUN, b"1", b"2"),
        b"\x80\x01odd",  # an unknown odd type: an UnknownMessage
        *run_of(ODD_RUN, b"3"),
        *run_of(EVEN_RUN, b"4", b"5"),
        Counter(value=9).encode(),  # a decoded app message
        *run_of(EVEN_RUN, b"6"),
        Ping(num_pong_bytes=2).encode(),  # housekeeping: answered, no event
        *run_of(EVEN_RUN, b"7"),
        bytearray(run_of(EVEN_RUN, b"8")[0]),  # copied into bytes, still the same run
    ]
    events = session.receive_messages(batch, 1)
    assert events == [
        RunReceived(ODD_RUN, run_of(ODD_RUN, b"1", b"2")),
        MessagesReceived((UnknownMessage(type=0x8001, payload=b"odd"),)),
        RunReceived(ODD_RUN, run_of(ODD_RUN, b"3")),
        RunReceived(EVEN_RUN, run_of(EVEN_RUN, b"4", b"5")),
        MessagesReceived((Counter(value=9),)),
        RunReceived(EVEN_RUN, run_of(EVEN_RUN, b"6")),
        RunReceived(EVEN_RUN, run_of(EVEN_RUN, b"7", b"8")),
    ]
    assert all(type(m) is bytes for e in events if type(e) is RunReceived for m in e.messages)
    assert isinstance(sent(session)[0], Pong)
    assert session.stats.messages_in == 1 + len(batch)


def test_a_run_before_a_failure_is_delivered_and_nothing_after_it():
    session = ready_session(batch_types={ODD_RUN})
    batch = [*run_of(ODD_RUN, b"1", b"2"), b"\x80\x02unknown even", *run_of(ODD_RUN, b"3")]
    events = session.receive_messages(batch, 1)
    assert events[0] == RunReceived(ODD_RUN, run_of(ODD_RUN, b"1", b"2"))
    closed_with(events[1:], "unknown even message type 32770")
    assert session.receive_messages(run_of(ODD_RUN, b"4", b"5"), 2) == []


def test_batch_types_follow_the_shared_set_and_never_a_decoded_type():
    # The node changes the one set its sessions read (an app mounted or unmounted).
    batch_types: set[int] = set()
    registry = DEFAULT_REGISTRY.copy()
    registry.register(Counter)
    session = ready_session(registry=registry, batch_types=batch_types)
    batch = run_of(ODD_RUN, b"a", b"b")
    assert session.receive_messages(list(batch), 1) == [MessagesReceived(tuple(UnknownMessage(type=ODD_RUN, payload=m[2:]) for m in batch))]
    batch_types.add(ODD_RUN)
    assert session.receive_messages(list(batch), 2) == [RunReceived(ODD_RUN, batch)]
    # a type the registry decodes is decoded, whatever the set says
    batch_types.add(Counter.TYPE)
    (event,) = session.receive_messages([Counter(value=1).encode(), Counter(value=2).encode()], 3)
    assert event == MessagesReceived((Counter(value=1), Counter(value=2)))


def test_local_close_sends_error_when_asked():
    session = ready_session()
    closed_with(session.close("shutting down", send_error=True), "shutting down")
    (error,) = sent(session)
    assert error.data == b"shutting down"
    assert session.get_timer() is None


def test_a_read_of_the_init_alone_gives_what_the_batch_loop_gives():
    for batch in ([Init().encode()], (Init().encode(),), [Init().encode(), Ping(num_pong_bytes=2).encode()]):
        session = make_session()
        events = session.receive_messages(batch, 1.0)
        assert isinstance(events[0], PeerReady) and session.state is SessionState.ACTIVE
        assert session.stats.messages_in == len(batch)
    for batch in ([Ping(num_pong_bytes=2).encode()], [b"\x00"]):
        session = make_session()
        closed_with(session.receive_messages(batch, 1.0), "expected init")
        assert session.stats.messages_in == 1 and session.state is SessionState.CLOSED
