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
Coins are rebuilt from the chain on every open (the seed, a few counters and
the wallet's own unconfirmed transactions are all that is stored). Coins
chosen for a transaction not yet confirmed are *reserved*, and the
transaction is stored with them before it leaves, until the spend confirms
or ``release`` is called; on open, withdrawals not yet confirmed are
broadcast again and coins whose transaction can never confirm are released
(see ``lnpmsg.wallet.reservations``). The outputs of the wallet's own
unconfirmed transactions that pay it (change) are spendable at once.

Data dir (``wallet_dir``): ``seed`` (32 bytes, mode 0600, created on first
use) and ``wallet.json`` (network, birth height, next indexes, reservations
and their transactions), replaced atomically and fsynced at each change.
On a full disk nothing is handed out that the file does not hold, and no
coin the chain brings is dropped: see ``lnpmsg.wallet.state_file``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trio

from lnpmsg.bitcoin.tx import OutPoint, Tx
from lnpmsg.chain.address import address_for_script, script_for_address
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
from lnpmsg.wallet.bump import FeeBumping
from lnpmsg.wallet.errors import WalletError
from lnpmsg.wallet.holding import Holding
from lnpmsg.wallet.keys import IMPORTED, SEED_FILE, Account, DerivedKey, imported_key, load_or_create_seed
from lnpmsg.wallet.reservations import Reservations
from lnpmsg.wallet.spend import OwnCoin, build_spend, dust_limit, sign_input
from lnpmsg.wallet.state_file import StateFile

__all__ = [
    "GAP_LIMIT",
    "Balances",
    "FundedTx",
    "Wallet",
    "WalletUtxo",
    "Withdrawal",
    "dust_limit",
]

#: unused addresses watched past the last used one on each chain (BIP44's gap limit)
GAP_LIMIT = 20
#: coins from others are spent once confirmed this deep (the wallet's own
#: unconfirmed change is trusted at once, as Bitcoin Core's wallet does)
MIN_CONFIRMATIONS = 1


@dataclass(frozen=True, slots=True)
class WalletUtxo:
    """A coin of the wallet: confirmed, or (``height`` None, 0 confirmations)
    an output of its own transaction waiting for a block."""

    outpoint: OutPoint
    amount_sat: int
    address: str
    key_path: str
    height: int | None
    is_coinbase: bool
    confirmations: int
    reserved_by: bytes | None

    @property
    def confirmed(self) -> bool:
        return self.height is not None

    @property
    def mature(self) -> bool:
        return not self.is_coinbase or self.confirmations >= COINBASE_MATURITY

    @property
    def spendable(self) -> bool:
        trusted = not self.confirmed or self.confirmations >= MIN_CONFIRMATIONS
        return self.mature and trusted and self.reserved_by is None


@dataclass(frozen=True, slots=True)
class Balances:
    """The wallet's satoshis by state (each coin counted once).

    ``confirmed``: confirmed, mature, not reserved; ``unconfirmed``: outputs
    of its own transactions waiting for a block (change), not reserved;
    ``immature``: coinbase outputs younger than 100 blocks; ``reserved``:
    coins held for a transaction the wallet has not sent (a channel
    funding). Coins spent by the wallet's own broadcast transactions count
    no more: they are on their way.
    """

    confirmed_sat: int
    unconfirmed_sat: int
    immature_sat: int
    reserved_sat: int

    @property
    def spendable_sat(self) -> int:
        """What the next spend can use (before its fee)."""
        return self.confirmed_sat + self.unconfirmed_sat

    @property
    def total_sat(self) -> int:
        return self.confirmed_sat + self.unconfirmed_sat + self.immature_sat + self.reserved_sat


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


class Wallet(FeeBumping, Holding):
    """A BIP84 wallet over a ``ChainSource``. Build it with ``await Wallet.open(...)``;
    ``bump_cpfp`` and ``bump_rbf`` come from :mod:`lnpmsg.wallet.bump`, the coins held for
    unconfirmed transactions (``release``, ``reserved``, ...) from :mod:`lnpmsg.wallet.holding`."""

    def __init__(
        self,
        wallet_dir: Path,
        source: ChainSource,
        account: Account,
        state: dict[str, object],
        imported: Sequence[bytes] = (),
    ) -> None:
        self.wallet_dir = wallet_dir
        self.state_file = StateFile(wallet_dir)
        self.source = source
        self.account = account
        self.hrp = account.hrp
        self.birth_height = int(state["birth_height"])  # type: ignore[call-overload]
        next_index = state["next_index"]
        assert isinstance(next_index, list)
        self._next = [int(next_index[0]), int(next_index[1])]
        try:
            self._held = Reservations.from_state(state.get("reserved", {}), state.get("held", {}))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self.state_file.damaged(exc) from exc
        self._scripts: dict[bytes, DerivedKey] = {}
        self._derived = [0, 0]
        self._coins: dict[OutPoint, OwnCoin] = {}
        self._spent: dict[OutPoint, OwnCoin] = {}
        self._follower: ChainFollower | None = None
        self._lock = trio.Lock()
        self._imported = [imported_key(secret, i) for i, secret in enumerate(imported)]

    @classmethod
    async def open(
        cls,
        wallet_dir: str | os.PathLike[str],
        source: ChainSource,
        *,
        create: bool = True,
        imported: Sequence[bytes] = (),
    ) -> Wallet:
        """Open the wallet in ``wallet_dir`` (creating seed and state on first use) and sync it.

        ``imported``: raw private keys (32 bytes each) whose P2WPKH outputs the
        wallet also watches and spends, besides its BIP84 keys; not stored (give
        them at every open). For test set-ups that fund from fixed keys
        (``--dev-import-privkey``); coins they got before the wallet's birth
        height are not seen. ``WalletError`` (``io``) when the seed or the state
        cannot be written (a full disk): nothing is changed.
        """
        path = Path(wallet_dir)
        seed_existed = (path / SEED_FILE).exists()
        seed = load_or_create_seed(path, create=create)
        state_file = StateFile(path)
        existed = state_file.exists()
        if existed:
            state = state_file.read()
            if state["network"] != source.network:
                raise WalletError(
                    f"wallet {path} belongs to network {state['network']!r}, the chain is {source.network!r}",
                    code="network",
                )
        else:
            tip = await source.tip()
            state = {
                "network": source.network,
                # a new seed has no coins yet; an old seed without its state
                # (moved aside) may have them anywhere: scan the whole chain
                "birth_height": 0 if seed_existed else tip.height + 1,
                "next_index": [0, 0],
                "reserved": {},
            }
        account = Account(seed, source.network)
        wallet = cls(path, source, account, state, imported)
        # A new wallet's birth height is on disk before its first address; an existing state is
        # written again: a disk that cannot hold it (a full disk) refuses the open, not a later call.
        wallet._save()
        await wallet._start()
        await wallet._resubmit()
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
        for key in self._imported:
            self._scripts[key.script_pubkey] = key
            self._follower.watch_script(key.script_pubkey)
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

    def _state(self) -> dict[str, object]:
        return {
            "network": self.hrp,
            "birth_height": self.birth_height,
            "next_index": self._next,
            **self._held.state(),
        }

    def _save(self) -> None:
        """Write the state; ``WalletError`` (``io``) if the disk refuses it (see :mod:`~lnpmsg.wallet.state_file`)."""
        self.state_file.write(self._state())

    def _save_chain_change(self) -> None:
        """Write a change the chain told us of; a refused write is logged and retried at the next sync."""
        self.state_file.write_or_retry_later(self._state())

    @contextmanager
    def _handing_out(self) -> Iterator[None]:
        """A change the caller gets something of (an address index, reserved or released coins):
        saved before it is handed out; if the write fails (a full disk), the change is undone
        in memory and the ``WalletError`` raised, so the file and the wallet still agree."""
        next_index = list(self._next)
        held = self._held.state()
        yield
        if self._next == next_index and self._held.state() == held:
            return  # nothing changed: nothing to write
        try:
            self._save()
        except WalletError:
            self._next = next_index
            self._held = Reservations.from_state(held["reserved"], held["held"])
            raise

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
            if self.state_file.behind:
                self._save_chain_change()  # a write the disk refused earlier: try it again
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
                self._coins[event.outpoint] = OwnCoin(
                    event.outpoint, event.txout, key, event.height, event.tx.is_coinbase
                )
                if key.change != IMPORTED and key.index >= self._next[key.change]:
                    self._next[key.change] = key.index + 1
                    self._derive_up_to(key.change, key.index + 1 + GAP_LIMIT)
                    self._save_chain_change()
            elif isinstance(event, OutputSpent):
                coin = self._coins.pop(event.outpoint, None)
                if coin is not None:
                    self._spent[event.outpoint] = coin
                if self._held.spent(event.outpoint, event.spending_tx.txid):
                    self._save_chain_change()
            elif isinstance(event, ReorgedOut):
                undone = event.event
                if isinstance(undone, OutputConfirmed):
                    self._coins.pop(undone.outpoint, None)
                else:
                    coin = self._spent.pop(undone.outpoint, None)
                    if coin is not None:
                        self._coins[undone.outpoint] = coin
                        # our spend left the chain (back in the mempool, or to be
                        # broadcast at the next open): hold its coins again
                        self._held.hold(undone.spending_tx, broadcast=True)
                        self._save_chain_change()

    # -- addresses and funds ------------------------------------------------------

    def new_address(self) -> str:
        """A fresh receive address (bech32 P2WPKH: ``bcrt1q...`` on regtest)."""
        index = self._next[0]
        with self._handing_out():
            self._next[0] += 1
        self._derive_up_to(0, self._next[0] + GAP_LIMIT)
        return address_for_script(self.account.derive(0, index).script_pubkey, self.hrp)

    def _new_change_script(self) -> bytes:
        index = self._next[1]
        with self._handing_out():
            self._next[1] += 1
        self._derive_up_to(1, self._next[1] + GAP_LIMIT)
        return self.account.derive(1, index).script_pubkey

    def _own_coins(self) -> list[OwnCoin]:
        """Confirmed coins, then the outputs of the wallet's own unconfirmed
        transactions that pay it (not yet confirmed, not spent)."""
        coins = sorted(self._coins.values(), key=lambda c: (c.height, c.outpoint))
        for outpoint, txout in self._held.unconfirmed_outputs(self._scripts):
            if outpoint not in self._coins and outpoint not in self._spent:
                coins.append(OwnCoin(outpoint, txout, self._scripts[txout.script_pubkey], None, False))
        return coins

    def list_funds(self) -> list[WalletUtxo]:
        """Every coin, confirmed ones oldest first, then unconfirmed own outputs
        (``spendable`` tells which can be spent now)."""
        tip_height = self.tip.height if self.tip else -1
        return [
            WalletUtxo(
                coin.outpoint,
                coin.txout.amount_sat,
                address_for_script(coin.txout.script_pubkey, self.hrp),
                coin.key.path,
                coin.height,
                coin.is_coinbase,
                0 if coin.height is None else tip_height - coin.height + 1,
                self._held.holder(coin.outpoint),
            )
            for coin in self._own_coins()
        ]

    def balance(self) -> int:
        """Satoshis spendable now and confirmed (mature, not reserved)."""
        return self.balances().confirmed_sat

    def balances(self) -> Balances:
        """The wallet's satoshis by state: confirmed, unconfirmed (own change), immature, reserved."""
        confirmed = unconfirmed = immature = reserved = 0
        for u in self.list_funds():
            if u.reserved_by is not None:
                held = self._held.txs.get(u.reserved_by)
                if held is None or not held.broadcast:
                    reserved += u.amount_sat
                # else: spent by our own transaction on its way (its change counts instead)
            elif not u.mature:
                immature += u.amount_sat
            elif not u.confirmed:
                unconfirmed += u.amount_sat
            elif u.spendable:
                confirmed += u.amount_sat
        return Balances(confirmed, unconfirmed, immature, reserved)

    # -- spending -----------------------------------------------------------------

    async def withdraw(
        self,
        address: str,
        amount_sat: int | Literal["all"],
        feerate_per_kw: int | None = None,
    ) -> Withdrawal:
        """Pay ``amount_sat`` (or everything: ``"all"``) to ``address`` and broadcast.

        The transaction is stored with its reserved coins before it leaves
        (a crash before the broadcast sends it at the next open). Raises
        ``InsufficientFunds`` or ``WalletError`` (a rejected broadcast
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
            self._hold(tx, broadcast=True)
            try:
                await self.source.broadcast(tx.raw)
            except ChainError as exc:
                self._release_rejected(tx.txid)
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
            self._hold(tx, broadcast=False)
            return FundedTx(tx, index, fee)

    async def _feerate(self, feerate_per_kw: int | None) -> int:
        if feerate_per_kw is not None:
            if feerate_per_kw < 0:
                raise WalletError(f"negative fee rate {feerate_per_kw}", code="invalid")
            return feerate_per_kw
        try:
            return await self.source.estimate_feerate()
        except ChainError as exc:
            raise WalletError(f"no fee estimate: {exc.reason}", code="chain") from exc

    def _spendable(self) -> list[OwnCoin]:
        tip_height = self.tip.height if self.tip else -1
        coins = []
        for coin in self._own_coins():
            if coin.outpoint in self._held:
                continue
            if coin.height is not None:
                confirmations = tip_height - coin.height + 1
                if confirmations < MIN_CONFIRMATIONS:
                    continue
                if coin.is_coinbase and confirmations < COINBASE_MATURITY:
                    continue
            coins.append(coin)
        return coins

    def _build(self, script: bytes, amount: int | str, feerate: int) -> tuple[Tx, int, int]:
        # locktime = tip height: the spend cannot be mined into a rewritten past block (anti fee sniping)
        tip_height = self.tip.height if self.tip else 0
        return build_spend(self._spendable(), script, amount, feerate, self._new_change_script, max(tip_height, 0))

    def lend_coin(self, min_sat: int, exclude: Collection[OutPoint] = ()) -> tuple[OutPoint, int, bytes] | None:
        """A confirmed coin of at least ``min_sat`` (the smallest such) and its private key, for a
        transaction the wallet does not build (a channel claim's fee input); None if there is none.

        The coin is not reserved: the claim spending it is broadcast at once, and the wallet
        sees the spend in the next block like any other; ``exclude`` are coins lent already.
        """
        coins = [
            c for c in self._spendable()
            if c.height is not None and c.txout.amount_sat >= min_sat and c.outpoint not in exclude
        ]  # fmt: skip
        if not coins:
            return None
        coin = min(coins, key=lambda c: (c.txout.amount_sat, c.outpoint))
        return coin.outpoint, coin.txout.amount_sat, coin.key.privkey.secret

    def sign_inputs(self, tx: Tx, indices: Collection[int]) -> list[tuple[bytes, bytes]]:
        """P2WPKH witnesses (SIGHASH_ALL) for the inputs ``indices`` of ``tx``, a transaction the wallet
        did not build (a dual-funded channel's funding); each must spend a coin of the wallet."""
        coins = {c.outpoint: c for c in self._own_coins()}
        witnesses = []
        for index in indices:
            coin = coins.get(tx.inputs[index].prevout)
            if coin is None:
                raise WalletError(f"input {index} does not spend a coin of the wallet", code="invalid")
            witnesses.append(sign_input(tx, index, coin))
        return witnesses

    def spendable_total(self) -> int:
        """Satoshis the next spend can use (before its fee)."""
        return sum(c.txout.amount_sat for c in self._spendable())
