"""Replay benchmark: requeue's engine against BullMQ's own ``Queue.retryJobs`` on the same data.

Seeds N failed jobs with real BullMQ (Node producer + a failing Node worker) into
a redis-server of its own (a free port, never the shared 6379), snapshots it
(SAVE; the rdb is copied aside) and restarts the server from that snapshot before
every measured run. Each measurement runs in a subprocess of its own (peak RSS
from ``VmHWM``) while a separate PING process sends a PING every millisecond on
its own connection and records the round trips. Prints one table of medians over
``--runs`` runs, then the targets of issue 7 and whether each is met.

    .venv/bin/python bench/replay.py                 # 100k jobs, 3 runs (a few minutes)
    .venv/bin/python bench/replay.py --jobs 20000    # quicker

See bench/README.md. Figures, never assertions: tests do not time things.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "tests", ROOT / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

QUEUE = "bench"
PREFIX = "bull"
#: (name, share of the jobs); the selective replay picks the first one.
MIX = (("whatsapp.send", 0.3), ("pdf.generate", 0.3), ("email.send", 0.4))
SMALL_JOBS = 1000

# ----------------------------------------------------------------------------- PING probe


def _pinger(host: str, port: int, stop: Connection, out: Connection) -> None:
    """Send PING every millisecond on a connection of its own; report the round trips (ms)."""
    with contextlib.suppress(OSError):  # on a small machine, do not queue behind the load for a CPU
        os.nice(-10)
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts: list[float] = []
    nxt = time.perf_counter()
    while not stop.poll():
        t0 = time.perf_counter()
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise RuntimeError("redis closed the PING connection")
            buf += chunk
        rtts.append((time.perf_counter() - t0) * 1000)
        nxt += 0.001
        pause = nxt - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        else:
            nxt = time.perf_counter()
    sock.close()
    out.send(rtts)


class Pinger:
    """``with Pinger(host, port) as p: ...`` then ``p.max_ms``, ``p.p99_ms`` and ``p.busy_ms``.

    ``busy_ms`` is Redis's own view: the longest single command (an EXEC counts as one,
    with everything queued in it) from SLOWLOG, i.e. the stall any client could see,
    without the scheduling noise of a client process on a busy machine.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.rtts: list[float] = []
        self.busy_ms = float("nan")
        self.slowest: list[tuple[float, str]] = []

    def _redis(self) -> Any:
        import redis as redis_sync

        return redis_sync.Redis(host=self.host, port=self.port)

    def __enter__(self) -> Pinger:
        client = self._redis()
        client.config_set("slowlog-log-slower-than", 500)
        client.config_set("slowlog-max-len", 10_000)
        client.slowlog_reset()
        client.close()
        ctx = mp.get_context("spawn")
        self._stop_r, self._stop_w = ctx.Pipe(duplex=False)
        self._out_r, self._out_w = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_pinger, args=(self.host, self.port, self._stop_r, self._out_w), daemon=True
        )
        self._proc.start()
        time.sleep(0.3)  # let it connect and settle before the load starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_w.send(True)
        self.rtts = self._out_r.recv()
        self._proc.join(10)
        client = self._redis()
        entries = client.slowlog_get(10_000)
        client.close()
        self.busy_ms = max((e["duration"] / 1000 for e in entries), default=0.5)
        self.slowest = [
            (e["duration"] / 1000, _describe(e["command"]))
            for e in sorted(entries, key=lambda e: -e["duration"])[:3]
        ]

    @property
    def max_ms(self) -> float:
        return max(self.rtts) if self.rtts else float("nan")

    @property
    def p99_ms(self) -> float:
        if len(self.rtts) < 100:
            return self.max_ms
        return statistics.quantiles(self.rtts, n=100)[98]


