"""``lnpmsg node``'s chain options: what they accept and the errors a user sees."""

from __future__ import annotations

import argparse

import pytest
import trio

from lnpmsg.wallet.node_setup import _bitcoind_target
from lnpmsg.cli import main


def _args(url: str, cookie: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(bitcoind_rpc=url, bitcoind_cookie=cookie)


def test_credentials_in_the_url_leave_it():
    url, auth = _bitcoind_target(_args("http://bob:p%40ss@127.0.0.1:18443/"))
    assert url == "http://127.0.0.1:18443/" and auth == {"user": "bob", "password": "p@ss"}
    url, auth = _bitcoind_target(_args("127.0.0.1:18443", "/x/.cookie"))
    assert url == "http://127.0.0.1:18443" and str(auth["cookie_file"]) == "/x/.cookie"
    with pytest.raises(ValueError, match="needs --bitcoind-cookie"):
        _bitcoind_target(_args("http://127.0.0.1:18443"))
    with pytest.raises(ValueError, match="choose one"):
        _bitcoind_target(_args("http://a:b@127.0.0.1:1", "/c"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--chain-rpc-listen", "127.0.0.1:0"], "add --chain regtest"),
        (["--bitcoind-rpc", "http://127.0.0.1:1"], "needs --bitcoind-cookie"),
        (["--chain", "regtest", "--bitcoind-rpc", "http://a:b@127.0.0.1:1"], "choose one"),
        (["--bitcoind-cookie", "/nowhere"], "needs --bitcoind-rpc"),
        (["--chain", "regtest", "--chain-rpc-auth", "nocolon", "--chain-rpc-listen", "127.0.0.1:0"], "USER:PASSWORD"),
        (["--bitcoind-rpc", "http://a:b@127.0.0.1:1"], "cannot ask http://127.0.0.1:1 which chain it runs"),
    ],
)
async def test_bad_chain_options_are_refused_before_starting(tmp_path, capsys, options, message):
    code = await trio.to_thread.run_sync(main, ["node", "--data-dir", str(tmp_path), "--no-control", "--no-gossip", "--listen", "127.0.0.1:0", *options])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "a:b@" not in err  # a password never reaches the log
    assert not (tmp_path / "chain").exists()
