"""The runner's chain is the one lnprototest's tests assume: its fixed block 1,
height 101 at the start, ``tx_spendable`` valid in block 102, blocks added and
trimmed through the node's control calls, and the wallet holding the keys
lnprototest funds the node under test with."""

from __future__ import annotations

from typing import Any

from lnprototest import Block, Event, EventError
from lnprototest.utils import tx_spendable

#: what tx_spendable pays to the five keys the runner imports (outputs 0-4; 5 and 6 are not the runner's)
RUNNER_FUNDS_SAT = 2_000_000 + 1_000_000 + 4_983_494_700 + 3_000_000 + 4_000_000


class ExpectBalance(Event):  # type: ignore[misc]
    """The node's wallet holds exactly this many confirmed satoshis."""

    def __init__(self, confirmed_sat: int) -> None:
        super().__init__()
        self.confirmed_sat = confirmed_sat

    def action(self, runner: Any) -> bool:
        super().action(runner)
        balance = runner.call("chain.getbalance")
        if balance["confirmed_sat"] != self.confirmed_sat:
            raise EventError(self, f"wallet has {balance}, expected {self.confirmed_sat} sat confirmed")
        return True


def test_blocks_and_the_funding_keys(runner: Any) -> None:
    runner.run(
        [
            ExpectBalance(0),
            # lnprototest's funding transaction spends block 1's coinbase
            Block(blockheight=102, txs=[tx_spendable]),
            ExpectBalance(RUNNER_FUNDS_SAT),
            Block(blockheight=103, number=3),
            # replace 104 and 105 (invalidateblock, then mine)
            Block(blockheight=104),
            ExpectBalance(RUNNER_FUNDS_SAT),
            # replace block 102 itself: tx_spendable waits again, mined into the new 102
            Block(blockheight=102),
            ExpectBalance(RUNNER_FUNDS_SAT),
        ]
    )
