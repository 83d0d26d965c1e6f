"""trio helpers shared by the commands, the control plane and programs built on lnpmsg.

- :mod:`lnpmsg.io.interrupt`: Ctrl-C as a quiet exit (status 130) under
  trio, whose nurseries wrap ``KeyboardInterrupt`` in exception groups.

Nothing here knows about peers, apps or the node: these modules import trio
and nothing else of lnpmsg.
"""
