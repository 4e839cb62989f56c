"""One operator, many QueuePolicies: CPU, RSS, evaluations/s and Redis commands at 200, 1,000, 2,000 queues.

Issue 16's scale target: one operator watching 2,000 queues (200 policies x 10 queues) at a
10 s interval stays under 25% of one core and under 200 MiB RSS. ``bench/policy.py`` times
one evaluation in-process; this script runs the whole operator as users do:

1. A ``redis-server`` of its own on a free loopback port (never the shared 6379). One
   template queue is filled the honest way (``bench/policy.py``'s ``seed``: Python BullMQ
   ``addBulk`` and a real ``Worker`` that fails a third of the jobs and completes the
   rest, then ``--waiting`` jobs added and left waiting), and its keys are copied with
   ``DUMP``/``RESTORE`` under every queue name: each queue holds byte for byte what BullMQ
   wrote (job hashes, ``failed``/``completed``/``wait``, ``meta``, ``events`` stream).
2. The devcluster API stand-in (what ``requeue demo`` and tests/e2e run on) in a process of
   its own, made light enough to keep up (:func:`lenient_crds`, :func:`_serve_cluster`), and
   ``requeue run --standalone -A --metrics-port ...`` as a subprocess
   (tests/support/operator_proc.py's ``OperatorProcess``).
3. ``N / --per-policy`` QueuePolicies of ``--per-policy`` queues each, created through
   the API: ``examples/policy.yaml``'s thresholds and actions (pause while gates fail,
   auto replay, clean rules, Events), ``--interval`` (10 s), and a ``redis`` gate on the
   policy's own Redis (``--gate none`` for none; the example's Postgres gate, Slack
   webhook, archive and escalation levels are left out: nothing to reach here).
4. Waits until every policy has been evaluated ``--settle`` times (kopf has started every
   daemon, the memories are loaded), then measures over ``--window`` seconds:

   * the operator's CPU: ``utime + stime`` of ``/proc/<pid>/stat`` (all its threads) as a
     share of one core; CPU *time* of the process, so it stays meaningful on a busy machine
     (the wall clock does not: a loaded machine stretches evaluations, not their CPU);
   * its RSS: ``VmRSS`` sampled every second (peak in the window and at the end) and
     ``VmHWM`` (the peak since start, start-up included);
   * evaluations per second achieved (``requeue_policy_evaluation_seconds_count`` from the
     operator's own /metrics) beside the ideal ``policies / interval``, and the mean
     evaluation's wall time (the histogram's sum / count);
   * Redis commands per queue per evaluation: ``CONFIG RESETSTAT`` at the start,
     ``INFO commandstats`` at the end (commands run inside Lua count; the probe's own
     ``INFO``/``CONFIG`` are left out; the redis gate's connection, ``PING``s and
     ``INFO memory`` are in, as they are on a user's bill).

Then stops the operator and the API stand-in and goes on with the next size, on the same
Redis (the first N queues). Prints one table beside the targets.

    .venv/bin/python bench/policy_scale.py                          # 200, 1000, 2000; 60 s each
    .venv/bin/python bench/policy_scale.py --sizes 2000 --window 120
    .venv/bin/python bench/policy_scale.py --sizes 200 --window 30 --gate none
    .venv/bin/python bench/policy_scale.py --sizes 2000 --profile /tmp/op.prof   # cProfile the operator

Figures, never assertions (DESIGN.md, "Tests"). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests", ROOT / "operator"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import redis as redis_sync  # noqa: E402

from devcluster import RedisServer, free_port, start_cluster  # noqa: E402
from requeue.demo.session import crds_from_models  # noqa: E402
from support.bullmq_jobs import JobSpec, add_jobs  # noqa: E402
from support.operator_proc import DEFAULT_COMMAND, OperatorProcess  # noqa: E402

#: Issue 16's targets for 2,000 queues at 10 s.
TARGET_CPU_PERCENT = 25.0
TARGET_RSS_MIB = 200.0
NAMESPACE = "bench"
SECRET = "redis"
TEMPLATE = "template"
PREFIX = "bull"
QPOL_PATH = f"/apis/requeue.dev/v1alpha1/namespaces/{NAMESPACE}/queuepolicies"
#: What the probe itself sends to Redis: not the operator's.
PROBE_COMMANDS = frozenset({"info", "config|resetstat"})
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- seeding


async def _seed_template(url: str, jobs: int, waiting: int) -> None:
    from bench.policy import seed

    await seed(url, [TEMPLATE], jobs)  # a third fail, the rest complete: failed, completed, events
    await add_jobs(url, TEMPLATE, [JobSpec("whatsapp.send", {"i": i}) for i in range(waiting)])


def seed_queues(url: str, count: int, jobs: int, waiting: int) -> dict[str, int]:
    """``count`` queues ``q0000``... each a copy (DUMP/RESTORE) of one template queue BullMQ filled."""
    asyncio.run(_seed_template(url, jobs, waiting))
    client = redis_sync.Redis.from_url(url)
    try:
        keys = [k.decode() for k in client.scan_iter(f"{PREFIX}:{TEMPLATE}:*", count=1000)]
        dumps: dict[str, bytes] = {}
        for key in keys:
            blob = client.dump(key)
            if blob is not None:  # None: gone meanwhile (nothing else writes to this server)
                dumps[key] = blob
        ttl = {k: max(0, int(client.pttl(k))) for k in keys}
        prefix = f"{PREFIX}:{TEMPLATE}:"
        for i in range(count):
            pipe = client.pipeline(transaction=False)
            for key, blob in dumps.items():
                pipe.restore(f"{PREFIX}:{queue_name(i)}:{key[len(prefix) :]}", ttl[key], blob, replace=True)
            pipe.execute()
        t = TEMPLATE
        return {
            "keys": len(keys),
            "waiting": int(client.llen(f"{PREFIX}:{t}:wait")),
            "failed": int(client.zcard(f"{PREFIX}:{t}:failed")),
            "completed": int(client.zcard(f"{PREFIX}:{t}:completed")),
            "events": int(client.xlen(f"{PREFIX}:{t}:events")),
        }
    finally:
        client.close()


def queue_name(i: int) -> str:
    return f"q{i:04d}"


# ----------------------------------------------------------------------------- the API stand-in


def lenient_crds() -> list[dict[str, Any]]:
    """requeue's CRDs with an open schema: the stand-in stores and serves them without validating.

    The emulator validates every write with jsonschema and cel-python, 10-50 ms per status
    patch of a 10-queue policy here: at 2,000 queues (20 status writes/s) that alone needs a
    core and the stand-in, not the operator, becomes what is measured. kube-apiserver does
    the same checks in Go; the operator sends the same requests either way.
    """
    crds = crds_from_models()
    for crd in crds:
        for version in crd["spec"]["versions"]:
            version["schema"] = {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            }
    return crds


#: Requests the stand-in's log keeps (see :func:`_keep_it_light`).
REQUEST_LOG = 64
_BACKGROUND: list[Any] = []


async def _keep_it_light(server: Any) -> None:
    """Bound kmock's request log, every 0.2 s, to its last :data:`REQUEST_LOG` requests.

    kmock keeps every request it served and matches each new one by walking that log through
    its filters: O(requests so far) per request, ~0.1 s each after a few thousand status
    writes, so the stand-in fell behind (API timeouts in the operator) within a minute at
    1,000 queues. A request is matched right after it is logged, long before 64 newer ones
    arrive (an evicted one would get a 500: the operator's failed API calls are counted and
    printed). The bench reads nothing from the log.
    """
    while True:
        await asyncio.sleep(0.2)
        del server._requests[:-REQUEST_LOG]
        for payload in server._payloads:
            del payload._requests[:-REQUEST_LOG]


def _serve_cluster(conn: Any, workdir: str) -> None:
    """Child process: the devcluster emulator until the parent says stop (its own GIL and core).

    Its garbage collector is stopped (it deep-copies every object five times a second to find
    orphaned children; the bench creates no owned objects) and its request log bounded.
    """
    cluster = start_cluster(lenient_crds(), workdir=Path(workdir))

    async def lighten() -> None:
        if cluster._gc_task is not None:
            cluster._gc_task.cancel()
        _BACKGROUND.append(asyncio.get_running_loop().create_task(_keep_it_light(cluster.server)))

    cluster.loop.run(lighten())
    try:
        conn.send((cluster.url, str(cluster.kubeconfig), os.getpid()))
        conn.recv()
    finally:
        cluster.close()


class StandIn:
    """The API stand-in in a process of its own, and the few HTTP calls this script makes to it."""

    def __init__(self, workdir: Path) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_cluster, args=(child, str(workdir)), daemon=True)
        self._proc.start()
        self.url, kubeconfig, self.pid = self._conn.recv()
        self.kubeconfig = Path(kubeconfig)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as response:
            return json.loads(response.read())

    def create(self, path: str, obj: dict[str, Any]) -> None:
        self.request("POST", path, obj)

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()


# ----------------------------------------------------------------------------- the objects


def policy_manifest(index: int, queues: list[str], interval: float, gate: str) -> dict[str, Any]:
    """examples/policy.yaml's thresholds and actions over ``queues``; a redis gate or none."""
    spec: dict[str, Any] = {
        "redis": {"urlSecretRef": {"name": SECRET, "key": "url"}},
        "queues": queues,
        "interval": f"{interval:g}s",
        "thresholds": {
            "failed": 100,
            "waiting": 1000,
            "failureRatePercent": 5,
            "window": "5m",
            "stalledActiveSeconds": 300,
            "stalledFor": "15m",
            "failedGrowing": {"above": 50},
        },
        "actions": {
            "pauseWhileGatesFail": True,
            "autoReplay": {
                "selector": {"jobNames": ["whatsapp.send"]},
                "stableFor": "2m",
                "maxReplaysPerJob": 2,
                "cooldown": "10m",
                "rate": {"jobsPerSecond": 50},
            },
            "clean": {
                "completed": {"grace": "1h", "limit": 1000},
                "failed": {"grace": "7d", "limit": 1000},
            },
        },
        "alerts": {"events": True},
    }
    if gate == "redis":
        spec["gates"] = [{"name": "redis", "redis": {"maxLatency": "50ms", "maxMemoryPercent": 90}}]
    return {
        "apiVersion": "requeue.dev/v1alpha1",
        "kind": "QueuePolicy",
        "metadata": {"name": f"p{index:03d}", "namespace": NAMESPACE},
        "spec": spec,
    }


