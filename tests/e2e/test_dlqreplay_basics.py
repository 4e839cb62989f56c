"""DLQReplay end to end: kubectl -> kmock API server <- `requeue run` subprocess; real Redis, real BullMQ.

The operator runs as a subprocess exactly as in a pod (``python -m requeue run``);
what the tests assert is what a user sees (kubectl get/describe/events) and
what Redis holds.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from requeue.redact import redact_url
from support import async_wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.dlqreplay import (
    condition,
    event_reasons,
    operator_command,
    replay,
    secret,
    status,
    wait_gone_async,
    wait_status_async,
)
from support.kube import Kube, KubectlError, load_crds, start_kube
from support.operator_proc import OperatorProcess
from support.redis_server import free_port

pytestmark = pytest.mark.e2e


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def datetime_of(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def jobs(n: int, name: str = "whatsapp.send", reason: str = "429 Too Many Requests") -> list[JobSpec]:
    return [JobSpec(name=name, data={"n": i}, reason=reason) for i in range(n)]


async def kubectl(kube: Kube, *args: str, input: str | None = None) -> str:
    """kubectl in a thread, so BullMQ workers on the test's loop keep running."""
    proc = await asyncio.to_thread(kube.kubectl, *args, input=input)
    return proc.stdout


async def apply(kube: Kube, manifest: dict[str, Any]) -> str:
    proc = await asyncio.to_thread(kube.kubectl.apply, manifest)
    return proc.stdout


async def test_missing_secret_is_a_condition_then_the_replay_recovers(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "default", jobs(30))
    metrics_port = free_port()
    operator = operator_factory(operator_command(metrics_port=metrics_port))

    await apply(kube, replay("r1", "default"))
    st = await wait_status_async(
        kube,
        "r1",
        lambda s: condition(s, "Ready").get("reason") == "SecretNotFound",
        operator=operator,
        what="Ready=False/SecretNotFound",
    )
    assert st["phase"] == "Pending"
    assert condition(st, "Ready")["status"] == "False"
    assert "default/redis" in condition(st, "Ready")["message"]
    assert await redis_client.zcard("bull:default:failed") == 30  # nothing moved
    reasons = await asyncio.to_thread(event_reasons, kube, "r1")
    assert reasons.count("SecretNotFound") == 1  # one Event per distinct problem, not per retry

    await apply(kube, secret("redis", {"url": redis_url}))
    st = await wait_status_async(
        kube,
        "r1",
        lambda s: s.get("phase") == "Succeeded",
        operator=operator,
        what="phase Succeeded after the Secret appeared",
    )
    assert st["matched"] == st["replayed"] == 30
    assert st["progress"] == "30/30"
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Succeeded")["status"] == "True"
    assert await redis_client.zcard("bull:default:failed") == 0
    assert sorted(await redis_client.lrange("bull:default:wait", 0, -1)) == sorted(ids)
    assert "Recovered" in await asyncio.to_thread(event_reasons, kube, "r1")

    metrics = await asyncio.to_thread(scrape, metrics_port)
    assert 'requeue_replays{namespace="default",phase="Succeeded"} 1.0' in metrics
    assert (
        'requeue_replay_jobs_total{namespace="default",outcome="replayed",policy="",queue="default",'
        'replay="r1"} 30.0'
    ) in metrics

    async def redis_up_gone() -> bool:  # a finished replay no longer talks to Redis
        text = await asyncio.to_thread(scrape, metrics_port)
        return 'requeue_redis_up{kind="DLQReplay",namespace="default",owner="r1"}' not in text

    await async_wait_until(redis_up_gone, message="requeue_redis_up of the finished replay removed")
    assert status(kube, "r1")["observedGeneration"] == 1


