"""An lnprototest ``Runner`` for lnpmsg: Core Lightning's conformance suite
(PyPI ``lnprototest``) drives an ``lnpmsg node`` process with it.

Run lnprototest's own tests (github.com/rustyrussell/lnprototest, ``tests/``)
or lnpmsg's scripted ones (``conformance/lnprototest``) with::

    pytest --runner=lnpmsg.testing.lnprototest_runner.Runner tests/test_bolt1-01-init.py

in a Python environment that has ``lnprototest`` (it pins pyln-proto < 24
and python-bitcoinlib < 0.12, older than lnpmsg's own: use a venv of its
own, ``lnpmsg.testing.lnprototest_env`` builds one) and this package on
``PYTHONPATH``. This module imports nothing of lnpmsg: the node runs as its
own process with lnpmsg's interpreter, ``$LNPMSG_PYTHON`` (default:
``lnpmsg`` on ``PATH``), and the runner drives it as a user would, through
``lnpmsg call`` (the control API).

The node is set up as lnprototest expects of a node under test (the same
set-up as its Core Lightning runner): node key ``01``, regtest (the embedded
chain, whose block 1 is lnprototest's fixed block and whose height is 101
at the start of every run: each start copies the stopped data dir of a node
that got there once), the channel secrets forced to
``get_keyset()``'s, the wallet holding lnprototest's five funding keys,
funding depth 3 and fast gossip.

BOLT 1 and BOLT 7 tests need no more. Of the BOLT 2 calls, ``fundchannel``
(``channels.fundchannel`` of an announced channel, in the background, while
the script plays the peer), ``close_channel``, ``addhtlc``
(``channels.dev_addhtlc`` on the channel with that peer) and ``invoice``
(``payments.invoice``) go to the node's apps; the dual-funding ones,
``init_rbf`` and ``accept_add_fund``, raise ``NotImplementedError``, and
every one of them raises :class:`NeedsChannelApp` when the node runs no
channel app (no chain). lnpmsg opens static_remotekey channels and newer
only: the scripted peer's ``init`` built from :meth:`Runner.runner_features`
announces option_static_remotekey (BOLT 9 has it ASSUMED); a script that
writes an ``init`` without it gets a refusal of its channel. ``has_option``
reports the features the node announces in its ``init``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import lnprototest  # type: ignore[import-not-found]
import pyln.proto.wire  # type: ignore[import-not-found]
from lnprototest import Conn, Event, EventError, ExpectDisconnect, KeySet, MustNotMsg  # type: ignore[import-not-found]

__all__ = [
    "BLOCK_ONE",
    "CHANNEL_SECRETS",
    "FUNDING_PRIVKEYS",
    "NODE_PRIVKEY",
    "NeedsChannelApp",
    "Runner",
    "lnpmsg_command",
]

log = logging.getLogger(__name__)

#: seconds to wait for the node to start, a message to arrive, a control call to answer
TIMEOUT = float(os.environ.get("TIMEOUT", "60"))
#: the node key lnprototest's tests connect to (node id 0279be66...f81798)
NODE_PRIVKEY = "01"
#: the channel secrets lnprototest expects of the node under test: funding
#: key 0x10, basepoint secrets 0x11..0x14, shachain seed 0xff.. (``get_keyset``)
CHANNEL_SECRETS = "/".join([f"{i:064x}" for i in range(0x10, 0x15)] + ["ff" * 32])
#: the keys lnprototest documents for the runner's wallet (``lnprototest.utils.bitcoin_utils``:
#: BIP32 seed 01, keys 0/0/1..0/0/5): the outputs of ``tx_spendable`` it may spend
FUNDING_PRIVKEYS = (
    "76edf0c303b9e692da9cb491abedef46ca5b81d32f102eb4648461b239cb0f99",
    "bc2f48a76a6b8815940accaf01981d3b6347a68fbe844f81c50ecbadf27cd179",
    "16c5027616e940d1e72b4c172557b3b799a93c0582f924441174ea556aadd01c",
    "53ac43309b75d9b86bef32c5bbc99c500910b64f9ae089667c870c2cc69e17a4",
    "16be98a5d4156f6f3af99205e9bc1395397bca53db967e50427583c94271d27f",
)
#: the regtest block 1 lnprototest's bitcoind backend submits before mining 100
#: more: its coinbase is what the suite's ``tx_spendable`` spends
BLOCK_ONE = (
    "0000002006226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f84591a56720aabc8023c"
    "ecf71801c5e0f9d049d0c550ab42412ad12a67d89f3a3dbb6c60ffff7f200400000001020000000001010000000000"
    "000000000000000000000000000000000000000000000000000000ffffffff03510101ffffffff0200f2052a01000000"
    "16001419f5016f07fe815f611df3a2a0802dbd74e634c40000000000000000266a24aa21a9ede2f61c3f71d1defd3f"
    "a999dfa36953755c690689799962b48bebd836974e8cf9012000000000000000000000000000000000000000000000"
    "0000000000000000000000000000"
)
#: the height every run starts at (block 1 above, then 100 mined)
START_HEIGHT = 101
#: the data dir of a node just started (chain at START_HEIGHT) by set of extra node options: Runner.start copies it
_STARTED_DIRS: dict[tuple[str, ...], Path] = {}
#: the features (init) of the node each set of extra node options gave: has_option's answers
_FEATURES_SEEN: dict[tuple[str, ...], int] = {}
#: BOLT 1's error (17) and warning (1): the reason a node may send as it fails a connection
_REASONS = frozenset({1, 17})
#: BOLT 7's gossip queries (query_short_channel_ids, query_channel_range, gossip_timestamp_filter):
#: what lnprototest's ExpectMsg passes over by default, and check_error too
_GOSSIP_QUERIES = frozenset({261, 263, 265})
#: BOLT 9 feature bits by lnprototest's option names (``has_option``)
_OPTION_BITS = {
    "option_data_loss_protect": 0,
    "option_upfront_shutdown_script": 4,
    "gossip_queries": 6,
    "var_onion_optin": 8,
    "gossip_queries_ex": 10,
    "option_static_remotekey": 12,
    "payment_secret": 14,
    "basic_mpp": 16,
    "option_support_large_channel": 18,
    "option_anchor_outputs": 20,
    "option_anchors_zero_fee_htlc_tx": 22,
    "option_route_blinding": 24,
    "option_shutdown_anysegwit": 26,
    "option_dual_fund": 28,
    "option_quiesce": 34,
    "option_onion_messages": 38,
    "option_channel_type": 44,
    "option_scid_alias": 46,
    "option_payment_metadata": 48,
    "option_zeroconf": 50,
}
# lnprototest's tests also ask with an ``option_`` prefix where BOLT 9 has none
_OPTION_BITS.update({f"option_{name}": bit for name, bit in list(_OPTION_BITS.items()) if not name.startswith("option_")})
#: lnprototest's ``supports_*`` options (no feature bit of their own) by the feature bit that implies them:
#: a node that announces option_channel_type sends and reads ``channel_type`` in open/accept_channel
_SUPPORTS_BITS = {"supports_open_accept_channel_type": 44}
#: option_static_remotekey (BOLT 9's 12/13): what lnpmsg's channels need of a peer (BOLT 9 now
#: has it ASSUMED and BOLT 3 has no other commitment format: the scripted peer announces it)
STATIC_REMOTEKEY_OPTIONAL_BIT = 13


class NeedsChannelApp(NotImplementedError):
    """A BOLT 2 step asked of a node that runs no channel app."""

    def __init__(self, call: str) -> None:
        super().__init__(
            f"{call} needs the node's channel app (BOLT 2), which this lnpmsg node does not run: "
            "the runner drives BOLT 1 and BOLT 7 tests only"
        )


def lnpmsg_command() -> list[str]:
    """How to run ``lnpmsg``: ``$LNPMSG_PYTHON -m lnpmsg.cli``, else ``lnpmsg`` on PATH."""
    python = os.environ.get("LNPMSG_PYTHON")
    if python:
        return [python, "-m", "lnpmsg.cli"]
    found = shutil.which("lnpmsg")
    if found:
        return [found]
    return [sys.executable, "-m", "lnpmsg.cli"]


class LnpmsgConn(Conn):  # type: ignore[misc]
    """One scripted peer: a BOLT-8 connection (pyln-proto's) to the node."""

    def __init__(self, connprivkey: str, node_id: str, host: str, port: int) -> None:
        super().__init__(connprivkey)
        self.connection = pyln.proto.wire.connect(
            pyln.proto.wire.PrivateKey(bytes.fromhex(self.connprivkey.to_hex())),
            pyln.proto.wire.PublicKey(bytes.fromhex(node_id)),
            host,
            port,
        )


class Runner(lnprototest.Runner):  # type: ignore[misc]
    """lnprototest's ``Runner`` over an ``lnpmsg node`` process (see the module docs).

    ``--runner-args`` of lnprototest's pytest options are passed to
    ``lnpmsg node`` as ``--ARG``.
    """

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.running = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.node_dir = Path(self.directory) / "lnpmsg"
        self.node_id = ""
        self.host = "127.0.0.1"
        self.port = 0
        self.features = 0
        self.apps: list[str] = []
        self.executor = futures.ThreadPoolExecutor(max_workers=4)
        self.fundchannel_future: futures.Future[Any] | None = None
        #: invoices made (their labels must differ)
        self.invoices_made = 0
        self._calls: set[subprocess.Popen[bytes]] = set()
        try:
            extra = config.getoption("runner_args")
        except (ValueError, AttributeError):
            extra = []
        self.startup_flags: list[str] = [f"--{flag}" for flag in extra or []]

    # -- the node process --------------------------------------------------------

    def is_running(self) -> bool:
        return self.running

    def start(self) -> None:
        """Start a fresh node with its chain at :data:`START_HEIGHT`: a copy of the data dir
        of one started once for these node options (see :meth:`_started_dir`)."""
        started = self._started_dir()
        if self.node_dir.exists():
            shutil.rmtree(self.node_dir)
        shutil.copytree(started, self.node_dir, ignore=shutil.ignore_patterns("node.log"))
        self._launch()

    def _started_dir(self) -> Path:
        """The data dir of a node started from an empty one, given lnprototest's block 1 and
        mined to :data:`START_HEIGHT`, then stopped: every start copies it instead of
        submitting and mining those blocks again through control calls (each one a
        process: seconds per start). Made once per set of node options and kept until
        the runner's process exits; what a test does never reaches it."""
        key = tuple(self.startup_flags)
        started = _STARTED_DIRS.get(key)
        if started is not None:
            return started
        if self.node_dir.exists():
            shutil.rmtree(self.node_dir)
        self.node_dir.mkdir(parents=True)
        self._launch()
        self.call("chain.submitblock", [BLOCK_ONE])
        self.call("chain.mine", {"blocks": START_HEIGHT - 1})
        height = self.getblockheight()
        self.stop()
        if height != START_HEIGHT:
            raise RuntimeError(f"lnpmsg node's chain is at {height} after block 1 and {START_HEIGHT - 1} mined; its log: {self._log_tail()}")
        keep = Path(tempfile.mkdtemp(prefix="lnpmsg-lnprototest-"))
        atexit.register(shutil.rmtree, keep, ignore_errors=True)
        started = keep / "lnpmsg"
        shutil.copytree(self.node_dir, started, ignore=shutil.ignore_patterns("node.log"))
        _STARTED_DIRS[key] = started
        return started

    def _launch(self) -> None:
        """Run ``lnpmsg node`` on :attr:`node_dir` and wait for it to listen."""
        argv = [
            *lnpmsg_command(),
            "node",
            "--data-dir", str(self.node_dir),
            "--node-key", NODE_PRIVKEY.rjust(64, "0"),
            "--listen", "127.0.0.1:0",
            "--chain", "regtest",
            "--json",
            "--log-level", "debug",
            "--dev-force-channel-secrets", CHANNEL_SECRETS,
            "--dev-funding-confirms", "3",
            "--dev-fast-gossip",
        ]  # fmt: skip
        for key in FUNDING_PRIVKEYS:
            argv += ["--dev-import-privkey", key]
        argv += self.startup_flags
        log_file = open(self.node_dir / "node.log", "wb")  # noqa: SIM115 - the node writes it while it runs
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file)
        finally:
            log_file.close()
        summary = self._read_summary()
        self.running = True
        self.node_id = summary["node_id"]
        address = summary["addresses"][0]
        self.host, port = address.split("@", 1)[1].rsplit(":", 1)
        self.port = int(port)
        info = self.call("getinfo")
        self.features = int(info.get("features") or "0", 16)
        _FEATURES_SEEN[tuple(self.startup_flags)] = self.features
        self.apps = list(info.get("apps") or [])
        log.debug("lnpmsg node %s on %s:%d", self.node_id, self.host, self.port)

    def _read_summary(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._kill()
                raise RuntimeError(f"lnpmsg node did not start in {TIMEOUT:g} s; its log: {self._log_tail()}")
            chunk = os.read(fd, 4096)
            if not chunk:
                self._kill()
                raise RuntimeError(f"lnpmsg node exited while starting; its log: {self._log_tail()}")
            line += chunk
        return dict(json.loads(line.split(b"\n", 1)[0]))

    def _log_tail(self, size: int = 4000) -> str:
        try:
            return (self.node_dir / "node.log").read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, print_logs: bool = False) -> None:
        self.running = False
        for conn in list(self.conns.values()):
            self._close(conn)
        for process in list(self._calls):
            process.kill()
        if self.fundchannel_future is not None:
            futures.wait([self.fundchannel_future], timeout=TIMEOUT)
            self.fundchannel_future = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if print_logs:
            self.logger.info("---------- lnpmsg node log ----------\n%s", self._log_tail(1 << 20))

    def restart(self) -> None:
        """A fresh node and chain for the next branch of a test (as lnprototest's bitcoind restart)."""
        self.stop()
        super().restart()
        self.start()

    def teardown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        super().teardown()

    def call(self, method: str, params: Any = None) -> Any:
        """One control call through ``lnpmsg call``; its JSON result (``RuntimeError`` on failure)."""
        argv = [*lnpmsg_command(), "call", "--data-dir", str(self.node_dir), "--json", "--timeout", str(TIMEOUT), method]
        if params is not None:
            argv.append(json.dumps(params))
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._calls.add(process)  # stop() ends calls still waiting (a background fundchannel)
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        finally:
            self._calls.discard(process)
        try:
            answer = json.loads(stdout)
        except ValueError:
            raise RuntimeError(f"lnpmsg call {method} failed ({process.returncode}): {stderr.decode(errors='replace')[-2000:]}") from None
        if process.returncode != 0 or (isinstance(answer, dict) and "error" in answer and len(answer) == 1):
            raise RuntimeError(f"lnpmsg call {method} failed: {answer}")
        return answer

    # -- connections -------------------------------------------------------------

    def connect(self, event: Event, connprivkey: str) -> None:
        self.add_conn(LnpmsgConn(connprivkey, self.node_id, self.host, self.port))

    @staticmethod
    def _close(conn: Conn) -> None:
        try:
            conn.connection.connection.close()
        except OSError:
            pass

    def recv(self, event: Event, conn: Conn, outbuf: bytes) -> None:
        """Send ``outbuf`` from the scripted peer to the node."""
        try:
            conn.connection.send_message(outbuf)
        except (BrokenPipeError, ConnectionResetError):
            # the node hung up, maybe after an error: say which
            msg = self.get_output_message(conn, event, timeout=1)
            detail = f" after sending {msg.hex()}" if msg else ""
            raise EventError(event, f"Connection closed{detail}") from None

    def get_output_message(self, conn: Conn, event: Event, timeout: float = TIMEOUT) -> bytes | None:
        """The node's next message to the scripted peer; None when the connection is closed or on time-out."""
        fut = self.executor.submit(conn.connection.read_message)
        try:
            return fut.result(timeout)  # type: ignore[no-any-return]
        except futures.TimeoutError:
            log.error("no message from the node in %g s", timeout)
            return None
        except Exception as exc:  # the connection closed: pyln raises plain errors
            log.debug("connection ended: %r", exc)
            return None

    def check_error(self, event: Event, conn: Conn) -> str | None:
        super().check_error(event, conn)
        msg = self.get_output_message(conn, event)
        # the node's gossip queries (its gossip_timestamp_filter right after init) are no answer
        # to what the script sent: passed over as ExpectMsg does by default
        while msg is not None and int.from_bytes(msg[:2], "big") in _GOSSIP_QUERIES:
            msg = self.get_output_message(conn, event)
        if msg is not None and isinstance(event, ExpectDisconnect) and int.from_bytes(msg[:2], "big") in _REASONS:
            # lnpmsg fails a connection by saying why (an error or warning, BOLT 1) and then
            # closing it; lnprototest's ExpectDisconnect wants the close alone: the close
            # right after the reason is the disconnection it waits for
            after = self.get_output_message(conn, event)
            if after is None:
                log.info("the node failed the connection with %s", msg.hex())
                return None
            return after.hex()
        return None if msg is None else msg.hex()

    def check_final_error(self, event: Event, conn: Conn, expected: bool, must_not_events: list[MustNotMsg]) -> None:
        """Unless an error was expected: make the node hang up (bytes that are no BOLT-8 frame,
        sent after everything else) and fail on any error or banned message it sent before."""
        if not expected:
            try:
                conn.connection.connection.send(bytes(18))
            except OSError:
                pass
            while True:
                binmsg = self.get_output_message(conn, event)
                if binmsg is None:
                    break
                for banned in must_not_events:
                    if banned.matches(binmsg):
                        raise EventError(event, f"Got msg banned by {banned}: {binmsg.hex()}")
                if int.from_bytes(binmsg[:2], "big") == 17:
                    raise EventError(event, f"Got error msg: {binmsg.hex()}")
        self._close(conn)

    # -- the chain ---------------------------------------------------------------

    def getblockheight(self) -> int:
        return int(self.call("chain.getchaininfo")["height"])

    def trim_blocks(self, newheight: int) -> None:
        """Drop the blocks above ``newheight`` (``chain.invalidateblock`` on the first of them)."""
        if newheight >= self.getblockheight():
            return
        block_hash = self._block_hash(newheight + 1)
        self.call("chain.invalidateblock", [block_hash])

    def _block_hash(self, height: int) -> str:
        return str(self.call("chain.getblockhash", [height])["hash"])

    def add_blocks(self, event: Event, txs: list[str], n: int) -> None:
        """Mine ``n`` blocks, ``txs`` (raw hex) in the first."""
        for tx in txs:
            self.call("chain.sendrawtransaction", [tx])
        self.call("chain.mine", {"blocks": n})

    def expect_tx(self, event: Event, txid: str) -> None:
        """Wait for ``txid`` (as lnprototest writes it: internal byte order) in the mempool."""
        wanted = bytes.fromhex(txid)[::-1].hex()
        deadline = time.monotonic() + TIMEOUT
        while True:
            txids = self.call("chain.getrawmempool")["txids"]
            if wanted in txids:
                return
            if time.monotonic() > deadline:
                raise EventError(event, f"Did not broadcast the txid {wanted}, just {txids}")
            time.sleep(0.5)

    # -- keys and options --------------------------------------------------------

    def get_keyset(self) -> KeySet:
        secrets = CHANNEL_SECRETS.split("/")
        return KeySet(
            revocation_base_secret=secrets[1],
            payment_base_secret=secrets[2],
            delayed_payment_base_secret=secrets[3],
            htlc_base_secret=secrets[4],
            shachain_seed=secrets[5],
        )

    def get_node_privkey(self) -> str:
        return NODE_PRIVKEY

    def get_node_bitcoinkey(self) -> str:
        return CHANNEL_SECRETS.split("/")[0]

    def has_option(self, optname: str) -> str | None:
        """None if the node does not announce ``optname``; 'even' (required) or 'odd' (optional).

        Tests ask before the node runs (to build their scripts), so the first
        question starts a node once to read its features; the answer is kept
        for every runner with the same node options.
        """
        bit = _OPTION_BITS.get(optname, _SUPPORTS_BITS.get(optname))
        if bit is None:
            return None
        if not self.running:
            key = tuple(self.startup_flags)
            if key not in _FEATURES_SEEN:
                self.start()
                self.stop()
            self.features = _FEATURES_SEEN[key]
        if optname in _SUPPORTS_BITS:
            # as lnprototest's Core Lightning runner answers its ``supports_`` options
            return "true" if self.features >> bit & 3 else None
        if self.features >> bit & 1:
            return "even"
        if self.features >> (bit + 1) & 1:
            return "odd"
        return None

    def runner_features(self, additional_features: list[int] | None = None, globals: bool = False) -> str:
        """The features the scripted peer announces in its ``init`` (lnprototest's hook for
        "the features required by the node"): ``additional_features`` and, in ``features``,
        option_static_remotekey (optional) unless a bit of that pair is there already:
        lnpmsg opens no legacy channels (BOLT 9 marks static_remotekey ASSUMED)."""
        bits = list(additional_features or [])
        if not globals and not {STATIC_REMOTEKEY_OPTIONAL_BIT - 1, STATIC_REMOTEKEY_OPTIONAL_BIT} & set(bits):
            bits.append(STATIC_REMOTEKEY_OPTIONAL_BIT)
        return lnprototest.bitfield(*bits) if bits else ""

    def add_startup_flag(self, flag: str) -> None:
        self.startup_flags.append(f"--{flag}")

    # -- BOLT 2: through the channel app -------------------------------------------

    def _channels(self, call: str) -> None:
        if "channels" not in self.apps:
            raise NeedsChannelApp(call)

    def _not_driven(self, call: str) -> None:
        self._channels(call)
        raise NotImplementedError(f"{call}: the node runs a channel app, but this runner does not drive {call} yet")

    def fundchannel(self, event: Event, conn: Conn, amount: int, feerate: int = 0, expect_fail: bool = False) -> None:
        """``channels.fundchannel`` to the scripted peer, in the background (the script
        plays the peer's side of the opening meanwhile)."""
        self._channels("fundchannel")
        if self.fundchannel_future is not None and not self.fundchannel_future.done():
            raise RuntimeError(f"{event}: fundchannel while another one is still running")
        # announced, as Core Lightning's fundchannel by default: lnprototest's scripts expect channel_flags 1
        params: dict[str, Any] = {"node_id": conn.pubkey.format().hex(), "amount_sat": amount, "announce": True}
        if feerate:
            params["feerate"] = feerate

        def run() -> Any:
            try:
                return self.call("channels.fundchannel", params)
            except RuntimeError as exc:
                # the script decides what went wrong; the node's answer is for the log
                quiet = expect_fail or not self.running  # ended by stop()
                (log.info if quiet else log.error)("fundchannel: %s", exc)
                return None

        self.fundchannel_future = self.executor.submit(run)

    def close_channel(self, channel_id: str) -> None:
        self._channels("close_channel")
        self.call("channels.closechannel", {"channel": channel_id})

    def init_rbf(self, event: Event, conn: Conn, channel_id: str, amount: int, utxo_txid: str, utxo_outnum: int, feerate: int) -> None:
        self._not_driven("init_rbf")

    def invoice(self, event: Event, amount: int, preimage: str) -> None:
        """An invoice of ``amount`` msat for ``preimage`` (the payments app's ``payments.invoice``)."""
        self._channels("invoice")
        if "payments" not in self.apps:
            raise NotImplementedError("invoice: the node runs no payments app")
        self.invoices_made += 1
        label = f"lnprototest {self.invoices_made}: {event}"
        self.call("payments.invoice", {"amount_msat": amount, "label": label, "description": f"invoice from {event}", "preimage": preimage})

    def accept_add_fund(self, event: Event) -> None:
        self._not_driven("accept_add_fund")

    def addhtlc(self, event: Event, conn: Conn, amount: int, preimage: str) -> None:
        """Offer the scripted peer an HTLC of ``amount`` msat for sha256(``preimage``) on the
        node's open channel with it, and commit it (``channels.dev_addhtlc``: its expiry is
        144 blocks from the tip, its onion all zeros; a script reads neither)."""
        self._channels("addhtlc")
        peer_id = conn.pubkey.format().hex()
        channels = self.call("channels.listchannels", {"peer_id": peer_id})["channels"]
        usable = [c for c in channels if c["state"] == "normal"]
        if not usable:
            raise EventError(event, f"addhtlc: no channel in state normal with {peer_id}: {channels}")
        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        self.call("channels.dev_addhtlc", {"channel": usable[-1]["channel_id"], "amount_msat": amount, "payment_hash": payment_hash})
