"""Sans-IO BOLT-8: the Noise_XK handshake and the transport cipher.

Nothing here does I/O or reads the clock: handshake objects take and return
act bytes, the cipher turns messages into frames and received bytes back
into messages. The shells in ``lnpmsg.node`` move the bytes.
"""

from .cipher import (
    FRAME_OVERHEAD,
    SCRATCH_MOST_FRAMES,
    KEY_ROTATION_INTERVAL,
    LENGTH_HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    FrameScratch,
    MessageDecryptor,
    MessageEncryptor,
)
from .errors import DecryptError, HandshakeError, MessageTooLarge, NoiseError
from .handshake import (
    ACT_ONE_SIZE,
    ACT_THREE_SIZE,
    ACT_TWO_SIZE,
    HANDSHAKE_VERSION,
    PUBLIC_KEY_SIZE,
    InitiatorHandshake,
    ResponderHandshake,
    TransportKeys,
    public_key_of,
)
from .transport_cipher import TransportCipher

__all__ = [
    "ACT_ONE_SIZE",
    "ACT_THREE_SIZE",
    "ACT_TWO_SIZE",
    "FRAME_OVERHEAD",
    "HANDSHAKE_VERSION",
    "KEY_ROTATION_INTERVAL",
    "LENGTH_HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SCRATCH_MOST_FRAMES",
    "DecryptError",
    "FrameScratch",
    "HandshakeError",
    "InitiatorHandshake",
    "MessageDecryptor",
    "MessageEncryptor",
    "MessageTooLarge",
    "NoiseError",
    "ResponderHandshake",
    "TransportCipher",
    "TransportKeys",
    "public_key_of",
]
