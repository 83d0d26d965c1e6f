"""The UDP transport's QUIC core without I/O: congestion window and pacing, in simulated time."""

from __future__ import annotations

import datetime

from aioquic.quic.events import StreamDataReceived
from aioquic.quic.recovery import QuicPacketPacer

from lnpmsg.transports.udp_quic import (
    LOOPBACK_DATAGRAM_SIZE,
    STREAM_ID,
    BurstPacer,
    LnpQuicConnection,
    UsedWindowReno,
    classify_datagram,
    client_configuration,
    self_signed_certificate,
    server_configuration,
)

CLIENT_ADDR, SERVER_ADDR = ("127.0.0.1", 1), ("127.0.0.1", 2)


class Pair:
    """A dialer and a listener core wired back to back; ``hop`` seconds per direction."""

    def __init__(self, hop: float = 0.0005) -> None:
        certificate, key = self_signed_certificate(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        self.hop = hop
        self.now = 1000.0
        self.client = LnpQuicConnection(
            configuration=client_configuration(idle_timeout=60, max_datagram_size=LOOPBACK_DATAGRAM_SIZE)
        )
        self.client.connect(SERVER_ADDR, self.now)
        first = self.client.datagrams_to_send(self.now)
        header = classify_datagram(first[0][0])
        assert header is not None
        self.server = LnpQuicConnection(
            configuration=server_configuration(
                certificate=certificate, private_key=key, idle_timeout=60, max_datagram_size=LOOPBACK_DATAGRAM_SIZE
            ),
            original_destination_connection_id=header.destination_cid,
        )
        for data, _addr in first:
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        self.client.open_stream()
        self.received = 0
        for _ in range(10):
            self.round_trip()

    def round_trip(self) -> int:
        """Client to server, the server reads everything, server to client; datagrams the client sent."""
        self.now += self.hop
        sent = self.client.datagrams_to_send(self.now)
        for data, _addr in sent:
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        while (event := self.server.next_event()) is not None:
            if isinstance(event, StreamDataReceived):
                self.received += len(event.data)
                self.server.consume(len(event.data))
        self.now += self.hop
        for data, _addr in self.server.datagrams_to_send(self.now):
            self.client.receive_datagram(data, SERVER_ADDR, self.now)
        timer = self.client.get_timer()
        if timer is not None and timer <= self.now:
            self.client.handle_timer(self.now)
        return len(sent)


def test_the_congestion_window_stops_growing_when_the_sender_does_not_use_it() -> None:
    """A sender that keeps at most 256 KiB unacknowledged (the transport's send buffer
    limit does this) on a path without loss: aioquic's Reno would grow the window by
    every acknowledged byte for ever (slow start never ends without loss); RFC 9002
    section 7.8 says an unused window should not grow."""
    pair = Pair()
    cc = pair.client._loss._cc
    assert isinstance(cc, UsedWindowReno)
    limit = 256 * 1024
    chunk = bytes(64 * 1024)
    written = 0
    for _ in range(300):
        while pair.client.unacked_bytes() < limit:
            pair.client.send_stream_data(STREAM_ID, chunk)
            written += len(chunk)
        pair.round_trip()
    assert pair.received > 40 * limit  # the data flowed: ~60 MB with every window the test allows
    assert pair.received > written - 2 * limit
    # at most twice the largest demand, plus the growth of one round trip's acknowledgements
    assert cc.congestion_window <= 2 * (limit + len(chunk)) + limit + len(chunk)
    assert cc.largest_demand <= (limit + len(chunk)) * 1.01  # stream data plus packet headers


def test_a_sender_held_back_by_pacing_still_grows_its_window() -> None:
    """Data the pacer holds back counts as using the window: a sender with more to send
    than the pace allows must not be frozen at the initial window."""
    pair = Pair(hop=0.002)
    cc = pair.client._loss._cc
    assert isinstance(cc, UsedWindowReno)
    initial = cc.congestion_window
    chunk = bytes(128 * 1024)
    for _ in range(200):
        if pair.client.unacked_bytes() < 8 << 20:
            pair.client.send_stream_data(STREAM_ID, chunk)
        pair.round_trip()
    assert cc.congestion_window >= 4 * initial


def burst(pacer: QuicPacketPacer, now: float) -> int:
    """Datagrams the pacer lets leave at ``now`` after a long idle time, at most 100."""
    pacer.update_bucket(now)
    for count in range(100):
        if pacer.next_send_time(now) is not None:
            return count
        pacer.update_after_send(now)
    return 100


def test_the_pacer_keeps_its_burst_at_high_rates() -> None:
    """aioquic spaces datagrams at least 1 µs apart but computes the burst from the
    unclamped rate, so above ~16 GB/s its burst holds one datagram and every further
    one waits for a timer. The transport's pacer keeps 16 datagrams per burst."""
    size = LOOPBACK_DATAGRAM_SIZE
    for window in (2 << 20, 16 << 20, 256 << 20):
        pacer = BurstPacer(max_datagram_size=size)
        pacer.update_rate(congestion_window=window, smoothed_rtt=0.001)
        assert burst(pacer, 1.0) == 16, window
    stock = QuicPacketPacer(max_datagram_size=size)
    stock.update_rate(congestion_window=256 << 20, smoothed_rtt=0.001)
    assert burst(stock, 1.0) <= 2  # what the transport's pacer exists for
    # below the clamp both agree
    stock = QuicPacketPacer(max_datagram_size=size)
    stock.update_rate(congestion_window=2 << 20, smoothed_rtt=0.001)
    assert burst(stock, 1.0) == 16