def _script_names() -> dict[str, str]:
    """SHA1 -> name of requeue's and BullMQ's scripts (what SLOWLOG shows of an EVALSHA)."""
    import hashlib

    from bullmq.redis_connection import SCRIPT_DEFINITIONS, loadScript

    from requeue.queues import lua

    def sha(body: str) -> str:
        return hashlib.sha1(body.encode()).hexdigest()

    names = {sha(getattr(lua, n)): n for n in dir(lua) if n.isupper() and isinstance(getattr(lua, n), str)}
    for name in ("reprocessJob", "moveJobsToWait", "getCounts", "pause"):
        names[sha(loadScript(SCRIPT_DEFINITIONS[name]))] = name
    return names


def _describe(command: bytes) -> str:
    """A SLOWLOG entry's command, short: EVAL/EVALSHA named by the script's first comment line."""
    text = command.decode("utf-8", "replace")
    if text.startswith("EVALSHA "):
        sha = text.split()[1]
        return f"EVALSHA <{_script_names().get(sha, sha[:8])}>"
    if text.startswith("EVAL "):
        body = text[5:].lstrip()
        first = next((ln.strip(" -[]") for ln in body.splitlines() if ln.strip(" -[]")), "")
        return f"EVAL <{first[:40]}>"
    return text[:60]


# ----------------------------------------------------------------------------- the measured child


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


async def _child(mode: str, url: str, window: tuple[str, str]) -> dict[str, Any]:
    from requeue.api import DLQReplaySpec
    from requeue.queues import BullQueue, ReplayKeys, connect
    from requeue.queues.keys import Progress
    from requeue.replay import ReplayEngine

    redis = await connect(url)
    body: dict[str, Any] = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queue": QUEUE,
        "prefix": PREFIX,
        "rate": {"jobsPerSecond": 1_000_000, "batchSize": 1000},
    }
    try:
        started = time.perf_counter()
        if mode == "scan":  # what `requeue inspect` runs: group the whole failed set
            from requeue.analysis import analyse_failed_set

            report = await analyse_failed_set(BullQueue(redis, QUEUE, prefix=PREFIX))
            elapsed = time.perf_counter() - started
            return {"elapsed": elapsed, "jobs": report.total, "rss_kib": _vm_hwm_kib()}
        if mode == "selective":
            body["selector"] = {"jobNames": [MIX[0][0]]}
        elif mode in ("window", "window-keep", "bulk", "bulk-keep"):
            body["selector"] = {"failedAfter": window[0], "failedBefore": window[1]}
            body["resetAttempts"] = mode in ("window", "bulk")
            body["mode"] = "Bulk" if mode.startswith("bulk") else "Exact"
        elif mode == "dryrun":
            body["dryRun"] = True
        elif mode == "dryrun-filter":
            body["dryRun"] = True
            body["selector"] = {"dataMatch": {}}
        elif mode in ("dryrun-dedupe", "dryrun-dedupe-unique"):
            body["dryRun"] = True
            body["selector"] = {"dedupeBy": "$.tenant" if mode == "dryrun-dedupe" else "$.i"}
        else:
            raise ValueError(mode)
        spec = DLQReplaySpec.model_validate(body)
        engine = ReplayEngine(redis, replay_id=f"bench-{uuid.uuid4().hex[:8]}", owner="bench/replay")
        status = await engine.run(spec)
        elapsed = time.perf_counter() - started
        if status.phase.value != "Succeeded":
            raise RuntimeError(f"replay ended {status.phase.value}: {status.message}")
        dry = mode.startswith("dryrun")
        jobs = status.matched if dry else status.replayed
        if dry:
            scanned = await redis.hget(ReplayKeys(engine.replay_id).progress, Progress.SCANNED)
            jobs = int(scanned or 0)
        return {"elapsed": elapsed, "jobs": jobs, "matched": status.matched, "rss_kib": _vm_hwm_kib()}
    finally:
        await redis.aclose()


def child_main(args: argparse.Namespace) -> None:
    result = asyncio.run(_child(args.child, args.redis_url, (args.after, args.before)))
    print(json.dumps(result))


# ----------------------------------------------------------------------------- seeding


def _job_data(i: int, name: str) -> dict[str, Any]:
    # ~200 bytes of JSON, like a notification or document job
    return {
        "i": i,
        "tenant": f"tenant-{i % 37}",
        "to": f"+49151{i:08d}",
        "template": name,
        "body": ("Hallo, Ihre Bestellung ist unterwegs. " * 4)[:140],
    }


