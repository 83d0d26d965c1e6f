"""The garbage collector's pace while a node runs.

CPython's defaults (a young collection every 700 new container objects, an
older one every 10 of those, a full one every 10 older ones) suit short
scripts. A node keeps a large, long-lived object graph (the gossip graph,
the routing graph, peers) and allocates a few short-lived objects per
message, so at the defaults the collector keeps walking the long-lived
graph: on gossip ingest it took 2-3 µs of CPU per signature on the event
loop (measured by ``gc.callbacks``; ``benchmarks/bench_gossip.py``), next
to ~10 µs of the event loop's own work. With young collections every
10,000 objects it takes ~0.5 µs; larger thresholds gained little more.
Cycles are still collected, only in bigger steps (a young generation of
10,000 objects is a few MB at most).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["NODE_GC_THRESHOLDS", "node_gc"]

#: ``gc.set_threshold`` while a node runs
NODE_GC_THRESHOLDS = (10_000, 10, 10)


@contextmanager
def node_gc(thresholds: tuple[int, int, int] = NODE_GC_THRESHOLDS) -> Iterator[None]:
    """Collect garbage at a node's pace inside the block; the previous thresholds after it."""
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
