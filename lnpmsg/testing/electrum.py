"""Electrum wallets for tests: real Electrum daemons (Debian's ``electrum``
package, 4.3.4) in temporary directories, in regtest mode, pointed at one
Electrum server, driven through their JSON-RPC.

Electrum is a separate program: it runs on Debian's ``/usr/bin/python3``
(never this project's interpreter) as its own process, and the harness
speaks to it over HTTP JSON-RPC (``rpcsock tcp``) with every command the
``electrum`` CLI knows::

    wallet = ElectrumWallet(tmp_path / "alice", server="127.0.0.1:50001")
    wallet.create()                       # offline: a new seed, once
    wallet.start()                        # the daemon; loads the wallet
    address = wallet.call("getunusedaddress")
    wallet.wait_synced()
    wallet.call("payto", destination=addr, amount="0.1")
    wallet.stop()

Calls block (subprocess and HTTP): from trio, use ``await wallet.acall(...)``
or ``trio.to_thread.run_sync``. Calls that fail raise ``ElectrumError``
with Electrum's message; ``wallet.log()`` gives the daemon's log for a
failure report.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

__all__ = [
    "ELECTRUM_PYTHON",
    "ELECTRUM_SCRIPT",
    "ElectrumError",
    "ElectrumWallet",
    "electrum_available",
]

#: Debian's interpreter and Electrum's entry point (``apt-get install python3-electrum electrum``)
ELECTRUM_PYTHON = "/usr/bin/python3"
ELECTRUM_SCRIPT = "/usr/bin/electrum"
#: seconds a daemon may take to start, answer or stop
DAEMON_WAIT = 30.0
#: seconds one JSON-RPC call may take
CALL_TIMEOUT = 60.0

T = TypeVar("T")


class ElectrumError(Exception):
    """An Electrum command failed (``message``: Electrum's own words)."""


def electrum_available() -> bool:
    """Whether Debian's Electrum is installed here."""
    return Path(ELECTRUM_SCRIPT).exists() and Path(ELECTRUM_PYTHON).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ElectrumWallet:
    """One Electrum daemon with one wallet (``default_wallet``) in ``directory``.

    Args:
        directory: Electrum's data dir (``-D``); created if missing.
        server: the Electrum server, ``host:port`` (plain TCP).
        config: more Electrum config keys (e.g. ``lightning_listen``).
    """

    def __init__(self, directory: str | os.PathLike[str], server: str, *,
                 config: dict[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        self.server = server
        self.rpc_port = _free_port()
        self.rpc_user = "lnpmsg"
        self.rpc_password = secrets.token_hex(16)
        self.extra_config = dict(config or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.seed: str | None = None

    # ------------------------------------------------------------ files

    @property
    def network_dir(self) -> Path:
        """Where Electrum keeps a regtest wallet's config, wallets and logs."""
        return self.directory / "regtest"

    @property
    def wallet_path(self) -> Path:
        return self.network_dir / "wallets" / "default_wallet"

    def _write_config(self) -> None:
        config = {
            # the current format: an older one makes Electrum rewrite "server" to SSL (":s")
            "config_version": 3,
            "oneserver": True,
            "server": f"{self.server}:t",
            "auto_connect": False,
            "use_exchange_rate": False,
            "log_to_file": True,
            "check_updates": False,
            "rpcsock": "tcp",
            "rpchost": "127.0.0.1",
            "rpcport": self.rpc_port,
            "rpcuser": self.rpc_user,
            "rpcpassword": self.rpc_password,
            **self.extra_config,
        }
        self.network_dir.mkdir(parents=True, exist_ok=True)
        path = self.network_dir / "config"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _argv(self, *args: str) -> list[str]:
        return [ELECTRUM_PYTHON, ELECTRUM_SCRIPT, "--regtest", "-D", str(self.directory), *args]

    @staticmethod
    def _env() -> dict[str, str]:
        # Electrum imports Debian's packages: keep this project's interpreter settings away
        return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}

    def log(self, tail: int = 200) -> str:
        """The last ``tail`` lines of the daemon's log files (for failure reports)."""
        lines: list[str] = []
        for path in sorted((self.network_dir / "logs").glob("*.log")):
            # the profiler's timings fill the log whenever a command is polled
            lines += [line for line in path.read_text(errors="replace").splitlines() if "util.profiler" not in line]
        return "\n".join(lines[-tail:])

    # ------------------------------------------------------------ lifecycle

    def create(self, seed: str | None = None) -> str:
        """Create the wallet offline (a new seed, or restore ``seed``); returns the seed."""
        self._write_config()
        if self.wallet_path.exists():
            raise ElectrumError(f"a wallet exists already in {self.wallet_path}")
        args = ["--offline", "restore", seed] if seed else ["--offline", "create"]
        done = subprocess.run(self._argv(*args), capture_output=True, env=self._env(), timeout=DAEMON_WAIT)
        if done.returncode != 0:
            raise ElectrumError(f"electrum {args[1]} failed: {done.stderr.decode(errors='replace')}")
        self.seed = seed or json.loads(done.stdout)["seed"]
        return self.seed

    def start(self) -> None:
        """Start the daemon (foreground, owned by this object) and load the wallet."""
        if self.process is not None:
            raise ElectrumError("the daemon runs already")
        self._write_config()
        self.process = subprocess.Popen(
            self._argv("daemon"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self._env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + DAEMON_WAIT
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise ElectrumError(f"the Electrum daemon exited with {code} while starting:\n{self.log()}")
            try:
                self.call("getinfo", timeout=2)
                break
            except (OSError, ElectrumError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise ElectrumError(f"the Electrum daemon did not answer within {DAEMON_WAIT} s:\n{self.log()}") from None
                time.sleep(0.1)
        if self.wallet_path.exists():
            self.call("load_wallet")

    def stop(self) -> None:
        """Stop the daemon cleanly (killed if it does not exit in time)."""
        process = self.process
        if process is None:
            return
        try:
            self.call("stop", timeout=DAEMON_WAIT)
        except (OSError, ElectrumError):
            pass
        try:
            process.wait(DAEMON_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the daemon at once (a crash)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ElectrumWallet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ calls

    def call(self, method: str, *, timeout: float = CALL_TIMEOUT, **params: Any) -> Any:
        """Run an Electrum command (named params, as the CLI's options); its result."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.rpc_port}", data=body, method="POST")
        token = base64.b64encode(f"{self.rpc_user}:{self.rpc_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ElectrumError(f"{method}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
        if reply.get("error"):
            error = reply["error"]
            raise ElectrumError(f"{method}: {error.get('message', error) if isinstance(error, dict) else error}")
        return reply.get("result")

    async def acall(self, method: str, **params: Any) -> Any:
        """``call`` from trio (in a worker thread)."""
        return await trio.to_thread.run_sync(lambda: self.call(method, **params))

    def wait_for(self, check: Callable[[], T], what: str, timeout: float = DAEMON_WAIT) -> T:
        """Poll ``check()`` until it returns something true; raise with the log if it never does."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except ElectrumError as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(0.1)
        raise ElectrumError(f"timed out waiting for {what} (last: {last!r:.300})\n--- electrum log ---\n{self.log()}")

    def wait_synced(self, height: int | None = None, timeout: float = DAEMON_WAIT) -> dict[str, Any]:
        """Wait until the daemon is connected, has the server's headers (at
        least ``height``) and the wallet is up to date; ``getinfo``."""
        def synced() -> dict[str, Any] | None:
            info = self.call("getinfo")
            if not info["connected"] or info["blockchain_height"] < max(info["server_height"], height or 0):
                return None
            if self.wallet_path.exists() and not self.call("is_synchronized"):
                return None
            return info  # type: ignore[no-any-return]

        return self.wait_for(synced, f"sync to height {height}", timeout)

    def history(self) -> list[dict[str, Any]]:
        """The wallet's on-chain history (``onchain_history``'s transactions)."""
        return self.call("onchain_history")["transactions"]  # type: ignore[no-any-return]
