"""Channels between two ``lnpmsg node`` processes on one chain (A owns the embedded
regtest chain and serves it, B uses it through ``--bitcoind-rpc``), driven by the
CLI as a user would: open, HTLCs both ways (a trimmed one too), close; over TCP,
UDP and ZeroMQ. Over TCP also a node killed with SIGKILL right after it stored
a received ``commitment_signed`` (before its ``revoke_and_ack`` left) or
``revoke_and_ack``, and a
plain restart: each time the channel reestablishes with balances and HTLCs
exact and no commitment reaches the chain.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.channels.manager import CRASH_AT_ENV, CRASH_ENV
from lnpmsg.cli import main
from lnpmsg.testing.processes import start_logged_node

pytestmark = pytest.mark.slow

FUNDING_SAT = 1_000_000
PUSH_MSAT = 300_000_000
LISTEN = {"tcp": "127.0.0.1:0", "udp": "udp://127.0.0.1:0", "zmq": "zmq+tcp://127.0.0.1:0"}
#: seconds a process may take to start, a channel to change state (generous: shared machines)
WAIT = 60


def owner_argv(rpc_listen: str) -> list[str]:
    """The chain owner: the embedded regtest chain, served over Bitcoin Core's JSON-RPC."""
    return ["--chain", "regtest", "--chain-rpc-listen", rpc_listen]


def user_argv(url: str, cookie: Path) -> list[str]:
    """A node on the owner's chain."""
    return ["--bitcoind-rpc", url, "--bitcoind-cookie", str(cookie), "--bitcoind-poll", "0.2"]


async def cli(*argv: object) -> Any:
    """Run ``lnpmsg ARGV --json`` as a shell would; its JSON result (asserting exit 0)."""
    args = [str(a) for a in argv] + ["--json"]
    code, out = await trio.to_thread.run_sync(_run_main, args)
    if code != 0:  # (a message, not a tuple pytest would cut short in the middle: the error is at the end)
        raise AssertionError(f"lnpmsg {' '.join(args)} exited {code}: {out.strip()}")
    return json.loads(out)


def _run_main(args: list[str]) -> tuple[int, str]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(args)
    return code, buffer.getvalue()


async def stop(process: trio.Process, data_dir: Path) -> None:
    """Stop the node (``lnpmsg stop``); killed if it has not exited within WAIT seconds (an
    AssertionError then says so, after the kill: a cleanup never leaves a process behind)."""
    await trio.to_thread.run_sync(_run_main, ["stop", "--data-dir", str(data_dir)])
    with trio.move_on_after(WAIT):
        await process.wait()
        return
    process.kill()
    await process.wait()
    raise AssertionError(f"{data_dir.name} did not exit within {WAIT} s of lnpmsg stop (killed)")


async def start(data_dir: Path, listen: str, *options: str, env: dict[str, str] | None = None) -> tuple[trio.Process, dict[str, Any]]:
    """A node process listening on ``listen`` (its log in DATA_DIR.log) and its summary."""
    return await start_logged_node(data_dir, "--listen", listen, "--no-gossip", *options, env=env, wait=WAIT)


async def channel(data_dir: Path) -> dict[str, Any]:
    (only,) = (await cli("listchannels", "--data-dir", data_dir))["channels"]
    return only


async def wait_channel(data_dir: Path, what: str, check: Any) -> dict[str, Any]:
    """The channel of the node at ``data_dir`` once ``check`` holds; an AssertionError naming ``what``
    and the channel as last listed if it does not within WAIT seconds."""
    c: dict[str, Any] | None = None
    with trio.move_on_after(WAIT):
        while True:
            c = await channel(data_dir)
            if check(c):
                return c
            await trio.sleep(0.2)
    raise AssertionError(f"{data_dir.name}: no {what} within {WAIT} s; the channel as last listed: {c}")


#: how much of the end of each node's log a failure quotes
LOG_TAIL = 6000


def note_logs(exc: BaseException, *data_dirs: Path) -> None:
    """Add the end of each node's log (DATA_DIR.log) to a test's failure: on a loaded machine the
    reason is often there (a node that stopped, a timeout), not in the assertion."""
    for data_dir in data_dirs:
        log_path = Path(f"{data_dir}.log")
        tail = log_path.read_text(errors="replace")[-LOG_TAIL:] if log_path.exists() else "(no log)"
        exc.add_note(f"--- the end of {log_path.name}:\n{tail}")


