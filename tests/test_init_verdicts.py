"""The shared, bounded cache of verdicts on peers' ``init``s: every check still made, per payload."""

from lnpmsg.node.identity import NodeKey
from lnpmsg.node.init_check import MAX_CACHED_INIT_BYTES, InitVerdicts, judge_init
from lnpmsg.node.node import Node, NodeConfig
from lnpmsg.node.session import PeerReady, PeerSession, SessionClosed, SessionState
from lnpmsg.wire import DEFAULT_REGISTRY, Features, Init, WarningMessage
from lnpmsg.wire.bolt1 import CHAIN_HASH_MAINNET, CHAIN_HASH_REGTEST, INIT_TLVS
from lnpmsg.wire.features import known_features

KNOWN = Features.from_names(optional=["var_onion_optin"]) | known_features()
CHAINS = frozenset([CHAIN_HASH_REGTEST])
LOCAL = Init(features=Features.from_names(optional=["var_onion_optin"]).to_bytes())


def session_with(verdicts, known=KNOWN, chains=CHAINS):
    session = PeerSession(LOCAL, 0.0, known_features=known, chains=chains, init_verdicts=verdicts)
    session.outbox.clear()
    return session


def init_bytes(*, optional=(), bits=(), networks=(CHAIN_HASH_REGTEST,)):
    features = Features.from_names(optional=optional) | Features.from_bits(bits)
    return Init(features=features.to_bytes(), tlvs=INIT_TLVS.stream(networks=list(networks))).encode()


def test_peers_sending_the_same_init_share_one_verdict_and_its_decoded_init():
    verdicts = InitVerdicts(KNOWN, CHAINS)
    data = init_bytes(optional=["gossip_queries"])
    first, second = session_with(verdicts), session_with(verdicts)
    (ready_one,) = first.receive_message(data, 1.0)
    (ready_two,) = second.receive_message(bytes(data), 2.0)  # equal bytes, another object
    assert isinstance(ready_one, PeerReady) and isinstance(ready_two, PeerReady)
    assert ready_two.init is ready_one.init and second.remote_init is first.remote_init
    assert ready_two.features.supports("gossip_queries")
    assert second.state is SessionState.ACTIVE and len(verdicts) == 1


def test_a_different_init_gets_its_own_verdict():
    verdicts = InitVerdicts(KNOWN, CHAINS)
    good, unknown_required_bit = init_bytes(optional=["gossip_queries"]), init_bytes(bits=[200])
    assert isinstance(session_with(verdicts).receive_message(good, 1.0)[0], PeerReady)
    refused = session_with(verdicts)
    (closed,) = refused.receive_message(unknown_required_bit, 1.0)
    assert isinstance(closed, SessionClosed) and "bit(s) 200" in closed.reason
    other = session_with(verdicts)
    (ready,) = other.receive_message(init_bytes(optional=["gossip_queries_ex"]), 1.0)
    assert isinstance(ready, PeerReady) and ready.features.supports("gossip_queries_ex")
    assert not ready.features.supports("gossip_queries")
    assert len(verdicts) == 3


def test_a_bad_init_is_still_refused_when_its_verdict_is_kept():
    verdicts = InitVerdicts(KNOWN, CHAINS)
    cases = [
        (init_bytes(optional=["basic_mpp"]), "dependencies"),  # basic_mpp needs payment_secret
        (init_bytes(networks=[CHAIN_HASH_MAINNET]), "chains"),
        (init_bytes(bits=[200]), "bit(s) 200"),
        (b"\x00\x10\x00\x05ab", "malformed init"),
    ]
    for data, why in cases:
        for _ in range(3):  # judged, then kept: refused each time, with the peer told why
            session = session_with(verdicts)
            (closed,) = session.receive_message(data, 1.0)
            assert isinstance(closed, SessionClosed) and why in closed.reason
            assert session.state is SessionState.CLOSED and session.remote_init is None
            (warning,) = [DEFAULT_REGISTRY.decode(m) for m in session.outbox]
            assert isinstance(warning, WarningMessage) and why.encode() in warning.data
    assert len(verdicts) == len(cases)


def test_the_cache_is_bounded_oldest_first_and_keeps_no_long_payload():
    verdicts = InitVerdicts(KNOWN, CHAINS, max_entries=3)
    payloads = [init_bytes(bits=[bit])[2:] for bit in (1, 5, 7, 9, 11)]
    first = [verdicts.judge(payload) for payload in payloads]
    assert not any(isinstance(verdict, str) for verdict in first)
    assert len(verdicts) == 3
    # the newest are kept (the same decoded init again), the two oldest went: judged anew
    assert verdicts.judge(payloads[-1])[0] is first[-1][0]
    again = verdicts.judge(payloads[0])
    assert again[0] is not first[0][0] and again[0] == first[0][0]
    assert len(verdicts) == 3
    assert judge_init(payloads[0], KNOWN, CHAINS) == again
    # an init with a long (unknown, odd) TLV record is judged every time, never kept
    long_init = Init(features=b"", tlvs=INIT_TLVS.stream(unknown={101: bytes(MAX_CACHED_INIT_BYTES)}))
    before = dict(verdicts._verdicts)
    assert not isinstance(verdicts.judge(long_init.encode()[2:]), str)
    assert verdicts._verdicts == before


def test_a_session_checks_by_itself_when_the_cache_was_made_for_other_features_or_chains():
    verdicts = InitVerdicts(KNOWN, CHAINS)
    # The cache knows bit 200's pair; this session does not: the cache must not answer for it.
    wide = InitVerdicts(KNOWN | Features.from_bits([201]), CHAINS)
    data = init_bytes(bits=[200])
    assert not isinstance(wide.judge(data[2:]), str)
    (closed,) = session_with(wide).receive_message(data, 1.0)
    assert isinstance(closed, SessionClosed) and "bit(s) 200" in closed.reason
    # Other chains (an equal set, but not the one the cache was made for): checked here too.
    (closed,) = session_with(verdicts, chains=frozenset([CHAIN_HASH_MAINNET])).receive_message(init_bytes(), 1.0)
    assert isinstance(closed, SessionClosed) and "chains" in closed.reason
    assert len(verdicts) == 0


def test_a_node_gives_its_sessions_one_cache_per_feature_set():
    node = Node(NodeKey.generate(), NodeConfig(network="regtest"))
    setup = node._session_setup(b"")
    assert setup.verdicts.known is setup.understood and setup.verdicts.chains is node._chains
    assert node._session_setup(bytes(33)).verdicts is setup.verdicts
    node._features_changed()
    assert node._session_setup(b"").verdicts is not setup.verdicts
