"""Dials stuck inside Tor end early with what happened; a data dir is made private.

Tor stuck building a circuit cannot be produced on demand, so a stand-in
SOCKS port plays it: it answers the SOCKS greeting, then never answers
CONNECT (what a hung circuit looks like from outside Tor).
"""

import functools
import logging
import stat

import pytest
import trio

from lnpmsg.node.identity import load_or_create_key
from lnpmsg.node.node import ConnectError
from lnpmsg.testing.nodes import make_node, running
from lnpmsg.transports.tor.errors import SocksError
from lnpmsg.transports.tor.transport import TorTransport


async def _stuck_socks_port(nursery: trio.Nursery) -> tuple[int, list[bytes]]:
    """A SOCKS5 port that accepts user/password auth, then never answers CONNECT (a stand-in)."""
    connects: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        greeting = await stream.receive_some(64)
        await stream.send_all(b"\x05\x02" if b"\x02" in greeting[2:] else b"\x05\x00")
        if b"\x02" in greeting[2:]:
            await stream.receive_some(600)
            await stream.send_all(b"\x01\x00")
        connects.append(await stream.receive_some(600))
        await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], connects


async def test_a_dial_stuck_inside_tor_is_retried_once_then_fails_naming_the_socks_stage(caplog):
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        port, connects = await _stuck_socks_port(nursery)
        tor = TorTransport(("127.0.0.1", port), allow_clearnet=True, connect_timeout=3, first_attempt_timeout=1)
        with trio.fail_after(20), pytest.raises(SocksError) as failed:
            await tor.dial("198.51.100.7:9735")
        assert "Tor could not connect: 198.51.100.7:9735" in str(failed.value)
        assert "waiting for CONNECT reply" in str(failed.value) and "building a circuit" in str(failed.value)
        assert len(connects) == 2  # the first attempt, then one on a new circuit
        assert "trying once more on a new circuit" in caplog.text
        nursery.cancel_scope.cancel()


async def test_onion_only_connect_to_an_unreachable_clearnet_host_says_where_it_stuck(caplog):
    async with trio.open_nursery() as nursery:
        port, _ = await _stuck_socks_port(nursery)
        node = make_node(listen=False, onion_only=True, tor_socks=("127.0.0.1", port))
        node.transports["tor"].first_attempt_timeout = 0.5
        async with running(node):
            with trio.fail_after(30), pytest.raises(ConnectError) as failed:
                await node.connect("02" + "11" * 32 + "@198.51.100.7:9735", timeout=2)
            assert "stuck at: dialing 198.51.100.7:9735 over tor" in str(failed.value)
            assert "connect to" in caplog.text and "stuck at" in caplog.text
        nursery.cancel_scope.cancel()


def test_an_existing_data_dir_open_to_others_is_tightened(tmp_path, caplog):
    data_dir = tmp_path / "node"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    load_or_create_key(data_dir)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert "tightened to 700" in caplog.text
    caplog.clear()
    load_or_create_key(data_dir)  # already private: nothing to say
    assert "tightened" not in caplog.text
