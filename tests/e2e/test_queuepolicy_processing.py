"""QueuePolicy end to end: processing stopped (no worker runs while jobs wait), through the operator.

kubectl -> emulator <- `requeue run` (a subprocess); real redis-server, real Node BullMQ
producer and worker; Slack is a local webhook the test runs. The operator's clock is real,
so ``stalledFor`` is short and every wait polls the status.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from support.kube import Kube
from support.node import NodeWorker, run_producer
from support.queuepolicy import (
    SlackSink,
    apply,
    condition,
    evaluations,
    metric,
    operator_with_metrics,
    policy,
    policy_events,
    queue_state,
    scrape,
    wait_policy,
)

pytestmark = pytest.mark.e2e


async def test_processing_stopped_while_no_worker_runs_then_resumed(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis, slack: SlackSink
) -> None:
    operator, port = await operator_with_metrics(kube, operator_factory, redis_url, slack=slack)
    ids = await run_producer(
        redis_url, "default", [{"name": "invoice.send", "data": {"i": i}} for i in range(6)], major=6
    )
    await apply(
        kube,
        policy(
            "processing",
            ["default"],
            interval="1s",
            thresholds={"stalledFor": "3s"},
            alerts={"slackWebhookSecretRef": {"name": "ops-slack", "key": "url"}},
        ),
    )
    st = await wait_policy(
        kube,
        "processing",
        lambda s: queue_state(s, "default").get("processingStopped"),
        operator=operator,
        what="processingStopped with no worker running",
    )
    stopped = queue_state(st, "default")["processingStopped"]
    assert stopped["reason"] == "WorkersDown" and "6 waiting" in stopped["message"], stopped
    assert queue_state(st, "default")["workers"] == 0
    healthy = condition(st, "Healthy")
    assert healthy["status"] == "False" and healthy["reason"] == "ProcessingStopped", healthy
    text = await scrape(port)
    idle = metric(
        text, "bullmq_queue_idle_seconds", namespace="default", policy="processing", queue="default"
    )
    assert idle is not None and idle >= 3

    await evaluations(kube, "processing", 3, operator=operator)
    assert [e["reason"] for e in await policy_events(kube, "processing")].count("ProcessingStopped") == 1
    assert len(slack.messages) == 1 and "processing stopped (WorkersDown)" in slack.messages[0]

    async with NodeWorker(redis_url, "default", major=6) as worker:
        await worker.wait_for_final(ids)
        st = await wait_policy(
            kube,
            "processing",
            lambda s: condition(s, "Healthy").get("status") == "True",
            operator=operator,
            what="Healthy again once a worker processed the backlog",
        )
    assert queue_state(st, "default").get("processingStopped") is None
    await wait_policy(
        kube,
        "processing",
        lambda s: len(slack.messages) >= 2,
        operator=operator,
        timeout=40,
        what="the Slack recovery message (after the notifier's 10 s rate limit)",
    )
    await evaluations(kube, "processing", 2, operator=operator)
    reasons = [e["reason"] for e in await policy_events(kube, "processing")]
    assert reasons.count("ProcessingStopped") == 1 and reasons.count("Recovered") == 1, reasons
    assert len(slack.messages) == 2 and ":large_green_circle:" in slack.messages[1]
