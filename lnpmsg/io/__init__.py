"""trio adapters to I/O libraries and trio helpers, shared by the transports,
the control plane, the commands and programs built on lnpmsg.

- :mod:`lnpmsg.io.zmq_trio`: pyzmq sockets driven by trio's I/O waits
  (:class:`~lnpmsg.io.zmq_trio.TrioSocket`), used by the ZeroMQ transport,
  the control API, its client and the event bridge.
- :mod:`lnpmsg.io.interrupt`: Ctrl-C as a quiet exit (status 130) under
  trio, whose nurseries wrap ``KeyboardInterrupt`` in exception groups.
- :mod:`lnpmsg.io.redial`: dialing again with back-off and jitter until a
  dial succeeds or is no longer wanted (the node's configured peers, the
  channel app's channel peers).
- :mod:`lnpmsg.io.secret_file`: a key or seed file made once, 0600, whole
  or not at all (the node key, the onion key, the wallet's and the
  channels' seeds).
- :mod:`lnpmsg.io.atomic_file`: a file replaced whole or not at all (a
  temporary file, then a rename; fsynced when durable), for every store
  that replaces a file and for the control files.

Nothing here knows about peers, apps or the node: these modules import trio
and the library they adapt (or only the standard library), and nothing of
lnpmsg outside this package.
"""
