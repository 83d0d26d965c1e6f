"""The chain app: an on-chain wallet, and for the embedded regtest chain also
mining and a faucet, on the node's control API.

Mounted by ``lnpmsg node --chain regtest`` (the embedded chain in
``DATA_DIR/chain``, the wallet in ``DATA_DIR/wallet``)::

    node.mount(ChainApp(data_dir / "wallet", chain_dir=data_dir / "chain"))

or over a chain source someone else owns (two nodes on one chain, a
``BitcoindSource``)::

    node.mount(ChainApp(data_dir / "wallet", source=source))

Control calls (``chain.<call>``; params in brackets, ``?`` optional):

========================================================  ==========================================
call                                                      result
========================================================  ==========================================
``getchaininfo``                                          network, backend, height, tip, mempool
                                                          (embedded only), wallet balance
                                                          (``balance_sat`` confirmed, ``pending_sat``
                                                          own unconfirmed change)
``getbalance``                                            the wallet's satoshis by state: confirmed,
                                                          unconfirmed, immature, reserved, spendable
``mine`` [blocks?=1, address?]                            hashes of the new blocks, height, tip;
                                                          default payee: the faucet (regtest only)
``faucet`` [amount_sat, address?, confirm?=true]          txid, vout, address, amount_sat,
                                                          confirmed, height; default payee: our
                                                          wallet; ``confirm`` mines one block
                                                          (regtest only)
``broadcast`` [tx_hex]                                    txid
``newaddr``                                               a fresh bech32 P2WPKH address
``listfunds``                                             outputs (outpoint, amount_sat, address,
                                                          confirmations, spendable...), totals
``withdraw`` [address, amount_sat | "all", feerate?]      txid, tx_hex, amount_sat, fee_sat
``releasecoins`` [txid? | outpoint? | all?=false]         released outpoints (and the txids that held
                                                          them): coins reserved for a transaction that
                                                          will never confirm
``bumpfee`` [txid, feerate_sat_per_vb, method?="cpfp"]    the child's (CPFP) or the replacement's
                                                          (RBF) txid, fee_sat, vsize, tx_hex; CPFP:
                                                          parent and package fee and rate; RBF: the
                                                          replaced txid and fee (see
                                                          :mod:`lnpmsg.wallet.bump`)
========================================================  ==========================================

and, on the embedded chain, Bitcoin Core's raw ``submitblock``,
``sendrawtransaction``, ``getrawmempool`` and ``invalidateblock`` for test
drivers (:mod:`lnpmsg.wallet.raw_calls`).

The wallet spends its own unconfirmed change at once (like Bitcoin Core's
wallet): a second ``withdraw`` needs no block in between. Coins chosen for a
transaction are reserved, and the transaction stored with them, before it
is broadcast; when the node starts again, withdrawals not yet confirmed are
broadcast again and the coins of those the chain rejects for good are
released. ``releasecoins`` (like lnd's ``releaseoutput``) frees what is held
for a transaction that will never confirm, e.g. a channel funding that was
abandoned; a coin whose spend still waits in the mempool is then refused by
the chain if spent again.

Failures are control errors (``-32000``) whose ``data`` says what happened:
``data.error`` is ``InsufficientFunds`` (with ``needed_sat`` and
``available_sat``), ``ChainError`` (``code``: the kernel's reject reason,
e.g. ``bad-txns-inputs-missingorspent``) or ``WalletError`` (``code``);
malformed params (a bad address or transaction hex) are ``-32602``.

The chain's blocking calls run in worker threads (``EmbeddedChainSource``
does that); the wallet's own work (key derivation, signing a few inputs) is
short and stays on the trio loop, where its state lives. The wallet follows
every new tip in the background and each tip is published as a
``chain.tip`` event (height, block_hash).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import trio

from lnpmsg.app import App, AppError
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash_from_hex, hash_to_hex
from lnpmsg.bitcoin.tx import Tx
from lnpmsg.chain.address import script_for_address
from lnpmsg.chain.bitcoind import BitcoindSource
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.remote_regtest import RemoteRegtest
from lnpmsg.chain.source import FEERATE_FLOOR_PER_KW, ChainSource
from lnpmsg.wallet.calls import ChainAppError, balances_result, channel_fundings, release_coins
from lnpmsg.rpc.params import ParamsError, hex_param
from lnpmsg.wallet.errors import InsufficientFunds, WalletError
from lnpmsg.wallet.raw_calls import RawChainCalls
from lnpmsg.wallet.wallet import Wallet

__all__ = [
    "CHAIN_APP_NAME",
    "MAX_MINE_BLOCKS",
    "ChainApp",
    "ChainAppError",
    "ChainTip",
]

log = logging.getLogger(__name__)

CHAIN_APP_NAME = "chain"
#: blocks one ``mine`` call may ask for: mining slows as the chain grows (1000
#: take about a second), and a call must finish well inside the control API's
#: 60 s limit while it holds the chain's lock
MAX_MINE_BLOCKS = 1000
#: seconds the background wallet sync waits after a failure before trying again
SYNC_RETRY = 1.0
#: what the bech32 prefix of the chain's addresses says about the network
_NETWORKS = {"bcrt": "regtest", "tb": "testnet", "bc": "bitcoin"}


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The chain's tip moved (published once the wallet has followed it)."""

    topic = "chain.tip"
    height: int
    block_hash: str


