"""Wallet keys: a seed in the data dir, BIP32 derivation along BIP84
(native segwit P2WPKH): ``m/84'/coin'/0'/change/index``.

Keys and BIP32 come from embit: pure Python with libsecp256k1 through
ctypes (bundled), small, maintained, and it covers BIP32/39/84 and PSBT in
one package; wallycore would do too, but its Python bindings cannot call the
``witness_*_from_*`` helpers. Scripts, sighashes and signatures are
``lnpmsg.bitcoin``'s, the ones every other layer uses.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from embit import bip32, ec  # type: ignore[import-untyped]
from embit.networks import NETWORKS  # type: ignore[import-untyped]

from lnpmsg.bitcoin.script import p2wpkh
from lnpmsg.node.full_disk import cannot
from lnpmsg.io.secret_file import create_secret_file
from lnpmsg.wallet.errors import WalletError

__all__ = [
    "SEED_BYTES",
    "SEED_FILE",
    "Account",
    "DerivedKey",
    "load_or_create_seed",
]

SEED_FILE = "seed"
#: 256 bits of entropy as the BIP32 seed
SEED_BYTES = 32
#: seed file mode: owner read/write only (the seed is every coin of the wallet)
SEED_MODE = 0o600
_PURPOSE = 84
_HARDENED = 0x80000000
#: embit's network tables per bech32 prefix, and the BIP44 coin type
_NETWORKS = {"bc": ("main", 0), "tb": ("test", 1), "bcrt": ("regtest", 1)}


def load_or_create_seed(wallet_dir: Path, create: bool = True) -> bytes:
    """Read the seed from ``wallet_dir/seed``; create it (mode 0600) on first use."""
    try:
        return _load_or_create_seed(wallet_dir, create)
    except OSError as exc:
        raise WalletError(
            f"cannot use wallet dir {wallet_dir}: {exc}", code="io"
        ) from exc


def _load_or_create_seed(wallet_dir: Path, create: bool) -> bytes:
    path = wallet_dir / SEED_FILE
    if not path.exists():
        if not create:
            raise WalletError(f"no wallet seed at {path}", code="missing")
        seed = os.urandom(SEED_BYTES)
        try:
            wallet_dir.mkdir(parents=True, exist_ok=True)
            create_secret_file(path, seed)
        except FileExistsError:
            return _load_or_create_seed(wallet_dir, create=False)
        except OSError as exc:
            raise WalletError(cannot("create the wallet seed", path, exc), code="io") from exc
        return seed
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WalletError(
            f"wallet seed {path} is readable by others (mode {mode:04o}); run: chmod 600 {path}",
            code="permissions",
        )
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise WalletError(
            f"wallet seed {path} is damaged ({len(seed)} bytes, expected {SEED_BYTES})",
            code="corrupt",
        )
    return seed


@dataclass(frozen=True, slots=True)
class DerivedKey:
    """One wallet key: where it sits, its key pair and P2WPKH script."""

    change: int
    index: int
    privkey: ec.PrivateKey
    pubkey: bytes
    script_pubkey: bytes

    @property
    def path(self) -> str:
        if self.change == IMPORTED:
            return f"imported/{self.index}"
        return f"{self.change}/{self.index}"


#: the ``change`` of a key imported raw (``--dev-import-privkey``), outside the BIP84 tree
IMPORTED = -1


def imported_key(secret: bytes, position: int) -> DerivedKey:
    """A raw secp256k1 key the wallet watches and spends (P2WPKH), ``position``-th of those imported."""
    if len(secret) != 32:
        raise WalletError("an imported private key must be 32 bytes", code="invalid")
    try:
        privkey = ec.PrivateKey(bytes(secret))
    except Exception as exc:  # embit raises plain errors for out-of-range keys
        raise WalletError(f"not a valid private key: {exc}", code="invalid") from None
    pubkey = privkey.get_public_key().sec()
    return DerivedKey(IMPORTED, position, privkey, pubkey, p2wpkh(pubkey))


class Account:
    """The BIP84 account ``m/84'/coin'/0'`` of a seed on one network."""

    def __init__(self, seed: bytes, hrp: str = "bcrt") -> None:
        if hrp not in _NETWORKS:
            raise WalletError(f"unknown network {hrp!r}", code="invalid")
        name, coin = _NETWORKS[hrp]
        self.hrp = hrp
        self.network = NETWORKS[name]
        root = bip32.HDKey.from_seed(seed, version=self.network["xprv"])
        self._account = root.derive([_PURPOSE + _HARDENED, coin + _HARDENED, _HARDENED])
        self._chains = [self._account.child(0), self._account.child(1)]

    @property
    def xpub(self) -> str:
        """The account's extended public key (watch-only export)."""
        return str(self._account.to_public().to_base58())

    def derive(self, change: int, index: int) -> DerivedKey:
        """Key ``change/index`` (change 0: receive, 1: change)."""
        if change not in (0, 1) or not 0 <= index < _HARDENED:
            raise WalletError(f"no such key {change}/{index}", code="invalid")
        child = self._chains[change].child(index)
        pubkey = child.get_public_key().sec()
        return DerivedKey(change, index, child.key, pubkey, p2wpkh(pubkey))