def quiet(htlcs: int) -> Any:
    """A channel in normal operation with the peer connected and ``htlcs`` HTLCs in our commitment."""
    return lambda c: c["state"] == "normal" and c["connected"] and len(c["htlcs"]) == htlcs


async def call(data_dir: Path, method: str, **params: Any) -> Any:
    return await cli("call", method, json.dumps(params), "--data-dir", data_dir)


async def pay(sender: Path, receiver: Path, amount_msat: int) -> None:
    """An HTLC sender -> receiver, committed on both sides, then fulfilled by the receiver."""
    cid = (await channel(sender))["channel_id"]
    added = await call(sender, "channels.dev_addhtlc", channel=cid, amount_msat=amount_msat)
    got = await wait_channel(receiver, "HTLC in", quiet(1))
    assert got["htlcs"][0]["direction"] == "in" and got["htlcs"][0]["amount_msat"] == amount_msat
    await wait_channel(sender, "HTLC out", quiet(1))
    await call(receiver, "channels.dev_fulfill", channel=cid, htlc_id=added["htlc_id"], preimage=added["preimage"])
    await wait_channel(receiver, "settled", quiet(0))
    await wait_channel(sender, "settled", quiet(0))


async def open_channel(a_dir: Path, b_dir: Path, b_node: str, a_address: str) -> None:
    await cli("faucet", 3_000_000, "--data-dir", a_dir)
    await cli("connect", a_address, "--data-dir", b_dir)
    opened = await cli("fundchannel", b_node, FUNDING_SAT, "--push-msat", PUSH_MSAT, "--data-dir", a_dir)
    assert opened["state"] == "await_ready" and opened["capacity_sat"] == FUNDING_SAT
    await cli("mine", 3, "--data-dir", a_dir)
    a = await wait_channel(a_dir, "ready", quiet(0))
    b = await wait_channel(b_dir, "ready", quiet(0))
    assert a["short_channel_id"] == b["short_channel_id"] and a["funding_outpoint"] == b["funding_outpoint"] == f"{opened['funding_txid']}:{a['funding_outpoint'].split(':')[1]}"
    assert (a["to_local_msat"], b["to_local_msat"]) == (FUNDING_SAT * 1000 - PUSH_MSAT, PUSH_MSAT)


async def expect_balances(a_dir: Path, b_dir: Path, a_msat: int) -> None:
    a, b = await channel(a_dir), await channel(b_dir)
    assert (a["to_local_msat"], a["to_remote_msat"]) == (a_msat, FUNDING_SAT * 1000 - a_msat)
    assert (b["to_local_msat"], b["to_remote_msat"]) == (FUNDING_SAT * 1000 - a_msat, a_msat)


@pytest.mark.parametrize("kind", ["tcp", "udp", "zmq"])
async def test_open_htlcs_both_ways_and_close_between_two_processes(tmp_path: Path, kind: str) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    processes: list[tuple[trio.Process, Path]] = []
    try:
        a, a_info = await start(a_dir, LISTEN[kind], *owner_argv("127.0.0.1:0"))
        processes.append((a, a_dir))
        url, cookie = a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"])
        b, b_info = await start(b_dir, "127.0.0.1:0", *user_argv(url, cookie))
        processes.append((b, b_dir))
        await open_channel(a_dir, b_dir, b_info["node_id"], a_info["addresses"][0])
        a_msat = FUNDING_SAT * 1000 - PUSH_MSAT
        await pay(a_dir, b_dir, 40_000_000)
        await pay(b_dir, a_dir, 15_000_000)
        await pay(b_dir, a_dir, 200_000)  # 200 sat: trimmed from both commitments
        a_msat += -40_000_000 + 15_000_000 + 200_000
        await expect_balances(a_dir, b_dir, a_msat)

        cid = (await channel(b_dir))["channel_id"]
        closed = await cli("closechannel", cid, "--data-dir", b_dir)
        assert closed["state"] == "closed" and closed["closing_txid"]
        await wait_channel(a_dir, "closed", lambda c: c["state"] == "closed")
        mined = await cli("mine", "--data-dir", a_dir)
        with trio.fail_after(WAIT):
            while True:
                funds = await cli("listfunds", "--data-dir", b_dir)
                if any(o["txid"] == closed["closing_txid"] and o["confirmations"] >= 1 for o in funds["outputs"]):
                    break
                await trio.sleep(0.2)
        assert mined["height"] > 0
        (paid,) = [o for o in funds["outputs"] if o["txid"] == closed["closing_txid"]]
        assert paid["amount_sat"] == (FUNDING_SAT * 1000 - a_msat) // 1000  # the fundee pays no closing fee
    except Exception as exc:
        note_logs(exc, a_dir, b_dir)
        raise
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)


