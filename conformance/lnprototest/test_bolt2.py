"""BOLT 2 against the node under test, scripted with lnprototest's events: the
scripted peer opens a static_remotekey channel (``channel_type``), both sides
exchange HTLCs and commitments whose signatures lnprototest's own BOLT 3
model checks, the channel is reestablished after a reconnection, and
``shutdown`` is answered (or warned about). One script per behaviour: each
starts a node of its own."""

from __future__ import annotations

from typing import Any

from lnprototest import (
    AddHtlc,
    Block,
    Commit,
    Connect,
    CreateFunding,
    Disconnect,
    Event,
    ExpectDisconnect,
    ExpectError,
    ExpectMsg,
    HTLC,
    KeySet,
    MustNotMsg,
    Msg,
    Side,
    UpdateCommit,
    bitfield,
    remote_delayed_payment_basepoint,
    remote_funding_privkey,
    remote_funding_pubkey,
    remote_htlc_basepoint,
    remote_payment_basepoint,
    remote_per_commitment_point,
    remote_per_commitment_secret,
    remote_revocation_basepoint,
)
from lnprototest.stash import (
    channel_id,
    commitsig_to_recv,
    commitsig_to_send,
    funding,
    funding_tx,
    funding_txid,
    htlc_sigs_to_recv,
    htlc_sigs_to_send,
    rcvd,
    sent,
)
from lnprototest.utils import BitcoinUtils, funding_amount_for_utxo, pubkey_of, tx_spendable, utxo

#: the scripted peer's keys: its funding key, basepoint secrets and shachain seed
PEER_FUNDING_PRIVKEY = "30"
PEER_KEYS = KeySet(
    revocation_base_secret="31",
    payment_base_secret="32",
    delayed_payment_base_secret="33",
    htlc_base_secret="34",
    shachain_seed="35" * 32,
)
#: what the peer announces: option_static_remotekey and option_channel_type (optional bits)
PEER_FEATURES = bitfield(13, 45)
#: the channel's type: static_remotekey alone (what lnprototest's BOLT 3 model builds)
STATIC_REMOTEKEY_TYPE = "{channel_type={type=" + bitfield(12) + "}}"
#: lnprototest's utxo 0 (in tx_spendable), less its fee: the peer's funding
FUNDING_SAT = funding_amount_for_utxo(0)
#: the feerate of the commitments (the peer opens: it chooses)
FEERATE = 253
#: the peer's dust limit
PEER_DUST_SAT = 546
#: 1366 zero bytes: the onion of the peer's HTLCs (the node may read it after the commitments)
ZERO_ONION = "00" * 1366
#: the node's node key (lnprototest's runners use 01)
NODE_PRIVKEY = "01"


def open_channel(temporary_channel_id: str, *, tlvs: str, push_msat: int = 0, channel_flags: int = 0) -> Any:
    """The peer's open_channel of ``FUNDING_SAT`` with its forced keys (``PEER_KEYS``)."""
    return Msg(
        "open_channel",
        chain_hash=BitcoinUtils.blockchain_hash(),
        temporary_channel_id=temporary_channel_id,
        funding_satoshis=FUNDING_SAT,
        push_msat=push_msat,
        dust_limit_satoshis=PEER_DUST_SAT,
        max_htlc_value_in_flight_msat=FUNDING_SAT * 1000,
        channel_reserve_satoshis=20_000,
        htlc_minimum_msat=1,
        feerate_per_kw=FEERATE,
        to_self_delay=12,
        max_accepted_htlcs=100,
        funding_pubkey=pubkey_of(PEER_FUNDING_PRIVKEY),
        revocation_basepoint=PEER_KEYS.revocation_basepoint(),
        payment_basepoint=PEER_KEYS.payment_basepoint(),
        delayed_payment_basepoint=PEER_KEYS.delayed_payment_basepoint(),
        htlc_basepoint=PEER_KEYS.htlc_basepoint(),
        first_per_commitment_point=PEER_KEYS.per_commit_point(0),
        channel_flags=channel_flags,
        tlvs=tlvs,
    )


