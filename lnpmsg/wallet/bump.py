"""Fee bumping of the wallet's unconfirmed transactions (``lnpmsg bumpfee``), a mixin of
:class:`~lnpmsg.wallet.wallet.Wallet`; the arithmetic is :mod:`lnpmsg.wallet.feebump`'s.

- **CPFP** (:meth:`FeeBumping.bump_cpfp`): a child spends an output of ours of the stuck
  transaction (its change, or a payment to our own address), with more confirmed coins if that
  output cannot pay, back to a new change address, paying enough for parent and child together
  to reach the asked rate. The parent's txid stays: the one way for a channel's funding
  transaction, and for a payment to us that someone else sent.
- **RBF** (:meth:`FeeBumping.bump_rbf`, BIP 125): a replacement of one of the wallet's own spends
  (a withdrawal) spending the same inputs, the recipients' outputs unchanged, the change smaller
  (dropped when below dust, or more confirmed coins added: BIP 125 forbids new unconfirmed ones).
  Never a channel's funding (the channel signed for that txid), nor a transaction with inputs
  that are not the wallet's, nor one whose outputs another unconfirmed wallet transaction spends
  (the replacement would evict it: bump that one, or use CPFP).

Both persist before they send, like every spend of the wallet: the child (and its reserved
coins) or the replacement (its coins now reserved for it, the replaced transaction forgotten)
is in ``wallet.json`` before the broadcast; a broadcast the chain refuses frees what the bump
reserved (a refused replacement gives the replaced transaction its coins back). Once a
replacement is sent, the wallet counts its change, not the replaced one's; if the replaced one
confirms after all, the chain shows its outputs and the spend of the inputs, and the wallet
forgets the replacement (see ``Wallet._apply``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.tx import OutPoint, Tx, TxOut
from lnpmsg.chain.errors import ChainError
from lnpmsg.wallet.errors import InsufficientFunds, WalletError
from lnpmsg.wallet.feebump import (
    cpfp_child_fee,
    feerate_sat_per_vb,
    rbf_fee,
    sat_per_kvb,
    spend_weight,
    vsize,
)
from lnpmsg.wallet.spend import P2WPKH_TEMPLATE, OwnCoin, dust_limit, sign

if TYPE_CHECKING:
    from lnpmsg.wallet.wallet import Wallet

__all__ = ["Bump", "FeeBumping"]

_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Bump:
    """A fee bump sent: ``tx`` is the CPFP child or the replacement of ``target``.

    CPFP: ``fee_sat`` is the child's, ``package_*`` parent and child together. RBF: ``fee_sat``
    is the replacement's, ``package_*`` the replacement alone; ``target_fee_sat`` the old one's.
    """

    method: str
    tx: Tx
    target: bytes
    fee_sat: int
    target_fee_sat: int
    target_vsize: int
    package_fee_sat: int
    package_vsize: int

    def result(self) -> dict[str, Any]:
        """The control call's JSON result."""
        out: dict[str, Any] = {
            "method": self.method,
            "txid": self.tx.txid_hex,
            "fee_sat": self.fee_sat,
            "vsize": self.tx.vsize,
            "feerate_sat_per_vb": round(feerate_sat_per_vb(self.fee_sat, self.tx.vsize), 3),
            ("parent_txid" if self.method == "cpfp" else "replaced_txid"): self.target[::-1].hex(),
            ("parent_fee_sat" if self.method == "cpfp" else "replaced_fee_sat"): self.target_fee_sat,
            ("parent_feerate_sat_per_vb" if self.method == "cpfp" else "replaced_feerate_sat_per_vb"): round(
                feerate_sat_per_vb(self.target_fee_sat, self.target_vsize), 3
            ),
            "tx_hex": self.tx.raw.hex(),
        }
        if self.method == "cpfp":
            out |= {
                "package_fee_sat": self.package_fee_sat,
                "package_vsize": self.package_vsize,
                "package_feerate_sat_per_vb": round(feerate_sat_per_vb(self.package_fee_sat, self.package_vsize), 3),
            }
        return out


