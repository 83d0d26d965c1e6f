"""The QUIC side of the UDP transport, without I/O: configuration and one core.

Everything that touches aioquic beyond its documented sans-IO API lives here,
in :class:`LnpQuicConnection`, so that an aioquic upgrade has one place to
check. The trio shell in :mod:`lnpmsg.transports.udp` only feeds datagrams in,
pulls datagrams and events out and asks the core a few questions.

Like every protocol core of lnpmsg, this module reads no clock and opens no
socket: times come in as ``now`` arguments.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass

from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.congestion.base import register_congestion_control
from aioquic.quic.congestion.reno import RenoCongestionControl
from aioquic.quic.connection import (
    END_STATES,
    NetworkAddress,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
    QuicConnectionState,
)
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketRecovery
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "ALPN",
    "CONGESTION_CONTROL",
    "CONNECTION_ID_LENGTH",
    "LOOPBACK_DATAGRAM_SIZE",
    "MAX_DATAGRAM_SIZE",
    "MAX_PTO_BACKOFF",
    "RECEIVE_WINDOW",
    "STREAM_ID",
    "DatagramHeader",
    "LnpQuicConnection",
    "UsedWindowReno",
    "classify_datagram",
    "client_configuration",
    "self_signed_certificate",
    "server_configuration",
]

#: the one application protocol spoken inside QUIC: the BOLT-8 byte stream
ALPN = "lnp/1"

#: the one bidirectional stream carrying the BOLT-8 handshake and frames; the
#: dialer opens it (client-initiated bidirectional streams are 0, 4, 8, ...)
STREAM_ID = 0

#: length of the connection ids we issue; the listener routes datagrams by them
CONNECTION_ID_LENGTH = 8

#: bytes of stream data a peer may send beyond what our application has read.
#: It bounds the memory one connection can make us hold on the receive side
#: (out-of-order data inside aioquic plus our unread buffer), and it is the
#: receive window: on loopback 1 MiB keeps the pipe full, and 256 peers cost at
#: most 256 MiB.
RECEIVE_WINDOW = 1 << 20

#: connection-wide flow control start value; only one stream exists, so the
#: stream window above is the real bound
MAX_DATA = 2 * RECEIVE_WINDOW

#: QUIC payload per datagram. 1200 bytes is the size every QUIC path must carry
#: (RFC 9000 section 14); aioquic has no path MTU discovery, so larger values
#: are only safe where the path is known (loopback, a LAN).
MAX_DATAGRAM_SIZE = SMALLEST_MAX_DATAGRAM_SIZE

#: QUIC payload per datagram between two endpoints of one host. The loopback
#: MTU is 64 KiB, and per-packet work dominates aioquic's cost, so big
#: datagrams move about five times more bytes per CPU second. aioquic writes
#: STREAM frame lengths as 2-byte varints, so a packet must stay below 16 KiB.
LOOPBACK_DATAGRAM_SIZE = 16384

#: probe timeouts in a row after which the probe timeout (PTO) stops doubling.
#: aioquic doubles it without end, sends one probe per expiry, and the peer
#: answers it with one ACK, so on a lossy path a run of n failed probes costs
#: 2**n PTOs: at 20 % loss each way (a probe or its ACK lost 36 % of the time), runs
#: of 8 or 9 stop a working connection for 10-20 s. Capped, a run costs time
#: linear in its length, and a path back from an outage is noticed within 16
#: PTOs; one datagram per 16 PTOs still cannot load any path, and the first
#: ACK after a long silence collapses the congestion window anyway (RFC 9002
#: section 7.6, persistent congestion).
MAX_PTO_BACKOFF = 4

#: the name the congestion controller below is registered under with aioquic
CONGESTION_CONTROL = "lnp-reno"

#: validity of the throw-away TLS certificate; peers never check it (node keys
#: authenticate them), but TLS wants a date range
_CERTIFICATE_LIFETIME = datetime.timedelta(days=3650)

_SUPPORTED_VERSIONS = (QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2)


def self_signed_certificate(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh P-256 key and a self-signed certificate for it, valid from ``now``.

    TLS inside QUIC wants a certificate; lnp/1 authenticates peers by their
    node keys in the BOLT-8 handshake instead, so nobody verifies this one.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lnp")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + _CERTIFICATE_LIFETIME)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def client_configuration(
    *,
    idle_timeout: float,
    receive_window: int = RECEIVE_WINDOW,
    max_datagram_size: int = MAX_DATAGRAM_SIZE,
) -> QuicConfiguration:
    """QUIC settings of a dialer: no certificate check (node keys authenticate), ALPN lnp/1."""
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        verify_mode=ssl.CERT_NONE,
        idle_timeout=idle_timeout,
        max_data=max(MAX_DATA, 2 * receive_window),
        max_stream_data=receive_window,
        max_datagram_size=max_datagram_size,
        connection_id_length=CONNECTION_ID_LENGTH,
        congestion_control_algorithm=CONGESTION_CONTROL,
    )


def server_configuration(
    *,
    certificate: x509.Certificate,
    private_key: ec.EllipticCurvePrivateKey,
    idle_timeout: float,
    receive_window: int = RECEIVE_WINDOW,
    max_datagram_size: int = MAX_DATAGRAM_SIZE,
) -> QuicConfiguration:
    """QUIC settings of a listener: the throw-away certificate, ALPN lnp/1 only."""
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        certificate=certificate,
        private_key=private_key,
        idle_timeout=idle_timeout,
        max_data=max(MAX_DATA, 2 * receive_window),
        max_stream_data=receive_window,
        max_datagram_size=max_datagram_size,
        connection_id_length=CONNECTION_ID_LENGTH,
        congestion_control_algorithm=CONGESTION_CONTROL,
    )


class UsedWindowReno(RenoCongestionControl):
    """aioquic's NewReno, except that the window grows only while the sender uses it.

    RFC 9002 section 7.8: a congestion window the sender does not fill
    (it is limited by the application or by flow control, not by pacing)
    should not grow. aioquic grows it on every acknowledgement regardless,
    and on a path without loss (loopback, a LAN) slow start never ends: a
    connection whose flight the send buffer and the peer's stream window
    hold at about 1 MiB ended 1.5 s runs with windows of 10-270 MB. Besides
    promising bursts the path never carried, such a window broke aioquic's
    pacer (see :class:`BurstPacer`).

    Here the window grows only while the largest demand seen so far (bytes
    in flight, plus the stream data pacing held back, which
    :class:`LnpQuicConnection` reports with :meth:`note_demand`) fills at
    least half of it: it ends at most about twice what the sender really
    had to send (as Linux TCP allows in slow start), and a loss halves a
    window the path has seen.
    """

    def __init__(self, *, max_datagram_size: int) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        #: the most bytes the sender had in flight, or ready to send, at once
        self.largest_demand = 0

    def note_demand(self, size: int) -> None:
        """Record that the sender had ``size`` bytes in flight or ready to send."""
        if size > self.largest_demand:
            self.largest_demand = size

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        super().on_packet_sent(packet=packet)
        if self.bytes_in_flight > self.largest_demand:
            self.largest_demand = self.bytes_in_flight

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        if 2 * self.largest_demand < self.congestion_window:
            self.bytes_in_flight -= packet.sent_bytes  # the window is not in use: it stays
            return
        super().on_packet_acked(now=now, packet=packet)


register_congestion_control(CONGESTION_CONTROL, UsedWindowReno)


class BurstPacer(QuicPacketPacer):
    """aioquic's pacer with its burst counted in datagrams even at high rates.

    aioquic spaces datagrams ``max_datagram_size / rate`` apart but never
    less than 1 µs, and lets a burst of up to 16 datagrams (a quarter of the
    window at most) leave at once, with the burst's time computed from the
    unclamped rate. Above ~16 GB/s (a 16 MB window over a 1 ms RTT) the
    clamped spacing and the unclamped burst disagree: the burst holds fewer
    than two datagrams, every further datagram waits for a pacing timer, and
    a sender that is slower than the pace anyway is woken once per datagram.
    Here the burst is that many datagrams at the spacing actually used.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window=congestion_window, smoothed_rtt=smoothed_rtt)
        assert self.packet_time is not None
        burst = max(2 * self._max_datagram_size, min(congestion_window // 4, 16 * self._max_datagram_size))
        self.bucket_max = max(self.bucket_max, burst / self._max_datagram_size * self.packet_time)


@dataclass(frozen=True, slots=True)
class DatagramHeader:
    """What a listener needs from a datagram's first QUIC header to route it."""

    #: the connection id the sender addressed
    destination_cid: bytes
    #: a client Initial of a version we speak, in a datagram padded to the
    #: 1200 bytes RFC 9000 section 14.1 requires: the only kind that may open
    #: a new connection
    opens_connection: bool
    #: the long header's version, source connection id and token (Initials only)
    version: int | None = None
    source_cid: bytes = b""
    token: bytes = b""


def classify_datagram(data: bytes, cid_length: int = CONNECTION_ID_LENGTH) -> DatagramHeader | None:
    """Parse the first QUIC header of ``data``; ``None`` if it is not QUIC at all.

    Never raises: datagrams come from anyone.
    """
    try:
        header = pull_quic_header(Buffer(data=data), host_cid_length=cid_length)
    except ValueError:  # aioquic's BufferReadError is a ValueError too
        return None
    opens = (
        header.packet_type == QuicPacketType.INITIAL
        and header.version in _SUPPORTED_VERSIONS
        and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE
        and len(header.destination_cid) >= 8  # RFC 9000 section 7.2: a client's first DCID has >= 8 bytes
    )
    return DatagramHeader(
        destination_cid=header.destination_cid,
        opens_connection=opens,
        version=header.version,
        source_cid=header.source_cid,
        token=header.token,
    )


class LnpQuicConnection(QuicConnection):
    """An aioquic ``QuicConnection`` narrowed to lnp/1: one stream, a bounded receive window.

    Differences from the stock core, and why:

    - The peer may open exactly the one bidirectional stream a dialer needs
      (the listener allows 1, the dialer 0, nobody unidirectional ones), so a
      peer cannot make us keep state for many streams.
    - The probe timeout stops doubling after :data:`MAX_PTO_BACKOFF`
      expiries in a row (see there), so a lossy path cannot stall the
      connection for longer than a bounded number of PTOs.
    - Received packets are acknowledged by the next datagrams the shell
      sends (its driver runs once per batch of datagrams read), not 1 ms
      (aioquic's ack delay) later: on a fast path a sender holding its
      send buffer's worth of unacknowledged data otherwise waits for that
      timer, and under load for the timer's late wake-up, before it may
      write again. ACK-only packets elicit nothing, so no ACK ping-pong.
    - Congestion control is :class:`UsedWindowReno` (its window grows only
      while used) when the configuration names :data:`CONGESTION_CONTROL`,
      and the pacer is :class:`BurstPacer` (bursts stay bursts at high
      rates).
    - Stream credit follows what the application has *read*
      (:meth:`consume`), not what arrived: stock aioquic doubles a window as
      soon as half of it is used, whether anybody reads or not, which lets a
      fast sender fill our memory without bound. Here the peer may be at most
      ``configuration.max_stream_data`` bytes ahead of our reader, so a reader that stops
      reading stops the sender (back-pressure through QUIC flow control).

    The few aioquic internals these need (stream limits, stream objects,
    connection state, the PTO count, the ack delay, the pacer, the pacing
    time) are read only here.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        # the configuration's stream window is the initial credit and the step
        self._lnp_window = configuration.max_stream_data
        self._lnp_consumed = 0
        # Acknowledge at the next send instead of 1 ms later (see the class docstring).
        self._ack_delay = 0.0
        self._loss._pacer = BurstPacer(max_datagram_size=self._max_datagram_size)
        peer_bidi_streams = 0 if configuration.is_client else 1
        for limit, value in ((self._local_max_streams_bidi, peer_bidi_streams), (self._local_max_streams_uni, 0)):
            limit.value = limit.sent = value

    # -- questions the I/O shell asks ------------------------------------------------

    @property
    def initial_accepted(self) -> bool:
        """True once a packet from the peer decrypted (an Initial was genuine)."""
        return self._state is not QuicConnectionState.FIRSTFLIGHT

    @property
    def close_reason(self) -> str:
        """Why the connection is closing, once it is (the peer's or our reason phrase)."""
        event = self._close_event
        if event is None:
            return ""
        return event.reason_phrase or f"QUIC error 0x{event.error_code:x}"

    @property
    def is_closing(self) -> bool:
        """True once the connection is closing, draining or gone: no more stream data either way."""
        return self._state in END_STATES

    def has_events(self) -> bool:
        """True if :meth:`next_event` has something to hand over."""
        return bool(self._events)

    def unacked_bytes(self) -> int:
        """Bytes written to the stream that the peer has not acknowledged yet (sent or not)."""
        stream = self._streams.get(STREAM_ID)
        if stream is None:
            return 0
        sender = stream.sender
        return sender._buffer_stop - sender._buffer_start

    def send_finished(self) -> bool:
        """True when everything we wrote, FIN included, was acknowledged (or the stream is gone)."""
        stream = self._streams.get(STREAM_ID)
        return stream is None or stream.sender.is_finished

    def open_stream(self) -> None:
        """Open the lnp/1 stream (dialer only) so that either side may send first on it."""
        self.send_stream_data(STREAM_ID, b"")

    def consume(self, count: int) -> bool:
        """Record that the application read ``count`` bytes of the stream.

        Returns True when that frees enough credit to be worth announcing now
        (the caller should then transmit).
        """
        self._lnp_consumed += count
        stream = self._streams.get(STREAM_ID)
        if stream is None:
            return False
        return self._lnp_credit_due(stream.max_stream_data_local)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, NetworkAddress]]:
        """aioquic's ``datagrams_to_send``; tells the congestion controller what pacing held back."""
        datagrams = super().datagrams_to_send(now)
        if self._pacing_at is not None:
            # Data that waits for the pacer, not for the application, uses the window too.
            cc = self._loss._cc
            stream = self._streams.get(STREAM_ID)
            if stream is not None and isinstance(cc, UsedWindowReno):
                sender = stream.sender
                unsent = min(sender._buffer_stop, stream.max_stream_data_remote) - sender.highest_offset
                cc.note_demand(cc.bytes_in_flight + max(0, unsent))
        return datagrams

    def handle_timer(self, now: float) -> None:
        """Run aioquic's timer handling, then cap the PTO backoff (see :data:`MAX_PTO_BACKOFF`)."""
        super().handle_timer(now)
        # Only an expiry raises the count, one at a time, so clamping here is enough.
        self._loss._pto_count = min(self._loss._pto_count, MAX_PTO_BACKOFF)

    # -- stream credit -----------------------------------------------------------

    def _lnp_credit_due(self, current: int) -> bool:
        # Announce credit in steps of half a window: often enough to keep the
        # sender busy, rarely enough that MAX_STREAM_DATA frames cost nothing.
        return self._lnp_consumed + self._lnp_window - current >= self._lnp_window // 2

    def _write_stream_limits(self, builder, space, stream) -> None:  # type: ignore[no-untyped-def]
        # Replaces aioquic's "double the window when half used" with credit
        # that follows consumption (see the class docstring).
        if not stream.max_stream_data_local:
            return  # a send-only stream: nothing to grant
        if stream.stream_id == STREAM_ID and self._lnp_credit_due(stream.max_stream_data_local):
            stream.max_stream_data_local = self._lnp_consumed + self._lnp_window
        if stream.max_stream_data_local_sent == stream.max_stream_data_local:
            return
        buf = builder.start_frame(
            QuicFrameType.MAX_STREAM_DATA,
            capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
            handler=self._on_max_stream_data_delivery,
            handler_args=(stream,),
        )
        buf.push_uint_var(stream.stream_id)
        buf.push_uint_var(stream.max_stream_data_local)
        stream.max_stream_data_local_sent = stream.max_stream_data_local


def _check_aioquic_internals() -> None:
    """Fail at import, not mid-connection, if aioquic moved what the class above relies on."""
    needed = ("_write_stream_limits", "_on_max_stream_data_delivery")
    missing = [name for name in needed if not hasattr(QuicConnection, name)]
    recovery = QuicPacketRecovery(
        congestion_control_algorithm="reno",
        initial_rtt=0.1,
        max_datagram_size=MAX_DATAGRAM_SIZE,
        peer_completed_address_validation=True,
        send_probe=lambda: None,
    )
    if not isinstance(getattr(recovery, "_pto_count", None), int):
        missing.append("QuicPacketRecovery._pto_count")
    if not isinstance(getattr(recovery, "_pacer", None), QuicPacketPacer):
        missing.append("QuicPacketRecovery._pacer")
    if not isinstance(getattr(QuicConnection(configuration=QuicConfiguration(is_client=True)), "_ack_delay", None), float):
        missing.append("QuicConnection._ack_delay")
    if missing:
        raise ImportError(f"aioquic lacks {', '.join(missing)}: lnpmsg's UDP transport needs aioquic 1.x")


_check_aioquic_internals()