def node_revokes(number: int) -> Any:
    """The node's revoke_and_ack of its commitment ``number`` (and its point for ``number + 2``)."""
    return ExpectMsg(
        "revoke_and_ack",
        channel_id=channel_id(),
        per_commitment_secret=remote_per_commitment_secret(number),
        next_per_commitment_point=remote_per_commitment_point(number + 2),
        ignore=ExpectMsg.ignore_all_gossip,
    )


def peer_revokes(number: int) -> Any:
    """The peer's revoke_and_ack of its commitment ``number`` (and its point for ``number + 2``)."""
    return Msg(
        "revoke_and_ack",
        channel_id=channel_id(),
        per_commitment_secret=PEER_KEYS.per_commit_secret(number),
        next_per_commitment_point=PEER_KEYS.per_commit_point(number + 2),
    )


def node_signs(*, with_htlcs: bool) -> Any:
    """The node's commitment_signed of the peer's next commitment (with its HTLCs' signatures, or none)."""
    return ExpectMsg(
        "commitment_signed",
        channel_id=channel_id(),
        signature=commitsig_to_recv(),
        htlc_signature=htlc_sigs_to_recv() if with_htlcs else "[]",
        ignore=ExpectMsg.ignore_all_gossip,
    )


def opened(push_msat: int = 0, announce: bool = False) -> list[Any]:
    """The peer opens a channel (pushing ``push_msat`` to the node; public if ``announce``),
    funds it, and both sides send channel_ready: the Commit stash then models both
    commitments number 0."""
    return [
        Block(blockheight=102, txs=[tx_spendable]),
        Connect(connprivkey="02"),
        ExpectMsg("init"),
        Msg("init", globalfeatures="", features=PEER_FEATURES),
        open_channel("5a" * 32, push_msat=push_msat, channel_flags=int(announce), tlvs=STATIC_REMOTEKEY_TYPE),
        # BOLT 2: the accepter MUST set channel_type to the one from open_channel; its
        # keys are the ones the runner forced (lnprototest's get_keyset)
        ExpectMsg(
            "accept_channel",
            temporary_channel_id=sent(),
            minimum_depth=3,
            funding_pubkey=remote_funding_pubkey(),
            revocation_basepoint=remote_revocation_basepoint(),
            payment_basepoint=remote_payment_basepoint(),
            delayed_payment_basepoint=remote_delayed_payment_basepoint(),
            htlc_basepoint=remote_htlc_basepoint(),
            first_per_commitment_point=remote_per_commitment_point(0),
            tlvs=STATIC_REMOTEKEY_TYPE,
        ),
        CreateFunding(
            *utxo(0),
            local_node_privkey="02",
            local_funding_privkey=PEER_FUNDING_PRIVKEY,
            remote_node_privkey=NODE_PRIVKEY,
            remote_funding_privkey=remote_funding_privkey(),
        ),
        Commit(
            funding=funding(),
            opener=Side.local,
            local_keyset=PEER_KEYS,
            local_to_self_delay=rcvd("accept_channel.to_self_delay", int),
            remote_to_self_delay=sent("open_channel.to_self_delay", int),
            local_amount=FUNDING_SAT * 1000 - push_msat,
            remote_amount=push_msat,
            local_dust_limit=PEER_DUST_SAT,
            remote_dust_limit=rcvd("accept_channel.dust_limit_satoshis", int),
            feerate=FEERATE,
            local_features=sent("init.features"),
            remote_features=rcvd("init.features"),
        ),
        Msg(
            "funding_created",
            temporary_channel_id=rcvd("accept_channel.temporary_channel_id"),
            funding_txid=funding_txid(),
            funding_output_index=0,
            signature=commitsig_to_send(),
        ),
        # the node's signature of the peer's first commitment, as BOLT 3 builds it
        ExpectMsg("funding_signed", channel_id=channel_id(), signature=commitsig_to_recv()),
        Block(blockheight=103, number=3, txs=[funding_tx()]),
        ExpectMsg("channel_ready", channel_id=channel_id(), second_per_commitment_point=remote_per_commitment_point(1)),
        Msg("channel_ready", channel_id=channel_id(), second_per_commitment_point=PEER_KEYS.per_commit_point(1)),
    ]


