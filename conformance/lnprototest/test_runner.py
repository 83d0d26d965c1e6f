"""What the runner tells lnprototest about the node: its options (init
features) and that BOLT 2 steps need a channel app."""

from __future__ import annotations

from typing import Any

import pytest
from lnprototest import (
    Block,
    Connect,
    ExpectMsg,
    FundChannel,
    Msg,
    bitfield,
    remote_funding_pubkey,
    remote_payment_basepoint,
    remote_per_commitment_point,
    remote_revocation_basepoint,
)
from lnprototest.utils import tx_spendable


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


def test_fundchannel_opens_a_channel_to_the_scripted_peer(runner: Any) -> None:
    runner.run(
        [
            # the funds: tx_spendable pays the keys the node's wallet imported
            Block(blockheight=102, txs=[tx_spendable]),
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            # static_remotekey and channel_type: what lnpmsg's channels need of a peer
            Msg("init", globalfeatures="", features=bitfield(12, 45)),
            FundChannel(amount=999_877),
            # the node (funded from lnprototest's keys) asks the peer for the channel, with our keys
            ExpectMsg(
                "open_channel",
                funding_satoshis=999_877,
                funding_pubkey=remote_funding_pubkey(),
                revocation_basepoint=remote_revocation_basepoint(),
                payment_basepoint=remote_payment_basepoint(),
                first_per_commitment_point=remote_per_commitment_point(0),
            ),
        ]
    )


def test_bolt2_steps_the_runner_does_not_drive_say_so(runner: Any) -> None:
    runner.start()
    try:
        assert "channels" in runner.apps
        with pytest.raises(NotImplementedError, match="addhtlc"):
            runner.addhtlc(None, None, 1000, "00" * 32)
    finally:
        runner.stop()
