"""BOLT 4 onion routing as a sans-IO core: Sphinx packets, hop payloads,
failure messages and failure onions.

- origin: :func:`construct_onion` (keep ``shared_secrets``), later
  :func:`decrypt_failure_onion` to learn which hop failed and why;
- each hop: :func:`process_onion` (or :func:`peel_onion` +
  :func:`decode_hop_payload`); on failure :func:`create_failure_onion`, and
  :func:`wrap_failure_onion` for a failure coming back from downstream;
- :class:`MalformedOnionError` is the ``update_fail_malformed_htlc`` case;
- :mod:`~lnpmsg.payments.onion.blinding`: blinded paths (create, and unblind
  a hop's ``encrypted_recipient_data``); a blinded hop peels with ``path_key``;
- :mod:`~lnpmsg.payments.onion.attribution`: attribution data (hold times and
  per-hop HMACs) for failures and fulfilments.
"""

from lnpmsg.payments.onion.attribution import (
    AttributionCheck,
    add_attribution,
    fail_with_attribution,
    forward_with_attribution,
    verify_attribution,
)
from lnpmsg.payments.onion.blinding import (
    BlindedHop,
    BlindedPath,
    BlindingError,
    RecipientData,
    blinded_node_key,
    create_blinded_path,
    decode_blinded_path,
    decrypt_recipient_data,
    encode_blinded_path,
    padded_encrypted_data,
)
from lnpmsg.payments.onion.errors import (
    FailureOnionError,
    MalformedOnionError,
    OnionConstructionError,
    OnionError,
    OnionPayloadError,
)
from lnpmsg.payments.onion.failure_onion import (
    FAILURE_PAD_SIZE,
    AttributedFailure,
    create_failure_onion,
    decrypt_failure_onion,
    wrap_failure_onion,
)
from lnpmsg.payments.onion.failures import FAILURES, Failure, UnknownFailure, decode_failure, malformed_failure
from lnpmsg.payments.onion.payloads import ENCRYPTED_DATA_TLVS, HOP_PAYLOAD_TLVS, HopPayload, decode_hop_payload
from lnpmsg.payments.onion.process import ReceivedOnion, process_onion
from lnpmsg.payments.onion.sphinx import (
    ONION_PACKET_SIZE,
    ROUTING_INFO_SIZE,
    BuiltOnion,
    PeeledOnion,
    construct_onion,
    next_ephemeral_key,
    peel_onion,
)

__all__ = [
    "ENCRYPTED_DATA_TLVS",
    "FAILURES",
    "FAILURE_PAD_SIZE",
    "HOP_PAYLOAD_TLVS",
    "ONION_PACKET_SIZE",
    "ROUTING_INFO_SIZE",
    "AttributedFailure",
    "AttributionCheck",
    "BlindedHop",
    "BlindedPath",
    "BlindingError",
    "BuiltOnion",
    "Failure",
    "FailureOnionError",
    "HopPayload",
    "MalformedOnionError",
    "OnionConstructionError",
    "OnionError",
    "OnionPayloadError",
    "PeeledOnion",
    "ReceivedOnion",
    "RecipientData",
    "UnknownFailure",
    "add_attribution",
    "blinded_node_key",
    "construct_onion",
    "create_blinded_path",
    "create_failure_onion",
    "decode_failure",
    "decode_hop_payload",
    "decode_blinded_path",
    "decrypt_recipient_data",
    "encode_blinded_path",
    "padded_encrypted_data",
    "decrypt_failure_onion",
    "fail_with_attribution",
    "forward_with_attribution",
    "malformed_failure",
    "next_ephemeral_key",
    "peel_onion",
    "process_onion",
    "verify_attribution",
    "wrap_failure_onion",
]
