"""BOLT-8 length headers sealed and opened in batches through libsodium (lnpmsg.noise.length_headers)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lnpmsg.noise import FRAME_OVERHEAD, DecryptError, FrameScratch, MessageDecryptor, MessageEncryptor, length_headers
from lnpmsg.noise._primitives import nonce_bytes

KEY = bytes(range(32))
CHAINING_KEY = bytes(range(32, 64))
NONCES = [nonce_bytes(counter) for counter in range(0, 1000, 2)]


def test_libsodium_is_there() -> None:
    # PyNaCl is a dependency: without this the cipher falls back silently (and slower).
    assert length_headers.AVAILABLE


def test_the_switch_in_the_environment_turns_it_off() -> None:
    code = "from lnpmsg.noise import length_headers, FrameScratch; print(length_headers.AVAILABLE)"
    env = {**os.environ, "LNPMSG_NO_SODIUM": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "False"


def test_sealed_headers_are_cryptographys_bytes_in_place() -> None:
    # Every header of a layout, from any start, is the RFC 8439 encryption of the length:
    # byte for byte what cryptography gives, in its place, and nothing else is touched.
    aead = ChaCha20Poly1305(KEY)
    frame = 100 + FRAME_OVERHEAD
    scratch = FrameScratch()
    scratch.layout(frame, 300)
    targets = scratch.head_targets
    assert targets is not None
    buffer = scratch.view.obj
    assert isinstance(buffer, bytearray)
    buffer[:] = b"\xee" * len(buffer)
    length = (100).to_bytes(2, "big")
    length_headers.seal_headers(KEY, NONCES[7:207], length, targets, 40)
    for index in range(300):
        head = bytes(buffer[index * frame : index * frame + 18])
        expected = aead.encrypt(NONCES[index - 33], length, None) if 40 <= index < 240 else b"\xee" * 18
        assert head == expected, index
        assert bytes(buffer[index * frame + 18 : (index + 1) * frame]) == b"\xee" * (frame - 18)


def _headers(count: int, length: int = 1022) -> list[bytes]:
    aead = ChaCha20Poly1305(KEY)
    return [aead.encrypt(nonce, length.to_bytes(2, "big"), None) for nonce in NONCES[:count]]


def test_open_counts_the_good_headers_from_the_first() -> None:
    expected = (1022).to_bytes(2, "big")
    for count in (1, 2, 61, 64, 65, 300, 500):  # past the first buffer's 64: it grows
        headers = _headers(count)
        assert length_headers.open_headers(KEY, NONCES[:count], headers, expected) == count
    rng = random.Random(8)
    for _ in range(40):
        count = rng.randint(1, 200)
        headers = _headers(count)
        bad = rng.randrange(count)
        kind = rng.choice(("mac", "ciphertext", "length", "nonce"))
        if kind == "mac":
            headers[bad] = headers[bad][:-1] + bytes([headers[bad][-1] ^ 1])
        elif kind == "ciphertext":
            headers[bad] = bytes([headers[bad][0] ^ 0x80]) + headers[bad][1:]
        elif kind == "length":  # authentic, but another size
            headers[bad] = _headers(bad + 1, 1021)[bad]
        else:  # authentic under another nonce: out of place
            headers[bad] = headers[(bad + 1) % count] if count > 1 else _headers(2)[1]
        # whatever comes after the bad one (good or bad), the count stops there
        if bad + 1 < count and rng.random() < 0.5:
            headers[bad + 1] = b"\x00" * 18
        assert length_headers.open_headers(KEY, NONCES[:count], headers, expected) == bad, kind


def test_each_thread_opens_into_its_own_buffer() -> None:
    # libsodium runs without the GIL: threads opening at once must not share outputs.
    expected = (1022).to_bytes(2, "big")
    good = _headers(200)
    other = _headers(200, 7)
    results: list[bool] = []

    def work(headers: list[bytes], want: bytes) -> None:
        results.append(all(length_headers.open_headers(KEY, NONCES[:200], headers, want) == 200 for _ in range(300)))

    threads = [threading.Thread(target=work, args=(good, expected)), threading.Thread(target=work, args=(other, (7).to_bytes(2, "big")))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True, True]


@pytest.mark.parametrize("sodium", [True, False], ids=["libsodium headers", "cryptography headers"])
def test_the_cipher_gives_the_same_frames_either_way(sodium: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A writer's batches of like messages and a reader's large chunks, with a frame
    # tampered in the middle of a run: the same frames, and the same error after the
    # same authentic messages, with or without libsodium.
    monkeypatch.setattr(length_headers, "AVAILABLE", sodium)
    reference = MessageEncryptor(KEY, CHAINING_KEY)
    encryptor = MessageEncryptor(KEY, CHAINING_KEY)
    scratch = FrameScratch()
    messages: list[bytes] = []
    stream = b""
    rng = random.Random(19)
    for _ in range(12):
        batch = [rng.randbytes(1022)] * 122
        items = encryptor.encrypt_grouped_into(batch, 65569, scratch)
        assert [bytes(item) for item in items] == reference.encrypt_grouped(batch, 65569)
        stream += b"".join(map(bytes, items))
        messages += batch
    assert (scratch.head_targets is not None) is sodium
    frame = 1022 + FRAME_OVERHEAD
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    received: list[bytes] = []
    for start in range(0, 1000 * frame, 61 * frame):  # ZeroMQ-sized chunks
        received += decryptor.feed(stream[start : min(start + 61 * frame, 1000 * frame)])
    assert received == messages[:1000]
    bad = bytearray(stream)
    bad[1000 * frame + 5] ^= 1  # the header of frame 1000
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    with pytest.raises(DecryptError, match="length") as caught:
        decryptor.feed(bytes(bad))
    assert caught.value.decoded == messages[:1000]  # type: ignore[attr-defined]
