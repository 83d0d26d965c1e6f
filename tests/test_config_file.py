"""``lnpmsg node``'s config file: DATA_DIR/lnpmsg.toml or --config FILE, keyed like the flags."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest

from lnpmsg.cli import build_parser, hoist_global_options
from lnpmsg.runtime.config_file import ConfigError, apply_config, config_keys, read_config
from lnpmsg.testing.processes import PROCESS_WAIT, lnpmsg_argv


def node_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices["node"]


def parse_with(tmp_path: Path, text: str, *argv: str) -> argparse.Namespace:
    """What ``lnpmsg node ARGV`` sees with ``text`` as its --config file."""
    config = tmp_path / "conf.toml"
    config.write_text(text)
    parser, node = node_parser()
    full = ["node", *argv]
    args = parser.parse_args(full)
    apply_config(parser, node, full, args, read_config(config, node, may_set_data_dir=True))
    return args


def test_every_long_option_is_a_key() -> None:
    _, node = node_parser()
    keys = config_keys(node)
    for option in ("listen", "no-listen", "connect", "node-key-file", "tor-socks", "tor-option", "no-gossip", "gossip-import", "app", "log-level", "feature"):
        assert option in keys
    assert "help" not in keys and "config" not in keys
    # a flag added later gets its key without anything else to do
    assert config_keys(node)["chain-rpc-listen"].dest == "chain_rpc_listen"
    node.add_argument("--some-later-flag", metavar="ADDR")
    assert config_keys(node)["some-later-flag"].dest == "some_later_flag"


def test_values_are_converted_like_flags(tmp_path: Path) -> None:
    args = parse_with(
        tmp_path,
        'listen = ["127.0.0.1:1", "udp://127.0.0.1:2"]\n'
        'connect = "02aa@127.0.0.1:3"\n'
        "no-gossip = true\nno-control = false\n"
        "feature = [331, 333]\n"
        "tor-timeout = 30\n"
        'log-level = "debug"\n'
        'node-key-file = "~/key"\n'
        'app = ["examples.greeter_app:app"]\n',
    )
    assert args.listen == ["127.0.0.1:1", "udp://127.0.0.1:2"]
    assert args.connect == ["02aa@127.0.0.1:3"]  # one value is a list of one
    assert args.no_gossip is True and args.no_control is False
    assert args.feature == [331, 333] and args.tor_timeout == 30.0 and args.log_level == "debug"
    assert args.node_key_file == Path("~/key").expanduser()
    assert args.app == ["examples.greeter_app:app"]


def test_flags_override_the_file(tmp_path: Path) -> None:
    text = 'listen = ["127.0.0.1:1"]\nlog-level = "debug"\nno-gossip = true\nnode-key-file = "/k"\nnetwork = "signet"\n'
    args = parse_with(tmp_path, text, "--listen", "127.0.0.1:9", "--log-level", "error", "--node-key", "11" * 32)
    assert args.listen == ["127.0.0.1:9"]  # a repeated flag replaces the whole list
    assert args.log_level == "error"
    assert args.node_key == "11" * 32 and args.node_key_file is None  # the flag wins its exclusive group
    assert args.no_gossip is True and args.network == "signet"  # what the flags do not say comes from the file
    # without the file, the defaults
    parser, _ = node_parser()
    plain = parser.parse_args(["node"])
    assert plain.no_gossip is False and plain.network is None and plain.listen is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('chain_rpc_lisen = "x"\n', "unknown key 'chain_rpc_lisen'"),
        ('lisen = ["x"]\n', "unknown key 'lisen' (did you mean 'listen'?)"),
        ('no-gossip = "yes"\n', "key 'no-gossip' is a switch: write no-gossip = true"),
        ("listen = 9735\n", "key 'listen' takes a string in quotes"),
        ('network = "mainnet"\n', "key 'network' is one of 'bitcoin', 'testnet', 'signet', 'regtest', not 'mainnet'"),
        ('tor-timeout = "soon"\n', "key 'tor-timeout': invalid value 'soon'"),
        ("feature = [1.5]\n", "key 'feature' takes a whole number"),
        ('log-level = ["debug"]\n', "key 'log-level' takes one value"),
        ("[tor]\ncontrol = 1\n", "key 'tor' takes true or false, not a table"),
        ("[greeter]\ngreeting = 1\n", "unknown key 'greeter'; the keys are the long options of 'lnpmsg node --help'"),
        ('tor = true\ntor-control = "127.0.0.1:9051"\n', "keys 'tor' and 'tor-control' exclude each other"),
        ("listen = [\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_with(tmp_path, text)


def test_data_dir_only_in_a_chosen_file(tmp_path: Path) -> None:
    _, node = node_parser()
    config = tmp_path / "lnpmsg.toml"
    config.write_text(f'data-dir = "{tmp_path / "other"}"\n')
    with pytest.raises(ConfigError, match="'data-dir' cannot be set in the data dir's own config file"):
        read_config(config, node, may_set_data_dir=False)
    assert read_config(config, node, may_set_data_dir=True) == {"data_dir": tmp_path / "other"}


def node_process(*argv: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lnpmsg_argv("node", *argv), capture_output=True, text=True, timeout=PROCESS_WAIT, cwd=cwd, check=False)


def test_the_data_dirs_file_is_read_and_errors_exit_2(tmp_path: Path) -> None:
    data_dir = tmp_path / "n"
    data_dir.mkdir()
    (data_dir / "lnpmsg.toml").write_text('no-gosip = true\n')
    result = node_process("--data-dir", data_dir)
    assert result.returncode == 2 and "unknown key 'no-gosip' (did you mean 'no-gossip'?)" in result.stderr
    assert str(data_dir / "lnpmsg.toml") in result.stderr and "Traceback" not in result.stderr
    # a bad value in the file fails like the flag does (exit 2, the same message)
    (data_dir / "lnpmsg.toml").write_text('node-key = "xyz"\nno-listen = true\n')
    result = node_process("--data-dir", data_dir)
    assert result.returncode == 2 and "64 hex characters" in result.stderr
    missing = node_process("--data-dir", data_dir, "--config", tmp_path / "nope.toml")
    assert missing.returncode == 2 and f"config file {tmp_path / 'nope.toml'} does not exist" in missing.stderr


async def test_a_node_runs_from_its_config_file(tmp_path: Path) -> None:
    from lnpmsg.testing.processes import finish_process, start_node_process

    data_dir = tmp_path / "n"
    data_dir.mkdir()
    (data_dir / "lnpmsg.toml").write_text(f'node-key = "{"11" * 32}"\nno-gossip = true\nfeature = [331]\nlog-level = "warning"\n')
    process, info = await start_node_process(data_dir)  # also --listen 127.0.0.1:0 --json on the command line
    process.send_signal(2)
    code, stderr = await finish_process(process)
    assert code == 0 and info["node_id"] == "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
    assert "gossip" not in info["apps"] and info["listen"][0].startswith("127.0.0.1:")
    assert "[INF]" not in stderr  # log-level warning from the file


def test_help_says_so() -> None:
    result = subprocess.run(lnpmsg_argv("node", "--help"), capture_output=True, text=True, timeout=PROCESS_WAIT, check=False)
    assert result.returncode == 0
    for text in ("DATA_DIR/lnpmsg.toml", "--config FILE", "Options on the command line override the file", "--app MODULE:ATTR"):
        assert text in result.stdout


def test_global_options_move_behind_the_command() -> None:
    commands = ["getinfo", "node", "sendmsg", "gossip"]
    assert hoist_global_options(["--data-dir", "X", "getinfo"], commands) == ["getinfo", "--data-dir", "X"]
    assert hoist_global_options(["--json", "--data-dir=X", "gossip", "stats"], commands) == ["gossip", "stats", "--json", "--data-dir=X"]
    assert hoist_global_options(["--data-dir", "X", "sendmsg", "ID", "32769", "--", "-x"], commands) == ["sendmsg", "ID", "32769", "--data-dir", "X", "--", "-x"]
    assert hoist_global_options(["getinfo", "--data-dir", "X"], commands) == ["getinfo", "--data-dir", "X"]
    assert hoist_global_options(["--data-dir", "X", "frobnicate"], commands) == ["--data-dir", "X", "frobnicate"]


def test_global_options_before_the_command_as_lightning_cli_users_type_them(tmp_path: Path) -> None:
    result = subprocess.run(lnpmsg_argv("--data-dir", tmp_path, "--json", "getinfo"), capture_output=True, text=True, timeout=PROCESS_WAIT, check=False)
    assert result.returncode == 3 and "no node is running at" in json.loads(result.stdout)["error"]["message"]
    result = subprocess.run(lnpmsg_argv("--log-level", "debug", "getinfo"), capture_output=True, text=True, timeout=PROCESS_WAIT, check=False)
    assert result.returncode == 2 and "unrecognized arguments: --log-level debug" in result.stderr


def test_peer_storage_options_from_the_file_reach_the_settings(tmp_path: Path) -> None:
    from lnpmsg.cli import settings_from_args

    args = parse_with(tmp_path, "no-peer-storage = true\nrecover-from-peers = true\n", "--chain", "regtest")
    settings = settings_from_args(args)
    assert settings.peer_storage is False and settings.recover_from_peers is True
    default = settings_from_args(parse_with(tmp_path, "", "--chain", "regtest"))
    assert default.peer_storage is True and default.recover_from_peers is False
