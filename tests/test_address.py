"""The one peer address syntax: parse, print, round-trip."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lnpmsg.transports.address import AddressError, PeerAddress, parse_peer_address

NODE = "02" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        (f"{NODE}@127.0.0.1:9735", "tcp", "127.0.0.1:9735"),
        (f"{NODE}@127.0.0.1", "tcp", "127.0.0.1:9735"),
        (f"tcp://{NODE}@[::1]:1000", "tcp", "[::1]:1000"),
        (f"bolt://{NODE}@example.com:9735", "tcp", "example.com:9735"),
        (f"lnp://{NODE}@10.0.0.1:1", "tcp", "10.0.0.1:1"),
        (f"{NODE}@" + "a" * 56 + ".onion:9735", "tor", "a" * 56 + ".onion:9735"),
        (f"tor://{NODE}@example.com:80", "tor", "example.com:80"),
        (f"udp://{NODE}@127.0.0.1:9735", "udp", "127.0.0.1:9735"),
        (f"lnpu://{NODE}@127.0.0.1:9", "udp", "127.0.0.1:9"),
        (f"zmq+tcp://{NODE}@127.0.0.1:5555", "zmq", "tcp://127.0.0.1:5555"),
        (f"lnpz://{NODE}@127.0.0.1:5555", "zmq", "tcp://127.0.0.1:5555"),
        (f"zmq+ipc://{NODE}@/run/lnp.sock", "zmq", "ipc:///run/lnp.sock"),
    ],
)
def test_forms(text, kind, target):
    address = parse_peer_address(text)
    assert (address.kind, address.target, address.node_id) == (kind, target, bytes.fromhex(NODE))
    assert parse_peer_address(str(address)) == address


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("127.0.0.1:9735", "expected NODEID@host:port"),
        (f"{NODE[:-2]}@127.0.0.1:1", "66 hex"),
        ("04" + "ab" * 32 + "@h:1", "02 or 03"),
        ("zz" * 33 + "@h:1", "not hex"),
        (f"{NODE}@h:99999", "port"),
        (f"{NODE}@::1:9735", "brackets"),
        (f"http://{NODE}@h:1", "unknown scheme"),
        (f"zmq+ipc://{NODE}@relative", "absolute"),
    ],
)
def test_errors_say_why(text, reason):
    with pytest.raises(AddressError, match=reason):
        parse_peer_address(text)


@given(
    kind=st.sampled_from(["tcp", "udp", "tor"]),
    # an .onion host always means Tor, so it has its own test above
    host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,5})?", fullmatch=True).filter(lambda h: not h.endswith(".onion")),
    port=st.integers(0, 65535),
    node=st.binary(min_size=32, max_size=32),
    prefix=st.sampled_from([2, 3]),
)
def test_round_trip(kind, host, port, node, prefix):
    node_id = bytes([prefix]) + node
    address = PeerAddress(kind, f"{host}:{port}", node_id)
    assert parse_peer_address(str(address)) == address


@given(st.text(max_size=200))
def test_garbage_gives_address_error_only(text):
    try:
        parse_peer_address(text)
    except AddressError:
        pass
