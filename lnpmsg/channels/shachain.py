"""Per-commitment secrets: generation from a seed, and their compact storage.

The sender derives secret ``I`` from one 32-byte seed by walking the 48 bits of
``I`` from the top, flipping a bit and hashing for each set bit. Secrets are
revealed from index ``2**48 - 1`` downwards, so the receiver keeps at most 49
of them: the secret whose index ends with ``b`` zero bits can derive every
later-revealed index sharing its prefix. Inserting a secret checks that it
derives every secret already held below its bucket, which catches a sender
whose secrets do not come from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass

from lnpmsg.bitcoin.hashes import sha256

from .errors import ShachainError

__all__ = [
    "FIRST_INDEX",
    "INDEX_BITS",
    "ShachainStore",
    "derive_secret",
    "per_commitment_secret",
]

#: Indices are 48 bits wide.
INDEX_BITS = 48
#: The first secret used is index 2**48 - 1; indices then count down.
FIRST_INDEX = (1 << INDEX_BITS) - 1
_SECRET_SIZE = 32
# One bucket per possible count of trailing zero bits (0..47), plus one for index 0.
_BUCKETS = INDEX_BITS + 1


def _check_index(index: int) -> None:
    if not isinstance(index, int) or not 0 <= index <= FIRST_INDEX:
        raise ShachainError(f"index {index!r} is not a 48-bit value")


def _check_secret(secret: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or len(secret) != _SECRET_SIZE:
        raise ShachainError(f"a per-commitment secret must be {_SECRET_SIZE} bytes")
    return bytes(secret)


def derive_secret(base: bytes, bits: int, index: int) -> bytes:
    """Secret ``index`` from ``base``, the secret of an index sharing ``index``'s bits from ``bits`` up."""
    value = bytearray(base)
    for bit in range(bits - 1, -1, -1):
        if (index >> bit) & 1:
            value[bit // 8] ^= 1 << (bit % 8)
            value = bytearray(sha256(bytes(value)))
    return bytes(value)


def per_commitment_secret(seed: bytes, index: int) -> bytes:
    """The ``index``-th per-commitment secret generated from ``seed`` (BOLT 3 ``generate_from_seed``)."""
    _check_index(index)
    return derive_secret(_check_secret(seed), INDEX_BITS, index)


def _trailing_zeros(index: int) -> int:
    if index == 0:
        return INDEX_BITS
    return (index & -index).bit_length() - 1


@dataclass(slots=True)
class _Entry:
    index: int
    secret: bytes


class ShachainStore:
    """Compact storage of received per-commitment secrets (at most 49 entries).

    Secrets must arrive in descending index order, each one the next below the
    last; a secret that does not derive the ones already stored is refused.
    """

    __slots__ = ("_known", "_next_index")

    def __init__(self) -> None:
        self._known: list[_Entry | None] = [None] * _BUCKETS
        self._next_index: int | None = None

    @property
    def next_index(self) -> int | None:
        """The index the next inserted secret must have (``None`` before the first)."""
        return self._next_index

    def insert(self, index: int, secret: bytes) -> None:
        """Store the secret for ``index``; raise ``ShachainError`` if it contradicts what is stored."""
        _check_index(index)
        secret = _check_secret(secret)
        if self._next_index is not None and index != self._next_index:
            raise ShachainError(f"expected the secret for index {self._next_index}, got {index}")
        self._put(index, secret)
        self._next_index = index - 1 if index > 0 else None

    def _put(self, index: int, secret: bytes) -> None:
        bucket = _trailing_zeros(index)
        for lower in range(bucket):
            entry = self._known[lower]
            if entry is not None and derive_secret(secret, bucket, entry.index) != entry.secret:
                raise ShachainError(f"the secret for index {index} does not derive the one for index {entry.index}")
        self._known[bucket] = _Entry(index, secret)

    def lookup(self, index: int) -> bytes:
        """The secret for ``index`` if it was revealed (directly or derivable), else ``ShachainError``."""
        _check_index(index)
        for bucket, entry in enumerate(self._known):
            if entry is None:
                continue
            mask = ~((1 << bucket) - 1)
            if index & mask == entry.index:
                return derive_secret(entry.secret, bucket, index)
        raise ShachainError(f"the secret for index {index} has not been received")

    def __len__(self) -> int:
        """How many entries are held (not how many secrets can be derived)."""
        return sum(entry is not None for entry in self._known)

    def entries(self) -> list[tuple[int, bytes]]:
        """The stored (index, secret) pairs, for persistence; feed them back with :meth:`restore`."""
        return [(entry.index, entry.secret) for entry in self._known if entry is not None]

    @classmethod
    def restore(cls, entries: list[tuple[int, bytes]]) -> ShachainStore:
        """Rebuild a store from :meth:`entries`, checking them as fresh insertions would."""
        store = cls()
        for index, _ in entries:
            _check_index(index)
        ordered = sorted(entries, key=lambda item: item[0], reverse=True)
        if len({_trailing_zeros(index) for index, _ in ordered}) != len(ordered):
            raise ShachainError("two stored secrets claim the same bucket")
        for index, secret in ordered:
            store._put(index, _check_secret(secret))
            store._next_index = index - 1 if index > 0 else None
        return store
