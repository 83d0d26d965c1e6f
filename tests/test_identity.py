"""Node identity: generated once, stored 0600, reused, or given explicitly."""

import os
import stat

import coincurve
import pytest

from lnpmsg.node.identity import (
    KEY_FILE_NAME,
    IdentityError,
    NodeKey,
    key_from_hex,
    load_key_file,
    load_or_create_key,
)


def test_first_start_creates_key_with_mode_0600_and_restart_reuses_it(tmp_path):
    data_dir = tmp_path / "node"
    key, created = load_or_create_key(data_dir)
    assert created
    path = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_key(data_dir)
    assert not created_again
    assert again == key
    assert key.node_id == coincurve.PrivateKey(key.secret).public_key.format()


def test_key_file_readable_by_others_is_refused(tmp_path):
    key, _ = load_or_create_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE_NAME, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_given_hex_key_and_key_file(tmp_path):
    key = key_from_hex("11" * 32)
    assert key.node_id.hex() == "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
    path = tmp_path / "k"
    path.write_text("11" * 32 + "\n")
    os.chmod(path, 0o600)
    assert load_key_file(path) == key


@pytest.mark.parametrize("text", ["", "zz" * 32, "11" * 31, "00" * 32, "ff" * 32])
def test_bad_keys_give_clear_errors(text):
    with pytest.raises(IdentityError):
        key_from_hex(text)


def test_repr_never_shows_the_secret():
    key = NodeKey.generate()
    assert key.secret.hex() not in repr(key)
