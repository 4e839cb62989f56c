"""``requeue export``: throughput and the CLI's peak memory as the exported set grows.

Starts a redis-server of its own (a free port, never the shared 6379), writes BullMQ-shaped
failed jobs (the fields a Node BullMQ 6 worker leaves on a failed job: name, data, opts,
timestamp, delay, priority, processedOn, finishedOn, atm, ats, failedReason, stacktrace),
then runs ``python -m requeue export --state failed > /dev/null`` for each size and reads
the child's peak RSS from ``wait4`` (``ru_maxrss``; the jobs are written by another process,
since Linux carries the starting process's peak into that figure). The jobs are written with pipelined
HSET rather than through BullMQ: the export reads hashes, and a Node worker failing 500k jobs
would take most of the run. ``tests/interop/test_export_interop.py`` exports Node-made jobs.

    .venv/bin/python bench/export.py                       # 10k, 100k, 300k jobs of ~1 KiB + 300 of 1 MiB
    .venv/bin/python bench/export.py --sizes 10000,50000   # a quick look

Two more rows carry job logs (``job.log()`` lines, the list ``<prefix>:<queue>:<id>:logs``):
``--logged`` jobs with ``--log-lines`` lines of ~80 B each, and ``--log-heavy`` jobs with 1,200
lines of 1 KiB (cut by the export to the newest 1,000 lines, 1 MiB, per job).

Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed(client: redis.Redis, queue: str, count: int, data_bytes: int, start: int = 0) -> None:
    """``count`` failed jobs with ``data_bytes`` of data each, in the shape Node BullMQ 6 leaves."""
    now = int(time.time() * 1000) - 3_600_000
    filler = "x" * max(0, data_bytes - 60)
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + count):
        job: dict[Any, Any] = {
            "name": "whatsapp.send",
            "data": json.dumps({"i": i, "to": f"+49{i:09d}", "text": filler}, separators=(",", ":")),
            "opts": '{"attempts":3,"backoff":{"type":"exponential","delay":1000}}',
            "timestamp": str(now + i),
            "delay": "0",
            "priority": "0",
            "processedOn": str(now + i + 5),
            "finishedOn": str(now + i + 9),
            "atm": "3",
            "ats": "3",
            "failedReason": "429 Too Many Requests",
            "stacktrace": json.dumps(
                ["Error: 429 Too Many Requests\n    at send (/app/worker.js:17:11)"] * 3
            ),
        }
        pipe.hset(f"bull:{queue}:{i}", mapping=job)
        pipe.zadd(f"bull:{queue}:failed", {str(i): now + i + 9})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def seed_logs(client: redis.Redis, queue: str, count: int, lines: int, line_bytes: int) -> None:
    """Give jobs 0..count-1 of ``queue`` ``lines`` log lines of ``line_bytes`` each (as addLog: RPUSH)."""
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        key = f"bull:{queue}:{i}:logs"
        for k in range(lines):
            pipe.rpush(key, f"{k:06d} attempt log line ".ljust(line_bytes, "."))
            if len(pipe) >= 2000:
                pipe.execute()
    pipe.execute()


def _seed_logs_child(port: int, queue: str, count: int, lines: int, line_bytes: int) -> None:
    seed_logs(redis.Redis(port=port), queue, count, lines, line_bytes)


def seed_logs_apart(port: int, queue: str, count: int, lines: int, line_bytes: int) -> None:
    """:func:`seed_logs` in a child process (see :func:`seed_apart`)."""
    child = mp.Process(target=_seed_logs_child, args=(port, queue, count, lines, line_bytes))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"seeding logs failed ({child.exitcode})")


def seed_apart(port: int, queue: str, count: int, data_bytes: int, start: int = 0) -> None:
    """:func:`seed` in a child process: Linux carries a process's peak RSS across ``exec`` into
    the ``ru_maxrss`` of what it starts, so this process stays small for the measured children."""
    child = mp.Process(target=_seed_child, args=(port, queue, count, data_bytes, start))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"seeding failed ({child.exitcode})")


def _seed_child(port: int, queue: str, count: int, data_bytes: int, start: int) -> None:
    seed(redis.Redis(port=port), queue, count, data_bytes, start)


def run_export(url: str, queue: str) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB, bytes written) of one ``requeue export`` run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "NO_COLOR": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "requeue",
            "export",
            "--redis-url",
            url,
            "--queue",
            queue,
            "--state",
            "failed",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"requeue export failed: {err}")
    written = int(err.rsplit(" bytes", 1)[0].rsplit(" ", 1)[1])  # the summary line says how many
    return seconds, usage.ru_maxrss, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,300000", help="Job counts, comma-separated.")
    parser.add_argument("--data-bytes", type=int, default=1024, help="Bytes of data per job.")
    parser.add_argument("--big", type=int, default=300, help="Jobs of 1 MiB data in the last run (0: none).")
    parser.add_argument("--logged", type=int, default=10000, help="Jobs with log lines (0: no such row).")
    parser.add_argument("--log-lines", type=int, default=20, help="Log lines of ~80 B per --logged job.")
    parser.add_argument(
        "--log-heavy", type=int, default=100, help="Jobs with 1,200 log lines of 1 KiB (0: no such row)."
    )
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            url = f"redis://127.0.0.1:{port}"
            print(f"requeue export, failed set of ~{args.data_bytes} B jobs; redis-server on {url}")
            print(f"{'jobs':>8}  {'seconds':>8}  {'jobs/s':>8}  {'MiB out':>8}  {'peak RSS MiB':>12}")
            seeded = 0
            for size in [int(s) for s in args.sizes.split(",")]:
                seed_apart(port, "bench", size - seeded, args.data_bytes, start=seeded)
                seeded = size
                seconds, rss_kib, written = run_export(url, "bench")
                print(
                    f"{size:>8}  {seconds:>8.1f}  {size / seconds:>8.0f}  {written / 2**20:>8.1f}  "
                    f"{rss_kib / 1024:>12.1f}"
                )
            if args.big:
                seed_apart(port, "big", args.big, 1024 * 1024)
                seconds, rss_kib, written = run_export(url, "big")
                print(
                    f"{args.big:>8}  {seconds:>8.1f}  {args.big / seconds:>8.0f}  {written / 2**20:>8.1f}  "
                    f"{rss_kib / 1024:>12.1f}   (1 MiB of data per job)"
                )
            rows = [
                ("logged", args.logged, args.log_lines, 80, f"{args.log_lines} log lines of 80 B per job"),
                ("heavy", args.log_heavy, 1200, 1024, "1,200 log lines of 1 KiB per job, cut to 1,000"),
            ]
            for queue, jobs, lines, line_bytes, what in rows:
                if not jobs:
                    continue
                seed_apart(port, queue, jobs, args.data_bytes)
                seed_logs_apart(port, queue, jobs, lines, line_bytes)
                seconds, rss_kib, written = run_export(url, queue)
                print(
                    f"{jobs:>8}  {seconds:>8.1f}  {jobs / seconds:>8.0f}  {written / 2**20:>8.1f}  "
                    f"{rss_kib / 1024:>12.1f}   ({what})"
                )
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
