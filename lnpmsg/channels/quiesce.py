"""Channel quiescence (BOLT 2 "Channel Quiescence", ``option_quiesce``, bits 34/35), sans-IO.

``stfu`` ("SomeThing Fundamental is Underway") asks the peer to stop sending
updates until both commitments hold the same, settled, set of changes.
The rules, in the order the core applies them:

- we send ``stfu`` only in ``NORMAL``, connected, after ``channel_reestablish``,
  when the peer offers ``option_quiesce`` (:class:`Quiesce` carries that from
  the shell), never twice, and only once none of our updates is pending for
  either side (:func:`our_updates_pending`): a :class:`Quiesce` command marks
  the wish, and the stfu leaves in the first output after which our updates
  are settled (:func:`after`);
- from the wish on we propose no new HTLC, fee change or shutdown
  (:class:`~.errors.LocalMisuse`); our settles still go out until our stfu
  has left (they help the channel drain), after it (or after the peer's)
  they wait in ``resend_updates`` and go out after the next
  ``channel_reestablish`` (quiescence ends with the connection);
- the peer's ``stfu``: outside ``NORMAL``, a second one, one with its own
  updates still pending, or an answer (``initiator`` 0) to a stfu we never
  sent is a warning and a disconnection; otherwise we answer with
  ``initiator`` 0 as soon as our updates are settled;
- an update message or a ``shutdown`` from the peer after its ``stfu`` is a
  warning and a disconnection (updates it sent before it saw our stfu
  are taken as usual: they were in flight; a ``shutdown`` that crossed our
  stfu ends the connection too, and comes again after reestablishment; one
  before our stfu left cancels our wish to quiesce);
- both stfus exchanged: the channel is quiescent, :class:`Quiescent` is
  emitted, naming the initiator (both sent ``initiator`` 1: the funder, the
  sender of ``open_channel``);
- ``Disconnected`` or ``Reconnected``: quiescence is over.

Splicing (:mod:`.splice`) is the protocol built on it: a splice's end (its
``tx_signatures`` exchanged, a ``tx_abort``, a refused ``splice_init``) ends
quiescence too; otherwise only a disconnection does, and the shell disconnects
a channel still quiescent after :data:`QUIESCENCE_TIMEOUT` (BOLT 2 asks it when
HTLCs are pending).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import LocalMisuse, RemoteFault
from .inputs import AddHtlc, ChangeFee, CloseChannel, Disconnected, FailHtlc, FailMalformedHtlc, FulfillHtlc, Received, Reconnected
from .messages import Shutdown, Stfu, UpdateAddHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFee, UpdateFulfillHtlc

if TYPE_CHECKING:
    from .state import ChannelCore, ChannelState, _Out

__all__ = [
    "QUIESCENCE_TIMEOUT",
    "Quiesce",
    "QuiesceState",
    "Quiescent",
    "dispatch",
    "after",
    "is_quiescent",
    "local_initiator",
    "our_updates_pending",
    "quiescence_status",
    "their_updates_pending",
]

#: BOLT 2: after this many seconds of quiescence with HTLCs pending, disconnect
QUIESCENCE_TIMEOUT = 60.0

_UPDATE_MESSAGES = (UpdateAddHtlc, UpdateFulfillHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFee)
_SETTLE_COMMANDS = (FulfillHtlc, FailHtlc, FailMalformedHtlc)


@dataclass(frozen=True, slots=True)
class Quiesce:
    """Command: quiesce the channel (send ``stfu`` as its initiator once our updates are settled).

    ``peer_supports``: the peer's ``init`` offers ``option_quiesce`` (BOLT 2: no stfu otherwise).
    """

    peer_supports: bool


@dataclass(frozen=True, slots=True)
class Quiescent:
    """Event: both ``stfu`` were exchanged; ``initiator``: we are the initiator."""

    channel_id: bytes
    initiator: bool


@dataclass(frozen=True, slots=True)
class QuiesceState:
    """Where quiescence stands on this connection (``ChannelState.quiesce``; None: not quiescing).

    ``requested``: we asked for it; ``sent`` / ``received``: the ``initiator`` byte of the stfu
    we sent / received (None: not yet).
    """

    requested: bool = False
    sent: int | None = None
    received: int | None = None


def our_updates_pending(s: ChannelState) -> bool:
    """Whether an update we sent is not yet in both commitments (irrevocably): then no stfu.

    Settles waiting in ``resend_updates`` were never sent in this connection: not pending.
    """
    return bool(s.local_changes.all())


def their_updates_pending(s: ChannelState) -> bool:
    """Whether an update the peer sent is not yet in both commitments."""
    return bool(s.remote_changes.all())


def is_quiescent(s: ChannelState) -> bool:
    """Both stfus were exchanged on this connection."""
    q = s.quiesce
    return isinstance(q, QuiesceState) and q.sent is not None and q.received is not None


def local_initiator(s: ChannelState) -> bool | None:
    """Whether we are the initiator of the quiescence (None: not quiescent).

    BOLT 2: if both sent ``initiator`` 1, the funder (the sender of ``open_channel``) is.
    """
    q = s.quiesce
    if not is_quiescent(s):
        return None
    assert isinstance(q, QuiesceState)
    if q.sent and q.received:
        return s.funder
    return bool(q.sent)


def quiescence_status(s: ChannelState) -> str | None:
    """For ``listchannels``: ``requested``, ``stfu_sent``, ``stfu_received``, ``quiescent`` or None."""
    q = _quiescing(s)
    if q is None:
        return None
    if q.sent is not None and q.received is not None:
        return "quiescent"
    return "stfu_sent" if q.sent is not None else "stfu_received" if q.received is not None else "requested"


def _quiescing(s: ChannelState) -> QuiesceState | None:
    return s.quiesce if isinstance(s.quiesce, QuiesceState) else None


def dispatch(core: ChannelCore, item: Any, out: _Out) -> bool:
    """Quiescence's inputs, and its limits on the others: True when handled here."""
    s = core.state
    if isinstance(item, Quiesce):
        _on_command(core, item)
        return True
    msg = item.message if isinstance(item, Received) else None
    if isinstance(msg, Stfu):
        _on_stfu(core, msg, out)
        return True
    if isinstance(item, Disconnected | Reconnected):
        s.quiesce = None  # BOLT 2: upon disconnection the channel is no longer quiescent
        return False
    q = _quiescing(s)
    if q is None:
        return False
    if q.received is not None and isinstance(msg, (*_UPDATE_MESSAGES, Shutdown)):
        raise RemoteFault(f"{type(msg).__name__} after stfu", warning=True)
    if isinstance(msg, Shutdown):
        if q.sent is None:
            s.quiesce = None  # no stfu of ours went out: the wish yields to the close
            return False
        # It crossed our stfu: the connection goes (ending quiescence); BOLT 2 has the peer
        # send its shutdown again after channel_reestablish.
        raise RemoteFault("shutdown while we quiesce the channel", warning=True)
    if isinstance(item, AddHtlc | ChangeFee | CloseChannel):
        raise LocalMisuse("the channel is quiescing: no new update until the peer reconnects")
    if isinstance(item, _SETTLE_COMMANDS) and (q.sent is not None or q.received is not None):
        _defer_settle(core, item)
        return True
    return False


