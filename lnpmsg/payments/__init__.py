"""Payments: BOLT-4 onion routing, BOLT-11 invoices, pathfinding (sans-IO cores)."""
