"""The ZeroMQ transport's wire convention, sans-IO: what each ZeroMQ message means.

:mod:`lnpmsg.transports.zmq` moves these messages over ROUTER/DEALER
sockets; this module only builds and classifies them (bytes in, values out).

Wire convention
---------------
Each ZeroMQ message carries exactly one unit (ROUTER-side messages are
prefixed, as always, by the routing-id part that libzmq adds and strips):

=====================  ==================================================
parts                  meaning
=====================  ==================================================
``[frames]``           data: one or more *whole* frames given to
                       ``send_frames`` (BOLT-8 handshake acts or encrypted
                       messages), joined, never empty, at most
                       :data:`MAX_FRAME_SIZE` bytes in all
``[b""]``              close: the sender's session is over
``[b"", b"\\x01" + n]``  credit: the receiver may be sent ``n`` (u32 big
                       endian, >= 1) more data messages
``[b"", b"\\x02"]``     keepalive: proof of life, otherwise ignored
``[b"", b"\\xNN..."]``  other control kinds: ignored (room to grow)
anything else          protocol violation: the peer is dropped
=====================  ==================================================

No BOLT-8 frame is ever empty, so an empty first part can never be data.
Frame contents stay end-to-end encrypted and authenticated by the Noise layer
above, whatever ZeroMQ does with them; the transport only moves them.

Coalescing: ``send_frames`` packs consecutive frames into one data message
while they fit in :data:`MAX_FRAME_SIZE` (a frame is never split, and a
frame of the maximum size travels alone), because each ZeroMQ message costs
a round of libzmq and Python work whatever its size: a batch of 1 KiB
messages then costs one ZeroMQ message per ~60 of them. A node's writer
joins its frames that way itself as it encrypts them (the connection's
``max_joined_frames``, :meth:`~lnpmsg.noise.MessageEncryptor.encrypt_grouped_into`:
a batch of like messages is encrypted in place into a buffer the writer
reuses, since the send copies each item into its ZeroMQ message; other
batches are copied once), and ``coalesce`` finds them whole.
Message boundaries stay frame boundaries; the receiver hands a message's
bytes on as they are (BOLT-8 frames carry their own lengths). A receiver of the older one frame
per message convention reads these messages unchanged: a data message was
always "bytes of at most :data:`MAX_FRAME_SIZE`", so nothing is versioned.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lnpmsg.transports.base import TransportError

__all__ = [
    "CLOSE",
    "INITIAL_CREDIT",
    "KEEPALIVE",
    "MAX_FRAME_SIZE",
    "CloseMessage",
    "CreditMessage",
    "DataMessage",
    "KeepaliveMessage",
    "UnknownControl",
    "WireMessage",
    "ZmqProtocolError",
    "coalesce",
    "credit_message",
    "decode_message",
    "is_generated_routing_id",
]

#: the largest data message: one BOLT-8 frame of the maximum size (2-byte
#: length + 16-byte MAC, then 65535 bytes + 16-byte MAC), or smaller frames
#: coalesced up to the same size
MAX_FRAME_SIZE: Final = 65535 + 34
#: data messages either side may send before the first credit arrives
INITIAL_CREDIT: Final = 64
_CONTROL_CREDIT: Final = 0x01
_CONTROL_KEEPALIVE: Final = 0x02
_CREDIT = struct.Struct(">BI")


class ZmqProtocolError(TransportError):
    """A ZeroMQ message that breaks the wire convention (the peer is dropped)."""


@dataclass(frozen=True, slots=True)
class DataMessage:
    """One or more whole transport frames, joined."""

    frame: bytes


@dataclass(frozen=True, slots=True)
class CloseMessage:
    """The sender's session is over."""


@dataclass(frozen=True, slots=True)
class CreditMessage:
    """The receiver may be sent ``count`` more data messages."""

    count: int


@dataclass(frozen=True, slots=True)
class KeepaliveMessage:
    """Proof of life."""


@dataclass(frozen=True, slots=True)
class UnknownControl:
    """A control kind this version does not know (ignored)."""

    kind: int


WireMessage = DataMessage | CloseMessage | CreditMessage | KeepaliveMessage | UnknownControl

#: the parts of a close message
CLOSE: Final = (b"",)
#: the parts of a keepalive message
KEEPALIVE: Final = (b"", bytes([_CONTROL_KEEPALIVE]))


def credit_message(count: int) -> tuple[bytes, bytes]:
    """The parts of a credit message granting ``count`` (1 .. 2**32-1) data messages."""
    if not 1 <= count <= 0xFFFFFFFF:
        raise ValueError(f"credit {count} out of range")
    return (b"", _CREDIT.pack(_CONTROL_CREDIT, count))


def decode_message(parts: Sequence[bytes]) -> WireMessage:
    """Classify one received ZeroMQ message (routing id already removed).

    Raises :class:`ZmqProtocolError` for anything outside the convention,
    including data over :data:`MAX_FRAME_SIZE`.
    """
    if len(parts) == 1:
        frame = parts[0]
        if not frame:
            return CloseMessage()
        if len(frame) > MAX_FRAME_SIZE:
            raise ZmqProtocolError(f"message of {len(frame)} bytes exceeds {MAX_FRAME_SIZE}")
        return DataMessage(frame)
    if len(parts) == 2 and not parts[0]:
        control = parts[1]
        if not control:
            raise ZmqProtocolError("empty control part")
        kind = control[0]
        if kind == _CONTROL_CREDIT:
            if len(control) != _CREDIT.size:
                raise ZmqProtocolError(f"credit message of {len(control)} bytes")
            count = _CREDIT.unpack(control)[1]
            if count == 0:
                raise ZmqProtocolError("credit of zero")
            return CreditMessage(count)
        if kind == _CONTROL_KEEPALIVE:
            return KeepaliveMessage()
        return UnknownControl(kind)
    raise ZmqProtocolError(f"message of {len(parts)} parts breaks the convention")


def coalesce(frames: Sequence[bytes], limit: int = MAX_FRAME_SIZE) -> list[bytes]:
    """The data messages carrying ``frames``: consecutive whole frames joined up to ``limit`` bytes.

    Empty frames are skipped (they carry nothing, and an empty message means
    close). Raises :class:`TransportError` for a frame over ``limit``, before
    anything is sent.
    """
    messages: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for frame in frames:
        length = len(frame)
        if not length:
            continue
        if length > limit:
            raise TransportError(f"frame of {length} bytes exceeds {limit}")
        if size + length > limit:
            messages.append(group[0] if len(group) == 1 else b"".join(group))
            group = []
            size = 0
        group.append(frame)
        size += length
    if group:
        messages.append(group[0] if len(group) == 1 else b"".join(group))
    return messages


def is_generated_routing_id(routing_id: bytes) -> bool:
    """True for the shape of routing ids libzmq generates itself (0x00 + 4 bytes)."""
    return len(routing_id) == 5 and routing_id[0] == 0
