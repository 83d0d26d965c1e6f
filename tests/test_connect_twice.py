"""``connect`` to a peer that is already connected keeps the live session (its calls
and subscriptions go on); ``--reconnect`` replaces it, with a log line and an event."""

from __future__ import annotations


import trio

from lnpmsg.cli import main
from lnpmsg.rpc.control import ControlServer
from lnpmsg.testing.nodes import address_of, make_node, running


async def test_connect_twice_from_the_cli_keeps_the_session_unless_reconnect(data_dir, capsys):
    a = make_node()
    a.mount(ControlServer(data_dir))
    b = make_node()

    async def cli(*argv):
        code = await trio.to_thread.run_sync(main, [str(x) for x in argv])
        return code, capsys.readouterr().out

    async with running(a, b):
        code, out = await cli("connect", address_of(b), "--data-dir", data_dir)
        assert code == 0 and out.startswith(f"connected to {b.node_id.hex()}")
        first = a.peers[b.node_id]
        code, out = await cli("connect", address_of(b), "--data-dir", data_dir)
        assert code == 0 and a.peers[b.node_id] is first and first.is_ready
        code, out = await cli("connect", address_of(b), "--reconnect", "--data-dir", data_dir)
        assert code == 0
        with trio.fail_after(10):
            await first.closed.wait()
        assert a.peers[b.node_id] is not first and first.close_reason == "replaced by a new connection from the same node"


async def test_two_concurrent_dials_of_one_peer_make_one_connection():
    a, b = make_node(), make_node()
    async with running(a, b):
        got = []

        async def dial() -> None:
            got.append(await a.connect(address_of(b)))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(dial)
        assert len(got) == 3 and got[0] is got[1] is got[2] is a.peers[b.node_id] and got[0].is_ready
        assert len(b.peers) == 1 and b.peers[a.node_id].is_ready
