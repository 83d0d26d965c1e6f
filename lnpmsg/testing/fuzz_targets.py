"""Fuzz targets: every decoder that bytes from the network reach, with what it may raise.

Each :class:`FuzzTarget` feeds hypothesis-generated input to one decoder
and fails on any exception outside the decoder's documented error class
(a crash there would be a remote denial of service). ``tests/test_fuzz.py``
runs each a few hundred times in CI; ``scripts/attack.py fuzz --duration``
runs them as long as you like.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

__all__ = ["TARGETS", "FuzzTarget"]


@dataclass(frozen=True)
class FuzzTarget:
    """One decoder: its input strategy, the call, and the exceptions it documents."""

    name: str
    #: where the input comes from (for the report)
    reached_by: str
    strategy: st.SearchStrategy[Any]
    run: Callable[[Any], object]
    allowed: tuple[type[BaseException], ...] = ()


_REGISTRY: Any = None


def _registry() -> Any:
    """Every message a node with the built-in apps decodes: BOLT 1, BOLT 7, peer RPC, pub/sub."""
    global _REGISTRY
    if _REGISTRY is None:
        from lnpmsg.gossip.messages import register_gossip_messages
        from lnpmsg.pubsub.peer import PubSubPublication, PubSubSubscribe, PubSubSubscribed, PubSubUnsubscribe
        from lnpmsg.rpc.peer import RpcCancel, RpcRequest, RpcResponse
        from lnpmsg.wire import DEFAULT_REGISTRY

        registry = register_gossip_messages(DEFAULT_REGISTRY.copy())
        for cls in (RpcRequest, RpcResponse, RpcCancel, PubSubSubscribe, PubSubUnsubscribe, PubSubSubscribed, PubSubPublication):
            registry.register(cls)
        _REGISTRY = registry
    return _REGISTRY


def _wire_message_bytes() -> st.SearchStrategy[bytes]:
    """A known message type followed by random bytes (random types alone rarely hit a decoder)."""
    REGISTRY = _registry()
    types = sorted(cls.TYPE for cls in REGISTRY)
    return st.builds(lambda t, body: t.to_bytes(2, "big") + body, st.sampled_from(types), st.binary(max_size=1200))


def _decode_wire(data: bytes) -> object:
    return _registry().decode(data)


def _session_batch(messages: list[bytes]) -> object:
    """A session after a valid init, fed a batch of hostile messages: it must turn every
    fault into events (warning, close), never raise."""
    from lnpmsg.node.session import PeerSession
    from lnpmsg.wire import Init

    session = PeerSession(Init(), 0.0, registry=_registry())
    session.receive_messages([Init().encode()], 0.0)
    return session.receive_messages(messages, 1.0)


def _init_bytes(data: bytes) -> object:
    from lnpmsg.node.session import PeerSession
    from lnpmsg.wire import Init

    session = PeerSession(Init(), 0.0)
    return session.receive_messages([b"\x00\x10" + data], 0.0)


def _act_one(data: bytes) -> object:
    from lnpmsg.noise import ResponderHandshake

    return ResponderHandshake(bytes([1]) * 32).receive_act_one(data)


def _act_two(data: bytes) -> object:
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.noise import InitiatorHandshake

    responder = NodeKey.from_secret(bytes([2]) * 32)
    hs = InitiatorHandshake(bytes([1]) * 32, responder.node_id)
    hs.act_one()
    return hs.receive_act_two(data)


def _decryptor(chunks: list[bytes]) -> object:
    from lnpmsg.noise import MessageDecryptor, MessageEncryptor

    key, chaining_key = bytes(range(32)), bytes(32)
    good = MessageEncryptor(key, chaining_key).encrypt(b"\x00\x12hello")
    decryptor = MessageDecryptor(key, chaining_key)
    out = decryptor.feed(good)
    for chunk in chunks:
        out += decryptor.feed(chunk)
    return out


def _zmq(parts: list[bytes]) -> object:
    from lnpmsg.transports.zmq import decode_message

    return decode_message(parts)


def _quic_header(data: bytes) -> object:
    from lnpmsg.transports.udp_quic import classify_datagram

    return classify_datagram(data)


def _onion_message(data: bytes) -> object:
    """An ``onion_message``'s fields (path key, packet) peeled as a node would; a blinded path's
    reply_path and a corrupted valid message are reached through tests/test_onion_messages_packet.py."""
    from lnpmsg.onion_messages.packet import peel_onion_message

    return peel_onion_message(bytes([1]) * 32, data[:33], data[33:])


def _bolt12_stream() -> st.SearchStrategy[bytes]:
    """TLV streams of BOLT 12's own record types (and some others) with random values: past the TLV
    framing into each field's reader and the reader rules."""
    from lnpmsg.wire.primitives import encode_bigsize

    kinds = st.sampled_from([0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 33, 80, 82, 84, 86, 88, 89, 90, 91, 160, 162, 164, 166, 168, 170, 172,
                             174, 176, 240, 1000, 1_000_000_001])  # fmt: skip
    records = st.dictionaries(kinds, st.binary(max_size=80), max_size=10)
    return records.map(lambda r: b"".join(encode_bigsize(k) + encode_bigsize(len(v)) + v for k, v in sorted(r.items())))


