"""What the runner tells lnprototest about the node: its options (init
features) and that BOLT 2 steps need a channel app."""

from __future__ import annotations

import hashlib
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
        # channel_type in open_channel / accept_channel (option_channel_type)
        assert runner.has_option("supports_open_accept_channel_type") == "true"
        assert runner.get_node_privkey() == "01"
        assert runner.getblockheight() == 101
    finally:
        runner.stop()


def test_the_scripted_peer_announces_static_remotekey(runner: Any) -> None:
    # lnpmsg opens no legacy channels: lnprototest's scripts that build their init from
    # runner_features() announce option_static_remotekey (odd) unless they name a bit of it
    assert runner.runner_features() == bitfield(13)
    assert runner.runner_features(additional_features=[7]) == bitfield(7, 13)
    assert runner.runner_features(additional_features=[12]) == bitfield(12)
    assert runner.runner_features(additional_features=[13]) == bitfield(13)
    assert runner.runner_features(globals=True) == ""


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
                # announced, as lnprototest's scripts expect of the runner's fundchannel
                channel_flags=1,
            ),
        ]
    )


def test_fundchannel_sends_channel_type_to_a_peer_that_does_not_announce_it(runner: Any) -> None:
    runner.run(
        [
            Block(blockheight=102, txs=[tx_spendable]),
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            # option_static_remotekey only: no option_channel_type bit (BOLT 9 has it ASSUMED)
            Msg("init", globalfeatures="", features=bitfield(13)),
            FundChannel(amount=999_877),
            # BOLT 2: the sending node MUST set channel_type (static_remotekey: the peer offers no anchors)
            ExpectMsg("open_channel", funding_satoshis=999_877, tlvs="{channel_type={type=" + bitfield(12) + "}}"),
        ]
    )


def test_invoice_and_the_bolt2_steps_the_runner_does_not_drive(runner: Any) -> None:
    runner.start()
    try:
        assert "channels" in runner.apps
        # invoice: an invoice of the payments app for that preimage
        preimage = "07" * 32
        runner.invoice("invoice event", 12_345, preimage)
        (made,) = runner.call("payments.listinvoices")["invoices"]
        assert made["payment_hash"] == hashlib.sha256(bytes.fromhex(preimage)).hexdigest()
        assert made["amount_msat"] == 12_345
        # dual funding: lnpmsg opens channels with open_channel (v1) only
        with pytest.raises(NotImplementedError, match="accept_add_fund"):
            runner.accept_add_fund(None)
    finally:
        runner.stop()
