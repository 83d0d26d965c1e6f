"""Short channel id aliases and zero-conf channels in the channel core (sans-IO; BOLT 2, BOLT 9).

Two cores pumped against each other (:mod:`test_channels_pair`): each side's
alias travels in its ``channel_ready`` TLV (type 1, as the spec has it) and is
kept by the other, across a replay of the records; ``option_scid_alias`` and
``option_zeroconf`` channel types are negotiated and their rules enforced
(no alias-only announced channel, zero-conf only from a trusted funder, with
``minimum_depth`` 0, ready before any confirmation, the real id learned when
the funding confirms). Also the ``fundchannel`` option checks.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest

from test_channels_pair import CHAIN_HASH_REGTEST, ChannelPair

from lnpmsg.channels.errors import LocalMisuse
from lnpmsg.channels.inputs import AcceptCommand, ChannelFailed, ChannelReadyEvent, FundingDepth, OpenCommand, Received
from lnpmsg.channels.messages import AcceptChannel, ChannelReady, OpenChannel
from lnpmsg.channels.options import CHANNEL_TYPE_CHOICES, add_node_options, channel_settings, options_from_args, type_variations
from lnpmsg.channels.params import ChannelConfig, OpeningPolicy
from lnpmsg.channels.ready import (
    ALIAS_MIN_BLOCK,
    accepted_scids,
    alias_from_bytes,
    hint_scid,
    is_alias,
    routing_scid,
)
from lnpmsg.channels.records import decode_input, encode_input, restore
from lnpmsg.channels.state import Phase
from lnpmsg.rpc.params import ParamsError
from lnpmsg.wire import Error, Features, ShortChannelId

ALICE_ALIAS = alias_from_bytes(b"\x01" * 8)
BOB_ALIAS = alias_from_bytes(b"\x02" * 8)
REAL_SCID = (101 << 40) | (1 << 16) | 1
#: init features: static_remotekey, scid_alias and zeroconf (optional bits)
FEATURES = Features.from_bits([13, 47, 51]).value


class AliasPair(ChannelPair):
    """A pair whose commands carry aliases, channel_type variations and Bob's trust in Alice."""

    def __init__(self, *, type_bits: tuple[int, ...] = (), trusted: bool = False, announce: bool = False, **kwargs: object) -> None:
        super().__init__(extra_features=FEATURES, **kwargs)  # type: ignore[arg-type]
        self.type_bits, self.trusted, self.announce = type_bits, trusted, announce

    def open_command(self) -> OpenCommand:
        return replace(super().open_command(), type_bits=self.type_bits, local_alias=ALICE_ALIAS, channel_flags=int(self.announce))

    def pump(self) -> None:
        while self.wire:
            target, msg = self.wire.popleft()
            if target is self.bob and isinstance(msg, OpenChannel):
                self.feed(target, AcceptCommand(msg, CHAIN_HASH_REGTEST, self.features, self.features, self.bob_config,
                                                self.policy, BOB_ALIAS, self.trusted))  # fmt: skip
            else:
                self.feed(target, Received(msg))


def sent(side: object, kind: type) -> list[object]:
    return [m for o in side.outputs for m in o.messages if isinstance(m, kind)]  # type: ignore[attr-defined]


def test_an_alias_is_in_a_range_no_real_block_reaches() -> None:
    for seed in (b"\x00" * 8, b"\xff" * 8, bytes(range(8))):
        alias = alias_from_bytes(seed)
        assert is_alias(alias) and ShortChannelId.from_int(alias).block >= ALIAS_MIN_BLOCK
    assert not is_alias(REAL_SCID)
    assert alias_from_bytes(b"\x01" * 8) != alias_from_bytes(b"\x02" * 8)


