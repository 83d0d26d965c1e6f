"""Channel establishment v2's signatures (BOLT 2, ``option_dual_fund``) in the channel core, sans-IO.

Once the interactive protocol fixed the funding transaction
(:mod:`.dualfund`): ``commitment_signed`` both ways, then ``tx_signatures``
in BOLT 2's order, after which the channel is opened; and, across a
disconnection after our ``tx_signatures`` left, their resumption by
``channel_reestablish`` with ``next_funding``. Split from :mod:`.dualfund`,
which dispatches here, so each module keeps one stage of the open.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from . import dualfund, establish
from .commitments import build, sign_remote, verify_local
from .errors import RemoteFault
from .inputs import BroadcastFunding, ChannelOpened
from .interactive_tx import InteractiveTx, InteractiveTxAborted
from .messages import ChannelReestablish, CommitmentSigned
from .messages_v2 import TxAbort, TxSignatures

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = [
    "ask_witnesses_again",
    "maybe_sign",
    "on_commitment_signed",
    "on_complete",
    "on_reestablish",
    "on_tx_signatures",
    "peer_may_have_signed",
    "reestablish_message",
    "resend_signatures",
]


# ---------------------------------------------------------------- the signatures


def on_complete(core: ChannelCore, session: InteractiveTx, out: _Out) -> None:
    """The transaction is fixed: sign the peer's first commitment (durable with it), ask the wallet."""
    from .state import RemoteCommit

    s = core.state
    d = s.dual
    assert isinstance(d, dualfund.DualFundSession) and s.remote is not None
    s.funding_outpoint = session.funding_outpoint()
    s.funding_tx = session.transaction.raw
    _, remote_spec = establish.initial_specs(core)
    remote = build(core.keys(), remote_spec, 0, s.remote.first_per_commitment_point, local=False)
    signature, _ = sign_remote(remote, core.secrets)
    s.remote_commit = RemoteCommit(0, remote_spec, remote.tx.txid, s.remote.first_per_commitment_point)
    out.send(CommitmentSigned(channel_id=s.channel_id, signature=signature, htlc_signature=[]))
    mine = session.our_inputs()
    if mine:
        out.emit(dualfund.FundingSignaturesNeeded(session.transaction.raw, tuple(i for i, _, _ in mine)))
    else:
        s.dual = replace(d, our_witnesses=())


def on_commitment_signed(core: ChannelCore, msg: CommitmentSigned, out: _Out) -> None:
    from .state import LocalCommit

    s = core.state
    if msg.htlc_signature:
        raise RemoteFault("the first commitment_signed of a v2 channel has HTLC signatures")
    local_spec, _ = establish.initial_specs(core)
    local = build(core.keys(), local_spec, 0, core.secrets.commitment_point(0), local=True)
    try:
        verify_local(local, msg.signature, ())
    except RemoteFault as exc:
        dualfund._abort(core, out, str(exc), send=True)
        return
    s.local_commit = LocalCommit(0, local_spec, msg.signature, ())
    maybe_sign(core, out)


def on_tx_signatures(core: ChannelCore, msg: TxSignatures, out: _Out) -> None:
    s = core.state
    d = s.dual
    assert isinstance(d, dualfund.DualFundSession)
    if s.local_commit is None:
        dualfund._abort(core, out, "tx_signatures before commitment_signed", send=True)
        return
    try:
        dualfund._session(core).receive_signatures(msg)
    except InteractiveTxAborted as exc:
        if d.signatures_sent:
            raise RemoteFault(f"tx_signatures: {exc.reason}") from None
        dualfund._abort(core, out, exc.reason, send=True)
        return
    s.dual = replace(d, their_signatures=msg)
    maybe_sign(core, out)


def peer_may_have_signed(core: ChannelCore) -> bool:
    """A first open whose commitment_signed of ours left, the peer signing first: its tx_signatures may have left too.

    Such an open is not ended by a disconnection (nor a restart) before our signatures left: the
    peer, which must not forget a funding it signed until its inputs are spent elsewhere, would
    wait for ours forever with its coins held. ``channel_reestablish`` with ``next_funding``
    resumes it (BOLT 2), or the peer's ``tx_abort`` (it never signed) ends it. (A bump's attempt
    ends as before: the peer sets it aside on our ``tx_abort``, the previous version standing.)"""
    s = core.state
    d = s.dual
    return isinstance(d, dualfund.DualFundSession) and not d.previous and s.remote_commit is not None and not _we_sign_first(core)


def _we_sign_first(core: ChannelCore) -> bool:
    """BOLT 2's tx_signatures order (the node ids break a tie; the funding keys stand in for them)."""
    s = core.state
    d = s.dual
    assert isinstance(d, dualfund.DualFundSession) and s.remote is not None
    ours, theirs = d.node_ids if all(d.node_ids) else (core.basepoints.funding_pubkey, s.remote.basepoints.funding_pubkey)
    return dualfund._session(core).we_sign_first(ours, theirs)


