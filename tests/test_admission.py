"""Inbound admission: the sans-IO rules, and the lockout attack run against a real node."""

import logging

import pytest
import trio

from lnpmsg.app import App
from lnpmsg.node.admission import Admission, AdmissionLimits, RefusalLog, subnet_of
from lnpmsg.node.node import ConnectError
from lnpmsg.testing.attacks import attacker_sources, silent_flood, timed_connects
from lnpmsg.testing.nodes import address_of, make_node, running
from lnpmsg.testing.rawpeer import RawPeer
from lnpmsg.wire import Init


def test_subnets_are_slash_24_and_slash_64():
    assert subnet_of("10.1.2.3") == "10.1.2.0/24"
    assert subnet_of("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert subnet_of("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert subnet_of("not-an-ip") == "not-an-ip"


def test_a_busy_ip_evicts_its_own_oldest_handshake():
    admission = Admission(AdmissionLimits(max_pending_per_ip=2))
    assert admission.admit("a1", "10.0.0.1", 0).evict == ()
    assert admission.admit("b1", "10.0.0.9", 0.5).evict == ()
    admission.admit("a2", "10.0.0.1", 1)
    decision = admission.admit("a3", "10.0.0.1", 2)
    assert decision.admitted and decision.evict == ("a1",)
    assert admission.pending == 3
    admission.closed("a1")  # the evicted one's end later changes nothing
    assert admission.pending == 3


def test_a_busy_subnet_evicts_its_own_oldest_and_the_total_evicts_from_the_heaviest_subnet():
    admission = Admission(AdmissionLimits(max_pending=4, max_pending_per_subnet=3))
    for i, ip in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3"]):
        admission.admit(f"x{i}", ip, i)
    assert admission.admit("x3", "10.0.0.4", 3).evict == ("x0",)
    # total full (4): the newcomer from elsewhere evicts the heaviest subnet's oldest, not the other subnet's
    admission.admit("y0", "10.9.9.9", 4)
    assert admission.pending == 4
    decision = admission.admit("z0", "10.5.5.5", 5)
    assert decision.evict == ("x1",) and "y0" not in decision.evict


def test_tor_has_its_own_budget():
    admission = Admission(AdmissionLimits(max_pending=2, max_pending_tor=2))
    admission.admit("c1", "10.0.0.1", 0)
    for i in range(2):
        assert admission.admit(f"t{i}", None, i).evict == ()
    assert admission.admit("t2", None, 3).evict == ("t0",)
    assert admission.admit("c2", "10.0.0.2", 4).evict == ()  # Tor never took clearnet slots


def test_established_connections_per_ip_are_refused_not_evicted():
    admission = Admission(AdmissionLimits(max_connections_per_ip=2))
    for key in ("p1", "p2"):
        admission.admit(key, "10.0.0.1", 0)
        admission.handshake_done(key)
    decision = admission.admit("p3", "10.0.0.1", 1)
    assert not decision.admitted and "2 connections from that IP" in decision.reason
    admission.closed("p1")
    assert admission.admit("p3", "10.0.0.1", 2).admitted


def test_peer_limit_keeps_room_for_protected_and_outbound_peers():
    admission = Admission(AdmissionLimits(max_peers=10, reserved_peer_slots=3))
    assert admission.admit_peer(peers=6, outbound=False, protected=False) is None
    assert "unprotected inbound" in admission.admit_peer(peers=7, outbound=False, protected=False)
    assert admission.admit_peer(peers=7, outbound=False, protected=True) is None
    assert admission.admit_peer(peers=9, outbound=True, protected=False) is None
    assert "10 peers" in admission.admit_peer(peers=10, outbound=True, protected=True)


def test_refusals_are_summed_up_per_interval():
    refusals = RefusalLog(interval=10)
    assert "from 10.0.0.1" in refusals.record("10.0.0.1", "per-IP limit (16 connections)", 0)
    lines = [refusals.record(f"10.0.0.{i % 8}", "per-IP limit (16 connections)", 0.001 * i) for i in range(1234)]
    assert lines == [None] * 1234
    summary = refusals.flush(10.5)
    assert summary is not None and "refused 1,234 connection(s) from 8 IP(s)" in summary and "per-IP limit: 1,234" in summary
    assert refusals.flush(21) is None  # a quiet interval: nothing to say, and the next is told at once
    assert refusals.record("10.0.0.1", "evicted", 22).startswith("refused a connection from 10.0.0.1")


async def test_silent_sockets_from_one_ip_evict_each_other(caplog):
    node = make_node(max_pending_per_ip=2, handshake_timeout=30)
    async with running(node):
        host, port = node.listen_addresses[0].rsplit(":", 1)
        streams = [await trio.open_tcp_stream(host, int(port)) for _ in range(3)]
        with trio.fail_after(5):
            assert await streams[0].receive_some(10) == b""  # the oldest made room
        assert node.stats["evicted"] == 1 and node.pending_handshakes == 2
        assert node.stats["handshake_failed"] == 0  # an eviction is counted once, as such
        for stream in streams:
            await stream.aclose()


async def test_a_socket_that_never_sends_act_one_is_closed_early():
    node = make_node(act_one_timeout=0.3, handshake_timeout=30)
    async with running(node):
        host, port = node.listen_addresses[0].rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        with trio.fail_after(10):
            assert await stream.receive_some(10) == b""
        assert node.stats["handshake_failed"] == 1
        await stream.aclose()


async def test_lockout_attack_from_many_ips_leaves_room_for_legitimate_peers(caplog):
    """Silent sockets from 12 IPs in 4 subnets, reconnecting ~20/s, against small budgets:
    the old design (refuse when full) let almost no one in; now every legitimate peer does."""
    caplog.set_level(logging.WARNING, "lnpmsg.node")
    node = make_node(max_pending_handshakes=24, max_pending_per_ip=4, max_pending_per_subnet=8, handshake_timeout=60, act_one_timeout=60)
    legit = [make_node(listen=False) for _ in range(6)]
    async with running(node, *legit) as nursery:
        host, port = node.listen_addresses[0].rsplit(":", 1)
        sources = attacker_sources(subnets=4, per_subnet=3)
        flood_done = trio.Event()

        async def flood():
            stats = await silent_flood(host, int(port), sources, per_second=20, hold=8, duration=30)
            assert stats.opened > 24, stats
            flood_done.set()

        nursery.start_soon(flood)
        with trio.fail_after(20):
            while node.pending_handshakes < 24:  # the attack holds every slot
                await trio.sleep(0.05)

        async def connect(i):
            peer = await legit[i].connect(address_of(node), timeout=30)
            assert peer.is_ready

        times = await timed_connects(connect, len(legit), interval=0.2)
        assert len(times) == len(legit)
        assert all(peer.node_id in node.peers for peer in legit)
        assert node.stats["evicted"] > 0
        nursery.cancel_scope.cancel()
    # one line per refusal no longer: the first is told, the rest summed up
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) < 5


