"""The chain and wallet survive crashes and damage, tried as a user would:
real ``lnpmsg node --chain regtest`` processes, ``kill -9``, the CLI."""

from __future__ import annotations

import json
import signal

import trio

from lnpmsg.cli import main
from lnpmsg.testing.processes import finish_process, start_node_process


async def cli(capsys, *argv):
    code = await trio.to_thread.run_sync(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def cli_json(capsys, *argv):
    code, out, err = await cli(capsys, *argv, "--json")
    return code, json.loads(out) if out else {"stderr": err}


async def stop(process: trio.Process) -> str:
    process.send_signal(signal.SIGINT)
    code, stderr = await finish_process(process)
    assert code == 0, stderr
    return stderr


async def test_damaged_block_files_stop_the_start_and_reindex_rebuilds_them(capsys, tmp_path):
    data_dir = tmp_path / "node"
    d = ("--data-dir", data_dir)
    process, _ = await start_node_process(data_dir, "--chain", "regtest")
    try:
        code, mined = await cli_json(capsys, "mine", 120, *d)
        assert code == 0
    finally:
        await stop(process)
    blk = data_dir / "chain" / "blocks" / "blk00000.dat"
    data = bytearray(blk.read_bytes())
    for i in range(64):
        data[20_000 + i] ^= 0xFF
    blk.write_bytes(bytes(data))

    process, info = await start_node_process(data_dir, "--chain", "regtest")
    code, stderr = await finish_process(process)
    assert info is None and code == 1 and "Traceback" not in stderr
    assert "block files in" in stderr and "are damaged" in stderr and "--reindex" in stderr

    process, info = await start_node_process(data_dir, "--chain", "regtest", "--reindex")
    try:
        assert info is not None
        code, chain = await cli_json(capsys, "getchaininfo", *d)
        assert code == 0 and chain["height"] == 120 and chain["tip"] == mined["tip"]
    finally:
        stderr = await stop(process)
    assert "rebuilding the kernel's blocks and chainstate" in stderr
