"""BOLT 7 against the node under test: the gossip query exchange
(query_channel_range, query_short_channel_ids, gossip_timestamp_filter)
and what the node does with gossip it cannot verify, scripted with
lnprototest's events."""

from __future__ import annotations

from typing import Any

from lnprototest import Connect, ExpectMsg, Msg, bitfield
from lnprototest.utils import BitcoinUtils

#: the regtest genesis hash, as BOLT 7's chain_hash
REGTEST = BitcoinUtils.blockchain_hash()
#: the mainnet genesis hash: a chain the node under test does not follow
MAINNET = "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000"
#: gossip_queries, optional
GOSSIP_QUERIES = bitfield(7)


def _open() -> list[Any]:
    return [
        Connect(connprivkey="02"),
        ExpectMsg("init"),
        Msg("init", globalfeatures="", features=GOSSIP_QUERIES),
    ]


def test_query_channel_range_of_an_empty_graph(runner: Any) -> None:
    runner.run(
        [
            *_open(),
            Msg("query_channel_range", chain_hash=REGTEST, first_blocknum=0, number_of_blocks=1_000_000),
            # BOLT 7: the replies cover the queried range, the last has sync_complete = 1
            ExpectMsg(
                "reply_channel_range",
                chain_hash=REGTEST,
                first_blocknum=0,
                number_of_blocks=1_000_000,
                sync_complete=1,
                encoded_short_ids="00",
            ),
        ]
    )


def test_query_short_channel_ids_ends_with_full_information(runner: Any) -> None:
    scid = (103 << 40 | 1 << 16 | 0).to_bytes(8, "big").hex()
    runner.run(
        [
            *_open(),
            # an id the node does not know: no gossip for it, then the end marker
            Msg("query_short_channel_ids", chain_hash=REGTEST, encoded_short_ids="00" + scid),
            ExpectMsg("reply_short_channel_ids_end", chain_hash=REGTEST, full_information=1),
        ]
    )


def test_a_timestamp_filter_is_taken_and_queries_still_answered(runner: Any) -> None:
    runner.run(
        [
            *_open(),
            Msg("gossip_timestamp_filter", chain_hash=REGTEST, first_timestamp=0, timestamp_range=4294967295),
            Msg("query_channel_range", chain_hash=REGTEST, first_blocknum=100, number_of_blocks=10),
            ExpectMsg("reply_channel_range", chain_hash=REGTEST, first_blocknum=100, number_of_blocks=10, sync_complete=1),
        ]
    )


def test_queries_for_another_chain(runner: Any) -> None:
    scid = (103 << 40 | 1 << 16 | 0).to_bytes(8, "big").hex()
    runner.run(
        [
            *_open(),
            # BOLT 7 (as amended): the final reply_channel_range sets sync_complete, whatever the chain;
            # the node knows no channel of a chain it does not follow
            Msg("query_channel_range", chain_hash=MAINNET, first_blocknum=0, number_of_blocks=10),
            ExpectMsg("reply_channel_range", chain_hash=MAINNET, sync_complete=1, encoded_short_ids="00"),
            # no up-to-date channel information for chain_hash: MUST set full_information to 0
            Msg("query_short_channel_ids", chain_hash=MAINNET, encoded_short_ids="00" + scid),
            ExpectMsg("reply_short_channel_ids_end", chain_hash=MAINNET, full_information=0),
        ]
    )