def test_channel_ready_carries_each_sides_alias_in_tlv_type_1_and_each_keeps_the_peers() -> None:
    pair = AliasPair()
    pair.open()
    alice, bob = pair.alice.core.state, pair.bob.core.state
    assert (alice.local_alias, alice.remote_alias) == (ALICE_ALIAS, BOB_ALIAS)
    assert (bob.local_alias, bob.remote_alias) == (BOB_ALIAS, ALICE_ALIAS)
    (ready,) = sent(pair.alice, ChannelReady)
    # BOLT 2: channel_ready_tlvs type 1 (short_channel_id), 8 bytes: the last bytes of the message
    assert ready.encode().endswith(b"\x01\x08" + ALICE_ALIAS.to_bytes(8, "big"))  # type: ignore[attr-defined]
    # a plain channel: the real id and our alias both route; hints name the peer's alias
    assert accepted_scids(alice) == (ALICE_ALIAS, REAL_SCID)
    assert routing_scid(alice) == ALICE_ALIAS and hint_scid(alice) == BOB_ALIAS
    # a reconnection before any update retransmits channel_ready with the same alias
    pair.reconnect()
    assert sent(pair.bob, ChannelReady)[-1].tlvs["short_channel_id"].to_int() == BOB_ALIAS  # type: ignore[attr-defined]
    assert pair.alice.core.state.remote_alias == BOB_ALIAS


def test_a_replay_of_the_records_keeps_both_aliases() -> None:
    pair = AliasPair()
    pair.open()
    for side in (pair.alice, pair.bob):
        core = restore(side.core.secrets, side.records)
        assert (core.state.local_alias, core.state.remote_alias) == (side.core.state.local_alias, side.core.state.remote_alias)
        assert core.state == side.core.state


def test_records_written_before_aliases_still_decode() -> None:
    pair = AliasPair()
    command = replace(pair.open_command(), local_alias=0, type_bits=())
    raw = json.loads(encode_input(command, 5.0))
    for name in ("local_alias", "type_bits"):
        del raw["input"][name]  # as an older version wrote it
    item, _ = decode_input(json.dumps(raw).encode())
    assert item == command


def test_a_channel_without_the_peers_alias_routes_by_its_real_id() -> None:
    pair = ChannelPair()  # (neither command carries an alias: as channels made before aliases)
    pair.open()
    s = pair.alice.core.state
    assert (s.local_alias, s.remote_alias) == (0, 0)
    assert "short_channel_id" not in sent(pair.alice, ChannelReady)[0].tlvs  # type: ignore[attr-defined]
    assert routing_scid(s) == hint_scid(s) == REAL_SCID and accepted_scids(s) == (REAL_SCID,)


def test_an_scid_alias_channel_never_routes_by_its_real_id() -> None:
    pair = AliasPair(type_bits=(46,))
    pair.open()
    accept = sent(pair.bob, AcceptChannel)[0]
    assert Features.from_bytes(accept.tlvs["channel_type"]).has(46)  # type: ignore[attr-defined]
    for side, alias, peer_alias in ((pair.alice, ALICE_ALIAS, BOB_ALIAS), (pair.bob, BOB_ALIAS, ALICE_ALIAS)):
        s = side.core.state
        assert s.short_channel_id == REAL_SCID  # known, but never used for routing
        assert accepted_scids(s) == (alias,) and routing_scid(s) == alias and hint_scid(s) == peer_alias


def test_scid_alias_is_refused_on_an_announced_channel() -> None:
    pair = AliasPair(type_bits=(46,), announce=True)
    with pytest.raises(LocalMisuse, match="announced"):
        pair.feed(pair.alice, pair.open_command())
    # a funder that sends it anyway: the fundee fails the open
    pair = AliasPair(type_bits=(46,))
    pair.feed(pair.alice, pair.open_command())
    (target, msg) = pair.wire.popleft()
    assert isinstance(msg, OpenChannel)
    pair.wire.append((target, replace(msg, channel_flags=1)))
    pair.pump()
    errors = sent(pair.bob, Error)
    assert errors and b"option_scid_alias" in errors[0].data  # type: ignore[attr-defined]


