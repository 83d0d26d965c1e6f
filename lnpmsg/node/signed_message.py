"""Messages signed with the node key, as lnd (``signmessage``/``verifymessage``) and Core Lightning
(``signmessage``/``checkmessage``) sign them (sans-IO).

Not a BOLT, but what every implementation does (written up as a draft bLIP, "General-purpose
Lightning signatures"): the signature is a recoverable ECDSA signature (RFC 6979 nonce, low S) over
``sha256(sha256(b"Lightning Signed Message:" + message))``, the message's UTF-8 bytes; serialised
as 65 bytes, a header ``31 + recid`` then the compact ``r || s``, and shown in zbase32 (the
human-oriented base 32 of Zooko Wilcox-O'Hearn, MSB first, no padding). Checking recovers the
signer's key from the signature: a signature is "from" a node when the recovered key is its id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import coincurve

__all__ = ["MESSAGE_PREFIX", "SignedMessage", "message_digest", "recover_signer", "sign_message", "zbase32_decode", "zbase32_encode"]

#: what every signed message starts with, so that no such signature is also one of a protocol message
MESSAGE_PREFIX = b"Lightning Signed Message:"
#: the zbase32 alphabet, value 0 first
_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ZBASE32_VALUES = {c: i for i, c in enumerate(_ZBASE32)}
#: the header byte of a recoverable signature with recid 0 (27 + 4: "compressed key", the Bitcoin
#: Core message-signing convention lnd took over)
_HEADER_BASE = 31


def zbase32_encode(data: bytes) -> str:
    """``data`` in zbase32, 5 bits per character from the most significant, the last zero-padded."""
    bits = int.from_bytes(data, "big") if data else 0
    nbits = 8 * len(data)
    chars = -(-nbits // 5)
    bits <<= chars * 5 - nbits  # pad the last group with zeros on the right
    return "".join(_ZBASE32[(bits >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def zbase32_decode(text: str) -> bytes:
    """The bytes of zbase32 ``text`` (whole bytes only: the leftover bits must be zero); ValueError if not zbase32."""
    bits = 0
    for c in text:
        value = _ZBASE32_VALUES.get(c)
        if value is None:
            raise ValueError(f"not a zbase32 character: {c!r}")
        bits = (bits << 5) | value
    nbits = 5 * len(text)
    extra = nbits % 8
    if extra >= 5 or bits & ((1 << extra) - 1):  # a whole spare character, or padding that is not zero
        raise ValueError("zbase32 text of a whole number of bytes has no leftover character nor non-zero padding")
    return (bits >> extra).to_bytes(nbits // 8, "big")


def _message_bytes(message: str | bytes) -> bytes:
    return message.encode() if isinstance(message, str) else message


def message_digest(message: str | bytes) -> bytes:
    """What is signed: the double sha256 of the prefix and the message (text as UTF-8)."""
    return hashlib.sha256(hashlib.sha256(MESSAGE_PREFIX + _message_bytes(message)).digest()).digest()


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A signature as Core Lightning's ``signmessage`` shows it."""

    #: compact ``r || s`` (64 bytes)
    signature: bytes
    #: the recovery id, 0..3
    recid: int

    @property
    def zbase(self) -> str:
        """Header byte and signature in zbase32 (what lnd's ``signmessage`` prints, and ``checkmessage`` takes)."""
        return zbase32_encode(bytes([_HEADER_BASE + self.recid]) + self.signature)

    def to_dict(self) -> dict[str, str]:
        """The JSON-ready result: Core Lightning's fields (``recid`` as two hex digits, as there)."""
        return {"signature": self.signature.hex(), "recid": f"{self.recid:02x}", "zbase": self.zbase}


def sign_message(secret: bytes, message: str | bytes) -> SignedMessage:
    """``message`` signed by the 32-byte ``secret`` (deterministic: one key and message, one signature)."""
    # coincurve's recoverable form is r || s || recid
    raw = coincurve.PrivateKey(secret).sign_recoverable(message_digest(message), hasher=None)
    return SignedMessage(raw[:64], raw[64])


def recover_signer(message: str | bytes, zbase: str) -> bytes | None:
    """The node id (33-byte compressed key) whose key signed ``message`` as ``zbase``; None if no key fits.

    Any valid signature recovers *some* key: the caller compares it with the node id it expects
    (a tampered message or signature recovers another key, or none). ValueError when ``zbase`` is
    not a signature at all (not zbase32, not 65 bytes, a header other than 31..34).
    """
    raw = zbase32_decode(zbase.strip())
    if len(raw) != 65:
        raise ValueError(f"a signature is 65 bytes, this one {len(raw)}")
    recid = raw[0] - _HEADER_BASE
    if not 0 <= recid <= 3:
        # (27..30, the uncompressed-key headers, are never made by Lightning nodes: their ids are compressed keys)
        raise ValueError(f"the signature's header byte is {raw[0]}, not 31..34")
    try:
        key = coincurve.PublicKey.from_signature_and_message(raw[1:] + bytes([recid]), message_digest(message), hasher=None)
    except Exception:  # noqa: BLE001 - coincurve raises a plain Exception for a signature no key fits (r or s out of range)
        return None
    return key.format()
