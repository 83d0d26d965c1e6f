"""The two ways the node opens and seals BOLT-8 length headers, for tests to run in both.

With libsodium (PyNaCl) batches of headers go through it and reads of a run
of like frames are decrypted in place; without it (no PyNaCl, or
``LNPMSG_NO_SODIUM=1``) every header goes through cryptography and every
read through the copying path. CI has libsodium, so tests that take the
``libsodium`` fixture (tests/conftest.py) run once as they are and once in
the fallback, made in-process by giving :mod:`lnpmsg.noise.length_headers`
the state that import leaves under ``LNPMSG_NO_SODIUM=1`` (that the two match
is checked in tests/test_length_headers.py). Run with ``LNPMSG_NO_SODIUM=1``,
only the fallback is there to run.
"""

from __future__ import annotations

from typing import Any, Final

import pytest

from lnpmsg.noise import length_headers

#: the module's names as its import leaves them without libsodium: every one
#: that reaches libsodium is None, so a stray use fails rather than works
NO_SODIUM_STATE: Final[dict[str, Any]] = {
    "AVAILABLE": False,
    "_ffi": None,
    "_seal": None,
    "_open": None,
    "_NULL": None,
    "_outputs": None,
}

#: the modes this process can run: with libsodium only when it is there
MODES: Final = [True, False] if length_headers.AVAILABLE else [False]


def without_libsodium(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put :mod:`lnpmsg.noise.length_headers` in its no-libsodium state until the test ends."""
    for name, value in NO_SODIUM_STATE.items():
        monkeypatch.setattr(length_headers, name, value)
