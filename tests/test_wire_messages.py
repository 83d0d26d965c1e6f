"""Messages: the BOLT-1 set against csv/peer_wire.csv, Appendix C, every csv
message declared with @message, the registry, and the declaration rules."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_spec_vectors import BOLTS, init_extension_vectors, peer_wire
from wire_strategies import messages

from lnpmsg.wire import (
    CHAIN_HASH_MAINNET,
    CHAIN_HASH_REGTEST,
    CHAIN_HASHES,
    DEFAULT_REGISTRY,
    EMPTY_TLV_STREAM,
    MAX_MESSAGE_SIZE,
    PING_MAX_PONG_BYTES,
    Error,
    Features,
    Init,
    IPv4Addr,
    Message,
    MessageRegistry,
    PeerStorage,
    PeerStorageRetrieval,
    Ping,
    Pong,
    TlvSchema,
    TlvStream,
    UnknownEvenTypeError,
    UnknownMessage,
    WarningMessage,
    WireError,
    message,
)
from lnpmsg.wire import fields as F

BOLT1 = {
    "init": Init,
    "error": Error,
    "warning": WarningMessage,
    "ping": Ping,
    "pong": Pong,
    "peer_storage": PeerStorage,
    "peer_storage_retrieval": PeerStorageRetrieval,
}
CSV = peer_wire()


# ------------------------------------------------------------ BOLT 1 vs the csv


@pytest.mark.parametrize("name", BOLT1)
def test_bolt1_messages_match_the_csv(name: str) -> None:
    cls = BOLT1[name]
    msg_type, fields, schema = CSV.message_declaration(name)
    assert cls.TYPE == msg_type
    assert cls.FIELDS == tuple(fields)
    assert DEFAULT_REGISTRY.get(msg_type) is cls
    if schema is None:
        assert cls.TLVS is None
    else:
        assert cls.TLVS is not None
        assert {t: n for t, (n, _) in cls.TLVS.records.items()} == {
            t: n for t, (n, _) in schema.records.items()
        }


def test_init_tlv_types_match_the_csv() -> None:
    assert Init.TLVS is not None
    networks = Init.TLVS.records[1][1]
    assert (
        isinstance(networks, F.ArrayOf)
        and networks.element is F.chain_hash
        and networks.count is ...
    )
    # The csv says "...*byte"; BOLT 1 says it MUST be an address descriptor, and we decode it as one.
    assert CSV.tlv_schema("init_tlvs").records[3][1] is F.rest_bytes


@pytest.mark.parametrize("name", BOLT1)
@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_bolt1_encoding_matches_the_csv_declaration(
    name: str, data: st.DataObject
) -> None:
    ours = data.draw(messages(BOLT1[name]))
    from_csv = CSV.message_class(name)
    values: dict[str, Any] = {n: getattr(ours, n) for n, _ in ours.FIELDS}
    if ours.TLVS is not None:
        raw = ours.tlvs.get("remote_addr")
        values["tlvs"] = TlvStream(
            networks=ours.tlvs.get("networks"),
            remote_addr=None if raw is None else raw.encode(),
            unknown=ours.tlvs.unknown,
        )
    assert from_csv(**values).encode() == ours.encode()


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("cls", list(BOLT1.values()), ids=list(BOLT1))
@settings(deadline=None)
@given(data=st.data())
def test_bolt1_round_trip(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(messages(cls))
    encoded = msg.encode()
    assert encoded[:2] == cls.TYPE.to_bytes(2, "big")
    assert DEFAULT_REGISTRY.decode(encoded) == msg
    assert cls.decode_payload(encoded[2:]) == msg
    assert cls.decode_payload(memoryview(encoded)[2:]) == msg
    assert cls.decode(encoded) == msg
    assert DEFAULT_REGISTRY.decode(encoded).encode() == encoded


def test_known_encodings() -> None:
    assert Ping(num_pong_bytes=3, ignored=b"\0\0").encode() == bytes.fromhex(
        "0012000300020000"
    )
    assert Pong(ignored=b"\0" * 3).encode() == bytes.fromhex("00130003000000")
    assert (
        Error(channel_id=bytes(32), data=b"bad").encode()
        == bytes.fromhex("0011") + bytes(32) + b"\x00\x03bad"
    )
    assert (
        WarningMessage(channel_id=b"\x01" * 32).encode()
        == bytes.fromhex("0001") + b"\x01" * 32 + b"\x00\x00"
    )
    assert Init().encode() == bytes.fromhex("001000000000")
    init = Init(
        features=b"\x02\x00", tlvs=Init.tlv_stream(networks=[CHAIN_HASH_REGTEST])
    )
    assert init.encode() == bytes.fromhex("00100000000202000120") + CHAIN_HASH_REGTEST


# ------------------------------------------------------------ Appendix C

APPENDIX_C = init_extension_vectors()


@pytest.mark.parametrize(
    ("data", "valid", "why"), APPENDIX_C, ids=[v[0].hex() for v in APPENDIX_C]
)
def test_init_extension_vector(data: bytes, valid: bool, why: str) -> None:
    if valid:
        init = DEFAULT_REGISTRY.decode(data)
        assert isinstance(init, Init)
        assert init.all_features == Features()
        assert init.encode() == data  # unknown odd records survive a round trip
        assert set(init.tlvs.unknown) == {
            int(t, 16) for t in re.findall(r"`0x([0-9a-f]+)`", why)
        }
    else:
        with pytest.raises(WireError) as info:
            DEFAULT_REGISTRY.decode(data)
        if "_even_" in why:
            assert (
                isinstance(info.value, UnknownEvenTypeError) and info.value.type == 0xCA
            )


def test_appendix_c_has_both_kinds() -> None:
    assert {valid for _, valid, _ in APPENDIX_C} == {True, False}


# ------------------------------------------------------------ every csv message

CSV_NAMES = sorted(CSV.message_types)


@pytest.mark.parametrize("name", CSV_NAMES)
@settings(deadline=None, max_examples=15)
@given(data=st.data())
def test_every_csv_message_declares_and_round_trips(
    name: str, data: st.DataObject
) -> None:
    cls = CSV.message_class(name)
    msg = data.draw(messages(cls))
    encoded = msg.encode()
    registry = MessageRegistry([cls])
    assert registry.decode(encoded) == msg
    garbage = data.draw(st.binary(max_size=200))
    try:
        decoded = cls.decode_payload(garbage)
    except WireError:
        return
    assert (
        garbage.startswith(decoded.encode()[2:])
        if cls.TLVS is None
        else decoded.encode()[2:] == garbage
    )


def test_csv_declares_all_its_messages() -> None:
    assert len(CSV_NAMES) >= 40
    assert {
        "init",
        "error",
        "ping",
        "pong",
        "channel_update",
        "node_announcement",
    } <= set(CSV_NAMES)


# ------------------------------------------------------------ decoding rules


def test_extra_bytes_after_a_message_without_tlvs_are_ignored() -> None:
    ping = Ping(num_pong_bytes=1)
    assert DEFAULT_REGISTRY.decode(ping.encode() + b"\x01\x02\x03") == ping
    error = Error(channel_id=bytes(32), data=b"x")
    assert DEFAULT_REGISTRY.decode(error.encode() + b"\xff") == error
    # A message with a TLV extension checks it strictly.
    with pytest.raises(WireError):
        DEFAULT_REGISTRY.decode(Init().encode() + b"\xff")


@pytest.mark.parametrize("cls", list(BOLT1.values()), ids=list(BOLT1))
def test_every_truncation_fails(cls: type[Message]) -> None:
    sample = {
        Init: Init(
            features=b"\x01", tlvs=Init.tlv_stream(networks=[CHAIN_HASH_MAINNET])
        ),
        Error: Error(channel_id=b"\x07" * 32, data=b"oops"),
        WarningMessage: WarningMessage(channel_id=b"\x07" * 32, data=b"hmm"),
        Ping: Ping(num_pong_bytes=4, ignored=b"abcd"),
        Pong: Pong(ignored=b"abcd"),
        PeerStorage: PeerStorage(blob=b"blob"),
        PeerStorageRetrieval: PeerStorageRetrieval(blob=b"blob"),
    }[cls]
    encoded = sample.encode()
    without_tlvs = len(encoded) - (
        len(cls.TLVS.encode(sample.tlvs)) if cls.TLVS is not None else 0
    )
    for cut in range(2, len(encoded)):
        if (
            cut == without_tlvs
        ):  # the extension is optional: no TLVs at all is a whole message
            assert DEFAULT_REGISTRY.decode(encoded[:cut]) == dataclasses.replace(
                sample, tlvs=TlvStream()
            )
            continue
        where = cls.__name__ if cut < without_tlvs else cls.TLVS.name  # type: ignore[union-attr]
        with pytest.raises(WireError, match=where):
            DEFAULT_REGISTRY.decode(encoded[:cut])


def test_registry_decoding() -> None:
    assert DEFAULT_REGISTRY.decode(b"\x80\x01hello") == UnknownMessage(0x8001, b"hello")
    odd = DEFAULT_REGISTRY.decode(b"\x80\x01")
    assert isinstance(odd, UnknownMessage) and odd.is_odd and odd.payload == b""
    even = DEFAULT_REGISTRY.decode(bytearray(b"\x00\x40xyz"))
    assert isinstance(even, UnknownMessage) and not even.is_odd and even.type == 64
    assert even.encode() == b"\x00\x40xyz"
    for short in (b"", b"\x00"):
        with pytest.raises(WireError):
            DEFAULT_REGISTRY.decode(short)
    with pytest.raises(WireError, match="expected type 18"):
        Ping.decode(Pong().encode())


def test_registry_management() -> None:
    registry = DEFAULT_REGISTRY.copy()
    assert Ping in registry and 18 in registry and 0x8001 not in registry
    assert registry.get(18) is Ping and registry.get(0x8001) is None
    assert registry.register(Ping) is Ping  # the same class again is fine

    @dataclass(frozen=True, slots=True)
    class OtherPing(Message):
        FIELDS = ()

    other = message(type=18)(OtherPing)
    with pytest.raises(ValueError, match="already Ping"):
        registry.register(other)
    assert other not in registry

    @message(type=0x8001)
    @dataclass(frozen=True, slots=True)
    class Custom(Message):
        FIELDS = (("n", F.u8),)
        n: int

    registry.register(Custom)
    assert 0x8001 in registry and Custom in registry
    assert 0x8001 not in DEFAULT_REGISTRY  # a copy is independent
    assert registry.decode(b"\x80\x01\x05") == Custom(5)
    assert [c.TYPE for c in registry] == sorted(c.TYPE for c in registry)
    assert len(registry) == len(DEFAULT_REGISTRY) + 1
    with pytest.raises(TypeError):
        registry.register(int)  # type: ignore[type-var]


# ------------------------------------------------------------ building and limits


def test_values_are_checked_when_a_message_is_built() -> None:
    with pytest.raises(WireError):
        Ping(num_pong_bytes=-1)
    with pytest.raises(WireError):
        Ping(num_pong_bytes=1 << 16)
    with pytest.raises(WireError):
        Ping(num_pong_bytes="1")  # type: ignore[arg-type]
    with pytest.raises(WireError):
        Error(channel_id=bytes(31))
    with pytest.raises(WireError):
        Pong(ignored="text")  # type: ignore[arg-type]
    with pytest.raises(WireError):
        Init(tlvs=TlvStream(bogus=1))
    with pytest.raises(WireError):
        Init(tlvs=TlvStream(networks=[b"short"]))
    with pytest.raises(WireError):
        dataclasses.replace(Ping(num_pong_bytes=1), num_pong_bytes=-5)
    # Accepted values are normalised: lists become tuples, bytearrays bytes.
    init = Init(
        features=bytearray(b"\x02"), tlvs=TlvStream(networks=[CHAIN_HASH_MAINNET])
    )  # type: ignore[arg-type]
    assert type(init.features) is bytes
    assert init.tlvs["networks"] == (CHAIN_HASH_MAINNET,)
    assert Init(tlvs={"networks": [CHAIN_HASH_MAINNET]}) == init.__class__(  # type: ignore[arg-type]
        features=b"", tlvs=TlvStream(networks=(CHAIN_HASH_MAINNET,))
    )
    assert hash(init) == hash(
        Init(features=b"\x02", tlvs=Init.tlv_stream(networks=[CHAIN_HASH_MAINNET]))
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        init.features = b""  # type: ignore[misc]


def test_message_size_limit() -> None:
    biggest = Ping(num_pong_bytes=0, ignored=bytes(MAX_MESSAGE_SIZE - 6))
    assert len(biggest.encode()) == MAX_MESSAGE_SIZE
    with pytest.raises(WireError, match="too large"):
        Ping(num_pong_bytes=0, ignored=bytes(MAX_MESSAGE_SIZE - 5)).encode()
    assert len(Pong(ignored=bytes(PING_MAX_PONG_BYTES)).encode()) == MAX_MESSAGE_SIZE
    with pytest.raises(WireError, match="too large"):
        Pong(ignored=bytes(PING_MAX_PONG_BYTES + 1)).encode()
    assert Ping(num_pong_bytes=PING_MAX_PONG_BYTES).wants_pong
    assert not Ping(num_pong_bytes=PING_MAX_PONG_BYTES + 1).wants_pong
    with pytest.raises(WireError):
        UnknownMessage(0x8001, bytes(MAX_MESSAGE_SIZE - 1))
    with pytest.raises(WireError):
        UnknownMessage(1 << 16)


def test_init_helpers_and_chain_hashes() -> None:
    init = Init(
        globalfeatures=b"\x01",
        features=b"\x02\x00",
        tlvs=Init.tlv_stream(
            networks=[CHAIN_HASH_MAINNET], remote_addr=IPv4Addr("203.0.113.5", 9735)
        ),
    )
    assert init.all_features == Features.from_bits([0, 9])
    assert init.networks == (CHAIN_HASH_MAINNET,)
    assert init.remote_addr == IPv4Addr("203.0.113.5", 9735)
    assert Init().networks is None and Init().remote_addr is None
    assert (
        Error(channel_id=bytes(32)).all_channels
        and not Error(channel_id=b"\x01" * 32).all_channels
    )
    # BOLT 7 spells out the mainnet chain hash; BOLT 3's test chain is regtest: hash its genesis header.
    gossip = (BOLTS / "07-routing-gossip.md").read_text()
    assert CHAIN_HASH_MAINNET.hex() in gossip
    genesis = re.search(
        r"Block 0 \(genesis\): ([0-9a-f]+)", (BOLTS / "03-transactions.md").read_text()
    )
    assert genesis is not None
    header = bytes.fromhex(genesis[1])[:80]
    assert (
        hashlib.sha256(hashlib.sha256(header).digest()).digest() == CHAIN_HASH_REGTEST
    )
    assert CHAIN_HASHES["bitcoin"] == CHAIN_HASHES["mainnet"] == CHAIN_HASH_MAINNET
    assert CHAIN_HASHES["regtest"] == CHAIN_HASH_REGTEST
    assert len(set(CHAIN_HASHES.values())) == 5 and all(
        len(h) == 32 for h in CHAIN_HASHES.values()
    )


# ------------------------------------------------------------ a custom app message

CHAT_TLVS = TlvSchema(
    {
        1: ("reply_to", F.sha256),
        3: ("tags", F.array_of(F.u16_prefixed_bytes)),
        5: ("expiry", F.tu32),
    },
    name="chat_tlvs",
)


@message(type=0x8235, tlvs=CHAT_TLVS)
@dataclass(frozen=True, slots=True)
class Chat(Message):
    FIELDS = (("room", F.u16), ("sender", F.point), ("text", F.u16_prefixed_bytes))
    room: int
    sender: bytes
    text: bytes
    tlvs: TlvStream = EMPTY_TLV_STREAM


SENDER = bytes.fromhex("02" + "11" * 32)


def test_custom_message_with_tlvs() -> None:
    registry = DEFAULT_REGISTRY.copy()
    registry.register(Chat)
    msg = Chat(
        room=7,
        sender=SENDER,
        text=b"hi",
        tlvs=Chat.tlv_stream(expiry=600, tags=[b"a", b"bc"]),
    )
    data = msg.encode()
    assert data == (
        bytes.fromhex("82350007")
        + SENDER
        + b"\x00\x02hi"
        + bytes.fromhex("03070001610002626305020258")
    )
    assert registry.decode(data) == msg
    # A newer peer's odd record is kept and sent on; an even one fails.
    newer = data + bytes.fromhex("07012a")
    decoded = registry.decode(newer)
    assert isinstance(decoded, Chat) and dict(decoded.tlvs.unknown) == {7: b"\x2a"}
    assert decoded.encode() == newer
    with pytest.raises(UnknownEvenTypeError) as info:
        registry.decode(data + bytes.fromhex("0800"))
    assert info.value.type == 8
    with pytest.raises(WireError, match="Chat.sender"):
        registry.decode(bytes.fromhex("8235000704") + SENDER[1:] + b"\x00\x00")


@settings(deadline=None)
@given(messages(Chat))
def test_custom_message_round_trip(msg: Chat) -> None:
    assert Chat.decode(msg.encode()) == msg


def test_message_without_explicit_dataclass() -> None:
    @message(type=0x8001)
    class Tiny(Message):
        FIELDS = (("a", F.u8), ("b", F.rest_bytes))
        a: int
        b: bytes = b""

    assert dataclasses.is_dataclass(Tiny) and not hasattr(Tiny(1), "__dict__")
    assert Tiny(1, b"xy").encode() == b"\x80\x01\x01xy"
    assert Tiny.decode_payload(b"\x01xy") == Tiny(1, b"xy")


def test_declaration_errors() -> None:
    def declare(fields: tuple, annotations: dict[str, Any], **kwargs: Any) -> type:
        cls = dataclasses.make_dataclass(
            "Bad",
            list(annotations.items()),
            bases=(Message,),
            namespace={"FIELDS": fields},
            frozen=True,
            slots=True,
        )
        return message(**kwargs)(cls)

    with pytest.raises(TypeError, match="do not match"):
        declare((("a", F.u8),), {"b": int}, type=0x8001)
    with pytest.raises(TypeError, match="do not match"):
        declare((("a", F.u8),), {"a": int}, type=0x8001, tlvs=CHAT_TLVS)
    with pytest.raises(TypeError, match="only valid last in a TLV"):
        declare((("a", F.tu64),), {"a": int}, type=0x8001)
    with pytest.raises(TypeError, match="must be the last"):
        declare((("a", F.rest_bytes), ("b", F.u8)), {"a": bytes, "b": int}, type=0x8001)
    with pytest.raises(TypeError, match="must be the last"):
        declare(
            (("a", F.rest_bytes),),
            {"a": bytes, "tlvs": TlvStream},
            type=0x8001,
            tlvs=CHAT_TLVS,
        )
    with pytest.raises(ValueError, match="message type"):
        declare((), {}, type=1 << 16)
    with pytest.raises(ValueError, match="no message type"):
        declare((), {})
    with pytest.raises(TypeError, match="FIELDS"):
        declare((("a", "u8"),), {"a": int}, type=0x8001)

    @dataclass
    class Mutable(Message):
        FIELDS = ()

    with pytest.raises(TypeError, match="immutable"):
        message(type=0x8001)(Mutable)
    with pytest.raises(TypeError):
        message(type=0x8001)(int)  # type: ignore[type-var]


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_garbage_gives_a_message_or_wire_error(data: bytes) -> None:
    try:
        msg = DEFAULT_REGISTRY.decode(data)
    except WireError:
        return
    assert isinstance(msg, Message)
    encoded = msg.encode()
    if type(msg).TLVS is not None or isinstance(msg, UnknownMessage):
        assert encoded == data
    else:
        assert data.startswith(encoded)


@pytest.mark.parametrize("cls", list(BOLT1.values()), ids=list(BOLT1))
@settings(deadline=None)
@given(payload=st.binary(max_size=120))
def test_garbage_payloads(cls: type[Message], payload: bytes) -> None:
    try:
        msg = cls.decode_payload(payload)
    except WireError:
        return
    assert isinstance(msg, cls)
