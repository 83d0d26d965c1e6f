"""Any well-formed BOLT-2 message with random fields, in any phase of an open
channel, is either taken or answered with an error/warning: the core never
raises, never loses its state to a message it refused, and a refusal that
fails the channel always offers our latest commitment for broadcast."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_channels_pair import ChannelPair
from wire_strategies import messages

from lnpmsg.channels.inputs import ChannelFailed, Received
from lnpmsg.channels.messages import CHANNEL_MESSAGES
from lnpmsg.channels.state import Phase
from lnpmsg.wire import Error, WarningMessage

BASE = ChannelPair(push_msat=300_000_000)
BASE.open()
_htlc, _ = BASE.add(BASE.alice, 20_000_000)
BASE.commit(BASE.alice)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), cls=st.sampled_from(CHANNEL_MESSAGES), own_channel=st.booleans())
def test_random_messages_never_break_the_core(data: st.DataObject, cls: type, own_channel: bool) -> None:
    core = copy.copy(BASE.bob.core)
    core.state = copy.copy(BASE.bob.core.state)
    msg = data.draw(messages(cls))
    if own_channel and hasattr(msg, "channel_id"):
        msg = type(msg)(**{**{n: getattr(msg, n) for n, _ in cls.FIELDS}, "channel_id": core.state.channel_id,
                           **({"tlvs": msg.tlvs} if cls.TLVS is not None else {})})  # fmt: skip
    before = core.state
    out = core.receive(Received(msg), 5000.0)
    if core.phase is Phase.FAILED:
        assert any(isinstance(m, Error) for m in out.messages)
        (failed,) = [e for e in out.events if isinstance(e, ChannelFailed)]
        assert failed.commitment_tx is not None
        assert core.state.local_commit == before.local_commit
    elif any(isinstance(m, WarningMessage) for m in out.messages):
        assert core.state == before  # a warning changes nothing
