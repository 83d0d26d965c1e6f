"""Onion messages (BOLT 4, ``option_onion_messages``, feature bits 38/39).

:mod:`.packet` and :mod:`.limits` are sans-IO cores (build and peel
messages; per-peer rate limits); :mod:`.app` is the app that relays and
delivers them on a node (``OnionMessagesApp``), :mod:`.routing` finds a path
through the gossip graph, :mod:`.commands` holds the ``lnpmsg`` subcommands.
"""

from lnpmsg._lazy import lazy_exports
from lnpmsg.onion_messages.packet import (
    BlindedPath,
    Delivery,
    Forward,
    OnionMessageError,
    OnionMessageIgnored,
    OutgoingOnionMessage,
    blinded_path_to,
    build_onion_message,
    peel_onion_message,
)

#: the modules of this package that are trio shells; every other module is sans-IO
SHELL_MODULES = frozenset({"app", "routing", "commands"})

__all__ = [
    "SHELL_MODULES",
    "BlindedPath",
    "Delivery",
    "Forward",
    "OnionMessageError",
    "OnionMessageIgnored",
    "OnionMessagesApp",
    "OutgoingOnionMessage",
    "ReceivedOnionMessage",
    "blinded_path_to",
    "build_onion_message",
    "peel_onion_message",
]

__getattr__, __dir__ = lazy_exports(
    __name__, globals(), {"OnionMessagesApp": "lnpmsg.onion_messages.app", "ReceivedOnionMessage": "lnpmsg.onion_messages.app"}
)
