"""How outputs are spent: witness templates, spend paths and signing plans.

Every output lnpmsg creates is described as a ``Spendable``: its amount and
script, plus the named ``SpendPath``s that can spend it. A path is a witness
template, a list whose items are fixed bytes, ``Sig`` slots (a signature by a
given key with a given sighash type) and ``Value`` slots (data such as a
payment preimage), together with the nSequence and nLockTime the script's
timelocks demand. The witness script of a P2WSH output is appended by the
plan, never written into templates.

A ``SpendPlan`` is an unsigned transaction plus, for each input, the output it
spends and the path it uses. It computes each signature hash, signs, checks
signatures and assembles the final witnesses, so that signing code never has
to know which kind of output it is spending. ``build_spend`` and ``sweep``
make plans for any set of (outpoint, spendable, path) triples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lnpmsg.bitcoin.ecdsa import (
    compact_to_der,
    der_to_compact,
    private_key,
    sign_digest,
    verify_digest,
)
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import hash160
from lnpmsg.bitcoin.script import p2pkh_script, p2wpkh, p2wsh
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from lnpmsg.bitcoin.tx import (
    LOCKTIME_THRESHOLD,
    MAX_MONEY,
    SEQUENCE_FINAL,
    SEQUENCE_RBF,
    OutPoint,
    Tx,
    TxIn,
    TxOut,
)

from .errors import ChannelError
from .keys import check_pubkey

__all__ = [
    "DEFAULT_SEQUENCE",
    "MAX_WITNESS_SIGNATURE_SIZE",
    "InputPlan",
    "Sig",
    "SpendPath",
    "SpendPlan",
    "Spendable",
    "Value",
    "WitnessItem",
    "build_spend",
    "sweep",
]

#: Sequence used when a path does not fix one: signals replaceability (BIP 125)
#: and is not final, so nLockTime and OP_CHECKLOCKTIMEVERIFY apply.
DEFAULT_SEQUENCE = SEQUENCE_RBF
#: A DER signature is at most 72 bytes, plus the sighash byte: the size fee estimates assume.
MAX_WITNESS_SIGNATURE_SIZE = 73
_COMPACT_SIGNATURE_SIZE = 64


@dataclass(frozen=True, slots=True)
class Sig:
    """A witness slot for a signature by ``pubkey`` with ``sighash`` type.

    ``signer`` names who provides it, relative to the owner of the commitment
    the output belongs to: ``"local"`` or ``"remote"`` (``""`` if anyone).
    """

    slot: str
    pubkey: bytes
    sighash: int = SIGHASH_ALL
    signer: str = ""

    def __post_init__(self) -> None:
        check_pubkey(self.pubkey)


@dataclass(frozen=True, slots=True)
class Value:
    """A witness slot for data supplied at spending time (e.g. a 32-byte payment preimage).

    ``size`` is the exact length required (``-1``: any length, counted as empty in weight estimates).
    """

    slot: str
    size: int


WitnessItem = bytes | Sig | Value


@dataclass(frozen=True, slots=True)
class SpendPath:
    """One way to spend an output: a witness template and the timelocks it needs.

    ``sequence`` is the nSequence the script requires (``None``: any non-final
    value); ``locktime`` the minimum nLockTime (``0``: none).
    """

    name: str
    witness: tuple[WitnessItem, ...]
    sequence: int | None = None
    locktime: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "witness", tuple(self.witness))
        slots = [item.slot for item in self.witness if isinstance(item, Sig | Value)]
        if len(slots) != len(set(slots)):
            raise ChannelError(f"spend path {self.name!r} repeats a slot name")

    @property
    def signatures(self) -> tuple[Sig, ...]:
        """The signature slots of this path, in witness order."""
        return tuple(item for item in self.witness if isinstance(item, Sig))

    def slot(self, name: str) -> Sig | Value:
        """The slot called ``name``."""
        for item in self.witness:
            if isinstance(item, Sig | Value) and item.slot == name:
                return item
        raise ChannelError(f"spend path {self.name!r} has no slot {name!r}")


@dataclass(frozen=True, slots=True)
class Spendable:
    """An output (amount and script) and the paths that can spend it.

    ``witness_script`` is set for P2WSH outputs; ``script_code`` is what
    BIP 143 signs (the witness script, or the P2PKH script for P2WPKH).
    """

    amount_sat: int
    script_pubkey: bytes
    witness_script: bytes | None
    script_code: bytes
    paths: tuple[SpendPath, ...] = ()

    @classmethod
    def p2wsh(cls, amount_sat: int, witness_script: bytes, paths: Sequence[SpendPath] = ()) -> Spendable:
        """A P2WSH output of ``witness_script``."""
        return cls(amount_sat, p2wsh(witness_script), witness_script, witness_script, tuple(paths))

    @classmethod
    def p2wpkh(cls, amount_sat: int, pubkey: bytes, paths: Sequence[SpendPath] = ()) -> Spendable:
        """A P2WPKH output paying ``pubkey``."""
        return cls(amount_sat, p2wpkh(pubkey), None, p2pkh_script(hash160(pubkey)), tuple(paths))

    def path(self, name: str) -> SpendPath:
        """The spend path called ``name``."""
        for path in self.paths:
            if path.name == name:
                return path
        raise ChannelError(f"output has no spend path {name!r} (has {[p.name for p in self.paths]})")

    def txout(self) -> TxOut:
        """The output as it appears in a transaction."""
        return TxOut(self.amount_sat, self.script_pubkey)


@dataclass(frozen=True, slots=True)
class InputPlan:
    """What input ``i`` of a plan spends, and how."""

    spendable: Spendable
    path: SpendPath


@dataclass(frozen=True, slots=True)
class SpendPlan:
    """An unsigned transaction and, per input, the output and path it spends.

    ``spendables`` describes the transaction's own outputs where they are
    spendable by known paths (``None`` for plain destinations), so that a
    plan's outputs can be spent by further plans.
    """

    label: str
    tx: Tx
    inputs: tuple[InputPlan, ...]
    spendables: tuple[Spendable | None, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        spendables = tuple(self.spendables) or (None,) * len(self.tx.outputs)
        object.__setattr__(self, "spendables", spendables)
        if len(self.inputs) != len(self.tx.inputs):
            raise ChannelError("a plan needs one InputPlan per transaction input")
        if len(spendables) != len(self.tx.outputs):
            raise ChannelError("a plan's spendables must match the transaction outputs")

    @property
    def input_sat(self) -> int:
        """Total amount of the outputs spent."""
        return sum(plan.spendable.amount_sat for plan in self.inputs)

    @property
    def fee_sat(self) -> int:
        """Inputs minus outputs."""
        return self.input_sat - sum(out.amount_sat for out in self.tx.outputs)

    def signatures(self) -> list[tuple[int, Sig]]:
        """Every signature this transaction needs: (input index, slot)."""
        return [(index, sig) for index, plan in enumerate(self.inputs) for sig in plan.path.signatures]

    def _sig(self, input_index: int, slot: str) -> Sig:
        if not 0 <= input_index < len(self.inputs):
            raise ChannelError(f"{self.label}: no input {input_index}")
        item = self.inputs[input_index].path.slot(slot)
        if not isinstance(item, Sig):
            raise ChannelError(f"{self.label}: slot {slot!r} is not a signature")
        return item

    def sighash(self, input_index: int, slot: str) -> bytes:
        """The digest the signature for ``slot`` of input ``input_index`` signs."""
        sig = self._sig(input_index, slot)
        spent = self.inputs[input_index].spendable
        return segwit_v0_sighash(self.tx, input_index, spent.script_code, spent.amount_sat, sig.sighash)

    def sign(self, input_index: int, slot: str, privkey: bytes) -> bytes:
        """Sign ``slot`` of input ``input_index``: DER signature plus sighash byte, ready for the witness."""
        sig = self._sig(input_index, slot)
        key = private_key(privkey)
        if key.public_key.format() != sig.pubkey:
            raise ChannelError(f"{self.label}: the private key does not match slot {slot!r}")
        return sign_digest(key, self.sighash(input_index, slot)) + bytes([sig.sighash])

    def verify(self, input_index: int, slot: str, signature: bytes) -> bool:
        """Whether ``signature`` (compact, or DER plus sighash byte) is valid for ``slot``."""
        try:
            item = self._witness_signature(input_index, slot, signature)
        except BitcoinError:
            return False
        return verify_digest(self._sig(input_index, slot).pubkey, item[:-1], self.sighash(input_index, slot))

    def _witness_signature(self, input_index: int, slot: str, signature: bytes) -> bytes:
        sig = self._sig(input_index, slot)
        if signature and signature[-1] == sig.sighash:
            try:
                der_to_compact(signature[:-1])
                return bytes(signature)
            except BitcoinError:
                pass
        if len(signature) == _COMPACT_SIGNATURE_SIZE:
            return compact_to_der(signature) + bytes([sig.sighash])
        raise ChannelError(f"{self.label}: {slot!r} needs a compact signature or DER plus sighash {sig.sighash:#x}")

    def witness_stack(self, input_index: int, values: Mapping[str, bytes]) -> list[bytes]:
        """The witness of input ``input_index`` with its slots filled from ``values``.

        A signature may be given as 64 compact bytes (as BOLT messages carry
        it; the slot's sighash byte is added) or as DER plus sighash byte.
        """
        plan = self.inputs[input_index]
        stack: list[bytes] = []
        for item in plan.path.witness:
            if isinstance(item, bytes):
                stack.append(item)
                continue
            if item.slot not in values:
                raise ChannelError(f"{self.label}: input {input_index} needs {item.slot!r}")
            value = bytes(values[item.slot])
            if isinstance(item, Sig):
                value = self._witness_signature(input_index, item.slot, value)
            elif item.size >= 0 and len(value) != item.size:
                raise ChannelError(f"{self.label}: {item.slot!r} must be {item.size} bytes")
            stack.append(value)
        if plan.spendable.witness_script is not None:
            stack.append(plan.spendable.witness_script)
        return stack

    def finalize(self, values: Mapping[str, bytes] | Sequence[Mapping[str, bytes]]) -> Tx:
        """The signed transaction. ``values``: one mapping per input, or one mapping for a single input."""
        per_input = [values] if isinstance(values, Mapping) else list(values)
        if len(per_input) != len(self.inputs):
            raise ChannelError(f"{self.label}: values for {len(per_input)} inputs, plan has {len(self.inputs)}")
        tx = self.tx
        for index, mapping in enumerate(per_input):
            tx = tx.with_witness(index, self.witness_stack(index, mapping))
        return tx

    def expected_weight(self) -> int:
        """Weight once signed, assuming maximum-size (73-byte) signatures."""
        tx = self.tx
        for index, plan in enumerate(self.inputs):
            stack = [
                item if isinstance(item, bytes)
                else bytes(MAX_WITNESS_SIGNATURE_SIZE if isinstance(item, Sig) else max(item.size, 0))
                for item in plan.path.witness
            ]  # fmt: skip
            if plan.spendable.witness_script is not None:
                stack.append(plan.spendable.witness_script)
            tx = tx.with_witness(index, stack)
        return tx.weight


def _locktime_kind(locktime: int) -> bool:
    return locktime >= LOCKTIME_THRESHOLD


def build_spend(
    spends: Sequence[tuple[OutPoint, Spendable, str]],
    outputs: Sequence[TxOut],
    *,
    label: str = "spend",
    version: int = 2,
    locktime: int = 0,
    spendables: Sequence[Spendable | None] = (),
    sequence: int = DEFAULT_SEQUENCE,
) -> SpendPlan:
    """A plan spending each (outpoint, spendable, path name) to ``outputs``.

    Each input's nSequence is its path's, or ``sequence``; nLockTime is the
    largest of ``locktime`` and the paths' minimums (all heights or all times).
    """
    if not spends:
        raise ChannelError("nothing to spend")
    inputs = []
    plans = []
    needed = [locktime]
    for outpoint, spendable, path_name in spends:
        path = spendable.path(path_name)
        inputs.append(TxIn(outpoint, sequence=path.sequence if path.sequence is not None else sequence))
        plans.append(InputPlan(spendable, path))
        if path.locktime:
            needed.append(path.locktime)
    nonzero = [value for value in needed if value]
    if len({_locktime_kind(value) for value in nonzero}) > 1:
        raise ChannelError("inputs need both a height and a time locktime")
    for txin, plan in zip(inputs, plans, strict=True):
        if plan.path.locktime and txin.sequence == SEQUENCE_FINAL:
            raise ChannelError(f"path {plan.path.name!r} needs a locktime, which a final sequence disables")
    for output in outputs:
        if not 0 <= output.amount_sat <= MAX_MONEY:
            raise ChannelError(f"output amount {output.amount_sat} out of range")
    tx = Tx(version, tuple(inputs), tuple(outputs), max(needed))
    return SpendPlan(label, tx, tuple(plans), tuple(spendables))


def sweep(
    spends: Sequence[tuple[OutPoint, Spendable, str]],
    destination_script: bytes,
    *,
    feerate_per_kw: int,
    label: str = "sweep",
    locktime: int = 0,
    dust_limit_sat: int = 546,
) -> SpendPlan:
    """Spend everything in ``spends`` to one output, paying ``feerate_per_kw`` on the signed weight."""
    total = sum(spendable.amount_sat for _, spendable, _ in spends)
    draft = build_spend(spends, [TxOut(total, destination_script)], label=label, locktime=locktime)
    fee = feerate_per_kw * draft.expected_weight() // 1000
    amount = total - fee
    if amount < dust_limit_sat:
        raise ChannelError(f"{label}: {total} sat minus a {fee} sat fee is below the dust limit")
    return build_spend(spends, [TxOut(amount, destination_script)], label=label, locktime=locktime)
