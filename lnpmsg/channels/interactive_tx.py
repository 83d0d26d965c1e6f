"""BOLT-2 interactive transaction construction, sans-IO: one negotiation between two peers.

Each side's contributions go in (:mod:`.interactive_parts`: our inputs and
outputs, and for a channel the shared funding output); messages come out. The
session enforces every receiver requirement of ``tx_add_input`` ..
``tx_complete`` and, once both sent ``tx_complete`` in a row, builds the
transaction (inputs and outputs sorted by ``serial_id``) and checks what
each side pays (an RBF attempt: at least the total fee of the version it
replaces). A violation ends the session with a ``tx_abort`` saying why
(sticky: the session accepts nothing more). ``tx_signatures`` come
after: :meth:`InteractiveTx.our_signatures` and
:meth:`InteractiveTx.receive_signatures`, in the order
:meth:`InteractiveTx.we_sign_first` gives.

No clock, no randomness of its own (serial ids derive from ``entropy`` the
caller draws), no I/O. The caller (channel establishment v2) decides when
to send our ``tx_signatures``: after the first commitment is signed both ways
and durable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import MAX_MONEY, OutPoint, Tx, TxIn, TxOut
from lnpmsg.wire import Message

from .errors import LocalMisuse
from .interactive_parts import FundingOutput, OwnInput, OwnOutput, SharedInput, contribution_fee
from .interactive_rules import (
    COMMON_FIELDS_WEIGHT,
    MAX_RECEIVED_ADDS,
    MAX_SEQUENCE,
    MAX_STANDARD_TX_WEIGHT,
    MAX_TX_INPUTS,
    MAX_TX_OUTPUTS,
    check_witness,
    decode_witness,
    encode_witness,
    input_weight,
    is_segwit_script,
    is_standard_output_script,
    output_weight,
)
from .messages_v2 import (
    TxAbort,
    TxAddInput,
    TxAddOutput,
    TxComplete,
    TxRemoveInput,
    TxRemoveOutput,
    TxSignatures,
)

__all__ = ["InteractiveTx", "InteractiveTxAborted", "SessionState"]


class InteractiveTxAborted(Exception):
    """The negotiation failed; ``reason`` is what the ``tx_abort`` says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionState(enum.Enum):
    """Where a negotiation stands."""

    NEGOTIATING = "negotiating"
    COMPLETE = "complete"  # both sent tx_complete in a row: the transaction is fixed
    SIGNED = "signed"  # both sides' witnesses are in
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class _Input:
    serial_id: int
    outpoint: OutPoint
    sats: int
    script: bytes  # the spent output's scriptPubKey
    sequence: int
    prevtx: bytes


@dataclass(frozen=True, slots=True)
class _Output:
    serial_id: int
    sats: int
    script: bytes