@pytest.mark.parametrize("crash_point", ["CommitmentSigned", "RevokeAndAck"])
async def test_sigkill_after_storing_an_update_then_restart_reestablish_and_close(tmp_path: Path, crash_point: str) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    processes: list[tuple[trio.Process, Path]] = []
    try:
        a, a_info = await start(a_dir, "127.0.0.1:0", *owner_argv("127.0.0.1:0"))
        processes.append((a, a_dir))
        url, cookie = a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"])
        b_options = user_argv(url, cookie)
        # B kills itself (SIGKILL) the moment the first commitment_signed it receives is on disk
        # (its revoke_and_ack not sent), or the first revoke_and_ack (the HTLC just became
        # irrevocable; nothing told yet): both happen while A's first HTLC is committed.
        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options, env={CRASH_ENV: crash_point})
        processes.append((b, b_dir))
        await open_channel(a_dir, b_dir, b_info["node_id"], a_info["addresses"][0])
        a_msat = FUNDING_SAT * 1000 - PUSH_MSAT
        cid = (await channel(a_dir))["channel_id"]

        added = await call(a_dir, "channels.dev_addhtlc", channel=cid, amount_msat=25_000_000)
        with trio.move_on_after(WAIT):
            await b.wait()
        assert b.returncode == -9, f"b was to kill itself once it stored a {crash_point}: exit status {b.returncode}"
        processes.remove((b, b_dir))

        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options)
        processes.append((b, b_dir))
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        got = await wait_channel(b_dir, "HTLC in after the crash", quiet(1))
        assert got["htlcs"][0]["amount_msat"] == 25_000_000 and got["htlcs"][0]["payment_hash"] == added["payment_hash"]
        await wait_channel(a_dir, "HTLC out", quiet(1))
        await call(b_dir, "channels.dev_fulfill", channel=cid, htlc_id=added["htlc_id"], preimage=added["preimage"])
        await wait_channel(b_dir, "settled", quiet(0))
        await wait_channel(a_dir, "settled", quiet(0))
        a_msat -= 25_000_000
        await expect_balances(a_dir, b_dir, a_msat)
        assert (await cli("getchaininfo", "--data-dir", a_dir))["mempool"] == 0  # no commitment broadcast

        # A plain restart of B with an HTLC of B's in flight.
        added = await call(b_dir, "channels.dev_addhtlc", channel=cid, amount_msat=9_000_000)
        await wait_channel(a_dir, "HTLC in", quiet(1))
        await wait_channel(b_dir, "HTLC out", quiet(1))
        await stop(b, b_dir)
        processes.remove((b, b_dir))
        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options)
        processes.append((b, b_dir))
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        await wait_channel(b_dir, "reestablished", quiet(1))
        # (A takes B's channel_reestablish after B took A's: A's fulfill waits for A's side too)
        await wait_channel(a_dir, "reestablished", quiet(1))
        await call(a_dir, "channels.dev_fulfill", channel=cid, htlc_id=added["htlc_id"], preimage=added["preimage"])
        await wait_channel(a_dir, "settled", quiet(0))
        await wait_channel(b_dir, "settled", quiet(0))
        a_msat += 9_000_000
        await expect_balances(a_dir, b_dir, a_msat)
        assert (await cli("getchaininfo", "--data-dir", a_dir))["mempool"] == 0

        closed = await cli("closechannel", cid, "--data-dir", a_dir)
        assert closed["state"] == "closed"
        await wait_channel(b_dir, "closed", lambda c: c["state"] == "closed")
        assert (await cli("getchaininfo", "--data-dir", a_dir))["mempool"] == 1  # the closing transaction only
    except Exception as exc:
        note_logs(exc, a_dir, b_dir)
        raise
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)