@contextmanager
def _translated() -> Iterator[None]:
    """Chain and wallet errors as control errors a user can act on."""
    try:
        yield
    except InsufficientFunds as exc:
        raise ChainAppError(
            exc.reason,
            {"error": "InsufficientFunds", "code": exc.code, "needed_sat": exc.needed_sat, "available_sat": exc.available_sat},
        ) from exc
    except WalletError as exc:
        if exc.code == "invalid":
            raise ParamsError(exc.reason) from exc
        details: dict[str, Any] = {"error": "WalletError", "code": exc.code}
        cause = exc.__cause__
        if isinstance(cause, ChainError):
            details["chain_code"] = cause.code
        raise ChainAppError(exc.reason, details) from exc
    except ChainError as exc:
        if exc.code == "invalid":
            raise ParamsError(exc.reason) from exc
        raise ChainAppError(exc.reason, {"error": "ChainError", "code": exc.code}) from exc


class ChainApp(App):
    """The chain and wallet on the control API (see the module docs).

    Args:
        wallet_dir: the wallet's seed and state (created on first start).
        chain_dir: open the embedded regtest chain here while the app runs.
        source: or use this chain source (not closed by the app).
        name: the app's name, the prefix of its control calls.
        reindex: rebuild the embedded chain's kernel state (blocks/, chainstate/)
            from its block log while opening (``lnpmsg node --reindex``).
        import_privkeys: raw private keys whose P2WPKH coins the wallet also
            watches and spends (``--dev-import-privkey``, for test set-ups).
    """

    def __init__(
        self,
        wallet_dir: str | Path,
        *,
        chain_dir: str | Path | None = None,
        source: ChainSource | None = None,
        name: str = CHAIN_APP_NAME,
        reindex: bool = False,
        import_privkeys: Sequence[bytes] = (),
    ) -> None:
        if (chain_dir is None) == (source is None):
            raise AppError("ChainApp takes a chain_dir (the embedded chain) or a source, not both")
        super().__init__(name)
        self.wallet_dir = Path(wallet_dir)
        self.chain_dir = None if chain_dir is None else Path(chain_dir)
        self._source = source
        self.reindex = reindex
        self.import_privkeys = tuple(import_privkeys)
        self._wallet: Wallet | None = None
        calls: dict[str, Callable[..., Any]] = {
            "getchaininfo": self.getchaininfo,
            "mine": self.mine,
            "faucet": self.faucet,
            "broadcast": self.broadcast_tx,
            "newaddr": self.newaddr,
            "listfunds": self.listfunds,
            "withdraw": self.withdraw,
            "getbalance": self.getbalance,
            "releasecoins": self.releasecoins,
            "bumpfee": self.bumpfee,
        }
        for call, fn in calls.items():
            self.add_control_method(call, fn)
        RawChainCalls(self).register()

    @property
    def source(self) -> ChainSource:
        """The chain source (AppError before the app runs, for an embedded chain)."""
        if self._source is None:
            raise AppError(f"app {self.name!r} is not running: its chain is not open")
        return self._source

    @property
    def wallet(self) -> Wallet:
        """The wallet (AppError while the app is not running)."""
        if self._wallet is None:
            raise AppError(f"app {self.name!r} is not running: its wallet is not open")
        return self._wallet

    # ------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the chain (if ours) and the wallet, then serve; close them when the node stops."""
        owned = self.chain_dir is not None
        async with AsyncExitStack() as stack:
            try:
                if self.chain_dir is not None:
                    self._source = await stack.enter_async_context(
                        EmbeddedChainSource.open(self.chain_dir, rebuild=self.reindex)
                    )
                self._wallet = await Wallet.open(self.wallet_dir, self.source, imported=self.import_privkeys)
            except (ChainError, WalletError) as exc:
                raise ChainAppError(f"cannot open the chain and wallet: {exc}") from exc
            tip = self._wallet.tip
            log.info(
                "chain: %s at height %s, wallet in %s",
                f"embedded regtest chain in {self.chain_dir}" if owned else type(self.source).__name__,
                tip.height if tip is not None else "?",
                self.wallet_dir,
            )
            try:
                await super().run(task_status=task_status)
            finally:
                self._wallet = None
                if owned:
                    self._source = None

    async def serve(self) -> None:
        """Follow every new tip with the wallet, then publish it."""
        wallet = self.wallet
        known = wallet.tip.block_hash if wallet.tip is not None else None
        while True:
            try:
                tip = await self.source.wait_for_new_tip(known)
                await wallet.sync()
            except (ChainError, WalletError) as exc:
                self.report_error(f"cannot follow the chain: {exc}")
                await trio.sleep(SYNC_RETRY)
                continue
            known = tip.block_hash
            if self._node is not None:
                self._node.events.publish(ChainTip(tip.height, tip.hash_hex))

    def _check_address(self, address: str) -> str:
        try:
            script_for_address(address, self.source.network)
        except ChainError as exc:
            raise ParamsError(f"bad address: {exc.reason}") from None
        return address

    def _embedded(self, call: str) -> EmbeddedChainSource | RemoteRegtest:
        """The chain's miner: the embedded chain, or the owner of a regtest chain reached over RPC."""
        source = self.source
        if isinstance(source, EmbeddedChainSource):
            return source
        if isinstance(source, BitcoindSource) and source.network == "bcrt":
            return RemoteRegtest(source)
        raise ChainAppError(
            f"{call} needs a regtest chain (lnpmsg node --chain regtest, or --bitcoind-rpc to a regtest chain)",
            {"error": "ChainError", "code": "unsupported"},
        )

    # ------------------------------------------------------------ control calls

    async def getchaininfo(self) -> dict[str, Any]:
        """The chain: network, tip height and hash, waiting transactions; the wallet's balance."""
        source = self.source
        with _translated():
            tip = await source.tip()
            info: dict[str, Any] = {
                "network": _NETWORKS.get(source.network, source.network),
                "backend": "embedded" if isinstance(source, EmbeddedChainSource) else type(source).__name__,
                "height": tip.height,
                "tip": tip.hash_hex,
            }
            if isinstance(source, EmbeddedChainSource):
                info["mempool"] = len(await trio.to_thread.run_sync(source.core.mempool_txids))
            await self.wallet.sync()
        wallet_tip = self.wallet.tip
        info["wallet_height"] = wallet_tip.height if wallet_tip is not None else None
        balances = self.wallet.balances()
        info["balance_sat"] = balances.confirmed_sat
        info["pending_sat"] = balances.unconfirmed_sat
        return info

    async def getbalance(self) -> dict[str, Any]:
        """The wallet's satoshis by state: confirmed, unconfirmed own change, immature coinbase, reserved."""
        with _translated():
            await self.wallet.sync()
        return balances_result(self.wallet.balances())

    async def releasecoins(self, txid: str | None = None, outpoint: str | None = None, all: bool = False) -> dict[str, Any]:
        """Free the coins reserved for TXID, or one OUTPOINT (txid:vout), or ALL: for transactions that will never confirm."""
        released = release_coins(self.wallet, txid, outpoint, all)
        log.info("chain: released %d reserved coin(s)", len(released["released"]))
        return released

    async def mine(self, blocks: int = 1, address: str | None = None) -> dict[str, Any]:
        """Mine blocks on the embedded chain (to the faucet, or to ADDRESS); waiting transactions go in the first."""
        if not 1 <= blocks <= MAX_MINE_BLOCKS:
            raise ParamsError(f"blocks must be 1..{MAX_MINE_BLOCKS}, got {blocks}")
        source = self._embedded("mine")
        if address is not None:
            self._check_address(address)
        with _translated():
            hashes = await source.mine(blocks, address)
            await self.wallet.sync()
            tip = await source.tip()
        return {"blocks": [hash_to_hex(h) for h in hashes], "height": tip.height, "tip": tip.hash_hex}

    async def faucet(self, amount_sat: int, address: str | None = None, confirm: bool = True) -> dict[str, Any]:
        """Pay AMOUNT_SAT from the embedded chain's faucet to ADDRESS (default: this wallet); CONFIRM mines a block."""
        if amount_sat <= 0:
            raise ParamsError(f"amount_sat must be positive, got {amount_sat}")
        source = self._embedded("faucet")
        if address is not None:
            self._check_address(address)
        with _translated():
            if address is None:
                address = self.wallet.new_address()
            outpoint = await source.faucet(address, amount_sat)
            height = None
            if confirm:
                await source.mine(1)
                height = (await source.tip()).height
            await self.wallet.sync()
        return {
            "txid": outpoint.txid_hex,
            "vout": outpoint.vout,
            "address": address,
            "amount_sat": amount_sat,
            "confirmed": confirm,
            "height": height,
        }

    async def broadcast_tx(self, tx_hex: str) -> dict[str, Any]:
        """Send a raw transaction (hex) to the chain; its txid, or the chain's reject reason."""
        raw = hex_param(tx_hex, "tx_hex")
        with _translated():
            txid = await self.source.broadcast(raw)
        return {"txid": hash_to_hex(txid)}

    async def newaddr(self) -> dict[str, Any]:
        """A fresh receive address of the wallet (bech32 P2WPKH)."""
        with _translated():
            return {"address": self.wallet.new_address()}

    async def listfunds(self) -> dict[str, Any]:
        """The wallet's coins (confirmed, and its own unconfirmed change) and totals."""
        wallet = self.wallet
        with _translated():
            await wallet.sync()
        utxos = wallet.list_funds()
        balances = wallet.balances()
        outputs = [
            {
                "outpoint": str(u.outpoint),
                "txid": u.outpoint.txid_hex,
                "vout": u.outpoint.vout,
                "amount_sat": u.amount_sat,
                "address": u.address,
                "key_path": u.key_path,
                "height": u.height,
                "status": "confirmed" if u.confirmed else "unconfirmed",
                "confirmations": u.confirmations,
                "coinbase": u.is_coinbase,
                "spendable": u.spendable,
                "reserved_by": None if u.reserved_by is None else hash_to_hex(u.reserved_by),
            }
            for u in utxos
        ]
        tip = wallet.tip
        # what the channels still hold: open channels' balances, outputs on chain still locked
        # (a chain app used on its own, unmounted, has no channels beside it)
        channels = self._node.apps.get("channels") if self._node is not None else None
        onchain = getattr(channels, "onchain", None)
        return {
            "outputs": outputs,
            "total_sat": balances.total_sat,
            "spendable_sat": balances.spendable_sat,
            "height": tip.height if tip is not None else None,
            "channels": onchain.locked_funds() if onchain is not None else [],
        }

    async def withdraw(
        self, address: str, amount_sat: int | Literal["all"], feerate_per_kw: int | None = None
    ) -> dict[str, Any]:
        """Pay AMOUNT_SAT (or "all") to ADDRESS from the wallet and broadcast; FEERATE_PER_KW in sat per 1000 weight units."""
        if amount_sat != "all" and amount_sat <= 0:
            raise ParamsError(f"amount_sat must be positive or \"all\", got {amount_sat}")
        if feerate_per_kw is not None and feerate_per_kw < FEERATE_FLOOR_PER_KW:
            raise ParamsError(f"feerate_per_kw {feerate_per_kw} is below the relay floor {FEERATE_FLOOR_PER_KW} (1 sat/vB)")
        with _translated():
            withdrawal = await self.wallet.withdraw(address, amount_sat, feerate_per_kw)
        tx = withdrawal.tx
        return {
            "txid": tx.txid_hex,
            "tx_hex": tx.raw.hex(),
            "address": address,
            "amount_sat": withdrawal.amount_sat,
            "fee_sat": withdrawal.fee_sat,
            "vsize": tx.vsize,
        }

    async def bumpfee(self, txid: str, feerate_sat_per_vb: float, method: str = "cpfp") -> dict[str, Any]:
        """Raise the fee of unconfirmed TXID to FEERATE_SAT_PER_VB: METHOD "cpfp" (default: a child spends an
        output of ours; the one way for a channel's funding) or "rbf" (a replacement of the wallet's own spend)."""
        try:
            target = hash_from_hex(txid)
        except BitcoinError:
            raise ParamsError(f"txid is 64 hex digits, got {txid!r}") from None
        if isinstance(feerate_sat_per_vb, bool) or not isinstance(feerate_sat_per_vb, (int, float)):
            raise ParamsError(f"feerate_sat_per_vb must be a number, got {feerate_sat_per_vb!r}")
        if feerate_sat_per_vb < 1:
            raise ParamsError(f"feerate_sat_per_vb {feerate_sat_per_vb} is below the relay floor (1 sat/vB)")
        if method not in ("cpfp", "rbf"):
            raise ParamsError(f'method is "cpfp" or "rbf", got {method!r}')
        fundings = channel_fundings(self._node.apps.get("channels") if self._node is not None else None)
        with _translated():
            if method == "rbf":
                bump = await self.wallet.bump_rbf(target, feerate_sat_per_vb, channel_txids=fundings.keys())
            else:
                raw = fundings.get(target)
                waiting = await self._mempool_entry(target)
                parent = Tx.parse(raw) if raw else waiting[0] if waiting else None
                bump = await self.wallet.bump_cpfp(
                    target, feerate_sat_per_vb, parent=parent, parent_fee_sat=waiting[1] if waiting else None
                )
        log.info("chain: %s fee bump of %s: %s", method, txid, bump.tx.txid_hex)
        return bump.result()

    async def _mempool_entry(self, txid: bytes) -> tuple[Tx, int] | None:
        """A transaction waiting in the embedded chain's mempool and its fee (None elsewhere): a CPFP
        parent the wallet does not hold (a payment to us) or cannot add up (a dual-funded channel's
        funding has the peer's inputs)."""
        source = self.source
        if not isinstance(source, EmbeddedChainSource):
            return None
        _, waiting = await trio.to_thread.run_sync(source.core.mempool_snapshot)
        return next(((tx, fee) for tx, fee in waiting if tx.txid == txid), None)
