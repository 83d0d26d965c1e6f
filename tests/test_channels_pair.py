"""Two channel cores (Alice funds, Bob accepts) joined in memory, for the channel tests.

``ChannelPair`` pumps every message one core sends into the other until both
are quiet, keeps every output (records, messages, events) per side, and can
open a channel, add and settle HTLCs, and check balances. Time is a number
the test moves; nothing sleeps.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.bitcoin.script import OP_RETURN, script
from lnpmsg.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from lnpmsg.chain.kernel import kernel_verify_scripts
from lnpmsg.channels.commitments import build
from lnpmsg.channels.inputs import (
    AcceptCommand,
    AddHtlc,
    BroadcastFunding,
    Disconnected,
    Event,
    FulfillHtlc,
    FundingDepth,
    FundingNeeded,
    FundingTransaction,
    Input,
    OpenCommand,
    Output,
    Received,
    Reconnected,
    SignCommitment,
)
from lnpmsg.channels.keys import derive_privkey
from lnpmsg.channels.messages import OpenChannel
from lnpmsg.channels.params import (
    ANCHORS_BIT,
    STATIC_REMOTEKEY_BIT,
    ChannelConfig,
    ChannelSecrets,
    OpeningPolicy,
)
from lnpmsg.channels.state import ChannelCore, ChannelState, Phase
from lnpmsg.wire import CHAIN_HASH_REGTEST, Message

FUNDING_SAT = 1_000_000
ONION = bytes(1366)


def make_secrets(tag: str) -> ChannelSecrets:
    """Deterministic channel secrets from a name."""
    k = [sha256(f"{tag}/{i}".encode()) for i in range(6)]
    return ChannelSecrets(*k)


def features(anchors: bool) -> int:
    bits = 1 << (STATIC_REMOTEKEY_BIT + 1)
    if anchors:
        bits |= 1 << (ANCHORS_BIT + 1)
    return bits


@dataclass
class Side:
    core: ChannelCore
    outputs: list[Output] = field(default_factory=list)
    #: the state after each record, in record order
    states: list[ChannelState] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return [e for o in self.outputs for e in o.events]

    @property
    def records(self) -> list[bytes]:
        return [r.data for o in self.outputs for r in o.records]


class ChannelPair:
    """Alice (funder) and Bob (fundee) and the wire between them."""

    def __init__(self, *, anchors: bool = False, push_msat: int = 0, feerate: int = 2500,
                 alice_config: ChannelConfig | None = None, bob_config: ChannelConfig | None = None,
                 policy: OpeningPolicy | None = None,
                 extra_features: int = 0) -> None:  # fmt: skip
        self.now = 1_000.0
        self.anchors = anchors
        self.alice = Side(ChannelCore(make_secrets("alice")))
        self.bob = Side(ChannelCore(make_secrets("bob")))
        self.alice_config = alice_config or ChannelConfig()
        self.bob_config = bob_config or ChannelConfig()
        self.policy = policy or OpeningPolicy()
        self.push_msat = push_msat
        self.feerate = feerate
        self.features = features(anchors) | extra_features
        self.wire: deque[tuple[Side, Message]] = deque()
        self.funding_tx: Tx | None = None
        self.preimages: dict[bytes, bytes] = {}
        self.held: list[tuple[Side, Message]] = []
        self.hold = False

    def other(self, side: Side) -> Side:
        return self.bob if side is self.alice else self.alice

    def feed(self, side: Side, item: Input) -> Output:
        self.now += 1
        out = side.core.receive(item, self.now)
        side.outputs.append(out)
        if out.records:
            side.states.append(copy.copy(side.core.state))
        for msg in out.messages:
            self.wire.append((self.other(side), msg))
        return out

    def pump(self) -> None:
        """Deliver every message in flight (and those they cause) until both are quiet."""
        while self.wire:
            target, msg = self.wire.popleft()
            if self.hold:
                self.held.append((target, msg))
                continue
            self.deliver(target, msg)

    def deliver(self, target: Side, msg: Message) -> None:
        """One message to its side's core (Bob accepts an ``open_channel`` with his config and policy)."""
        if target is self.bob and isinstance(msg, OpenChannel):
            self.feed(target, AcceptCommand(msg, CHAIN_HASH_REGTEST, self.features, self.features,
                                            self.bob_config, self.policy))  # fmt: skip
        else:
            self.feed(target, Received(msg))

    def open_command(self) -> OpenCommand:
        """Alice's command to open the channel."""
        return OpenCommand(
            bytes(range(32)), CHAIN_HASH_REGTEST, FUNDING_SAT, self.push_msat, self.feerate,
            self.features, self.features, self.alice_config, self.policy,
        )  # fmt: skip

    def open(self) -> None:
        """Open, fund (an OP_RETURN first, as Electrum does), confirm, and exchange channel_ready."""
        self.feed(self.alice, self.open_command())
        self.pump()
        self.open_rest()
        self.confirm()

    def open_rest(self) -> None:
        """Fund the channel Alice proposed (both commitments signed, nothing confirmed yet)."""
        (needed,) = [e for e in self.alice.events if isinstance(e, FundingNeeded)]
        self.funding_tx = Tx(
            2,
            (TxIn(OutPoint(b"\x11" * 32, 0)),),
            (TxOut(0, script(OP_RETURN, b"backup")), TxOut(needed.amount_sat, needed.script_pubkey)),
        )
        self.feed(self.alice, FundingTransaction(self.funding_tx.serialize()))
        self.pump()
        assert self.hold or any(isinstance(e, BroadcastFunding) for e in self.alice.events)

    def open_rest_unchecked(self) -> None:
        """Like :meth:`open_rest`, for tests that hold or break messages on the way."""
        (needed,) = [e for e in self.alice.events if isinstance(e, FundingNeeded)]
        self.funding_tx = Tx(
            2,
            (TxIn(OutPoint(b"\x11" * 32, 0)),),
            (TxOut(0, script(OP_RETURN, b"backup")), TxOut(needed.amount_sat, needed.script_pubkey)),
        )
        self.feed(self.alice, FundingTransaction(self.funding_tx.serialize()))
        self.pump()

    def confirm(self, depth: int = 3) -> None:
        scid = (101 << 40) | (1 << 16) | 1
        self.feed(self.alice, FundingDepth(depth, scid))
        self.feed(self.bob, FundingDepth(depth, scid))
        self.pump()
        assert self.alice.core.phase is Phase.NORMAL and self.bob.core.phase is Phase.NORMAL

    def add(self, sender: Side, amount_msat: int, cltv: int = 500) -> tuple[int, bytes]:
        preimage = sha256(f"preimage {len(self.preimages)}".encode())
        payment_hash = sha256(preimage)
        self.preimages[payment_hash] = preimage
        htlc_id = sender.core.state.local_next_htlc_id
        self.feed(sender, AddHtlc(amount_msat, payment_hash, cltv, ONION))
        return htlc_id, preimage

    def commit(self, sender: Side) -> None:
        """sender signs, then each side signs what it still has until both commitments hold everything."""
        self.feed(sender, SignCommitment())
        self.pump()
        side = self.other(sender)
        while self.has_changes(self.alice) or self.has_changes(self.bob):
            if self.has_changes(side):
                self.feed(side, SignCommitment())
                self.pump()
            side = self.other(side)

    @staticmethod
    def has_changes(side: Side) -> bool:
        state = side.core.state
        return bool(state.local_changes.proposed or state.remote_changes.acked)

    def fulfill(self, receiver: Side, htlc_id: int, preimage: bytes) -> None:
        self.feed(receiver, FulfillHtlc(htlc_id, preimage))
        self.commit(receiver)

    def reconnect(self) -> None:
        """The connection drops (what is in flight is lost) and comes back; both reestablish."""
        self.wire.clear()
        self.feed(self.alice, Disconnected())
        self.feed(self.bob, Disconnected())
        self.feed(self.alice, Reconnected())
        self.feed(self.bob, Reconnected())
        self.pump()

    def sent_types(self, side: Side, since: int = 0) -> list[str]:
        """Names of the messages ``side`` sent in its outputs from index ``since``."""
        return [type(m).__name__ for o in side.outputs[since:] for m in o.messages]

    def balances(self) -> tuple[int, int]:
        """(Alice, Bob) msat in Alice's latest local commitment, HTLCs left out."""
        spec = self.alice.core.state.local_commit.spec  # type: ignore[union-attr]
        return spec.to_local_msat, spec.to_remote_msat


