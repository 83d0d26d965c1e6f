"""The channel at work while a splice waits to lock (BOLT 2 "Splice Completion", ``start_batch``), sans-IO.

Once a splice is signed and until both sent ``splice_locked``, every commitment exists once per
funding: on the current funding and on each signed version of the splice (its fee bumps,
:mod:`.splice_rbf`; the same HTLCs and feerate, the balances moved by the contributions, the same
commitment numbers). So each ``commitment_signed`` goes as a batch: ``start_batch``
(``batch_size`` 1 + the versions, ``message_type`` 132), then the one for the current funding,
then one per version, each naming its funding in ``funding_txid``; ``revoke_and_ack`` stays one. The receiver collects the batch, checks each signature against its funding, and
revokes once both hold. An update that the splice's commitment could not carry (a sender below
its reserve there) is refused like one the current commitment could not.

A ``commitment_signed`` of the batch whose funding the receiver no longer has pending (the splice
locked meanwhile) is ignored (BOLT 2). A ``commitment_signed`` without
``start_batch`` while a splice is pending fails the channel.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .commitments import build, sign_remote, verify_local
from .errors import LocalMisuse, RemoteFault
from .messages import CommitmentSigned
from .messages_splice import StartBatch
from .splice_sign import adjusted
from .updates import CommitSpec

if TYPE_CHECKING:
    from .splice import SpliceSession
    from .state import ChannelCore, _Out

__all__ = [
    "MAX_BATCH_SIZE",
    "check_affordable",
    "on_commitment_signed",
    "on_revoked",
    "on_start_batch",
    "pending",
    "pending_versions",
    "refuse_unaffordable",
    "send_commitment",
]

#: BOLT 2: a larger batch is refused (a warning and a disconnection)
MAX_BATCH_SIZE = 20
#: start_batch's message_type: commitment_signed
_COMMITMENT_SIGNED = 132


def pending(core: ChannelCore) -> SpliceSession | None:
    """The signed splice waiting to lock (None: none)."""
    from .splice import SpliceSession

    sp = core.state.splice
    return sp if isinstance(sp, SpliceSession) and sp.signed else None


def pending_versions(core: ChannelCore) -> tuple[SpliceSession, ...]:
    """Every signed version of the splice waiting to lock (each has its commitments)."""
    from .splice_rbf import signed_versions

    return signed_versions(core)


def check_affordable(core: ChannelCore, spec: CommitSpec, *, local: bool, sender_is_local: bool) -> str | None:
    """Why the splice's version of ``spec`` cannot carry an update the sender proposes (None: it can)."""
    from .normal import _check_sender_affords

    s = core.state
    for sp in pending_versions(core):
        assert s.remote is not None
        on_splice = adjusted(spec, sp, local=local)
        if min(on_splice.to_local_msat, on_splice.to_remote_msat) < 0:
            return "a balance on the pending splice's commitment would be negative"
        owner = sender_is_local == local
        funder = s.funder == sender_is_local
        reserve = s.remote.channel_reserve_sat if sender_is_local else s.local_reserve_ask_sat
        dust = s.config.dust_limit_sat if local else s.remote.dust_limit_sat
        if not _check_sender_affords(on_splice, owner, funder, reserve, dust, s.anchors):
            return "the sender would fall below its reserve on the pending splice's commitment"
    return None


# ---------------------------------------------------------------- sending


def send_commitment(core: ChannelCore, main: CommitmentSigned, spec: CommitSpec, number: int, point: bytes, out: _Out) -> None:
    """Our ``commitment_signed`` of the peer's commitment ``number`` (``main``, on the current funding),
    as a batch with one per signed version of the splice when one is pending (each noted, to promote
    on revocation)."""
    from .splice import next_keys
    from .splice_rbf import update_version
    from .splice_sign import splice_keys
    from .state import RemoteCommit

    s = core.state
    pending = pending_versions(core)
    if not pending:
        out.send(main)
        return
    assert s.funding_outpoint is not None
    batch = len(pending) + 1
    out.send(StartBatch(channel_id=s.channel_id, batch_size=batch, tlvs=StartBatch.tlv_stream(message_type=_COMMITMENT_SIGNED)))
    out.send(replace(main, tlvs=CommitmentSigned.tlv_stream({"funding_txid": s.funding_outpoint.txid})))
    for sp in pending:
        assert sp.outpoint is not None
        on_splice = adjusted(spec, sp, local=False)
        commitment = build(splice_keys(core, sp), on_splice, number, point, local=False)
        signature, htlc_sigs = sign_remote(commitment, next_keys(core)[0])
        out.send(CommitmentSigned(channel_id=s.channel_id, signature=signature, htlc_signature=htlc_sigs,
                                  tlvs=CommitmentSigned.tlv_stream({"funding_txid": sp.outpoint.txid})))  # fmt: skip
        update_version(core, replace(sp, remote_next_commit=RemoteCommit(number, on_splice, commitment.tx.txid, point)))