class CommitReceivedHtlc(Event):  # type: ignore[misc]
    """The HTLC the node just offered (its update_add_htlc, from the stash) goes into the
    Commit model, with the next commitment number: what UpdateCommit does for an HTLC
    the script wrote itself (the node chooses the expiry)."""

    def __init__(self, preimage: str) -> None:
        super().__init__()
        self.preimage = preimage

    def action(self, runner: Any) -> bool:
        super().action(runner)
        add = runner.get_stash(self, "update_add_htlc").fields
        htlc = HTLC(
            owner=Side.remote,
            amount_msat=add["amount_msat"],
            payment_secret=self.preimage,  # lnprototest's name for the preimage
            cltv_expiry=add["cltv_expiry"],
            onion_routing_packet=bytes(add["onion_routing_packet"]).hex(),
        )
        commit = runner.get_stash(self, "Commit")
        commit.add_htlc(htlc, add["id"])
        commit.inc_commitnum()
        runner.add_stash("OfferedHtlc", htlc)
        return True


class CommitFulfilledHtlc(Event):  # type: ignore[misc]
    """The HTLC of :class:`CommitReceivedHtlc` leaves the Commit model, its amount now the
    peer's, with the next commitment number (UpdateCommit's ``resolved_htlcs``, for it)."""

    def action(self, runner: Any) -> bool:
        super().action(runner)
        commit = runner.get_stash(self, "Commit")
        commit.del_htlc(runner.get_stash(self, "OfferedHtlc"), xfer_funds=True)
        commit.inc_commitnum()
        return True


def test_the_node_accepts_a_channel_and_reestablishes_it(runner: Any) -> None:
    runner.run(
        [
            *opened(),
            Disconnect(),
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            Msg("init", globalfeatures="", features=PEER_FEATURES),
            # nothing was signed after the funding: both next commitment numbers are 1
            ExpectMsg(
                "channel_reestablish",
                channel_id=channel_id(),
                next_commitment_number=1,
                next_revocation_number=0,
                your_last_per_commitment_secret="00" * 32,
                ignore=ExpectMsg.ignore_all_gossip,
            ),
            Msg(
                "channel_reestablish",
                channel_id=channel_id(),
                next_commitment_number=1,
                next_revocation_number=0,
                your_last_per_commitment_secret="00" * 32,
                my_current_per_commitment_point=PEER_KEYS.per_commit_point(0),
            ),
            # BOLT 2: next_commitment_number 1 both ways: MUST retransmit channel_ready
            ExpectMsg(
                "channel_ready",
                channel_id=channel_id(),
                second_per_commitment_point=remote_per_commitment_point(1),
                ignore=ExpectMsg.ignore_all_gossip,
            ),
        ]
    )


def test_an_htlc_from_the_peer_is_committed_both_ways(runner: Any) -> None:
    htlc = HTLC(owner=Side.local, amount_msat=5_000_000, payment_secret="77" * 32, cltv_expiry=400, onion_routing_packet=ZERO_ONION)
    runner.run(
        [
            *opened(),
            Msg(
                "update_add_htlc",
                channel_id=channel_id(),
                id=0,
                amount_msat=htlc.amount_msat,
                payment_hash=htlc.payment_hash(),
                cltv_expiry=htlc.cltv_expiry,
                onion_routing_packet=htlc.onion_routing_packet,
            ),
            UpdateCommit(new_htlcs=[(htlc, 0)]),
            Msg("commitment_signed", channel_id=channel_id(), signature=commitsig_to_send(), htlc_signature=htlc_sigs_to_send()),
            # the node revokes its commitment 0, then signs the peer's commitment 1 (the HTLC in it)
            node_revokes(0),
            node_signs(with_htlcs=True),
            peer_revokes(0),
        ]
    )


