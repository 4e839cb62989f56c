"""``requeue.malloc``: the operator's threads share at most two glibc malloc arenas.

Each case runs in a fresh interpreter (glibc's arenas are per process): eight threads allocate
at the same time, then glibc's own ``malloc_info`` says how many arenas (``<heap nr=...>``)
exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"

PROBE = """
import ctypes, ctypes.util, sys, tempfile, threading
from requeue.malloc import limit_arenas

limited = limit_arenas() if sys.argv[1] == "limit" else None
barrier = threading.Barrier(8)

def churn() -> None:
    barrier.wait()
    for _ in range(2000):
        blocks = [bytearray(1024 + i) for i in range(64)]  # above pymalloc's 512 bytes: malloc's
        del blocks

threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    stream = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    heaps = open(out.name).read().count("<heap nr=")
print(limited, heaps)
"""


def probe(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**environ, "PYTHONPATH": str(OPERATOR), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    limited, heaps = done.stdout.split()
    return limited, int(heaps)


def test_threads_share_two_arenas_once_limited() -> None:
    limited, heaps = probe("limit")
    assert limited == "True"
    assert heaps <= 2
    # Without the limit the same threads spread over more arenas: the probe can tell.
    _, unlimited = probe("none")
    assert unlimited > 2


def test_a_users_malloc_arena_max_is_left_alone() -> None:
    limited, heaps = probe("limit", MALLOC_ARENA_MAX="4")
    assert limited == "False"
    assert heaps <= 4
