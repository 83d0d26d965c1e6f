"""Both directions of an established BOLT-8 connection (:class:`TransportCipher`)."""

from __future__ import annotations

from .cipher import FRAME_OVERHEAD, MAX_FRAME_SIZE, MessageDecryptor, MessageEncryptor
from .handshake import TransportKeys

__all__ = ["TransportCipher"]


class TransportCipher:
    """Both directions of an established connection, built from the handshake's keys.

    The receiving direction is built when first asked for: a node sends its
    ``init`` on every connection it accepts, but a connection that hangs up
    right after the handshake (a probe, a flood of handshakes) never has
    anything to decrypt, and its ChaCha20-Poly1305 set-up is ~1.6 µs of it.
    """

    __slots__ = ("_decryptor", "_keys", "_max_buffer", "encryptor")

    def __init__(self, keys: TransportKeys, max_buffer: int = MAX_FRAME_SIZE) -> None:
        if max_buffer < FRAME_OVERHEAD:
            raise ValueError(f"max_buffer must be at least {FRAME_OVERHEAD} (an empty message's frame)")
        self.encryptor = MessageEncryptor(keys.send_key, keys.chaining_key)
        self._decryptor: MessageDecryptor | None = None
        #: what the decryptor is built from, until it is
        self._keys: TransportKeys | None = keys
        self._max_buffer = max_buffer

    @property
    def decryptor(self) -> MessageDecryptor:
        """The receiving direction (built at the first use)."""
        decryptor = self._decryptor
        if decryptor is None:
            keys = self._keys
            assert keys is not None
            decryptor = self._decryptor = MessageDecryptor(keys.receive_key, keys.chaining_key, self._max_buffer)
            self._keys = None  # the keys live on in the two directions only
        return decryptor
