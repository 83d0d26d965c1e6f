"""Disconnection and ``channel_reestablish`` (BOLT 2 "Message Retransmission").

On disconnection both sides forget the updates no ``commitment_signed``
carried yet (ours are reported as :class:`~.inputs.HtlcDropped`); a channel
still opening (before ``funding_signed``) is forgotten. On reconnection we
send ``channel_reestablish``; nothing else is sent or accepted until the
peer's arrives. Then, from the peer's numbers:

- ``channel_ready`` again if neither side has a commitment past the first;
- our last ``commitment_signed`` (and the updates it signed) again if the
  peer did not get it; our last ``revoke_and_ack`` again if the peer did not
  get it; both in the order they were first sent;
- data loss protection: the peer's ``your_last_per_commitment_secret`` must
  be our secret for the commitment it says it revoked last. When the peer's
  numbers are ahead of ours and that secret proves it, *we* lost state: we
  emit :class:`~.inputs.WeAreBehind`, never broadcast our commitment, and
  ask the peer (with an ``error``) to close with its own.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from lnpmsg.wire import Error

from . import splice_batch
from .commitments import build, sign_remote
from .errors import LocalMisuse, RemoteFault, ShachainError
from .inputs import (
    AddHtlc,
    ChangeFee,
    ChannelFailed,
    CloseChannel,
    Disconnected,
    FailHtlc,
    FailMalformedHtlc,
    FulfillHtlc,
    HtlcDropped,
    Input,
    Received,
    Reconnected,
    SignCommitment,
    WeAreBehind,
)
from .messages import (
    ChannelReestablish,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
    UpdateFulfillHtlc,
)
from .shachain import FIRST_INDEX, ShachainStore

if TYPE_CHECKING:
    from .state import ChannelCore, _Out

__all__ = ["dispatch", "reestablish_message", "settling"]

_SENDING_COMMANDS = (AddHtlc, FulfillHtlc, FailHtlc, FailMalformedHtlc, SignCommitment, ChangeFee, CloseChannel)
_ZERO_SECRET = bytes(32)


def settling(core: ChannelCore) -> bool:
    """The reconnection's exchange is not settled yet: the channel has not taken the reconnection or
    the peer's ``channel_reestablish``, or a funding whose signatures are being exchanged (an open's,
    a bump's attempt, a splice: what our ``next_funding`` names) waits for the peer's answer, its
    ``tx_signatures`` or its ``tx_abort`` (a splice answered so once waits no more: the peer forgot
    it). A command that starts a new funding negotiation waits for that answer: one that crossed it
    would be ended by it."""
    from .dualfund import DualFundSession
    from .dualfund_sign import peer_may_have_signed
    from .splice import SpliceSession
    from .splice_sign import kept
    from .state import Phase

    s = core.state
    if not s.connected or s.awaiting_reestablish:
        return True
    d = s.dual
    if s.phase is Phase.DUAL_SIGNING and isinstance(d, DualFundSession) and (d.signatures_sent or peer_may_have_signed(core)):
        return True
    return isinstance(s.splice, SpliceSession) and not s.splice.signed and not s.splice.peer_forgot and kept(core)


def _established(core: ChannelCore) -> bool:
    from .state import Phase

    return core.state.phase in (Phase.AWAIT_READY, Phase.NORMAL, Phase.SHUTDOWN, Phase.NEGOTIATING)


def dispatch(core: ChannelCore, item: Input, out: _Out) -> bool:
    """Handle connection changes and channel_reestablish; guard everything else while reconnecting."""
    s = core.state
    if isinstance(item, Disconnected):
        _on_disconnected(core, out)
        return True
    if isinstance(item, Reconnected):
        if s.connected:
            raise LocalMisuse("already connected")
        if not _established(core):
            raise LocalMisuse("the channel is not established")
        s.connected = True
        s.awaiting_reestablish = True
        out.send(reestablish_message(core))
        return True
    if isinstance(item, Received) and isinstance(item.message, ChannelReestablish):
        if not s.awaiting_reestablish:
            raise RemoteFault("channel_reestablish without a reconnection", warning=True, keep_connection=True)
        from .dualfund_sign import resend_signatures

        from .splice_sign import on_reestablish as splice_reestablished

        resend_signatures(core, item.message, out)  # a v2 peer still waiting for our tx_signatures
        _on_reestablish(core, item.message, out)
        if not s.awaiting_reestablish:
            splice_reestablished(core, item.message, out)  # a splice's signatures or lock
        return True
    if s.awaiting_reestablish or not s.connected:
        if isinstance(item, Received):
            raise RemoteFault(f"{type(item.message).__name__} before channel_reestablish", warning=True, keep_connection=True)
        if isinstance(item, _SENDING_COMMANDS):
            raise LocalMisuse("the peer is not connected (or not reestablished yet)")
    return False


def _on_disconnected(core: ChannelCore, out: _Out) -> None:
    from .state import Phase

    s = core.state
    if not s.connected:
        return
    if not _established(core):
        # Nothing is signed yet (or only by us): the channel never existed.
        s.phase = Phase.CLOSED
        s.failure = "disconnected while opening"
        out.emit(ChannelFailed("disconnected while opening", None, by_peer=False))
        return
    ours = [u for u in s.local_changes.proposed if isinstance(u, UpdateAddHtlc)]
    theirs = [u for u in s.remote_changes.proposed if isinstance(u, UpdateAddHtlc)]
    for add in ours:
        out.emit(HtlcDropped(add.id))
    # A preimage or a failure we gave must not be lost with the connection: they go out again.
    s.resend_updates += tuple(u for u in s.local_changes.proposed if not isinstance(u, UpdateAddHtlc))
    s.local_next_htlc_id -= len(ours)
    s.remote_next_htlc_id -= len(theirs)
    s.local_changes = replace(s.local_changes, proposed=())
    s.remote_changes = replace(s.remote_changes, proposed=())
    s.connected = False
    s.awaiting_reestablish = False


def reestablish_message(core: ChannelCore) -> ChannelReestablish:
    """Our channel_reestablish: where our commitments stand, and the peer's last secret."""
    s = core.state
    assert s.local_commit is not None and s.remote_commit is not None
    secret = _ZERO_SECRET
    if s.remote_commit.number > 0:
        secret = ShachainStore.restore(list(s.remote_secrets)).lookup(FIRST_INDEX - (s.remote_commit.number - 1))
    from .splice_sign import reestablish_tlvs

    return ChannelReestablish(
        channel_id=s.channel_id,
        next_commitment_number=s.local_commit.number + 1,
        next_revocation_number=s.remote_commit.number,
        your_last_per_commitment_secret=secret,
        my_current_per_commitment_point=core.secrets.commitment_point(s.local_commit.number),
        tlvs=ChannelReestablish.tlv_stream(reestablish_tlvs(core)),
    )


