"""``lnpmsg node`` imports what its configuration uses, and the rest on first use.

Every node process pays its imports at start (the suite starts hundreds): a
node that only speaks TCP loads no QUIC stack, one without Tor options no
stem, one without a chain no channel code. Each check runs in a fresh
interpreter, where ``sys.modules`` shows what was loaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lnpmsg.transports.base import Transport
from lnpmsg.transports.registry import DEFAULT_KINDS, Transports, default_transports
from lnpmsg.transports.tcp import TcpTransport

#: build the node ``lnpmsg node ARGS`` would run (parse, settings, build), without running it;
#: print which of the watched modules got loaded
_BUILD = """
import json, sys
from lnpmsg.cli import build_parser, settings_from_args
from lnpmsg.runtime.build import build_node
watched = sys.argv[1].split(",")
args = build_parser().parse_args(["node", *sys.argv[2:]])
built = build_node(settings_from_args(args))
loaded = {"built": [m for m in watched if m in sys.modules]}
built.node.transports["udp"]
loaded["after_udp"] = [m for m in watched if m in sys.modules]
print(json.dumps(loaded))
"""

_WATCHED = ("aioquic", "cryptography.x509", "stem", "lnpmsg.tor_app", "lnpmsg.transports.udp", "lnpmsg.channels.state", "lnpmsg.channels.messages", "embit", "lnpmsg.payments.bolt11")


def _loaded(tmp_path: Path, *node_args: str) -> dict[str, list[str]]:
    data_dir = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, ",".join(_WATCHED), "--data-dir", str(data_dir), "--no-control", "--no-gossip", *node_args],
        check=True,
        capture_output=True,
        text=True,
    )
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def test_a_default_node_loads_no_quic_tor_or_channel_code(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path)
    assert loaded["built"] == []
    # the UDP transport is still there, made when first used
    assert {"aioquic", "lnpmsg.transports.udp"} <= set(loaded["after_udp"])


def test_tor_options_still_load_the_tor_app(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "--tor-control", "127.0.0.1:9051")
    assert {"lnpmsg.tor_app", "stem"} <= set(loaded["built"])


def test_a_node_dialing_through_a_socks_port_loads_no_stem(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "--tor-socks", "127.0.0.1:9050")
    assert "stem" not in loaded["built"] and "lnpmsg.tor_app" not in loaded["built"]


def test_transports_make_a_default_kind_on_first_lookup_only() -> None:
    transports = default_transports()
    assert isinstance(transports, Transports)
    assert list(transports) == list(DEFAULT_KINDS) and len(transports) == 3
    assert "udp" in transports and "quic" not in transports
    assert "(not made yet)" in repr(transports)
    udp = transports["udp"]
    assert type(udp).__name__ == "UdpTransport" and transports["udp"] is udp  # made once
    own = TcpTransport()
    transports["tcp"] = own
    assert transports["tcp"] is own
    del transports["zmq"]
    assert set(transports) == {"tcp", "udp"}
    with pytest.raises(KeyError):
        transports["zmq"]
    given: dict[str, Transport] = {"tcp": own}
    mixed = Transports(given, defaults=("tcp", "udp"))
    assert list(mixed) == ["tcp", "udp"] and mixed["tcp"] is own  # a given transport wins over the default


def test_the_tor_options_list_matches_the_tor_settings(tmp_path: Path) -> None:
    """Each Tor option alone still reaches the Tor app: a conflict it checks is still an error."""
    from lnpmsg.cli import build_parser, settings_from_args
    from lnpmsg.runtime.settings import SettingsError

    parser = build_parser()
    for extra in (["--tor-path", "/bin/tor"], ["--tor-option", "UseBridges 1"], ["--no-onion-service"], ["--tor-cookie", "/x"]):
        args = parser.parse_args(["node", "--data-dir", str(tmp_path), *extra])
        with pytest.raises(SettingsError):
            settings_from_args(args)
    args = parser.parse_args(["node", "--data-dir", str(tmp_path), "--tor-socks", "127.0.0.1:9050"])
    assert settings_from_args(args).tor is None


def test_every_option_of_the_tor_group_is_one_that_loads_the_tor_app() -> None:
    """``lnpmsg node``'s Tor options and the CLI's list of those that load the Tor app are the
    same (but --tor-timeout, which only matters with one of them): an option added to the
    group and not to the list would be read by nobody."""
    from lnpmsg.cli import _TOR_OPTIONS, build_parser

    (subparsers,) = [action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    node = subparsers.choices["node"]
    (group,) = [group for group in node._action_groups if group.title == "Tor"]
    assert {action.dest for action in group._group_actions} - {"tor_timeout"} == set(_TOR_OPTIONS)
