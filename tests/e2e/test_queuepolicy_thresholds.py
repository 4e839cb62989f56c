"""QueuePolicy end to end: thresholds, Events, Slack, `kubectl get qpol`, /metrics, dry run.

kubectl -> emulator <- `requeue run` (a subprocess); real redis-server, real
BullMQ workers failing real jobs; Slack is a local webhook the test runs.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from support.bullmq_jobs import JobSpec, create_queues, make_failed_jobs, run_worker
from support.dlqreplay import operator_command
from support.kube import Kube
from support.leaks import SLACK_TOKEN
from support.queuepolicy import (
    SlackSink,
    apply,
    apply_until_green,
    condition,
    evaluations,
    gated_policy,
    kubectl,
    metric,
    operator_with_metrics,
    policy,
    policy_events,
    queue_state,
    scrape,
    wait_policy,
    with_a_redis_gate,
)

pytestmark = pytest.mark.e2e


async def test_breach_alerts_once_recovery_once_metrics_and_printer_column(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis, slack: SlackSink
) -> None:
    operator, port = await operator_with_metrics(kube, operator_factory, redis_url, slack=slack)
    await create_queues(redis_url, "default", "bulk")  # the app's queues exist, with nothing in them
    await apply(
        kube,
        policy(
            "visapi-queues",
            ["default", "bulk"],
            interval="1s",
            thresholds={"failed": 5},
            alerts={"slackWebhookSecretRef": {"name": "ops-slack", "key": "url"}},
        ),
    )
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: condition(s, "Healthy").get("status") == "True",
        operator=operator,
        what="Healthy=True on empty queues",
    )
    assert condition(st, "Ready")["status"] == "True"
    assert slack.messages == []

    # failing workers push `default` over the threshold
    failed_ids = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("whatsapp.send", {"to": i}, reason="ECONNREFUSED 10.0.0.7:5432") for i in range(8)],
    )
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: condition(s, "Healthy").get("status") == "False",
        operator=operator,
        what="Healthy=False after 8 failures",
    )
    healthy = condition(st, "Healthy")
    assert healthy["reason"] == "FailedAboveThreshold" and "failed 8 > 5" in healthy["message"], healthy
    assert queue_state(st, "default")["failed"] == 8 and queue_state(st, "default")["healthy"] is False
    assert queue_state(st, "bulk")["healthy"] is True

    rows = (await kubectl(kube, "get", "qpol")).splitlines()
    assert rows[0].split()[:3] == ["NAME", "QUEUES", "HEALTHY"], rows
    assert rows[1].split()[0] == "visapi-queues" and "False" in rows[1].split(), rows

    # /metrics from the operator process, over HTTP
    labels = {"namespace": "default", "policy": "visapi-queues", "queue": "default"}
    text = await scrape(port)
    assert metric(text, "bullmq_queue_jobs", **labels, state="failed") == 8.0
    assert metric(text, "bullmq_queue_jobs", **labels, state="waiting") == 0.0
    assert (
        metric(
            text,
            "bullmq_queue_jobs",
            namespace="default",
            policy="visapi-queues",
            queue="bulk",
            state="failed",
        )
        == 0.0
    )
    assert metric(text, "queue_depth_total", queue="default", status="failed") == 8.0
    assert (metric(text, "requeue_policy_evaluation_seconds_count") or 0) >= 2

    # one Slack message and one Event for the breach, however many evaluations follow
    await evaluations(kube, "visapi-queues", 3, operator=operator)
    assert len(slack.messages) == 1, slack.messages
    assert "default" in slack.messages[0] and "failed 8 > 5" in slack.messages[0]
    assert "visapi-queues" in slack.messages[0]
    breach_events = [
        e for e in await policy_events(kube, "visapi-queues") if e["reason"] == "FailedAboveThreshold"
    ]
    assert len(breach_events) == 1 and breach_events[0]["type"] == "Warning", breach_events

    # recovery: someone retries the failed jobs and healthy workers complete them
    async with run_worker(redis_url, "default") as worker:
        q = Queue("default", {"connection": redis_url})
        try:
            await q.retryJobs({"state": "failed"})
        finally:
            await q.close()
        await worker.wait_for(8)
        assert sorted(worker.completed) == sorted(failed_ids)
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: condition(s, "Healthy").get("status") == "True",
        operator=operator,
        what="Healthy=True after recovery",
    )
    assert queue_state(st, "default")["failed"] == 0
    # the recovery message waits for the notifier's rate limit (one message per 10 s), then goes out once
    await wait_policy(
        kube,
        "visapi-queues",
        lambda s: len(slack.messages) >= 2,
        operator=operator,
        timeout=40,
        what="the Slack recovery message",
    )
    await evaluations(kube, "visapi-queues", 3, operator=operator)
    assert len(slack.messages) == 2, slack.messages
    assert ":large_green_circle:" in slack.messages[1] and "default" in slack.messages[1]
    reasons = [e["reason"] for e in await policy_events(kube, "visapi-queues")]
    assert reasons.count("Recovered") == 1 and reasons.count("FailedAboveThreshold") == 1, reasons
    text = await scrape(port)
    assert metric(text, "bullmq_queue_jobs", **labels, state="failed") == 0.0
    assert metric(text, "bullmq_queue_jobs", **labels, state="completed") == 8.0
    assert metric(text, "queue_depth_total", queue="default", status="completed") == 8.0
    # the webhook URL is a secret: never in status, Events or the log
    everything = (
        str(await wait_policy(kube, "visapi-queues", bool))
        + str(await policy_events(kube, "visapi-queues"))
        + operator.logs()
    )
    assert SLACK_TOKEN not in everything


async def test_dry_run_only_reports(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    redis_factory: Any,
) -> None:
    gate_redis = await with_a_redis_gate(kube, redis_url, redis_factory)
    old = await make_failed_jobs(redis_url, "default", [JobSpec("report", {"i": i}) for i in range(3)])
    operator = operator_factory(operator_command())
    await apply_until_green(
        kube,
        gated_policy(
            "rehearsal",
            ["default"],
            dryRun=True,
            actions={"pauseWhileGatesFail": True, "clean": {"failed": {"grace": "1s", "limit": 100}}},
        ),
        operator=operator,
    )
    gate_redis.kill()
    st = await wait_policy(
        kube,
        "rehearsal",
        lambda s: queue_state(s, "default").get("dryRunPaused"),
        operator=operator,
        what="a dry-run pause",
    )
    assert next(a for a in st["lastActions"] if a["action"] == "Pause")["dryRun"] is True
    await evaluations(kube, "rehearsal", 2, operator=operator)
    # decided, reported, not done: the queue runs on, the failed jobs stay
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(old)
    assert queue_state(await wait_policy(kube, "rehearsal", bool), "default")["pausedByPolicy"] is False
    reasons = [e["reason"] for e in await policy_events(kube, "rehearsal")]
    assert "GatesFailed" in reasons, reasons
    gate_redis.restart()
    st = await wait_policy(
        kube,
        "rehearsal",
        lambda s: not queue_state(s, "default").get("dryRunPaused"),
        operator=operator,
        what="a dry-run resume",
    )
    assert next(a for a in st["lastActions"] if a["action"] == "Resume")["dryRun"] is True
    assert not await redis_client.hexists("bull:default:meta", "paused")
