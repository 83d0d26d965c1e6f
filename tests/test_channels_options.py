"""``lnpmsg node``'s channel options reach the channel app, and peers feel them.

The options are parsed as ``lnpmsg node`` parses them (argparse, then
:func:`lnpmsg.cli.settings_from_args`); the resulting config and policy run
in the channel app of one of two nodes (in memory, one embedded regtest chain):
its minimum_depth holds channel_ready back, its upfront shutdown address is
where a cooperative close pays it, its feerate bounds refuse an open, and
--require-channel-type refuses an open_channel without channel_type (as
peers written before BOLT 2 made it mandatory send it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
from test_channels_app import FUNDING_SAT, Pair, chain, channels, only_channel, settled, wait_until
from test_config_file import parse_with

from lnpmsg.bitcoin.tx import Tx
from lnpmsg.channels.app import ChannelsApp
from lnpmsg.channels.options import channel_settings
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels import establish
from lnpmsg.channels.messages import OpenChannel
from lnpmsg.channels.state import ChannelCore, Phase
from lnpmsg.chain.address import address_for_script, script_for_address
from lnpmsg.cli import build_parser, settings_from_args
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.testing import MemoryNetwork
from lnpmsg.testing.nodes import running
from lnpmsg.wallet.app import ChainApp
from lnpmsg.wallet.calls import ChainAppError

#: a regtest P2WPKH address (any 20 bytes: the close only pays it)
UPFRONT = address_for_script(b"\x00\x14" + bytes(range(20)), "bcrt")


def _options(*argv: str) -> tuple[ChannelConfig, OpeningPolicy]:
    args = build_parser().parse_args(["node", *argv])
    return channel_settings(settings_from_args(args).channel_options, "bcrt")


def test_without_options_the_defaults_are_the_apps() -> None:
    assert _options() == (ChannelConfig(), OpeningPolicy())


def test_each_option_sets_its_field() -> None:
    config, policy = _options(
        "--channel-min-depth", "6", "--channel-to-self-delay", "200", "--channel-max-accepted-htlcs", "12",
        "--channel-max-htlc-in-flight-msat", "5000000", "--channel-htlc-minimum-msat", "1000",
        "--channel-dust-limit-sat", "600", "--channel-reserve-sat", "15000", "--channel-max-peer-to-self-delay", "1000",
        "--channel-max-peer-min-depth", "10", "--channel-min-feerate", "300", "--channel-max-feerate", "9000",
        "--channel-min-funding-sat", "50000", "--channel-upfront-shutdown-address", UPFRONT,
        "--channel-rbf-wait-blocks", "3",
    )  # fmt: skip
    assert (config.minimum_depth, config.to_self_delay, config.max_accepted_htlcs) == (6, 200, 12)
    assert (config.max_htlc_value_in_flight_msat, config.htlc_minimum_msat, config.dust_limit_sat) == (5_000_000, 1000, 600)
    assert config.channel_reserve_sat == 15000 and config.upfront_shutdown_script == script_for_address(UPFRONT, "bcrt")
    assert (policy.max_to_self_delay, policy.max_minimum_depth, policy.min_feerate_per_kw) == (1000, 10, 300)
    assert (policy.max_feerate_per_kw, policy.min_funding_sat, policy.rbf_wait_blocks) == (9000, 50000, 3)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--channel-max-accepted-htlcs", "484"], "between 1 and 483"),
        (["--channel-dust-limit-sat", "353"], "at least 354"),
        (["--channel-min-feerate", "5000", "--channel-max-feerate", "4000"], "above --channel-max-feerate"),
        (["--channel-min-depth", "0"], "channel-min-depth"),
        (["--channel-upfront-shutdown-address", address_for_script(b"\x00\x14" + bytes(20), "bc")], "upfront-shutdown-address"),
    ],
)
def test_bad_options_name_themselves(argv: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _options(*argv)


def test_require_channel_type_is_off_unless_given(tmp_path: Path) -> None:
    assert _options("--require-channel-type") == (ChannelConfig(), OpeningPolicy(require_channel_type=True))
    assert _options()[1].require_channel_type is False
    # in the config file, a switch like the others
    for text, required in (("require-channel-type = true\n", True), ("require-channel-type = false\n", False)):
        policy = channel_settings(settings_from_args(parse_with(tmp_path, text)).channel_options, "bcrt")[1]
        assert policy.require_channel_type is required


def test_a_negative_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["node", "--channel-min-depth", "-1"])


def _bob(pair: Pair, tmp: Path, *argv: str) -> Node:
    config, policy = _options(*argv)
    bob = Node(pair.keys["bob"], NodeConfig(listen=[], network="regtest"), transports={"mem": pair.network.transport()})
    bob.mount(ChainApp(tmp / "bob" / "wallet", source=pair.source))
    bob.mount(ChannelsApp(tmp / "bob" / "channels", config=config, policy=policy))
    return bob


@pytest.mark.trio
async def test_min_depth_and_upfront_shutdown_address_hold_end_to_end(tmp_path: Path) -> None:
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        bob = _bob(pair, tmp_path, "--channel-min-depth", "5", "--channel-upfront-shutdown-address", UPFRONT)
        async with running(alice, bob):
            await pair.fund_and_connect(alice, bob)
            await wait_until(lambda: bob.node_id in alice.peers, "connected")
            await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT, push_msat=100_000_000)
            remote = only_channel(alice).core.state.remote
            assert remote is not None and remote.upfront_shutdown_script == script_for_address(UPFRONT, "bcrt")
            assert only_channel(alice).core.state.minimum_depth == only_channel(bob).core.state.minimum_depth == 5
            await source.mine(4)
            await trio.sleep(1.0)  # room to (wrongly) act on 4 confirmations; under load this can only miss a bug
            for node in (alice, bob):  # 4 confirmations: not yet
                assert only_channel(node).phase is Phase.AWAIT_READY and not only_channel(node).core.state.ready_sent
            await source.mine(1)
            await wait_until(lambda: settled(alice) and settled(bob), "ready at Bob's depth")
            result = await channels(alice).closechannel(only_channel(alice).channel_id.hex())
            assert result["state"] == "closed"
            closing = Tx.parse(only_channel(alice).core.state.closing_tx)  # type: ignore[arg-type]
            paid = {o.script_pubkey: o.amount_sat for o in closing.outputs}
            assert paid[script_for_address(UPFRONT, "bcrt")] == 100_000  # Bob's side, to the address he committed to


@pytest.mark.trio
async def test_a_feerate_outside_the_peers_bounds_is_refused(tmp_path: Path) -> None:
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        bob = _bob(pair, tmp_path, "--channel-min-feerate", "90000")
        async with running(alice, bob):
            await pair.fund_and_connect(alice, bob)
            await wait_until(lambda: bob.node_id in alice.peers, "connected")
            with pytest.raises(ChainAppError, match="feerate"):
                await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            assert only_channel(bob).phase is Phase.FAILED


@pytest.mark.trio
@pytest.mark.parametrize("required", [True, False])
async def test_require_channel_type_refuses_an_open_channel_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      required: bool) -> None:  # fmt: skip
    """Alice opens as a peer written before BOLT 2 made channel_type mandatory does (lnprototest
    0.0.7's): her open_channel has no TLV. Bob started with --require-channel-type fails the channel;
    without it he takes the type both init features imply (anchors) and the channel opens."""
    open_message = establish.open_message

    def without_channel_type(core: ChannelCore, cmd: object) -> OpenChannel:
        msg = open_message(core, cmd)  # type: ignore[arg-type]
        assert "channel_type" in msg.tlvs  # (what lnpmsg sends)
        return dataclasses.replace(msg, tlvs=OpenChannel.tlv_stream())

    monkeypatch.setattr(establish, "open_message", without_channel_type)
    async with chain(tmp_path) as source:
        pair = Pair(source, tmp_path, MemoryNetwork())
        alice = pair.node("alice", True)
        bob = _bob(pair, tmp_path, *(["--require-channel-type"] if required else []))
        async with running(alice, bob):
            await pair.fund_and_connect(alice, bob)
            await wait_until(lambda: bob.node_id in alice.peers, "connected")
            if required:
                with pytest.raises(ChainAppError, match="without channel_type"):
                    await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
                assert only_channel(bob).phase is Phase.FAILED
                return
            await channels(alice).fundchannel(bob.node_id.hex(), FUNDING_SAT)
            state = only_channel(bob).core.state
            assert state.channel_type is None and state.anchors  # the type the init features imply
            assert only_channel(alice).core.state.anchors
