"""The channel monitor (BOLT 5), sans-IO: updates and blocks in, transactions and events out.

One :class:`ChannelMonitor` per channel. Inputs:

- :meth:`apply`: the channel's :class:`~.updates.MonitorUpdate` records, in
  order (the channel app persists and streams them);
- :meth:`block_connected` / :meth:`block_disconnected`: the chain, block by
  block, from the chain follower (reliable, never the lossy event bus);
  heights are the monitor's only clock;
- :meth:`set_feerate`: the current fee estimate; :meth:`provide_fee_input`:
  a wallet coin answering a :class:`~.events.NeedFeeInput`;
- :meth:`force_close`: the channel decided to go on chain.

Outputs: events returned by the block calls, and
:meth:`transactions_to_broadcast`, the claims valid for the next block,
each at its current bid (re-bid as its deadline approaches, rebuilt when a
reorg or a peer's spend changes what is left to claim).

How it stays right across reorgs: the monitor keeps the transactions that
touched the channel, with their heights, and derives everything else from
them and the records each time the chain changes. A transaction reorged out
simply drops out of that list: what it resolved is pending again, and its
claim is built and offered anew. Nothing is forgotten before it is
:data:`IRREVOCABLE_DEPTH` blocks deep (BOLT 5's "irrevocably resolved",
also Core Lightning's onchaind depth; LDK uses 6 for its own bookkeeping):
then :class:`~.events.Irrevocable` says the monitor may be archived.

After a restart: rebuild the monitor from its persisted updates and feed it
the blocks from the funding transaction's on (the chain follower's rescan):
it derives the same claims, and offers at once those whose timelocks have
passed meanwhile. Fee bids start again from the schedule.

The claims' fee bids (batching, re-bids, anchor CPFP) are in :mod:`.bids`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.tx import OutPoint, Tx

from ..bolt3 import Htlc
from ..commitment import Commitment
from ..errors import ChannelError, ShachainError
from ..keys import per_commitment_point
from ..shachain import FIRST_INDEX, ShachainStore
from .bids import Bid, ClaimBids
from .bump import FEERATE_FLOOR_PER_KW, FeeInput
from .deadlines import CLTV_CLAIM_BUFFER, OUTGOING_GRACE_BLOCKS, force_close_reasons
from .events import (
    CommitmentKind,
    CommitmentSeen,
    FundingSpent,
    HtlcResolved,
    Irrevocable,
    MonitorEvent,
    OutputSwept,
    OutputToWallet,
    Reorged,
)
from .resolve import (
    Claim,
    Resolution,
    commitment_number_of,
    extract_preimage,
    local_commitment,
    remote_commitment,
    resolve_commitment,
    second_stage_claims,
)
from .signer import MonitorSecrets, sign_plan
from .updates import (
    ChannelSetup,
    DataLossDetected,
    LocalCommitment,
    MonitorUpdate,
    MonitorUpdateError,
    PaymentPreimage,
    RemoteCommitment,
    RemoteRevocation,
    UpstreamDeadline,
)

__all__ = [
    "ANTI_REORG_DELAY",
    "CLTV_CLAIM_BUFFER",
    "IRREVOCABLE_DEPTH",
    "OUTGOING_GRACE_BLOCKS",
    "ChannelMonitor",
    "MonitorError",
]

logger = logging.getLogger(__name__)

#: BOLT 5: resolved outputs are irrevocably resolved 100 blocks deep; until then reorgs are followed.
IRREVOCABLE_DEPTH = 100
#: An HTLC that timed out is failed upstream only this deep (LDK's ANTI_REORG_DELAY): a reorg
#: could otherwise bring back a spend with the preimage after the incoming side was failed.
ANTI_REORG_DELAY = 6


class MonitorError(ChannelError):
    """The monitor was used wrongly (a block out of order, a forbidden broadcast)."""


class ChannelMonitor(ClaimBids):
    """Watches one channel's funding output and claims everything that is ours."""

    def __init__(
        self,
        secrets: MonitorSecrets,
        updates: Iterable[MonitorUpdate] = (),
        *,
        feerate_per_kw: int = FEERATE_FLOOR_PER_KW,
        irrevocable_depth: int = IRREVOCABLE_DEPTH,
    ) -> None:
        self.secrets = secrets
        self.irrevocable_depth = irrevocable_depth
        self._next_update_id = 0
        self._setup: ChannelSetup | None = None
        self._local: LocalCommitment | None = None
        self._remote: dict[int, RemoteCommitment] = {}
        self._secrets_store = ShachainStore()
        self._preimages: dict[bytes, bytes] = {}
        # preimages seen in spends on chain: they stay known across reorgs
        self._learned: dict[bytes, bytes] = {}
        self._data_loss: DataLossDetected | None = None
        self._revoked_next = 0
        self._upstream: dict[int, int] = {}
        self._built: dict[tuple[str, int], Commitment] = {}
        self._height: int | None = None
        self._txs: list[tuple[int, Tx]] = []
        self._relevant: set[bytes] = set()
        self._feerate = feerate_per_kw
        self._force_close = False
        self._bids: dict[str, Bid] = {}
        self._fee_inputs: dict[str, FeeInput] = {}
        self._requested: set[str] = set()
        self._facts: dict[tuple[object, ...], MonitorEvent] = {}
        self._irrevocable: Irrevocable | None = None
        self._resolution: Resolution | None = None
        self._pending: list[Claim] = []
        self._tracked: set[OutPoint] = set()
        self._funding_spend: tuple[int, Tx] | None = None
        for update in updates:
            self.apply(update)

    # -- updates -------------------------------------------------------------

    @property
    def setup(self) -> ChannelSetup:
        if self._setup is None:
            raise MonitorError("the monitor has no ChannelSetup yet")
        return self._setup

    def apply(self, update: MonitorUpdate) -> None:
        """Apply the next update; a wrong id or a record that contradicts the state raises
        :class:`~.updates.MonitorUpdateError` and changes nothing."""
        if update.update_id != self._next_update_id:
            raise MonitorUpdateError(f"expected update {self._next_update_id}, got {update.update_id}")
        record = update.record
        if isinstance(record, ChannelSetup):
            if self._setup is not None:
                raise MonitorUpdateError("the channel is set up already")
            if record.local_basepoints != self.secrets.basepoints:
                raise MonitorUpdateError("the setup's local basepoints are not those of our secrets")
            self._setup = record
        elif self._setup is None:
            raise MonitorUpdateError(f"{type(record).__name__} before ChannelSetup")
        elif isinstance(record, LocalCommitment):
            if self._local is not None and record.commitment_number < self._local.commitment_number:
                raise MonitorUpdateError("a local commitment older than the one held")
            self._local = record
        elif isinstance(record, RemoteCommitment):
            self._remote[record.commitment_number] = record
        elif isinstance(record, RemoteRevocation):
            self._revoke(record)
        elif isinstance(record, PaymentPreimage):
            self._preimages[sha256(record.preimage)] = record.preimage
        elif isinstance(record, DataLossDetected):
            self._data_loss = record
        elif isinstance(record, UpstreamDeadline):
            self._upstream[record.htlc_id] = record.incoming_cltv_expiry
        self._next_update_id += 1

    def _revoke(self, record: RemoteRevocation) -> None:
        known = self._remote.get(record.commitment_number)
        if known is not None and per_commitment_point(record.per_commitment_secret) != known.per_commitment_point:
            raise MonitorUpdateError(f"the secret does not open commitment {record.commitment_number}'s point")
        store = ShachainStore.restore(self._secrets_store.entries())
        try:
            store.insert(FIRST_INDEX - record.commitment_number, record.per_commitment_secret)
        except ShachainError as exc:
            raise MonitorUpdateError(str(exc)) from exc
        self._secrets_store = store
        self._revoked_next = max(self._revoked_next, record.commitment_number + 1)

    @property
    def local_commitment_number(self) -> int | None:
        """The number of the latest local commitment held (None: none yet)."""
        return None if self._local is None else self._local.commitment_number

    def remote_commitments(self, since: int = 0) -> list[RemoteCommitment]:
        """Their commitments we signed, numbered ``since`` and later, in order."""
        return [r for n, r in sorted(self._remote.items()) if n >= since]

    def has_remote_commitment(self, number: int) -> bool:
        """Whether the peer's commitment ``number`` was given."""
        return number in self._remote

    @property
    def revocations_through(self) -> int:
        """One past the highest commitment number the peer revoked (0: none)."""
        return self._revoked_next

    def knows_preimage(self, payment_hash: bytes) -> bool:
        """Whether the preimage of ``payment_hash`` was given (or seen on chain)."""
        return payment_hash in self._preimages or payment_hash in self._learned

    def preimage(self, payment_hash: bytes) -> bytes | None:
        """The preimage of ``payment_hash`` if it was given (or seen on chain)."""
        return self._preimages.get(payment_hash) or self._learned.get(payment_hash)

    @property
    def data_loss(self) -> bool:
        """Whether :class:`DataLossDetected` was given."""
        return self._data_loss is not None

    @property
    def next_update_id(self) -> int:
        """The id the next update must carry."""
        return self._next_update_id

    def describe(self) -> dict[str, object]:
        """The state the updates built, comparable between two monitors (tests, debugging)."""
        return {
            "setup": self._setup,
            "local": self._local,
            "remote": dict(sorted(self._remote.items())),
            "secrets": sorted(self._secrets_store.entries()),
            "preimages": dict(sorted(self._preimages.items())),
            "data_loss": self._data_loss,
            "upstream": dict(sorted(self._upstream.items())),
            "next_update_id": self._next_update_id,
        }

    def _revealed(self, number: int) -> bytes | None:
        try:
            return self._secrets_store.lookup(FIRST_INDEX - number)
        except ShachainError:
            return None

    def _commitment(self, ours: bool, number: int) -> Commitment:
        key = ("local" if ours else "remote", number)
        built = self._built.get(key)
        if built is None:
            if ours:
                assert self._local is not None
                built = local_commitment(self.setup, self.secrets, self._local)
            else:
                built = remote_commitment(self.setup, self._remote[number])
            if len(self._built) > 8:  # a handful of commitments are ever looked at again
                self._built.clear()
            self._built[key] = built
        return built

    # -- going on chain --------------------------------------------------------

    def force_close_needed(self, height: int) -> list[str]:
        """Why the channel must go on chain at ``height`` (empty: it need not); see :mod:`.deadlines`.

        Always empty after a data loss: our commitment must not be published."""
        if self._funding_spend is not None or self._local is None or self._data_loss is not None:
            return []
        known = self._preimages.keys() | self._learned.keys()
        return force_close_reasons(self._committed_htlcs(), known, self._upstream, height)

    def force_close(self) -> list[MonitorEvent]:
        """Broadcast our latest commitment (and keep doing so until a commitment confirms).

        With anchors, a commitment paying less than the current estimate gets a
        CPFP child through our anchor: the returned :class:`NeedFeeInput` asks
        for the wallet coin that pays it. Refused after
        :class:`DataLossDetected`: our commitment may be revoked, and
        publishing it would hand the peer everything.
        """
        if self._data_loss is not None:
            raise MonitorError("we lost channel state: our commitment may be revoked, wait for theirs")
        if self._local is None:
            raise MonitorError("no signed local commitment to broadcast")
        self._force_close = True
        return self._anchor_bid() if self._height is not None else []

    def signed_local_commitment(self) -> Tx:
        """Our latest commitment, signed by both sides."""
        if self._data_loss is not None:
            raise MonitorError("we lost channel state: our commitment may be revoked, wait for theirs")
        if self._local is None:
            raise MonitorError("no signed local commitment")
        commitment = self._commitment(True, self._local.commitment_number)
        keys = self.secrets.keys_for_local(commitment.context.keys.per_commitment_point)
        return sign_plan(commitment.plan, keys, {"remote_funding": self._local.commitment_signature})

    # -- the chain -------------------------------------------------------------

    @property
    def height(self) -> int | None:
        """The last block seen."""
        return self._height

    @property
    def feerate(self) -> int:
        """The current fee estimate (sat/kw) claims are bid from."""
        return self._feerate

    def set_feerate(self, feerate_per_kw: int) -> None:
        """The current fee estimate (sat/kw), used from the next block on."""
        self._feerate = max(int(feerate_per_kw), FEERATE_FLOOR_PER_KW)

    def provide_fee_input(self, group: str, fee_input: FeeInput) -> list[MonitorEvent]:
        """Answer a :class:`NeedFeeInput` for ``group`` with a wallet coin; the claim is rebuilt at once."""
        self._fee_inputs[group] = fee_input
        self._bids.pop(group, None)
        return self._rebid() if self._height is not None and self._setup is not None else []

    def watched_outpoints(self) -> set[OutPoint]:
        """What the chain follower must report spends of: the funding output and every output claimed."""
        watched = {self.setup.funding_outpoint}
        watched.update(self._tracked)
        return watched

    def block_connected(self, height: int, txs: Sequence[Tx]) -> list[MonitorEvent]:
        """The block at ``height`` (its transactions, or at least those spending what we watch)."""
        if self._height is not None and height != self._height + 1:
            raise MonitorError(f"block {height} does not follow {self._height}")
        funding = self.setup.funding_outpoint
        for tx in txs:
            if any(txin.prevout == funding or txin.prevout.txid in self._relevant for txin in tx.inputs):
                self._txs.append((height, tx))
                self._relevant.add(tx.txid)
        self._height = height
        return self._refresh()

    def block_disconnected(self, height: int) -> list[MonitorEvent]:
        """The tip block ``height`` left the chain."""
        if self._height is None or height != self._height:
            raise MonitorError(f"block {height} is not the tip {self._height}")
        dropped = [tx for h, tx in self._txs if h == height]
        self._txs = [(h, tx) for h, tx in self._txs if h != height]
        for tx in dropped:
            self._relevant.discard(tx.txid)
        self._height = height - 1
        return self._refresh()

    # -- evaluation --------------------------------------------------------------

    def _evaluate(self) -> dict[tuple[object, ...], MonitorEvent]:
        setup = self.setup
        facts: dict[tuple[object, ...], MonitorEvent] = {}
        resolution: Resolution | None = None
        tracked: dict[OutPoint, Claim] = {}
        resolved: dict[OutPoint, int] = {}
        self._funding_spend = None
        for height, tx in self._txs:
            if self._funding_spend is None:
                if all(txin.prevout != setup.funding_outpoint for txin in tx.inputs):
                    continue
                self._funding_spend = (height, tx)
                resolution = self._resolve(tx, height)
                if resolution is None:
                    facts[("funding_spent",)] = FundingSpent(tx.txid, height)
                    continue
                facts[("commitment",)] = CommitmentSeen(resolution.kind, tx.txid, resolution.number, height)
                for outpoint, amount, script in resolution.to_wallet:
                    facts[("to_wallet", outpoint)] = OutputToWallet(outpoint, amount, script, height)
                present = {(c.we_offered, c.htlc.htlc_id) for c in resolution.claims if c.htlc is not None}
                # a commitment whose HTLCs we cannot rebuild may still hold ones we know: none is given up
                unknown_htlcs = resolution.kind in (CommitmentKind.THEIRS_UNKNOWN, CommitmentKind.OURS_REVOKED)
                known = {} if unknown_htlcs else self._committed_htlcs()
                for (we_offered, htlc_id), htlc in known.items():
                    if (we_offered, htlc_id) not in present:
                        # no output in this commitment (dust, or not in this version): nothing can
                        # claim it, so once the commitment is deep its incoming side may be failed (BOLT 5)
                        gone = HtlcResolved(htlc_id, we_offered, htlc.payment_hash, None, tx.txid, height)
                        self._htlc_fact(facts, gone)
                tracked.update((claim.outpoint, claim) for claim in resolution.claims)
                continue
            if resolution is None:
                continue
            ours = any(out.script_pubkey == setup.destination_script for out in tx.outputs)
            for index, txin in enumerate(tx.inputs):
                claim = tracked.get(txin.prevout)
                if claim is None or txin.prevout in resolved:
                    continue
                resolved[txin.prevout] = height
                followers = second_stage_claims(resolution, claim, tx, index, height)
                by_us = ours or (bool(followers) and resolution.kind is CommitmentKind.OURS)
                facts[("swept", txin.prevout)] = OutputSwept(
                    txin.prevout, tx.txid, height, claim.spendable.amount_sat, by_us, claim.what
                )
                tracked.update((new.outpoint, new) for new in followers)
                if claim.htlc is not None:
                    preimage = extract_preimage(txin.witness, claim.htlc.payment_hash)
                    if preimage is not None:
                        self._learned.setdefault(claim.htlc.payment_hash, preimage)
                    self._htlc_fact(facts, HtlcResolved(
                        claim.htlc.htlc_id, claim.we_offered, claim.htlc.payment_hash, preimage, tx.txid, height
                    ))  # fmt: skip
        self._resolution = resolution
        self._pending = [c for op, c in tracked.items() if c.claimable and op not in resolved]
        self._tracked = {op for op in tracked if op not in resolved}
        self._check_irrevocable(resolution, tracked, resolved)
        return facts

    def _htlc_fact(self, facts: dict[tuple[object, ...], MonitorEvent], event: HtlcResolved) -> None:
        """A preimage is reported at once (it is safe to use upstream); a timeout only
        :data:`ANTI_REORG_DELAY` blocks deep, since failing the incoming HTLC is final."""
        assert self._height is not None
        if event.preimage is not None or self._height - event.height + 1 >= ANTI_REORG_DELAY:
            facts[("htlc", event.offered, event.htlc_id)] = event

    def _committed_htlcs(self) -> dict[tuple[bool, int], Htlc]:
        """Every HTLC of our latest and their unrevoked commitments, by (we offered it, id)."""
        htlcs: dict[tuple[bool, int], Htlc] = {}
        if self._local is not None:
            htlcs.update(((h.offered, h.htlc_id), h) for h in self._local.htlcs)
        for number, record in self._remote.items():
            if self._revealed(number) is None:
                htlcs.update(((not h.offered, h.htlc_id), h) for h in record.htlcs)
        return htlcs

    def _resolve(self, tx: Tx, height: int) -> Resolution | None:
        local = None
        if self._local is not None and self._data_loss is None:
            local = (self._local, self._commitment(True, self._local.commitment_number))
        # rebuild only the remote commitment whose number the transaction carries
        number = commitment_number_of(tx, self.setup)
        remote = {}
        if number is not None and number in self._remote:
            remote[number] = (self._remote[number], self._commitment(False, number))
        revealed = {}
        if number is not None:
            secret = self._revealed(number)
            if secret is not None:
                revealed[number] = secret
        # we revoked every commitment of ours before the latest, and that one too once the peer proved it
        revoked_below = 0
        if self._local is not None:
            revoked_below = self._local.commitment_number + (1 if self._data_loss is not None else 0)
        return resolve_commitment(
            tx, height, setup=self.setup, secrets=self.secrets, local=local, remote=remote,
            latest_remote=max(self._remote) if self._remote else None, revealed=revealed,
            preimages=self._learned | self._preimages, upstream=self._upstream, revoked_below=revoked_below,
        )  # fmt: skip

    def _check_irrevocable(self, resolution: Resolution | None, tracked: dict[OutPoint, Claim],
                           resolved: dict[OutPoint, int]) -> None:  # fmt: skip
        if self._irrevocable is not None or self._funding_spend is None or self._height is None:
            return
        depth = self.irrevocable_depth
        buried = self._height - depth + 1
        if self._funding_spend[0] > buried:
            return
        for outpoint, claim in tracked.items():
            if outpoint in resolved:
                if resolved[outpoint] > buried:
                    return
            elif claim.claimable or claim.expires is None or claim.expires > buried:
                return
        self._irrevocable = Irrevocable(self._height)

    def _refresh(self) -> list[MonitorEvent]:
        if self._setup is None or self._height is None:
            return []
        facts = self._evaluate()
        if self._irrevocable is not None:  # once buried, it stays (compared like any fact)
            facts[("irrevocable",)] = self._irrevocable
        events: list[MonitorEvent] = []
        for key, old in self._facts.items():
            if facts.get(key) != old:
                events.append(Reorged(old))  # type: ignore[arg-type]
        for key, new in facts.items():
            if self._facts.get(key) != new:
                events.append(new)
        self._facts = facts
        events.extend(self._rebid())
        for event in events:
            logger.info("channel monitor %s: %s", self.setup.funding_outpoint, event)
        return events

    def transactions_to_broadcast(self) -> list[Tx]:
        """Every transaction to (re)broadcast now, parents first: valid for the next block."""
        txs = []
        if self._force_close and self._funding_spend is None:
            txs.append(self.signed_local_commitment())
            if "anchor" in self._bids:
                txs.extend(self._bids["anchor"].txs)
        for group, bid in self._bids.items():
            if group != "anchor":
                txs.extend(bid.txs)
        return txs

    def pending_claims(self) -> list[Claim]:
        """What is still to be claimed (ready or waiting for its timelock)."""
        return list(self._pending)

    def facts(self) -> list[MonitorEvent]:
        """Every event that holds on the current chain (the state :mod:`.status` reports)."""
        return list(self._facts.values())
