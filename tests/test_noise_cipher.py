"""The BOLT-8 transport cipher: framing, chunked decoding, limits, sticky errors."""

from __future__ import annotations

import itertools
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lnpmsg.noise import (
    FRAME_OVERHEAD,
    KEY_ROTATION_INTERVAL,
    LENGTH_HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    SCRATCH_MOST_FRAMES,
    DecryptError,
    FrameScratch,
    InitiatorHandshake,
    MessageDecryptor,
    MessageEncryptor,
    MessageTooLarge,
    NoiseError,
    ResponderHandshake,
    TransportCipher,
    public_key_of,
)

KEY = bytes(range(32))
CHAINING_KEY = bytes(range(32, 64))


def _pair(max_buffer: int = MAX_FRAME_SIZE) -> tuple[MessageEncryptor, MessageDecryptor]:
    return MessageEncryptor(KEY, CHAINING_KEY), MessageDecryptor(KEY, CHAINING_KEY, max_buffer)


def _feed_in_chunks(decryptor: MessageDecryptor, stream: bytes, sizes: list[int]) -> list[bytes]:
    out: list[bytes] = []
    position = 0
    for size in sizes:
        out += decryptor.feed(stream[position : position + size])
        position += size
        # Never more than one partial frame is held.
        assert decryptor.buffered < MAX_FRAME_SIZE
    out += decryptor.feed(stream[position:])
    return out


def test_round_trip_2000_random_messages_in_random_chunks() -> None:
    rng = random.Random(2000)
    sizes = [0, MAX_MESSAGE_SIZE] + [
        rng.choice((rng.randint(0, 64), rng.randint(0, 2048), rng.randint(0, MAX_MESSAGE_SIZE))) for _ in range(1998)
    ]
    messages = [rng.randbytes(size) for size in sizes]
    encryptor, decryptor = _pair()
    frames = [encryptor.encrypt(m) for m in messages[:1000]] + encryptor.encrypt_many(messages[1000:])
    assert [len(f) for f in frames] == [len(m) + FRAME_OVERHEAD for m in messages]
    stream = b"".join(frames)
    chunks = []
    total = 0
    while total < len(stream):
        chunk = rng.choice((rng.randint(1, 40), rng.randint(1, 5000), rng.randint(1, 3 * MAX_FRAME_SIZE)))
        chunks.append(chunk)
        total += chunk
    assert _feed_in_chunks(decryptor, stream, chunks) == messages
    assert decryptor.buffered == 0


