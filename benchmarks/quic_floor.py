"""The encrypted, reliable floor under the UDP transport: aioquic alone, between two processes.

What lnpmsg's UDP transport adds to a QUIC connection is a trio shell, BOLT-8
framing and encryption, and the node. So the fair limit for it is QUIC itself
doing what the transport asks of it, with nothing of lnpmsg in the data path:
the transport's own QUIC core (:class:`~lnpmsg.transports.udp_quic.LnpQuicConnection`,
aioquic's sans-IO ``QuicConnection`` with the transport's changes) driven by
a plain ``select`` loop on a UDP socket, one bidirectional stream, the
transport's loopback settings
(:data:`~lnpmsg.transports.udp_quic.LOOPBACK_DATAGRAM_SIZE` per datagram, a
:data:`~lnpmsg.transports.udp_quic.RECEIVE_WINDOW` stream window that moves
as the receiver reads, as the transport's does, at most
:data:`~lnpmsg.transports.udp.SEND_BUFFER_LIMIT` bytes unacknowledged on the
sending side, the same congestion control). The stock ``QuicConnection``
would double its stream window whenever half of it is used, so a floor
built on it would run with a window the transport never grants. Each datagram is encrypted (TLS 1.3 AEAD), acknowledged and
retransmitted if lost, under QUIC's congestion control: the costs any
encrypted, reliable, congestion-controlled transport over UDP must pay, as
aioquic pays them in pure Python.

The sender writes the stream in 64 KiB chunks for ``seconds`` then sends
FIN; the receiver counts stream bytes from the first to the last, and the
rate is given in messages of the measured size (bytes/s divided by it).
Plain raw UDP (no encryption, no acknowledgement, no order) stays in the
report as a second, lower-level reference.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.packet import pull_quic_header

from lnpmsg.transports.udp import SEND_BUFFER_LIMIT
from lnpmsg.transports.udp_quic import (
    LOOPBACK_DATAGRAM_SIZE,
    RECEIVE_WINDOW,
    STREAM_ID,
    LnpQuicConnection,
    client_configuration,
    server_configuration,
)

__all__ = ["open_receiver", "receive", "send"]

CID_LENGTH = 8
CHUNK = 64 * 1024
SOCKET_BUFFER = 4 << 20
IDLE_TIMEOUT = 30.0


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.setblocking(False)
    return sock


def _flush(conn: LnpQuicConnection, sock: socket.socket) -> None:
    for data, addr in conn.datagrams_to_send(time.monotonic()):
        while True:
            try:
                sock.sendto(data, addr)
                break
            except BlockingIOError:
                select.select([], [sock], [], 1.0)


def _wait_and_read(conn: LnpQuicConnection, sock: socket.socket) -> None:
    """Wait for datagrams or the connection's timer, and feed what came."""
    timer = conn.get_timer()
    timeout = 1.0 if timer is None else max(0.0, timer - time.monotonic())
    readable, _, _ = select.select([sock], [], [], timeout)
    if readable:
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            conn.receive_datagram(data, addr, time.monotonic())
    timer = conn.get_timer()
    if timer is not None and time.monotonic() >= timer:
        conn.handle_timer(time.monotonic())


def send(host: str, port: int, seconds: float, report: Any = None) -> None:
    """The sending side (a child process): connect, write for ``seconds``, FIN, wait for the acks.

    ``report`` (a pipe's end) gets (CPU seconds, bytes written) of the writing time."""
    sock = _socket()
    conn = LnpQuicConnection(
        configuration=client_configuration(
            idle_timeout=IDLE_TIMEOUT, receive_window=RECEIVE_WINDOW, max_datagram_size=LOOPBACK_DATAGRAM_SIZE
        )
    )
    conn.connect((host, port), time.monotonic())
    stream_id = STREAM_ID
    chunk = bytes(CHUNK)
    established = finished = False
    end = cpu = 0.0
    written = 0
    while True:
        while (event := conn.next_event()) is not None:
            if isinstance(event, events.HandshakeCompleted):
                established = True
                end = time.perf_counter() + seconds
                cpu = time.process_time()
                conn.open_stream()
            elif isinstance(event, events.ConnectionTerminated):
                return
        if established and not finished:
            if time.perf_counter() >= end:
                conn.send_stream_data(stream_id, b"", end_stream=True)
                finished = True
                if report is not None:
                    report.send((time.process_time() - cpu, written))
            else:
                # keep as much unacknowledged as the UDP transport allows itself
                while conn.unacked_bytes() < SEND_BUFFER_LIMIT:
                    conn.send_stream_data(stream_id, chunk)
                    written += len(chunk)
        _flush(conn, sock)
        _wait_and_read(conn, sock)


def open_receiver() -> tuple[socket.socket, str, int]:
    """A bound receiving socket and its address."""
    sock = _socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()[:2]
    return sock, host, port


def receive(
    sock: socket.socket,
    size: int,
    certificate: Any,
    private_key: Any,
    timeout: float = 60.0,
    cost: dict[str, float] | None = None,
) -> float:
    """Accept one connection on ``sock``, read its stream to FIN; messages/s of ``size`` bytes.

    ``cost`` gets ``cpu``, this process's CPU seconds from the first stream byte to the
    last, and ``bytes``, the stream bytes after the first chunk (what those seconds read)."""
    config = server_configuration(
        certificate=certificate,
        private_key=private_key,
        idle_timeout=IDLE_TIMEOUT,
        receive_window=RECEIVE_WINDOW,
        max_datagram_size=LOOPBACK_DATAGRAM_SIZE,
    )
    conn: LnpQuicConnection | None = None
    total = first_chunk = 0
    first = last = cpu_first = cpu_last = 0.0
    give_up = time.monotonic() + timeout
    while conn is None:
        if not select.select([sock], [], [], max(0.0, give_up - time.monotonic()))[0]:
            raise TimeoutError("no QUIC Initial arrived")
        data, addr = sock.recvfrom(65535)
        header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        conn = LnpQuicConnection(configuration=config, original_destination_connection_id=header.destination_cid)
        conn.receive_datagram(data, addr, time.monotonic())
    while time.monotonic() < give_up:
        while (event := conn.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                if event.data:
                    last = time.perf_counter()
                    cpu_last = time.process_time()
                    if not total:
                        first = last
                        cpu_first = cpu_last
                        first_chunk = len(event.data)
                    total += len(event.data)
                    conn.consume(len(event.data))  # read at once: credit follows, as in the transport
                if event.end_stream:
                    _flush(conn, sock)
                    if cost is not None and total > first_chunk:
                        cost.update(cpu=cpu_last - cpu_first, bytes=total - first_chunk)
                    return (total / size) / (last - first) if last > first else 0.0
        _flush(conn, sock)
        _wait_and_read(conn, sock)
    raise TimeoutError("the QUIC floor's sender did not finish")
