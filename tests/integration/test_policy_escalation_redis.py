"""Escalation levels through :func:`evaluate` against real Redis, real BullMQ failed jobs and real
webhooks: the snapshot's failed-id sample, the metric, a dry run that pauses and sends nothing,
and a failing webhook that becomes a Warning Event (and a retry) without leaking its URL."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from requeue.api.gates import GateStatus
from requeue.api.policy import QueuePolicySpec
from requeue.policy.escalation_send import WebhookSender
from requeue.policy.evaluate import BullQueueOps, EvaluationResult, PolicyRef, evaluate
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.leaks import SLACK_TOKEN
from support.policy_sim import T0, gate
from support.queuepolicy import SlackSink

POLICY = PolicyRef(namespace="visapi", name="escalating", uid="5e1c-uid", generation=1)


def spec(dry: bool) -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": ["orders", "emails"],
            "gates": [{"name": "database", "http": {"url": "http://127.0.0.1:1/"}}],
            "dryRun": dry,
            "escalation": {
                "levels": [
                    {
                        "name": "L2",
                        "holdFor": "1m",
                        "when": {"all": [{"gates": {}}, {"failed": {"above": 2, "minQueues": 2}}]},
                        "actions": {
                            "notify": [
                                {"name": "oncall", "webhookSecretRef": {"name": "hooks", "key": "oncall"}}
                            ],
                            "pauseQueues": True,
                            "snapshot": True,
                            "sampleSize": 2,
                        },
                    }
                ]
            },
        }
    )


async def walk(
    redis: aioredis.Redis, s: QueuePolicySpec, sender: WebhookSender, gates: list[GateStatus], minutes: int
) -> EvaluationResult:
    """Evaluate at T0 and again ``minutes`` later (the injected clock; nothing sleeps)."""
    ops = BullQueueOps(redis)
    result = await evaluate(POLICY, s, None, redis=redis, ops=ops, gates=gates, now=T0, channels=sender)
    return await evaluate(
        POLICY,
        s,
        result.status,
        redis=redis,
        ops=ops,
        gates=gates,
        memory=result.memory,
        now=T0 + timedelta(minutes=minutes),
        channels=sender,
    )


def level_metric() -> float | None:
    return REGISTRY.get_sample_value(
        "requeue_escalation_level", {"namespace": "visapi", "policy": "escalating"}
    )


async def test_level_two_pauses_sends_and_snapshots_the_newest_failed_ids(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    orders = await make_failed_jobs(
        redis_url, "orders", [JobSpec("order.charge", {"i": i}) for i in range(4)]
    )
    await make_failed_jobs(redis_url, "emails", [JobSpec("email.send", {"i": i}) for i in range(3)])
    sender = WebhookSender(StaticSecrets({("hooks", "oncall"): slack.url}))
    red = [gate("database", False)]

    result = await walk(redis_client, spec(False), sender, red, minutes=1)
    esc = result.status.escalation
    assert esc is not None and (esc.level, esc.name) == (1, "L2"), esc
    assert sorted(esc.paused_queues) == ["emails", "orders"]
    assert await redis_client.hexists("bull:orders:meta", "paused") and await redis_client.hexists(
        "bull:emails:meta", "paused"
    )
    assert len(slack.messages) == 1 and "escalation raised to L2" in slack.messages[0]
    assert [(n.channel, n.result) for n in esc.notifications] == [("oncall", "sent")]
    assert esc.snapshot is not None
    sample = {s.queue: s.ids for s in esc.snapshot.failed_sample}
    newest = await redis_client.zrevrange("bull:orders:failed", 0, 1)
    assert sample["orders"] == newest and set(newest) <= set(orders)
    assert len(sample["emails"]) == 2
    assert level_metric() == 1


async def test_dry_run_pauses_nothing_and_sends_nothing(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    await make_failed_jobs(redis_url, "orders", [JobSpec("order.charge", {"i": i}) for i in range(4)])
    await make_failed_jobs(redis_url, "emails", [JobSpec("email.send", {"i": i}) for i in range(3)])
    sender = WebhookSender(StaticSecrets({("hooks", "oncall"): slack.url}))

    result = await walk(redis_client, spec(True), sender, [gate("database", False)], minutes=1)
    esc = result.status.escalation
    assert esc is not None and esc.level == 1 and esc.dry_run
    assert esc.paused_queues == [] and sorted(esc.dry_run_paused_queues) == ["emails", "orders"]
    assert not await redis_client.hexists("bull:orders:meta", "paused")
    assert not await redis_client.hexists("bull:emails:meta", "paused")
    assert slack.messages == []
    assert [(n.channel, n.result) for n in esc.notifications] == [("oncall", "[dry run] not sent")]
    raised = [e.message for e in result.events if e.reason == "EscalationRaised"]
    assert len(raised) == 1 and raised[0].startswith("[dry run] escalation raised to L2")
    assert {(a.action, a.queue, a.dry_run) for a in result.status.last_actions} >= {
        ("Pause", "orders", True),
        ("Pause", "emails", True),
    }


async def test_a_failing_webhook_is_a_warning_event_and_its_url_stays_secret(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slack.status = 500
    await make_failed_jobs(redis_url, "orders", [JobSpec("order.charge", {"i": i}) for i in range(4)])
    await make_failed_jobs(redis_url, "emails", [JobSpec("email.send", {"i": i}) for i in range(3)])
    sender = WebhookSender(StaticSecrets({("hooks", "oncall"): slack.url}))

    result = await walk(redis_client, spec(False), sender, [gate("database", False)], minutes=1)
    esc = result.status.escalation
    assert esc is not None and esc.level == 1  # the level changed; telling people failed
    warnings = [e.message for e in result.events if e.reason == "NotifyFailed"]
    assert len(warnings) == 1 and "channel oncall" in warnings[0] and "answered 500" in warnings[0]
    [note] = esc.notifications
    assert note.result.startswith("failed: escalation webhook (secret hooks/oncall) answered 500")
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    everything: Any = logged + repr(result.status) + repr(result.events)
    assert SLACK_TOKEN not in everything and slack.url not in everything
    again = await evaluate(
        POLICY,
        spec(False),
        result.status,
        redis=redis_client,
        ops=BullQueueOps(redis_client),
        gates=[gate("database", False)],
        memory=result.memory,
        now=T0 + timedelta(minutes=2),
        channels=sender,
    )
    assert again.status.escalation is not None and again.status.escalation.level == 1
    # retried at the later evaluation (test_policy_escalation_signals.py follows it to success)
    assert len(slack.messages) == 2 and slack.messages[0] == slack.messages[1]
    [pending] = again.status.escalation.pending_notifications
    assert pending.attempts == 2 and slack.url not in repr(again.status)