def test_zeroconf_from_a_trusted_funder_is_ready_before_any_confirmation() -> None:
    pair = AliasPair(type_bits=(46, 50), trusted=True)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    assert sent(pair.bob, AcceptChannel)[0].minimum_depth == 0  # type: ignore[attr-defined]  # BOLT 2: MUST be 0
    pair.open_rest()
    for side, alias in ((pair.alice, ALICE_ALIAS), (pair.bob, BOB_ALIAS)):
        s = side.core.state
        assert side.core.phase is Phase.NORMAL and s.short_channel_id == 0
        (event,) = [e for e in side.events if isinstance(e, ChannelReadyEvent)]
        assert event.short_channel_id == alias
        assert routing_scid(s) == alias and accepted_scids(s) == (alias,)
    # HTLCs flow at 0 confirmations
    htlc_id, preimage = pair.add(pair.alice, 5_000_000)
    pair.commit(pair.alice)
    pair.fulfill(pair.bob, htlc_id, preimage)
    # the funding confirms: the real id is learned, the routing id stays the alias
    for side in (pair.alice, pair.bob):
        pair.feed(side, FundingDepth(1, REAL_SCID))
        assert side.core.state.short_channel_id == REAL_SCID and routing_scid(side.core.state) == side.core.state.local_alias
    assert len(sent(pair.alice, ChannelReady)) == 1  # not sent again at the confirmation


def test_zeroconf_without_scid_alias_routes_by_the_real_id_once_confirmed() -> None:
    pair = AliasPair(type_bits=(50,), trusted=True)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    assert pair.bob.core.phase is Phase.NORMAL
    pair.feed(pair.bob, FundingDepth(2, REAL_SCID))
    assert accepted_scids(pair.bob.core.state) == (BOB_ALIAS, REAL_SCID)


def test_zeroconf_from_a_peer_we_do_not_trust_is_refused() -> None:
    pair = AliasPair(type_bits=(46, 50), trusted=False)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    errors = sent(pair.bob, Error)
    assert errors and b"option_zeroconf" in errors[0].data  # type: ignore[attr-defined]
    assert not sent(pair.bob, AcceptChannel)
    assert any(isinstance(e, ChannelFailed) for e in pair.alice.events)


def bobs_accept(pair: AliasPair, *, trusted: bool) -> AcceptChannel:
    """Alice's open fed to Bob (who trusts her for zero-conf or not): his accept_channel, not delivered."""
    pair.feed(pair.alice, pair.open_command())
    (_, msg) = pair.wire.popleft()
    pair.feed(pair.bob, AcceptCommand(msg, CHAIN_HASH_REGTEST, pair.features, pair.features, pair.bob_config,  # type: ignore[arg-type]
                                      pair.policy, BOB_ALIAS, trusted))  # fmt: skip
    (_, accept) = pair.wire.popleft()
    return accept  # type: ignore[no-any-return]


def test_a_zeroconf_accept_with_a_minimum_depth_fails_the_funder() -> None:
    pair = AliasPair(type_bits=(46, 50), trusted=True)
    accept = bobs_accept(pair, trusted=True)
    pair.feed(pair.alice, Received(replace(accept, minimum_depth=3)))  # type: ignore[type-var]
    assert pair.alice.core.phase is Phase.FAILED and "minimum_depth" in (pair.alice.core.state.failure or "")


def test_a_fundee_that_asks_no_depth_lets_the_funder_be_ready_at_once() -> None:
    """BOLT 2: "the opener is free to send channel_ready at any time": an accept_channel with
    minimum_depth 0 (a peer that trusts us without a zero-conf type, as CLN's trusted peers) is
    followed by our channel_ready as soon as the first commitments are signed."""
    pair = AliasPair()
    accept = bobs_accept(pair, trusted=False)
    pair.feed(pair.alice, Received(replace(accept, minimum_depth=0)))  # type: ignore[type-var]
    pair.open_rest()
    assert len(sent(pair.alice, ChannelReady)) == 1
    # Bob (who really asked 3) still waits for his confirmations
    assert not sent(pair.bob, ChannelReady) and pair.bob.core.state.minimum_depth == 3


# ---------------------------------------------------------------- options


