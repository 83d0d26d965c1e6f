"""A static channel backup restored with Electrum 4.3.4 (Debian's, a separate process) as the
peer: an ``lnpmsg node`` opens a channel to Electrum, exports its backup, loses its channel
store (the seed material stays), restores the backup with ``lnpmsg restorechannels``; it dials
Electrum, asks it to close, Electrum force-closes and lnpmsg's monitor sweeps its balance.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from test_channels_nodes import WAIT, cli, stop
from test_channels_onchain_electrum import by_point, electrum_peer, mine_until, onchain, start_node

pytestmark = pytest.mark.slow

CHANNEL_SAT = 400_000
PUSH_MSAT = 100_000_000


async def test_restored_channels_are_force_closed_by_electrum_and_swept(tmp_path: Path) -> None:
    async with electrum_peer(tmp_path) as peer:
        node_dir, w = peer.node_dir, peer.wallet
        d = ("--data-dir", node_dir)
        opened = await cli("fundchannel", peer.electrum_id, CHANNEL_SAT, "--push-msat", PUSH_MSAT, *d)
        channel_id = opened["channel_id"]
        await cli("mine", 4, *d)
        await trio.to_thread.run_sync(
            w.wait_for, lambda: [c["state"] for c in w.call("list_channels")] == ["OPEN"], "open", WAIT
        )
        (listed,) = (await cli("listchannels", *d))["channels"]
        point = listed["funding_outpoint"]
        ours_msat = listed["to_local_msat"]
        exported = await cli("exportchannelbackup", tmp_path / "safe.backup", *d)
        assert exported["channels"] == 1

        # the node loses its channel store; its node key, wallet and channel seed are kept
        await stop(peer.node, node_dir)
        seed = (node_dir / "channels" / "channel_seed").read_bytes()
        shutil.rmtree(node_dir / "channels")
        (node_dir / "channels").mkdir()
        (node_dir / "channels" / "channel_seed").write_bytes(seed)
        peer.node, peer.info = await start_node(node_dir, electrum=peer.info["electrum"])
        assert (await cli("listchannels", *d))["channels"] == []
        start_sat = (await cli("listfunds", *d))["total_sat"]
        restored = await cli("restorechannels", tmp_path / "safe.backup", *d)
        assert [c["state"] for c in restored["channels"]] == ["restored_awaiting_close"]

        # lnpmsg dials Electrum and asks it to close; Electrum broadcasts its commitment
        async def swept() -> bool:
            status = await onchain(node_dir, channel_id)
            return bool(status) and status["state"] != "open" and status["locked_sat"] == 0
        await mine_until(node_dir, w, swept, "our to_remote from Electrum's commitment", 60)
        status = await onchain(node_dir, channel_id)
        assert status is not None and status["commitment"]["kind"] == "theirs_unknown"
        await cli("mine", 1, *d)  # the sweep of to_remote to a wallet address
        with trio.fail_after(WAIT):
            while (await cli("listfunds", *d))["total_sat"] - start_sat < ours_msat // 1000 - 10_000:
                await trio.sleep(0.3)
        gained = (await cli("listfunds", *d))["total_sat"] - start_sat
        assert ours_msat // 1000 - 10_000 < gained <= ours_msat // 1000
        assert by_point(w, point)["state"] in ("FORCE_CLOSING", "CLOSED", "REDEEMED")
