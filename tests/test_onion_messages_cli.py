"""Onion messages between three ``lnpmsg node`` processes on 127.0.0.1: A -> B -> C with a
reply path, C's reply back to A, the commands' errors, and the option that turns the app off."""

from __future__ import annotations

import json
import signal

import pytest

from cli_in_process import cli
from lnpmsg.testing.processes import finish_process, node_processes, start_node_process


async def cli_json(capsys, *argv):  # type: ignore[no-untyped-def]
    code, out, _ = await cli(capsys, *argv, "--json")
    return code, json.loads(out)


async def test_a_message_from_a_through_b_to_c_and_the_reply(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dirs = [tmp_path / name for name in "abc"]
    async with node_processes() as running:
        infos = [await running.start(d) for d in dirs]
        a, b, c = ([f"--data-dir={d}"] for d in dirs)
        a_id, b_id, c_id = (i["node_id"] for i in infos)
        b_address = f"{b_id}@{infos[1]['listen'][0]}"
        assert (await cli(capsys, "connect", b_address, *a))[0] == 0
        assert (await cli(capsys, "connect", b_address, *c))[0] == 0
        code, peers = await cli_json(capsys, "listpeers", *a)
        names = [n for p in peers["peers"] for n in p["feature_names"]]
        assert code == 0 and any("onion_messages" in n and "optional" in n for n in names), names

        # A knows no path to C by itself (no gossip graph): a clear error
        code, out, err = await cli(capsys, "sendonionmessage", c_id, "--tlv", "65=00", *a)
        assert code == 1 and "does not announce onion messages" in err, err
        code, sent = await cli_json(capsys, "sendonionmessage", c_id, "--via", b_id, "--tlv", "65=68656c6c6f", "--reply-path", *a)
        assert code == 0 and sent["first_hop"] == b_id and sent["reply_path"], sent

        got = await _wait_messages(capsys, c, 1)
        assert got[0]["records"] == {"65": "68656c6c6f"} and got[0]["has_reply_path"] and got[0]["from_peer"] == b_id
        code, out, _ = await cli(capsys, "replyonionmessage", str(got[0]["id"]), "--tlv", "67=776f726c64", *c)
        assert code == 0 and out.startswith("sent ") and b_id in out, out

        back = await _wait_messages(capsys, a, 1)
        assert back[0]["records"] == {"67": "776f726c64"} and back[0]["reply_to"] == sent["id"]
        code, out, _ = await cli(capsys, "listonionmessages", *a)
        assert code == 0 and f"reply to {sent['id']}: 67=776f726c64" in out
        code, out, err = await cli(capsys, "replyonionmessage", "99", "--tlv", "65=00", *a)
        assert code == 1 and "no received message 99" in err
        for d in (a, b, c):
            assert (await cli(capsys, "stop", *d))[0] == 0


async def _wait_messages(capsys, data_dir, count):  # type: ignore[no-untyped-def]
    import trio

    with trio.fail_after(20):
        while True:
            code, listed = await cli_json(capsys, "listonionmessages", *data_dir)
            assert code == 0
            if len(listed["messages"]) >= count:
                return listed["messages"]
            await trio.sleep(0.1)


@pytest.mark.parametrize("argv", [["sendonionmessage", "02" + "11" * 32, "--tlv", "6=00"], ["sendonionmessage", "02" + "11" * 32, "--tlv", "65=zz"]])
def test_arguments_are_checked_before_calling(capsys, tmp_path, argv) -> None:  # type: ignore[no-untyped-def]
    from lnpmsg.cli import main

    with pytest.raises(SystemExit) as exc:
        main([*argv, "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and ("type of 64 or more" in err or "the value is hex" in err), err


async def test_without_the_app_the_commands_say_how_to_get_it(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    process, info = await start_node_process(tmp_path / "n", "--no-onion-messages", "--no-gossip")
    try:
        code, out, err = await cli(capsys, "listonionmessages", f"--data-dir={tmp_path / 'n'}")
        assert code == 1 and "without --no-onion-messages" in err
    finally:
        process.send_signal(signal.SIGINT)
        code, stderr = await finish_process(process)
    assert code == 0
