"""Keys derived from the node secret, so none is stored.

- An offer whose issuer is named only by a blinded path (no ``offer_issuer_id``):
  its invoices are signed by the path's last blinded node id, whose secret the
  issuer derives from the path's session key (itself derived from the node
  secret and a stored salt).
- A payer's ``invreq_payer_id`` (:func:`payer_secret`): a key of its own for each
  invoice request, derived from the node secret and the request's
  ``invreq_metadata``, so the request does not name the node (nor links it to
  our other requests), and the payer can derive it again to sign with it (a
  payer proof) with nothing stored but the request.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import coincurve

from lnpmsg.payments.onion._crypto import ecdh
from lnpmsg.payments.onion.blinding import blinded_node_key

__all__ = ["OFFER_PATH_KEY_LABEL", "PAYER_KEY_LABEL", "offer_path_session_key", "payer_id", "payer_secret", "recipient_blinded_secret"]

#: the domain label of an offer path's session key (apart from every other use of the node secret)
OFFER_PATH_KEY_LABEL = b"lnpmsg offer blinded path session key v1"
#: the domain label of the transient payer keys of our invoice requests
PAYER_KEY_LABEL = b"lnpmsg invoice request payer key v1"


def offer_path_session_key(node_secret: bytes, salt: bytes) -> bytes:
    """The session key (``e_0``) of the blinded path of an offer: HMAC-SHA256 of ``salt`` under the node
    secret, with a label of its own; the same in every run, so the path's keys need no storage."""
    return hmac.digest(node_secret, OFFER_PATH_KEY_LABEL + salt, hashlib.sha256)


def recipient_blinded_secret(session_key: bytes, node_ids: Sequence[bytes], node_secret: bytes) -> bytes:
    """The secret of the last blinded node id of the path made with ``session_key`` over ``node_ids``
    (ours last): the path key reaching our hop (each hop's ``e_i+1 = e_i * SHA256(E_i || ss_i)``,
    BOLT 4), then our blinded key under it."""
    ephemeral = coincurve.PrivateKey(session_key)
    for node_id in node_ids[:-1]:
        path_key = ephemeral.public_key.format()
        ephemeral = ephemeral.multiply(hashlib.sha256(path_key + ecdh(ephemeral, node_id)).digest())
    return blinded_node_key(node_secret, ephemeral.public_key.format()).secret


def payer_secret(node_secret: bytes, metadata: bytes) -> bytes:
    """The secret of the transient ``invreq_payer_id`` of our invoice request with ``invreq_metadata``
    ``metadata``: HMAC-SHA256 of it under the node secret, with a label of its own (one key per
    request, unlinkable to the node and to each other; the chance that it is no valid key, about
    2**-128, is met by hashing again)."""
    secret = hmac.digest(node_secret, PAYER_KEY_LABEL + metadata, hashlib.sha256)
    while True:
        try:
            coincurve.PrivateKey(secret)
            return secret
        except ValueError:
            secret = hashlib.sha256(secret).digest()


def payer_id(node_secret: bytes, metadata: bytes) -> bytes:
    """The ``invreq_payer_id`` of our invoice request with ``metadata`` (see :func:`payer_secret`)."""
    return coincurve.PrivateKey(payer_secret(node_secret, metadata)).public_key.format()
