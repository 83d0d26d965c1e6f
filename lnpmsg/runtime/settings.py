"""What a node is built from: :class:`NodeSettings`, and the errors of building one.

``lnpmsg node``'s flags and its config file fill a :class:`NodeSettings`;
tests and programs that embed a node build one directly::

    settings = NodeSettings(data_dir=Path("/tmp/n1"), listen=["127.0.0.1:0"], apps=[greeter])

Every field has the default ``lnpmsg node`` has without options.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from lnpmsg.channels.dev import DevOptions
    from lnpmsg.chain.source import ChainSource
    from lnpmsg.node.identity import NodeKey
    from lnpmsg.node.node import Mountable
    from lnpmsg.tor_app import TorSettings

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_LISTEN",
    "AppSpec",
    "NodeSettings",
    "SettingsError",
    "StartError",
]

#: where a node keeps its key and state unless told otherwise
DEFAULT_DATA_DIR = Path(os.environ.get("LNPMSG_DATA_DIR", "~/.lnpmsg")).expanduser()
#: the listener of a node given none
DEFAULT_LISTEN = "127.0.0.1:9735"

#: an app to mount: an app object, a callable returning one (called with no
#: arguments, or with the :class:`NodeSettings` when it takes one), or
#: ``"MODULE:ATTR"`` / ``"path/to/file.py:ATTR"`` naming either
AppSpec = Union["Mountable", Callable[..., Any], str]


def _no_dev_options() -> DevOptions:
    # imported here: the control commands (lnpmsg call, getinfo) read this module for
    # DEFAULT_DATA_DIR and must not load the channel package with it
    from lnpmsg.channels.dev import DevOptions

    return DevOptions()


class SettingsError(Exception):
    """The settings are wrong (a bad value, options that contradict each other, an app that does not load).

    The message names the option and says what to change; ``lnpmsg node``
    prints it and exits 2.
    """


class StartError(Exception):
    """The node was built but could not start (a port in use, Tor unreachable...); ``lnpmsg node`` exits 1."""


@dataclass
class NodeSettings:
    """Everything that decides what :func:`~lnpmsg.runtime.build.build_node` builds.

    The fields mirror ``lnpmsg node``'s options (``--no-gossip`` is
    ``gossip=False``, ``--control ENDPOINT`` is ``control_endpoint``...); the
    chain's fields keep the options' names, as :mod:`lnpmsg.wallet.node_setup`
    reads them.
    """

    #: the node key (``node_key``), the gossip store, the wallet, the control sockets live here
    data_dir: Path = DEFAULT_DATA_DIR
    #: the node key; None: ``key_file``, else ``DATA_DIR/node_key`` (created on first start)
    key: NodeKey | None = None
    key_file: Path | None = None
    #: listen addresses; None: ``DEFAULT_LISTEN`` (none with ``onion_only``); []: no listener
    listen: list[str] | None = None
    #: peers to connect to and keep connected
    connect: list[str] = field(default_factory=list)
    #: the chain announced in init; None: ``chain`` if given, else bitcoin
    network: str | None = None
    #: extra feature bits to advertise in init (e.g. for an app attached over the control API)
    features: list[int] = field(default_factory=list)
    #: a Tor SOCKS port ``host:port`` to dial .onion peers through
    tor_socks: str | None = None
    #: the node's own Tor (launched or attached; its onion service)
    tor: TorSettings | None = None
    onion_only: bool = False
    onion_to_onion: bool = False
    #: serve the control API (and the event socket)
    control: bool = True
    control_endpoint: str | None = None
    events_endpoint: str | None = None
    #: run a chain and a wallet: "regtest" is the embedded regtest chain in DATA_DIR/chain
    chain: str | None = None
    #: an open chain to use instead of opening one (several nodes of one process
    #: on one chain, as in ``lnpmsg demo``); the wallet stays in DATA_DIR/wallet
    chain_source: ChainSource | None = None
    #: rebuild the embedded chain's kernel files from its block log while opening it
    reindex: bool = False
    #: serve the embedded chain over Bitcoin Core's JSON-RPC on ``host:port``
    #: (cookie in DATA_DIR/chain/.cookie), also accepting ``chain_rpc_auth`` (``user:password``)
    chain_rpc_listen: str | None = None
    chain_rpc_auth: str | None = None
    #: run the wallet on a chain another process owns: Bitcoin Core's JSON-RPC at this URL
    #: (``http://[user:password@]host:port``), or with ``bitcoind_cookie``; needs ``network``
    #: (``lnpmsg node`` asks the server when --network is not given)
    bitcoind_rpc: str | None = None
    bitcoind_cookie: Path | None = None
    bitcoind_poll: float = 1.0
    #: serve the embedded chain to Electrum wallets on ``host:port`` (port 0: a free one)
    electrum_listen: str | None = None
    #: run the gossip app (store in DATA_DIR/gossip.sqlite3)
    gossip: bool = True
    #: Core Lightning gossip_store files to import while starting (the parts of one store, in order)
    gossip_import: list[str] = field(default_factory=list)
    #: our node_announcement (public channels): alias (at most 32 bytes), color (6 hex digits),
    #: addresses announced besides the listeners (host:port); None: derived from the node id
    alias: str | None = None
    rgb: str | None = None
    announce_addr: list[str] = field(default_factory=list)
    #: seconds between prunes of stale channels (None: the gossip app's default, 0: never)
    gossip_prune_interval: float | None = None
    #: days without an update after which a channel is stale (None: BOLT 7's two weeks)
    gossip_prune_after: float | None = None
    #: stop syncing with new peers after this many syncs with peers offering channels
    #: (None: the gossip app's default, 0: sync with every peer)
    gossip_full_syncs: int | None = None
    #: once those are done, seconds between re-syncs with one peer (None: the gossip app's default, 0: never)
    gossip_resync_interval: float | None = None
    #: the peer RPC and peer pub/sub apps (``rpc.*`` and ``pubsub.*`` control calls)
    peer_rpc: bool = True
    peer_pubsub: bool = True
    #: relay, receive and send BOLT 4 onion messages (feature 39; ``--no-onion-messages`` turns it off)
    onion_messages: bool = True
    #: user apps, mounted after the built-in ones (see :data:`AppSpec`)
    apps: list[AppSpec] = field(default_factory=list)
    #: ``lnpmsg node``'s channel options (:mod:`lnpmsg.channels.options`: option name -> value)
    channel_options: dict[str, Any] = field(default_factory=dict)
    #: receive keysends (bLIP 3) and announce it (``--accept-keysend``); off by default
    accept_keysend: bool = False
    #: the hops our blinded paths (offers, invoices, reply paths) are padded to with dummy hops of ours
    #: (``--blinded-path-length``; 0 or 1: none)
    blinded_path_length: int = 4
    #: offer BOLT 1 peer storage (``--no-peer-storage`` turns it off); with a chain
    peer_storage: bool = True
    #: restore the channels a peer returns that the node lacks, as they arrive (``--recover-from-peers``)
    recover_from_peers: bool = False
    #: the ``--dev-*`` options (conformance suites): forced channel secrets, funding
    #: depth, imported wallet keys, fast gossip (see :mod:`lnpmsg.channels.dev`)
    dev: DevOptions = field(default_factory=_no_dev_options)
    #: :class:`~lnpmsg.node.node.NodeConfig` fields the options above do not set, by name
    #: (limits, keepalive timers: ``{"max_peers": 20_000, "ping_interval": 30.0}``)
    node_config: dict[str, Any] = field(default_factory=dict)
