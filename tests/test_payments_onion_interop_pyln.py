"""Interop with Core Lightning's Python Sphinx (pyln-proto): onions built here
are unwrapped by pyln-proto hop by hop, and onions pyln-proto compiles are
peeled here, for routes of 1 to 20 hops."""

from __future__ import annotations

import hashlib

import coincurve
import pytest
from pyln.proto import onion as pyln_onion

from lnpmsg.payments.onion import HopPayload, construct_onion, peel_onion
from lnpmsg.wire.primitives import ShortChannelId, encode_bigsize

KEYS = [hashlib.sha256(b"pyln hop %d" % i).digest() for i in range(20)]
PUBKEYS = [coincurve.PrivateKey(k).public_key.format() for k in KEYS]
PAYMENT_HASH = hashlib.sha256(b"pyln preimage").digest()
SESSION_KEY = hashlib.sha256(b"pyln session").digest()


def _payloads(n: int) -> list[bytes]:
    forward = [HopPayload.forward(50_000 + 10 * (n - i), 700_000 + 40 * (n - i), ShortChannelId(600_000, i, 1)).encode() for i in range(n - 1)]
    return [*forward, HopPayload.final(50_000, 700_000, payment_secret=b"\x77" * 32).encode()]


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_pyln_unwraps_our_onions(n: int) -> None:
    payloads = _payloads(n)
    packet = construct_onion(SESSION_KEY, PUBKEYS[:n], payloads, PAYMENT_HASH).packet
    onion: pyln_onion.RoutingOnion | None = pyln_onion.RoutingOnion.from_bin(packet)
    for i in range(n):
        assert onion is not None
        payload, onion = onion.unwrap(pyln_onion.PrivateKey(KEYS[i]), PAYMENT_HASH)
        assert payload.to_bytes(include_prefix=False) == payloads[i]
    assert onion is None


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_we_peel_pyln_onions(n: int) -> None:
    # payloads of one size: pyln-proto's filler is the size of hops[1:] rather than
    # hops[:-1], so with unequal sizes it cannot unwrap its own onions past hop 0
    payloads = [HopPayload.forward(50_000, 700_000, ShortChannelId(600_000, i, 1)).encode() for i in range(n)]
    hops = [
        pyln_onion.SphinxHop(pyln_onion.PublicKey(coincurve.PublicKey(pub)), encode_bigsize(len(p)) + p)
        for pub, p in zip(PUBKEYS[:n], payloads, strict=True)
    ]
    path = pyln_onion.SphinxPath(hops=hops, assocdata=PAYMENT_HASH, session_key=pyln_onion.Secret(SESSION_KEY))
    packet = path.compile().to_bin()
    # the same session key, keys and payloads: the very same bytes
    assert packet == construct_onion(SESSION_KEY, PUBKEYS[:n], payloads, PAYMENT_HASH).packet
    for i in range(n):
        peeled = peel_onion(KEYS[i], packet, PAYMENT_HASH)
        assert peeled.payload == payloads[i]
        packet = peeled.next_packet or b""
    assert packet == b""
