"""Signature checks of BOLT-7 gossip (sans-IO).

What is signed (double SHA-256, compact low-S ECDSA signatures):

- ``channel_announcement``: the message after its type and its four 64-byte
  signatures (offset 2 + 256), checked against ``node_id_1``, ``node_id_2``,
  ``bitcoin_key_1`` and ``bitcoin_key_2``;
- ``node_announcement`` and ``channel_update``: after the type and the one
  signature (offset 2 + 64); a node_announcement by its ``node_id``, a
  channel_update by ``node_id_1`` when ``channel_flags & 1 == 0``, else
  ``node_id_2`` (of the channel's announcement).

The digests are taken over the exact bytes received, so fields appended by
a later spec are covered too.

Checks run through coincurve's bundled libsecp256k1 (``ecdsa_verify`` on
the digest, the way ``PublicKey.verify(..., hasher=None)`` does, minus its
DER round trip): a verification is ~30 us, parsing a public key ~4 us, so
parsed node keys are cached (:class:`SignatureVerifier`). libsecp256k1
rejects high-S signatures, as BOLT 7's low-S rule wants. Calls into the
library release the GIL, so :meth:`SignatureVerifier.verify_many` can run
in worker threads next to the event loop.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]
from coincurve.context import GLOBAL_CONTEXT

from lnpmsg.gossip.messages import ChannelAnnouncement, ChannelUpdate, NodeAnnouncement

__all__ = [
    "CHANNEL_ANNOUNCEMENT_SIGNED_OFFSET",
    "DEFAULT_KEY_CACHE_SIZE",
    "SIGNED_OFFSET",
    "SigCheck",
    "SignatureVerifier",
    "channel_announcement_checks",
    "channel_announcement_digest",
    "channel_update_checks",
    "check_channel_announcement",
    "check_channel_update",
    "check_node_announcement",
    "double_sha256",
    "failure_reason",
    "node_announcement_checks",
    "signed_digest",
]

#: 2-byte type + four 64-byte signatures
CHANNEL_ANNOUNCEMENT_SIGNED_OFFSET = 2 + 4 * 64
#: 2-byte type + one 64-byte signature (node_announcement, channel_update)
SIGNED_OFFSET = 2 + 64
#: parsed public keys kept (node ids: the network has ~20k nodes; 64 bytes of
#: key data + dict entry each, so the bound is a few tens of MB at most)
DEFAULT_KEY_CACHE_SIZE = 200_000

_CTX = GLOBAL_CONTEXT.ctx
_sha256 = hashlib.sha256


def double_sha256(data: bytes) -> bytes:
    return _sha256(_sha256(data).digest()).digest()


def channel_announcement_digest(raw: bytes) -> bytes:
    """What the four signatures of a channel_announcement sign (``raw`` includes the type)."""
    return _sha256(_sha256(raw[CHANNEL_ANNOUNCEMENT_SIGNED_OFFSET:]).digest()).digest()


def signed_digest(raw: bytes) -> bytes:
    """What the signature of a node_announcement or channel_update signs (``raw`` includes the type)."""
    return _sha256(_sha256(raw[SIGNED_OFFSET:]).digest()).digest()


class SigCheck(NamedTuple):
    """One signature to check: ``label`` names it in a rejection ("node_signature_1 invalid")."""

    digest: bytes
    signature: bytes
    key: bytes
    label: str
    #: keep the parsed key (node ids recur; bitcoin keys are seen once)
    cache: bool = True


class SignatureVerifier:
    """Verifies compact signatures, caching parsed public keys of nodes.

    Thread-safe: :meth:`verify_many` may run in several threads at once.
    """

    def __init__(self, max_cached_keys: int = DEFAULT_KEY_CACHE_SIZE) -> None:
        self._keys: dict[bytes, Any] = {}
        #: ``cached_key(key)``: the parsed key if the cache holds it (only valid keys are
        #: kept), else None. The dict's own ``get`` (the cache is never replaced, only
        #: trimmed), so a hit in a per-signature loop costs no Python call.
        self.cached_key: Callable[[bytes], Any | None] = self._keys.get
        self._max = max_cached_keys
        self._lock = threading.Lock()
        #: signatures checked so far
        self.checked = 0

    def public_key(self, key: bytes, cache: bool = True) -> Any | None:
        """The parsed key (a libsecp256k1 ``secp256k1_pubkey *``), or None if ``key`` is not a valid point."""
        parsed = self._keys.get(key)
        if parsed is not None:
            return parsed
        parsed = ffi.new("secp256k1_pubkey *")
        if len(key) != 33 or not lib.secp256k1_ec_pubkey_parse(_CTX, parsed, key, 33):
            return None
        if cache:
            if len(self._keys) >= self._max:
                with self._lock:
                    # Drop the older half: cheap, and keys of active nodes come right back.
                    for old in list(self._keys)[: self._max // 2]:
                        self._keys.pop(old, None)
            self._keys[key] = parsed
        return parsed

    def verify(self, digest: bytes, signature: bytes, key: bytes, cache: bool = True) -> bool:
        """Is ``signature`` (64 bytes, r||s, low S) ``key``'s signature of the 32-byte ``digest``?"""
        return self.verify_many([SigCheck(digest, signature, key, "", cache)])[0]

    def verify_many(self, checks: Sequence[SigCheck]) -> list[bool]:
        """Check many signatures in one tight loop; one result per check."""
        sig = ffi.new("secp256k1_ecdsa_signature *")
        parse_sig = lib.secp256k1_ecdsa_signature_parse_compact
        verify = lib.secp256k1_ecdsa_verify
        keys = self._keys
        public_key = self.public_key
        results = []
        for digest, signature, key, _, cache in checks:
            parsed = keys.get(key)
            if parsed is None:
                parsed = public_key(key, cache)
            ok = (
                parsed is not None
                and len(signature) == 64
                and len(digest) == 32
                and parse_sig(_CTX, sig, signature) == 1
                and verify(_CTX, sig, digest, parsed) == 1
            )
            results.append(ok)
        self.checked += len(checks)
        return results

    def first_failure(self, checks: Sequence[SigCheck]) -> str | None:
        """Why the first bad signature among ``checks`` fails ("node_signature_1 invalid"), or None."""
        return failure_reason(checks, self.verify_many(checks))

    def __len__(self) -> int:
        return len(self._keys)