def verify_commitments(pair: ChannelPair) -> None:
    """Both latest commitments spend the funding output under consensus rules; HTLC signatures verify."""
    assert pair.funding_tx is not None
    for side in (pair.alice, pair.bob):
        core = side.core
        raw = core.latest_commitment_tx()
        assert raw is not None
        tx = Tx.parse(raw)
        funding_out = pair.funding_tx.outputs[core.state.funding_outpoint.vout]  # type: ignore[union-attr]
        assert kernel_verify_scripts(tx, [funding_out]) is None
        commit = core.state.local_commit
        assert commit is not None
        built = build(core.keys(), commit.spec, commit.number, core.secrets.commitment_point(commit.number), local=True)
        assert built.tx.txid == tx.txid
        assert len(built.second_stage) == len(commit.htlc_signatures)
        htlc_key = derive_privkey(core.secrets.htlc_basepoint_secret, core.secrets.commitment_point(commit.number))
        for plan, sig in zip(built.second_stage, commit.htlc_signatures, strict=True):
            assert plan.verify(0, "remote_htlc", sig)
            # The HTLC transaction, signed by both (and the preimage where it needs one), passes consensus.
            vout = plan.tx.inputs[0].prevout.vout
            htlc = built.outputs[vout].spec.payload
            values = {"local_htlc": plan.sign(0, "local_htlc", htlc_key), "remote_htlc": sig}
            if not htlc.offered:  # type: ignore[union-attr]
                values["preimage"] = pair.preimages[htlc.payment_hash]  # type: ignore[union-attr]
            second = plan.finalize(values)
            assert kernel_verify_scripts(second, [tx.outputs[vout]]) is None


def test_two_pairs_are_identical() -> None:
    """The pair is deterministic: the same script gives the same funding, channel and commitments."""
    first, second = ChannelPair(push_msat=5_000_000), ChannelPair(push_msat=5_000_000)
    first.open()
    second.open()
    assert first.alice.core.state == second.alice.core.state
    assert first.bob.records == second.bob.records
    verify_commitments(first)