def on_revoked(core: ChannelCore) -> None:
    """The peer revoked: each version's commitment we signed with the current one's is its current one too."""
    from .splice_rbf import update_version

    for sp in pending_versions(core):
        if sp.remote_next_commit is not None:
            update_version(core, replace(sp, remote_commit=sp.remote_next_commit, remote_next_commit=None))


# ---------------------------------------------------------------- receiving


def on_start_batch(core: ChannelCore, msg: StartBatch, out: _Out) -> None:
    from lnpmsg.wire import WarningMessage

    s = core.state
    if msg.batch_size > MAX_BATCH_SIZE:
        raise RemoteFault(f"start_batch of {msg.batch_size} messages (at most {MAX_BATCH_SIZE})", warning=True)
    if msg.batch_size <= 1:
        out.send(WarningMessage(channel_id=s.channel_id, data=b"start_batch with batch_size <= 1 ignored"))
        return
    if msg.tlvs.get("message_type") != _COMMITMENT_SIGNED:
        return  # BOLT 2: not a batch of commitment_signed: the messages are taken one by one
    if s.batch_size:
        raise RemoteFault("start_batch inside a batch", warning=True)
    s.batch_size, s.batch = msg.batch_size, ()


def on_commitment_signed(core: ChannelCore, msg: CommitmentSigned, out: _Out) -> bool:
    """A commitment_signed of a batch, or one while a splice is pending: True when handled here."""
    from . import normal

    s = core.state
    pending = pending_versions(core)
    if not s.batch_size:
        if pending:
            raise RemoteFault("commitment_signed without start_batch while a splice is pending")
        return False
    if "funding_txid" not in msg.tlvs:
        raise RemoteFault("a commitment_signed of a batch without funding_txid")
    s.batch = (*s.batch, msg)
    if len(s.batch) < s.batch_size:
        return True
    batch, s.batch, s.batch_size = s.batch, (), 0
    assert s.funding_outpoint is not None
    mains = [m for m in batch if m.tlvs.get("funding_txid") == s.funding_outpoint.txid]
    if len(mains) != 1:
        raise RemoteFault("the batch has no single commitment_signed for the current funding")
    # BOLT 2: a commitment_signed for a funding we do not have pending is ignored
    for sp in pending:
        assert sp.outpoint is not None
        ours = [m for m in batch if m.tlvs.get("funding_txid") == sp.outpoint.txid]
        if len(ours) != 1:
            raise RemoteFault(f"the batch lacks the commitment_signed for the pending splice {sp.outpoint.txid_hex}")
        _verify_splice(core, sp, ours[0])
    normal.on_commitment_signed(core, mains[0], out)
    return True


def _verify_splice(core: ChannelCore, sp: SpliceSession, msg: CommitmentSigned) -> None:
    """The peer's signature of our next commitment on the splice's funding; kept beside the current one."""
    from .splice_rbf import update_version
    from .splice_sign import splice_keys
    from .state import LocalCommit
    from .updates import reduce

    s = core.state
    assert s.local_commit is not None
    spec = reduce(s.local_commit.spec, s.local_changes.acked, s.remote_changes.proposed)
    number = s.local_commit.number + 1
    on_splice = adjusted(spec, sp, local=True)
    commitment = build(splice_keys(core, sp), on_splice, number, core.secrets.commitment_point(number), local=True)
    verify_local(commitment, msg.signature, tuple(msg.htlc_signature))
    update_version(core, replace(sp, local_commit=LocalCommit(number, on_splice, msg.signature, tuple(msg.htlc_signature))))


def refuse_unaffordable(core: ChannelCore, spec: CommitSpec, *, ours: bool) -> None:
    """An add the pending splice's commitment could not carry: ours a misuse, the peer's a fault."""
    why = check_affordable(core, spec, local=not ours, sender_is_local=ours)
    if why is not None:
        raise LocalMisuse(why) if ours else RemoteFault(why)

