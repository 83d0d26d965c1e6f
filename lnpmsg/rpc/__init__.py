"""Request/response: peer RPC between nodes, and the node control API.

- :mod:`lnpmsg.rpc.peer`: the peer RPC app (methods, calls, typed errors);
- :mod:`lnpmsg.rpc.params`: typed JSON params checked from signatures;
- :mod:`lnpmsg.rpc.control`: the control API server (ZeroMQ ROUTER + XPUB): its sockets and lifecycle;
- :mod:`lnpmsg.rpc.control_requests`: how it serves a request (checks, limits, deadline, reply);
- :mod:`lnpmsg.rpc.control_methods`: its built-in methods (getinfo, connect, listpeers, ...);
- :mod:`lnpmsg.rpc.control_proto`: its JSON-RPC messages (sans-IO);
- :mod:`lnpmsg.rpc.control_client`: its client, used by the CLI;
- :mod:`lnpmsg.rpc.curve`: CURVE keys and the ZAP handler for tcp:// control;
- :mod:`lnpmsg.rpc.commands`: the ``lnpmsg`` subcommands that use the client.

Nothing is imported here, so that the CLI's client side never loads the node.
"""
