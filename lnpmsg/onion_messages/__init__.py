"""Onion messages (BOLT 4, ``option_onion_messages``, feature bits 38/39).

:mod:`.packet` and :mod:`.limits` are sans-IO cores (build and peel
messages; per-peer rate limits); :mod:`.app` is the app that relays and
delivers them on a node (``OnionMessagesApp``), :mod:`.routing` finds a path
through the gossip graph, :mod:`.commands` holds the ``lnpmsg`` subcommands.
Every name resolves on first use, so the CLI's parser loads none of them.
"""

from lnpmsg._lazy import lazy_exports

#: the modules of this package that are trio shells; every other module is sans-IO
SHELL_MODULES = frozenset({"app", "routing", "commands"})

_PACKET = "lnpmsg.onion_messages.packet"
_APP = "lnpmsg.onion_messages.app"

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
    __name__,
    globals(),
    {
        **{name: _PACKET for name in ("BlindedPath", "Delivery", "Forward", "OnionMessageError", "OnionMessageIgnored", "OutgoingOnionMessage",
                                      "blinded_path_to", "build_onion_message", "peel_onion_message")},  # fmt: skip
        "OnionMessagesApp": _APP,
        "ReceivedOnionMessage": _APP,
    },
)