def test_fundchannel_type_variations_are_checked_against_the_peer() -> None:
    peer = Features(FEATURES)
    assert type_variations(peer, "anchors+scid_alias", zeroconf=False, announce=False) == ("anchors", (46,))
    assert type_variations(peer, "scid_alias", zeroconf=True, announce=False) == (None, (46, 50))
    assert type_variations(peer, None, zeroconf=True, announce=False) == (None, (50,))
    assert type_variations(peer, "static_remotekey", zeroconf=False, announce=True) == ("static_remotekey", ())
    with pytest.raises(ParamsError, match="private"):
        type_variations(peer, "scid_alias", zeroconf=False, announce=True)
    plain = Features.from_bits([13])
    with pytest.raises(ParamsError, match="46/47"):
        type_variations(plain, "scid_alias", zeroconf=False, announce=False)
    with pytest.raises(ParamsError, match="50/51"):
        type_variations(Features.from_bits([13, 51]), None, zeroconf=True, announce=False)  # (51 without 47: BOLT 9)


def test_the_command_line_offers_every_channel_type_the_app_takes() -> None:
    from lnpmsg.channels.commands import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), default_data_dir=__import__("pathlib").Path("."))
    args = parser.parse_args(["fundchannel", "02" + "11" * 32, "100000", "--channel-type", "anchors+scid_alias", "--zeroconf"])
    assert args.channel_type == "anchors+scid_alias" and args.zeroconf
    for choice in CHANNEL_TYPE_CHOICES:
        parser.parse_args(["fundchannel", "02" + "11" * 32, "100000", "--channel-type", choice])