async def seed(url: str, jobs: int, major: int) -> None:
    from support.node import FailRule, NodeWorker, run_node_script

    names: list[str] = []
    for name, share in MIX:
        names += [name] * round(jobs * share)
    names = names[:jobs] + [MIX[-1][0]] * (jobs - len(names))
    # interleave the names the way a real service produces them
    order = sorted(range(jobs), key=lambda i: (i * 7919) % jobs)
    batch = [{"name": names[j], "data": _job_data(i, names[j]), "opts": {}} for i, j in enumerate(order)]
    await run_node_script(
        "producer.mjs",
        {"redisUrl": url, "queue": QUEUE, "prefix": PREFIX, "jobs": batch, "chunk": 1000, "printIds": False},
        major=major,
        timeout_s=600,
    )
    rules = [
        FailRule(f"{name}: 503 upstream unavailable after {1000 + k}ms", name=name)
        for k, (name, _) in enumerate(MIX)
    ]
    import redis as redis_sync

    client = redis_sync.Redis.from_url(url)
    try:
        async with NodeWorker(
            url, QUEUE, major=major, prefix=PREFIX, fail=rules, concurrency=200, timeout_ms=1_800_000
        ) as _worker:
            deadline = time.monotonic() + 1800
            while int(client.zcard(f"{PREFIX}:{QUEUE}:failed")) < jobs:
                if time.monotonic() > deadline:
                    raise RuntimeError("seeding did not finish")
                await asyncio.sleep(0.2)
    finally:
        client.close()


@dataclass
class Dataset:
    """A redis-server of our own plus an rdb snapshot to restart it from."""

    jobs: int
    major: int
    workdir: Path
    window: tuple[str, str] = ("", "")
    server: Any = None

    def build(self, cache: Path | None = None) -> Dataset:
        """Seed (or, with ``cache``, reuse an rdb seeded before with the same size and major)."""
        from support.redis_server import RedisServer

        self.server = RedisServer().start()
        self.snapshot = self.workdir / f"snapshot-{self.jobs}.rdb"
        cached = cache / f"replay-{self.jobs}-bullmq{self.major}.rdb" if cache else None
        if cached is not None and cached.exists():
            self.window = tuple(json.loads(cached.with_suffix(".json").read_text()))
            shutil.copy(cached, self.snapshot)
            self.restore()
            return self
        t0 = datetime.now(UTC) - timedelta(seconds=5)
        asyncio.run(seed(self.server.url, self.jobs, self.major))
        self.window = (t0.isoformat(), (datetime.now(UTC) + timedelta(days=1)).isoformat())
        import redis as redis_sync

        client = redis_sync.Redis.from_url(self.server.url)
        try:
            client.save()
        finally:
            client.close()
        shutil.copy(self.server._dir / "dump.rdb", self.snapshot)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.snapshot, cached)
            cached.with_suffix(".json").write_text(json.dumps(self.window))
        return self

    def restore(self) -> None:
        """Kill the server and start it again from the snapshot (a fresh process every run)."""
        self.server.kill()
        shutil.copy(self.snapshot, self.server._dir / "dump.rdb")
        self.server.start(timeout=120)
        import redis as redis_sync

        client = redis_sync.Redis.from_url(self.server.url)
        try:
            deadline = time.monotonic() + 120
            while True:  # PING answers while the rdb is still loading
                try:
                    n = int(client.zcard(f"{PREFIX}:{QUEUE}:failed"))
                    break
                except redis_sync.BusyLoadingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()
        if n != self.jobs:
            raise RuntimeError(f"restored {n} failed jobs, expected {self.jobs}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


# ----------------------------------------------------------------------------- measurements


@dataclass
class Run:
    jobs_per_s: float
    elapsed_s: float
    jobs: int
    max_ms: float
    p99_ms: float
    busy_ms: float
    rss_mib: float | None = None


@dataclass
class Row:
    label: str
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else float("nan")


def measure_child(ds: Dataset, mode: str) -> Run:
    ds.restore()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--redis-url",
        ds.server.url,
        "--after",
        ds.window[0],
        "--before",
        ds.window[1],
    ]
    with Pinger(ds.server.host, ds.server.port) as ping:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {proc.stderr[-4000:]}")
    print(f"    {mode}: slowest commands (ms): {ping.slowest}", file=sys.stderr)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Run(
        out["jobs"] / out["elapsed"],
        out["elapsed"],
        out["jobs"],
        ping.max_ms,
        ping.p99_ms,
        ping.busy_ms,
        out["rss_kib"] / 1024,
    )


