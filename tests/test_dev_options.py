"""The developer options (``--dev-*``) and the raw chain control calls that
conformance suites such as lnprototest drive a node with."""

from __future__ import annotations

import logging

import coincurve
import pytest
import trio

from lnpmsg.bitcoin.script import p2wpkh
from lnpmsg.chain.address import address_for_script
from lnpmsg.chain.embedded import EmbeddedChainSource
from lnpmsg.channels.dev import DevOptions, format_channel_secrets, parse_channel_secrets
from lnpmsg.channels.errors import ChannelError
from lnpmsg.channels.params import ChannelConfig
from lnpmsg.cli import main
from lnpmsg.gossip.app import GossipConfig
from lnpmsg.gossip.commands import FAST_FLUSH_INTERVAL, node_gossip_app
from lnpmsg.gossip.public.app import AnnounceConfig
from lnpmsg.node.identity import NodeKey
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.rpc.params import ParamsError
from lnpmsg.runtime import NodeSettings, build_node
from lnpmsg.wallet.app import ChainApp, ChainAppError

# what lnprototest's Core Lightning runner passes (secrets 0x10..0x14, seed 0xFF...)
CLN_SECRETS = "/".join([f"{i:064x}" for i in range(0x10, 0x15)] + ["FF" * 32])


def test_channel_secrets_in_core_lightnings_format() -> None:
    secrets = parse_channel_secrets(CLN_SECRETS)
    assert secrets.funding_privkey == (0x10).to_bytes(32, "big")
    assert secrets.htlc_basepoint_secret == (0x14).to_bytes(32, "big")
    assert secrets.shachain_seed == b"\xff" * 32
    # the points a suite expects in open_channel/accept_channel
    points = secrets.basepoints()
    assert points.payment_basepoint == coincurve.PrivateKey((0x12).to_bytes(32, "big")).public_key.format()
    assert format_channel_secrets(secrets) == CLN_SECRETS.lower()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("/".join(["11" * 32] * 5), "6 hex values"),
        ("/".join(["zz" * 32] + ["11" * 32] * 5), "funding key is not hex"),
        ("/".join(["11" * 32] * 3 + ["11" * 31] + ["11" * 32] * 2), "delayed-payment basepoint secret must be 32 bytes"),
        ("/".join(["00" * 32] + ["11" * 32] * 5), "funding key is not a valid secret key"),
    ],
)
def test_bad_channel_secrets_name_the_bad_part(text: str, error: str) -> None:
    with pytest.raises(ChannelError, match=error):
        parse_channel_secrets(text)


def test_dev_options_as_the_channel_app_consumes_them() -> None:
    forced = parse_channel_secrets(CLN_SECRETS)
    own = parse_channel_secrets("/".join(["22" * 32] * 6))
    assert DevOptions().channel_secrets_or(own) is own
    assert DevOptions(channel_secrets=forced).channel_secrets_or(own) is forced
    config = ChannelConfig(minimum_depth=6)
    assert DevOptions().channel_config(config) is config
    assert DevOptions(funding_confirms=1).channel_config(config).minimum_depth == 1
    assert not DevOptions().active and DevOptions(fast_gossip=True).active and DevOptions(update_interval=0).active
    with pytest.raises(ChannelError, match="funding confirms"):
        DevOptions(funding_confirms=0)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--dev-force-channel-secrets", "11/22"], "bad --dev-force-channel-secrets: channel secrets take 6"),
        (["--dev-import-privkey", "11" * 32], "add --chain regtest"),
        (["--dev-import-privkey", "11" * 31, "--chain", "regtest"], "32 bytes"),
        (["--dev-funding-confirms", "0"], "funding confirms must be 1..1008"),
        (["--dev-update-interval", "-1"], "update interval must be 0..86400"),
    ],
)
def test_bad_dev_options_stop_the_node_with_a_message(tmp_path, capsys, argv: list[str], error: str) -> None:
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        code = main(["node", "--data-dir", str(tmp_path), "--no-listen", "--no-control", "--no-gossip", *argv])
    finally:
        # the CLI logs to the captured stderr: leave the root logger as it was
        root.handlers[:] = handlers
    assert code == 2
    assert error in capsys.readouterr().err


def test_fast_gossip_shortens_the_flush(tmp_path) -> None:
    fast = node_gossip_app(tmp_path / "a", "regtest", fast=True)
    normal = node_gossip_app(tmp_path / "b", "regtest")
    try:
        assert fast.config.flush_interval == FAST_FLUSH_INTERVAL < normal.config.flush_interval == GossipConfig().flush_interval
        assert fast.config.prune_interval < normal.config.prune_interval
    finally:
        fast.store.close()
        normal.store.close()


