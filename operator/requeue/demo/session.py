"""One run of ``requeue demo``: start everything, replay, show, clean up.

Every process the demo starts is recorded here and stopped by
:meth:`DemoSession.cleanup`, which the caller runs in a ``finally`` (also on
Ctrl-C, SIGTERM and errors): the operator and redis-server run in sessions of
their own (a terminal's Ctrl-C reaches only the demo, which then stops the
operator before the Redis it uses), the emulator and the BullMQ worker are
threads/tasks of the demo process itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml
from rich.console import Console
from rich.table import Table

from devcluster import (
    Cluster,
    Kubectl,
    KubectlNotFoundError,
    RedisServer,
    find_kubectl,
    free_port,
    start_cluster,
)
from requeue.analysis import analyse_failed_set
from requeue.api.crd import crd_for
from requeue.api.resources import KINDS
from requeue.demo.view import ReplayView
from requeue.demo.workload import OUTAGE, HealthEndpoint, ServiceWorker, Workload, plan, seed_failed_jobs
from requeue.queues import BullQueue

__all__ = ["DemoOptions", "DemoSession"]

DLQR = "requeue.dev/v1alpha1/dlqreplays"
NAMESPACE = "visapi"
QUEUE = "default"
REPLAY = "whatsapp-after-provider-outage"
SECRET = "visapi-redis"
#: Poll interval of the live view.
POLL = 0.2
#: Seconds the provider's health API stays red after the operator first checks it.
PROVIDER_RECOVERS_AFTER = 2.5
#: Seconds the replay itself should take, whatever --jobs says (sets spec.rate.jobsPerSecond).
REPLAY_SECONDS = 10.0


def crds_from_models() -> list[dict[str, Any]]:
    """requeue's CustomResourceDefinitions, generated in memory from the API models (no files)."""
    return [crd_for(cls.INFO) for cls in KINDS]


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """``requeue demo``'s options."""

    #: Failed jobs to seed (60% whatsapp.send, 25% pdf.generate, 15% email.send).
    jobs: int = 3000
    #: After the replay, leave everything running until Ctrl-C and print how to reach it.
    keep: bool = False
    #: Seconds the replay may take, once applied, before the demo gives up (exit 1).
    timeout: float = 120.0


def _utc(ts: datetime.datetime) -> str:
    return ts.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


