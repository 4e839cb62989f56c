"""Job latency and outcomes, against real Node BullMQ workers that process slow jobs.

A worker that takes every job one at a time, a quarter of a second each, makes the
later jobs wait for the earlier ones: latency (added to finished) grows job after
job while processing stays near 250 ms. The test reads the job hashes itself
(``timestamp``, ``processedOn``, ``finishedOn``) and checks what a user reads
against them: ``.status.queues[].latencyP95Seconds``, the ``thresholds.latencyP95``
breach, and the buckets and counters on the Prometheus registry ``/metrics`` serves.

Time is the evaluation's injected ``now`` where the window matters; nothing sleeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from requeue.api.base import find_condition
from requeue.api.conditions import PolicyCondition, Reason
from requeue.api.policy import QueuePolicySpec, QueueState
from requeue.metrics import JOB_SECONDS_BUCKETS
from requeue.policy.evaluate import EvaluationResult, PolicyRef
from requeue.policy.series import forget_policy
from support.node import FailRule, NodeWorker, run_producer
from support.policy_eval import evaluate_after

POLICY = PolicyRef(namespace="visapi", name="latency", uid="5e1f-latency-uid", generation=1)
MAJOR = 6
NAMES = ("pdf.generate", "email.send", "sms.send", "report.build")


def spec(max_job_names: int, **thresholds: Any) -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": ["documents"],
            "thresholds": thresholds,
            "metrics": {"maxJobNames": max_job_names},
        }
    )


@dataclass(frozen=True)
class Hash:
    """One finished job as its hash records it."""

    id: str
    name: str
    added: int
    processed: int
    finished: int

    @property
    def latency(self) -> float:
        return (self.finished - self.added) / 1000

    @property
    def processing(self) -> float:
        return (self.finished - self.processed) / 1000


async def read_hashes(redis: aioredis.Redis, queue: str, ids: list[str]) -> list[Hash]:
    """The finished jobs' hashes, in the order BullMQ finished them."""
    out = []
    for jid in ids:
        name, added, processed, finished = [
            str(v)
            for v in await redis.hmget(
                f"bull:{queue}:{jid}", "name", "timestamp", "processedOn", "finishedOn"
            )
        ]
        out.append(Hash(jid, name, int(added), int(processed), int(finished)))
    return sorted(out, key=lambda h: (h.finished, int(h.id)))


