"""The BOLT-1 peer session: a sans-IO state machine.

A ``PeerSession`` starts once the BOLT-8 handshake is done. It takes
decrypted messages in (``receive_messages``) and gives events out; messages
to send pile up in ``outbox`` (plaintext, each one a whole message); timers
are pulled (``get_timer``) and fired (``handle_timer``). It owns no socket
and reads no clock: ``now`` (seconds, any monotonic origin) is always passed
in. The trio shell in :mod:`lnpmsg.node.peer` feeds it.

What it does, per BOLT 1:
- sends our ``init`` first, requires the peer's ``init`` as its first message
  (within ``INIT_TIMEOUT``), checks feature dependencies, unknown required
  features and common chains, then reports ``PeerReady``;
- answers ``ping`` with ``pong``, sends its own pings every
  ``ping_interval`` and fails the connection when a pong does not come back
  within ``PONG_TIMEOUT``;
- ``error`` with an all-zero channel id fails the connection; ``warning`` is
  reported and the connection stays;
- "it's OK to be odd": an unknown odd message is passed up as an
  ``UnknownMessage`` for the node to ignore (or hand to a raw-message
  listener), an unknown even one fails the connection;
- the types the node takes in runs (``batch_types``: an app's batch
  handler) are passed up undecoded, each run of one such type as one
  ``RunReceived`` with the messages' bytes: no object per message.

After a failure the session is CLOSED for good (a sticky state): it reports
one ``SessionClosed`` event and refuses further input and output.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat

from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    PING_MAX_PONG_BYTES,
    ZERO_CHANNEL_ID,
    Error,
    Features,
    Init,
    Message,
    MessageRegistry,
    Ping,
    Pong,
    WarningMessage,
    WireError,
    unknown_message,
    unknown_messages,
)
from lnpmsg.node.init_check import MAX_FEATURE_BITS, InitVerdicts, judge_init
from lnpmsg.wire.features import describe

__all__ = [
    "INIT_TIMEOUT",
    "MAX_FEATURE_BITS",
    "PING_INTERVAL",
    "PONG_TIMEOUT",
    "MessagesReceived",
    "PeerReady",
    "RunReceived",
    "PongReceived",
    "RemoteError",
    "RemoteWarning",
    "SessionClosed",
    "SessionEvent",
    "LocalProtocolError",
    "PeerSession",
    "SessionState",
]

#: the peer must send init this soon after the handshake (lnd and CLN use 15-60 s)
INIT_TIMEOUT = 30.0
#: how often we ping an idle-or-not peer to prove it is alive (lnd: 1 min)
PING_INTERVAL = 60.0
#: a ping not answered this long means the peer is gone or stuck
PONG_TIMEOUT = 30.0
#: the smallest allowed interval between our pings (a floor for configuration)
MIN_PING_INTERVAL = 0.05
#: a peer may send this many pings per ``PING_INTERVAL`` before it is flooding
MAX_PINGS_PER_INTERVAL = 20
_BOLT1_TYPES = frozenset({Init.TYPE, Error.TYPE, WarningMessage.TYPE, Ping.TYPE, Pong.TYPE})


class LocalProtocolError(Exception):
    """The session was used wrongly by our own code (e.g. sending after close)."""


class SessionState(enum.Enum):
    AWAITING_INIT = "awaiting_init"
    ACTIVE = "active"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class PeerReady:
    """The peer's init arrived and is acceptable: the session is ACTIVE."""

    init: Init
    features: Features


