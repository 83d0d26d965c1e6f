"""On-chain wallet: BIP84 keys from a seed in the data dir, coins tracked from
a ``ChainSource``, coin selection, P2WPKH signing, withdrawals, channel
funding and fee bumping (see ``lnpmsg.wallet.wallet`` and
``lnpmsg.wallet.bump``); :mod:`lnpmsg.wallet.app` puts the chain and the
wallet on the node's control API (``chain.*`` calls).

Importing the package or its sans-IO coin selection loads no trio: the names
of ``lnpmsg.wallet.wallet`` (which follows a chain source), ``keys`` and
``coinselect`` are imported on first access.
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports
from lnpmsg.wallet.errors import InsufficientFunds, WalletError

if TYPE_CHECKING:
    from lnpmsg.wallet.bump import Bump
    from lnpmsg.wallet.coinselect import Candidate, Selection, select_all, select_coins
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

_WALLET_NAMES = ("GAP_LIMIT", "Balances", "FundedTx", "Wallet", "WalletUtxo", "Withdrawal", "dust_limit")
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        **dict.fromkeys(_WALLET_NAMES, "lnpmsg.wallet.wallet"),
        "Bump": "lnpmsg.wallet.bump",
        # the keys (BIP32 through embit) and coin selection too: a node without a chain
        # passes through this package (node_setup) and uses neither
        **dict.fromkeys(("Account", "DerivedKey", "load_or_create_seed"), "lnpmsg.wallet.keys"),
        **dict.fromkeys(("Candidate", "Selection", "select_all", "select_coins"), "lnpmsg.wallet.coinselect"),
    },
)

__all__ = [
    "GAP_LIMIT",
    "Account",
    "Balances",
    "Bump",
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