def measure_retry_jobs(ds: Dataset) -> Run:
    from support.node import run_retry_jobs

    ds.restore()
    with Pinger(ds.server.host, ds.server.port) as ping:
        res = asyncio.run(run_retry_jobs(ds.server.url, QUEUE, major=ds.major, prefix=PREFIX, count=1000))
    moved = res.before["failed"] - res.after["failed"]
    return Run(
        moved / (res.elapsed_ms / 1000), res.elapsed_ms / 1000, moved, ping.max_ms, ping.p99_ms, ping.busy_ms
    )


def measure_idle(ds: Dataset) -> Run:
    ds.restore()
    with Pinger(ds.server.host, ds.server.port) as ping:
        time.sleep(1.0)
    return Run(float("nan"), 1.0, 0, ping.max_ms, ping.p99_ms, ping.busy_ms)


MODES = (
    ("selective", "requeue selective replay (name, 30%)"),
    ("window", "requeue time-window replay (all)"),
    ("window-keep", "  the same, resetAttempts: false"),
    ("bulk", "requeue time-window replay, mode Bulk"),
    ("bulk-keep", "  the same, resetAttempts: false"),
    ("scan", "requeue inspect (analyse_failed_set)"),
    ("dryrun", "requeue dry run (engine, no filter)"),
    ("dryrun-filter", "  dataMatch {} (every job read by the client)"),
    ("dryrun-dedupe", "  dedupeBy $.tenant (37 values)"),
    ("dryrun-dedupe-unique", "  dedupeBy $.i (every value once)"),
)