def _rate(feerate_sat_per_vb: float) -> int:
    try:
        return sat_per_kvb(feerate_sat_per_vb)
    except ValueError as exc:
        raise WalletError(str(exc), code="invalid") from None


class FeeBumping:
    """CPFP and RBF for :class:`~lnpmsg.wallet.wallet.Wallet` (see the module docs)."""

    async def bump_cpfp(
        self: Wallet,
        parent_txid: bytes,
        feerate_sat_per_vb: float,
        *,
        parent: Tx | None = None,
        parent_fee_sat: int | None = None,
    ) -> Bump:
        """Spend an output of ours of unconfirmed ``parent_txid`` so that parent and child pay
        ``feerate_sat_per_vb`` together; broadcast the child.

        The parent is a transaction the wallet holds, else ``parent`` (e.g. a dual-funded
        channel's funding, which the channel app holds); ``parent_fee_sat`` when the wallet
        cannot add up its inputs. ``WalletError`` codes: ``unknown``, ``no-own-output``,
        ``confirmed``, ``spent``, ``unknown-fee``, ``feerate`` (not above the parent's),
        ``dust``, ``rejected`` (the chain's refusal; the child's coins are freed).
        """
        rate = _rate(feerate_sat_per_vb)
        async with self._lock:
            await self._sync_locked()
            held = self._held.txs.get(parent_txid)
            tx = held.tx if held is not None else parent
            if tx is None or tx.txid != parent_txid:
                self._refuse_unknown(parent_txid)
                raise WalletError(f"{parent_txid[::-1].hex()} is not an unconfirmed transaction this wallet knows", code="unknown")
            ours = [OutPoint(tx.txid, v) for v, o in enumerate(tx.outputs) if o.script_pubkey in self._scripts]
            if not ours:
                raise WalletError(
                    f"{tx.txid_hex} has no output paying this wallet: CPFP spends one (RBF replaces the wallet's own spends)",
                    code="no-own-output",
                )
            if any(op in self._coins or op in self._spent for op in ours):
                raise WalletError(f"{tx.txid_hex} is confirmed already: nothing to bump", code="confirmed")
            free = [op for op in ours if op not in self._held]
            if not free:
                by = {self._held.holder(op)[::-1].hex() for op in ours}  # type: ignore[index]
                raise WalletError(
                    f"the outputs of {tx.txid_hex} paying this wallet are spent already by unconfirmed {', '.join(sorted(by))}: "
                    "bump that transaction instead",
                    code="spent",
                )
            fee = parent_fee_sat if parent_fee_sat is not None else self._fee_of(tx)
            if fee is None:
                raise WalletError(f"cannot tell the fee of {tx.txid_hex}: some input is not the wallet's", code="unknown-fee")
            own = max(free, key=lambda op: (tx.outputs[op.vout].amount_sat, op.vout))
            coins = [OwnCoin(own, tx.outputs[own.vout], self._scripts[tx.outputs[own.vout].script_pubkey], None, False)]
            extra = sorted(
                (c for c in self._spendable() if c.height is not None and c.outpoint.txid != tx.txid),
                key=lambda c: (-c.txout.amount_sat, c.outpoint),
            )
            while True:
                child_vsize = vsize(spend_weight(len(coins), [P2WPKH_TEMPLATE]))
                try:
                    child_fee = cpfp_child_fee(fee, tx.vsize, child_vsize, rate)
                except ValueError as exc:
                    raise WalletError(f"{tx.txid_hex}: {exc}: ask for a higher rate", code="feerate") from None
                value = sum(c.txout.amount_sat for c in coins) - child_fee
                if value >= dust_limit(P2WPKH_TEMPLATE):
                    break
                if not extra:
                    raise WalletError(
                        f"the child would pay {child_fee} sat from {sum(c.txout.amount_sat for c in coins)} sat: its output "
                        f"would be dust (below {dust_limit(P2WPKH_TEMPLATE)} sat) and no other confirmed coin can help",
                        code="dust",
                    )
                coins.append(extra.pop(0))
            child = sign(coins, [TxOut(value, self._new_change_script())], max(self.tip.height if self.tip else 0, 0))
            await self._send_held(child, "the fee bump (CPFP)")
            actual_fee = sum(c.txout.amount_sat for c in coins) - value
            return Bump("cpfp", child, tx.txid, actual_fee, fee, tx.vsize, fee + actual_fee, tx.vsize + child.vsize)

    async def bump_rbf(
        self: Wallet,
        txid: bytes,
        feerate_sat_per_vb: float,
        *,
        channel_txids: Collection[bytes] = (),
    ) -> Bump:
        """Replace the wallet's own unconfirmed spend ``txid`` by one paying ``feerate_sat_per_vb``
        (BIP 125); broadcast it. ``channel_txids``: transactions the channel app owns (refused).

        ``WalletError`` codes: ``unknown``, ``confirmed``, ``channel``, ``not-ours``,
        ``has-descendants``, ``feerate``, ``rejected``; ``InsufficientFunds`` when the coins
        cannot pay the higher fee with the recipients' amounts unchanged.
        """
        rate = _rate(feerate_sat_per_vb)
        async with self._lock:
            await self._sync_locked()
            held = self._held.txs.get(txid)
            if held is None:
                self._refuse_unknown(txid)
                raise WalletError(f"{txid[::-1].hex()} is not an unconfirmed spend of this wallet", code="unknown")
            old = held.tx
            if not held.broadcast or txid in channel_txids:
                raise WalletError(
                    f"{old.txid_hex} funds a channel: its txid must not change (the channel's commitments spend it); "
                    "bump it with CPFP (the default method)",
                    code="channel",
                )
            own = {c.outpoint: c for c in self._own_coins()}
            for i, txin in enumerate(old.inputs):
                if txin.prevout not in own:
                    raise WalletError(
                        f"input {i} of {old.txid_hex} does not spend a coin of the wallet: only the wallet's own "
                        "spends (withdraw) can be replaced; use CPFP",
                        code="not-ours",
                    )
            spenders = sorted({h.tx.txid_hex for h in self._held.txs.values() for i in h.tx.inputs if i.prevout.txid == txid})
            if spenders:
                raise WalletError(
                    f"outputs of {old.txid_hex} are spent by unconfirmed {', '.join(spenders)}: a replacement would evict "
                    "it; bump that one (CPFP), or wait",
                    code="has-descendants",
                )
            coins = [own[txin.prevout] for txin in old.inputs]
            old_fee = sum(c.txout.amount_sat for c in coins) - sum(o.amount_sat for o in old.outputs)
            new = self._replacement(old, old_fee, coins, rate)
            self._swap_held(old, new)
            try:
                await self.source.broadcast(new.raw)
            except ChainError as exc:
                self._swap_held(new, old, saved=False)
                raise WalletError(f"the chain rejected the fee bump (RBF): {exc.reason}", code="rejected") from exc
            new_fee = sum(own[i.prevout].txout.amount_sat if i.prevout in own else 0 for i in new.inputs) - sum(
                o.amount_sat for o in new.outputs
            )
            return Bump("rbf", new, txid, new_fee, old_fee, old.vsize, new_fee, new.vsize)

    # ------------------------------------------------------------ helpers

    def _replacement(self: Wallet, old: Tx, old_fee: int, coins: list[OwnCoin], rate: int) -> Tx:
        """The signed replacement of ``old``: the recipients kept, the change smaller or gone, more coins if need be."""
        change_at = [
            v for v, o in enumerate(old.outputs)
            if (k := self._scripts.get(o.script_pubkey)) is not None and k.change == _CHANGE
        ]  # fmt: skip
        recipients = [o for v, o in enumerate(old.outputs) if v not in change_at]
        change_script = old.outputs[change_at[0]].script_pubkey if change_at else None
        paid = sum(o.amount_sat for o in recipients)
        used = {c.outpoint for c in coins}
        # BIP 125 rule 2: no new unconfirmed inputs
        extra = sorted(
            (c for c in self._spendable() if c.height is not None and c.outpoint not in used),
            key=lambda c: (-c.txout.amount_sat, c.outpoint),
        )
        scripts = [o.script_pubkey for o in recipients]
        while True:
            total = sum(c.txout.amount_sat for c in coins)
            try:
                fee = rbf_fee(old_fee, old.vsize, vsize(spend_weight(len(coins), [*scripts, P2WPKH_TEMPLATE])), rate)
                fee_without_change = rbf_fee(old_fee, old.vsize, vsize(spend_weight(len(coins), scripts)), rate)
            except ValueError as exc:
                raise WalletError(f"{old.txid_hex}: {exc}: ask for a higher rate", code="feerate") from None
            change = total - paid - fee
            if change >= dust_limit(P2WPKH_TEMPLATE):
                outputs = [*recipients, TxOut(change, change_script or self._new_change_script())]
                break
            if total - paid >= fee_without_change:
                outputs = recipients  # a change below dust goes to the fee
                break
            if not extra:
                raise InsufficientFunds(paid + fee_without_change, total, " (confirmed coins, to replace the transaction)")
            coins.append(extra.pop(0))
        coins.sort(key=lambda c: (c.outpoint.txid[::-1], c.outpoint.vout))
        outputs.sort(key=lambda o: (o.amount_sat, o.script_pubkey))
        return sign(coins, outputs, old.locktime)

    def _fee_of(self: Wallet, tx: Tx) -> int | None:
        """``tx``'s fee if the wallet knows every coin it spends (its own, confirmed or not)."""
        known = {c.outpoint: c.txout.amount_sat for c in self._own_coins()}
        known |= {op: c.txout.amount_sat for op, c in self._spent.items()}
        for h in self._held.txs.values():
            known |= {h.tx.outpoint(v): o.amount_sat for v, o in enumerate(h.tx.outputs)}
        if any(i.prevout not in known for i in tx.inputs):
            return None
        return sum(known[i.prevout] for i in tx.inputs) - sum(o.amount_sat for o in tx.outputs)

    def _refuse_unknown(self: Wallet, txid: bytes) -> None:
        """``confirmed`` when outputs of ``txid`` are among the wallet's confirmed (or spent) coins."""
        if any(op.txid == txid for op in (*self._coins, *self._spent)):
            raise WalletError(f"{txid[::-1].hex()} is confirmed already: nothing to bump", code="confirmed")

    async def _send_held(self: Wallet, tx: Tx, what: str) -> None:
        """Hold ``tx`` (written first), then broadcast; a refusal frees its coins (``rejected``)."""
        self._hold(tx, broadcast=True)
        try:
            await self.source.broadcast(tx.raw)
        except ChainError as exc:
            self._release_rejected(tx.txid)
            raise WalletError(f"the chain rejected {what}: {exc.reason}", code="rejected") from exc

    def _swap_held(self: Wallet, old: Tx, new: Tx, *, saved: bool = True) -> None:
        """``new`` holds what ``old`` held (plus its other coins), ``old`` is forgotten.

        ``saved``: written before anything leaves (``WalletError`` ``io`` undoes it); else a
        failed write is retried later (undoing a refused broadcast must not fail).
        """
        if saved:
            with self._handing_out():
                self._held.release(old.txid)
                self._held.hold(new, broadcast=True)
            return
        self._held.release(old.txid)
        self._held.hold(new, broadcast=True)
        self._save_chain_change()
