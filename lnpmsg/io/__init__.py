"""trio adapters to I/O libraries, shared by the transports and the control plane.

- :mod:`lnpmsg.io.zmq_trio`: pyzmq sockets driven by trio's I/O waits
  (:class:`~lnpmsg.io.zmq_trio.TrioSocket`), used by the ZeroMQ transport,
  the control API, its client and the event bridge.

Nothing here knows about peers, apps or the node: these modules import trio
and the library they adapt, and nothing else of lnpmsg.
"""
