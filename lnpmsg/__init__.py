"""lnpmsg: a Tor-first peer-to-peer node and message framework speaking the
Lightning Network wire protocol (BOLT 1, 7, 8, 9)."""

__version__ = "0.1.0"