def exact_p95(values: list[float]) -> float:
    """Nearest rank: the smallest value with at least 95% of the values at or below it."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": POLICY.namespace, "policy": POLICY.name, **labels})


def only_queue(result: EvaluationResult) -> QueueState:
    (state,) = result.status.queues
    return state


@pytest.mark.parametrize("major", [5, 6])
async def test_latency_p95_histograms_and_outcomes_match_the_job_hashes(
    redis_client: aioredis.Redis, redis_url: str, major: int
) -> None:
    forget_policy(POLICY.namespace, POLICY.name)  # series of an earlier test of the session
    jobs = [{"name": NAMES[i % len(NAMES)], "data": {"i": i}} for i in range(16)]
    fail = [FailRule("printer on fire", name="report.build")]
    async with NodeWorker(redis_url, "documents", major=major, process_ms=250, fail=fail) as worker:
        ids = await run_producer(redis_url, "documents", jobs, major=major)
        await worker.wait_for_final(ids)
    hashes = await read_hashes(redis_client, "documents", ids)
    latencies = [h.latency for h in hashes]
    # the worker takes one job at a time: the last waited for the others
    assert max(latencies) > 3 * min(h.processing for h in hashes)

    policy = spec(2, latencyP95="1s")
    first = await evaluate_after(POLICY, redis_client, policy, None, datetime.now(UTC))

    state = only_queue(first)
    expected = exact_p95(latencies)
    assert state.latency_jobs == len(ids)
    assert state.latency_p95_seconds is not None
    assert expected <= state.latency_p95_seconds <= expected * 1.05 + 0.001
    assert expected > 1  # the threshold is breached, by the data, not by the test's choice
    assert not state.healthy
    assert [b.kind for b in state.breaches] == ["latencyP95"]
    assert state.reasons[0].startswith(
        f"job latency p95 {state.latency_p95_seconds:g}s > 1s over 5m (16 jobs)"
    )
    healthy = find_condition(first.status.conditions, PolicyCondition.HEALTHY)
    assert healthy is not None and healthy.reason == Reason.LATENCY_ABOVE_THRESHOLD
    assert [e.reason for e in first.events if e.type == "Warning"] == [Reason.LATENCY_ABOVE_THRESHOLD]

    # maxJobNames 2: the first two names to finish keep their label, the rest are "other"
    admitted = list(dict.fromkeys(h.name for h in hashes))[:2]
    assert admitted == ["pdf.generate", "email.send"]  # FIFO, one at a time

    def label(h: Hash) -> str:
        return h.name if h.name in admitted else "other"

    for job in [*admitted, "other"]:
        mine = [h for h in hashes if label(h) == job]
        for le in JOB_SECONDS_BUCKETS:
            labels = {"queue": "documents", "job": job, "le": str(float(le))}
            assert sample("bullmq_job_latency_seconds_bucket", **labels) == sum(h.latency <= le for h in mine)
            assert sample("bullmq_job_processing_seconds_bucket", **labels) == sum(
                h.processing <= le for h in mine
            )
        assert sample("bullmq_job_latency_seconds_count", queue="documents", job=job) == len(mine)
        latency_sum = sample("bullmq_job_latency_seconds_sum", queue="documents", job=job)
        assert latency_sum is not None and math.isclose(latency_sum, sum(h.latency for h in mine))
        failed = sum(h.name == "report.build" for h in mine)
        outcome = {"queue": "documents", "job": job}
        assert sample("bullmq_jobs_finished_total", **outcome, outcome="completed") == len(mine) - failed
        assert sample("bullmq_jobs_finished_total", **outcome, outcome="failed") == (failed or None)
    assert (
        sample("bullmq_jobs_finished_total", queue="documents", job="sms.send", outcome="completed") is None
    )

    # the next evaluation reads only new entries: nothing counted twice, the window keeps the p95
    again = await evaluate_after(POLICY, redis_client, policy, first, datetime.now(UTC))
    assert only_queue(again).latency_p95_seconds == state.latency_p95_seconds
    assert sample("bullmq_job_latency_seconds_count", queue="documents", job="other") == 8

    # once the window has passed, nothing is left to judge: the breach recovers
    later = await evaluate_after(POLICY, redis_client, policy, again, _after(hashes, 6))
    calm = only_queue(later)
    assert (calm.latency_p95_seconds, calm.latency_jobs, calm.healthy) == (None, 0, True)
    assert [e.reason for e in later.events] == [Reason.RECOVERED]

    forget_policy(POLICY.namespace, POLICY.name)  # a deleted policy: its per-job series go
    assert sample("bullmq_job_latency_seconds_count", queue="documents", job="other") is None
    assert (
        sample("bullmq_jobs_finished_total", queue="documents", job="email.send", outcome="completed") is None
    )


def _after(hashes: list[Hash], minutes: int) -> datetime:
    return datetime.fromtimestamp(max(h.finished for h in hashes) / 1000, UTC) + timedelta(minutes=minutes)


async def test_jobs_removed_on_complete_are_counted_as_unknown_and_not_timed(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    forget_policy(POLICY.namespace, POLICY.name)
    jobs = [{"name": "email.send", "data": {"i": i}, "opts": {"removeOnComplete": True}} for i in range(5)]
    async with NodeWorker(redis_url, "documents", major=MAJOR) as worker:
        ids = await run_producer(redis_url, "documents", jobs, major=MAJOR)
        await worker.wait_for_final(ids)
    assert not await redis_client.exists(*(f"bull:documents:{i}" for i in ids))

    result = await evaluate_after(POLICY, redis_client, spec(20, latencyP95="1s"), None, datetime.now(UTC))

    state = only_queue(result)
    assert (state.latency_p95_seconds, state.latency_jobs, state.healthy) == (None, 0, True)
    assert sample("bullmq_jobs_finished_total", queue="documents", job="unknown", outcome="completed") == 5
    assert sample("bullmq_job_latency_seconds_count", queue="documents", job="unknown") is None
    forget_policy(POLICY.namespace, POLICY.name)


async def test_only_the_newest_jobs_up_to_max_job_lookups_are_read(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    forget_policy(POLICY.namespace, POLICY.name)
    jobs = [{"name": "email.send", "data": {"i": i}} for i in range(5)]
    async with NodeWorker(redis_url, "documents", major=MAJOR) as worker:
        ids = await run_producer(redis_url, "documents", jobs, major=MAJOR)
        await worker.wait_for_final(ids)
    policy = QueuePolicySpec.model_validate(
        {**spec(20).model_dump(by_alias=True, exclude_none=True), "metrics": {"maxJobLookups": 2}}
    )

    result = await evaluate_after(POLICY, redis_client, policy, None, datetime.now(UTC))

    assert only_queue(result).latency_jobs == 2
    assert sample("bullmq_jobs_finished_total", queue="documents", job="email.send", outcome="completed") == 2
    assert sample("bullmq_jobs_finished_total", queue="documents", job="unknown", outcome="completed") == 3
    assert sample("bullmq_job_latency_seconds_count", queue="documents", job="email.send") == 2
    forget_policy(POLICY.namespace, POLICY.name)


async def test_garbled_job_hashes_are_counted_and_not_timed(redis_client: aioredis.Redis) -> None:
    """Hashes requeue does not control: a 5000-character name, times that are not numbers or run
    backwards. The evaluation neither fails nor observes a made-up latency."""
    forget_policy(POLICY.namespace, POLICY.name)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    await redis_client.hset("bull:documents:1", mapping={"name": "n" * 5000, "timestamp": "soon"})
    await redis_client.hset(
        "bull:documents:2", mapping={"name": "pdf", "timestamp": now_ms + 60_000, "finishedOn": "inf"}
    )
    await redis_client.lpush("bull:documents:wait", "3")  # the queue exists
    for jid in ("1", "2", "wait"):  # "wait": the queue's own list, not a hash
        await redis_client.xadd("bull:documents:events", {"event": "completed", "jobId": jid})
    await redis_client.xadd("bull:documents:events", {"event": "failed", "noJobId": "x"})

    result = await evaluate_after(POLICY, redis_client, spec(20, latencyP95="1s"), None, datetime.now(UTC))

    state = only_queue(result)
    assert (state.latency_p95_seconds, state.latency_jobs, state.healthy) == (None, 0, True)
    long_name = {"queue": "documents", "job": "n" * 200}
    assert sample("bullmq_jobs_finished_total", **long_name, outcome="completed") == 1
    assert sample("bullmq_jobs_finished_total", queue="documents", job="pdf", outcome="completed") == 1
    assert sample("bullmq_job_latency_seconds_count", **long_name) is None
    assert sample("bullmq_job_latency_seconds_count", queue="documents", job="pdf") is None
    assert sample("bullmq_jobs_finished_total", queue="documents", job="unknown", outcome="completed") == 1
    assert state.failure_rate_percent == 25.0  # the entry without a job id still counts as a failure
    forget_policy(POLICY.namespace, POLICY.name)
