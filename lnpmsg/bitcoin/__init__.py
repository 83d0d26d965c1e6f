"""Bitcoin primitives shared by the chain layer, the wallet and the channels (sans-IO).

One transaction model and one of each helper, used by every layer above:

- :mod:`.tx`: ``OutPoint``, ``TxIn``, ``TxOut``, ``Tx`` (parse, serialize, txid, weight)
- :mod:`.block`: ``BlockHeader``, ``Block``, ``merkle_root``
- :mod:`.sighash`: BIP143 and legacy signature hashes, every sighash type
- :mod:`.ecdsa`: public key checks, signing (optionally low-R), verification, DER
- :mod:`.script`: opcodes, minimal pushes, ``script(...)``, standard output scripts
- :mod:`.hashes`: SHA-256, double SHA-256, RIPEMD-160, HASH160, display hex
- :mod:`.encoding`: CompactSize and a reader for untrusted bytes
- :mod:`.fees`: ``fee_for_weight``

Bad data raises ``BitcoinError`` and nothing else. Dependencies point one
way: ``chain``, ``wallet`` and ``channels`` import this package; it imports
none of them.
"""

from lnpmsg.bitcoin.block import Block, BlockHeader, merkle_root
from lnpmsg.bitcoin.ecdsa import (
    check_pubkey,
    compact_to_der,
    der_to_compact,
    sign_digest,
    verify_digest,
)
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.fees import fee_for_weight
from lnpmsg.bitcoin.hashes import hash160, hash_from_hex, hash_to_hex, sha256, sha256d
from lnpmsg.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_NONE,
    SIGHASH_SINGLE,
    legacy_sighash,
    segwit_v0_sighash,
)
from lnpmsg.bitcoin.tx import MAX_MONEY, SEQUENCE_FINAL, OutPoint, Tx, TxIn, TxOut

__all__ = [
    "MAX_MONEY",
    "SEQUENCE_FINAL",
    "SIGHASH_ALL",
    "SIGHASH_ANYONECANPAY",
    "SIGHASH_NONE",
    "SIGHASH_SINGLE",
    "BitcoinError",
    "Block",
    "BlockHeader",
    "OutPoint",
    "Tx",
    "TxIn",
    "TxOut",
    "check_pubkey",
    "compact_to_der",
    "der_to_compact",
    "fee_for_weight",
    "hash160",
    "hash_from_hex",
    "hash_to_hex",
    "legacy_sighash",
    "merkle_root",
    "segwit_v0_sighash",
    "sha256",
    "sha256d",
    "sign_digest",
    "verify_digest",
]
