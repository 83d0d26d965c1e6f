"""Channels on chain between two ``lnpmsg node`` processes on one chain (A owns the
embedded regtest chain, B uses it over JSON-RPC), driven by the CLI.

B is killed with SIGKILL right after A force-closes (A's commitment is in the
mempool, with an HTLC to B whose preimage B's monitor knows). The chain moves
on without B until the HTLC is three blocks from its expiry (A may time it out
from there on); B restarts, rebuilds its monitor from its log, replays the
blocks from the channel's start and claims the HTLC with its preimage in time;
every output ends in a wallet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from test_channels_nodes import PUSH_MSAT, WAIT, call, channel, cli, open_channel, owner_argv, start, stop, user_argv

pytestmark = pytest.mark.slow

DELAY = 6


async def wait_onchain(data_dir: Path, check: Any) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        while True:
            c = await channel(data_dir)
            if c.get("onchain") and check(c["onchain"]):
                return c["onchain"]
            await trio.sleep(0.2)


async def mempool(a_dir: Path) -> int:
    return int((await cli("getchaininfo", "--data-dir", a_dir))["mempool"])


async def test_sigkill_after_the_peer_broadcasts_its_commitment_then_restart_near_the_deadline(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    processes: list[tuple[trio.Process, Path]] = []
    try:
        a, a_info = await start(a_dir, "127.0.0.1:0", *owner_argv("127.0.0.1:0"), "--channel-to-self-delay", str(DELAY))
        processes.append((a, a_dir))
        url, cookie = a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"])
        b_options = [*user_argv(url, cookie), "--channel-to-self-delay", str(DELAY)]
        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options)
        processes.append((b, b_dir))
        await open_channel(a_dir, b_dir, b_info["node_id"], a_info["addresses"][0])
        cid = (await channel(a_dir))["channel_id"]
        tip = (await cli("getchaininfo", "--data-dir", a_dir))["height"]
        expiry = tip + 20
        added = await call(a_dir, "channels.dev_addhtlc", channel=cid, amount_msat=50_000_000, cltv_expiry=expiry)
        with trio.fail_after(WAIT):
            while len((await channel(b_dir))["htlcs"]) != 1 or (await channel(a_dir))["connected"] is False:
                await trio.sleep(0.2)
        await call(b_dir, "channels.dev_preimage", channel=cid, preimage=added["preimage"])

        forced = await cli("closechannel", cid, "--force", "--data-dir", a_dir)
        assert forced["state"] == "failed" and forced["commitment_txid"]
        with trio.fail_after(WAIT):
            while await mempool(a_dir) == 0:
                await trio.sleep(0.1)
        b.kill()  # SIGKILL
        with trio.fail_after(WAIT):
            await b.wait()
        assert b.returncode == -9
        processes.remove((b, b_dir))

        # the chain moves on without B until the HTLC is 3 blocks from A's timeout
        tip = (await cli("getchaininfo", "--data-dir", a_dir))["height"]
        await cli("mine", expiry - 3 - tip, "--data-dir", a_dir)
        status = await wait_onchain(a_dir, lambda o: o["state"] == "resolving")
        assert status["commitment"]["txid"] == forced["commitment_txid"] and status["commitment"]["kind"] == "ours"

        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options)
        processes.append((b, b_dir))
        status = await wait_onchain(b_dir, lambda o: o["state"] == "resolving")
        assert status["commitment"]["kind"] == "theirs_current"
        # B's claim of the HTLC (with the preimage) waits in the mempool before A may time it out
        with trio.fail_after(WAIT):
            while True:
                status = (await channel(b_dir))["onchain"]
                htlc = [o for o in status["outputs"] if "htlc" in o["what"]]
                if htlc and htlc[0]["state"] == "broadcast" and await mempool(a_dir) >= 1:
                    break
                await trio.sleep(0.2)
        # B's claims confirm; A's to_local waits for its CSV
        for _ in range(DELAY + 4):
            await cli("mine", "--data-dir", a_dir)
            await trio.sleep(0.5)
        status = await wait_onchain(b_dir, lambda o: o["locked_sat"] == 0)
        (claimed,) = [o for o in status["outputs"] if "htlc" in o["what"]]
        assert claimed["state"] == "swept" and claimed["by"] == "us" and claimed["height"] < expiry
        status = await wait_onchain(a_dir, lambda o: o["locked_sat"] == 0)
        assert all(o["by"] == "us" for o in status["outputs"] if o["state"] == "swept" and o["what"] == "to_local")
        # B's wallet holds its balance and the HTLC (less the claims' fees)
        with trio.fail_after(WAIT):
            while True:
                funds = await cli("listfunds", "--data-dir", b_dir)
                total = sum(o["amount_sat"] for o in funds["outputs"] if o["confirmations"] >= 1)
                if total > PUSH_MSAT // 1000 + 50_000 - 10_000:
                    break
                await trio.sleep(0.5)
        assert total <= PUSH_MSAT // 1000 + 50_000
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)