async def test_raw_chain_calls_and_an_imported_key(tmp_path) -> None:
    secret = (0x10).to_bytes(32, "big")
    imported = address_for_script(p2wpkh(coincurve.PrivateKey(secret).public_key.format()), "bcrt")
    node = Node(NodeKey.generate(), NodeConfig(listen=[], network="regtest"))
    app = node.mount(ChainApp(tmp_path / "wallet", chain_dir=tmp_path / "chain", import_privkeys=[secret]))
    calls = app.control_methods
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        # a block built by another chain on the same genesis
        async with EmbeddedChainSource.open(tmp_path / "other") as other:
            (block_hash,) = await other.mine(1)
            block = await other.block(block_hash)
        answer = await calls["submitblock"](block.hex())
        assert answer["result"] is None and answer["height"] == 1 and answer["tip"] == block_hash[::-1].hex()
        assert (await calls["submitblock"](block.hex()))["result"] == "duplicate"
        assert await calls["getblockhash"](1) == {"hash": answer["tip"]}
        with pytest.raises(ParamsError, match="Block decode failed"):
            await calls["submitblock"]("00ff")
        assert await calls["invalidateblock"](answer["tip"]) == {"height": 0, "tip": (await app.source.tip()).hash_hex}

        # the wallet sees and spends coins of the imported key
        await app.mine(101)
        await app.faucet(2_000_000, imported)
        funds = await app.listfunds()
        assert [(o["amount_sat"], o["key_path"]) for o in funds["outputs"]] == [(2_000_000, "imported/0")]
        funding = await app.wallet.fund_output(p2wpkh(coincurve.PrivateKey((0x11).to_bytes(32, "big")).public_key.format()), 1_000_000, feerate_per_kw=1_000)
        raw = funding.tx.serialize().hex()
        assert await calls["getrawmempool"]() == {"txids": []}
        assert await calls["sendrawtransaction"](raw) == {"txid": funding.tx.txid_hex}
        assert (await calls["getrawmempool"]())["txids"] == [funding.tx.txid_hex]
        verbose = await calls["getrawmempool"](verbose=True)
        assert verbose["entries"][funding.tx.txid_hex]["vsize"] == funding.tx.vsize
        await app.mine(1)
        assert await calls["getrawmempool"]() == {"txids": []}
        with pytest.raises(ChainAppError) as exc:
            await calls["sendrawtransaction"](raw)
        assert exc.value.details == {"error": "RpcError", "code": -27}
        node.stop()


async def test_raw_calls_need_the_embedded_chain(tmp_path) -> None:
    async with EmbeddedChainSource.open(tmp_path / "chain") as chain:
        # a source the app does not own is fine; a non-embedded one (bitcoind) is refused
        app = ChainApp(tmp_path / "wallet", source=chain)
        assert (await app.control_methods["getrawmempool"]()) == {"txids": []}
        app._source = object()  # type: ignore[assignment]  # stands for a BitcoindSource
        with pytest.raises(ChainAppError, match="embedded chain"):
            await app.control_methods["getrawmempool"]()


def test_the_channel_app_takes_the_forced_secrets_and_funding_depth(tmp_path) -> None:
    from lnpmsg.channels.app import ChannelsApp
    from lnpmsg.channels.manager import ChannelManager

    forced = parse_channel_secrets(CLN_SECRETS)
    dev = DevOptions(channel_secrets=forced, funding_confirms=3)
    assert ChannelsApp(tmp_path / "a", dev=dev).config.minimum_depth == 3
    assert ChannelsApp(tmp_path / "b").config.minimum_depth == ChannelConfig().minimum_depth

    def ignore(*args: object) -> None:
        return None

    peer = coincurve.PrivateKey((0x02).to_bytes(32, "big")).public_key.format()
    managed = ChannelManager(tmp_path / "forced", send=ignore, on_events=ignore, dev=dev)  # type: ignore[arg-type]
    own = ChannelManager(tmp_path / "own", send=ignore, on_events=ignore)  # type: ignore[arg-type]
    try:
        # every channel gets the forced secrets (a suite scripts the peer knowing them) ...
        assert managed.new_channel(peer).core.secrets == forced
        assert managed.new_channel(peer).core.secrets == forced
        # ... and without the option each channel has its own
        first, second = own.new_channel(peer).core.secrets, own.new_channel(peer).core.secrets
        assert first != forced and first != second
    finally:
        for manager in (managed, own):
            for channel in manager.channels.values():
                channel.log.close()


def test_the_update_interval_is_the_announce_apps_rate_limit(tmp_path) -> None:
    for name, dev, limit in (("default", DevOptions(), AnnounceConfig().min_interval), ("dev", DevOptions(update_interval=1.0), 1.0)):
        built = build_node(NodeSettings(data_dir=tmp_path / name, listen=["127.0.0.1:0"], chain="regtest", dev=dev))
        assert built.app("announce").config.min_interval == limit
    assert AnnounceConfig().min_interval > 1.0