async def test_established_peers_fill_the_per_ip_limit_then_new_connections_are_refused(caplog):
    node = make_node(max_connections_per_ip=2)
    async with running(node):
        peers = [await RawPeer.connect(node.listen_addresses[0], node.node_id) for _ in range(2)]
        for raw in peers:
            await raw.exchange_init(Init())
        host, port = node.listen_addresses[0].rsplit(":", 1)
        third = await trio.open_tcp_stream(host, int(port))
        with trio.fail_after(5):
            assert await third.receive_some(10) == b""
        assert "2 connections from that IP already" in caplog.text
        for raw in peers:
            await raw.aclose()
        await third.aclose()


@pytest.mark.parametrize("protected", [False, True])
async def test_the_peer_limit_keeps_room_for_protected_peers(protected):
    node = make_node(max_peers=3, reserved_peer_slots=1)
    others = [make_node(listen=False) for _ in range(3)]
    async with running(node, *others):
        for other in others[:2]:
            await other.connect(address_of(node))
        if protected:  # through the app contract, as a channels app would
            channels = node.mount(App("channels"))
            channels.protect_peer(others[2].node_id)
            assert node.is_protected(others[2].node_id)
            await others[2].connect(address_of(node))
            assert others[2].node_id in node.peers
        else:
            with pytest.raises(ConnectError, match="peer closed the connection"):
                await others[2].connect(address_of(node), timeout=10)
            assert node.stats["refused_peer_limit"] == 1
        # our own outbound connections may use the reserved slot too
        assert node.admission.admit_peer(peers=2, outbound=True, protected=False) is None


async def test_one_ip_cannot_fill_the_handshake_slots_over_zeromq():
    """Each ZeroMQ session has a new routing id; it still counts against its sender's IP."""
    import zmq

    node = make_node(listen=["127.0.0.1:0", "zmq+tcp://127.0.0.1:0"], max_pending_handshakes=16, max_pending_per_ip=4, handshake_timeout=60, act_one_timeout=60)
    legit = make_node(listen=False)
    context = zmq.Context()
    dealers = []
    try:
        async with running(node, legit):
            endpoint = node.listen_addresses[1].removeprefix("zmq+")
            host_port = endpoint.removeprefix("tcp://")
            for _ in range(40):
                dealer = context.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.connect(f"tcp://127.0.0.5:0;{host_port}")
                dealer.send(b"x")  # a session starts; act one never comes
                dealers.append(dealer)
            with trio.fail_after(20):
                while node.stats["evicted"] < 30:
                    await trio.sleep(0.05)
            assert node.pending_handshakes <= 4
            assert 1 <= node.admission.connections_from("127.0.0.5") <= 4  # libzmq told us the sender's IP
            peer = await legit.connect(address_of(node), timeout=30)
            assert peer.is_ready and legit.node_id in node.peers
    finally:
        for dealer in dealers:
            dealer.close()
        context.term()


async def test_inbound_over_tor_has_its_own_budget_and_a_flood_there_leaves_room():
    """Everything behind the onion service comes from 127.0.0.1: a flood through it evicts
    within the Tor budget, never the clearnet slots, and an onion peer still gets in."""
    from lnpmsg.transports.tor.transport import listen_behind_onion

    node = make_node(max_pending_tor=4, max_connections_per_ip=2, handshake_timeout=60, act_one_timeout=60)
    legit = make_node(listen=False)
    async with running(node, legit):
        behind = await listen_behind_onion("127.0.0.1:0")
        node.add_listener(behind)
        host, port = behind.local_address.rsplit(":", 1)
        silent = [await trio.open_tcp_stream(host, int(port)) for _ in range(10)]  # more than the per-IP cap too
        with trio.fail_after(10):
            while node.stats["evicted"] < 6:
                await trio.sleep(0.02)
        assert node.pending_handshakes == 4 and node.admission.connections_from("127.0.0.1") == 0
        # an onion peer (dialing the same loopback listener, as Tor does) gets in
        peer = await legit.connect(f"{node.node_id.hex()}@{behind.local_address}", timeout=30)
        assert peer.is_ready and legit.node_id in node.peers
        for stream in silent:
            await stream.aclose()
