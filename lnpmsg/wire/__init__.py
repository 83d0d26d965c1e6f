"""The sans-IO wire codec: BigSize, field types, TLV streams, messages and
their registry, the BOLT-1 messages, BOLT-7 address descriptors and BOLT-9
feature bits.

Everything here takes bytes and values in and gives values and bytes out;
bad input raises :class:`WireError` and nothing else.
"""

from lnpmsg.wire import fields
from lnpmsg.wire.addresses import (
    Address,
    DnsAddr,
    IPv4Addr,
    IPv6Addr,
    TorV2Addr,
    TorV3Addr,
    UnknownAddr,
    decode_address,
    decode_addresses,
    encode_addresses,
    parse_address,
)
from lnpmsg.wire.bolt1 import (
    CHAIN_HASH_MAINNET,
    CHAIN_HASH_REGTEST,
    CHAIN_HASH_SIGNET,
    CHAIN_HASH_TESTNET,
    CHAIN_HASH_TESTNET4,
    CHAIN_HASHES,
    INIT_TLVS,
    PING_MAX_PONG_BYTES,
    ZERO_CHANNEL_ID,
    Error,
    Init,
    PeerStorage,
    PeerStorageRetrieval,
    Ping,
    Pong,
    WarningMessage,
)
from lnpmsg.wire.errors import (
    UnknownEvenTypeError,
    UnknownRequiredFeatureError,
    WireError,
)
from lnpmsg.wire.features import (
    KNOWN_FEATURES,
    Feature,
    Features,
    check_dependencies,
    check_features,
    describe,
    is_compatible,
    known_features,
    unknown_required,
)
from lnpmsg.wire.fields import Field, array_of, fixed_bytes, record
from lnpmsg.wire.message import (
    DEFAULT_REGISTRY,
    MAX_MESSAGE_SIZE,
    Message,
    MessageRegistry,
    UnknownMessage,
    unknown_message,
    unknown_messages,
    message,
)
from lnpmsg.wire.primitives import (
    Reader,
    ShortChannelId,
    decode_bigsize,
    encode_bigsize,
)
from lnpmsg.wire.tlv import EMPTY_TLV_STREAM, TlvSchema, TlvStream

__all__ = [
    # errors
    "WireError",
    "UnknownEvenTypeError",
    "UnknownRequiredFeatureError",
    # primitives and fields
    "encode_bigsize",
    "decode_bigsize",
    "Reader",
    "ShortChannelId",
    "fields",
    "Field",
    "array_of",
    "fixed_bytes",
    "record",
    # TLV
    "TlvSchema",
    "TlvStream",
    "EMPTY_TLV_STREAM",
    # messages
    "MAX_MESSAGE_SIZE",
    "Message",
    "message",
    "MessageRegistry",
    "UnknownMessage",
    "unknown_message",
    "unknown_messages",
    "DEFAULT_REGISTRY",
    # BOLT 1
    "Init",
    "INIT_TLVS",
    "Error",
    "WarningMessage",
    "Ping",
    "Pong",
    "PeerStorage",
    "PeerStorageRetrieval",
    "PING_MAX_PONG_BYTES",
    "ZERO_CHANNEL_ID",
    "CHAIN_HASHES",
    "CHAIN_HASH_MAINNET",
    "CHAIN_HASH_TESTNET",
    "CHAIN_HASH_TESTNET4",
    "CHAIN_HASH_SIGNET",
    "CHAIN_HASH_REGTEST",
    # BOLT 7 addresses
    "Address",
    "IPv4Addr",
    "IPv6Addr",
    "TorV2Addr",
    "TorV3Addr",
    "DnsAddr",
    "UnknownAddr",
    "decode_address",
    "decode_addresses",
    "encode_addresses",
    "parse_address",
    # BOLT 9 features
    "Feature",
    "Features",
    "KNOWN_FEATURES",
    "check_dependencies",
    "check_features",
    "unknown_required",
    "is_compatible",
    "describe",
    "known_features",
]
