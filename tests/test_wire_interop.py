"""Interoperability: pyln-proto (Core Lightning's Python codec) reads what we
write, and writes the same bytes back, for every BOLT-1 message and the
n1/n2 TLV namespaces, both declared there from the same csv."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyln.proto.message import Message as PylnMessage
from pyln.proto.message import MessageNamespace
from wire_spec_vectors import PEER_WIRE_CSV, peer_wire
from wire_strategies import messages, tlv_streams

from lnpmsg.wire import (
    DEFAULT_REGISTRY,
    Error,
    Init,
    Message,
    PeerStorage,
    PeerStorageRetrieval,
    Ping,
    Pong,
    TlvSchema,
    WarningMessage,
)

BOLT1 = [Init, Error, WarningMessage, Ping, Pong, PeerStorage, PeerStorageRetrieval]
NAMES = {
    Init: "init",
    Error: "error",
    WarningMessage: "warning",
    Ping: "ping",
    Pong: "pong",
}
NAMES |= {PeerStorage: "peer_storage", PeerStorageRetrieval: "peer_storage_retrieval"}

# pyln-proto knows fewer fundamental types than the whole csv uses: give it the
# definitions these tests need.
_WANTED = set(NAMES.values()) | {"init_tlvs"}
PYLN = MessageNamespace(
    [
        line
        for line in PEER_WIRE_CSV.read_text().splitlines()
        if line.split(",")[1] in _WANTED
    ]
)


def _ours_as_py(msg: Message) -> dict[str, Any]:
    """Our message in pyln-proto's ``to_py()`` form (bytes as hex)."""
    out: dict[str, Any] = {}
    for name, _ in msg.FIELDS:
        value = getattr(msg, name)
        out[name] = value.hex() if isinstance(value, bytes) else value
    if msg.TLVS is not None:
        tlvs: dict[Any, Any] = {}
        if "networks" in msg.tlvs:
            tlvs["networks"] = {"chains": [h.hex() for h in msg.tlvs["networks"]]}
        if "remote_addr" in msg.tlvs:
            tlvs["remote_addr"] = {"data": msg.tlvs["remote_addr"].encode().hex()}
        tlvs.update({t: v.hex() for t, v in msg.tlvs.unknown.items()})
        out["tlvs"] = tlvs
    return out


@pytest.mark.parametrize("cls", BOLT1, ids=[c.__name__ for c in BOLT1])
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_pyln_reads_and_rewrites_our_messages(
    cls: type[Message], data: st.DataObject
) -> None:
    msg = data.draw(messages(cls))
    encoded = msg.encode()
    theirs = PylnMessage.read(PYLN, io.BytesIO(encoded))
    assert theirs is not None and theirs.messagetype.name == NAMES[cls]
    assert theirs.to_py() == _ours_as_py(msg)
    out = io.BytesIO()
    theirs.write(out)
    assert out.getvalue() == encoded
    assert DEFAULT_REGISTRY.decode(out.getvalue()) == msg


@pytest.mark.parametrize("namespace", ["n1", "n2"])
@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_pyln_agrees_on_tlv_streams(namespace: str, data: st.DataObject) -> None:
    # The n1/n2 streams ride in a made-up message so that pyln can read them.
    schema: TlvSchema = peer_wire().tlv_schema(namespace)
    csv_lines = [
        line
        for line in PEER_WIRE_CSV.read_text().splitlines()
        if line.split(",")[1] == namespace
    ]
    ns = MessageNamespace(
        [*csv_lines, "msgtype,carrier,65001", f"msgdata,carrier,tlvs,{namespace},"]
    )
    stream = data.draw(tlv_streams(schema))
    encoded = (65001).to_bytes(2, "big") + schema.encode(stream)
    theirs = PylnMessage.read(ns, io.BytesIO(encoded))
    assert theirs is not None
    out = io.BytesIO()
    theirs.write(out)
    assert out.getvalue() == encoded
    unknown = {t for t in theirs.to_py()["tlvs"] if isinstance(t, int)}
    assert unknown == set(stream.unknown)
