"""The BOLT-8 handshake (Noise_XK_secp256k1_ChaChaPoly_SHA256) as two sans-IO objects.

The initiator knows the responder's static key in advance; the responder
learns the initiator's at act three. Each side is a small state machine fed
with whole acts (the acts have fixed sizes, so the I/O shell reads exactly
``ACT_*_SIZE`` bytes) that returns the bytes to send back::

    initiator.act_one()              -> act 1 (50 bytes)  -> responder.receive_act_one
    initiator.receive_act_two(act2)  -> act 3 (66 bytes)  <- act 2 (50 bytes)
    responder.receive_act_three(act3) -> the initiator's static public key

Then both have ``.keys`` (``TransportKeys``) for ``lnpmsg.noise.cipher``.
Any error is a ``HandshakeError`` and leaves the object failed for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import coincurve
import coincurve.context
import coincurve.utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ._primitives import KEY_SIZE, MAC_SIZE, hkdf_pair, nonce_bytes
from .errors import HandshakeError

__all__ = [
    "ACT_ONE_SIZE",
    "ACT_THREE_SIZE",
    "ACT_TWO_SIZE",
    "HANDSHAKE_VERSION",
    "PUBLIC_KEY_SIZE",
    "InitiatorHandshake",
    "ResponderHandshake",
    "TransportKeys",
    "public_key_of",
]

#: The only handshake version BOLT 8 defines; any other byte aborts the handshake.
HANDSHAKE_VERSION: Final = 0
#: A compressed secp256k1 point.
PUBLIC_KEY_SIZE: Final = 33
#: version + ephemeral key + MAC of an empty payload.
ACT_ONE_SIZE: Final = 1 + PUBLIC_KEY_SIZE + MAC_SIZE
ACT_TWO_SIZE: Final = 1 + PUBLIC_KEY_SIZE + MAC_SIZE
#: version + encrypted static key with its MAC + MAC of an empty payload.
ACT_THREE_SIZE: Final = 1 + PUBLIC_KEY_SIZE + MAC_SIZE + MAC_SIZE

_PROTOCOL_NAME: Final = b"Noise_XK_secp256k1_ChaChaPoly_SHA256"
_PROLOGUE: Final = b"lightning"
# Both sides start from the same two constants: compute them once.
_INITIAL_CK: Final = hashlib.sha256(_PROTOCOL_NAME).digest()
_INITIAL_H: Final = hashlib.sha256(_INITIAL_CK + _PROLOGUE).digest()
_NONCE_ZERO: Final = nonce_bytes(0)
_NONCE_ONE: Final = nonce_bytes(1)
_DONE: Final = "done"


@dataclass(frozen=True, slots=True)
class TransportKeys:
    """The outcome of a handshake, from one side's point of view.

    ``send_key`` encrypts what this side sends, ``receive_key`` decrypts what
    it receives; both directions start from the same ``chaining_key`` for key
    rotation. ``remote_static`` is the peer's 33-byte static public key (its
    node id). Keys are kept out of ``repr`` so they never land in a log.
    """

    send_key: bytes = field(repr=False)
    receive_key: bytes = field(repr=False)
    chaining_key: bytes = field(repr=False)
    remote_static: bytes


def public_key_of(private_key: bytes) -> bytes:
    """The 33-byte compressed public key of a 32-byte secp256k1 private key.

    Raises ``HandshakeError`` if ``private_key`` is not a valid secret.
    """
    return _private_key(private_key, "private key").public


class _Secret:
    """A secp256k1 secret that does only what BOLT 8 needs of it.

    ``coincurve.PrivateKey`` derives two public keys when built (the full and
    the x-only one): two scalar multiplications a handshake never uses for the
    static key and only half uses for the ephemeral one. Here the public key
    is derived once, on demand, and cached for static keys, which cuts the
    curve work of a handshake from about seven multiplications to four.
    """

    __slots__ = ("_initial_hash", "_key", "_public", "secret")

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self._public: bytes | None = None
        self._initial_hash: bytes | None = None
        # coincurve's key for the ECDHs, made without its constructor (see above), once
        # for all of this secret's ECDHs (an ephemeral key's two, a static key's many).
        key = self._key = object.__new__(coincurve.PrivateKey)
        key.secret = secret
        key.context = coincurve.context.GLOBAL_CONTEXT

    @property
    def public(self) -> bytes:
        if self._public is None:
            self._public = coincurve.PublicKey.from_valid_secret(self.secret).format(compressed=True)
        return self._public

    @property
    def initial_hash(self) -> bytes:
        """The handshake hash every handshake starts from when this is the responder's
        static key (the prologue's hash mixed with it): the same for all of them, so a
        static key, which is cached, computes it once."""
        if self._initial_hash is None:
            self._initial_hash = hashlib.sha256(_INITIAL_H + self.public).digest()
        return self._initial_hash

    def ecdh(self, public_key: bytes, what: str = "public key") -> bytes:
        """SHA256 of the compressed shared point (libsecp256k1's default ECDH hash, as BOLT 8 wants).

        Parsing the point is part of the ECDH, so a point off the curve fails
        here (``HandshakeError`` naming ``what``) at no extra cost.
        """
        try:
            return self._key.ecdh(public_key)
        except ValueError as exc:
            raise HandshakeError(f"{what}: public key is not a point on secp256k1") from exc

#: static keys seen lately, with their public keys (a node uses one key for every handshake)
_STATIC_CACHE: dict[bytes, _Secret] = {}
_STATIC_CACHE_SIZE = 16


def _private_key(secret: bytes, what: str) -> _Secret:
    if len(secret) != KEY_SIZE:
        raise HandshakeError(f"{what}: expected {KEY_SIZE} bytes, got {len(secret)}")
    secret = bytes(secret)
    try:
        coincurve.utils.validate_secret(secret)
    except ValueError as exc:  # zero or not below the curve order
        raise HandshakeError(f"{what}: not a valid secp256k1 secret") from exc
    return _Secret(secret)


def _static_key(secret: bytes, what: str) -> _Secret:
    cached = _STATIC_CACHE.get(secret)
    if cached is None:
        cached = _private_key(secret, what)
        if len(_STATIC_CACHE) >= _STATIC_CACHE_SIZE:
            _STATIC_CACHE.pop(next(iter(_STATIC_CACHE)))
        _STATIC_CACHE[cached.secret] = cached
    return cached


def _check_public_key(raw: bytes, what: str) -> bytes:
    """A key known in advance: its form and that it is on the curve."""
    _check_compressed(raw, what)
    try:
        coincurve.PublicKey(raw)
    except ValueError as exc:
        raise HandshakeError(f"{what}: public key is not a point on secp256k1") from exc
    return raw


def _check_compressed(raw: bytes, what: str) -> bytes:
    """A key received in an act: its form only, as the ECDH that uses it next checks the point."""
    # Only the compressed form is legal here; coincurve alone would also take 65-byte encodings.
    if len(raw) != PUBLIC_KEY_SIZE or raw[0] not in (2, 3):
        raise HandshakeError(f"{what}: not a compressed secp256k1 public key")
    return raw


def _check_act(data: bytes, size: int, act: str) -> bytes:
    data = bytes(data)
    if len(data) != size:
        raise HandshakeError(f"act {act}: expected {size} bytes, got {len(data)}")
    if data[0] != HANDSHAKE_VERSION:
        raise HandshakeError(f"act {act}: unsupported handshake version {data[0]}")
    return data


class _SymmetricState:
    """Noise's chaining key ``ck``, handshake hash ``h`` and current temporary key."""

    __slots__ = ("_aead", "ck", "h", "temp_k")

    def __init__(self, initial_hash: bytes) -> None:
        """``initial_hash``: SHA256 of the prologue's hash and the responder's static key."""
        self.ck = _INITIAL_CK
        self.h = initial_hash
        self.temp_k = b""
        #: the cipher of ``temp_k``, made at its first use: act two's key also seals
        #: act three's static key, and a key set-up is worth saving once per handshake
        self._aead: ChaCha20Poly1305 | None = None

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, shared_secret: bytes) -> None:
        self.ck, self.temp_k = hkdf_pair(self.ck, shared_secret)
        self._aead = None

    def _cipher(self) -> ChaCha20Poly1305:
        aead = self._aead
        if aead is None:
            aead = self._aead = ChaCha20Poly1305(self.temp_k)
        return aead

    def encrypt_and_hash(self, nonce: bytes, plaintext: bytes) -> bytes:
        ciphertext = self._cipher().encrypt(nonce, plaintext, self.h)
        self.h = hashlib.sha256(self.h + ciphertext).digest()
        return ciphertext

    def decrypt_and_hash(self, nonce: bytes, ciphertext: bytes, failure: str) -> bytes:
        try:
            plaintext = self._cipher().decrypt(nonce, ciphertext, self.h)
        except InvalidTag:
            raise HandshakeError(failure) from None
        self.h = hashlib.sha256(self.h + ciphertext).digest()
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The initiator's (send, receive) keys, i.e. the responder's (receive, send)."""
        # The handshake's last cipher is done with: it holds ~2.3 KiB of OpenSSL state,
        # which would otherwise stay for as long as anything keeps the handshake.
        self._aead = None
        return hkdf_pair(self.ck, b"")


class _Handshake:
    """State and sticky failure shared by both roles."""

    __slots__ = ("_ephemeral", "_failure", "_keys", "_state", "_static", "_symmetric")

    def __init__(
        self,
        local_private_key: bytes,
        ephemeral_private_key: bytes | None,
        remote_static: bytes | None,
        first_state: str,
    ) -> None:
        self._static = _static_key(local_private_key, "local static key")
        self._ephemeral = _Secret(coincurve.utils.get_valid_secret()) if ephemeral_private_key is None else _private_key(ephemeral_private_key, "ephemeral key")
        # Both sides start by hashing the responder's static key (XK: the initiator knows it).
        if remote_static is None:
            initial_hash = self._static.initial_hash
        else:
            initial_hash = hashlib.sha256(_INITIAL_H + remote_static).digest()
        self._symmetric = _SymmetricState(initial_hash)
        self._state = first_state
        self._failure: HandshakeError | None = None
        self._keys: TransportKeys | None = None

    @property
    def is_complete(self) -> bool:
        """Whether the handshake finished and ``keys`` is available."""
        return self._keys is not None

    @property
    def keys(self) -> TransportKeys:
        """The transport keys; raises ``HandshakeError`` until the handshake is complete."""
        self._check_alive()
        if self._keys is None:
            raise HandshakeError(f"handshake not complete (waiting for {self._state})")
        return self._keys

    def _check_alive(self) -> None:
        if self._failure is not None:
            raise HandshakeError(f"handshake failed earlier: {self._failure}")

    def _step(self, expected: str, next_state: str, action: Callable[..., bytes], *args: bytes) -> bytes:
        """Run one act if it is the expected one; any error fails the handshake for good."""
        self._check_alive()
        if self._state != expected:
            waiting = "nothing (already complete)" if self._state == _DONE else self._state
            error = HandshakeError(f"{expected} called while waiting for {waiting}")
            self._failure = error
            raise error
        try:
            result = action(*args)
        except HandshakeError as exc:
            self._failure = exc
            raise
        except Exception as exc:  # the state is half-updated: never continue from it
            self._failure = HandshakeError(f"{expected} failed: {exc!r}")
            raise
        self._state = next_state
        return result

    def _ephemeral_public(self) -> bytes:
        return self._ephemeral.public

    def _static_public(self) -> bytes:
        return self._static.public


class InitiatorHandshake(_Handshake):
    """The side that dials: it must know the responder's static public key.

    ``ephemeral_private_key`` is for test vectors only; leave it ``None`` so a
    fresh random key is drawn, as BOLT 8 requires.
    """

    __slots__ = ("_remote_static",)

    def __init__(
        self,
        local_private_key: bytes,
        remote_public_key: bytes,
        ephemeral_private_key: bytes | None = None,
    ) -> None:
        remote = _check_public_key(bytes(remote_public_key), "remote static key")
        super().__init__(local_private_key, ephemeral_private_key, remote, "act_one")
        self._remote_static = remote

    def act_one(self) -> bytes:
        """Return act one (50 bytes) to send to the responder."""
        return self._step("act_one", "receive_act_two", self._make_act_one)

    def receive_act_two(self, data: bytes) -> bytes:
        """Check the responder's act two and return act three (66 bytes) to send.

        After this the handshake is complete and ``keys`` is available.
        """
        return self._step("receive_act_two", _DONE, self._on_act_two, data)

    def _make_act_one(self) -> bytes:
        sym = self._symmetric
        ephemeral = self._ephemeral_public()
        sym.mix_hash(ephemeral)
        sym.mix_key(self._ephemeral.ecdh(self._remote_static))
        tag = sym.encrypt_and_hash(_NONCE_ZERO, b"")
        return bytes((HANDSHAKE_VERSION,)) + ephemeral + tag

    def _on_act_two(self, data: bytes) -> bytes:
        act = _check_act(data, ACT_TWO_SIZE, "two")
        what = "act two: responder ephemeral key"
        remote_ephemeral = _check_compressed(act[1 : 1 + PUBLIC_KEY_SIZE], what)
        sym = self._symmetric
        sym.mix_hash(remote_ephemeral)
        sym.mix_key(self._ephemeral.ecdh(remote_ephemeral, what))
        sym.decrypt_and_hash(_NONCE_ZERO, act[1 + PUBLIC_KEY_SIZE :], "act two: bad MAC")

        # Act three: our static key travels encrypted under the act-two key.
        encrypted_static = sym.encrypt_and_hash(_NONCE_ONE, self._static_public())
        sym.mix_key(self._static.ecdh(remote_ephemeral))
        tag = sym.encrypt_and_hash(_NONCE_ZERO, b"")
        send_key, receive_key = sym.split()
        self._keys = TransportKeys(send_key, receive_key, sym.ck, self._remote_static)
        return bytes((HANDSHAKE_VERSION,)) + encrypted_static + tag


class ResponderHandshake(_Handshake):
    """The side that accepts: it learns who dialled only at act three.

    ``ephemeral_private_key`` is for test vectors only; leave it ``None``.
    """

    __slots__ = ()

    def __init__(self, local_private_key: bytes, ephemeral_private_key: bytes | None = None) -> None:
        super().__init__(local_private_key, ephemeral_private_key, None, "receive_act_one")

    def receive_act_one(self, data: bytes) -> bytes:
        """Check the initiator's act one and return act two (50 bytes) to send."""
        return self._step("receive_act_one", "receive_act_three", self._on_act_one, data)

    def receive_act_three(self, data: bytes) -> bytes:
        """Check act three and return the initiator's 33-byte static public key.

        After this the handshake is complete and ``keys`` is available.
        """
        return self._step("receive_act_three", _DONE, self._on_act_three, data)

    def _on_act_one(self, data: bytes) -> bytes:
        act = _check_act(data, ACT_ONE_SIZE, "one")
        what = "act one: initiator ephemeral key"
        remote_ephemeral = _check_compressed(act[1 : 1 + PUBLIC_KEY_SIZE], what)
        sym = self._symmetric
        sym.mix_hash(remote_ephemeral)
        sym.mix_key(self._static.ecdh(remote_ephemeral, what))
        sym.decrypt_and_hash(
            _NONCE_ZERO,
            act[1 + PUBLIC_KEY_SIZE :],
            "act one: bad MAC (the initiator does not know our static key)",
        )

        ephemeral = self._ephemeral_public()
        sym.mix_hash(ephemeral)
        sym.mix_key(self._ephemeral.ecdh(remote_ephemeral))
        tag = sym.encrypt_and_hash(_NONCE_ZERO, b"")
        return bytes((HANDSHAKE_VERSION,)) + ephemeral + tag

    def _on_act_three(self, data: bytes) -> bytes:
        act = _check_act(data, ACT_THREE_SIZE, "three")
        sym = self._symmetric
        remote_static = sym.decrypt_and_hash(
            _NONCE_ONE, act[1 : 1 + PUBLIC_KEY_SIZE + MAC_SIZE], "act three: bad MAC on the static key"
        )
        what = "act three: initiator static key"
        _check_compressed(remote_static, what)
        sym.mix_key(self._ephemeral.ecdh(remote_static, what))
        sym.decrypt_and_hash(_NONCE_ZERO, act[1 + PUBLIC_KEY_SIZE + MAC_SIZE :], "act three: bad MAC on the payload")
        receive_key, send_key = sym.split()
        self._keys = TransportKeys(send_key, receive_key, sym.ck, remote_static)
        return remote_static
