"""On-chain wallet: BIP84 keys from a seed in the data dir, coins tracked from
a ``ChainSource``, coin selection, P2WPKH signing, withdrawals and channel
funding (see ``lnpmsg.wallet.wallet``)."""

from lnpmsg.wallet.coinselect import Candidate, Selection, select_all, select_coins
from lnpmsg.wallet.errors import InsufficientFunds, WalletError
from lnpmsg.wallet.keys import Account, DerivedKey, load_or_create_seed
from lnpmsg.wallet.wallet import (
    GAP_LIMIT,
    Balances,
    FundedTx,
    Wallet,
    WalletUtxo,
    Withdrawal,
    dust_limit,
)

__all__ = [
    "GAP_LIMIT",
    "Account",
    "Balances",
    "Candidate",
    "DerivedKey",
    "FundedTx",
    "InsufficientFunds",
    "Selection",
    "Wallet",
    "WalletError",
    "WalletUtxo",
    "Withdrawal",
    "dust_limit",
    "load_or_create_seed",
    "select_all",
    "select_coins",
]
