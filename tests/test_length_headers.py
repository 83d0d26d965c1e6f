"""BOLT-8 length headers sealed and opened in batches through libsodium (lnpmsg.noise.length_headers),
and what the cipher does instead without it (tests taking the ``libsodium`` fixture run in both modes)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from libsodium_modes import NO_SODIUM_STATE

from lnpmsg.noise import FRAME_OVERHEAD, DecryptError, FrameScratch, MessageDecryptor, MessageEncryptor, length_headers
from lnpmsg.noise._primitives import nonce_bytes
from lnpmsg.noise.run_reads import decrypt_run

KEY = bytes(range(32))
CHAINING_KEY = bytes(range(32, 64))
NONCES = [nonce_bytes(counter) for counter in range(0, 1000, 2)]


def test_libsodium_is_there_unless_switched_off() -> None:
    # PyNaCl is a dependency: without it the cipher would fall back silently (and slower).
    # Only the switch in the environment turns it off.
    from nacl import _sodium

    assert _sodium.lib.crypto_aead_chacha20poly1305_ietf_decrypt
    assert length_headers.AVAILABLE is not bool(os.environ.get("LNPMSG_NO_SODIUM"))


def test_the_switch_in_the_environment_turns_it_off() -> None:
    # What the switch changes in the module (its names that are None or a flag with it
    # and something else without) is exactly the state the in-process fallback of the
    # tests gives it (tests/libsodium_modes.py).
    code = (
        "import json; from lnpmsg.noise import length_headers, FrameScratch; "
        "print(json.dumps({k: repr(v) for k, v in vars(length_headers).items() if v is None or isinstance(v, bool)}))"
    )
    states = []
    for switch in ("1", None):
        env = {name: value for name, value in os.environ.items() if name != "LNPMSG_NO_SODIUM"}
        if switch:
            env["LNPMSG_NO_SODIUM"] = switch
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
        states.append(json.loads(result.stdout))
    switched, plain = states
    assert switched["AVAILABLE"] == "False" and plain["AVAILABLE"] == "True"
    assert {name: value for name, value in switched.items() if plain.get(name) != value} == {name: repr(value) for name, value in NO_SODIUM_STATE.items()}


def test_sealed_headers_are_cryptographys_bytes_in_place(libsodium: bool) -> None:
    # Every header of a layout, from any start, is the RFC 8439 encryption of the length:
    # byte for byte what cryptography gives, in its place, and nothing else is touched.
    # Without libsodium a layout has no targets: the writer seals each header through
    # cryptography (its frames are checked in test_the_cipher_gives_the_same_frames_either_way).
    aead = ChaCha20Poly1305(KEY)
    frame = 100 + FRAME_OVERHEAD
    scratch = FrameScratch()
    scratch.layout(frame, 300)
    targets = scratch.head_targets
    if not libsodium:
        assert targets is None
        return
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


def _messages(count: int, length: int) -> list[bytes]:
    return [bytes([index % 251]) * length for index in range(count)]


def _frames(count: int, length: int = 1022) -> tuple[list[bytes], list[bytes]]:
    """The headers and the bodies of ``count`` frames of :func:`_messages` (nonces from 0 of ``KEY``)."""
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(_messages(count, length))
    step = length + FRAME_OVERHEAD
    heads = [stream[start : start + 18] for start in range(0, count * step, step)]
    return heads, [stream[start + 18 : start + step] for start in range(0, count * step, step)]


def _run(heads: list[bytes], bodies: list[bytes], length: int = 1022) -> tuple[int, list[bytes]]:
    """How many frames a run's decrypt takes as of ``length`` (libsodium's headers, or cryptography's), and their messages."""
    messages: list[bytes] = []
    return decrypt_run(ChaCha20Poly1305(KEY), KEY, 0, length, heads, bodies, messages), messages


def test_a_run_counts_the_good_headers_from_the_first(libsodium: bool) -> None:
    # The headers of a run are opened in a batch (through libsodium, or one by one
    # through cryptography): the count stops at the first that is not authentic in its
    # place or says another length, whatever comes after, and only those frames' bodies
    # are decrypted.
    assert length_headers.AVAILABLE is libsodium
    for count in (1, 2, 61, 64, 65, 200, 240):  # past the first buffer's 64: it grows
        heads, bodies = _frames(count)
        assert _run(heads, bodies) == (count, _messages(count, 1022))
    rng = random.Random(8)
    aead = ChaCha20Poly1305(KEY)
    for _ in range(40):
        count = rng.randint(1, 200)
        heads, bodies = _frames(count)
        bad = rng.randrange(count)
        kind = rng.choice(("mac", "ciphertext", "length", "nonce"))
        if kind == "mac":
            heads[bad] = heads[bad][:-1] + bytes([heads[bad][-1] ^ 1])
        elif kind == "ciphertext":
            heads[bad] = bytes([heads[bad][0] ^ 0x80]) + heads[bad][1:]
        elif kind == "length":  # authentic, but another size
            heads[bad] = aead.encrypt(NONCES[bad], (1021).to_bytes(2, "big"), None)
        else:  # authentic under another nonce: out of place
            heads[bad] = heads[(bad + 1) % count] if count > 1 else _frames(2)[0][1]
        # whatever comes after the bad one (good or bad), the count stops there
        if bad + 1 < count and rng.random() < 0.5:
            heads[bad + 1] = b"\x00" * 18
        assert _run(heads, bodies) == (bad, _messages(bad, 1022)), kind


def test_each_thread_opens_its_own_runs(libsodium: bool) -> None:
    # libsodium runs without the GIL: threads opening at once must not share outputs.
    results: list[bool] = []

    def work(length: int) -> None:
        heads, bodies = _frames(200, length)
        want = (200, _messages(200, length))
        results.append(all(_run(heads, bodies, length) == want for _ in range(150)))

    threads = [threading.Thread(target=work, args=(length,)) for length in (5, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True, True]


def test_the_cipher_gives_the_same_frames_either_way(libsodium: bool) -> None:
    # A writer's batches of like messages and a reader's large chunks, with a frame
    # tampered in the middle of a run: the same frames, and the same error after the
    # same authentic messages, with or without libsodium.
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
    assert (scratch.head_targets is not None) is libsodium
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