async def test_sigkill_of_the_fundee_between_storing_funding_created_and_sending_funding_signed(tmp_path: Path) -> None:
    """B (the fundee) is killed at its 2nd persistence point (LNPMSG_DEV_CRASH_AT_PERSIST=2): the
    funding_created it signed is on disk, its funding_signed never left. A's fundchannel fails
    cleanly and A never broadcasts the funding; B, restarted, holds the channel it signed and
    broadcasts nothing; a new open between the two then works."""
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    processes: list[tuple[trio.Process, Path]] = []
    try:
        a, a_info = await start(a_dir, "127.0.0.1:0", *owner_argv("127.0.0.1:0"))
        processes.append((a, a_dir))
        url, cookie = a_info["chain_rpc"]["url"], Path(a_info["chain_rpc"]["cookie"])
        b_options = user_argv(url, cookie)
        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options, env={CRASH_AT_ENV: "2:persisted"})
        processes.append((b, b_dir))
        await cli("faucet", 3_000_000, "--data-dir", a_dir)
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        args = ["fundchannel", b_info["node_id"], str(FUNDING_SAT), "--data-dir", str(a_dir), "--json"]
        code, out = await trio.to_thread.run_sync(_run_main, args)
        with trio.fail_after(WAIT):
            await b.wait()
        assert b.returncode == -9
        processes.remove((b, b_dir))
        assert code != 0, out  # no funding_signed: the open failed
        (lost,) = (await cli("listchannels", "--data-dir", a_dir))["channels"]
        assert lost["state"] in ("closed", "failed")
        assert (await cli("getchaininfo", "--data-dir", a_dir))["mempool"] == 0  # the funding was never broadcast

        b, b_info = await start(b_dir, "127.0.0.1:0", *b_options)
        processes.append((b, b_dir))
        (signed,) = (await cli("listchannels", "--data-dir", b_dir))["channels"]
        assert signed["state"] == "await_ready" and signed["opener"] == "remote"  # kept: B signed A's commitment
        await cli("connect", a_info["addresses"][0], "--data-dir", b_dir)
        opened = await cli("fundchannel", b_info["node_id"], FUNDING_SAT, "--push-msat", PUSH_MSAT, "--data-dir", a_dir)
        await cli("mine", 3, "--data-dir", a_dir)
        with trio.fail_after(WAIT):
            while True:
                listed = (await cli("listchannels", "--data-dir", b_dir))["channels"]
                new = [c for c in listed if c["channel_id"] == opened["channel_id"]]
                if new and new[0]["state"] == "normal":
                    break
                await trio.sleep(0.2)
        assert new[0]["to_local_msat"] == PUSH_MSAT
        stale = [c for c in listed if c["channel_id"] == signed["channel_id"]]
        assert stale and stale[0]["state"] == "await_ready"  # its funding never comes (BOLT 2: forgotten after 2016 blocks)
        assert (await cli("getchaininfo", "--data-dir", a_dir))["mempool"] == 0  # only the new funding, now mined
    except Exception as exc:
        note_logs(exc, a_dir, b_dir)
        raise
    finally:
        for process, data_dir in reversed(processes):
            if process.returncode is None:
                await stop(process, data_dir)


def test_a_failure_quotes_the_end_of_each_nodes_log(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("the start\n" + "." * LOG_TAIL + "\nthe last line\n")
    failure = AssertionError("no HTLC in after the crash")
    note_logs(failure, tmp_path / "a", tmp_path / "b")
    a_note, b_note = failure.__notes__
    assert a_note.startswith("--- the end of a.log:") and a_note.endswith("the last line\n") and "the start" not in a_note
    assert b_note == "--- the end of b.log:\n(no log)"


async def test_a_node_that_does_not_start_in_time_is_killed_and_its_log_quoted(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="did not start within 0.01 s \\(killed\\)"):
        await start_logged_node(tmp_path / "a", "--listen", "127.0.0.1:0", *owner_argv("127.0.0.1:0"), wait=0.01)


async def test_a_failed_command_is_reported_whole(tmp_path: Path) -> None:
    with pytest.raises(AssertionError) as failed:
        await cli("call", "channels.dev_fulfill", json.dumps({"channel": "ab" * 32, "htlc_id": 0, "preimage": "00" * 32}), "--data-dir", tmp_path)
    assert str(failed.value).startswith("lnpmsg call channels.dev_fulfill") and "no node" in str(failed.value).lower()
