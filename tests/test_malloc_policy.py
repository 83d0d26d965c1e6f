"""The node's C allocator thresholds: buffers freed and taken again stop costing page faults."""

from __future__ import annotations

import subprocess
import sys

from lnpmsg.runtime.malloc_policy import tune_malloc

# Eight buffers of ~200 KB taken and freed again and again, as a node's batches and
# reads are: at glibc's defaults each round hands the top of the heap back to the
# kernel (or maps and unmaps each buffer) and faults its pages in again.
_CHURN = """
import resource, sys
from lnpmsg.runtime.malloc_policy import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
for _ in range(20):
    blocks = [b"x" * 200_000 for _ in range(8)]
    del blocks
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(500):
    blocks = [b"x" * 200_000 for _ in range(8)]
    del blocks
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True, timeout=60)
    return int(done.stdout)


def test_tuned_malloc_keeps_the_pages_of_freed_buffers() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 10_000  # 500 rounds of ~1.6 MB faulted in again
    assert tuned < 100
    assert tune_malloc() and tune_malloc()  # idempotent