def _bolt12_tlv(data: bytes) -> object:
    """An onion message's ``invoice_request``, ``invoice`` or ``invoice_error`` record, read as each."""
    from lnpmsg.payments.bolt12 import Bolt12Error, Invoice, InvoiceError, InvoiceRequest

    for reader in (InvoiceRequest.from_bytes, Invoice.from_bytes, InvoiceError.from_bytes):
        try:
            reader(data)
        except Bolt12Error:
            pass
    return None


def _lno(data: bytes) -> str:
    from lnpmsg.payments.bolt12.strings import encode_string

    return encode_string("lno", data)


def _bolt12_string(text: str) -> object:
    """An offer, request or invoice string a user pastes (``pay``, ``fetchinvoice``, ``decodeoffer``)."""
    from lnpmsg.payments.bolt12.offer import decode_offer

    return decode_offer(text)


def _retry_token(data: bytes) -> object:
    from lnpmsg.transports.udp_retry import RetryTokens

    return RetryTokens(bytes(32)).validate(("127.0.0.1", 9735), data, bytes(8), 0.0)


def _addresses(data: bytes) -> object:
    from lnpmsg.gossip.messages import parse_addresses

    return parse_addresses(data)


def _gossip_graph(messages: list[bytes]) -> object:
    """Decoded gossip through the graph's checks (signatures, chains, timestamps)."""
    from lnpmsg.gossip.graph import Graph
    from lnpmsg.wire import CHAIN_HASHES, WireError

    REGISTRY = _registry()
    graph = Graph(CHAIN_HASHES["regtest"])
    decoded = []
    for raw in messages:
        try:
            decoded.append((REGISTRY.decode(raw), raw))
        except WireError:
            continue
    decoded = [(m, raw) for m, raw in decoded if type(m).__name__ in ("ChannelAnnouncement", "ChannelUpdate", "NodeAnnouncement")]
    return graph.process_many(decoded, 1_700_000_000.0)


def _control_request(data: bytes) -> object:
    from lnpmsg.rpc.control_proto import parse_request

    return parse_request(data)


def _socks_reply(data: bytes) -> object:
    from lnpmsg.transports.tor.socks import Socks5Handshake

    hs = Socks5Handshake("example.onion", 9735, "user", "password")
    hs.start()
    return hs.receive_data(data)


def _electrum(lines: list[bytes]) -> object:
    from lnpmsg.chain.electrum.index import ElectrumIndex
    from lnpmsg.chain.electrum.session import ElectrumSession, ServerInfo

    session = ElectrumSession(ElectrumIndex(), ServerInfo("fuzz", bytes(32)))
    return [session.receive_data(line) for line in lines]