class InteractiveTx:
    """One interactive construction. ``initiator`` sends even serial ids and the first message."""

    def __init__(
        self,
        *,
        channel_id: bytes,
        initiator: bool,
        feerate_per_kw: int,
        locktime: int,
        dust_limit_sat: int,
        inputs: list[OwnInput],
        outputs: list[OwnOutput],
        funding: FundingOutput | None,
        entropy: bytes,
        version: int = 2,
        shared_input: SharedInput | None = None,
        replaces_fee_sat: int | None = None,
    ) -> None:
        self.channel_id = channel_id
        self.initiator = initiator
        self.feerate_per_kw = feerate_per_kw
        self.locktime = locktime
        self.dust_limit_sat = dust_limit_sat
        self.funding = funding
        self.shared_input = shared_input
        self.version = version
        #: an RBF attempt (``tx_init_rbf``): the total fee of the version it replaces, which the new
        #: transaction must pay at least (BOLT 2 at tx_complete); None: a first construction
        self.replaces_fee_sat = replaces_fee_sat
        self.state = SessionState.NEGOTIATING
        self.abort_reason: str | None = None
        self._inputs: dict[int, _Input] = {}
        self._outputs: dict[int, _Output] = {}
        self._received_inputs = 0
        self._received_outputs = 0
        self._our_turn = initiator
        self._we_completed = False
        self._they_completed = False
        self._tx: Tx | None = None
        self._their_witnesses: dict[int, tuple[bytes, ...]] | None = None
        self._our_witnesses: dict[int, tuple[bytes, ...]] | None = None
        self._pending: list[Message] = self._plan(inputs, outputs, entropy)
        #: what :meth:`start` returned (kept by a caller that rebuilds the session)
        self.start_messages: list[Message] = []

    # -- our side --------------------------------------------------------------

    def _serial(self, entropy: bytes, index: int) -> int:
        # random-looking (serial ids are meant to be unlinkable across sessions), parity by role
        value = int.from_bytes(sha256(entropy + index.to_bytes(4, "big"))[:8], "big")
        return (value & ~1) | (0 if self.initiator else 1)

    def _plan(self, inputs: list[OwnInput], outputs: list[OwnOutput], entropy: bytes) -> list[Message]:
        """Check our own contributions pay their way and line up the messages that add them."""
        plan: list[Message] = []
        index = 0
        in_sat = 0
        prev_scripts = []
        shared = self.shared_input
        if shared is not None and self.initiator:
            in_sat += shared.sats
            prev_scripts.append(shared.script)
            plan.append(
                TxAddInput(
                    channel_id=self.channel_id, serial_id=self._serial(entropy, index), prevtx=b"",
                    prevtx_vout=shared.outpoint.vout, sequence=MAX_SEQUENCE,
                    tlvs=TxAddInput.tlv_stream({"shared_input_txid": shared.outpoint.txid}),
                )
            )  # fmt: skip
            index += 1
        for own in inputs:
            if own.sequence > MAX_SEQUENCE:
                raise LocalMisuse("our inputs must signal replaceability (sequence <= 0xfffffffd)")
            try:
                prev = Tx.parse(own.prevtx)
                spent = prev.outputs[own.vout]
            except (BitcoinError, IndexError):
                raise LocalMisuse(f"our input {own.vout} does not name an output of its transaction") from None
            if not is_segwit_script(spent.script_pubkey):
                raise LocalMisuse("our inputs must spend segwit outputs")
            in_sat += spent.amount_sat
            prev_scripts.append(spent.script_pubkey)
            plan.append(
                TxAddInput(
                    channel_id=self.channel_id, serial_id=self._serial(entropy, index),
                    prevtx=own.prevtx, prevtx_vout=own.vout, sequence=own.sequence,
                )
            )  # fmt: skip
            index += 1
        all_outputs = list(outputs)
        if self.funding is not None and self.initiator:
            all_outputs.append(OwnOutput(self.funding.total_sat, self.funding.script))
        for own in all_outputs:
            if own.sats < self.dust_limit_sat:
                raise LocalMisuse(f"our output of {own.sats} sat is below the dust limit")
            plan.append(
                TxAddOutput(channel_id=self.channel_id, serial_id=self._serial(entropy, index), sats=own.sats, script=own.script)
            )
            index += 1
        out_sat = sum(o.sats for o in outputs) + (self.funding.our_sat if self.funding else 0)
        fee = contribution_fee(prev_scripts, [o.script for o in all_outputs], self.feerate_per_kw, initiator=self.initiator)
        if in_sat < out_sat + fee:
            raise LocalMisuse(f"our inputs ({in_sat} sat) do not cover our outputs ({out_sat} sat) and fee ({fee} sat)")
        return plan

    def start(self) -> list[Message]:
        """The initiator's first message (nothing for the non-initiator, which answers)."""
        if not self.initiator or not self._our_turn or self.state is not SessionState.NEGOTIATING:
            return []
        return self._take_turn()

    def _take_turn(self) -> list[Message]:
        """Send our next contribution, or tx_complete when we have none left."""
        self._our_turn = False
        if self._pending:
            msg = self._pending.pop(0)
            self._apply_own(msg)
            self._we_completed = False
            return [msg]
        self._we_completed = True
        if self._they_completed:
            self._finish()
        return [TxComplete(channel_id=self.channel_id)]

    def _apply_own(self, msg: Message) -> None:
        if isinstance(msg, TxAddInput):
            self._inputs[msg.serial_id] = self._input_of(msg)
        elif isinstance(msg, TxAddOutput):
            self._outputs[msg.serial_id] = _Output(msg.serial_id, msg.sats, msg.script)

    # -- their side ------------------------------------------------------------

    def receive(self, msg: Message) -> list[Message]:
        """Apply a peer's interactive-tx message; return what to send (a ``tx_abort`` on a violation)."""
        if isinstance(msg, TxAbort):
            return self._receive_abort()
        if self.state is SessionState.ABORTED:
            return []
        try:
            if getattr(msg, "channel_id", None) != self.channel_id:
                raise InteractiveTxAborted("a message for another channel")
            if self.state is not SessionState.NEGOTIATING:
                raise InteractiveTxAborted(f"{type(msg).__name__} after the negotiation completed")
            if self._our_turn:  # turn-based: the peer waits for our answer before sending again
                raise InteractiveTxAborted(f"{type(msg).__name__} out of turn")
            self._apply_theirs(msg)
        except InteractiveTxAborted as exc:
            return [self.abort(exc.reason)]
        self._our_turn = True
        if isinstance(msg, TxComplete) and self._we_completed:
            try:
                self._finish()
            except InteractiveTxAborted as exc:
                return [self.abort(exc.reason)]
            return []
        try:
            return self._take_turn()
        except InteractiveTxAborted as exc:
            return [self.abort(exc.reason)]

    def _apply_theirs(self, msg: Message) -> None:
        if isinstance(msg, TxComplete):
            self._they_completed = True
            return
        self._they_completed = False
        if isinstance(msg, TxAddInput):
            self._received_inputs += 1
            if self._received_inputs >= MAX_RECEIVED_ADDS:
                raise InteractiveTxAborted(f"{MAX_RECEIVED_ADDS} tx_add_input received")
            self._check_new_serial(msg.serial_id)
            item = self._input_of(msg)
            if any(i.outpoint == item.outpoint for i in self._inputs.values()):
                raise InteractiveTxAborted(f"input {item.outpoint} added twice")
            self._inputs[msg.serial_id] = item
        elif isinstance(msg, TxAddOutput):
            self._received_outputs += 1
            if self._received_outputs >= MAX_RECEIVED_ADDS:
                raise InteractiveTxAborted(f"{MAX_RECEIVED_ADDS} tx_add_output received")
            self._check_new_serial(msg.serial_id)
            if msg.sats < self.dust_limit_sat:
                raise InteractiveTxAborted(f"output of {msg.sats} sat below the dust limit {self.dust_limit_sat}")
            if msg.sats > MAX_MONEY:
                raise InteractiveTxAborted("output above MAX_MONEY")
            if not is_standard_output_script(msg.script):
                raise InteractiveTxAborted(f"non-standard output script {msg.script.hex()}")
            self._outputs[msg.serial_id] = _Output(msg.serial_id, msg.sats, msg.script)
        elif isinstance(msg, TxRemoveInput | TxRemoveOutput):
            table: dict = self._inputs if isinstance(msg, TxRemoveInput) else self._outputs
            if not self._is_theirs(msg.serial_id):
                raise InteractiveTxAborted(f"removal of serial_id {msg.serial_id} the peer did not add")
            if msg.serial_id not in table:
                raise InteractiveTxAborted(f"removal of serial_id {msg.serial_id}, not in the transaction")
            del table[msg.serial_id]
        else:
            raise InteractiveTxAborted(f"unexpected {type(msg).__name__} during the negotiation")

    def _is_theirs(self, serial_id: int) -> bool:
        return (serial_id & 1) == (1 if self.initiator else 0)

    def _check_new_serial(self, serial_id: int) -> None:
        if not self._is_theirs(serial_id):
            raise InteractiveTxAborted(f"serial_id {serial_id} has the wrong parity")
        if serial_id in self._inputs or serial_id in self._outputs:
            raise InteractiveTxAborted(f"serial_id {serial_id} already in the transaction")

    def _input_of(self, msg: TxAddInput) -> _Input:
        if msg.sequence > MAX_SEQUENCE:
            raise InteractiveTxAborted(f"input sequence {msg.sequence:#x} does not signal replaceability")
        if not msg.prevtx:
            return self._shared_input_of(msg)
        try:
            prev = Tx.parse(msg.prevtx)
        except BitcoinError as exc:
            raise InteractiveTxAborted(f"prevtx is not a valid transaction: {exc}") from None
        if msg.prevtx_vout >= len(prev.outputs):
            raise InteractiveTxAborted(f"prevtx_vout {msg.prevtx_vout} beyond the {len(prev.outputs)} outputs of prevtx")
        spent = prev.outputs[msg.prevtx_vout]
        if not is_segwit_script(spent.script_pubkey):
            raise InteractiveTxAborted("the input spends a non-segwit output")
        return _Input(msg.serial_id, prev.outpoint(msg.prevtx_vout), spent.amount_sat, spent.script_pubkey, msg.sequence, msg.prevtx)

    def _shared_input_of(self, msg: TxAddInput) -> _Input:
        """An input without prevtx: only the splice's spend of the current funding output (BOLT 2)."""
        shared = self.shared_input
        named = msg.tlvs.get("shared_input_txid")
        if shared is None:
            raise InteractiveTxAborted("shared inputs (empty prevtx) are only for splicing")
        if named != shared.outpoint.txid:
            raise InteractiveTxAborted("shared_input_txid does not name the current funding transaction")
        if msg.prevtx_vout != shared.outpoint.vout:
            raise InteractiveTxAborted(f"prevtx_vout {msg.prevtx_vout} is not the funding output {shared.outpoint.vout}")
        if self._is_theirs(msg.serial_id) == self.initiator:
            raise InteractiveTxAborted("only the splice initiator adds the shared input")
        return _Input(msg.serial_id, shared.outpoint, shared.sats, shared.script, msg.sequence, b"")

    # -- completion ------------------------------------------------------------

    def _finish(self) -> None:
        """Both sent tx_complete in a row: check the whole transaction and fix it."""
        inputs = sorted(self._inputs.values(), key=lambda i: i.serial_id)
        outputs = sorted(self._outputs.values(), key=lambda o: o.serial_id)
        if len(inputs) > MAX_TX_INPUTS:
            raise InteractiveTxAborted(f"{len(inputs)} inputs, more than {MAX_TX_INPUTS}")
        if len(outputs) > MAX_TX_OUTPUTS:
            raise InteractiveTxAborted(f"{len(outputs)} outputs, more than {MAX_TX_OUTPUTS}")
        if self.shared_input is not None and sum(i.outpoint == self.shared_input.outpoint for i in inputs) != 1:
            raise InteractiveTxAborted("not exactly one input spends the current funding output")
        funding_out = None
        if self.funding is not None:
            found = [o for o in outputs if o.script == self.funding.script]
            if len(found) != 1:
                raise InteractiveTxAborted("no funding output" if not found else "more than one funding output")
            funding_out = found[0]
            if funding_out.sats != self.funding.total_sat:
                raise InteractiveTxAborted(f"the funding output holds {funding_out.sats} sat, not {self.funding.total_sat}")
            if funding_out.sats < self.dust_limit_sat:
                raise InteractiveTxAborted("the funding output is below the dust limit")
        their_inputs = [i for i in inputs if self._is_theirs(i.serial_id)]
        their_outputs = [o for o in outputs if self._is_theirs(o.serial_id)]
        their_in = sum(i.sats for i in their_inputs)
        # the funding output counts for each side as its share, whoever added it
        their_out = sum(o.sats for o in their_outputs if o is not funding_out)
        their_out += self.funding.their_sat if self.funding else 0
        if their_in < their_out:
            raise InteractiveTxAborted(f"the peer's inputs ({their_in} sat) are less than its outputs ({their_out} sat)")
        their_fee = contribution_fee(
            [i.script for i in their_inputs], [o.script for o in their_outputs], self.feerate_per_kw, initiator=not self.initiator
        )
        if their_in - their_out < their_fee:
            what = "and the common fields " if not self.initiator else ""
            raise InteractiveTxAborted(
                f"the peer pays {their_in - their_out} sat for its contributions {what}, below {their_fee} sat"
                f" at {self.feerate_per_kw} sat/kw"
            )
        weight = COMMON_FIELDS_WEIGHT + sum(input_weight(i.script) for i in inputs) + sum(output_weight(o.script) for o in outputs)
        if weight > MAX_STANDARD_TX_WEIGHT:
            raise InteractiveTxAborted(f"estimated weight {weight} above {MAX_STANDARD_TX_WEIGHT}")
        # the whole pays what both sides owe (each rounded down on its own, as each computes it)
        our_fee = contribution_fee(
            [i.script for i in inputs if not self._is_theirs(i.serial_id)],
            [o.script for o in outputs if not self._is_theirs(o.serial_id)], self.feerate_per_kw, initiator=self.initiator,
        )  # fmt: skip
        total_fee = sum(i.sats for i in inputs) - sum(o.sats for o in outputs)
        if total_fee < our_fee + their_fee:
            raise InteractiveTxAborted(f"the transaction pays {total_fee} sat, below {our_fee + their_fee} sat at its feerate")
        if self.replaces_fee_sat is not None and total_fee < self.replaces_fee_sat:
            raise InteractiveTxAborted(
                f"the replacement pays {total_fee} sat in fees, less than the {self.replaces_fee_sat} sat of the last version"
            )
        self._tx = Tx(
            version=self.version,
            inputs=tuple(TxIn(i.outpoint, sequence=i.sequence) for i in inputs),
            outputs=tuple(TxOut(o.sats, o.script) for o in outputs),
            locktime=self.locktime,
        )
        self.state = SessionState.COMPLETE

    @property
    def transaction(self) -> Tx:
        """The negotiated transaction (unsigned until :meth:`signed_transaction`)."""
        if self._tx is None:
            raise LocalMisuse("the negotiation has not completed")
        return self._tx

    def total_fee_sat(self) -> int:
        """What the negotiated transaction pays in fees (its inputs less its outputs)."""
        tx = self.transaction
        return sum(i.sats for i in self._inputs.values()) - sum(o.amount_sat for o in tx.outputs)

    def funding_outpoint(self) -> OutPoint:
        """Where the channel's funding output is in the negotiated transaction."""
        tx = self.transaction
        assert self.funding is not None
        index = next(n for n, out in enumerate(tx.outputs) if out.script_pubkey == self.funding.script)
        return tx.outpoint(index)

    def our_inputs(self) -> list[tuple[int, int, bytes]]:
        """(index in the transaction, amount, spent script) of each input we added, in serial order: what we
        sign (the shared input apart: :meth:`shared_input_index`)."""
        inputs = sorted(self._inputs.values(), key=lambda i: i.serial_id)
        return [(n, i.sats, i.script) for n, i in enumerate(inputs) if not self._is_theirs(i.serial_id) and i.prevtx]

    def output_added_by_us(self, index: int) -> bool:
        """Whether output ``index`` of the negotiated transaction is one we added."""
        outputs = sorted(self._outputs.values(), key=lambda o: o.serial_id)
        return not self._is_theirs(outputs[index].serial_id)

    def shared_input_index(self) -> int | None:
        """Where the shared input (a splice's spend of the old funding) is in the transaction."""
        inputs = sorted(self._inputs.values(), key=lambda i: i.serial_id)
        return next((n for n, i in enumerate(inputs) if not i.prevtx), None)

    def _contributed(self, theirs: bool) -> int:
        return sum(i.sats for i in self._inputs.values() if self._is_theirs(i.serial_id) == theirs)

    def we_sign_first(self, our_node_id: bytes, their_node_id: bytes) -> bool:
        """BOLT 2: the side whose inputs total less sends tx_signatures first; on a tie, the lower node id."""
        ours, theirs = self._contributed(False), self._contributed(True)
        return ours < theirs or (ours == theirs and our_node_id < their_node_id)

    # -- signatures ------------------------------------------------------------

    def our_signatures(self, witnesses: list[tuple[bytes, ...]]) -> TxSignatures:
        """Our tx_signatures, from one witness stack per input of :meth:`our_inputs` (same order)."""
        if self.state not in (SessionState.COMPLETE, SessionState.SIGNED):
            raise LocalMisuse("tx_signatures before the transaction is complete")
        mine = self.our_inputs()
        if len(witnesses) != len(mine):
            raise LocalMisuse(f"{len(witnesses)} witnesses for our {len(mine)} inputs")
        self._our_witnesses = {index: tuple(stack) for (index, _, _), stack in zip(mine, witnesses, strict=True)}
        self._maybe_signed()
        return TxSignatures(
            channel_id=self.channel_id, txid=self.transaction.txid,
            witnesses=[{"witness_data": encode_witness(tuple(w))} for w in witnesses],
        )  # fmt: skip

    def receive_signatures(self, msg: TxSignatures) -> None:
        """Take the peer's witnesses; a bad one aborts (raises :class:`InteractiveTxAborted`)."""
        if self.state not in (SessionState.COMPLETE, SessionState.SIGNED) or self._tx is None:
            raise InteractiveTxAborted("tx_signatures before the transaction is complete")
        if msg.txid != self._tx.txid:
            raise InteractiveTxAborted(f"tx_signatures for {msg.txid[::-1].hex()}, not {self._tx.txid_hex}")
        inputs = sorted(self._inputs.values(), key=lambda i: i.serial_id)
        theirs = [(n, i) for n, i in enumerate(inputs) if self._is_theirs(i.serial_id) and i.prevtx]
        if len(msg.witnesses) != len(theirs):
            raise InteractiveTxAborted(f"{len(msg.witnesses)} witnesses for the peer's {len(theirs)} inputs")
        stacks: dict[int, tuple[bytes, ...]] = {}
        for (index, item), witness in zip(theirs, msg.witnesses, strict=True):
            try:
                stack = decode_witness(witness.witness_data)
            except ValueError as exc:
                raise InteractiveTxAborted(str(exc)) from None
            why = check_witness(stack, item.script)
            if why is not None:
                raise InteractiveTxAborted(f"input {index}: {why}")
            stacks[index] = stack
        self._their_witnesses = stacks
        self._maybe_signed()

    def _maybe_signed(self) -> None:
        if self._our_witnesses is not None and self._their_witnesses is not None:
            self.state = SessionState.SIGNED

    def signed_transaction(self, shared_witness: tuple[bytes, ...] = ()) -> Tx:
        """The transaction with both sides' witnesses, once both are in (and a splice's ``shared_witness``)."""
        if self.state is not SessionState.SIGNED or self._our_witnesses is None or self._their_witnesses is None:
            raise LocalMisuse("both sides' signatures are not in yet")
        tx = self.transaction
        shared = self.shared_input_index()
        witnesses = {**self._our_witnesses, **self._their_witnesses}
        if shared is not None:
            witnesses[shared] = shared_witness
        for index, stack in witnesses.items():
            tx = tx.with_witness(index, stack)
        return tx

    # -- abort -----------------------------------------------------------------

    @property
    def signed_by_us(self) -> bool:
        """Whether our witnesses went out: from then on the transaction may appear on chain."""
        return self._our_witnesses is not None

    def abort(self, reason: str) -> TxAbort:
        """End the negotiation on our side; the ``tx_abort`` to send says why."""
        if self.signed_by_us:
            raise LocalMisuse("cannot abort after sending tx_signatures")
        self.state = SessionState.ABORTED
        self.abort_reason = reason
        return TxAbort(channel_id=self.channel_id, data=reason.encode())

    def _receive_abort(self) -> list[Message]:
        if self.state is SessionState.ABORTED:
            return []  # the echo of ours
        if self.signed_by_us:
            # BOLT 2: we keep the transaction (it may confirm) and do not abort in turn
            return []
        self.state = SessionState.ABORTED
        self.abort_reason = "the peer aborted"
        return [TxAbort(channel_id=self.channel_id, data=b"echo")]
