"""The node log: aioquic's per-connection INFO lines stay out of it unless --log-level debug."""

from __future__ import annotations

import logging
import signal

import trio

from lnpmsg.cli import setup_logging
from lnpmsg.testing.nodes import make_node, running
from lnpmsg.testing.processes import finish_process, start_node_process


def test_quic_loggers_follow_debug_only() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info")
        assert logging.getLogger("quic").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("lnpmsg.node").getEffectiveLevel() == logging.INFO
        setup_logging("debug")
        assert logging.getLogger("quic").getEffectiveLevel() == logging.DEBUG
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.getLogger("quic").setLevel(logging.NOTSET)


async def test_a_quic_peer_leaves_no_aioquic_lines_in_the_node_log(tmp_path) -> None:
    process, info = await start_node_process(tmp_path / "n", "--listen", "udp://127.0.0.1:0", "--no-gossip")
    try:
        (udp,) = [a for a in info["addresses"] if a.startswith("udp://")]
        dialer = make_node(listen=False)
        async with running(dialer):
            peer = await dialer.connect(udp)
            assert await peer.ping() >= 0
    finally:
        process.send_signal(signal.SIGINT)
        code, stderr = await finish_process(process)
    assert code == 0 and "connected (inbound, udp" in stderr
    assert " quic: " not in stderr and "[INF] quic" not in stderr
