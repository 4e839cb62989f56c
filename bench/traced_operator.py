"""``python -m requeue`` under tracemalloc, a snapshot per SIGUSR1 (``policy_scale.py --tracemalloc``).

    python bench/traced_operator.py SNAPSHOT_PREFIX run --standalone -A ...

Each SIGUSR1 writes ``SNAPSHOT_PREFIX.<n>`` (``tracemalloc.Snapshot.dump``), n = 0, 1, ...;
``bench/policy_scale.py --tracemalloc PREFIX`` sends one before the policies are created and
one at the end of the measured window, and prints the top allocations of the end snapshot
and of the difference, grouped by file and by line. tracemalloc roughly doubles the memory
of what it traces and slows allocation: read the shares, not the totals, against RSS.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import tracemalloc
from types import FrameType

prefix = sys.argv[1]
taken = 0


def dump(signum: int, frame: FrameType | None) -> None:
    """Runs between two bytecodes of the main thread (the event loop's): a consistent heap."""
    global taken
    tracemalloc.take_snapshot().dump(f"{prefix}.{taken}")
    taken += 1


tracemalloc.start(int(os.environ.get("TRACEMALLOC_FRAMES", "1")))
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["requeue", *sys.argv[2:]]
runpy.run_module("requeue", run_name="__main__", alter_sys=True)