def fmt(v: float, spec: str) -> str:
    return "n/a" if v != v else format(v, spec)  # NaN check


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="failed jobs to seed (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; the table shows medians")
    parser.add_argument(
        "--major", type=int, default=6, choices=(5, 6), help="Node BullMQ major (seed, retryJobs)"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated subset of: retry,selective,window,window-keep,bulk,bulk-keep,scan,dryrun,"
        "dryrun-filter,dryrun-dedupe,dryrun-dedupe-unique",
    )
    parser.add_argument("--no-small", action="store_true", help="skip the 1k-job RSS baseline")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="directory keeping seeded rdb files: later runs with the same --jobs and "
        "--major skip seeding (the data are the same: Node BullMQ seeded them)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--after", help=argparse.SUPPRESS)
    parser.add_argument("--before", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    from support.node import node_available

    node_available()
    only = set(filter(None, args.only.split(","))) or {"retry", *(mode for mode, _ in MODES)}
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"requeue-bench-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    big = small = None
    try:
        t = time.perf_counter()
        print(f"seeding {args.jobs} failed jobs with Node BullMQ {args.major} ...", file=sys.stderr)
        big = Dataset(args.jobs, args.major, workdir).build(args.cache)
        print(f"  seeded in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        if not args.no_small:
            small = Dataset(min(SMALL_JOBS, args.jobs), args.major, workdir).build(args.cache)
        idle = Row("idle (no load)")
        rows: dict[str, Row] = {}
        small_rss: dict[str, float] = {}
        for _ in range(args.runs):
            idle.runs.append(measure_idle(big))
            if "retry" in only:
                rows.setdefault("retry", Row("BullMQ Queue.retryJobs (Node, count 1000)")).runs.append(
                    measure_retry_jobs(big)
                )
            for mode, label in MODES:
                if mode in only:
                    run = measure_child(big, mode)
                    rows.setdefault(mode, Row(label)).runs.append(run)
                    print(f"  {mode}: {run}", file=sys.stderr)
        if small is not None:
            for mode, _ in MODES:
                if mode in only:
                    small_rss[mode] = statistics.median(
                        measure_child(small, mode).rss_mib or 0 for _ in range(args.runs)
                    )
        report(args, idle, rows, small_rss)
    finally:
        for ds in (big, small):
            if ds is not None:
                ds.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(args: argparse.Namespace, idle: Row, rows: dict[str, Row], small_rss: dict[str, float]) -> None:
    import platform

    import redis as redis_sync

    print(
        f"\nrequeue replay benchmark: {args.jobs} failed jobs (30% whatsapp.send, 30% pdf.generate, "
        f"40% email.send, ~200-byte data), seeded by Node BullMQ {args.major}; redis-server "
        f"{redis_sync.__version__ and _redis_version()}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
        f"medians of {args.runs} runs\n"
    )
    head = (
        f"{'measurement':44} {'jobs':>8} {'seconds':>8} {'jobs/s':>9} {'PING max':>9} {'PING p99':>9} "
        f"{'Redis busy':>10} {'peak RSS':>9} {'RSS 1k':>7}"
    )
    print(head)
    print("-" * len(head))
    for key, row in [("idle", idle), *rows.items()]:
        rss = row.median("rss_mib")
        small = small_rss.get(key, float("nan"))
        print(
            f"{row.label:44} {fmt(row.median('jobs'), '8.0f')} {fmt(row.median('elapsed_s'), '8.2f')} "
            f"{fmt(row.median('jobs_per_s'), '9.0f')} {fmt(row.median('max_ms'), '7.2f')}ms "
            f"{fmt(row.median('p99_ms'), '7.2f')}ms {fmt(row.median('busy_ms'), '8.2f')}ms "
            f"{fmt(rss, '7.1f')}MB {fmt(small, '5.1f')}MB"
        )

    print("\ntargets (issue 7):")
    retry = rows.get("retry")
    ref = retry.median("jobs_per_s") if retry else float("nan")

    def check(ok: bool, text: str) -> None:
        print(f"  [{'met' if ok else 'NOT met'}] {text}")

    if "selective" in rows:
        r = rows["selective"]
        check(
            r.median("jobs_per_s") >= 10_000 and r.median("max_ms") <= 5,
            f"selective >= 10,000 matched jobs/s with worst PING <= 5 ms: "
            f"{r.median('jobs_per_s'):.0f} jobs/s, {r.median('max_ms'):.2f} ms",
        )
    for key in ("window", "window-keep", "bulk", "bulk-keep"):
        if key not in rows:
            continue
        r = rows[key]
        ratio = r.median("jobs_per_s") / ref if ref == ref else float("nan")
        check(
            ratio >= 0.8 and r.median("max_ms") <= 5,
            f"{key}: time-window >= 0.8x retryJobs jobs/s with worst PING <= 5 ms: {fmt(ratio, '.2f')}x "
            f"({r.median('jobs_per_s'):.0f} vs {ref:.0f} jobs/s), {r.median('max_ms'):.2f} ms "
            f"(retryJobs itself: {retry.median('max_ms') if retry else float('nan'):.2f} ms)",
        )
    for key in ("scan", "dryrun", "dryrun-filter", "dryrun-dedupe", "dryrun-dedupe-unique"):
        if key in rows:
            r = rows[key]
            check(
                r.median("jobs_per_s") >= 50_000,
                f"{key} >= 50,000 failed jobs/s: {r.median('jobs_per_s'):.0f} jobs/s",
            )
    for key, row in rows.items():
        if small_rss.get(key):
            ratio = row.median("rss_mib") / small_rss[key]
            check(
                ratio <= 1.2,
                f"{key}: peak RSS on {args.jobs} jobs <= 1.2x RSS on {SMALL_JOBS}: "
                f"{ratio:.2f}x ({row.median('rss_mib'):.1f} vs {small_rss[key]:.1f} MB)",
            )


def _redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
    return next((p.split("=", 1)[1] for p in out.split() if p.startswith("v=")), "?")


if __name__ == "__main__":
    main()