# ----------------------------------------------------------------------------- the probes


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as response:
        return str(response.read().decode())


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def command_calls(client: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    for key, value in client.info("commandstats").items():
        name = key.removeprefix("cmdstat_")
        if name not in PROBE_COMMANDS:
            calls[name] = int(value["calls"])
    return calls


@dataclass
class Result:
    queues: int
    policies: int
    window_s: float
    cpu_percent: float
    rss_peak_mib: float
    rss_end_mib: float
    hwm_mib: float
    evals_per_s: float
    ideal_per_s: float
    eval_wall_ms: float
    cmds_per_queue_eval: float
    top_commands: list[tuple[str, int]]
    settle_s: float
    api_cpu_percent: float
    api_failures: int
    events: list[tuple[str, int]]
    transient: list[tuple[str, int]]

    @property
    def cpu_per_eval_ms(self) -> float:
        """The operator's CPU per evaluation, everything it does for one included (status write,
        kopf's watch event of it, the gate check): what the ideal rate would cost."""
        return 10 * self.cpu_percent / self.evals_per_s if self.evals_per_s else float("nan")


# ----------------------------------------------------------------------------- tracemalloc


def snapshot(op: OperatorProcess, port: int, path: str, *, started: bool) -> None:
    """SIGUSR1 to bench/traced_operator.py, then wait for its snapshot file (the first one once
    the operator serves /metrics: imports done, no policy yet)."""
    deadline = time.monotonic() + 300
    while not started:
        try:
            scrape(port)
            break
        except OSError:
            if time.monotonic() > deadline or not op.running:
                raise RuntimeError(f"operator not serving /metrics:\n{op.logs()[-4000:]}") from None
            time.sleep(0.5)
    assert op.pid is not None
    os.kill(op.pid, signal.SIGUSR1)
    while not Path(path).exists() or Path(path).stat().st_size == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no snapshot {path}")
        time.sleep(0.5)
    size = -1
    while size != Path(path).stat().st_size:  # written in one go, but not atomically
        size = Path(path).stat().st_size
        time.sleep(1.0)


def print_tracemalloc(prefix: str, rss_mib: float, top: int = 25) -> None:
    """The end snapshot's biggest files and lines, and what grew most since the first snapshot."""
    import tracemalloc

    first = tracemalloc.Snapshot.load(f"{prefix}.0")
    last = tracemalloc.Snapshot.load(f"{prefix}.1")
    total = sum(s.size for s in last.statistics("filename")) / 2**20
    print(f"  tracemalloc: {total:.1f} MiB traced at the end, RSS {rss_mib:.0f} MiB (tracing included)")
    for group in ("filename", "lineno"):
        print(f"  top {top} by {group}, end snapshot:")
        for stat in last.statistics(group)[:top]:
            print(f"    {stat.size / 2**20:8.2f} MiB {stat.count:9d} blocks  {stat.traceback[0]}")
        print(f"  top {top} by {group}, growth since no policy existed:")
        for diff in last.compare_to(first, group)[:top]:
            print(f"    {diff.size_diff / 2**20:+8.2f} MiB {diff.count_diff:+9d} blocks  {diff.traceback[0]}")


# ----------------------------------------------------------------------------- one size


def wait_settled(cluster: StandIn, op: OperatorProcess, port: int, policies: int, rounds: int) -> float:
    """Until every policy has a status and the operator has done ``rounds`` evaluations per policy."""
    t0 = time.monotonic()
    while True:
        if not op.running:
            raise RuntimeError(f"operator exited with {op.returncode}:\n{op.logs()[-4000:]}")
        try:
            done = sample(scrape(port), "requeue_policy_evaluation_seconds_count")
        except OSError:
            done = 0.0
        if done >= rounds * policies:
            objects = cluster.request("GET", QPOL_PATH)["items"]
            evaluated = sum(1 for o in objects if (o.get("status") or {}).get("lastEvaluatedAt"))
            if evaluated == policies:
                return time.monotonic() - t0
        if time.monotonic() - t0 > 900:
            raise TimeoutError(f"{done:.0f} evaluations after 900 s; log tail:\n{op.logs()[-4000:]}")
        time.sleep(1.0)


def measure(args: argparse.Namespace, server: RedisServer, n: int, workdir: Path) -> Result:
    policies = n // args.per_policy
    cluster = StandIn(workdir / f"kube-{n}")
    op: OperatorProcess | None = None
    client = redis_sync.Redis.from_url(server.url)
    try:
        cluster.create(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        cluster.create(
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
                "stringData": {"url": server.url},
            },
        )
        port = free_port()
        command = [*DEFAULT_COMMAND, "--metrics-port", str(port), "--metrics-address", "127.0.0.1"]
        if args.profile:
            command = [sys.executable, "-m", "cProfile", "-o", f"{args.profile}.{n}", *command[1:]]
        if args.tracemalloc:
            traced = str(ROOT / "bench" / "traced_operator.py")
            command = [sys.executable, traced, f"{args.tracemalloc}.{n}", *command[3:]]
        op = OperatorProcess(cluster.kubeconfig, workdir / f"operator-{n}.log", command=command)
        op.start()
        assert op.pid is not None
        if args.tracemalloc:
            snapshot(op, port, f"{args.tracemalloc}.{n}.0", started=False)
        for p in range(policies):
            queues = [queue_name(p * args.per_policy + k) for k in range(args.per_policy)]
            cluster.create(QPOL_PATH, policy_manifest(p, queues, args.interval, args.gate))
        settle = wait_settled(cluster, op, port, policies, args.settle)
        pid = op.pid
        text0 = scrape(port)
        client.config_resetstat()
        log0 = len(op.logs(current_run_only=True))
        cpu0, api0, t0 = cpu_seconds(pid), cpu_seconds(cluster.pid), time.monotonic()
        rss: list[int] = []
        while time.monotonic() - t0 < args.window:
            rss.append(status_kib(pid, "VmRSS"))
            time.sleep(1.0)
        cpu1, api1, t1 = cpu_seconds(pid), cpu_seconds(cluster.pid), time.monotonic()
        calls = command_calls(client)
        api_failures = len(re.findall(r"Kubernetes API|HTTP 5\d\d", op.logs(current_run_only=True)[log0:]))
        text1 = scrape(port)
        rss.append(status_kib(pid, "VmRSS"))
        hwm = status_kib(pid, "VmHWM")
        if args.tracemalloc:
            snapshot(op, port, f"{args.tracemalloc}.{n}.1", started=True)
            print_tracemalloc(f"{args.tracemalloc}.{n}", rss[-1] / 1024)
        posted = cluster.request("GET", f"/api/v1/namespaces/{NAMESPACE}/events")["items"]
        events = Counter(f"{e.get('type')}/{e.get('reason')}" for e in posted)
        # what a transient failure said (the reason alone hides whether it was the API or Redis)
        transient = Counter(
            str(e.get("message"))[:160] for e in posted if e.get("reason") == "TransientError"
        )
        name = "requeue_policy_evaluation_seconds"
        evals = sample(text1, f"{name}_count") - sample(text0, f"{name}_count")
        wall = sample(text1, f"{name}_sum") - sample(text0, f"{name}_sum")
        elapsed = t1 - t0
        total = sum(calls.values())
        return Result(
            queues=policies * args.per_policy,
            policies=policies,
            window_s=elapsed,
            cpu_percent=100 * (cpu1 - cpu0) / elapsed,
            rss_peak_mib=max(rss) / 1024,
            rss_end_mib=rss[-1] / 1024,
            hwm_mib=hwm / 1024,
            evals_per_s=evals / elapsed,
            ideal_per_s=policies / args.interval,
            eval_wall_ms=1000 * wall / evals if evals else float("nan"),
            cmds_per_queue_eval=total / (evals * args.per_policy) if evals else float("nan"),
            top_commands=calls.most_common(8),
            settle_s=settle,
            api_cpu_percent=100 * (api1 - api0) / elapsed,
            api_failures=api_failures,
            events=events.most_common(6),
            transient=transient.most_common(3),
        )
    finally:
        client.close()
        if op is not None:
            op.stop(timeout=60)
        cluster.close()


# ----------------------------------------------------------------------------- output


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print()
    print(
        f"interval {args.interval:g}s, {args.per_policy} queues per policy, gate {args.gate}, "
        f"window {args.window:g}s, {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print()
    print(
        "| queues | policies | operator CPU, % of one core | RSS peak / end (MiB) | VmHWM (MiB) "
        "| evaluations/s (ideal) | mean evaluation wall (ms) | operator CPU per evaluation (ms) "
        "| the same at the ideal rate, % of one core | Redis cmds per queue per evaluation |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.queues:,} | {r.policies} | {r.cpu_percent:.1f} "
            f"| {r.rss_peak_mib:.0f} / {r.rss_end_mib:.0f} "
            f"| {r.hwm_mib:.0f} | {r.evals_per_s:.1f} ({r.ideal_per_s:g}) | {r.eval_wall_ms:.0f} "
            f"| {r.cpu_per_eval_ms:.1f} | {r.cpu_per_eval_ms * r.ideal_per_s / 10:.1f} "
            f"| {r.cmds_per_queue_eval:.1f} |"
        )
    print()
    for r in results:
        top = ", ".join(f"{name} {calls}" for name, calls in r.top_commands)
        print(
            f"{r.queues} queues: settled in {r.settle_s:.0f}s; the API stand-in used "
            f"{r.api_cpu_percent:.0f}% of a core, {r.api_failures} API calls failed; "
            f"top commands in the window: {top}; Events since start: "
            + (", ".join(f"{reason} {n}" for reason, n in r.events) or "none")
        )
        for message, n in r.transient:
            print(f"  TransientError x{n}: {message}")
    print()
    print(
        f"target (issue 16): 2,000 queues at 10 s under {TARGET_CPU_PERCENT:g}% of one core "
        f"and under {TARGET_RSS_MIB:g} MiB RSS"
    )
    for r in results:
        if r.queues == 2000:
            cpu_ok = "met" if r.cpu_percent < TARGET_CPU_PERCENT else "NOT met"
            rss_ok = "met" if max(r.rss_peak_mib, r.hwm_mib) < TARGET_RSS_MIB else "NOT met"
            ideal = r.cpu_per_eval_ms * r.ideal_per_s / 10
            ideal_ok = "met" if ideal < TARGET_CPU_PERCENT else "NOT met"
            print(
                f"  2,000 queues: CPU {r.cpu_percent:.1f}% {cpu_ok} at {r.evals_per_s:.1f} evaluations/s, "
                f"{ideal:.1f}% {ideal_ok} at {r.ideal_per_s:g}/s; RSS peak {r.hwm_mib:.0f} MiB {rss_ok}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="200,1000,2000", help="queue counts, comma-separated")
    parser.add_argument("--per-policy", type=int, default=10, help="queues per QueuePolicy")
    parser.add_argument("--interval", type=float, default=10.0, help="spec.interval, seconds")
    parser.add_argument("--window", type=float, default=60.0, help="measured seconds per size")
    parser.add_argument("--settle", type=int, default=2, help="evaluations per policy before measuring")
    parser.add_argument("--gate", choices=("redis", "none"), default="redis")
    parser.add_argument("--jobs", type=int, default=30, help="template jobs processed (1/3 fail)")
    parser.add_argument("--waiting", type=int, default=10, help="template jobs left waiting")
    parser.add_argument("--profile", metavar="PATH", help="run the operator under cProfile, dump to PATH.<N>")
    parser.add_argument(
        "--tracemalloc",
        metavar="PATH",
        help="run the operator under tracemalloc (bench/traced_operator.py), snapshots to PATH.<N>.0/.1 "
        "(before the policies, end of the window), and print where the memory is; CPU and RSS then "
        "include tracemalloc's own cost",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="requeue-scale-"))
    server = RedisServer(directory=workdir / "redis")
    server.start()
    try:
        t0 = time.monotonic()
        shape = seed_queues(server.url, max(sizes), args.jobs, args.waiting)
        print(
            f"redis-server pid {server.pid} on {server.url}; seeded {max(sizes)} queues in "
            f"{time.monotonic() - t0:.0f}s, each: {shape['waiting']} waiting, {shape['failed']} failed, "
            f"{shape['completed']} completed, {shape['events']} events, {shape['keys']} keys",
            flush=True,
        )
        results = []
        for n in sizes:
            print(f"{n} queues: {n // args.per_policy} policies, settling ...", flush=True)
            r = measure(args, server, n, workdir)
            print(
                f"  CPU {r.cpu_percent:.1f}%  RSS {r.rss_peak_mib:.0f} MiB  "
                f"{r.evals_per_s:.1f} evaluations/s  "
                f"{r.cmds_per_queue_eval:.1f} cmds/queue/evaluation",
                flush=True,
            )
            results.append(r)
        print_table(results, args)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
