"""Bitcoin Core's consensus engine (libbitcoinkernel through py-bitcoinkernel,
``pbk``), wrapped for the embedded chain.

Facts about ``pbk`` 0.1.0a5 this module is built on:

- ``ChainstateManager.process_block`` returns normally for a block that fails
  full validation (it only raises for blocks rejected before they are stored:
  bad PoW, bad merkle root, unknown parent, BIP34...). The proof of acceptance
  is that the active chain now contains the block.
- The reject reason (``bad-txns-inputs-missingorspent``, ...) only appears in
  the kernel's log, through a process-wide ``pbk.LoggingConnection``; the
  ``block_checked`` callback gives a coarse ``BlockValidationResult``. So
  blocks are processed one at a time per process (``_PROCESS_LOCK``) while
  the log is captured, and the lines are matched to the block.
- Validation callbacks run under Core's ``cs_main``: they only record.
- State is flushed to disk only when the ``ChainstateManager`` is destroyed;
  an unclean exit loses recent blocks (the caller replays its own log).
- ``pbk.Block(bytes)`` copies through ``(c_ubyte * n)(*data)``, slow for large
  blocks; ``_fast_block`` builds the same object from a buffer copy.
- Every call blocks the calling thread; trio code runs them in a worker thread.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pbk  # type: ignore[import-untyped]
import pbk.capi.bindings as _k  # type: ignore[import-untyped]

from lnpmsg.bitcoin.tx import Tx, TxOut
from lnpmsg.chain.errors import ChainError
from lnpmsg.node.full_disk import free_bytes, full_disk_cure

__all__ = ["KERNEL_FREE_BYTES", "KernelChain", "KernelResult", "kernel_verify_scripts"]

#: free bytes below which the kernel cannot write a block, so neither open a new chain (its
#: genesis block) nor replay one: Bitcoin Core's 50 MiB minimum beyond the 16 MiB chunk it
#: allocates for a block file (``CheckDiskSpace``)
KERNEL_FREE_BYTES = (50 + 16) << 20

#: serializes block processing across every chain in the process, so the
#: process-wide kernel log can be attributed to one block
_PROCESS_LOCK = threading.Lock()
#: the kernel log lines captured while a block is processed (None: not capturing)
_captured: list[str] | None = None
_log_connection: pbk.LoggingConnection | None = None
_log_setup_lock = threading.Lock()

#: log patterns that carry a reject reason, most specific first
_REASON_PATTERNS = (
    re.compile(r"Block validation error: (.+)"),
    re.compile(r"ConnectBlock \w+ failed, (.+)"),
    re.compile(r"AcceptBlock FAILED \((.+)\)"),
    re.compile(r"AcceptBlock: (.+)"),
    re.compile(r"BlockChecked: block hash=\w+ state=(.+)"),
)
_REASON_CODE = re.compile(r"^([A-Za-z0-9_-]+)")
#: invalid blocks remembered with their reason (the kernel tells it only once)
_MAX_REMEMBERED_REJECTS = 1_000


def _on_kernel_log(message: str) -> None:
    captured = _captured
    if captured is not None:
        captured.append(message.rstrip("\n"))


def _ensure_log_connection() -> None:
    global _log_connection
    with _log_setup_lock:
        if _log_connection is None:
            pbk.logging_set_options(pbk.LoggingOptions(log_timestamps=False))
            _log_connection = pbk.LoggingConnection(_on_kernel_log)


def _from_bytes(cls: Any, create: Any, raw: bytes, what: str) -> Any:
    """Build a pbk object from bytes through one buffer copy: pbk's own
    constructors unpack every byte as a ctypes argument, ~50x slower for a block."""
    buf = (ctypes.c_ubyte * max(len(raw), 1)).from_buffer_copy(raw or b"\x00")
    ptr = create(buf, len(raw))
    if not ptr:
        raise ChainError(f"the kernel cannot parse this {what}", code="malformed")
    return cls._from_handle(ptr)


def _fast_block(raw: bytes) -> pbk.Block:
    return _from_bytes(pbk.Block, _k.btck_block_create, raw, "block")


def _fast_tx(raw: bytes) -> pbk.Transaction:
    return _from_bytes(pbk.Transaction, _k.btck_transaction_create, raw, "transaction")


def _fast_script(script: bytes) -> pbk.ScriptPubkey:
    return _from_bytes(pbk.ScriptPubkey, _k.btck_script_pubkey_create, script, "script")


def kernel_verify_scripts(tx: Tx, spent: list[TxOut]) -> str | None:
    """Check every input script of ``tx`` with the kernel's interpreter (all
    consensus flags, taproot included). Returns None, or why input i failed."""
    ktx = _fast_tx(tx.raw)
    outputs = [
        pbk.TransactionOutput(_fast_script(o.script_pubkey), o.amount_sat)
        for o in spent
    ]
    precomputed = pbk.script.PrecomputedTransactionData(ktx, outputs)
    for i, out in enumerate(spent):
        script = _fast_script(out.script_pubkey)
        try:
            ok = script.verify(
                out.amount_sat, ktx, precomputed, i, pbk.ScriptVerificationFlags.ALL
            )
        except pbk.ScriptVerifyException as exc:
            return f"input {i}: {exc.status.name}"
        if not ok:
            return f"input {i} does not satisfy the script it spends ({out.script_pubkey.hex()})"
    return None


@dataclass(frozen=True, slots=True)
class KernelResult:
    """What the kernel made of one block.

    ``accepted``: the block is valid and in the active chain. ``stored``: valid
    so far and kept, but on a branch with less work. Otherwise ``reason`` holds
    the kernel's reject reason and ``code`` its first word.
    """

    block_hash: bytes
    accepted: bool
    stored: bool
    reason: str | None
    code: str | None
    log: tuple[str, ...]


class KernelChain:
    """One regtest ``ChainstateManager`` in a data dir (blocks/, chainstate/)."""

    def __init__(self, datadir: Path) -> None:
        _ensure_log_connection()
        self._checked: dict[bytes, pbk.BlockValidationResult] = {}
        # the kernel caches invalid blocks without telling why a second time.
        # Keyed by the digest of the whole block, not its hash: a block mutated
        # in its body shares the header (and hash) of the genuine one, which
        # must still be accepted (Core does not mark mutated blocks invalid)
        self._rejected: dict[bytes, KernelResult] = {}
        self._reason_by_hash: dict[bytes, KernelResult] = {}
        callbacks = pbk.ValidationInterfaceCallbacks(
            block_checked=self._on_block_checked
        )
        global _captured
        with _PROCESS_LOCK:
            _captured = []
            try:
                context = pbk.make_context(
                    pbk.ChainType.REGTEST, validation_callbacks=callbacks
                )
                opts = pbk.ChainstateManagerOptions(
                    context,
                    str(datadir.absolute()),
                    str((datadir / "blocks").absolute()),
                )
                opts.set_worker_threads_num(0)
                self._chainman = pbk.ChainstateManager(opts)
            except RuntimeError as exc:
                detail = "; ".join(line for line in _captured if "rror" in line) or str(
                    exc
                )
                free = free_bytes(datadir)
                if "No space left on device" in detail or (free is not None and free < KERNEL_FREE_BYTES):
                    # not damage: --reindex would need the same room
                    raise ChainError(
                        f"the kernel cannot open the chain state in {datadir}: {full_disk_cure(datadir)} "
                        f"(the consensus engine writes blocks only with {KERNEL_FREE_BYTES >> 20} MiB free); "
                        f"nothing is damaged [{detail}]",
                        code="io",
                    ) from exc
                raise ChainError(
                    f"the kernel cannot open the chain state in {datadir}: {detail}",
                    code="corrupt",
                ) from exc
            finally:
                _captured = None
        self._callbacks = callbacks

    def _on_block_checked(
        self, _user: object, block: pbk.Block, state: pbk.BlockValidationState
    ) -> None:
        # runs under cs_main: record only
        if state.validation_mode != pbk.ValidationMode.VALID:
            self._checked[bytes(block.block_hash)] = state.block_validation_result

    @property
    def height(self) -> int:
        return int(self._chainman.get_active_chain().height)

    def hash_at(self, height: int) -> bytes | None:
        """Hash of the active chain's block at ``height`` (None above the tip)."""
        chain = self._chainman.get_active_chain()
        if not 0 <= height <= chain.height:
            return None
        return bytes(chain.block_tree_entries[height].block_hash)

    def read_block(self, height: int) -> bytes:
        """The raw block at ``height`` of the active chain, read by the kernel from disk."""
        chain = self._chainman.get_active_chain()
        return bytes(self._chainman.blocks[chain.block_tree_entries[height]])

    def check_stored(self, height: int, expected: bytes) -> str | None:
        """Read back the active chain's block at ``height`` and its undo data
        from the kernel's files; None if both read and the block equals
        ``expected``, else what is wrong (the kernel keeps no checksums of
        its own: a block that still parses is compared byte for byte)."""
        chain = self._chainman.get_active_chain()
        entry = chain.block_tree_entries[height]
        try:
            raw = bytes(self._chainman.blocks[entry])
            if height > 0:
                self._chainman.block_spent_outputs[entry]
        except RuntimeError as exc:
            return str(exc)
        if raw != expected:
            return f"the block at height {height} differs from the one accepted"
        return None

    def in_active_chain(self, block_hash: bytes) -> bool:
        entries = self._chainman.block_tree_entries
        key = pbk.BlockHash(block_hash)
        if key not in entries:
            return False
        entry = entries[key]
        return bool(entry in self._chainman.get_active_chain().block_tree_entries)

    def process(self, raw: bytes, block_hash: bytes) -> KernelResult:
        """Hand one block to the kernel and report what became of it."""
        digest = hashlib.sha256(raw).digest()
        if digest in self._rejected:
            return self._rejected[digest]
        block = _fast_block(raw)
        global _captured
        with _PROCESS_LOCK:
            _captured = []
            self._checked.pop(block_hash, None)
            try:
                self._chainman.process_block(block)
                raised = None
            except pbk.ProcessBlockException as exc:
                raised = exc
            finally:
                log, _captured = tuple(_captured), None
        if raised is None and self.in_active_chain(block_hash):
            return KernelResult(block_hash, True, True, None, None, log)
        checked = self._checked.pop(block_hash, None)
        reason = _reason_from_log(log, block_hash)
        # kept on a side branch: nothing failed (a branch that tried to become
        # active and failed on an ancestor logs that failure: a rejection)
        if (
            raised is None
            and checked is None
            and reason is None
            and self._known(block_hash)
        ):
            return KernelResult(block_hash, False, True, None, None, log)
        if reason is None and block_hash in self._reason_by_hash:
            reason = self._reason_by_hash[block_hash].reason
        if reason is None:
            reason = f"rejected by the kernel ({checked.name if checked else 'no reason logged'})"
        match = _REASON_CODE.match(reason)
        result = KernelResult(
            block_hash, False, False, reason, match.group(1) if match else None, log
        )
        for cache, key in (
            (self._rejected, digest),
            (self._reason_by_hash, block_hash),
        ):
            if len(cache) >= _MAX_REMEMBERED_REJECTS:
                cache.pop(next(iter(cache)))
            cache[key] = result
        return result

    def _known(self, block_hash: bytes) -> bool:
        return pbk.BlockHash(block_hash) in self._chainman.block_tree_entries

    def close(self) -> None:
        """Flush and release the chain state (the only point where the kernel writes it)."""
        chainman = getattr(self, "_chainman", None)
        if chainman is not None:
            del self._chainman
            chainman.__exit__(None, None, None)


def _reason_from_log(log: tuple[str, ...], block_hash: bytes) -> str | None:
    for pattern in _REASON_PATTERNS:
        for line in log:
            match = pattern.search(line)
            if match:
                return match.group(1).strip()
    return None
