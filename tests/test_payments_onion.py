"""A payment across three onion-only nodes A-B-C through the session's private Tor network
(real tor, 127.0.0.1 only): C's invoice carries the route hint B -> C for its private
channel, A knows its own channel to B; B forwards. All wallets on one embedded regtest chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from lnpmsg.bitcoin.hashes import sha256
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.node.node import Node
from lnpmsg.payments.app import PaymentsApp
from lnpmsg.testing.nodes import running
from lnpmsg.testing.tornet import PrivateTorNetwork
from test_channels_onion import TOR_TIMEOUT, onion_node
from test_payments_app import channels, payments, quiet, wait_until

pytestmark = pytest.mark.slow


def paying_onion_node(net: PrivateTorNetwork, source: EmbeddedChainSource, directory: Path) -> Node:
    node = onion_node(net, source, directory)
    node.mount(PaymentsApp(directory / "payments"))
    return node


async def test_a_payment_across_three_onion_only_nodes(private_tor_network: PrivateTorNetwork, tmp_path: Path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as source:
        await source.mine(101)
        a, b, c = (paying_onion_node(private_tor_network, source, tmp_path / x) for x in "abc")
        async with running(a, b, c):
            for funder in (a, b):
                chain: Any = funder.apps["chain"]
                await source.faucet(chain.wallet.new_address(), 3_000_000)
            await source.mine(1)
            for funder in (a, b):
                await funder.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
            with trio.fail_after(TOR_TIMEOUT * 2):
                assert (await a.connect(b.addresses[0])).transport_kind == "tor"
                assert (await b.connect(c.addresses[0])).transport_kind == "tor"
            await wait_until(lambda: a.node_id in b.peers and b.node_id in c.peers, "both links up")
            await channels(a).fundchannel(b.node_id.hex(), 1_000_000)
            await source.mine(1)
            await b.apps["chain"].wallet.sync()  # type: ignore[attr-defined]
            await channels(b).fundchannel(c.node_id.hex(), 1_000_000)
            await source.mine(2)
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)) and len(channels(b).htlcs.channels()) == 2, "channels ready")
            invoice = await payments(c).invoice(40_000_000, "tor", "through Tor")
            paid = await payments(a).pay(invoice["bolt11"])
            assert paid["status"] == "complete" and sha256(bytes.fromhex(paid["preimage"])).hex() == invoice["payment_hash"]
            assert [h["node_id"] for h in paid["routes"][0]] == [b.node_id.hex(), c.node_id.hex()] and paid["fee_msat"] > 0
            await wait_until(lambda: all(quiet(x) for x in (a, b, c)), "settled")
            (received,) = (await channels(c).listchannels())["channels"]
            assert received["to_local_msat"] == 40_000_000
            assert (await payments(c).listinvoices("tor"))["invoices"][0]["status"] == "paid"