def test_byte_at_a_time_across_rotation() -> None:
    encryptor, decryptor = _pair()
    messages = [bytes([i % 256]) * (i % 7) for i in range(KEY_ROTATION_INTERVAL // 2 + 3)]
    stream = b"".join(encryptor.encrypt_many(messages))
    received: list[bytes] = []
    for index in range(len(stream)):
        received += decryptor.feed(stream[index : index + 1])
    assert received == messages


def test_feed_accepts_bytearray_and_memoryview() -> None:
    encryptor, decryptor = _pair()
    frames = encryptor.encrypt_many([b"one", b"two", b"three"])
    stream = bytearray(b"".join(frames))
    assert decryptor.feed(memoryview(stream)[:5]) == []
    assert decryptor.buffered == 5
    assert decryptor.feed(stream[5:40]) == [b"one"]
    assert decryptor.feed(memoryview(stream)[40:]) == [b"two", b"three"]
    assert decryptor.buffered == 0


def test_encrypt_many_matches_encrypt() -> None:
    messages = [os.urandom(n) for n in (0, 1, 1024, 5, MAX_MESSAGE_SIZE)] * 230
    one, _ = _pair()
    many, _ = _pair()
    assert many.encrypt_many(iter(messages)) == [one.encrypt(m) for m in messages]


def test_encrypt_joined_is_the_frames_of_encrypt_many_back_to_back() -> None:
    # 1,150 messages of mixed sizes cross two key rotations inside one batch.
    messages = [os.urandom(n) for n in (0, 1, 1024, 5, MAX_MESSAGE_SIZE)] * 230
    many, _ = _pair()
    joined, decryptor = _pair()
    stream = joined.encrypt_joined(messages)
    assert stream == b"".join(many.encrypt_many(messages))
    assert decryptor.feed(stream) == messages
    # Both keep the same nonce and key afterwards.
    assert joined.encrypt_joined([b"next"]) == many.encrypt(b"next")
    assert joined.encrypt_joined([]) == b""


def test_encrypt_grouped_joins_whole_frames_up_to_the_limit() -> None:
    # Mixed sizes across two key rotations: the items are the frames of
    # encrypt_many in order, cut only between frames, each as many frames as
    # fit in the limit, or one frame alone when it exceeds the limit.
    messages = [os.urandom(n) for n in (0, 1, 1024, 5, MAX_MESSAGE_SIZE, 3000)] * 200
    frames = _pair()[0].encrypt_many(messages)
    grouped, decryptor = _pair()
    limit = 5000
    items = grouped.encrypt_grouped(iter(messages), limit)
    assert b"".join(items) == b"".join(frames)
    starts = list(itertools.accumulate(map(len, frames), initial=0))
    frame_at = {start: len(frame) for start, frame in zip(starts, frames)}
    position = 0
    for item in items:
        assert position in frame_at  # an item starts (and so the one before ends) where a frame does
        if len(item) > limit:
            assert len(item) == frame_at[position] == MAX_MESSAGE_SIZE + FRAME_OVERHEAD
        position += len(item)
        if position in frame_at:
            assert len(item) + frame_at[position] > limit  # the next frame did not fit
    assert position == starts[-1]
    assert decryptor.feed(b"".join(items)) == messages
    # The nonces and keys go on as after encrypt_many.
    reference = _pair()[0]
    reference.encrypt_many(messages)
    assert grouped.encrypt_grouped([b"next"], limit) == [reference.encrypt(b"next")]
    assert grouped.encrypt_grouped([], limit) == []


def test_encrypt_grouped_into_encrypts_a_batch_of_like_messages_in_place() -> None:
    # Batches of one size, through key rotations (122 messages a batch: not a divisor of
    # 500), give the items and nonces encrypt_grouped gives, as views of the scratch; a
    # smaller batch reuses the same buffer, a larger one or another size gets a new one.
    limit = 64 * 1024 + 34
    reference, _ = _pair()
    into, decryptor = _pair()
    scratch = FrameScratch()
    received: list[bytes] = []
    sent: list[bytes] = []
    buffers: list[object] = []  # the buffers themselves: an id alone may be reused once one is freed
    for count, size in [(122, 1024)] * 9 + [(50, 1024), (122, 1024), (200, 300), (2, 65000)]:
        batch = [os.urandom(size) for _ in range(count)]
        expected = reference.encrypt_grouped(batch, limit)
        items = into.encrypt_grouped_into(batch, limit, scratch)
        assert all(type(item) is memoryview and item.obj is scratch.view.obj for item in items)
        assert [bytes(item) for item in items] == expected
        if not any(buffer is scratch.view.obj for buffer in buffers):
            buffers.append(scratch.view.obj)
        received += decryptor.feed(b"".join(items))  # before the next batch overwrites them
        sent += batch
    assert received == sent
    assert len(buffers) == 3  # 1024-byte frames (50 reuse the 122's), then 300, then 65000
    # Mixed sizes, one message, or more than SCRATCH_MOST_FRAMES: encrypt_grouped's bytes.
    for batch in ([b"a", b"bc"], [b"x"], [b"y"] * (SCRATCH_MOST_FRAMES + 1), []):
        items = into.encrypt_grouped_into(batch, limit, scratch)
        assert items == reference.encrypt_grouped(batch, limit)
        assert all(type(item) is bytes for item in items)
    # Too large a message fails as encrypt_grouped does, and sticks.
    with pytest.raises(MessageTooLarge):
        into.encrypt_grouped_into([bytes(MAX_MESSAGE_SIZE + 1)] * 2, limit, scratch)
    with pytest.raises(MessageTooLarge):
        into.encrypt_grouped_into([b"a", b"a"], limit, scratch)


def test_oversize_message_is_refused_and_sticky() -> None:
    encryptor, decryptor = _pair()
    assert decryptor.feed(encryptor.encrypt(b"x" * MAX_MESSAGE_SIZE)) == [b"x" * MAX_MESSAGE_SIZE]
    with pytest.raises(MessageTooLarge, match="65536"):
        encryptor.encrypt(b"x" * (MAX_MESSAGE_SIZE + 1))
    assert encryptor.failed
    with pytest.raises(MessageTooLarge):
        encryptor.encrypt(b"small")
    with pytest.raises(MessageTooLarge):
        encryptor.encrypt_many([b"small"])


def test_encrypt_many_with_an_oversize_message_encrypts_none() -> None:
    encryptor, _ = _pair()
    with pytest.raises(MessageTooLarge):
        encryptor.encrypt_many([b"ok", bytes(MAX_MESSAGE_SIZE + 1)])
    assert encryptor.failed


def test_a_failed_encryption_never_reuses_a_nonce() -> None:
    encryptor, _ = _pair()
    reference, _ = _pair()
    expected = reference.encrypt_many([b"a", b"b", b"c", b"d"])
    with pytest.raises(TypeError):
        encryptor.encrypt("not bytes")  # type: ignore[arg-type]
    assert encryptor.encrypt(b"a") == expected[0]
    with pytest.raises(TypeError):
        encryptor.encrypt_many([b"b", "not bytes"])  # type: ignore[list-item]
    # b"b" took the nonces of the second frame, so the next message gets the third's.
    assert encryptor.encrypt(b"c") == expected[2]
    with pytest.raises(TypeError):
        encryptor.encrypt_joined([b"d", "not bytes"])  # type: ignore[list-item]
    # The same holds for the joined form: b"d" used the fourth frame's nonces.
    assert encryptor.encrypt(b"e") == reference.encrypt(b"e")


@pytest.mark.parametrize(
    "where", [0, LENGTH_HEADER_SIZE - 1, LENGTH_HEADER_SIZE, -1], ids=["length", "length-mac", "body", "body-mac"]
)
def test_tampered_frame_is_rejected_and_sticky(where: int) -> None:
    encryptor, decryptor = _pair()
    good = encryptor.encrypt(b"first")
    bad = bytearray(encryptor.encrypt(b"second"))
    bad[where] ^= 0x01
    assert decryptor.feed(good) == [b"first"]
    with pytest.raises(DecryptError, match="length" if where < LENGTH_HEADER_SIZE and where >= 0 else "message"):
        decryptor.feed(bytes(bad))
    assert decryptor.failed
    with pytest.raises(DecryptError):
        decryptor.feed(encryptor.encrypt(b"third"))
    with pytest.raises(DecryptError):
        decryptor.feed(b"")


def test_frames_out_of_order_fail() -> None:
    encryptor, decryptor = _pair()
    first, second = encryptor.encrypt(b"1"), encryptor.encrypt(b"2")
    with pytest.raises(DecryptError):
        decryptor.feed(second + first)


def test_max_buffer_bounds_the_frame_size() -> None:
    encryptor, decryptor = _pair(max_buffer=FRAME_OVERHEAD + 100)
    assert decryptor.feed(encryptor.encrypt(bytes(100))) == [bytes(100)]
    # Refused as soon as the length is known, before the body arrives.
    with pytest.raises(DecryptError, match="exceeds"):
        decryptor.feed(encryptor.encrypt(bytes(101))[:LENGTH_HEADER_SIZE])
    with pytest.raises(ValueError):
        MessageDecryptor(KEY, CHAINING_KEY, max_buffer=FRAME_OVERHEAD - 1)


def test_bad_key_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        MessageEncryptor(KEY[:31], CHAINING_KEY)
    with pytest.raises(ValueError):
        MessageDecryptor(KEY, CHAINING_KEY + b"\x00")


def test_transport_cipher_after_a_real_handshake() -> None:
    initiator_key, responder_key = os.urandom(32), os.urandom(32)
    initiator = InitiatorHandshake(initiator_key, public_key_of(responder_key))
    responder = ResponderHandshake(responder_key)
    act_three = initiator.receive_act_two(responder.receive_act_one(initiator.act_one()))
    responder.receive_act_three(act_three)
    left, right = TransportCipher(initiator.keys), TransportCipher(responder.keys)
    for n in range(1200):  # past two rotations in each direction
        assert right.decryptor.feed(left.encryptor.encrypt(b"ping %d" % n)) == [b"ping %d" % n]
        assert left.decryptor.feed(right.encryptor.encrypt(b"pong %d" % n)) == [b"pong %d" % n]
    # A direction's key is not the other's.
    with pytest.raises(DecryptError):
        left.decryptor.feed(left.encryptor.encrypt(b"echo"))


def test_a_transport_ciphers_receiving_side_is_built_at_its_first_use_and_bounded_from_the_start() -> None:
    initiator_key, responder_key = os.urandom(32), os.urandom(32)
    initiator = InitiatorHandshake(initiator_key, public_key_of(responder_key))
    responder = ResponderHandshake(responder_key)
    responder.receive_act_three(initiator.receive_act_two(responder.receive_act_one(initiator.act_one())))
    left, right = TransportCipher(initiator.keys), TransportCipher(responder.keys, max_buffer=FRAME_OVERHEAD + 10)
    assert right._decryptor is None  # a connection that never receives never builds it
    frames = [left.encryptor.encrypt(b"first"), left.encryptor.encrypt(b"second")]
    assert right.decryptor.feed(b"".join(frames)) == [b"first", b"second"]
    assert right.decryptor is right.decryptor and right._keys is None  # built once; the keys live on in it only
    with pytest.raises(DecryptError, match="exceeds"):  # its max_buffer, given to the lazy build
        right.decryptor.feed(left.encryptor.encrypt(bytes(11)))
    with pytest.raises(ValueError):  # a bad bound is refused at once, not at the first receive
        TransportCipher(responder.keys, max_buffer=FRAME_OVERHEAD - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_garbage_raises_only_decrypt_error(chunks: list[bytes]) -> None:
    _, decryptor = _pair()
    try:
        for chunk in chunks:
            assert decryptor.feed(chunk) == []
    except NoiseError as exc:
        assert isinstance(exc, DecryptError)
        assert sum(map(len, chunks)) >= LENGTH_HEADER_SIZE


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.data(),
)
def test_any_flipped_bit_is_detected(messages: list[bytes], data: st.DataObject) -> None:
    encryptor, decryptor = _pair()
    stream = bytearray(b"".join(encryptor.encrypt_many(messages)))
    bit = data.draw(st.integers(0, len(stream) * 8 - 1))
    stream[bit // 8] ^= 1 << (bit % 8)
    cut = data.draw(st.integers(0, len(stream)))
    with pytest.raises(DecryptError):
        decryptor.feed(stream[:cut])
        decryptor.feed(stream[cut:])


def test_runs_of_one_size_decode_whatever_the_chunking() -> None:
    # Frames of one size in a row are decrypted as a batch: runs of every length,
    # sizes changing between them, across rotations, whole and in random chunks.
    rng = random.Random(19)
    messages: list[bytes] = []
    while len(messages) < 3 * KEY_ROTATION_INTERVAL // 2:
        size = rng.choice((0, 1, 7, 1022, rng.randint(0, 3000)))
        messages += [rng.randbytes(size) for _ in range(rng.choice((1, 2, 3, 5, 40, 400)))]
    encryptor = MessageEncryptor(KEY, CHAINING_KEY)
    stream = encryptor.encrypt_joined(messages)
    assert MessageDecryptor(KEY, CHAINING_KEY).feed(stream) == messages
    # small chunks go frame by frame, large ones (from 32 KiB) count runs and batch them
    chunks = [rng.choice((rng.randint(1, 100), rng.randint(1, 20_000), rng.randint(32_768, 200_000))) for _ in range(60)]
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    assert _feed_in_chunks(decryptor, stream, chunks) == messages
    assert decryptor.buffered == 0


def test_a_bad_frame_in_a_run_keeps_the_frames_before_it() -> None:
    # Each part of each frame of a run of equal frames, tampered in turn (from the
    # frames the loop takes one by one into those decrypted as batches): the error
    # names the part that failed, and carries exactly the authentic messages before it.
    messages = [bytes([n]) * 1000 for n in range(100)]  # a chunk large enough for batches
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    frame = 1000 + FRAME_OVERHEAD
    places = (0, LENGTH_HEADER_SIZE - 1, LENGTH_HEADER_SIZE, 600, frame - 1)
    for where in [index * frame + offset for index in range(28, 100) for offset in places]:
        bad = bytearray(stream)
        bad[where] ^= 0x80
        decryptor = MessageDecryptor(KEY, CHAINING_KEY)
        part = "length" if where % frame < LENGTH_HEADER_SIZE else "message"
        with pytest.raises(DecryptError, match=part) as caught:
            decryptor.feed(bytes(bad))
        assert caught.value.decoded == messages[: where // frame]  # type: ignore[attr-defined]
        assert decryptor.failed


def _feed_by_read_size(decryptor: MessageDecryptor, stream: bytes, most: int) -> tuple[list[bytes], list[int]]:
    """Feed ``stream`` in the reads ``read_size`` asks for; the messages, and what was buffered after each read."""
    out: list[bytes] = []
    held: list[int] = []
    position = 0
    while position < len(stream):
        size = decryptor.read_size(most)
        assert 0 < size <= most
        out += decryptor.feed(stream[position : position + size])
        position += size
        held.append(decryptor.buffered)
    return out, held


def test_read_size_ends_reads_of_a_run_on_whole_frames() -> None:
    # 128 KiB reads of a run of 1 KiB messages: each read after the run is known
    # carries whole frames only (123 of them, 130,134 bytes), across key rotations,
    # so nothing is left buffered between reads.
    messages = [bytes([n % 256]) * 1024 for n in range(2000)]
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    most = 128 * 1024
    step = 1024 + FRAME_OVERHEAD
    assert decryptor.read_size(most) == most  # no run yet
    out, held = _feed_by_read_size(decryptor, stream, most)
    assert out == messages
    # the first read ends mid-frame; the second completes that frame, then whole frames only
    assert held[0] > 0 and held[1:] == [0] * (len(held) - 1)
    assert decryptor.read_size(most) == most // step * step
    assert decryptor.read_size(most - 1) < most - 1 and decryptor.read_size(20_000) == 20_000  # small reads: as asked


def test_read_size_completes_a_frame_begun_in_the_last_read() -> None:
    # After a read that ended inside a header or inside a body, the next read asks
    # for the rest of that frame and then whole frames.
    messages = [b"\x80\x01" + bytes(998)] * 300
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    step = 1000 + FRAME_OVERHEAD
    most = 64 * 1024
    for cut in (100 * step + 5, 100 * step + LENGTH_HEADER_SIZE, 100 * step + LENGTH_HEADER_SIZE + 300):
        decryptor = MessageDecryptor(KEY, CHAINING_KEY)
        out = decryptor.feed(stream[:cut])
        rest = cut - 100 * step  # held: a partial header, or (once its header is opened) the body's bytes
        assert len(out) == 100 and decryptor.buffered == (rest if rest < LENGTH_HEADER_SIZE else rest - LENGTH_HEADER_SIZE)
        size = decryptor.read_size(most)
        assert (cut + size) % step == 0 and most - step < size <= most
        out += decryptor.feed(stream[cut : cut + size])
        assert decryptor.buffered == 0
        assert out + decryptor.feed(stream[cut + size :]) == messages


def test_reads_of_read_size_when_the_size_changes_or_a_frame_is_bad() -> None:
    # read_size assumes the run goes on: when the frames change size the reads no
    # longer end on frames, and every message still comes out in order; a bad frame
    # in such a read still raises with exactly the authentic messages before it.
    rng = random.Random(8)
    messages: list[bytes] = []
    while len(messages) < 1500:
        size = rng.choice((0, 33, 1024, 1500))
        messages += [rng.randbytes(size) for _ in range(rng.choice((3, 50, 200)))]
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    for most in (32 * 1024, 100_000, 128 * 1024):
        out, _ = _feed_by_read_size(MessageDecryptor(KEY, CHAINING_KEY), stream, most)
        assert out == messages
    # a body in the middle of a run, then a header, tampered
    frames = [len(message) + FRAME_OVERHEAD for message in messages]
    for index, offset in ((700, LENGTH_HEADER_SIZE + 2), (701, 3)):
        where = sum(frames[:index]) + offset
        bad = bytearray(stream)
        bad[where] ^= 1
        decryptor = MessageDecryptor(KEY, CHAINING_KEY)
        got: list[bytes] = []
        with pytest.raises(DecryptError) as caught:
            position = 0
            while True:
                size = decryptor.read_size(128 * 1024)
                got += decryptor.feed(bytes(bad[position : position + size]))
                position += size
        assert got + caught.value.decoded == messages[:index]  # type: ignore[attr-defined]
        assert decryptor.failed


def _read_as_the_node_does(decryptor: MessageDecryptor, stream: bytes, short: random.Random | None = None) -> list[bytes]:
    """Read ``stream`` as the node's read loop does: into ``read_buffer`` when it offers one
    (filled, or with ``short`` a random part of it), else ``read_size`` bytes to ``feed``."""
    out: list[bytes] = []
    position = 0
    most = 128 * 1024
    while position < len(stream):
        buffer = decryptor.read_buffer(most)
        if buffer is None:
            size = decryptor.read_size(most)
            out += decryptor.feed(stream[position : position + size])
        else:
            size = min(len(buffer), len(stream) - position, short.randint(1, len(buffer)) if short else len(buffer))
            buffer[:size] = stream[position : position + size]
            buffer[size:] = bytes(len(buffer) - size)  # what a read leaves there must not matter
            out += decryptor.feed_read(size)
        position += size
    return out


def test_reads_of_a_run_are_decrypted_in_the_kept_buffer(libsodium: bool) -> None:
    # 1 KiB messages across four key rotations: once the run is known, reads go to the
    # decryptor's kept buffer (whole frames, at most as many as the run had) and come out
    # in order. Without libsodium (whose pointers open the headers where they lie) there
    # is no kept buffer: every read goes through feed, with the same messages.
    messages = [bytes([n % 256]) * 1024 for n in range(2000)]
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    assert decryptor.read_buffer(128 * 1024) is None  # no run yet
    assert _read_as_the_node_does(decryptor, stream) == messages
    buffer = decryptor.read_buffer(128 * 1024)
    if libsodium:
        assert buffer is not None and len(buffer) == (128 * 1024) // 1058 * 1058
    else:
        assert buffer is None and decryptor.read_size(128 * 1024) == (128 * 1024) // 1058 * 1058  # the run is known
    assert decryptor.read_buffer(20 * 1058) is None  # too few frames to be worth it
    assert decryptor.buffered == 0


def test_short_reads_into_the_kept_buffer_and_giving_it_back(libsodium: bool) -> None:
    # Reads that end anywhere (inside headers and bodies) still give every message in
    # order. A reader that gives its buffer back before a wait holds none; the next
    # reads (of this decryptor or another) take that spare rather than a new one.
    # Without libsodium no buffer is offered, and giving none back does nothing.
    messages = [b"\x80\x01" + bytes([n % 256]) * 998 for n in range(3000)]
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    for seed in range(3):
        assert _read_as_the_node_does(MessageDecryptor(KEY, CHAINING_KEY), stream, random.Random(seed)) == messages
    step = 1000 + FRAME_OVERHEAD
    first, second = MessageDecryptor(KEY, CHAINING_KEY), MessageDecryptor(KEY, CHAINING_KEY)
    first.feed(stream[: 100 * step])
    second.feed(stream[: 100 * step])
    buffer = first.read_buffer(128 * 1024)
    if not libsodium:
        assert buffer is None
        first.release_read_buffer()  # nothing held: nothing happens
        assert second.read_buffer(128 * 1024) is None and first.read_buffer(128 * 1024) is None
        assert first.feed(stream[100 * step : 150 * step]) == messages[100:150]
        return
    assert buffer is not None
    kept = buffer.obj
    first.release_read_buffer()
    first.release_read_buffer()  # nothing held: nothing happens
    buffer = second.read_buffer(128 * 1024)
    assert buffer is not None and buffer.obj is kept  # the spare
    other = first.read_buffer(128 * 1024)
    assert other is not None and other.obj is not kept  # the spare is taken: a new one
    other[: 50 * step] = stream[100 * step : 150 * step]
    assert first.feed_read(50 * step) == messages[100:150]


def test_a_read_that_ends_mid_frame_leaves_the_next_read_in_place(libsodium: bool) -> None:
    # A reader that keeps up with its peer gets reads that end anywhere: the frame a read
    # ended in stays in the kept buffer (at its start) and the next read goes on after it,
    # so it too is decrypted in place. Given back before a wait, that frame goes on
    # through feed. Without libsodium no buffer is offered: the same cuts are fed.
    messages = [bytes([n % 256]) * 1024 for n in range(400)]
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    step = 1024 + FRAME_OVERHEAD
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    assert decryptor.feed(stream[: 100 * step]) == messages[:100]
    if not libsodium:
        assert decryptor.read_buffer(128 * 1024) is None
        position = 100 * step
        for cut in (50 * step + 7, 30 * step + 100, step - 107):
            assert decryptor.feed(stream[position : position + cut]) == messages[position // step : (position + cut) // step]
            position += cut
        assert decryptor.feed(stream[position:]) == messages[position // step :]
        return
    position = 100 * step
    buffer = decryptor.read_buffer(128 * 1024)
    assert buffer is not None
    for cut in (50 * step + 7, 30 * step + 100, step - 107):  # inside a header, a body, then the rest of that frame
        buffer[:cut] = stream[position : position + cut]
        assert decryptor.feed_read(cut) == messages[position // step : (position + cut) // step]
        position += cut
        assert decryptor.buffered == position % step
        buffer = decryptor.read_buffer(128 * 1024)
        # the begun frame's bytes lie before the offered view: it ends on a frame's end
        assert buffer is not None and (decryptor.buffered + len(buffer)) % step == 0
    buffer[: 10 * step + 40] = stream[position : position + 10 * step + 40]
    assert decryptor.feed_read(10 * step + 40) == messages[position // step : position // step + 10]
    position += 10 * step + 40
    decryptor.release_read_buffer()  # a wait: no buffer held, the begun frame's 40 bytes kept apart
    assert decryptor.buffered == 40
    buffer = decryptor.read_buffer(128 * 1024)  # bytes are there again: it goes back in front
    assert buffer is not None and (40 + len(buffer)) % step == 0
    buffer[: 5 * step - 40] = stream[position : position + 5 * step - 40]
    assert decryptor.feed_read(5 * step - 40) == messages[position // step : position // step + 5]
    position += 5 * step - 40 + 100
    buffer = decryptor.read_buffer(128 * 1024)
    assert buffer is not None
    buffer[:100] = stream[position - 100 : position]
    assert decryptor.feed_read(100) == []
    decryptor.release_read_buffer()
    assert decryptor.feed(stream[position:]) == messages[position // step :]  # feed takes the begun frame first
    assert decryptor.buffered == 0
    # A bad header in a begun frame fails the decryptor when the frame moves on to
    # feed; nothing is lost before it.
    bad = bytearray(stream)
    bad[150 * step + 3] ^= 1
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    assert decryptor.feed(bytes(bad[: 100 * step])) == messages[:100]
    buffer = decryptor.read_buffer(128 * 1024)
    assert buffer is not None
    buffer[: 50 * step + 30] = bad[100 * step : 150 * step + 30]
    assert decryptor.feed_read(50 * step + 30) == messages[100:150]
    decryptor.release_read_buffer()
    with pytest.raises(DecryptError, match="length"):
        decryptor.feed(bytes(bad[150 * step + 30 :]))
    assert decryptor.failed and decryptor.read_buffer(128 * 1024) is None


def test_frames_of_another_size_or_a_bad_frame_in_a_kept_read(libsodium: bool) -> None:
    # A read laid out for the run's size that holds frames of another size goes on
    # through feed (in order, nothing lost); a bad body or header in such a read raises
    # with exactly the authentic messages before it, and the decryptor stays failed.
    # Without libsodium the same reads are fed, with the same messages and errors.
    messages = [bytes([1]) * 1024] * 300 + [bytes([2]) * 700] * 200 + [bytes([3]) * 1024] * 300
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    assert _read_as_the_node_does(MessageDecryptor(KEY, CHAINING_KEY), stream) == messages
    for seed in range(3):  # reads that end anywhere, frames begun in the kept buffer among them
        assert _read_as_the_node_does(MessageDecryptor(KEY, CHAINING_KEY), stream, random.Random(seed)) == messages
    frames = [len(message) + FRAME_OVERHEAD for message in messages]
    for index, offset in ((250, LENGTH_HEADER_SIZE + 5), (251, 1), (320, 0)):
        bad = bytearray(stream)
        bad[sum(frames[:index]) + offset] ^= 4
        decryptor = MessageDecryptor(KEY, CHAINING_KEY)
        got: list[bytes] = []
        with pytest.raises(DecryptError, match="length" if offset < LENGTH_HEADER_SIZE else "message") as caught:
            position = 0
            while True:
                buffer = decryptor.read_buffer(128 * 1024)
                if buffer is None:
                    size = decryptor.read_size(128 * 1024)
                    got += decryptor.feed(bytes(bad[position : position + size]))
                else:
                    size = min(len(buffer), len(bad) - position)
                    buffer[:size] = bad[position : position + size]
                    got += decryptor.feed_read(size)
                position += size
        assert got + caught.value.decoded == messages[:index]  # type: ignore[attr-defined]
        assert decryptor.failed and decryptor.read_buffer(128 * 1024) is None
        with pytest.raises(DecryptError):
            decryptor.feed(b"x")


def test_no_kept_buffer_with_a_frame_begun_or_without_libsodium(monkeypatch: pytest.MonkeyPatch) -> None:
    from libsodium_modes import without_libsodium

    from lnpmsg.noise import length_headers

    messages = [bytes(1024)] * 200
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    decryptor = MessageDecryptor(KEY, CHAINING_KEY)
    decryptor.feed(stream[: 150 * 1058 + 7])  # a run, and a header begun
    assert decryptor.read_buffer(128 * 1024) is None
    assert decryptor.feed(stream[150 * 1058 + 7 : 160 * 1058]) == messages[150:160]
    # the frame is done: a buffer is offered, if libsodium is there to open its headers
    assert (decryptor.read_buffer(128 * 1024) is not None) is length_headers.AVAILABLE
    # libsodium gone mid-run (as in the fallback): none, and the reads go on through feed
    without_libsodium(monkeypatch)
    assert decryptor.read_buffer(128 * 1024) is None
    assert _read_as_the_node_does(decryptor, stream[160 * 1058 :]) == messages[160:]


def test_cut_frames_gives_every_header_and_body_for_any_count() -> None:
    # A run's frames are cut by struct unpacks of at most 64 frames each (64, then
    # 48, 32 or 16, then the rest): every count gives the same parts as slicing.
    from lnpmsg.noise.frame_cut import cut_frames as _cut_frames

    for body_size in (0, 5, 1024):
        step = body_size + FRAME_OVERHEAD
        source = os.urandom(3 + 200 * step)
        for count in (*range(1, 70), 127, 128, 130, 200):
            expected: list[bytes] = []
            for start in range(3, 3 + count * step, step):
                expected += [source[start : start + LENGTH_HEADER_SIZE], source[start + LENGTH_HEADER_SIZE : start + step]]
            assert _cut_frames(bytearray(source), 3, body_size, count) == expected


def test_runs_of_many_sizes_in_one_large_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # More run sizes than the cache of compiled cutting formats holds (made small
    # here; it starts again when full): every run is still decrypted, in order.
    from lnpmsg.noise import frame_cut

    monkeypatch.setattr(frame_cut, "_CUT_CACHE_SIZE", 3)
    monkeypatch.setattr(frame_cut, "_cutters", {})
    messages = [bytes([size % 251]) * size for size in range(100, 120) for _ in range(150)]
    stream = MessageEncryptor(KEY, CHAINING_KEY).encrypt_joined(messages)
    assert MessageDecryptor(KEY, CHAINING_KEY).feed(stream) == messages
    assert 0 < len(frame_cut._cutters) <= 3


def test_hkdf_pair_is_rfc5869_hkdf_sha256() -> None:
    # RFC 5869, test case 3 (empty salt and info): the first 42 bytes of the output.
    from lnpmsg.noise._primitives import hkdf_pair

    first, second = hkdf_pair(b"", bytes([0x0B]) * 22)
    assert (first + second)[:42].hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    # and HMAC's key handling for every key length (hashed past the 64-byte block)
    import hmac

    for salt_size in (0, 31, 32, 64, 65, 200):
        salt, ikm = os.urandom(salt_size), os.urandom(32)
        prk = hmac.digest(salt, ikm, "sha256")
        expected_first = hmac.digest(prk, b"\x01", "sha256")
        assert hkdf_pair(salt, ikm) == (expected_first, hmac.digest(prk, expected_first + b"\x02", "sha256"))
