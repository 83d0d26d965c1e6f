"""How ``lnpmsg node`` gets its chain: the options ``--chain``,
``--chain-rpc-listen``, ``--chain-rpc-auth``, ``--bitcoind-rpc``,
``--bitcoind-cookie`` and ``--bitcoind-poll`` become mounted apps.

- ``--chain regtest``: the embedded chain and a wallet (``ChainApp``);
  with ``--chain-rpc-listen HOST:PORT`` the chain is also served over
  Bitcoin Core's JSON-RPC (``ChainRpcServer``), cookie in
  ``DATA_DIR/chain/.cookie``.
- ``--bitcoind-rpc URL``: a wallet on a chain another process owns, through
  ``BitcoindSource``: an lnpmsg node's ``--chain-rpc-listen`` or a real
  Bitcoin Core. Credentials: ``--bitcoind-cookie FILE`` or
  ``http://user:password@host:port``. Without ``--network`` the network is
  the one the server reports.

The CLI calls ``check`` (before the node is built), ``mount`` and ``summary``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from lnpmsg.chain.errors import ChainError

if TYPE_CHECKING:
    from lnpmsg.node.node import Node

__all__ = ["check", "mount", "summary"]

#: Bitcoin Core's ``getblockchaininfo.chain`` -> the node's --network
_NETWORK_OF_CHAIN = {"main": "bitcoin", "test": "testnet", "testnet4": "testnet", "signet": "signet", "regtest": "regtest"}
#: the node's --network -> the bech32 prefix BitcoindSource takes
_HRP = {"bitcoin": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}


def _bitcoind_target(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The URL without credentials, and BitcoindSource's auth arguments."""
    url = args.bitcoind_rpc if "://" in args.bitcoind_rpc else f"http://{args.bitcoind_rpc}"
    parts = urlsplit(url)
    auth: dict[str, Any] = {}
    if parts.username is not None:
        if parts.password is None:
            raise ValueError("--bitcoind-rpc: give user:password in the URL, or --bitcoind-cookie")
        auth = {"user": unquote(parts.username), "password": unquote(parts.password)}
        host = parts.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if args.bitcoind_cookie is not None:
        if auth:
            raise ValueError("--bitcoind-rpc has user:password and --bitcoind-cookie is given too: choose one")
        auth = {"cookie_file": Path(args.bitcoind_cookie)}
    if not auth:
        raise ValueError("--bitcoind-rpc needs --bitcoind-cookie FILE or http://user:password@host:port")
    return url, auth


def _source(args: argparse.Namespace, network: str) -> Any:
    from lnpmsg.chain.bitcoind import BitcoindSource
    from lnpmsg.chain.regtest import DEFAULT_FEERATE_PER_KW

    url, auth = _bitcoind_target(args)
    return BitcoindSource(
        url,
        network=_HRP[network],
        poll_interval=args.bitcoind_poll,
        # a regtest bitcoind has no fee estimates: use the embedded chain's rate
        fallback_feerate_per_kw=DEFAULT_FEERATE_PER_KW if network == "regtest" else None,
        **auth,
    )


async def check(args: argparse.Namespace) -> str | None:
    """Check the chain options; fill in ``args.network`` from bitcoind if not given.

    Returns an error for the user, or None.
    """
    if args.chain_rpc_listen and not args.chain:
        return "--chain-rpc-listen serves the embedded chain: add --chain regtest"
    if args.chain_rpc_auth and not args.chain_rpc_listen:
        return "--chain-rpc-auth needs --chain-rpc-listen"
    if args.chain_rpc_auth and ":" not in args.chain_rpc_auth:
        return "--chain-rpc-auth takes USER:PASSWORD"
    if args.bitcoind_cookie and not args.bitcoind_rpc:
        return "--bitcoind-cookie needs --bitcoind-rpc"
    if not args.bitcoind_rpc:
        return None
    if args.chain:
        return "--chain runs a chain of its own and --bitcoind-rpc uses another's: choose one"
    try:
        source = _source(args, args.network or "regtest")
    except (ValueError, ChainError) as exc:
        return str(exc)
    if args.network is not None:
        return None
    try:
        info = await source.call("getblockchaininfo")
    except ChainError as exc:
        return f"cannot ask {_bitcoind_target(args)[0]} which chain it runs: {exc}"
    finally:
        await source.aclose()
    chain = info.get("chain") if isinstance(info, dict) else None
    if chain not in _NETWORK_OF_CHAIN:
        return f"{_bitcoind_target(args)[0]} runs chain {chain!r}, which this node does not know"
    args.network = _NETWORK_OF_CHAIN[chain]
    return None


def mount(args: argparse.Namespace, node: Node) -> tuple[type[Exception], ...]:
    """Mount the chain apps the options ask for; returns the errors that mean "cannot start"."""
    if not args.chain and not args.bitcoind_rpc:
        return ()
    from lnpmsg.app import AppError
    from lnpmsg.wallet.app import ChainApp, ChainAppError

    dev = getattr(args, "dev", None)
    keys = dev.import_privkeys if dev is not None else ()
    if args.chain:
        chain_app = node.mount(
            ChainApp(args.data_dir / "wallet", chain_dir=args.data_dir / "chain", reindex=args.reindex, import_privkeys=keys)
        )
    else:
        chain_app = node.mount(ChainApp(args.data_dir / "wallet", source=_source(args, args.network), import_privkeys=keys))
    if args.chain_rpc_listen:
        from lnpmsg.chain.rpc_server import ChainRpcServer

        user, password = args.chain_rpc_auth.split(":", 1) if args.chain_rpc_auth else (None, None)
        node.mount(ChainRpcServer(chain_app, args.chain_rpc_listen, user=user, password=password))
    return (ChainAppError, AppError, ChainError)


def summary(args: argparse.Namespace, node: Node) -> dict[str, Any]:
    """The chain lines of the node's start-up summary."""
    out: dict[str, Any] = {}
    if args.chain:
        out["chain"] = f"embedded {args.chain} in {args.data_dir / 'chain'}, wallet in {args.data_dir / 'wallet'}"
    elif args.bitcoind_rpc:
        url, _ = _bitcoind_target(args)
        out["chain"] = f"{args.network} through bitcoind RPC at {url}, wallet in {args.data_dir / 'wallet'}"
    server = node.apps.get("chainrpc")
    if server is not None:
        out["chain_rpc"] = server.status()  # type: ignore[union-attr]
    return out
