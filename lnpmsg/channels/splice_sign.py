"""A splice's commitments, signatures and locking (BOLT 2 "Channel Splicing"), sans-IO.

Once the interactive protocol fixed the splice transaction (:mod:`.splice`): ``commitment_signed``
for the new funding both ways (the current commitment numbers, the balances moved by the
contributions, the HTLCs the channel holds), then ``tx_signatures`` in BOLT 2's order (the shared
input's value counts as the initiator's) with ``shared_input_signature``; then the splice
transaction is broadcast and quiescence ends. ``splice_locked`` at the minimum depth, and once
both sent it the switch of the channel to the new funding. Across a disconnection after our
``tx_signatures`` left: ``channel_reestablish`` with ``next_funding`` (the signatures again) and
``my_current_funding_locked`` (a ``splice_locked`` again).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from lnpmsg.bitcoin.ecdsa import compact_to_der, der_to_compact, sign_digest, verify_digest
from lnpmsg.bitcoin.errors import BitcoinError
from lnpmsg.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash

from . import splice_forgotten
from .commitments import ChannelKeys, build, sign_remote, verify_local
from .errors import RemoteFault
from .inputs import BroadcastFunding
from .interactive_tx import InteractiveTx, InteractiveTxAborted
from .messages import ChannelReestablish, CommitmentSigned
from .messages_splice import SpliceLocked
from .messages_v2 import TxAbort, TxSignatures
from .ready import is_zeroconf
from .script import funding_script, sort_pubkeys
from .updates import CommitSpec

if TYPE_CHECKING:
    from .splice import SpliceSession
    from .state import ChannelCore, _Out

__all__ = [
    "adjusted",
    "ask_witnesses_again",
    "kept",
    "maybe_sign",
    "on_commitment_signed",
    "on_complete",
    "on_depth",
    "on_reestablish",
    "on_splice_locked",
    "on_tx_signatures",
    "on_witnesses",
    "reestablish_tlvs",
    "splice_keys",
    "splice_specs",
]


def _splice(core: ChannelCore) -> SpliceSession:
    from .splice import SpliceSession

    sp = core.state.splice
    assert isinstance(sp, SpliceSession)
    return sp


def splice_keys(core: ChannelCore, sp: SpliceSession) -> ChannelKeys:
    """The channel's keys on the new funding output (its outpoint, value and the peer's new funding key)."""
    from .splice import new_capacity, next_keys

    s = core.state
    assert s.remote is not None and sp.outpoint is not None
    remote = replace(s.remote.basepoints, funding_pubkey=sp.remote_funding_pubkey)
    local = next_keys(core)[1]
    return replace(core.keys(), local=local, remote=remote, funding_outpoint=sp.outpoint, funding_sat=new_capacity(s, sp))


def adjusted(spec: CommitSpec, sp: SpliceSession, *, local: bool) -> CommitSpec:
    """``spec`` (our commitment's if ``local``, else the peer's) on the splice's funding: each side's
    contribution added to its balance."""
    ours, theirs = sp.our_contribution * 1000, sp.their_contribution * 1000
    mine, other = (ours, theirs) if local else (theirs, ours)
    return replace(spec, to_local_msat=spec.to_local_msat + mine, to_remote_msat=spec.to_remote_msat + other)


def splice_specs(core: ChannelCore, sp: SpliceSession) -> tuple[CommitSpec, CommitSpec]:
    """(ours, the peer's) current commitments on the splice's funding."""
    s = core.state
    assert s.local_commit is not None and s.remote_commit is not None
    return adjusted(s.local_commit.spec, sp, local=True), adjusted(s.remote_commit.spec, sp, local=False)


# ---------------------------------------------------------------- commitments


def on_complete(core: ChannelCore, tx: InteractiveTx, out: _Out) -> None:
    """The splice transaction is fixed: sign the peer's commitment on it (durable with it), ask the wallet."""
    from .dualfund import FundingSignaturesNeeded
    from .state import RemoteCommit

    s = core.state
    sp = replace(_splice(core), outpoint=tx.funding_outpoint(), tx=tx.transaction.raw)
    s.splice = sp
    signed, txid = _commitment_signed(core, sp)
    out.send(signed)
    rc = s.remote_commit
    assert rc is not None
    sp = replace(sp, remote_commit=RemoteCommit(rc.number, splice_specs(core, sp)[1], txid, rc.point), first_remote_number=rc.number)
    mine = tx.our_inputs()
    if mine:
        out.emit(FundingSignaturesNeeded(tx.transaction.raw, tuple(i for i, _, _ in mine)))
    else:
        sp = replace(sp, our_witnesses=())
    s.splice = sp


def _commitment_signed(core: ChannelCore, sp: SpliceSession) -> tuple[CommitmentSigned, bytes]:
    """Our commitment_signed of the peer's commitment on the new funding (deterministic: sent again
    alike), and that commitment's txid."""
    from .splice import next_keys

    s = core.state
    assert s.remote_commit is not None and sp.outpoint is not None
    _, remote_spec = splice_specs(core, sp)
    commitment = build(splice_keys(core, sp), remote_spec, s.remote_commit.number, s.remote_commit.point, local=False)
    signature, htlc_sigs = sign_remote(commitment, next_keys(core)[0])
    msg = CommitmentSigned(channel_id=s.channel_id, signature=signature, htlc_signature=htlc_sigs,
                           tlvs=CommitmentSigned.tlv_stream({"funding_txid": sp.outpoint.txid}))  # fmt: skip
    return msg, commitment.tx.txid


def on_commitment_signed(core: ChannelCore, msg: CommitmentSigned, out: _Out) -> None:
    from .splice import _abort
    from .state import LocalCommit

    s = core.state
    sp = _splice(core)
    assert s.local_commit is not None and sp.outpoint is not None
    named = msg.tlvs.get("funding_txid")
    number = s.local_commit.number
    local_spec, _ = splice_specs(core, sp)
    commitment = build(splice_keys(core, sp), local_spec, number, core.secrets.commitment_point(number), local=True)
    try:
        if named is not None and named != sp.outpoint.txid:
            raise RemoteFault("commitment_signed names another funding transaction than the splice's")
        verify_local(commitment, msg.signature, tuple(msg.htlc_signature))
    except RemoteFault as exc:
        if sp.signatures_sent:
            raise
        _abort(core, out, str(exc), send=True)
        return
    s.splice = replace(sp, local_commit=LocalCommit(number, local_spec, msg.signature, tuple(msg.htlc_signature)))
    maybe_sign(core, out)


# ---------------------------------------------------------------- signatures


def kept(core: ChannelCore) -> bool:
    """The splice outlives a disconnection (and a restart): our tx_signatures left, or our
    commitment_signed left and the peer signs first, so that its tx_signatures may have left.

    The peer must not forget a splice it signed (BOLT 2: its inputs might be spent by it), so a
    splice we ended there would stay pending on its side for good; ``channel_reestablish`` with
    ``next_funding`` resumes it instead, or the peer's ``tx_abort`` (it never signed) ends it."""
    from .splice import SpliceSession, session

    sp = core.state.splice
    if not isinstance(sp, SpliceSession) or sp.outpoint is None:
        return False
    if sp.signatures_sent:
        return True
    return sp.remote_commit is not None and not session(core).we_sign_first(core.basepoints.funding_pubkey, sp.remote_funding_pubkey)


def ask_witnesses_again(core: ChannelCore, out: _Out) -> None:
    """A kept splice whose wallet witnesses, asked at its completion, never came (a restart came first): ask again."""
    from .dualfund import FundingSignaturesNeeded
    from .splice import SpliceSession, session

    sp = core.state.splice
    if not isinstance(sp, SpliceSession) or sp.our_witnesses is not None or not kept(core):
        return
    tx = session(core)
    mine = tx.our_inputs()
    if mine:
        out.emit(FundingSignaturesNeeded(tx.transaction.raw, tuple(i for i, _, _ in mine)))


def on_witnesses(core: ChannelCore, item: Any, out: _Out) -> None:
    """The wallet's witnesses for our inputs of the splice transaction."""
    from .errors import LocalMisuse
    from .splice import session

    sp = _splice(core)
    if sp.outpoint is None or sp.our_witnesses is not None:
        raise LocalMisuse("no splice signatures are awaited")
    session(core).our_signatures(list(item.witnesses))  # checks the count
    core.state.splice = replace(sp, our_witnesses=tuple(tuple(w) for w in item.witnesses))
    maybe_sign(core, out)


def _shared_digest(core: ChannelCore, tx: InteractiveTx, sp: SpliceSession) -> tuple[int, bytes, bytes]:
    """(input index, BIP143 digest, witness script) of the shared input: the old funding output."""
    s = core.state
    assert s.remote is not None
    index = tx.shared_input_index()
    assert index is not None
    script = funding_script(core.basepoints.funding_pubkey, s.remote.basepoints.funding_pubkey)
    return index, segwit_v0_sighash(tx.transaction, index, script, sp.shared.sats, SIGHASH_ALL), script


def _our_tx_signatures(core: ChannelCore, tx: InteractiveTx, sp: SpliceSession) -> TxSignatures:
    assert sp.our_witnesses is not None
    msg = tx.our_signatures(list(sp.our_witnesses))
    _, digest, _ = _shared_digest(core, tx, sp)
    signature = der_to_compact(sign_digest(core.secrets.funding_privkey, digest))
    return replace(msg, tlvs=TxSignatures.tlv_stream({"shared_input_signature": signature}))


def on_tx_signatures(core: ChannelCore, msg: TxSignatures, out: _Out) -> None:
    from .splice import _abort, session

    s = core.state
    sp = _splice(core)
    assert s.remote is not None
    if sp.local_commit is None:
        if sp.signatures_sent:
            raise RemoteFault("tx_signatures before commitment_signed")
        _abort(core, out, "tx_signatures before commitment_signed", send=True)
        return
    shared = msg.tlvs.get("shared_input_signature")
    if shared is None:
        raise RemoteFault("tx_signatures of a splice without shared_input_signature")
    tx = session(core)
    try:
        tx.receive_signatures(msg)
    except InteractiveTxAborted as exc:
        if sp.signatures_sent:
            raise RemoteFault(f"tx_signatures: {exc.reason}") from None
        _abort(core, out, exc.reason, send=True)
        return
    _, digest, _ = _shared_digest(core, tx, sp)
    try:
        valid = verify_digest(s.remote.basepoints.funding_pubkey, compact_to_der(shared), digest)
    except BitcoinError:
        valid = False
    if not valid:
        raise RemoteFault("shared_input_signature does not verify")
    s.splice = replace(sp, their_signatures=msg)
    maybe_sign(core, out)


def maybe_sign(core: ChannelCore, out: _Out) -> None:
    """Send our tx_signatures when BOLT 2's order allows; both in: the splice transaction goes out."""
    from .splice import session

    s = core.state
    sp = _splice(core)
    if sp.local_commit is None or sp.our_witnesses is None:
        return
    tx = session(core)
    if not sp.signatures_sent:
        # (a tie of input totals is broken by the funding keys: the node ids are not the core's)
        if not tx.we_sign_first(core.basepoints.funding_pubkey, sp.remote_funding_pubkey) and sp.their_signatures is None:
            return
        if s.connected and not s.awaiting_reestablish:
            out.send(_our_tx_signatures(core, tx, sp))
        sp = replace(sp, signatures_sent=True)
        s.splice = sp
    if sp.their_signatures is None or sp.signed:
        return
    shared = sp.their_signatures.tlvs.get("shared_input_signature")
    _, digest, script = _shared_digest(core, tx, sp)
    assert s.remote is not None
    signatures = {
        core.basepoints.funding_pubkey: sign_digest(core.secrets.funding_privkey, digest),
        s.remote.basepoints.funding_pubkey: compact_to_der(shared),
    }
    first, second = sort_pubkeys(core.basepoints.funding_pubkey, s.remote.basepoints.funding_pubkey)
    witness = (b"", signatures[first] + bytes([SIGHASH_ALL]), signatures[second] + bytes([SIGHASH_ALL]), script)
    signed = tx.signed_transaction(witness)
    s.splice = replace(sp, tx=signed.raw, signed=True, signed_height=sp.height)
    s.quiesce = None  # BOLT 2: tx_signatures exchanged, the channel is no longer quiescent
    out.emit(BroadcastFunding(signed.raw))
    if is_zeroconf(s):
        # BOLT 2: with option_zeroconf, splice_locked at once (the real id comes at the confirmation,
        # as a zero-conf channel's does: the chain shell's FundingDepth)
        _lock(core, 0, out)


# ---------------------------------------------------------------- locking


def on_depth(core: ChannelCore, item: Any, out: _Out) -> None:
    """A version of the splice transaction's depth: ``splice_locked`` at the channel's minimum depth.
    A version in the chain is the current one from then on (BOLT 2: an attempt under way is abandoned);
    depth 0: a version seen in a block left the chain (a reorganization), it may be bumped again."""
    from .splice import _abort
    from .splice_rbf import find_version, make_current, update_version

    s = core.state
    sp = _splice(core)
    if item.depth <= 0:
        left = find_version(core, item.txid)
        if left is not None and left.mined and not left.locked_sent:  # (a lock is not taken back)
            update_version(core, replace(left, mined=False))
        return
    version = find_version(core, item.txid) if not sp.locked_sent else None
    if version is not None and version is not sp and item.depth >= 1:
        if not sp.signed and not sp.signatures_sent:
            _abort(core, out, "a version of the splice confirmed", send=True)
        sp = make_current(core, version)
    if not sp.signed or sp.outpoint is None or item.txid != sp.outpoint.txid:
        return
    if item.depth >= 1 and not sp.mined:
        s.splice = sp = replace(sp, mined=True)
    if sp.locked_sent:
        splice_forgotten.on_locked_depth(core, sp, item.depth, out)  # (a confirmed splice the peer forgot)
        if not sp.short_channel_id and item.depth >= 1:  # zero-conf, locked before it confirmed: its real id
            s.splice = replace(sp, short_channel_id=item.short_channel_id)
        return
    if item.depth < max(1, s.minimum_depth):
        return
    _lock(core, item.short_channel_id, out)


def _lock(core: ChannelCore, short_channel_id: int, out: _Out) -> None:
    """We consider the splice locked: splice_locked (now, or by channel_reestablish); both: the switch."""
    s = core.state
    s.splice = sp = replace(_splice(core), locked_sent=True, short_channel_id=short_channel_id)
    assert sp.outpoint is not None
    if s.connected and not s.awaiting_reestablish:
        out.send(SpliceLocked(channel_id=s.channel_id, splice_txid=sp.outpoint.txid))
    elif s.connected:  # (our channel_reestablish left naming an older lock: the peer would never hear of this one)
        s.splice_locked_owed = sp.outpoint.txid
    if sp.locked_received:
        _switch(core, out)


def on_splice_locked(core: ChannelCore, msg: SpliceLocked, out: _Out) -> None:
    from .splice import SpliceSession, _abort
    from .splice_rbf import find_version, make_current

    s = core.state
    sp = s.splice
    version = find_version(core, msg.splice_txid)
    if not isinstance(sp, SpliceSession) or version is None:
        if s.funding_outpoint is not None and msg.splice_txid == s.funding_outpoint.txid:
            return  # a retransmission for the funding we switched to
        raise RemoteFault(f"splice_locked for {msg.splice_txid[::-1].hex()}, no pending splice of ours", warning=True)
    if version is not sp:
        if sp.locked_sent:
            return  # BOLT 2: we locked another version (a chain fork between us): ignored until one wins
        if not sp.signed and not sp.signatures_sent:
            _abort(core, out, "the peer locked a version of the splice", send=True)
        sp = make_current(core, version)
    s.splice = sp = replace(sp, locked_received=True)
    if sp.locked_sent:
        _switch(core, out)


def _switch(core: ChannelCore, out: _Out) -> None:
    """Both sent splice_locked: the new funding is the channel's (capacity, commitments, keys, id)."""
    from .splice import Spliced

    from .splice_rbf import SpliceVersionsDropped, dropped_inputs

    s = core.state
    sp = _splice(core)
    switch_state(s, sp)
    out.emit(Spliced(sp.outpoint, s.funding_sat, sp.short_channel_id, sp))  # type: ignore[arg-type]
    if sp.previous:  # BOLT 2: the other versions are dropped, their commitments no longer sent
        out.emit(SpliceVersionsDropped(sp.outpoint, dropped_inputs(sp)))  # type: ignore[arg-type]


def switch_state(s: Any, sp: Any) -> None:
    """Move the channel state ``s`` onto the splice ``sp``'s funding (what both ``splice_locked`` do;
    also the view a monitor of a confirmed splice the peer has not locked follows, :mod:`.splice_watch`)."""
    from .splice import SplicedFrom, new_capacity

    assert s.remote is not None and sp.outpoint is not None and sp.tx is not None
    through = (s.remote_next_commit or s.remote_commit).number if s.remote_commit is not None else None
    s.spliced_from = SplicedFrom(s.funding_outpoint, sp.first_remote_number, sp.our_contribution, sp.their_contribution, through)
    s.funding_sat = new_capacity(s, sp)
    s.funding_outpoint = sp.outpoint
    s.funding_tx = sp.tx
    s.local_commit = sp.local_commit
    s.remote_commit = sp.remote_commit
    if s.remote_next_commit is not None:  # (signed in a batch with the splice's, not revoked yet)
        s.remote_next_commit = sp.remote_next_commit
    s.remote = replace(s.remote, basepoints=replace(s.remote.basepoints, funding_pubkey=sp.remote_funding_pubkey))
    s.previous_short_channel_id = s.short_channel_id
    s.short_channel_id = sp.short_channel_id
    s.splice = None
    s.splices += 1
    s.funding_key_index += 1  # (our funding key is the splice's from now on: core.secrets follows)


# ---------------------------------------------------------------- reconnection


def reestablish_tlvs(core: ChannelCore) -> dict[str, Any]:
    """``next_funding`` (a splice whose signatures we still miss) and ``my_current_funding_locked``."""
    from .splice import SPLICE_BITS, SpliceSession

    s = core.state
    sp = s.splice
    tlvs: dict[str, Any] = {}
    if isinstance(sp, SpliceSession) and kept(core) and not sp.signed and sp.outpoint is not None:
        flags = 1 if sp.local_commit is None else 0
        tlvs["next_funding"] = {"next_funding_txid": sp.outpoint.txid, "retransmit_flags": flags}
    if any(s.remote_features >> bit & 1 for bit in SPLICE_BITS):
        if isinstance(sp, SpliceSession) and sp.locked_sent and sp.outpoint is not None:
            tlvs["my_current_funding_locked"] = {"my_current_funding_locked_txid": sp.outpoint.txid, "retransmit_flags": 0}
        elif s.ready_sent and s.funding_outpoint is not None:
            tlvs["my_current_funding_locked"] = {"my_current_funding_locked_txid": s.funding_outpoint.txid, "retransmit_flags": 0}
    return tlvs


def on_reestablish(core: ChannelCore, msg: ChannelReestablish, out: _Out) -> None:
    """After the peer's channel_reestablish: the splice's signatures again, its splice_locked taken."""
    from .splice import SpliceSession, session
    from .splice_rbf import find_version

    s = core.state
    if s.splice_locked_owed is not None:
        out.send(SpliceLocked(channel_id=s.channel_id, splice_txid=s.splice_locked_owed))
        s.splice_locked_owed = None
    sp = s.splice
    asked = msg.tlvs.get("next_funding")
    pending = sp if isinstance(sp, SpliceSession) and kept(core) else None
    if asked is not None:
        if pending is not None and asked.next_funding_txid == pending.outpoint.txid:  # type: ignore[union-attr]
            if asked.retransmit_flags & 1:
                out.send(_commitment_signed(core, pending)[0])
            if pending.signatures_sent:  # (else ours follow the peer's, by maybe_sign)
                out.send(_our_tx_signatures(core, session(core), pending))
        elif s.dual is None and (s.funding_outpoint is None or asked.next_funding_txid != s.funding_outpoint.txid) and (
            find_version(core, asked.next_funding_txid) is None
        ):
            out.send(TxAbort(channel_id=s.channel_id, data=b"next_funding names no funding of ours"))
    locked = msg.tlvs.get("my_current_funding_locked")
    if locked is not None and isinstance(s.splice, SpliceSession) and not s.splice.locked_received:
        if find_version(core, locked.my_current_funding_locked_txid) is not None:  # (a version of the splice)
            on_splice_locked(core, SpliceLocked(channel_id=s.channel_id, splice_txid=locked.my_current_funding_locked_txid), out)
