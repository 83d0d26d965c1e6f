"""What the runner tells lnprototest about the node: its options (init
features) and that BOLT 2 steps need a channel app."""

from __future__ import annotations

from typing import Any

import pytest
from lnprototest import Connect, ExpectMsg, FundChannel, Msg


def test_options_are_the_features_the_node_announces(runner: Any) -> None:
    runner.start()
    try:
        # lnpmsg's gossip app offers gossip_queries (optional); nothing asks for anchor_outputs
        assert runner.has_option("gossip_queries") == "odd"
        assert runner.has_option("option_anchor_outputs") is None
        assert runner.has_option("no_such_option") is None
        assert runner.get_node_privkey() == "01"
        assert runner.getblockheight() == 101
    finally:
        runner.stop()


def test_bolt2_steps_need_the_channel_app(runner: Any) -> None:
    with pytest.raises(NotImplementedError, match="channel app"):
        runner.run(
            [
                Connect(connprivkey="02"),
                ExpectMsg("init"),
                Msg("init", globalfeatures="", features=""),
                FundChannel(amount=999_877),
            ]
        )