async def test_two_replays_on_one_queue_take_turns(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    a_ids = await make_failed_jobs(redis_url, "default", jobs(150, name="a.job"))
    b_ids = await make_failed_jobs(redis_url, "default", jobs(20, name="b.job"))
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())

    await apply(
        kube,
        replay(
            "first", "default", selector={"jobNames": ["a.*"]}, rate={"jobsPerSecond": 50, "batchSize": 10}
        ),
    )
    await wait_status_async(
        kube,
        "first",
        lambda s: s.get("phase") == "Replaying",
        operator=operator,
        what="the first replay replaying",
    )
    await apply(kube, replay("second", "default", selector={"jobNames": ["b.*"]}))
    st = await wait_status_async(
        kube,
        "second",
        lambda s: condition(s, "Ready").get("reason") == "QueueLocked",
        operator=operator,
        what="the second replay waiting for the lease",
    )
    assert "default/first" in condition(st, "Ready")["message"]
    assert st["replayed"] == 0
    assert "QueueLocked" in await asyncio.to_thread(event_reasons, kube, "second")

    first = await wait_status_async(
        kube,
        "first",
        lambda s: s.get("phase") == "Succeeded",
        operator=operator,
        timeout=60,
        what="the first replay's end",
    )
    second = await wait_status_async(
        kube,
        "second",
        lambda s: s.get("phase") == "Succeeded",
        operator=operator,
        timeout=60,
        what="the second replay's end",
    )
    assert first["replayed"] == 150 and second["replayed"] == 20
    assert datetime_of(second["startedAt"]) >= datetime_of(first["completedAt"])
    assert sorted(await redis_client.lrange("bull:default:wait", 0, -1)) == sorted(a_ids + b_ids)
    assert not await redis_client.exists("requeue:lease:bull:default")


async def test_reapply_and_edit_after_the_end_change_nothing(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis, tmp_path: Any
) -> None:
    await make_failed_jobs(redis_url, "default", jobs(10))
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    manifest = replay("once", "default", selector={"jobNames": ["whatsapp.*"]})
    await apply(kube, manifest)
    done = await wait_status_async(
        kube, "once", lambda s: s.get("phase") == "Succeeded", operator=operator, what="phase Succeeded"
    )
    async with run_worker(redis_url, "default") as worker:  # workers take the replayed jobs ...
        await worker.wait_for(10)
    later = await make_failed_jobs(redis_url, "default", jobs(5))  # ... and later the same kind fails again

    assert "unchanged" in await apply(kube, manifest)  # GitOps re-sync of the same file: no-op
    edited = {**manifest, "spec": {**manifest["spec"], "rate": {"jobsPerSecond": 5}}}
    assert "configured" in await apply(kube, edited)
    st = await wait_status_async(
        kube,
        "once",
        lambda s: condition(s, "SpecIgnored").get("status") == "True",
        operator=operator,
        what="condition SpecIgnored",
    )
    assert condition(st, "SpecIgnored")["reason"] == "ReplayFinished"
    assert condition(st, "SpecIgnored")["observedGeneration"] == 2
    assert "SpecIgnored" in await asyncio.to_thread(event_reasons, kube, "once")
    assert st["phase"] == "Succeeded" and st["replayed"] == done["replayed"] == 10
    assert st["completedAt"] == done["completedAt"]
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(later)
    with pytest.raises(KubectlError, match="selector is immutable"):  # the CRD's CEL rule
        await kubectl(
            kube,
            "patch",
            "dlqr",
            "once",
            "--type=merge",
            "-p",
            '{"spec": {"selector": {"jobNames": ["other"]}}}',
        )

    # The operator restarting does not run it again either.
    operator.restart()
    operator.wait_for_log(r"Daemon 'replay' succeeded", timeout=30)
    assert status(kube, "once")["completedAt"] == done["completedAt"]
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(later)


