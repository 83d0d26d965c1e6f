"""The check of a peer's ``init`` (BOLT 1 and 9), and a bounded cache of its verdicts.

Sans-IO, as the session that uses it. Every check runs on every ``init``
whose payload was not seen before: it decodes, its feature vector stays
under :data:`MAX_FEATURE_BITS`, the features' dependencies hold, it requires
no feature we do not know, and it shares a chain with us. Peers of one
implementation and version send byte-identical ``init`` payloads (an
accepting node sees the same few again and again), and the verdict is a
function of the payload, the features we know and our chains only, so
:class:`InitVerdicts` keeps it per payload for one such pair: a peer whose
``init`` was judged before costs a dict lookup instead of its decoding and
feature checks. The decoded ``Init`` is shared between those peers, which
is safe: it is frozen all the way down (bytes, tuples, frozen addresses,
a ``TlvStream`` nothing can change).
"""

from __future__ import annotations

from lnpmsg.wire import Features, Init, WireError
from lnpmsg.wire.features import check_dependencies, unknown_required

__all__ = [
    "MAX_CACHED_INIT_BYTES",
    "MAX_CACHED_VERDICTS",
    "MAX_FEATURE_BITS",
    "InitVerdict",
    "InitVerdicts",
    "judge_init",
]

#: an ``init`` whose features (or globalfeatures) reach this bit is refused. BOLT 1
#: allows 65,535-byte fields, but assigned and experimental bits stay below a few
#: hundred; a larger field only costs memory and log space (1 KiB = 8192 bits here)
MAX_FEATURE_BITS = 8192
#: distinct ``init`` payloads whose verdict one cache keeps (the oldest goes first)
MAX_CACHED_VERDICTS = 32
#: payloads longer than this are judged every time, never kept: real peers' are
#: ~50-100 bytes, so the cache holds at most ~16 KiB of keys
MAX_CACHED_INIT_BYTES = 512

#: the peer's ``init`` and its combined features, or why it is refused
InitVerdict = tuple[Init, Features] | str


def judge_init(payload: bytes, known: Features, chains: frozenset[bytes]) -> InitVerdict:
    """Decode and check a peer's ``init`` payload (the message without its type).

    ``known``: the feature bits we understand; ``chains``: our chain hashes
    (empty: not checked). Returns ``(init, features)`` when it is acceptable,
    else the reason to refuse it.
    """
    try:
        init = Init.decode_payload(payload)
    except WireError as exc:
        return f"malformed init: {exc}"
    features = init.all_features
    highest = features.value.bit_length() - 1
    if highest >= MAX_FEATURE_BITS:
        return f"peer's init sets feature bit {highest}: we accept bits below {MAX_FEATURE_BITS} only"
    problems = check_dependencies(features)
    if problems:
        return f"peer features break dependencies: {'; '.join(problems)}"
    unknown = unknown_required(features, known)
    if unknown:
        bits = ", ".join(str(b) for b in sorted(unknown))
        return f"peer requires features we do not support: bit(s) {bits}"
    networks = init.networks
    if chains and networks is not None and not (chains & set(networks)):
        return "peer shares none of our chains (init networks)"
    return init, features


class InitVerdicts:
    """:func:`judge_init`'s verdicts for one ``known`` and ``chains``, by payload, bounded.

    A node keeps one per set of features it understands and hands it to each
    session it makes with those (and its chains); a session uses it only when
    they are the very objects it checks against (see
    :class:`~lnpmsg.node.session.PeerSession`). At most ``max_entries``
    payloads of at most :data:`MAX_CACHED_INIT_BYTES` are kept; when full,
    the oldest goes.
    """

    __slots__ = ("_verdicts", "chains", "known", "max_entries")

    def __init__(self, known: Features, chains: frozenset[bytes], max_entries: int = MAX_CACHED_VERDICTS) -> None:
        self.known = known
        self.chains = chains
        self.max_entries = max_entries
        self._verdicts: dict[bytes, InitVerdict] = {}

    def __len__(self) -> int:
        return len(self._verdicts)

    def judge(self, payload: bytes) -> InitVerdict:
        """The verdict on ``payload``: kept from an earlier peer, or judged now (and kept)."""
        verdict = self._verdicts.get(payload)
        if verdict is None:
            verdict = judge_init(payload, self.known, self.chains)
            if len(payload) <= MAX_CACHED_INIT_BYTES and self.max_entries > 0:
                verdicts = self._verdicts
                if len(verdicts) >= self.max_entries:
                    del verdicts[next(iter(verdicts))]
                verdicts[payload] = verdict
        return verdict