def test_zeroconf_peers_come_from_the_node_options() -> None:
    peer = "02" + "ab" * 32
    _, policy = channel_settings({"zeroconf-peer": [peer]}, "bcrt")
    assert policy.zeroconf_peers == (bytes.fromhex(peer),)
    assert OpeningPolicy().zeroconf_peers == ()  # none by default: zero-conf is a trust decision
    with pytest.raises(ValueError, match="zeroconf-peer"):
        channel_settings({"zeroconf-peer": ["nothex"]}, "bcrt")
    assert channel_settings({"zeroconf-peer": peer}, "bcrt")[1].zeroconf_peers == (bytes.fromhex(peer),)  # (a config file's one line)
    parser = argparse.ArgumentParser()
    add_node_options(parser)
    args = parser.parse_args(["--zeroconf-peer", peer, "--zeroconf-peer", "03" + "cd" * 32])
    assert options_from_args(args) == {"zeroconf-peer": [peer, "03" + "cd" * 32]}
    assert "zeroconf-peer" not in options_from_args(parser.parse_args([]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--zeroconf-peer", "04" + "cd" * 32])


def test_route_hints_name_the_peers_alias_and_skip_an_alias_only_channel_without_one() -> None:
    from lnpmsg.channels.htlc_hook import ChannelInfo
    from lnpmsg.payments.htlcs import FeePolicy
    from lnpmsg.payments.views import route_hints

    policy = FeePolicy(1000, 100, 40)
    peer = bytes.fromhex("02" + "11" * 32)

    def info(hint: int, scids: tuple[int, ...], public: bool = False) -> ChannelInfo:
        return ChannelInfo(key="k", peer_id=peer, short_channel_id=ALICE_ALIAS, capacity_sat=100_000, spendable_msat=1,
                           receivable_msat=1_000_000, htlc_minimum_msat=1, usable=True, public=public, scids=scids, hint_scid=hint)  # fmt: skip

    ((hop,),) = route_hints([info(BOB_ALIAS, (ALICE_ALIAS, REAL_SCID))], policy)
    assert hop.short_channel_id == BOB_ALIAS  # the alias the peer gave us, not ours nor the real one
    assert route_hints([info(0, (ALICE_ALIAS,))], policy) == ()  # scid_alias, no peer alias yet: no hint at all
    public = [info(BOB_ALIAS, (ALICE_ALIAS,), public=True)]
    assert route_hints(public, policy, announced=lambda scid: True) == ()  # announced: the graph has it
    assert [h.short_channel_id for (h,) in route_hints(public, policy)] == [BOB_ALIAS]  # public, not announced yet


# ---------------------------------------------------------------- review of the BOLT 2 rules


def test_a_fundee_configured_with_no_depth_still_waits_for_a_confirmation_without_zeroconf() -> None:
    """BOLT 2: only a zero-conf channel_type (from a trusted funder) lets the fundee be ready before the
    funding confirms. A ``ChannelConfig(minimum_depth=0)`` (the command line refuses it, the API does
    not) must not make every funder trusted: the fundee asks 1 and sends channel_ready at 1 only."""
    pair = AliasPair(bob_config=ChannelConfig(minimum_depth=0))
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    assert sent(pair.bob, AcceptChannel)[0].minimum_depth == 1  # type: ignore[attr-defined]
    pair.open_rest()
    assert not sent(pair.bob, ChannelReady) and pair.bob.core.phase is Phase.AWAIT_READY
    pair.feed(pair.bob, FundingDepth(1, REAL_SCID))
    assert len(sent(pair.bob, ChannelReady)) == 1 and pair.bob.core.state.short_channel_id == REAL_SCID


def test_an_scid_alias_channel_restored_from_its_records_still_refuses_its_real_id() -> None:
    """A restart replays the records: the type (bit 46) and both aliases come back, so a forward naming
    the real id is still refused and hints still name the peer's alias (BOLT 2)."""
    pair = AliasPair(type_bits=(46,))
    pair.open()
    for side, alias, peer_alias in ((pair.alice, ALICE_ALIAS, BOB_ALIAS), (pair.bob, BOB_ALIAS, ALICE_ALIAS)):
        s = restore(side.core.secrets, side.records).state
        assert s.short_channel_id == REAL_SCID and accepted_scids(s) == (alias,)
        assert routing_scid(s) == alias and hint_scid(s) == peer_alias


def test_a_zeroconf_reconnection_resends_channel_ready_with_the_alias_until_the_first_update() -> None:
    """BOLT 2 channel_reestablish: next_commitment_number 1 on both sides: channel_ready again (with
    the alias: the peer may not have kept it); after a commitment update it is not retransmitted."""
    pair = AliasPair(type_bits=(46, 50), trusted=True)
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    sides = (pair.alice, pair.bob)
    before = [len(sent(side, ChannelReady)) for side in sides]
    pair.reconnect()  # the funding is still unconfirmed
    for side, alias, count in zip(sides, (ALICE_ALIAS, BOB_ALIAS), before, strict=True):
        again = sent(side, ChannelReady)
        assert len(again) == count + 1 and again[-1].tlvs["short_channel_id"].to_int() == alias  # type: ignore[attr-defined]
        assert side.core.phase is Phase.NORMAL and side.core.state.short_channel_id == 0
    assert (pair.alice.core.state.remote_alias, pair.bob.core.state.remote_alias) == (BOB_ALIAS, ALICE_ALIAS)
    htlc_id, preimage = pair.add(pair.alice, 2_000_000)
    pair.commit(pair.alice)
    pair.fulfill(pair.bob, htlc_id, preimage)
    counts = [len(sent(side, ChannelReady)) for side in sides]
    pair.reconnect()
    assert [len(sent(side, ChannelReady)) for side in sides] == counts
    # the funding confirms after all that: the real id is learned, no channel_ready again
    for side, count in zip(sides, counts, strict=True):
        pair.feed(side, FundingDepth(1, REAL_SCID))
        assert side.core.state.short_channel_id == REAL_SCID and len(sent(side, ChannelReady)) == count


def test_the_funder_keeps_an_early_channel_ready_and_is_ready_at_its_own_depth() -> None:
    """The fundee's channel_ready before the depth it asked (a peer that trusts us): the funder keeps
    its point and alias but sends its own, and uses the channel, only at minimum_depth (BOLT 2)."""
    pair = AliasPair()
    pair.feed(pair.alice, pair.open_command())
    pair.pump()
    pair.open_rest()
    early = pair.bob.core.channel_ready_message()
    pair.feed(pair.alice, Received(early))
    alice = pair.alice.core
    assert alice.phase is Phase.AWAIT_READY and alice.state.ready_received and alice.state.remote_alias == BOB_ALIAS
    assert not sent(pair.alice, ChannelReady)
    pair.feed(pair.alice, FundingDepth(2, REAL_SCID))
    assert alice.phase is Phase.AWAIT_READY and not sent(pair.alice, ChannelReady)  # 3 asked
    pair.feed(pair.alice, FundingDepth(3, REAL_SCID))
    assert alice.phase is Phase.NORMAL and len(sent(pair.alice, ChannelReady)) == 1