def _electrum_lines() -> st.SearchStrategy[list[bytes]]:
    methods = st.sampled_from(
        ["server.version", "server.ping", "blockchain.headers.subscribe", "blockchain.block.header", "blockchain.scripthash.get_history",
         "blockchain.transaction.get", "blockchain.estimatefee", "mempool.get_fee_histogram", "x"]
    )
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=70), lambda c: st.lists(c, max_size=3), max_leaves=6)
    line = st.builds(
        lambda m, p, i: (f'{{"jsonrpc":"2.0","id":{i},"method":"{m}","params":' + __import__("json").dumps(p) + "}\n").encode(),
        methods, st.lists(json_values, max_size=3), st.integers(-5, 5),
    )
    return st.lists(line | st.binary(max_size=200), max_size=4)


def _targets() -> tuple[FuzzTarget, ...]:
    from lnpmsg.onion_messages.packet import OnionMessageIgnored
    from lnpmsg.payments.bolt12.errors import Bolt12Error
    from lnpmsg.noise import NoiseError
    from lnpmsg.rpc.control_proto import ControlRequestError
    from lnpmsg.transports.tor.errors import SocksError
    from lnpmsg.transports.zmq import ZmqProtocolError
    from lnpmsg.wire import WireError

    messages = st.lists(_wire_message_bytes() | st.binary(max_size=300), max_size=8)
    return (
        FuzzTarget("wire.decode", "every peer message (BOLT 1/7, apps)", _wire_message_bytes() | st.binary(max_size=600), _decode_wire, (WireError,)),
        FuzzTarget("session.init", "a peer's first message", st.binary(max_size=600), _init_bytes),
        FuzzTarget("session.messages", "every peer message after init", messages, _session_batch),
        FuzzTarget("noise.act_one", "an inbound connection's first 50 bytes", st.binary(min_size=50, max_size=50) | st.binary(max_size=80), _act_one, (NoiseError,)),
        FuzzTarget("noise.act_two", "the responder's answer when we dial", st.binary(min_size=50, max_size=50) | st.binary(max_size=80), _act_two, (NoiseError,)),
        FuzzTarget("noise.decrypt", "every encrypted byte after the handshake", st.lists(st.binary(max_size=200), max_size=5), _decryptor, (NoiseError,)),
        FuzzTarget("zmq.decode", "ZeroMQ messages from peers", st.lists(st.binary(max_size=40), max_size=4), _zmq, (ZmqProtocolError,)),
        FuzzTarget("onion_message.peel", "every onion_message (path key, packet)", st.binary(max_size=1500), _onion_message, (OnionMessageIgnored,)),
        FuzzTarget("quic.header", "every UDP datagram", st.binary(max_size=1400), _quic_header),
        FuzzTarget("quic.retry_token", "the token of a QUIC Initial", st.binary(max_size=80), _retry_token, (ValueError,)),
        FuzzTarget("gossip.addresses", "node_announcement addresses", st.binary(max_size=300), _addresses),
        FuzzTarget("gossip.graph", "gossip messages through the graph's checks", messages, _gossip_graph),
        FuzzTarget("control.request", "control API requests (local clients)", st.binary(max_size=300), _control_request, (ControlRequestError,)),
        FuzzTarget("socks.reply", "Tor's SOCKS replies", st.binary(max_size=40), _socks_reply, (SocksError,)),
        FuzzTarget("electrum.lines", "Electrum clients (--electrum-listen)", _electrum_lines(), _electrum),
        FuzzTarget("bolt12.tlv", "BOLT 12 records of onion messages (invoice_request, invoice, invoice_error)", _bolt12_stream() | st.binary(max_size=400),
                   _bolt12_tlv),
        FuzzTarget("bolt12.string", "BOLT 12 strings a user pastes", st.text(max_size=120) | _bolt12_stream().map(_lno), _bolt12_string, (Bolt12Error,)),
    )


#: every target, built on first use (the imports are heavy)
TARGETS: tuple[FuzzTarget, ...] = ()


def targets() -> tuple[FuzzTarget, ...]:
    """Every fuzz target (built once)."""
    global TARGETS
    if not TARGETS:
        TARGETS = _targets()
    return TARGETS
