"""Publish/subscribe: between peers, and from the node to other processes.

- :mod:`lnpmsg.pubsub.peer`: the peer pub/sub app (topics, bounded subscribers);
- :mod:`lnpmsg.pubsub.bridge`: the node's events on a ZeroMQ XPUB socket as JSON.
"""
