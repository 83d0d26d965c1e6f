"""The on-chain wallet: BIP84 (P2WPKH) keys from a seed in the data dir,
coins tracked from a ``ChainSource``, coin selection, signing, withdrawals
and channel funding.

Library choice: embit does BIP32 derivation and keys (see
``lnpmsg.wallet.keys``); transactions, BIP143 sighashes and low-R ECDSA
signatures are ``lnpmsg.bitcoin``'s, the one model the chain layer and the
channels use, so every transaction lnpmsg signs goes through the same code
that the BOLT-3 vectors and the consensus engine check.

How coins are tracked: the wallet follows the chain from its birth height
with a ``ChainFollower`` watching every derived script (``GAP_LIMIT`` ahead
of the last used index on both the receive and change chains). Confirmed
outputs are coins; a confirmed spend removes them; a reorg puts them back.
Coins are rebuilt from the chain on every open (the seed and a few counters
are all that is stored). Coins chosen for a transaction not yet confirmed are
*reserved* (persisted) until the spend confirms or ``release`` is called.

Data dir (``wallet_dir``): ``seed`` (32 bytes, mode 0600, created on first
use) and ``wallet.json`` (network, birth height, next indexes, reservations).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import trio

from lnpmsg.bitcoin.ecdsa import sign_digest
from lnpmsg.bitcoin.hashes import hash160
from lnpmsg.bitcoin.script import p2pkh_script
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import SEQUENCE_RBF, OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.address import address_for_script, script_for_address
from lnpmsg.chain.datadir import write_atomic
from lnpmsg.chain.errors import ChainError
from lnpmsg.chain.events import (
    BlockRef,
    ChainEvent,
    OutputConfirmed,
    OutputSpent,
    ReorgedOut,
)
from lnpmsg.chain.follow import ChainFollower
from lnpmsg.chain.mining import COINBASE_MATURITY
from lnpmsg.chain.source import ChainSource, catch_up
from lnpmsg.wallet.coinselect import Candidate, Selection, select_all, select_coins
from lnpmsg.wallet.errors import WalletError
from lnpmsg.wallet.keys import Account, DerivedKey, load_or_create_seed

__all__ = [
    "GAP_LIMIT",
    "FundedTx",
    "Wallet",
    "WalletUtxo",
    "Withdrawal",
    "dust_limit",
]

WALLET_FILE = "wallet.json"
#: unused addresses watched past the last used one on each chain (BIP44's gap limit)
GAP_LIMIT = 20
#: P2WPKH input: 41 bytes outside the witness (x4) + witness 1+1+72+1+33 (72: a max-size signature)
P2WPKH_INPUT_WEIGHT = 41 * 4 + 108
#: P2WPKH output: 8 amount + 1 length + 22 script, x4
P2WPKH_OUTPUT_WEIGHT = 31 * 4
#: version + locktime + input and output counts (x4) + segwit marker and flag
TX_OVERHEAD_WEIGHT = 10 * 4 + 2
#: spend the change in a later block only: inputs confirmed at least this deep
MIN_CONFIRMATIONS = 1
#: any P2WPKH script: what change outputs look like, for their dust limit
_P2WPKH_TEMPLATE = b"\x00\x14" + bytes(20)


def dust_limit(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust threshold at its 3 sat/vB dust relay fee.

    The cost to create and spend the output: 67 vB to spend a witness
    program, 148 vB otherwise (294 sat for P2WPKH, 546 for P2PKH).
    """
    size = 8 + 1 + len(script_pubkey)
    witness_program = len(script_pubkey) >= 4 and (
        script_pubkey[0] == 0 or 0x51 <= script_pubkey[0] <= 0x60
    )
    return 3 * (size + (67 if witness_program else 148))