# ------------------------------------------------------------ per message


# The checks below are built as tuples of all five fields, ``_check(SigCheck, (...))``: the
# named tuple's constructor costs more, and a check is built per signature on the ingest path.
_check = tuple.__new__
if SigCheck._fields != ("digest", "signature", "key", "label", "cache"):
    raise ImportError("SigCheck's fields changed: update the positional builds in lnpmsg.gossip.verify")


def channel_announcement_checks(msg: ChannelAnnouncement, raw: bytes) -> list[SigCheck]:
    """The four checks of a channel_announcement (``raw``: its exact bytes, type included)."""
    digest = channel_announcement_digest(raw)
    return [
        _check(SigCheck, (digest, msg.node_signature_1, msg.node_id_1, "node_signature_1", True)),
        _check(SigCheck, (digest, msg.node_signature_2, msg.node_id_2, "node_signature_2", True)),
        _check(SigCheck, (digest, msg.bitcoin_signature_1, msg.bitcoin_key_1, "bitcoin_signature_1", False)),
        _check(SigCheck, (digest, msg.bitcoin_signature_2, msg.bitcoin_key_2, "bitcoin_signature_2", False)),
    ]  # type: ignore[list-item]


def node_announcement_checks(msg: NodeAnnouncement, raw: bytes) -> list[SigCheck]:
    return [_check(SigCheck, (signed_digest(raw), msg.signature, msg.node_id, "signature", True))]  # type: ignore[list-item]


_UPDATE_LABELS = ("signature (by node_id_1)", "signature (by node_id_2)")


def channel_update_checks(msg: ChannelUpdate, raw: bytes, node_id_1: bytes, node_id_2: bytes) -> list[SigCheck]:
    """The check of a channel_update, given the node ids of its channel's announcement."""
    digest = signed_digest(raw)
    if msg.channel_flags & 1:
        return [_check(SigCheck, (digest, msg.signature, node_id_2, _UPDATE_LABELS[1], True))]  # type: ignore[list-item]
    return [_check(SigCheck, (digest, msg.signature, node_id_1, _UPDATE_LABELS[0], True))]  # type: ignore[list-item]


def failure_reason(checks: Sequence[SigCheck], results: Sequence[bool]) -> str | None:
    """The rejection reason for the first failed check ("node_signature_1 invalid"), or None."""
    for check, ok in zip(checks, results, strict=True):
        if not ok:
            if len(check.key) != 33 or not lib.secp256k1_ec_pubkey_parse(_CTX, ffi.new("secp256k1_pubkey *"), check.key, 33):
                return f"{check.label} invalid (its key is not a valid public key)"
            return f"{check.label} invalid"
    return None


def check_channel_announcement(msg: ChannelAnnouncement, raw: bytes | None = None, verifier: SignatureVerifier | None = None) -> str | None:
    """None when all four signatures hold, else the reason ("node_signature_1 invalid")."""
    verifier = verifier or _default_verifier()
    return verifier.first_failure(channel_announcement_checks(msg, raw if raw is not None else msg.encode()))


def check_node_announcement(msg: NodeAnnouncement, raw: bytes | None = None, verifier: SignatureVerifier | None = None) -> str | None:
    verifier = verifier or _default_verifier()
    return verifier.first_failure(node_announcement_checks(msg, raw if raw is not None else msg.encode()))


def check_channel_update(
    msg: ChannelUpdate,
    node_id_1: bytes,
    node_id_2: bytes,
    raw: bytes | None = None,
    verifier: SignatureVerifier | None = None,
) -> str | None:
    verifier = verifier or _default_verifier()
    checks = channel_update_checks(msg, raw if raw is not None else msg.encode(), node_id_1, node_id_2)
    return verifier.first_failure(checks)


_DEFAULT: list[SignatureVerifier] = []


def _default_verifier() -> SignatureVerifier:
    if not _DEFAULT:
        _DEFAULT.append(SignatureVerifier())
    return _DEFAULT[0]