class DemoSession:
    """Owns every process, server and temporary file of one demo run."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.started = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="requeue-demo-"))
        self.cluster: Cluster | None = None
        self.redis: RedisServer | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_log = self.workdir / "operator.log"
        self.metrics_port = 0
        self.kubectl: Kubectl | None = None
        self.final_phase = ""

    # -- output

    def stamp(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{self.stamp()}[/dim] {text}", highlight=False, soft_wrap=True)

    def shell(self, command: str, output: str = "") -> None:
        """Show a command the user could have typed, and its output."""
        self.console.print(
            f"[dim]{self.stamp()}[/dim] [bold]$ {command}[/bold]", highlight=False, soft_wrap=True
        )
        for line in output.rstrip("\n").splitlines():
            self.console.print(f"        {line}", highlight=False, markup=False, soft_wrap=True)

    # -- the run

    async def main(self) -> int:
        """Everything up to the final status; returns the exit code (0 when the replay Succeeded)."""
        console = self.console
        console.rule("[bold]requeue demo[/bold]: replay a BullMQ outage's failed jobs exactly once")
        self.cluster = start_cluster(crds_from_models(), workdir=self.workdir / "kube")
        crds = ", ".join(
            o["metadata"]["name"]
            for o in self.cluster.list_objects("apiextensions.k8s.io/v1/customresourcedefinitions")
        )
        self.say(f"API server emulator on {self.cluster.url} (devcluster; CRDs {crds})")
        try:
            self.kubectl = Kubectl(
                self.cluster.kubeconfig, self.workdir / "kube" / "kubectl-cache", binary=find_kubectl()
            )
        except KubectlNotFoundError:
            self.say("kubectl is not on PATH: the demo talks to the API directly instead")
        self.redis = RedisServer(directory=self.workdir / "redis", own_session=True)
        await asyncio.to_thread(self.redis.start)
        self.say(f"redis-server pid {self.redis.pid} on {self.redis.url} ({self.redis.binary})")

        workload = plan(self.options.jobs)
        outage_start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
        took = await seed_failed_jobs(self.redis.url, QUEUE, workload)
        reasons = {name: reason for name, reason, _ in OUTAGE}
        self.say(
            f"seeded {workload.total} failed BullMQ jobs in queue {QUEUE!r} with real workers "
            f"in {took:.1f}s: "
            + ", ".join(f"{n} {name} ({reasons[name]})" for name, n in workload.counts.items())
        )
        await self.inspect()

        health = await HealthEndpoint().start()
        worker = ServiceWorker(self.redis.url, QUEUE)
        try:
            self.start_operator()
            manifest = self.manifest(workload, health.url, outage_start)
            await self.apply(manifest)
            status = await self.follow(health, worker)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.close(), 10)
            await health.close()
        await self.report(status, workload, worker)
        self.final_phase = str(status.get("phase", ""))
        if self.options.keep:
            await self.keep_running()
        return 0 if self.final_phase == "Succeeded" else 1

    async def inspect(self) -> None:
        """The failed set by name and reason, as ``requeue inspect`` shows it."""
        assert self.redis is not None
        client = aioredis.Redis.from_url(self.redis.url)
        try:
            report = await analyse_failed_set(BullQueue(client, QUEUE), top=5, samples=0)
        finally:
            await client.aclose()
        self.say(
            f"the failed set, grouped as `requeue inspect --redis-url {self.redis.url} --queue {QUEUE}` does:"
        )
        table = Table(box=None, pad_edge=False, padding=(0, 2))
        table.add_column("JOB NAME")
        table.add_column("COUNT", justify="right")
        table.add_column("FAILURE REASON (normalised)")
        table.add_column("COUNT", justify="right")
        names, reasons = report.by_name.groups, report.by_reason.groups
        for i in range(max(len(names), len(reasons))):
            n = names[i] if i < len(names) else None
            r = reasons[i] if i < len(reasons) else None
            table.add_row(
                n.key if n else "", str(n.count) if n else "", r.key if r else "", str(r.count) if r else ""
            )
        self.console.print(f"        {report.total} failed jobs in {report.elapsed_s:.2f}s", highlight=False)
        with self.console.capture() as capture:
            self.console.print(table)
        for line in capture.get().rstrip("\n").splitlines():
            self.console.print(f"        {line}", highlight=False, markup=False, soft_wrap=True)

    def start_operator(self) -> None:
        """``requeue run --standalone -A`` against the emulator, in a session of its own."""
        assert self.cluster is not None
        self.metrics_port = free_port()
        command = [
            sys.executable,
            "-m",
            "requeue",
            "run",
            "--standalone",
            "-A",
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-address",
            "127.0.0.1",
        ]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "KUBERNETES_SERVICE_HOST": "",
        }  # never an in-cluster config or the user's own cluster
        with self.operator_log.open("ab") as log:
            self.operator = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.say(
            f"operator pid {self.operator.pid}: requeue run --standalone -A "
            f"(KUBECONFIG={self.cluster.kubeconfig}; log {self.operator_log})"
        )

    def manifest(self, workload: Workload, health_url: str, outage_start: datetime.datetime) -> str:
        """examples/replay.yaml, pointed at the demo's Redis and provider, fast enough for a demo."""
        rate = max(20, round(workload.counts["whatsapp.send"] / REPLAY_SECONDS))
        return f"""\
apiVersion: requeue.dev/v1alpha1
kind: DLQReplay
metadata:
  name: {REPLAY}
  namespace: {NAMESPACE}
spec:
  redis:
    urlSecretRef: {{name: {SECRET}, key: url}}
  queue: {QUEUE}
  selector:
    jobNames: ["whatsapp.send"]
    failedReasonPattern: "429|[Rr]ate limit"
    failedAfter: "{_utc(outage_start)}"
  rate:
    jobsPerSecond: {rate}
    batchSize: {max(10, min(200, rate // 4))}
  resetAttempts: true
  gates:
    - name: redis
      redis: {{maxLatency: 250ms}}
    - name: whatsapp-api
      http:
        url: {health_url}
        expectStatus: [200]
        jsonPath: "$.status"
        equals: "ok"
        timeout: 2s
  gatePolicy:
    interval: 1s
    successThreshold: 2
  verify:
    window: 1m
    minSuccessRate: 0.95
"""

    async def apply(self, manifest: str) -> None:
        """Namespace, Secret and DLQReplay: with kubectl when there is one, else through the API."""
        assert self.cluster is not None and self.redis is not None
        path = self.workdir / "replay.yaml"
        path.write_text(manifest)
        self.console.print(f"        [dim]{path}:[/dim]", highlight=False)
        for line in manifest.splitlines():
            self.console.print(f"        {line}", highlight=False, markup=False, soft_wrap=True)
        secret_cmd = (
            f"kubectl -n {NAMESPACE} create secret generic {SECRET} --from-literal=url={self.redis.url}"
        )
        if self.kubectl is not None:
            k = self.kubectl
            for args in (
                ("create", "namespace", NAMESPACE),
                (
                    "-n",
                    NAMESPACE,
                    "create",
                    "secret",
                    "generic",
                    SECRET,
                    f"--from-literal=url={self.redis.url}",
                ),
                ("apply", "-f", str(path)),
            ):
                proc = await asyncio.to_thread(k, *args)
                self.shell("kubectl " + " ".join(args), proc.stdout)
            return
        cluster = self.cluster
        await asyncio.to_thread(
            cluster.create, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        self.shell(f"kubectl create namespace {NAMESPACE}", f"namespace/{NAMESPACE} created (via the API)")
        await asyncio.to_thread(
            cluster.create,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
                "stringData": {"url": self.redis.url},
            },
        )
        self.shell(secret_cmd, f"secret/{SECRET} created (via the API)")
        await asyncio.to_thread(cluster.create, yaml.safe_load(manifest))
        self.shell(f"kubectl apply -f {path}", f"dlqreplay.requeue.dev/{REPLAY} created (via the API)")

    def status(self) -> dict[str, Any]:
        assert self.cluster is not None
        obj = self.cluster.get(DLQR, REPLAY, NAMESPACE) or {}
        return dict(obj.get("status") or {})

    async def follow(self, health: HealthEndpoint, worker: ServiceWorker) -> dict[str, Any]:
        """Poll the object until the replay finishes; the provider recovers, the worker starts."""
        view = ReplayView(self.console, REPLAY, self.stamp)
        deadline = time.monotonic() + self.options.timeout
        status: dict[str, Any] = {}
        recovering = working = False
        try:
            while True:
                status = await asyncio.to_thread(self.status)
                checked = any(g.get("name") == "whatsapp-api" for g in status.get("gates") or [])
                if checked and not recovering:  # the operator has seen it red: recover shortly
                    health.recover(after=PROVIDER_RECOVERS_AFTER)
                    recovering = True
                if status.get("phase") in ("Verifying", "Succeeded", "Failed") and not working:
                    # The service's worker starts only now so that verification has something to
                    # watch; in production it runs all along and verification is just as happy.
                    worker.start()
                    working = True
                    self.say(
                        f"worker: a BullMQ worker (concurrency {worker.concurrency}) starts "
                        f"processing queue {QUEUE!r}"
                    )
                view.update(status)
                if status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
                    return status
                if self.operator is not None and self.operator.poll() is not None:
                    raise RuntimeError(
                        f"the operator exited with {self.operator.returncode}:\n{self.operator_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the replay did not finish within {self.options.timeout:.0f}s "
                        f"(phase {status.get('phase')}); operator log:\n{self.operator_tail()}"
                    )
                await asyncio.sleep(POLL)
        finally:
            view.close(status)

    def operator_tail(self, chars: int = 3000) -> str:
        if not self.operator_log.exists():
            return ""
        return self.operator_log.read_text(errors="replace")[-chars:]

    async def report(self, status: dict[str, Any], workload: Workload, worker: ServiceWorker) -> None:
        """What a user would look at afterwards: kubectl get, the status, the events, Redis itself."""
        assert self.cluster is not None and self.redis is not None
        cluster = self.cluster
        if self.kubectl is not None:
            k = self.kubectl
            proc = await asyncio.to_thread(k, "-n", NAMESPACE, "get", "dlqr")
            self.shell(f"kubectl -n {NAMESPACE} get dlqr", proc.stdout)
        else:
            table = await asyncio.to_thread(cluster.table, DLQR, NAMESPACE)
            self.shell(f"kubectl -n {NAMESPACE} get dlqr", table)
        started, moved = _parse(status.get("startedAt")), _parse(status.get("replayFinishedAt"))
        finished = _parse(status.get("completedAt"))
        timing = []
        if started and moved:
            timing.append(f"replay {(moved - started).total_seconds():.1f}s")
        if moved and finished:
            timing.append(f"verify {(finished - moved).total_seconds():.1f}s")
        fields = [
            ("phase", status.get("phase")),
            ("matched", status.get("matched")),
            ("replayed", status.get("replayed")),
            ("skipped", status.get("skipped")),
            ("completed", status.get("completed")),
            ("failedAgain", status.get("failedAgain")),
            ("timing", ", ".join(timing)),
            ("message", status.get("message")),
        ]
        conditions = ", ".join(
            f"{c.get('type')}={c.get('status')} ({c.get('reason')})" for c in status.get("conditions") or []
        )
        fields.append(("conditions", conditions))
        self.say(f"dlqr/{REPLAY} .status (abridged; timing from its timestamps):")
        for key, value in fields:
            self.console.print(
                f"        {key + ':':<12} {value}", highlight=False, markup=False, soft_wrap=True
            )
        if self.kubectl is not None:
            proc = await asyncio.to_thread(
                self.kubectl, "-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp"
            )
            events = proc.stdout
        else:
            events = await asyncio.to_thread(cluster.table, "v1/events", NAMESPACE, sort_by=".lastTimestamp")
        self.shell(f"kubectl -n {NAMESPACE} get events --sort-by=.lastTimestamp", events)

        client = aioredis.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            counts = await BullQueue(client, QUEUE).counts("failed", "completed")
        finally:
            await client.aclose()
        failed, completed = counts["failed"], counts["completed"]
        seeded = workload.counts["whatsapp.send"]
        self.say(
            f"Redis: {failed} jobs still failed (the {workload.total - seeded} pdf.generate and "
            f"email.send jobs the selector left alone), {completed} completed; the worker ran "
            f"{len(worker.processed)} jobs, {worker.duplicates} of them twice"
        )
        verdict = "green" if status.get("phase") == "Succeeded" else "red"
        self.console.print(
            f"[bold {verdict}]{status.get('phase')}[/]: matched {status.get('matched')} of {seeded} "
            f"whatsapp.send jobs, replayed {status.get('replayed')}, completed {status.get('completed')}, "
            f"failed again {status.get('failedAgain')}; total {self.stamp().strip()}",
            highlight=False,
        )

    async def keep_running(self) -> None:
        """--keep: print how to reach everything, then wait for Ctrl-C."""
        assert self.cluster is not None and self.redis is not None
        kc = self.cluster.kubeconfig
        self.console.rule("still running (--keep); Ctrl-C stops everything")
        self.console.print(
            f"export KUBECONFIG={kc}\n"
            f"kubectl -n {NAMESPACE} get dlqr,events\n"
            f"kubectl -n {NAMESPACE} describe dlqr {REPLAY}\n"
            f"kubectl explain dlqr.spec.selector\n"
            f"requeue inspect --redis-url {self.redis.url} --queue {QUEUE}\n"
            f"curl -s http://127.0.0.1:{self.metrics_port}/metrics | grep ^requeue_\n"
            f"operator log: {self.operator_log}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        await asyncio.Event().wait()

    # -- cleanup

    def cleanup(self) -> None:
        """Stop every process and server this run started, then remove its files; safe to call twice."""
        stopped = []
        if self.operator is not None:
            stopped.append(f"operator (exit {_stop(self.operator)})")
            self.operator = None
        if self.redis is not None:
            if self.redis.pid is not None:
                stopped.append("redis-server")
            self.redis.stop()
            self.redis = None
        if self.cluster is not None:
            self.cluster.close()  # also removes its workdir
            self.cluster = None
            stopped.append("API server emulator")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if stopped:
            self.say(f"stopped {', '.join(stopped)}; removed {self.workdir}")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM the process group (kopf shuts down gracefully), SIGKILL it if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the operator itself left in its group
    proc.wait(timeout=timeout)
    return proc.returncode
