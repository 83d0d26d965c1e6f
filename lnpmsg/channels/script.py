"""The BOLT-3 scripts: funding, to_local, to_remote (anchors), anchors, HTLCs.

Every witness script is written out below exactly as the spec prints it,
with the script builder of :mod:`lnpmsg.bitcoin.script`.
"""

from __future__ import annotations

from lnpmsg.bitcoin.hashes import hash160, ripemd160
from lnpmsg.bitcoin.script import (
    OP_2,
    OP_CHECKLOCKTIMEVERIFY,
    OP_CHECKMULTISIG,
    OP_CHECKSEQUENCEVERIFY,
    OP_CHECKSIG,
    OP_CHECKSIGVERIFY,
    OP_DROP,
    OP_DUP,
    OP_ELSE,
    OP_ENDIF,
    OP_EQUAL,
    OP_EQUALVERIFY,
    OP_HASH160,
    OP_IF,
    OP_IFDUP,
    OP_NOTIF,
    OP_SIZE,
    OP_SWAP,
    Num,
    script,
)
from lnpmsg.bitcoin.tx import LOCKTIME_THRESHOLD

from .errors import ChannelError
from .keys import check_pubkey

__all__ = [
    "ANCHOR_CSV_DELAY",
    "anchor_script",
    "funding_script",
    "offered_htlc_script",
    "received_htlc_script",
    "sort_pubkeys",
    "to_local_script",
    "to_remote_anchor_script",
]

#: Anchor outputs become spendable by anyone after this many blocks.
ANCHOR_CSV_DELAY = 16


def sort_pubkeys(pubkey_a: bytes, pubkey_b: bytes) -> tuple[bytes, bytes]:
    """The two keys, lexicographically lesser first (funding script order)."""
    check_pubkey(pubkey_a)
    check_pubkey(pubkey_b)
    return (pubkey_a, pubkey_b) if pubkey_a <= pubkey_b else (pubkey_b, pubkey_a)


def funding_script(pubkey_a: bytes, pubkey_b: bytes) -> bytes:
    """``2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG`` with the keys sorted."""
    first, second = sort_pubkeys(pubkey_a, pubkey_b)
    return script(OP_2, first, second, OP_2, OP_CHECKMULTISIG)


def to_local_script(revocation_pubkey: bytes, to_self_delay: int, local_delayed_pubkey: bytes) -> bytes:
    """The to_local (and HTLC-transaction output) script: revocation key now, or delayed key after CSV."""
    if not 0 <= to_self_delay <= 0xFFFF:
        raise ChannelError(f"to_self_delay {to_self_delay} is not a 16-bit block count")
    return script(
        OP_IF,
        check_pubkey(revocation_pubkey),
        OP_ELSE,
        Num(to_self_delay),
        OP_CHECKSEQUENCEVERIFY,
        OP_DROP,
        check_pubkey(local_delayed_pubkey),
        OP_ENDIF,
        OP_CHECKSIG,
    )


def to_remote_anchor_script(remote_pubkey: bytes) -> bytes:
    """``<remotepubkey> OP_CHECKSIGVERIFY 1 OP_CHECKSEQUENCEVERIFY`` (to_remote with option_anchors)."""
    return script(check_pubkey(remote_pubkey), OP_CHECKSIGVERIFY, Num(1), OP_CHECKSEQUENCEVERIFY)


def anchor_script(funding_pubkey: bytes) -> bytes:
    """An anchor: the funding key at any time, anyone after 16 blocks."""
    return script(
        check_pubkey(funding_pubkey),
        OP_CHECKSIG,
        OP_IFDUP,
        OP_NOTIF,
        Num(ANCHOR_CSV_DELAY),
        OP_CHECKSEQUENCEVERIFY,
        OP_ENDIF,
    )


def _payment_hash_lock(payment_hash: bytes) -> bytes:
    if len(payment_hash) != 32:
        raise ChannelError("a payment hash is 32 bytes")
    return ripemd160(payment_hash)


def _anchor_csv_tail(anchors: bool) -> tuple[int | bytes | Num, ...]:
    return (Num(1), OP_CHECKSEQUENCEVERIFY, OP_DROP) if anchors else ()


def offered_htlc_script(
    revocation_pubkey: bytes,
    local_htlc_pubkey: bytes,
    remote_htlc_pubkey: bytes,
    payment_hash: bytes,
    *,
    anchors: bool,
) -> bytes:
    """The output of an HTLC offered by the commitment's owner."""
    return script(
        OP_DUP, OP_HASH160, hash160(check_pubkey(revocation_pubkey)), OP_EQUAL,
        OP_IF,
        OP_CHECKSIG,
        OP_ELSE,
        check_pubkey(remote_htlc_pubkey), OP_SWAP, OP_SIZE, Num(32), OP_EQUAL,
        OP_NOTIF,
        OP_DROP, OP_2, OP_SWAP, check_pubkey(local_htlc_pubkey), OP_2, OP_CHECKMULTISIG,
        OP_ELSE,
        OP_HASH160, _payment_hash_lock(payment_hash), OP_EQUALVERIFY,
        OP_CHECKSIG,
        OP_ENDIF,
        *_anchor_csv_tail(anchors),
        OP_ENDIF,
    )  # fmt: skip


def received_htlc_script(
    revocation_pubkey: bytes,
    local_htlc_pubkey: bytes,
    remote_htlc_pubkey: bytes,
    payment_hash: bytes,
    cltv_expiry: int,
    *,
    anchors: bool,
) -> bytes:
    """The output of an HTLC received by the commitment's owner."""
    if not 0 <= cltv_expiry < LOCKTIME_THRESHOLD:
        raise ChannelError(f"cltv_expiry {cltv_expiry} is not a block height")
    return script(
        OP_DUP, OP_HASH160, hash160(check_pubkey(revocation_pubkey)), OP_EQUAL,
        OP_IF,
        OP_CHECKSIG,
        OP_ELSE,
        check_pubkey(remote_htlc_pubkey), OP_SWAP, OP_SIZE, Num(32), OP_EQUAL,
        OP_IF,
        OP_HASH160, _payment_hash_lock(payment_hash), OP_EQUALVERIFY,
        OP_2, OP_SWAP, check_pubkey(local_htlc_pubkey), OP_2, OP_CHECKMULTISIG,
        OP_ELSE,
        OP_DROP, Num(cltv_expiry), OP_CHECKLOCKTIMEVERIFY, OP_DROP,
        OP_CHECKSIG,
        OP_ENDIF,
        *_anchor_csv_tail(anchors),
        OP_ENDIF,
    )  # fmt: skip
