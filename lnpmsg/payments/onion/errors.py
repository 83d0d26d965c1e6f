"""What can go wrong with an onion, and the reply each case calls for.

- :class:`MalformedOnionError`: the onion could not be authenticated (bad
  version, unparsable ephemeral key, bad HMAC, bad blinding). No shared secret
  exists to encrypt a reply with, so the hop answers ``update_fail_malformed_htlc``
  with :attr:`~MalformedOnionError.failure_code` and
  :attr:`~MalformedOnionError.sha256_of_onion`.
- :class:`OnionPayloadError`: the onion was authentic but its payload for
  this hop is unusable; the hop answers ``update_fail_htlc`` with a failure
  onion made from :attr:`~OnionPayloadError.shared_secret` and
  :attr:`~OnionPayloadError.failure`.
- :class:`FailureOnionError`: the origin node cannot read a returned failure
  onion (no hop's HMAC matches, or it is too short).
- :class:`OnionConstructionError`: the caller asked for an onion that cannot
  be built (too many or too large payloads, bad keys).
"""

from __future__ import annotations

from lnpmsg.payments.onion.failures import (
    Failure,
    InvalidOnionBlinding,
    InvalidOnionHmac,
    InvalidOnionKey,
    InvalidOnionVersion,
)

__all__ = [
    "FailureOnionError",
    "MalformedOnionError",
    "OnionConstructionError",
    "OnionError",
    "OnionPayloadError",
]

_BAD_ONION_FAILURES = {cls.TYPE: cls for cls in (InvalidOnionVersion, InvalidOnionHmac, InvalidOnionKey, InvalidOnionBlinding)}


class OnionError(ValueError):
    """Base of every onion error."""


class OnionConstructionError(OnionError):
    """The onion asked for cannot be built."""


class MalformedOnionError(OnionError):
    """An onion that cannot be authenticated: reply with ``update_fail_malformed_htlc``."""

    def __init__(self, failure_code: int, sha256_of_onion: bytes, reason: str) -> None:
        if failure_code not in _BAD_ONION_FAILURES:
            raise ValueError(f"not a BADONION failure code: {failure_code:#06x}")
        super().__init__(f"{_BAD_ONION_FAILURES[failure_code].NAME}: {reason}")
        #: the BADONION code for ``update_fail_malformed_htlc.failure_code``
        self.failure_code = failure_code
        #: SHA256 of the onion as received, for ``update_fail_malformed_htlc.sha256_of_onion``
        self.sha256_of_onion = sha256_of_onion
        self.reason = reason

    @property
    def failure(self) -> Failure:
        """The same failure as a message (what the upstream hop turns it into for its failure onion)."""
        return _BAD_ONION_FAILURES[self.failure_code](sha256_of_onion=self.sha256_of_onion)  # type: ignore[no-any-return]


class OnionPayloadError(OnionError):
    """An authentic onion whose payload for this hop is unusable: reply with ``update_fail_htlc``."""

    def __init__(self, shared_secret: bytes, failure: Failure, reason: str) -> None:
        super().__init__(f"{failure.NAME}: {reason}")
        #: this hop's shared secret, to create the failure onion with
        self.shared_secret = shared_secret
        #: the failure to send back (``invalid_onion_payload`` with the offending type and offset)
        self.failure = failure
        self.reason = reason


class FailureOnionError(OnionError):
    """A returned failure onion the origin node cannot attribute to any hop."""

