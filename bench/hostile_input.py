"""How long one hostile failure reason costs: the normaliser, and ``requeue inspect`` over such jobs.

Issue 14: the old hex pattern of the reason normaliser backtracked cubically (1,000 characters
1.1 s, 2,000 8.7 s, 4,000 69 s), and one job's reason stalled the loop. This prints today's
figures for reasons of 1k, 10k and 100k characters made of the worst material (hex-ish words
with and without separators, a 100k-digit number, whitespace runs), and the time of a whole
``requeue inspect`` (a subprocess, as users run it) over a queue of such jobs in a throw-away
redis-server. ``--before`` also times the old pattern, on 1k and 2k characters only (it would
take minutes beyond that).

    .venv/bin/python bench/hostile_input.py
    .venv/bin/python bench/hostile_input.py --jobs 200 --before

Figures, never assertions.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis

from requeue.replay.reasons import normalize_reason

SIZES = (1_000, 10_000, 100_000)
SHAPES: dict[str, Callable[[int], str]] = {
    "hex word": lambda n: ("a1" * n)[: n - 1] + "g",  # no \b at its end: the old worst case
    "hex words": lambda n: ("ab12 " * n)[:n],
    "digits": lambda n: "9" * n,
    "spaces": lambda n: ("x" + " " * 9) * (n // 10),
}
_OLD_HEX = re.compile(
    r"\b(?:0x[0-9a-fA-F]+|[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*|"
    r"[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*[0-9][0-9a-fA-F]*)\b"
)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def normaliser_figures(before: bool) -> None:
    print("normalize_reason (one uncached call)")
    for shape, make in SHAPES.items():
        cells = []
        for size in SIZES:
            reason = make(size)
            seconds = timed(partial(normalize_reason.__wrapped__, reason))
            cells.append(f"{size // 1000}k {seconds * 1e3:8.3f} ms")
        print(f"  {shape:10} " + "   ".join(cells))
    if before:
        print("old hex pattern alone (before the fix)")
        for size in (1_000, 2_000):
            reason = SHAPES["hex word"](size)
            print(f"  hex word   {size // 1000}k {timed(partial(_OLD_HEX.sub, '', reason)):8.3f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(client: redis.Redis, queue: str, jobs: int, reason: str) -> None:
    """BullMQ's failed-job shape: the job hash and its place in the failed set."""
    pipe = client.pipeline()
    now = int(time.time() * 1000)
    for i in range(1, jobs + 1):
        key = f"bull:{queue}:{i}"
        pipe.hset(
            key,
            mapping={
                "name": "send",
                "data": json.dumps({"n": i}),
                "opts": "{}",
                "timestamp": now - 1000,
                "processedOn": now - 500,
                "finishedOn": now,
                "failedReason": f"{reason} #{i}",
                "attemptsMade": 1,
            },
        )
        pipe.zadd(f"bull:{queue}:failed", {str(i): now})
    pipe.hset(f"bull:{queue}:meta", mapping={"opts.maxLenEvents": 10000})
    pipe.set(f"bull:{queue}:id", jobs)
    pipe.execute()


def inspect_figures(jobs: int) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        print("inspect: no redis-server on PATH, skipped")
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            print(f"requeue inspect -o json over {jobs} failed jobs (subprocess, start-up included)")
            for size in SIZES:
                queue = f"hostile{size}"
                seed(client, queue, jobs, SHAPES["hex word"](size))
                cmd = [
                    sys.executable,
                    "-m",
                    "requeue",
                    "inspect",
                    "--redis-url",
                    f"redis://127.0.0.1:{port}/0",
                    "--queue",
                    queue,
                    "-o",
                    "json",
                    "--sample",
                    "0",
                ]
                seconds = timed(partial(subprocess.run, cmd, check=True, capture_output=True))
                print(f"  {size // 1000}k-character reasons: {seconds:6.2f} s")
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100, help="failed jobs per inspected queue")
    parser.add_argument("--before", action="store_true", help="also time the old pattern (1k, 2k)")
    args = parser.parse_args()
    normaliser_figures(args.before)
    inspect_figures(args.jobs)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    main()