async def test_a_queue_with_no_bullmq_keys_fails_queue_not_found_once(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """``queue: defualt`` ends Failed/QueueNotFound naming the queues there; not retried, not "Succeeded"."""
    await make_failed_jobs(redis_url, "default", jobs(3))
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await apply(kube, replay("typo", "defualt"))
    st = await wait_status_async(
        kube, "typo", lambda s: s.get("phase") == "Failed", operator=operator, what="phase Failed"
    )
    shown = redact_url(redis_url)  # the password never shows
    expected = (
        f'queue "defualt" has no BullMQ keys under prefix "bull" in {shown}; did you mean "default"? '
        "queues there: default"
    )
    assert st["message"] == expected
    for type_ in ("Ready", "Succeeded"):
        assert (condition(st, type_)["status"], condition(st, type_)["reason"]) == ("False", "QueueNotFound")
    row = await kubectl(kube, "get", "dlqr", "typo", "--no-headers")
    assert row.split()[:3] == ["typo", "defualt", "Failed"], row
    operator.wait_for_log(r"Daemon 'replay' succeeded", timeout=30)  # the daemon ended: no retry loop
    assert (await asyncio.to_thread(event_reasons, kube, "typo")).count("QueueNotFound") == 1
    assert await redis_client.zcard("bull:default:failed") == 3
    assert await redis_client.keys("bull:defualt:*") == []
    assert not await redis_client.exists("requeue:lease:bull:defualt")


def _without_cel(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_cel(v) for v in node]
    return node


@pytest.fixture
def kube_without_cel() -> Iterator[Kube]:
    """An API server that does not run the CRDs' CEL rules (before Kubernetes 1.25, or CEL disabled)."""
    k = start_kube(crds=[_without_cel(crd) for crd in load_crds()])
    try:
        yield k
    finally:
        k.close()


async def test_edits_while_running_suspend_rate_and_an_immutable_selector(
    kube_without_cel: Kube, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    kube = kube_without_cel
    operator = OperatorProcess(kube.kubeconfig, tmp_path / "operator.log", command=operator_command())
    try:
        await _edits_while_running(kube, operator.start(), redis_url, redis_client)
    finally:
        operator.stop()


async def _edits_while_running(
    kube: Kube, operator: OperatorProcess, redis_url: str, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "default", jobs(100, name="a.job"))
    b_ids = await make_failed_jobs(redis_url, "default", jobs(20, name="b.job"))
    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(
        kube,
        replay("slow", "default", selector={"jobNames": ["a.*"]}, rate={"jobsPerSecond": 10, "batchSize": 5}),
    )
    await wait_status_async(
        kube, "slow", lambda s: s.get("replayed", 0) > 0, operator=operator, what="some jobs replayed"
    )

    await kubectl(kube, "patch", "dlqr", "slow", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    st = await wait_status_async(
        kube, "slow", lambda s: s.get("phase") == "Suspended", operator=operator, what="phase Suspended"
    )
    assert st["replayed"] < 100
    assert not await redis_client.exists("requeue:lease:bull:default")  # suspended: lease released

    # No CEL in the emulator: the operator itself keeps the selector it started with.
    await kubectl(
        kube,
        "patch",
        "dlqr",
        "slow",
        "--type=merge",
        "-p",
        '{"spec": {"suspend": false, "selector": {"jobNames": ["b.*"]},'
        ' "rate": {"jobsPerSecond": 1000, "batchSize": 100}}}',
    )
    st = await wait_status_async(
        kube,
        "slow",
        lambda s: s.get("phase") == "Succeeded",
        operator=operator,
        timeout=30,
        what="phase Succeeded after resuming faster",
    )
    assert st["matched"] == st["replayed"] == 100
    assert condition(st, "SpecIgnored")["reason"] == "ImmutableFieldChanged"
    assert "spec.selector" in condition(st, "SpecIgnored")["message"]
    reasons = await asyncio.to_thread(event_reasons, kube, "slow")
    assert "Suspended" in reasons and "Resumed" in reasons and "SpecIgnored" in reasons
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(b_ids)


async def test_delete_mid_run_resumes_the_queue_and_releases_everything(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "held", jobs(10))
    await make_failed_jobs(redis_url, "busy", jobs(200))
    await apply(kube, secret("redis", {"url": redis_url}))
    metrics_port = free_port()
    operator = operator_factory(operator_command(metrics_port=metrics_port))
    # "held" waits for a gate that never passes, with the queue paused by the replay;
    # "busy" is halfway through moving jobs.
    await apply(
        kube,
        replay(
            "held",
            "held",
            pauseQueue=True,
            gatePolicy={"interval": "500ms"},
            gates=[{"name": "down", "http": {"url": "http://127.0.0.1:9/health", "timeout": "1s"}}],
        ),
    )
    await apply(kube, replay("busy", "busy", rate={"jobsPerSecond": 20, "batchSize": 10}))
    held = await wait_status_async(
        kube,
        "held",
        lambda s: s.get("queuePausedByReplay") is True,
        operator=operator,
        what="queue paused by the replay",
    )
    busy = await wait_status_async(
        kube, "busy", lambda s: s.get("replayed", 0) > 0, operator=operator, what="jobs moving"
    )
    assert await redis_client.hexists("bull:held:meta", "paused")
    assert await redis_client.exists("requeue:lease:bull:held", "requeue:lease:bull:busy") == 2
    uids = {
        name: kube.get("requeue.dev/v1alpha1/dlqreplays", name)["metadata"]["uid"]  # type: ignore[index]
        for name in ("held", "busy")
    }

    redis_up = [
        'requeue_redis_up{kind="DLQReplay",namespace="default",owner="held"}',
        'requeue_redis_up{kind="DLQReplay",namespace="default",owner="busy"}',
    ]
    metrics = await asyncio.to_thread(scrape, metrics_port)
    assert all(series in metrics for series in redis_up), metrics

    await kubectl(kube, "delete", "dlqr", "held", "busy", "--wait=false")
    for name in ("held", "busy"):
        await wait_gone_async(kube, name, operator=operator)
    metrics = await asyncio.to_thread(scrape, metrics_port)
    assert not any(series in metrics for series in redis_up), metrics  # no stale series of deleted replays
    assert not await redis_client.hexists("bull:held:meta", "paused")  # resumed: requeue had paused it
    assert not await redis_client.exists("requeue:lease:bull:held", "requeue:lease:bull:busy")
    for uid in uids.values():
        assert await redis_client.keys(f"requeue:replay:{uid}:*") == []
    moved = await redis_client.llen("bull:busy:wait")
    assert moved >= busy["replayed"] and moved + await redis_client.zcard("bull:busy:failed") == 200
    reasons = await asyncio.to_thread(event_reasons, kube, "held")
    assert "QueueResumed" in reasons and "Cancelled" in reasons
    assert held["phase"] == "WaitingForGates"


async def test_unreachable_redis_waits_until_the_secret_is_fixed_and_unstarted_replays_delete_at_once(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "default", jobs(5))
    health_port = free_port()
    operator = operator_factory(operator_command("--liveness", f"http://127.0.0.1:{health_port}/healthz"))
    await apply(kube, secret("redis", {"url": f"redis://:hunter2@127.0.0.1:{free_port()}/0"}))
    await apply(kube, replay("nowhere", "default"))
    await apply(kube, replay("never-started", "default", secret_name="no-such-secret"))

    st = await wait_status_async(
        kube,
        "nowhere",
        lambda s: condition(s, "Ready").get("reason") == "RedisUnreachable",
        operator=operator,
        what="Ready=False/RedisUnreachable",
    )
    assert "hunter2" not in str(st) and "***" in condition(st, "Ready")["message"]  # redacted
    await wait_status_async(
        kube,
        "never-started",
        lambda s: condition(s, "Ready").get("reason") == "SecretNotFound",
        operator=operator,
        what="Ready=False/SecretNotFound",
    )
    await kubectl(kube, "delete", "dlqr", "never-started", "--wait=false")
    await wait_gone_async(kube, "never-started", operator=operator)  # nothing in Redis to clean up

    await apply(kube, secret("redis", {"url": redis_url}))  # the on-call person fixes the Secret
    st = await wait_status_async(
        kube,
        "nowhere",
        lambda s: s.get("phase") == "Succeeded",
        operator=operator,
        timeout=60,
        what="phase Succeeded once Redis is reachable",
    )
    assert st["replayed"] == 5
    assert sorted(await redis_client.lrange("bull:default:wait", 0, -1)) == sorted(ids)
    reasons = await asyncio.to_thread(event_reasons, kube, "nowhere")
    assert reasons.count("RedisUnreachable") == 1 and "Recovered" in reasons
    events_text = await kubectl(kube, "get", "events")
    assert "hunter2" not in events_text
    assert "hunter2" not in operator.logs()

    def healthz() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=10) as response:
            return int(response.status)

    assert await asyncio.to_thread(healthz) == 200