@dataclass(frozen=True, slots=True)
class MessagesReceived:
    """Messages that are not BOLT-1 housekeeping, for the node's apps, in arrival order.

    One event carries every such message that arrived in a row, so a read
    that decrypts hundreds of small messages costs one event, not hundreds.
    """

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class RunReceived:
    """Messages in a row of one type the node takes in runs (see ``batch_types``), undecoded.

    ``messages`` are their wire bytes, in arrival order, each the two type
    bytes then the payload. Only types nobody decodes can be batch types,
    so a run's messages need no checks beyond their type; a run ends where
    a message of another type comes (or the batch does).
    """

    type: int
    messages: list[bytes]


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A pong answered our ping after ``rtt`` seconds."""

    rtt: float


@dataclass(frozen=True, slots=True)
class RemoteWarning:
    """The peer sent a BOLT-1 ``warning``; the connection stays."""

    channel_id: bytes
    text: str


@dataclass(frozen=True, slots=True)
class RemoteError:
    """The peer sent a BOLT-1 ``error`` for a specific channel; the connection stays."""

    channel_id: bytes
    text: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session ended. ``by_peer`` is True when the peer's error caused it."""

    reason: str
    by_peer: bool = False


SessionEvent = PeerReady | MessagesReceived | RunReceived | PongReceived | RemoteWarning | RemoteError | SessionClosed


def _flush(run: list[Message], raw: list[bytes], events: list[SessionEvent]) -> None:
    """Close the open run into one event: decoded app messages or a batch type's bytes (one is empty)."""
    if run:
        events.append(MessagesReceived(tuple(run)))
        run.clear()
    elif raw:
        first = raw[0]
        events.append(RunReceived((first[0] << 8) | first[1], raw[:]))
        raw.clear()


def printable(data: bytes, limit: int = 300) -> str:
    """Peer-supplied text made safe for logs: decoded leniently, control chars escaped, bounded."""
    text = data[:limit].decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return text + ("..." if len(data) > limit else "")


@dataclass(slots=True)
class SessionStats:
    messages_in: int = 0
    messages_out: int = 0
    pings_in: int = 0