def test_the_node_offers_an_htlc_and_it_is_fulfilled(runner: Any) -> None:
    preimage = "42" * 32
    runner.run(
        [
            # the node needs a balance to pay from: the peer pushes it some
            *opened(push_msat=300_000_000),
            # the runner's addhtlc: the node offers the peer an HTLC and signs it
            AddHtlc(amount=7_000_000, preimage=preimage),
            ExpectMsg(
                "update_add_htlc",
                channel_id=channel_id(),
                id=0,
                amount_msat=7_000_000,
                payment_hash=HTLC(Side.remote, 7_000_000, preimage, 0, ZERO_ONION).payment_hash(),
                ignore=ExpectMsg.ignore_all_gossip,
            ),
            CommitReceivedHtlc(preimage),
            node_signs(with_htlcs=True),
            peer_revokes(0),
            Msg("commitment_signed", channel_id=channel_id(), signature=commitsig_to_send(), htlc_signature=htlc_sigs_to_send()),
            node_revokes(0),
            # the peer settles it: both commitments 2 pay the peer the HTLC's amount
            Msg("update_fulfill_htlc", channel_id=channel_id(), id=0, payment_preimage=preimage),
            CommitFulfilledHtlc(),
            Msg("commitment_signed", channel_id=channel_id(), signature=commitsig_to_send(), htlc_signature="[]"),
            node_revokes(1),
            node_signs(with_htlcs=False),
            peer_revokes(1),
        ]
    )


def test_an_unknown_channel_type_is_refused(runner: Any) -> None:
    runner.run(
        [
            Block(blockheight=102, txs=[tx_spendable]),
            Connect(connprivkey="02"),
            ExpectMsg("init"),
            Msg("init", globalfeatures="", features=PEER_FEATURES),
            # static_remotekey and bit 70, which no BOLT defines
            open_channel("5b" * 32, tlvs="{channel_type={type=" + bitfield(12, 70) + "}}"),
            # BOLT 2: the receiver MUST fail the channel if the channel_type is not suitable
            MustNotMsg("accept_channel"),
            ExpectError(),
        ]
    )


def test_a_shutdown_is_answered_with_a_shutdown(runner: Any) -> None:
    runner.run(
        [
            *opened(),
            # a P2WPKH script: one of BOLT 2's forms
            Msg("shutdown", channel_id=channel_id(), scriptpubkey="0014" + "ab" * 20),
            MustNotMsg("update_add_htlc"),
            ExpectMsg("shutdown", channel_id=channel_id(), ignore=ExpectMsg.ignore_all_gossip),
        ]
    )


def test_a_shutdown_to_a_script_of_no_allowed_form_gets_a_warning(runner: Any) -> None:
    runner.run(
        [
            *opened(),
            # a bare public key script: no form BOLT 2 allows in shutdown
            Msg("shutdown", channel_id=channel_id(), scriptpubkey="21" + "02" + "ab" * 32 + "ac"),
            # BOLT 2: SHOULD send a warning (the channel is not failed: no error, no shutdown)
            MustNotMsg("shutdown"),
            MustNotMsg("error"),
            ExpectMsg("warning", channel_id=channel_id(), ignore=ExpectMsg.ignore_all_gossip),
            # and closes the connection (BOLT 1: a warning MAY come with a close)
            ExpectDisconnect(),
        ]
    )


def test_announcement_signatures_that_do_not_verify_get_a_warning(runner: Any) -> None:
    scid = "103x1x0"  # tx_spendable in block 102 is the only other transaction: the funding is 103's second
    runner.run(
        [
            *opened(announce=True),
            # six confirmations: lnpmsg sends its announcement_signatures then
            Block(blockheight=106, number=3),
            ExpectMsg("announcement_signatures", channel_id=channel_id(), short_channel_id=scid),
            Msg(
                "announcement_signatures",
                channel_id=channel_id(),
                short_channel_id=scid,
                node_signature="11" * 64,
                bitcoin_signature="22" * 64,
            ),
            # BOLT 7: if a signature is not correct, MAY send a warning and close the connection, or
            # send an error and fail the channel. lnpmsg warns and keeps the connection (and channel)
            MustNotMsg("error"),
            ExpectMsg("warning", channel_id=channel_id()),
        ]
    )
