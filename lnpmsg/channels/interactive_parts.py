"""What each side brings to a BOLT-2 interactive transaction construction.

Our inputs and outputs (:class:`OwnInput`, :class:`OwnOutput`), a splice's
input spending the channel's funding (:class:`SharedInput`), the channel's
shared output (:class:`FundingOutput`) and the fee a side owes for what it
adds (:func:`contribution_fee`): the values :mod:`.interactive_tx`'s
sessions take, and fee bumps compare across versions. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lnpmsg.bitcoin.fees import fee_for_weight
from lnpmsg.bitcoin.tx import OutPoint, Tx

from .interactive_rules import COMMON_FIELDS_WEIGHT, MAX_SEQUENCE, input_weight, output_weight

__all__ = [
    "FundingOutput",
    "OwnInput",
    "OwnOutput",
    "SharedInput",
    "contribution_fee",
    "inputs_besides",
    "own_outpoints",
]


@dataclass(frozen=True, slots=True)
class OwnInput:
    """An input we contribute: the whole previous transaction (the peer checks it) and the output index."""

    prevtx: bytes
    vout: int
    sequence: int = MAX_SEQUENCE

    @property
    def outpoint(self) -> OutPoint:
        """The coin this input spends."""
        return Tx.parse(self.prevtx).outpoint(self.vout)


def own_outpoints(inputs: Iterable[OwnInput]) -> set[OutPoint]:
    """The coins ``inputs`` spend."""
    return {i.outpoint for i in inputs}


def inputs_besides(groups: Iterable[Iterable[OwnInput]], kept: set[OutPoint]) -> tuple[OwnInput, ...]:
    """Our inputs in ``groups`` that spend none of ``kept``, each coin once: what to free when only a
    version spending ``kept`` may still confirm."""
    found = {op: i for group in groups for i in group if (op := i.outpoint) not in kept}
    return tuple(found.values())


@dataclass(frozen=True, slots=True)
class OwnOutput:
    """An output we contribute (change, or anything else we pay for)."""

    sats: int
    script: bytes


@dataclass(frozen=True, slots=True)
class SharedInput:
    """A splice's input spending the channel's current funding output (BOLT 2 ``shared_input_txid``).

    The splice initiator adds it without ``prevtx`` and pays its weight; for what each side pays
    its whole value counts as the initiator's (so the initiator's :class:`FundingOutput` share is
    the old capacity plus its contribution). Its witness needs both funding keys: it travels in
    ``tx_signatures``' ``shared_input_signature``, not among the witnesses.
    """

    outpoint: OutPoint
    sats: int
    script: bytes


@dataclass(frozen=True, slots=True)
class FundingOutput:
    """The channel's shared output: its script and each side's share of its value.

    The initiator adds it (and pays its weight); the non-initiator checks it
    arrived with the value both announced.
    """

    script: bytes
    our_sat: int
    their_sat: int

    @property
    def total_sat(self) -> int:
        return self.our_sat + self.their_sat


def contribution_fee(
    prev_scripts: list[bytes], output_scripts: list[bytes], feerate_per_kw: int, *, initiator: bool
) -> int:
    """The fee one side owes for its inputs (by the scripts they spend) and outputs, plus the
    common fields when it is the initiator (BOLT 2 fee responsibility)."""
    weight = sum(map(input_weight, prev_scripts)) + sum(map(output_weight, output_scripts))
    return fee_for_weight(weight + (COMMON_FIELDS_WEIGHT if initiator else 0), feerate_per_kw)