def after(core: ChannelCore, out: _Out) -> None:
    """After any input: send our stfu if it is wanted (asked, or owed to the peer) and allowed now."""
    from .state import Phase

    s = core.state
    q = _quiescing(s)
    if q is None or q.sent is not None or not (q.requested or q.received is not None):
        return
    if s.phase is not Phase.NORMAL or not s.connected or s.awaiting_reestablish or our_updates_pending(s):
        return
    initiator = 0 if q.received is not None else 1
    s.quiesce = replace(q, sent=initiator)
    out.send(Stfu(channel_id=s.channel_id, initiator=initiator))
    if q.received is not None:
        out.emit(Quiescent(s.channel_id, bool(local_initiator(s))))


def _usable(s: ChannelState) -> bool:
    from .state import Phase

    return s.phase is Phase.NORMAL and s.connected and not s.awaiting_reestablish


def _on_command(core: ChannelCore, cmd: Quiesce) -> None:
    s = core.state
    if not _usable(s):
        raise LocalMisuse(f"cannot quiesce a channel in phase {s.phase.value}{'' if s.connected else ', peer offline'}")
    if not cmd.peer_supports:
        raise LocalMisuse("the peer does not offer option_quiesce (feature bit 34/35)")
    q = _quiescing(s)
    if q is not None:
        mine = q.requested or q.sent is not None
        raise LocalMisuse("the channel is already quiescing" if mine else "the peer is quiescing the channel already")
    s.quiesce = QuiesceState(requested=True)


def _on_stfu(core: ChannelCore, msg: Stfu, out: _Out) -> None:
    s = core.state
    if not _usable(s):
        raise RemoteFault(f"stfu in phase {s.phase.value}", warning=True)
    q = _quiescing(s) or QuiesceState()
    if q.received is not None:
        raise RemoteFault("stfu sent twice", warning=True)
    if their_updates_pending(s):
        raise RemoteFault("stfu while its own updates are pending", warning=True)
    if msg.initiator == 0 and q.sent is None:
        raise RemoteFault("stfu answering (initiator 0) a stfu we did not send", warning=True)
    s.quiesce = replace(q, received=1 if msg.initiator else 0)
    if q.sent is not None:
        out.emit(Quiescent(s.channel_id, bool(local_initiator(s))))


def _defer_settle(core: ChannelCore, cmd: Any) -> None:
    """A settle while quiescing: checked as ever, sent after the next channel_reestablish."""
    from . import normal
    from .state import _Out as Scratch

    s = core.state
    if any(getattr(u, "id", None) == cmd.htlc_id for u in s.resend_updates):
        raise LocalMisuse(f"HTLC {cmd.htlc_id} is already being settled")
    scratch = Scratch()
    normal.HANDLERS[type(cmd)](core, cmd, scratch)
    (update,) = scratch.messages
    s.local_changes = replace(s.local_changes, proposed=s.local_changes.proposed[:-1])
    s.resend_updates += (update,)
