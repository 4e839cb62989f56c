"""What each replayed job costs the Redis it runs on: Redis commands per job, beside ``retryJobs``.

On Upstash every command is billed and plans cap commands per second; on any Redis,
commands are CPU that production workers compete for. This script seeds N failed jobs
with Node BullMQ (the Dataset of ``bench/replay.py``: a Node producer and a failing Node
worker, an rdb snapshot, a fresh redis-server from it before every measurement) and runs
each operation against its own redis-server on a loopback port:

* ``CONFIG RESETSTAT`` right before, ``INFO commandstats`` right after, summed over every
  command (the commands BullMQ's and requeue's Lua scripts run count too, as do the
  ``EVAL``/``EVALSHA``/``MULTI``/``EXEC`` around them; the probe's own ``PING``, ``INFO`` and
  ``CONFIG`` are left out);
* jobs/s of the operation (Node's own timing for ``retryJobs``, wall time of the
  subprocess's replay for requeue) and the worst round trip of a concurrent client that
  PINGs every millisecond on its own connection.

Then the floor of a selective replay (BullMQ's ``reprocessJob`` alone, per job, what the
move costs whatever requeue does around it), and the QueuePolicy: commands per queue per
evaluation of ``examples/policy.yaml`` (3 queues, 30 s, a Postgres and a Redis gate) on
queues that see traffic between evaluations, the Redis gate's own check, and what that
adds up to in a month.

    .venv/bin/python bench/commands_per_job.py --jobs 20000 --cache /tmp/rqcache
    .venv/bin/python bench/commands_per_job.py --only selective,retry --no-policy

Figures, never assertions (DESIGN.md, "Tests"). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.replay

from bench.replay import MIX, PREFIX, QUEUE, ROOT, Dataset, Pinger, fmt

#: Commands the probe itself sends (the PING client, RESETSTAT, INFO): not the operation's.
PROBE_COMMANDS = frozenset({"ping", "info", "config|resetstat", "config|set", "slowlog|reset", "slowlog|get"})
#: Left out of the QueuePolicy's figures: only the probe's RESETSTAT (no PING client runs
#: then, and the Redis gate's own PINGs and INFO are what it costs).
POLICY_PROBE = frozenset({"config|resetstat"})
#: Evaluations of the example policy per 30-day month at its 30 s interval.
EVALUATIONS_PER_MONTH = 30 * 86_400 // 30


# ----------------------------------------------------------------------------- counting


def command_stats(client: Any, exclude: frozenset[str] = PROBE_COMMANDS) -> Counter[str]:
    """``INFO commandstats`` as command -> calls (subcommands as ``config|set``), ``exclude`` left out.

    The ``INFO`` that reads them is not in its own figures; the ``CONFIG RESETSTAT`` before is."""
    raw = client.info("commandstats")
    calls: Counter[str] = Counter()
    for key, value in raw.items():
        name = key.removeprefix("cmdstat_")
        if name not in exclude:
            calls[name] = int(value["calls"])
    return calls


def reset_stats(client: Any) -> None:
    client.config_resetstat()


def _sync_client(url: str) -> Any:
    import redis as redis_sync

    return redis_sync.Redis.from_url(url)


@dataclass
class Measured:
    """One operation, one run: what it did, how fast, what it cost."""

    jobs: int
    elapsed_s: float
    commands: Counter[str]
    ping_max_ms: float
    scanned: int = 0

    @property
    def total(self) -> int:
        return sum(self.commands.values())


@dataclass
class Line:
    key: str
    label: str
    runs: list[Measured] = field(default_factory=list)

    def med(self, f: Any) -> float:
        values = [f(r) for r in self.runs]
        return statistics.median(values) if values else float("nan")


def _run_child(ds: Dataset, mode: str) -> dict[str, Any]:
    """bench/replay.py's measured child (its own process, the engine as the operator runs it)."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "replay.py"),
        "--child",
        mode,
        "--redis-url",
        ds.server.url,
        "--after",
        ds.window[0],
        "--before",
        ds.window[1],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed: {proc.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def measure_requeue(ds: Dataset, mode: str) -> Measured:
    ds.restore()
    client = _sync_client(ds.server.url)
    try:
        with Pinger(ds.server.host, ds.server.port) as ping:
            reset_stats(client)
            out = _run_child(ds, mode)
            stats = command_stats(client)
    finally:
        client.close()
    return Measured(out["jobs"], out["elapsed"], stats, ping.max_ms, scanned=ds.jobs)


def measure_retry_jobs(ds: Dataset) -> Measured:
    from support.node import run_retry_jobs

    ds.restore()
    client = _sync_client(ds.server.url)
    try:
        with Pinger(ds.server.host, ds.server.port) as ping:
            reset_stats(client)
            res = asyncio.run(run_retry_jobs(ds.server.url, QUEUE, major=ds.major, prefix=PREFIX, count=1000))
            stats = command_stats(client)
    finally:
        client.close()
    moved = res.before["failed"] - res.after["failed"]
    return Measured(moved, res.elapsed_ms / 1000, stats, ping.max_ms, scanned=ds.jobs)


async def _reprocess_floor(url: str, name: str, stats_client: Any) -> tuple[int, float, Counter[str]]:
    """BullMQ's ``reprocessJob`` for every failed job named ``name``, 64 per round trip, and
    nothing else (the ids are read before the count starts): what the move alone costs."""
    from requeue.queues import BullQueue, connect
    from requeue.queues.raw import RawTransaction, pack, script_text

    redis = await connect(url)
    try:
        q = BullQueue(redis, QUEUE, prefix=PREFIX)
        members = [
            m.decode() if isinstance(m, bytes) else str(m) for m in await redis.zrange(q.keys.failed, 0, -1)
        ]
        ids: list[str] = []
        for i in range(0, len(members), 1000):
            page = members[i : i + 1000]
            async with redis.pipeline(transaction=False) as pipe:
                for m in page:
                    pipe.hget(q.keys.job(m), "name")
                names = await pipe.execute()
            ids += [m for m, n in zip(page, names, strict=True) if n in (name, name.encode())]
        async with RawTransaction(redis) as tx:
            await tx.call([pack("SCRIPT", "LOAD", script_text(q.scripts.reprocess_job))])
            reset_stats(stats_client)
            t0 = time.perf_counter()
            for i in range(0, len(ids), 64):
                await tx.call(q.reprocess_commands(ids[i : i + 64], paused=False))
            elapsed = time.perf_counter() - t0
        return len(ids), elapsed, command_stats(stats_client)
    finally:
        await redis.aclose()


def measure_floor(ds: Dataset) -> Measured:
    ds.restore()
    client = _sync_client(ds.server.url)
    try:
        with Pinger(ds.server.host, ds.server.port) as ping:
            n, elapsed, stats = asyncio.run(_reprocess_floor(ds.server.url, MIX[0][0], client))
    finally:
        client.close()
    return Measured(n, elapsed, stats, ping.max_ms, scanned=ds.jobs)


# ----------------------------------------------------------------------------- QueuePolicy

POLICY_QUEUES = ("critical", "default", "bulk")
#: Jobs through each queue between two measured evaluations.
TRAFFIC_JOBS = 30


async def _traffic(url: str, major: int, jobs_per_queue: int) -> None:
    """Real jobs through every queue of the policy: a Node producer, then a Node worker that
    fails the ``whatsapp.send`` ones (a third) and completes the rest; events streams grow."""
    from support.node import FailRule, NodeWorker, run_node_script

    async def one(queue: str) -> None:
        batch = [
            {"name": MIX[i % len(MIX)][0], "data": {"i": i, "queue": queue}, "opts": {}}
            for i in range(jobs_per_queue)
        ]
        await run_node_script(
            "producer.mjs",
            {"redisUrl": url, "queue": queue, "prefix": PREFIX, "jobs": batch, "printIds": False},
            major=major,
        )
        async with NodeWorker(
            url,
            queue,
            major=major,
            prefix=PREFIX,
            fail=[FailRule("429 rate limited", name=MIX[0][0])],
            concurrency=20,
            max_jobs=jobs_per_queue,
        ) as worker:
            await worker.wait_exit(timeout_s=120)

    await asyncio.gather(*(one(q) for q in POLICY_QUEUES))


@dataclass
class PolicyFigures:
    """One policy's evaluations: commands of each, with traffic between them and without."""

    per_eval_traffic: list[int]
    per_eval_idle: list[int]
    breakdown: Counter[str]
    #: Commands the Node producer and workers themselves ran for the jobs between evaluations
    #: (BullMQ's add, fetch and finish), and how many jobs that was: the scale to judge the
    #: policy's own per-job read (one HMGET per finished job, for job latency) against.
    traffic_commands: int = 0
    traffic_jobs: int = 0


async def _evaluations(
    url: str, major: int, body: dict[str, Any], n: int, stats_client: Any
) -> PolicyFigures:
    """A warm-up evaluation, ``n`` with a burst of real jobs before each, ``n`` on idle queues."""
    from requeue.api.gates import GateStatus, GateType
    from requeue.api.policy import QueuePolicySpec
    from requeue.policy import BullQueueOps, PolicyRef, evaluate
    from requeue.queues import connect

    spec = QueuePolicySpec.model_validate(body)
    gates = [
        GateStatus(name=g.name, type=GateType.POSTGRES if g.postgres else GateType.REDIS, healthy=True)
        for g in spec.gates
    ]
    redis = await connect(url)
    try:
        ref = PolicyRef(namespace="bench", name="bench", uid=f"bench-{len(body)}", generation=1)
        ops = BullQueueOps(redis, spec.prefix)
        status, memory = None, None

        async def once() -> Counter[str]:
            nonlocal status, memory
            reset_stats(stats_client)
            result = await evaluate(
                ref,
                spec,
                status,
                redis=redis,
                ops=ops,
                gates=gates or None,
                memory=memory,
                now=datetime.now(UTC),
            )
            status, memory = result.status, result.memory
            return command_stats(stats_client, POLICY_PROBE)

        await once()  # loads the memory from Redis and reads the events streams from the window's start
        traffic: list[int] = []
        breakdown: Counter[str] = Counter()
        bullmq = 0
        for _ in range(n):
            reset_stats(stats_client)
            await _traffic(url, major, TRAFFIC_JOBS)
            bullmq += sum(command_stats(stats_client, PROBE_COMMANDS).values())
            calls = await once()
            traffic.append(sum(calls.values()))
            breakdown += calls
        idle = [sum((await once()).values()) for _ in range(n)]
        return PolicyFigures(traffic, idle, breakdown, bullmq, n * TRAFFIC_JOBS * len(POLICY_QUEUES))
    finally:
        await redis.aclose()


async def _policy(
    url: str, major: int, evaluations: int, stats_client: Any
) -> tuple[PolicyFigures, PolicyFigures, int]:
    """The example policy, a policy with every default (queues only), and the Redis gate's check."""
    import yaml

    from requeue.api.policy import QueuePolicySpec
    from requeue.gates.redis import check_redis
    from requeue.secrets import StaticSecrets

    example = yaml.safe_load((ROOT / "examples" / "policy.yaml").read_text())["spec"]
    defaults = {"redis": example["redis"], "queues": list(POLICY_QUEUES)}
    await _traffic(url, major, 100)
    ex = await _evaluations(url, major, example, evaluations, stats_client)
    de = await _evaluations(url, major, defaults, evaluations, stats_client)
    spec = QueuePolicySpec.model_validate(example)
    redis_gate = next(g.redis for g in spec.gates if g.redis is not None)
    reset_stats(stats_client)
    result = await check_redis(redis_gate, StaticSecrets({}), default_url=url)
    if not result.healthy:
        raise RuntimeError(f"the redis gate failed: {result.message}")
    return ex, de, sum(command_stats(stats_client, POLICY_PROBE).values())


def measure_policy(major: int, evaluations: int) -> tuple[PolicyFigures, PolicyFigures, int]:
    from support.redis_server import RedisServer

    server = RedisServer().start()
    client = _sync_client(server.url)
    try:
        return asyncio.run(_policy(server.url, major, evaluations, client))
    finally:
        client.close()
        server.stop()


# ----------------------------------------------------------------------------- the table

#: key, label, what a "job" is for the per-job figure.
REPLAY_LINES = (
    ("retry", "BullMQ Queue.retryJobs (Node, count 1000)"),
    ("bulk-keep", "requeue Bulk, resetAttempts: false"),
    ("bulk", "requeue Bulk, default"),
    ("window-keep", "requeue Exact, time window, resetAttempts: false"),
    ("window", "requeue Exact, time window"),
    ("selective", "requeue Exact, selective by name (30% match)"),
    ("floor", "  floor: BullMQ reprocessJob alone, same jobs"),
    ("scan", "requeue inspect (scanned jobs)"),
    ("dryrun", "requeue dry run, no filter (scanned jobs)"),
)


def measure(ds: Dataset, key: str) -> Measured:
    if key == "retry":
        return measure_retry_jobs(ds)
    if key == "floor":
        return measure_floor(ds)
    return measure_requeue(ds, key)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="failed jobs to seed (default 20000)")
    parser.add_argument("--runs", type=int, default=1, help="runs per line; medians are shown")
    parser.add_argument("--major", type=int, default=6, choices=(5, 6), help="Node BullMQ major")
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ",".join(k for k, _ in REPLAY_LINES)
    )
    parser.add_argument("--no-policy", action="store_true", help="skip the QueuePolicy figures")
    parser.add_argument("--evaluations", type=int, default=3, help="policy evaluations measured (each kind)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep the seeded rdb here (see bench/replay.py)"
    )
    parser.add_argument("--top", type=int, default=8, help="commands listed per line in the breakdown")
    args = parser.parse_args()

    from support.node import node_available

    node_available()
    only = set(filter(None, args.only.split(","))) or {k for k, _ in REPLAY_LINES}
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"requeue-bench-cpj-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    ds = None
    lines: list[Line] = []
    try:
        print(f"seeding {args.jobs} failed jobs with Node BullMQ {args.major} ...", file=sys.stderr)
        ds = Dataset(args.jobs, args.major, workdir).build(args.cache)
        for key, label in REPLAY_LINES:
            if key not in only:
                continue
            line = Line(key, label)
            for _ in range(args.runs):
                m = measure(ds, key)
                line.runs.append(m)
                print(f"  {key}: {m.jobs} jobs, {m.total} commands, {m.elapsed_s:.3f}s", file=sys.stderr)
            lines.append(line)
    finally:
        if ds is not None:
            ds.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    policy = None if args.no_policy else measure_policy(args.major, args.evaluations)
    report(args, lines, policy)