class PeerSession:
    """BOLT-1 session state for one peer (sans-IO).

    Args:
        local_init: the ``init`` we send.
        now: the current time, to start the init timer.
        known_features: feature bits this node understands (for the
            unknown-required check); defaults to the bits set in our init.
        registry: decodes message types; apps add theirs to it.
        chains: chain hashes we operate on; a peer whose ``networks`` shares
            none of them is refused. Empty means "do not check".
        ping_interval / pong_timeout / init_timeout: keepalive and deadline
            settings (seconds).
        local_init_bytes: ``local_init`` already encoded (a node that opens
            many sessions encodes it once).
        batch_types: types passed up undecoded, in runs (:class:`RunReceived`),
            also when even; none of them may be in ``registry``. A node passes
            one set to all its sessions and keeps it current.
        local_features: ``local_init``'s features (``all_features``), if the
            caller has them already (a node keeps them with its encoded init).
        init_verdicts: verdicts on peers' ``init`` payloads, shared by many
            sessions (see :mod:`lnpmsg.node.init_check`); used only while it
            was made for this session's very ``known_features`` and ``chains``
            objects (otherwise every check runs here).
    """

    # A node holds one session per peer, thousands of them: no per-instance dict.
    __slots__ = (
        "_expected_pong_len",
        "_init_deadline",
        "_next_ping_at",
        "_ping_sent_at",
        "_ping_window_start",
        "_pings_in_window",
        "batch_types",
        "chains",
        "close_reason",
        "init_verdicts",
        "known_features",
        "local_features",
        "local_init",
        "outbox",
        "ping_interval",
        "pong_timeout",
        "registry",
        "remote_features",
        "remote_init",
        "state",
        "stats",
    )

    def __init__(
        self,
        local_init: Init,
        now: float,
        *,
        known_features: Features | None = None,
        registry: MessageRegistry = DEFAULT_REGISTRY,
        chains: Iterable[bytes] = (),
        ping_interval: float = PING_INTERVAL,
        pong_timeout: float = PONG_TIMEOUT,
        init_timeout: float = INIT_TIMEOUT,
        local_init_bytes: bytes | None = None,
        batch_types: set[int] | frozenset[int] = frozenset(),
        local_features: Features | None = None,
        init_verdicts: InitVerdicts | None = None,
    ) -> None:
        self.state = SessionState.AWAITING_INIT
        self.init_verdicts = init_verdicts
        self.batch_types = batch_types
        self.registry = registry
        self.local_init = local_init
        self.local_features = local_init.all_features if local_features is None else local_features
        self.known_features = known_features if known_features is not None else self.local_features
        # a node passes one shared frozenset to all its sessions
        self.chains = chains if isinstance(chains, frozenset) else frozenset(chains)
        self.ping_interval = max(ping_interval, MIN_PING_INTERVAL)
        self.pong_timeout = pong_timeout
        self.remote_init: Init | None = None
        self.remote_features: Features | None = None
        self.close_reason: str | None = None
        self.stats = SessionStats()
        #: plaintext messages waiting to be encrypted and sent, in order. A list, not a
        #: deque: an idle peer's empty list costs 56 bytes, a deque's first block 600+.
        self.outbox: list[bytes] = list([local_init_bytes if local_init_bytes is not None else local_init.encode()])
        self._init_deadline: float | None = now + init_timeout
        self._next_ping_at = now + self.ping_interval
        self._ping_sent_at: float | None = None
        self._expected_pong_len = 0
        self._ping_window_start = now
        self._pings_in_window = 0

    # ----------------------------------------------------------------- input

    def receive_message(self, data: bytes, now: float) -> list[SessionEvent]:
        """Process one decrypted message from the peer; return the events it caused."""
        return self.receive_messages((data,), now)

    def receive_messages(self, messages: Iterable[bytes], now: float) -> list[SessionEvent]:
        """Process decrypted messages in arrival order; return the events they caused.

        Taking a batch (everything one read decrypted) keeps the per-message
        cost low on the hot path: consecutive app messages become one
        :class:`MessagesReceived`, consecutive messages of one batch type one
        :class:`RunReceived`. Processing stops at the first failure. A list
        passed in may become a ``RunReceived``'s ``messages`` as it is: the
        caller leaves it alone afterwards.
        """
        if type(messages) is list and len(messages) == 1 and self.state is SessionState.AWAITING_INIT:
            # The peer's init alone (a read of one message, as it mostly comes): what the
            # loop below makes of it, without the loop's set-up.
            return self._first_message(messages[0], now)
        if type(messages) is list and len(messages) > 1 and self.state is SessionState.ACTIVE:
            msg_type = self._one_undecoded_type(messages)
            if msg_type is not None:
                # What the loop below makes of them, built for the batch at once.
                self.stats.messages_in += len(messages)
                if msg_type in self.batch_types:
                    return [RunReceived(msg_type, messages)]
                return [MessagesReceived(tuple(unknown_messages(msg_type, messages)))]
        events: list[SessionEvent] = []
        run: list[Message] = []  # app messages since the last other event
        keep = run.append
        raw: list[bytes] = []  # or messages of one batch type (``raw_type``) since then
        raw_type = -1
        class_of = self.registry.class_lookup()
        batch_types = self.batch_types
        bolt1_types = _BOLT1_TYPES
        # Only the slow branches below change the state, so it is read again only after them.
        active = self.state is SessionState.ACTIVE
        count = 0
        for data in messages:
            if not active:
                if self.state is SessionState.CLOSED:
                    break
                events.extend(self._first_message(data, now))
                active = self.state is SessionState.ACTIVE
                continue
            count += 1
            if type(data) is not bytes:
                data = bytes(data)  # a payload must never alias the caller's buffer
            try:
                msg_type = (data[0] << 8) | data[1]
            except IndexError:
                _flush(run, raw, events)
                events.extend(self._fail("message shorter than its 2-byte type", now))
                break
            cls = class_of(msg_type)
            if cls is None:
                # The usual custom message: a type nobody here decodes.
                if msg_type in batch_types:
                    # Taken in runs, undecoded (even ones too: an app owns the type).
                    if raw_type != msg_type or run:
                        _flush(run, raw, events)
                        raw_type = msg_type
                    raw.append(data)
                    continue
                if not msg_type & 1:
                    _flush(run, raw, events)
                    events.extend(self._fail(f"unknown even message type {msg_type}", now))
                    break
                # Unknown odd messages still go up: the node ignores them unless an
                # app asked for raw messages (e.g. the control API's custom message events).
                if raw:
                    _flush(run, raw, events)
                keep(unknown_message(msg_type, data[2:]))
                continue
            if msg_type in bolt1_types:
                _flush(run, raw, events)
                events.extend(self._on_bolt1(msg_type, data, now))
                active = self.state is SessionState.ACTIVE
                continue
            if raw:
                _flush(run, raw, events)
            try:
                keep(cls._unpack(data, 2, len(data)))
            except WireError as exc:
                _flush(run, raw, events)
                events.extend(self._fail(f"malformed message of type {msg_type}: {exc}", now))
                break
        _flush(run, raw, events)
        self.stats.messages_in += count
        return events

    def _one_undecoded_type(self, messages: list[bytes]) -> int | None:
        """The type of a batch whose messages are all bytes of one type nobody decodes, odd or a batch type.

        Such a batch (a stream of custom messages) gives one ``RunReceived``
        (a batch type) or one ``UnknownMessage`` each, and nothing else;
        None when any message is otherwise (then the loop takes the batch
        message by message). The check is one C pass over the batch: the
        unbound ``bytes.startswith`` takes only bytes (anything else raises
        TypeError), and a message that starts with the two type bytes is at
        least two long.
        """
        first = messages[0]
        if type(first) is not bytes or len(first) < 2:
            return None
        msg_type = (first[0] << 8) | first[1]
        if not (msg_type & 1 or msg_type in self.batch_types) or self.registry.class_lookup()(msg_type) is not None:
            return None
        try:
            if not all(map(bytes.startswith, messages, repeat(first[:2]))):
                return None
        except TypeError:  # a bytearray, memoryview or other buffer: the loop copies each to bytes
            return None
        return msg_type

    def _first_message(self, data: bytes, now: float) -> list[SessionEvent]:
        self.stats.messages_in += 1
        msg_type = (data[0] << 8) | data[1] if len(data) >= 2 else None
        if msg_type != Init.TYPE:
            return self._fail(f"expected init as the first message, got type {msg_type}", now)
        return self._on_init(data, now)

    def _on_init(self, data: bytes, now: float) -> list[SessionEvent]:
        payload = data[2:]
        if type(payload) is not bytes:
            payload = bytes(payload)
        verdicts = self.init_verdicts
        if verdicts is not None and verdicts.known is self.known_features and verdicts.chains is self.chains:
            verdict = verdicts.judge(payload)
        else:
            verdict = judge_init(payload, self.known_features, self.chains)
        if type(verdict) is str:
            return self._fail(verdict, now)
        init, features = verdict
        self.remote_init = init
        self.remote_features = features
        self.state = SessionState.ACTIVE
        self._init_deadline = None
        return [PeerReady(init, features)]

    def _on_bolt1(self, msg_type: int, data: bytes, now: float) -> list[SessionEvent]:
        try:
            message = self.registry.decode(data)
        except WireError as exc:
            return self._fail(f"malformed message of type {msg_type}: {exc}", now)
        if isinstance(message, Ping):
            return self._on_ping(message, now)
        if isinstance(message, Pong):
            return self._on_pong(message, now)
        if isinstance(message, Error):
            text = printable(message.data)
            if message.channel_id == ZERO_CHANNEL_ID:
                return self._close(f"peer sent error: {text}", by_peer=True)
            return [RemoteError(message.channel_id, text)]
        if isinstance(message, WarningMessage):
            return [RemoteWarning(message.channel_id, printable(message.data))]
        # A second init: BOLT 1 allows only one.
        return self._fail("peer sent init twice", now)

    def _on_ping(self, ping: Ping, now: float) -> list[SessionEvent]:
        self.stats.pings_in += 1
        if now - self._ping_window_start >= self.ping_interval:
            self._ping_window_start = now
            self._pings_in_window = 0
        self._pings_in_window += 1
        if self._pings_in_window > MAX_PINGS_PER_INTERVAL:
            return self._fail(f"ping flood: more than {MAX_PINGS_PER_INTERVAL} pings in {self.ping_interval:g} s", now)
        if ping.num_pong_bytes <= PING_MAX_PONG_BYTES:
            self.outbox.append(Pong(ignored=bytes(ping.num_pong_bytes)).encode())
            self.stats.messages_out += 1
        return []

    def _on_pong(self, pong: Pong, now: float) -> list[SessionEvent]:
        if self._ping_sent_at is None:
            # Unsolicited pongs are harmless; some peers answer twice.
            return []
        if len(pong.ignored) != self._expected_pong_len:
            return self._fail(
                f"pong carries {len(pong.ignored)} bytes, our ping asked for {self._expected_pong_len}", now
            )
        rtt = now - self._ping_sent_at
        self._ping_sent_at = None
        return [PongReceived(rtt)]

    # ---------------------------------------------------------------- output

    def send(self, message: Message | bytes) -> None:
        """Queue a message (an encoded message, or a ``Message``) for the peer."""
        if self.state is SessionState.CLOSED:
            raise LocalProtocolError(f"session is closed: {self.close_reason}")
        data = message if isinstance(message, bytes | bytearray) else message.encode()
        self.outbox.append(bytes(data))
        self.stats.messages_out += 1

    def ping(self, now: float, num_pong_bytes: int = 0) -> bool:
        """Send a ping now unless one is already waiting for its pong. Returns whether one was sent."""
        if self.state is not SessionState.ACTIVE or self._ping_sent_at is not None:
            return False
        self.outbox.append(Ping(num_pong_bytes=num_pong_bytes).encode())
        self.stats.messages_out += 1
        self._ping_sent_at = now
        self._expected_pong_len = num_pong_bytes
        self._next_ping_at = now + self.ping_interval
        return True

    def send_warning(self, text: str, channel_id: bytes = ZERO_CHANNEL_ID) -> None:
        """Queue a BOLT-1 ``warning`` (the connection stays)."""
        self.send(WarningMessage(channel_id=channel_id, data=text.encode()))

    def close(self, reason: str, *, send_error: bool = False) -> list[SessionEvent]:
        """Close the session from our side; optionally tell the peer with an ``error``."""
        if self.state is SessionState.CLOSED:
            return []
        if send_error:
            self.outbox.append(Error(channel_id=ZERO_CHANNEL_ID, data=reason.encode()).encode())
        return self._close(reason)

    # ---------------------------------------------------------------- timers

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must run next (None: never)."""
        if self.state is SessionState.CLOSED:
            return None
        if self._init_deadline is not None:
            return self._init_deadline
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.pong_timeout
        return self._next_ping_at

    def handle_timer(self, now: float) -> list[SessionEvent]:
        """Fire whatever deadline has passed."""
        if self.state is SessionState.CLOSED:
            return []
        if self._init_deadline is not None:
            if now >= self._init_deadline:
                return self._fail("peer sent no init in time", now)
            return []
        if self._ping_sent_at is not None:
            if now >= self._ping_sent_at + self.pong_timeout:
                return self._fail(f"peer did not answer ping within {self.pong_timeout:g} s", now)
            return []
        if now >= self._next_ping_at:
            self.ping(now)
        return []

    # -------------------------------------------------------------- failures

    def _fail(self, reason: str, now: float) -> list[SessionEvent]:
        """The peer broke the protocol: tell it (a BOLT-1 ``warning``) and close.

        A ``warning``, not an ``error``: an ``error`` with the all-zero channel id
        asks the peer to fail every channel it has with us, which a malformed
        message on the connection does not call for (Core Lightning does the same).
        """
        del now
        self.outbox.append(WarningMessage(channel_id=ZERO_CHANNEL_ID, data=reason.encode()).encode())
        return self._close(reason)

    def _close(self, reason: str, *, by_peer: bool = False) -> list[SessionEvent]:
        self.state = SessionState.CLOSED
        self.close_reason = reason
        return [SessionClosed(reason, by_peer=by_peer)]

    @property
    def is_closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def describe_remote_features(self) -> list[str]:
        """Names of the peer's feature bits, for logs and JSON."""
        return describe(self.remote_features) if self.remote_features is not None else []

