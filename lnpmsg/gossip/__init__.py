"""BOLT-7 gossip: messages, signature checks, the graph, its SQLite store,
Core Lightning store import, query sync, and the app that runs it on a node.

Layers (the first ones sans-IO):

- :mod:`~lnpmsg.gossip.messages`: the nine BOLT-7 messages and encoded arrays;
- :mod:`~lnpmsg.gossip.verify` / :mod:`~lnpmsg.gossip.sign`: signatures;
- :mod:`~lnpmsg.gossip.graph`: every accept / ignore / reject decision;
- :mod:`~lnpmsg.gossip.sync`: syncing by queries, answering queries;
- :mod:`~lnpmsg.gossip.cln_store`: Core Lightning ``gossip_store`` files;
- :mod:`~lnpmsg.gossip.store`: the SQLite store (blocking core + trio wrapper);
- :mod:`~lnpmsg.gossip.app`: :class:`GossipApp`, mounted on a node;
- :mod:`~lnpmsg.gossip.pipeline`: the app's signature checks in worker processes
  (:mod:`~lnpmsg.gossip.verify_worker`);
- :mod:`~lnpmsg.gossip.events`: what the app publishes.

Importing the package loads none of these modules, and a core module no trio and
no sqlite3: each name is imported from its module on first access.
"""

from typing import TYPE_CHECKING

from lnpmsg._lazy import lazy_exports

if TYPE_CHECKING:
    from lnpmsg.gossip.app import FundingCheck, FundingResult, GossipApp, GossipConfig
    from lnpmsg.gossip.cln_store import (
        ImportResult,
        import_gossip_store,
        load_gossip_store_file,
        read_gossip_store,
    )
    from lnpmsg.gossip.errors import GossipError, GossipStoreWriteError
    from lnpmsg.gossip.events import (
        GOSSIP_TOPICS,
        ChannelAnnouncementEvent,
        ChannelUpdateEvent,
        GossipEvent,
        GossipSyncEvent,
        NodeAnnouncementEvent,
        gossip_filter,
    )
    from lnpmsg.gossip.graph import ChannelRemoved, Decision, Graph, Outcome
    from lnpmsg.gossip.messages import (
        GOSSIP_MESSAGES,
        AnnouncementSignatures,
        ChannelAnnouncement,
        ChannelUpdate,
        GossipTimestampFilter,
        NodeAnnouncement,
        QueryChannelRange,
        QueryShortChannelIds,
        ReplyChannelRange,
        ReplyShortChannelIdsEnd,
        register_gossip_messages,
    )
    from lnpmsg.gossip.store import DB_FILE_NAME, AsyncGossipStore, GossipStore
    from lnpmsg.gossip.sync import PeerSync
    from lnpmsg.gossip.verify import SignatureVerifier

#: the sans-IO cores' names, imported when first used too (the CLI reads resync's defaults
#: without loading the graph)
_CORES = {
    "cln_store": ("ImportResult", "import_gossip_store", "load_gossip_store_file", "read_gossip_store"),
    "errors": ("GossipError", "GossipStoreWriteError"),
    "events": ("GOSSIP_TOPICS", "ChannelAnnouncementEvent", "ChannelUpdateEvent", "GossipEvent", "GossipSyncEvent", "NodeAnnouncementEvent", "gossip_filter"),
    "graph": ("ChannelRemoved", "Decision", "Graph", "Outcome"),
    "messages": ("GOSSIP_MESSAGES", "AnnouncementSignatures", "ChannelAnnouncement", "ChannelUpdate", "GossipTimestampFilter", "NodeAnnouncement", "QueryChannelRange", "QueryShortChannelIds", "ReplyChannelRange", "ReplyShortChannelIdsEnd", "register_gossip_messages"),
    "sync": ("PeerSync",),
    "verify": ("SignatureVerifier",),
}

#: the trio shells (the app, the SQLite store), imported when first used
_SHELLS = {
    **dict.fromkeys(("FundingCheck", "FundingResult", "GossipApp", "GossipConfig"), "lnpmsg.gossip.app"),
    **dict.fromkeys(("DB_FILE_NAME", "AsyncGossipStore", "GossipStore"), "lnpmsg.gossip.store"),
}
__getattr__, __dir__ = lazy_exports(
    __name__, globals(), {**{name: f"{__name__}.{module}" for module, names in _CORES.items() for name in names}, **_SHELLS}
)

__all__ = [
    "DB_FILE_NAME",
    "GOSSIP_MESSAGES",
    "GOSSIP_TOPICS",
    "AnnouncementSignatures",
    "AsyncGossipStore",
    "ChannelAnnouncement",
    "ChannelAnnouncementEvent",
    "ChannelRemoved",
    "ChannelUpdate",
    "ChannelUpdateEvent",
    "Decision",
    "FundingCheck",
    "FundingResult",
    "GossipApp",
    "GossipConfig",
    "GossipError",
    "GossipEvent",
    "GossipStore",
    "GossipStoreWriteError",
    "GossipSyncEvent",
    "GossipTimestampFilter",
    "Graph",
    "ImportResult",
    "NodeAnnouncement",
    "NodeAnnouncementEvent",
    "Outcome",
    "PeerSync",
    "QueryChannelRange",
    "QueryShortChannelIds",
    "ReplyChannelRange",
    "ReplyShortChannelIdsEnd",
    "SignatureVerifier",
    "gossip_filter",
    "import_gossip_store",
    "load_gossip_store_file",
    "read_gossip_store",
    "register_gossip_messages",
]