def _per(m: Measured, by: str) -> float:
    n = m.scanned if by == "scanned" else m.jobs
    return m.total / n if n else float("nan")


def report(
    args: argparse.Namespace, lines: list[Line], policy: tuple[PolicyFigures, PolicyFigures, int] | None
) -> None:
    from bench.replay import _redis_version

    print(
        f"\nRedis commands per job: {args.jobs} failed jobs seeded by Node BullMQ {args.major} "
        f"(30% whatsapp.send), redis-server {_redis_version()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; medians of {args.runs}\n"
    )
    head = f"{'operation':50} {'jobs':>7} {'cmds/job':>9} {'cmds/scanned':>13} {'jobs/s':>9} {'PING max':>9}"
    print(head)
    print("-" * len(head))
    retry = next((ln for ln in lines if ln.key == "retry"), None)
    for ln in lines:
        scanned = ln.key in ("selective", "floor", "scan", "dryrun")
        per_job = fmt(ln.med(lambda m: _per(m, "jobs")), "9.2f")
        per_scanned = fmt(ln.med(lambda m: _per(m, "scanned")), "13.2f") if scanned else ""
        rate = fmt(ln.med(lambda m: m.jobs / m.elapsed_s), "9.0f")
        stall = fmt(ln.med(lambda m: m.ping_max_ms), "7.2f")
        print(
            f"{ln.label:50} {fmt(ln.med(lambda m: m.jobs), '7.0f')} {per_job} {per_scanned:>13} "
            f"{rate} {stall}ms"
        )
    if retry is not None:
        ref = retry.med(lambda m: m.jobs / m.elapsed_s)
        print(
            "\njobs/s against retryJobs: "
            + ", ".join(
                f"{ln.key} {ln.med(lambda m: m.jobs / m.elapsed_s) / ref:.2f}x"
                for ln in lines
                if ln.key != "retry"
            )
        )
    print("\nwhere the commands go (calls per job, the run of the median line's first run):")
    for ln in lines:
        m = ln.runs[0]
        top = ", ".join(f"{c.upper()} {n / max(m.jobs, 1):.2f}" for c, n in m.commands.most_common(args.top))
        print(f"  {ln.key:12} {top}")
    if policy is None:
        return
    example, defaults, gate_check = policy
    n = len(POLICY_QUEUES)
    print(f"\nQueuePolicy, {n} queues ({', '.join(POLICY_QUEUES)}), commands per evaluation:")
    for label, fig in (("examples/policy.yaml", example), ("every default (queues only)", defaults)):
        traffic = statistics.median(fig.per_eval_traffic)
        idle = statistics.median(fig.per_eval_idle)
        top = ", ".join(
            f"{c.upper()} {k / len(fig.per_eval_traffic) / n:.2f}"
            for c, k in fig.breakdown.most_common(args.top)
        )
        print(
            f"  {label}: {traffic:.0f} with traffic between evaluations ({traffic / n:.1f} per queue), "
            f"{idle:.0f} on idle queues ({idle / n:.1f} per queue)\n    per queue: {top}"
        )
        if fig.traffic_jobs:
            extra = (traffic - idle) / (fig.traffic_jobs / len(fig.per_eval_traffic))
            print(
                f"    per finished job: the policy {extra:.2f} more than on idle queues; BullMQ itself "
                f"(Node producer and workers) {fig.traffic_commands / fig.traffic_jobs:.1f}"
            )
    at_rest = statistics.median(example.per_eval_idle) + gate_check
    busy = statistics.median(example.per_eval_traffic) + gate_check
    jobs_per_eval = example.traffic_jobs / len(example.per_eval_traffic)
    per_finished = (busy - at_rest) / jobs_per_eval if jobs_per_eval else 0.0
    print(
        f"  the example's Redis gate, checked at every evaluation (connect, 3 PINGs, INFO memory): "
        f"{gate_check}\n"
        f"  the example policy per 30 s on idle queues: {at_rest:.0f} commands; per 30-day month "
        f"({EVALUATIONS_PER_MONTH} evaluations): {at_rest * EVALUATIONS_PER_MONTH:,.0f}, "
        f"plus {per_finished:.2f} per job that finishes (with this run's traffic: {busy:.0f} per 30 s, "
        f"{busy * EVALUATIONS_PER_MONTH:,.0f} a month)"
    )


if __name__ == "__main__":
    main()