def _we_are_behind(core: ChannelCore, out: _Out, msg: ChannelReestablish) -> None:
    from .state import Phase

    s = core.state
    s.behind = True
    s.remote_behind_number = max(msg.next_commitment_number - 1, 0)
    s.remote_behind_point = msg.my_current_per_commitment_point
    s.phase = Phase.FAILED
    s.failure = "the peer proved we lost channel state"
    out.emit(WeAreBehind(s.channel_id))
    out.send(Error(channel_id=s.channel_id, data=b"we lost channel state: please close with your commitment"))
    out.emit(ChannelFailed(s.failure, None, by_peer=False))


def _on_reestablish(core: ChannelCore, msg: ChannelReestablish, out: _Out) -> None:
    s = core.state
    assert s.local_commit is not None and s.remote_commit is not None
    if msg.channel_id != s.channel_id:
        raise RemoteFault("channel_reestablish for another channel")
    local_number = s.local_commit.number
    # Data loss protection: the secret the peer holds of ours must be the one it says.
    if msg.next_revocation_number > 0:
        try:
            expected = core.secrets.commitment_secret(msg.next_revocation_number - 1)
        except ShachainError:
            raise RemoteFault("next_revocation_number out of range") from None
        proves = msg.your_last_per_commitment_secret == expected
    else:
        proves = msg.your_last_per_commitment_secret == _ZERO_SECRET
    if msg.next_revocation_number > local_number:
        if proves:
            _we_are_behind(core, out, msg)
            return
        raise RemoteFault("next_revocation_number is ahead of us without proof")
    if not proves:
        raise RemoteFault("your_last_per_commitment_secret does not match")
    last_sent = s.remote_next_commit.number if s.remote_next_commit is not None else s.remote_commit.number
    resend_commit = s.remote_next_commit is not None and msg.next_commitment_number == s.remote_next_commit.number
    if not resend_commit and msg.next_commitment_number != last_sent + 1:
        raise RemoteFault(f"next_commitment_number {msg.next_commitment_number}, expected {last_sent + 1}")
    if msg.next_revocation_number + 1 == local_number:
        resend_revoke = True
    elif msg.next_revocation_number == local_number:
        resend_revoke = False
    else:
        raise RemoteFault(f"next_revocation_number {msg.next_revocation_number} is behind ours ({local_number})")
    s.awaiting_reestablish = False
    spliced = s.splices or s.splice is not None or "next_funding" in msg.tlvs  # BOLT 2: then no channel_ready again
    if s.ready_sent and msg.next_commitment_number == 1 and local_number == 0 and not spliced:
        out.send(core.channel_ready_message())
    from . import close, normal

    steps = []
    if resend_revoke:
        steps.append(lambda: out.send(normal.revoke_and_ack_message(core)))
    if resend_commit:
        steps.append(lambda: _resend_commitment(core, out))
    if not s.last_sent_was_commit:
        steps.reverse()  # the commitment_signed went first, then the revocation: keep that order
    for step in steps:
        step()
    _propose_again(core, out)
    close.on_reestablished(core, out)


def _propose_again(core: ChannelCore, out: _Out) -> None:
    """Our settles (and fee change) that the disconnection took back, proposed again where still valid."""
    from . import normal

    s = core.state
    pending, s.resend_updates = s.resend_updates, ()
    for update in pending:
        if isinstance(update, UpdateFee):
            command: object = ChangeFee(update.feerate_per_kw)
        elif isinstance(update, UpdateFulfillHtlc):
            command = FulfillHtlc(update.id, update.payment_preimage)
        elif isinstance(update, UpdateFailHtlc):
            command = FailHtlc(update.id, update.reason)
        elif isinstance(update, UpdateFailMalformedHtlc):
            command = FailMalformedHtlc(update.id, update.sha256_of_onion, update.failure_code)
        else:
            continue
        try:
            normal.HANDLERS[type(command)](core, command, out)
        except LocalMisuse:
            continue  # settled meanwhile (e.g. it reached a commitment after all)


def _resend_commitment(core: ChannelCore, out: _Out) -> None:
    """Our updates of the last commitment_signed, then that commitment_signed (signatures are deterministic)."""
    from . import normal

    s = core.state
    pending = s.remote_next_commit
    assert pending is not None
    for update in s.local_changes.signed:
        out.send(update)
    commitment = build(core.keys(), pending.spec, pending.number, pending.point, local=False)
    signature, htlc_sigs = sign_remote(commitment, core.secrets)
    main = normal.commitment_signed_message(core, signature, htlc_sigs)
    splice_batch.send_commitment(core, main, pending.spec, pending.number, pending.point, out)  # (a batch while a splice is pending)
