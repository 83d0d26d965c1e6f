"""The node's secp256k1 identity key: generated once, kept in the data dir.

The key file holds the 32-byte secret as 64 hex characters and a newline, so
it can be read, backed up and given back with ``--node-key-file``. It is
created with mode 0600 atomically (no window where others could read it),
and an existing file readable by group or others is refused, like ssh does.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import coincurve

from lnpmsg._hex import parse_hex
from lnpmsg.node.full_disk import cannot
from lnpmsg.io.secret_file import create_secret_file

log = logging.getLogger(__name__)

__all__ = ["NodeKey", "IdentityError", "KeyNotWritten", "KEY_FILE_NAME", "load_or_create_key", "load_key_file", "key_from_hex", "secure_data_dir"]

KEY_FILE_NAME = "node_key"


class IdentityError(Exception):
    """The node key could not be read, parsed or created."""


class KeyNotWritten(IdentityError):
    """A new node key could not be written (a full disk, a read-only data dir): nothing was left behind."""


@dataclass(frozen=True, slots=True)
class NodeKey:
    """A node's private key and its 33-byte compressed public key (the node id)."""

    secret: bytes
    node_id: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> NodeKey:
        if len(secret) != 32:
            raise IdentityError(f"a node key is 32 bytes, got {len(secret)}")
        try:
            public = coincurve.PrivateKey(secret).public_key.format(compressed=True)
        except Exception as exc:  # coincurve raises ValueError/TypeError for out-of-range keys
            raise IdentityError(f"not a valid secp256k1 private key: {exc}") from exc
        return cls(secret, public)

    @classmethod
    def generate(cls) -> NodeKey:
        return cls.from_secret(coincurve.PrivateKey().secret)

    @property
    def node_id_hex(self) -> str:
        return self.node_id.hex()

    def __repr__(self) -> str:  # never print the secret
        return f"NodeKey(node_id={self.node_id.hex()})"


def key_from_hex(text: str) -> NodeKey:
    """Parse a node key given as 64 hex characters."""
    cleaned = text.strip().lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    try:
        secret = parse_hex(cleaned, "a node key", 32, quote=False)
    except ValueError as exc:
        raise IdentityError(str(exc)) from None
    return NodeKey.from_secret(secret)


def load_key_file(path: Path, *, check_permissions: bool = True) -> NodeKey:
    """Read a key file (64 hex characters, or the raw 32 bytes)."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read node key {path}: {exc.strerror or exc}") from exc
    if check_permissions and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(
            f"node key {path} is accessible by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run: chmod 600 {path}"
        )
    if len(data) == 32:
        return NodeKey.from_secret(data)
    try:
        return key_from_hex(data.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise IdentityError(f"node key {path} is neither 32 raw bytes nor 64 hex characters") from exc


def secure_data_dir(data_dir: Path) -> None:
    """Make an existing data directory private (0700): it holds the node key, wallet and
    channel state, and other users should not even list it. Logs what it changed, or a
    warning if it cannot (another owner)."""
    try:
        mode = stat.S_IMODE(data_dir.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(data_dir, mode & 0o700)
    except OSError as exc:
        log.warning("data directory %s is accessible by other users (mode %o) and cannot be tightened: %s", data_dir, mode, exc.strerror or exc)
        return
    log.warning("data directory %s was accessible by other users (mode %o): tightened to %o", data_dir, mode, mode & 0o700)


def load_or_create_key(data_dir: Path) -> tuple[NodeKey, bool]:
    """Load ``data_dir/node_key``, creating it (mode 0600) on first start.

    An existing ``data_dir`` open to other users is tightened to 0700 first.
    Returns the key and whether it was created now.
    """
    secure_data_dir(data_dir)
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return load_key_file(path), False
    key = NodeKey.generate()
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        create_secret_file(path, key.secret.hex().encode() + b"\n")
    except FileExistsError:  # another process created the key meanwhile: never overwrite a key
        return load_key_file(path), False
    except OSError as exc:
        raise KeyNotWritten(cannot("create the node key", path, exc)) from exc
    return key, True
