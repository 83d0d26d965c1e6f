"""Public channels: the announce app (:mod:`.app`) and its CLI commands (:mod:`.commands`).

The sans-IO steps (announcement_signatures, our announcements and
channel_updates, when an update is due) are :mod:`lnpmsg.gossip.announce`.
"""
