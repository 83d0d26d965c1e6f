"""Payments: BOLT-4 onion routing, BOLT-11 invoices, pathfinding (sans-IO cores)."""

#: the modules of this package that are trio or file shells; every other module is sans-IO
#: (tests/test_sans_io.py holds them to it)
SHELL_MODULES = frozenset({"app", "blinded_app", "forwarding", "holding", "keysend", "getroute", "paying", "receiving", "recording", "store", "commands",
                           "restart", "invoice_calls"})

__all__ = ["SHELL_MODULES"]