def ask_witnesses_again(core: ChannelCore, out: _Out) -> None:
    """The wallet's witnesses, asked at the transaction's completion, never came (a restart came first): ask again."""
    d = core.state.dual
    if not isinstance(d, dualfund.DualFundSession) or d.our_witnesses is not None or core.state.remote_commit is None:
        return
    session = dualfund._session(core)
    mine = session.our_inputs()
    if mine:
        out.emit(dualfund.FundingSignaturesNeeded(session.transaction.raw, tuple(i for i, _, _ in mine)))


def maybe_sign(core: ChannelCore, out: _Out) -> None:
    """Send our tx_signatures when BOLT 2's order allows; both in: the channel is opened."""
    from . import ready
    from .state import Phase

    s = core.state
    d = s.dual
    assert isinstance(d, dualfund.DualFundSession)
    if s.local_commit is None or d.our_witnesses is None:
        return
    session = dualfund._session(core)
    if not d.signatures_sent:
        if not _we_sign_first(core) and d.their_signatures is None:
            return
        if s.connected and not s.awaiting_reestablish:
            out.send(session.our_signatures(list(d.our_witnesses)))
        d = replace(d, signatures_sent=True)
        s.dual = d
    if d.their_signatures is None:
        return
    signed = session.signed_transaction()
    s.funding_tx = signed.raw
    s.phase = Phase.AWAIT_READY
    assert s.funding_outpoint is not None
    out.emit(BroadcastFunding(signed.raw))
    out.emit(ChannelOpened(s.channel_id, s.funding_outpoint, s.minimum_depth))
    ready.send_ready_if_zero_depth(core, out)


# ---------------------------------------------------------------- reconnection


def reestablish_message(core: ChannelCore) -> ChannelReestablish:
    """channel_reestablish while the funding's signatures are exchanged: ``next_funding`` names it."""
    s = core.state
    assert s.funding_outpoint is not None
    return ChannelReestablish(
        channel_id=s.channel_id, next_commitment_number=1 if s.local_commit is not None else 0,
        next_revocation_number=0, your_last_per_commitment_secret=bytes(32),
        my_current_per_commitment_point=core.secrets.commitment_point(0),
        tlvs=ChannelReestablish.tlv_stream(next_funding={"next_funding_txid": s.funding_outpoint.txid, "retransmit_flags": 0}),
    )  # fmt: skip


def on_reestablish(core: ChannelCore, msg: ChannelReestablish, out: _Out) -> None:
    s = core.state
    d = s.dual
    assert isinstance(d, dualfund.DualFundSession) and s.funding_outpoint is not None
    if not s.awaiting_reestablish:
        raise RemoteFault("channel_reestablish without a reconnection", warning=True, keep_connection=True)
    s.awaiting_reestablish = False
    asked = msg.tlvs.get("next_funding")
    if asked is not None and asked.next_funding_txid != s.funding_outpoint.txid:
        raise RemoteFault("channel_reestablish names another funding transaction")
    if msg.next_commitment_number == 0:
        # the peer lost our commitment_signed: sign again (the same signature: RFC 6979)
        assert s.remote_commit is not None and s.remote is not None
        _, remote_spec = establish.initial_specs(core)
        remote = build(core.keys(), remote_spec, 0, s.remote.first_per_commitment_point, local=False)
        out.send(CommitmentSigned(channel_id=s.channel_id, signature=sign_remote(remote, core.secrets)[0], htlc_signature=[]))
    if d.signatures_sent and asked is not None and d.our_witnesses is not None:
        out.send(dualfund._session(core).our_signatures(list(d.our_witnesses)))


def resend_signatures(core: ChannelCore, msg: ChannelReestablish, out: _Out) -> None:
    """An open channel whose peer names its funding in ``next_funding``: it lacks our tx_signatures."""
    s = core.state
    d = s.dual
    asked = msg.tlvs.get("next_funding")
    if not isinstance(d, dualfund.DualFundSession) or asked is None or d.our_witnesses is None or s.funding_outpoint is None:
        return
    if getattr(s.splice, "outpoint", None) is not None and asked.next_funding_txid == s.splice.outpoint.txid:  # type: ignore[attr-defined]
        return  # a splice's: :mod:`.splice_sign`
    if asked.next_funding_txid == s.funding_outpoint.txid and d.signatures_sent:
        out.send(dualfund._session(core).our_signatures(list(d.our_witnesses)))
    elif asked.next_funding_txid != s.funding_outpoint.txid:  # BOLT 2: a version we forgot (a bump's attempt)
        out.send(TxAbort(channel_id=s.channel_id, data=b"next_funding names no funding of ours"))
