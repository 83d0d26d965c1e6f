"""BOLT 1 against the node under test: the init exchange, ping/pong, "it's
OK to be odd", unknown required features and error/warning messages,
scripted with lnprototest's events."""

from __future__ import annotations

from typing import Any

from lnprototest import Connect, Disconnect, ExpectDisconnect, ExpectMsg, Msg, RawMsg, bitfield

#: a scripted peer's init: no features
PLAIN_INIT = Msg("init", globalfeatures="", features="")


def test_init_exchange_then_ping_pong(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            # BOLT 1: the sending node MUST send init as the first message
            ExpectMsg("init"),
            PLAIN_INIT,
            # a receiving node of a ping with num_pong_bytes < 65532 MUST answer a pong of that length
            Msg("ping", num_pong_bytes=5, ignored="0000"),
            ExpectMsg("pong", ignored="0000000000"),
            Msg("ping", num_pong_bytes=0, ignored=""),
            ExpectMsg("pong", ignored=""),
        ]
    )


def test_a_ping_asking_65532_bytes_or_more_is_ignored(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            PLAIN_INIT,
            Msg("ping", num_pong_bytes=65532, ignored=""),
            Msg("ping", num_pong_bytes=65535, ignored=""),
            # the first pong to come answers this ping: the two above got none
            Msg("ping", num_pong_bytes=3, ignored=""),
            ExpectMsg("pong", ignored="000000"),
        ]
    )


def test_unknown_odd_messages_are_ignored(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            PLAIN_INIT,
            # an unknown odd type: MUST ignore it (type 0x270f, and one in the custom range)
            RawMsg(bytes.fromhex("270f") + b"payload"),
            RawMsg(bytes.fromhex("ffff")),
            Msg("ping", num_pong_bytes=1, ignored=""),
            ExpectMsg("pong", ignored="00"),
        ]
    )


def test_an_unknown_even_message_fails_the_connection(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            PLAIN_INIT,
            # an unknown even type: MUST close the connection
            RawMsg(bytes.fromhex("2710")),
            # lnpmsg says why in an error (all channels) first: the runner takes
            # error-then-close as the disconnection ExpectDisconnect waits for
            ExpectDisconnect(),
        ]
    )


def test_unknown_required_features_fail_the_connection(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            # feature 98 (even: required) means nothing to anyone: MUST fail the connection
            Msg("init", globalfeatures="", features=bitfield(98)),
            # lnpmsg tells why (a warning) and closes: the runner takes that as the disconnection
            ExpectDisconnect(),
        ]
    )


def test_unknown_optional_features_are_fine(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            Msg("init", globalfeatures=bitfield(99), features=bitfield(99)),
            Msg("ping", num_pong_bytes=2, ignored=""),
            ExpectMsg("pong", ignored="0000"),
        ]
    )


def test_errors_and_warnings_from_a_peer_leave_the_node_serving(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            PLAIN_INIT,
            # a warning about no channel in particular: logged, nothing to fail
            Msg("warning", channel_id="00" * 32, data=b"just so you know".hex()),
            Msg("ping", num_pong_bytes=1, ignored=""),
            ExpectMsg("pong", ignored="00"),
            # an error for every channel: there are none, the connection may go
            Msg("error", channel_id="00" * 32, data=b"go away".hex()),
            Disconnect(),
            # the node still takes new peers
            Connect(connprivkey="03"),
            ExpectMsg("init"),
            PLAIN_INIT,
            Msg("ping", num_pong_bytes=1, ignored=""),
            ExpectMsg("pong", ignored="00"),
        ]
    )


def test_two_peers_at_once(runner: Any) -> None:
    runner.run(
        [
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            PLAIN_INIT,
            Connect(connprivkey="03"),
            ExpectMsg("init"),
            PLAIN_INIT,
            Msg("ping", num_pong_bytes=4, ignored="", connprivkey="02"),
            Msg("ping", num_pong_bytes=6, ignored="", connprivkey="03"),
            ExpectMsg("pong", ignored="00" * 6, connprivkey="03"),
            ExpectMsg("pong", ignored="00" * 4, connprivkey="02"),
        ]
    )
