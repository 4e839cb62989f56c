"""QueuePolicy end to end: job latency from slow jobs, through the operator, kubectl and /metrics.

kubectl -> emulator <- `requeue run` (a subprocess); real redis-server, a real Node BullMQ
producer and a worker that takes a quarter of a second per job, one at a time. The test reads
the job hashes itself and checks the status, the Events and the scraped histogram against them;
deleting the policy takes its per-job series away.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import redis.asyncio as aioredis

from requeue.metrics import JOB_SECONDS_BUCKETS
from support.kube import Kube
from support.node import NodeWorker, run_producer
from support.queuepolicy import (
    apply,
    condition,
    evaluations,
    kubectl,
    metric,
    operator_with_metrics,
    policy,
    policy_events,
    queue_state,
    scrape,
    wait_policy,
)

pytestmark = pytest.mark.e2e

NAMES = ("pdf.generate", "email.send", "sms.send")


async def test_latency_p95_is_flagged_and_exported_per_job_name_and_goes_with_the_policy(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    operator, port = await operator_with_metrics(kube, operator_factory, redis_url)
    jobs = [{"name": NAMES[i % len(NAMES)], "data": {"i": i}} for i in range(12)]
    async with NodeWorker(redis_url, "documents", major=6, process_ms=250) as worker:
        ids = await run_producer(redis_url, "documents", jobs, major=6)
        await worker.wait_for_final(ids)
    rows = []
    for jid in ids:
        name, added, finished = [
            str(v)
            for v in await redis_client.hmget(f"bull:documents:{jid}", "name", "timestamp", "finishedOn")
        ]
        rows.append((int(finished), int(jid), name, (int(finished) - int(added)) / 1000))
    rows.sort()
    latencies = sorted(r[3] for r in rows)
    exact = latencies[math.ceil(0.95 * len(latencies)) - 1]
    assert exact > 1

    await apply(
        kube,
        policy(
            "latency",
            ["documents"],
            interval="1s",
            thresholds={"latencyP95": "1s"},
            metrics={"maxJobNames": 1},
        ),
    )
    st = await wait_policy(
        kube,
        "latency",
        lambda s: queue_state(s, "documents").get("latencyJobs") == len(ids),
        operator=operator,
        what="latencyJobs counting every finished job",
    )
    documents = queue_state(st, "documents")
    assert exact <= documents["latencyP95Seconds"] <= exact * 1.05 + 0.001, documents
    assert documents["healthy"] is False and documents["breaches"][0]["kind"] == "latencyP95"
    healthy = condition(st, "Healthy")
    assert healthy["status"] == "False" and healthy["reason"] == "LatencyAboveThreshold", healthy
    out = await kubectl(
        kube, "get", "queuepolicy", "latency", "-o", "jsonpath={.status.queues[0].latencyP95Seconds}"
    )
    assert float(out) == documents["latencyP95Seconds"]

    await evaluations(kube, "latency", 2, operator=operator)
    reasons = [e["reason"] for e in await policy_events(kube, "latency")]
    assert reasons.count("LatencyAboveThreshold") == 1, reasons

    text = await scrape(port)
    first = rows[0][2]  # maxJobNames 1: the first name to finish keeps its label
    labelled = {"namespace": "default", "policy": "latency", "queue": "documents"}
    for job in (first, "other"):
        mine = [r[3] for r in rows if (r[2] == first) == (job == first)]
        for le in JOB_SECONDS_BUCKETS:
            bucket = metric(text, "bullmq_job_latency_seconds_bucket", **labelled, job=job, le=str(float(le)))
            assert bucket == sum(v <= le for v in mine), (job, le)
        completed = metric(text, "bullmq_jobs_finished_total", **labelled, job=job, outcome="completed")
        assert completed == len(mine)
    assert metric(text, "bullmq_job_latency_seconds_count", **labelled, job=NAMES[2]) is None

    await kubectl(kube, "delete", "queuepolicy", "latency", "--timeout=60s")
    text = await scrape(port)
    for name in ("bullmq_job_latency_seconds_count", "bullmq_job_processing_seconds_count"):
        assert metric(text, name, policy="latency") is None, name
    assert metric(text, "bullmq_jobs_finished_total", policy="latency") is None
