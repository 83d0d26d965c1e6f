"""The Electrum server as a node app: ``lnpmsg node --chain regtest
--electrum-listen 127.0.0.1:50001``.

Mounted after the ``ChainApp`` that owns the embedded chain (apps start in
mount order, so the chain is open when this one starts)::

    chain = node.mount(ChainApp(data_dir / "wallet", chain_dir=data_dir / "chain"))
    node.mount(ElectrumApp(chain, "127.0.0.1:50001"))

Control call ``electrum.info``: the address served and the clients connected.
"""

from __future__ import annotations

from typing import Any

import trio

from lnpmsg.app import App, AppError
from lnpmsg.chain.electrum.server import ElectrumServer, ServerLimits
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.transports.tcp import split_host_port

__all__ = ["ELECTRUM_APP_NAME", "ElectrumApp", "mount_electrum", "parse_listen"]

ELECTRUM_APP_NAME = "electrum"
#: the port Electrum servers use for plain TCP by custom
DEFAULT_ELECTRUM_PORT = 50001


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free port); ValueError with the reason."""
    host, port = split_host_port(text, DEFAULT_ELECTRUM_PORT)
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return host, port


class ElectrumApp(App):
    """Serves the chain of a running ``ChainApp`` (embedded regtest) over the Electrum protocol."""

    def __init__(self, chain_app: Any, listen: str, *, limits: ServerLimits | None = None,
                 name: str = ELECTRUM_APP_NAME) -> None:
        super().__init__(name)
        self.chain_app = chain_app
        self.host, self.port = parse_listen(listen)
        self.limits = limits
        self.server: ElectrumServer | None = None
        self.add_control_method("info", self.info)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        source = self.chain_app.source
        if not isinstance(source, EmbeddedChainSource):
            raise AppError("the Electrum server needs the embedded regtest chain (lnpmsg node --chain regtest)")
        self.server = ElectrumServer(source, limits=self.limits)
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(self.server.run, self.host, self.port)
            await super().run(task_status=task_status)

    @property
    def address(self) -> str:
        """``host:port`` served (the bound port once running)."""
        return f"{self.host}:{self.port}"

    async def info(self) -> dict[str, Any]:
        """The Electrum server: where it listens, its index height, clients connected."""
        server = self.server
        if server is None:
            raise AppError("the Electrum server is not running")
        return {"listen": self.address, "protocol": "1.4", "height": server.index.height,
                "clients": server.clients, "mempool": server.index.mempool_size}


def mount_electrum(node: Any, listen: str) -> str | None:
    """Mount an ``ElectrumApp`` on ``node`` over its chain app (``lnpmsg node
    --electrum-listen``); the reason it cannot, for the user, or None."""
    chain_app = node.apps.get("chain")
    if chain_app is None:
        return "--electrum-listen needs --chain regtest (the node serves its own embedded chain)"
    try:
        node.mount(ElectrumApp(chain_app, listen))
    except ValueError as exc:
        return f"bad --electrum-listen: {exc}"
    return None