@dataclass(frozen=True, slots=True)
class WalletUtxo:
    """A confirmed coin of the wallet."""

    outpoint: OutPoint
    amount_sat: int
    address: str
    key_path: str
    height: int
    is_coinbase: bool
    confirmations: int
    reserved_by: bytes | None

    @property
    def spendable(self) -> bool:
        mature = not self.is_coinbase or self.confirmations >= COINBASE_MATURITY
        return (
            mature
            and self.confirmations >= MIN_CONFIRMATIONS
            and self.reserved_by is None
        )


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A broadcast withdrawal."""

    tx: Tx
    amount_sat: int
    fee_sat: int

    @property
    def txid(self) -> bytes:
        return self.tx.txid


@dataclass(frozen=True, slots=True)
class FundedTx:
    """A signed transaction paying ``amount`` to a script at ``output_index``; not broadcast."""

    tx: Tx
    output_index: int
    fee_sat: int

    @property
    def outpoint(self) -> OutPoint:
        return self.tx.outpoint(self.output_index)


@dataclass(slots=True)
class _Coin:
    outpoint: OutPoint
    txout: TxOut
    key: DerivedKey
    height: int
    is_coinbase: bool


class Wallet:
    """A BIP84 wallet over a ``ChainSource``. Build it with ``await Wallet.open(...)``."""

    def __init__(
        self,
        wallet_dir: Path,
        source: ChainSource,
        account: Account,
        state: dict[str, object],
    ) -> None:
        self.wallet_dir = wallet_dir
        self.source = source
        self.account = account
        self.hrp = account.hrp
        self.birth_height = int(state["birth_height"])  # type: ignore[call-overload]
        next_index = state["next_index"]
        assert isinstance(next_index, list)
        self._next = [int(next_index[0]), int(next_index[1])]
        reserved = state.get("reserved", {})
        assert isinstance(reserved, dict)
        try:
            self._reserved: dict[OutPoint, bytes] = {
                OutPoint.from_str(op): bytes.fromhex(txid)
                for op, txid in reserved.items()
            }
        except (ValueError, TypeError, AttributeError) as exc:
            raise WalletError(
                f"wallet state in {wallet_dir} is damaged: {exc}", code="corrupt"
            ) from exc
        self._scripts: dict[bytes, DerivedKey] = {}
        self._derived = [0, 0]
        self._coins: dict[OutPoint, _Coin] = {}
        self._spent: dict[OutPoint, _Coin] = {}
        self._follower: ChainFollower | None = None
        self._lock = trio.Lock()

    @classmethod
    async def open(
        cls,
        wallet_dir: str | os.PathLike[str],
        source: ChainSource,
        *,
        create: bool = True,
    ) -> Wallet:
        """Open the wallet in ``wallet_dir`` (creating seed and state on first use) and sync it."""
        path = Path(wallet_dir)
        seed = load_or_create_seed(path, create=create)
        state_path = path / WALLET_FILE
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text())
                if (
                    not isinstance(state, dict)
                    or not {"network", "birth_height", "next_index"} <= state.keys()
                ):
                    raise ValueError("missing keys")
            except (ValueError, OSError) as exc:
                raise WalletError(
                    f"wallet state {state_path} is damaged: {exc}", code="corrupt"
                ) from exc
            if state["network"] != source.network:
                raise WalletError(
                    f"wallet {path} belongs to network {state['network']!r}, the chain is {source.network!r}",
                    code="network",
                )
        else:
            tip = await source.tip()
            state = {
                "network": source.network,
                "birth_height": tip.height + 1,
                "next_index": [0, 0],
                "reserved": {},
            }
        account = Account(seed, source.network)
        wallet = cls(path, source, account, state)
        wallet._save()
        await wallet._start()
        return wallet

    async def _start(self) -> None:
        base: BlockRef | None = None
        if self.birth_height > 0:
            prev_hash = await self.source.block_hash(self.birth_height - 1)
            if prev_hash is None:
                raise WalletError(
                    f"the chain (height below {self.birth_height - 1}) is behind this wallet's birth height "
                    f"{self.birth_height}: a different chain?",
                    code="network",
                )
            base = BlockRef(self.birth_height - 1, prev_hash)
        self._follower = ChainFollower(base)
        for chain in (0, 1):
            self._derive_up_to(chain, self._next[chain] + GAP_LIMIT)
        await self.sync()

    def _derive_up_to(self, chain: int, count: int) -> None:
        assert self._follower is not None
        while self._derived[chain] < count:
            key = self.account.derive(chain, self._derived[chain])
            self._scripts[key.script_pubkey] = key
            self._follower.watch_script(key.script_pubkey)
            self._derived[chain] += 1

    def _save(self) -> None:
        state = {
            "network": self.hrp,
            "birth_height": self.birth_height,
            "next_index": self._next,
            "reserved": {str(op): txid.hex() for op, txid in self._reserved.items()},
        }
        path = self.wallet_dir / WALLET_FILE
        try:
            write_atomic(path, json.dumps(state).encode())
        except OSError as exc:
            raise WalletError(f"cannot write {path}: {exc}", code="io") from exc

    # -- following the chain ----------------------------------------------------

    @property
    def tip(self) -> BlockRef | None:
        """The last block the wallet has processed."""
        return None if self._follower is None else self._follower.tip

    async def sync(self) -> BlockRef | None:
        """Process every block up to the source's tip (reorgs included)."""
        async with self._lock:
            await self._sync_locked()
        return self.tip

    async def _sync_locked(self) -> None:
        assert self._follower is not None
        try:
            while True:
                events = await catch_up(self.source, self._follower, max_blocks=256)
                if not events:
                    break
                self._apply(events)
        except ChainError as exc:
            raise WalletError(
                f"cannot follow the chain: {exc.reason}", code="chain"
            ) from exc

    def _apply(self, events: Iterable[ChainEvent]) -> None:
        for event in events:
            if isinstance(event, OutputConfirmed):
                key = self._scripts.get(event.txout.script_pubkey)
                if key is None:
                    continue
                self._coins[event.outpoint] = _Coin(
                    event.outpoint, event.txout, key, event.height, event.tx.is_coinbase
                )
                if key.index >= self._next[key.change]:
                    self._next[key.change] = key.index + 1
                    self._derive_up_to(key.change, key.index + 1 + GAP_LIMIT)
                    self._save()
            elif isinstance(event, OutputSpent):
                coin = self._coins.pop(event.outpoint, None)
                if coin is not None:
                    self._spent[event.outpoint] = coin
                if self._reserved.pop(event.outpoint, None) is not None:
                    self._save()
            elif isinstance(event, ReorgedOut):
                undone = event.event
                if isinstance(undone, OutputConfirmed):
                    self._coins.pop(undone.outpoint, None)
                else:
                    coin = self._spent.pop(undone.outpoint, None)
                    if coin is not None:
                        self._coins[undone.outpoint] = coin

    # -- addresses and funds ------------------------------------------------------

    def new_address(self) -> str:
        """A fresh receive address (bech32 P2WPKH: ``bcrt1q...`` on regtest)."""
        index = self._next[0]
        self._next[0] += 1
        self._derive_up_to(0, self._next[0] + GAP_LIMIT)
        self._save()
        return address_for_script(self.account.derive(0, index).script_pubkey, self.hrp)

    def _new_change_script(self) -> bytes:
        index = self._next[1]
        self._next[1] += 1
        self._derive_up_to(1, self._next[1] + GAP_LIMIT)
        self._save()
        return self.account.derive(1, index).script_pubkey

    def list_funds(self) -> list[WalletUtxo]:
        """Every confirmed coin, oldest first (``spendable`` tells which can be spent now)."""
        tip_height = self.tip.height if self.tip else -1
        return [
            WalletUtxo(
                coin.outpoint,
                coin.txout.amount_sat,
                address_for_script(coin.txout.script_pubkey, self.hrp),
                coin.key.path,
                coin.height,
                coin.is_coinbase,
                tip_height - coin.height + 1,
                self._reserved.get(coin.outpoint),
            )
            for coin in sorted(
                self._coins.values(), key=lambda c: (c.height, c.outpoint)
            )
        ]

    def balance(self) -> int:
        """Satoshis spendable now (confirmed, mature, not reserved)."""
        return sum(u.amount_sat for u in self.list_funds() if u.spendable)

    # -- spending -----------------------------------------------------------------

    async def withdraw(
        self,
        address: str,
        amount_sat: int | Literal["all"],
        feerate_per_kw: int | None = None,
    ) -> Withdrawal:
        """Pay ``amount_sat`` (or everything: ``"all"``) to ``address`` and broadcast.

        Raises ``InsufficientFunds`` or ``WalletError`` (a rejected broadcast
        carries the chain's reason).
        """
        try:
            script = script_for_address(address, self.hrp)
        except ChainError as exc:
            raise WalletError(f"bad address: {exc.reason}", code="invalid") from exc
        async with self._lock:
            await self._sync_locked()
            feerate = await self._feerate(feerate_per_kw)
            tx, index, fee = self._build(script, amount_sat, feerate)
            self._reserve(tx)
            try:
                await self.source.broadcast(tx.raw)
            except ChainError as exc:
                self.release(tx.txid)
                raise WalletError(
                    f"the chain rejected the withdrawal: {exc.reason}", code="rejected"
                ) from exc
            return Withdrawal(tx, tx.outputs[index].amount_sat, fee)

    async def fund_output(
        self, script_pubkey: bytes, amount_sat: int, feerate_per_kw: int | None = None
    ) -> FundedTx:
        """A signed transaction paying ``amount_sat`` to ``script_pubkey`` (a channel's
        funding output), not broadcast; its inputs stay reserved until it
        confirms or ``release(txid)``."""
        if not isinstance(script_pubkey, bytes) or not script_pubkey:
            raise WalletError(
                "the funding script must be non-empty bytes", code="invalid"
            )
        async with self._lock:
            await self._sync_locked()
            feerate = await self._feerate(feerate_per_kw)
            tx, index, fee = self._build(script_pubkey, amount_sat, feerate)
            self._reserve(tx)
            return FundedTx(tx, index, fee)

    def release(self, txid: bytes) -> int:
        """Unreserve the coins held for transaction ``txid`` (abandoned); returns how many."""
        held = [op for op, holder in self._reserved.items() if holder == txid]
        for op in held:
            del self._reserved[op]
        if held:
            self._save()
        return len(held)

    async def _feerate(self, feerate_per_kw: int | None) -> int:
        if feerate_per_kw is not None:
            if feerate_per_kw < 0:
                raise WalletError(f"negative fee rate {feerate_per_kw}", code="invalid")
            return feerate_per_kw
        try:
            return await self.source.estimate_feerate()
        except ChainError as exc:
            raise WalletError(f"no fee estimate: {exc.reason}", code="chain") from exc

    def _spendable(self) -> list[_Coin]:
        tip_height = self.tip.height if self.tip else -1
        coins = []
        for coin in self._coins.values():
            confirmations = tip_height - coin.height + 1
            if coin.outpoint in self._reserved or confirmations < MIN_CONFIRMATIONS:
                continue
            if coin.is_coinbase and confirmations < COINBASE_MATURITY:
                continue
            coins.append(coin)
        return coins

    def _build(
        self, script: bytes, amount: int | str, feerate: int
    ) -> tuple[Tx, int, int]:
        coins = {coin.outpoint: coin for coin in self._spendable()}
        candidates = [
            Candidate(op, c.txout.amount_sat, P2WPKH_INPUT_WEIGHT)
            for op, c in coins.items()
        ]
        pay_weight = 4 * (9 + len(script))
        selection: Selection
        if amount == "all":
            selection = select_all(
                candidates, TX_OVERHEAD_WEIGHT + pay_weight, feerate, dust_limit(script)
            )
            outputs = [TxOut(selection.total_in_sat - selection.fee_sat, script)]
        elif isinstance(amount, int) and not isinstance(amount, bool):
            if amount < dust_limit(script):
                raise WalletError(
                    f"amount {amount} sat is below the dust limit {dust_limit(script)} sat of that output",
                    code="dust",
                )
            selection = select_coins(
                candidates,
                amount,
                TX_OVERHEAD_WEIGHT + pay_weight,
                P2WPKH_OUTPUT_WEIGHT,
                P2WPKH_INPUT_WEIGHT,
                feerate,
                dust_limit(_P2WPKH_TEMPLATE),
            )
            outputs = [TxOut(amount, script)]
            if selection.change_sat:
                outputs.append(TxOut(selection.change_sat, self._new_change_script()))
        else:
            raise WalletError(
                f"amount must be satoshis or 'all', got {amount!r}", code="invalid"
            )
        spent = sorted(
            (coins[cast(OutPoint, c.key)] for c in selection.chosen),
            key=lambda c: (c.outpoint.txid[::-1], c.outpoint.vout),
        )
        # BIP69 output order: deterministic, and the change position tells nothing
        outputs.sort(key=lambda o: (o.amount_sat, o.script_pubkey))
        pay_index = next(i for i, o in enumerate(outputs) if o.script_pubkey == script)
        tip_height = self.tip.height if self.tip else 0
        tx = self._sign(spent, outputs, locktime=max(tip_height, 0))
        fee = sum(c.txout.amount_sat for c in spent) - sum(
            o.amount_sat for o in outputs
        )
        return tx, pay_index, fee

    def _sign(self, coins: list[_Coin], outputs: list[TxOut], locktime: int) -> Tx:
        # locktime = tip height: the spend cannot be mined into a rewritten past block (anti fee sniping)
        unsigned = Tx(
            2,
            tuple(TxIn(c.outpoint, sequence=SEQUENCE_RBF) for c in coins),
            tuple(outputs),
            locktime,
        )
        signed = unsigned
        for i, coin in enumerate(coins):
            # BIP143: a P2WPKH input signs the P2PKH script of its key hash
            script_code = p2pkh_script(hash160(coin.key.pubkey))
            digest = segwit_v0_sighash(
                unsigned, i, script_code, coin.txout.amount_sat, SIGHASH_ALL
            )
            # low R: signatures fit the 72 bytes P2WPKH_INPUT_WEIGHT counts
            der = sign_digest(coin.key.privkey.secret, digest, low_r=True)
            signed = signed.with_witness(
                i, (der + bytes([SIGHASH_ALL]), coin.key.pubkey)
            )
        return signed

    def _reserve(self, tx: Tx) -> None:
        for txin in tx.inputs:
            self._reserved[txin.prevout] = tx.txid
        self._save()

    def spendable_total(self) -> int:
        """Satoshis the next spend can use (before its fee)."""
        return sum(c.txout.amount_sat for c in self._spendable())
