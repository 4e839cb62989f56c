"""QueuePolicy under faults: the operator SIGKILLed mid-outage, the Redis Secret missing.

Level-triggered and restart-safe (DESIGN.md, Principles): a restarted operator
continues from ``.status`` plus what is stored in Redis, takes no action twice
and sends no alert twice; a missing Secret is a named condition and one Event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from support.bullmq_jobs import create_queues
from support.dlqreplay import operator_command, secret
from support.kube import Kube
from support.queuepolicy import (
    QPOL,
    SlackSink,
    apply,
    apply_until_green,
    condition,
    evaluations,
    gated_policy,
    gates,
    object_uid,
    policy,
    policy_events,
    queue_state,
    wait_policy,
    with_a_redis_gate,
)

pytestmark = pytest.mark.e2e


def pause_resume(st: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (a["action"], a["queue"]) for a in st.get("lastActions", []) if a["action"] in ("Pause", "Resume")
    ]


async def test_sigkill_mid_outage_keeps_the_queue_paused_and_resumes_it_once(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    redis_factory: Any,
    slack: SlackSink,
) -> None:
    gate = await with_a_redis_gate(kube, redis_url, redis_factory)
    await apply(kube, secret("ops-slack", {"url": slack.url}))
    await create_queues(redis_url, "default")  # the app's queue: exists, nothing in it yet
    operator = operator_factory(operator_command())
    await apply_until_green(
        kube,
        gated_policy(
            "visapi-queues",
            ["default"],
            actions={"pauseWhileGatesFail": True},
            thresholds={"waiting": 2},
            alerts={"slackWebhookSecretRef": {"name": "ops-slack", "key": "url"}},
        ),
        operator=operator,
        ready=True,
    )
    uid = await object_uid(kube, QPOL, "visapi-queues")

    # the outage: the gate goes red, the policy pauses `default`; live jobs pile up (a breach)
    gate.kill()
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: queue_state(s, "default").get("pausedByPolicy"),
        operator=operator,
        what="default paused by the policy",
    )
    assert await redis_client.hget("bull:default:meta", "paused") == "1"
    q = Queue("default", {"connection": redis_url})
    try:
        await q.addBulk([{"name": "whatsapp.send", "data": {"i": i}} for i in range(5)])
    finally:
        await q.close()
    await wait_policy(
        kube,
        "visapi-queues",
        lambda s: condition(s, "Healthy").get("status") == "False",
        operator=operator,
        what="the waiting backlog breach",
    )
    await wait_policy(
        kube,
        "visapi-queues",
        lambda s: len(slack.messages) >= 1,
        operator=operator,
        what="the Slack alert for the breach",
    )
    assert await redis_client.exists(f"requeue:policy:{uid}:memory")

    # an OOM kill mid-outage; the new process starts from .status and the memory in Redis
    operator.kill()
    operator.start()
    st = await evaluations(kube, "visapi-queues", 3, operator=operator, timeout=40)
    assert gates(st) == "False", st
    held = queue_state(st, "default")
    assert held["paused"] is True and held["pausedByPolicy"] is True, held
    assert await redis_client.hget("bull:default:meta", "paused") == "1"
    assert await redis_client.llen("bull:default:wait") == 5  # still held back
    assert pause_resume(st) == [("Pause", "default")], st.get("lastActions")
    assert len(slack.messages) == 1, slack.messages  # the restart did not alert again

    # the gate is green again: the restarted operator resumes what the first one paused, once
    gate.restart()
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: gates(s) == "True" and not queue_state(s, "default").get("paused"),
        operator=operator,
        timeout=40,
        what="default resumed by the restarted operator",
    )
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert queue_state(st, "default")["pausedByPolicy"] is False
    st = await evaluations(kube, "visapi-queues", 2, operator=operator)
    assert sorted(pause_resume(st)) == [("Pause", "default"), ("Resume", "default")], st.get("lastActions")
    reasons = [e["reason"] for e in await policy_events(kube, "visapi-queues")]
    assert reasons.count("QueuePaused") == 1, reasons
    assert reasons.count("QueueResumed") <= 1, reasons
    assert reasons.count("WaitingAboveThreshold") <= 1, reasons
    assert len(slack.messages) == 1, slack.messages  # the backlog still breaches: no repeat, no recovery
    assert operator.running and operator.starts == 2


async def test_missing_redis_secret_is_secret_not_found_until_it_is_created(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
) -> None:
    operator = operator_factory(operator_command())
    await apply(kube, policy("lonely", ["default"], interval="1s", secret_name="queues-redis"))
    st = await wait_policy(
        kube,
        "lonely",
        lambda s: condition(s, "Ready").get("reason") == "SecretNotFound",
        operator=operator,
        what="Ready=False/SecretNotFound",
    )
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and "queues-redis" in ready["message"], ready
    # retried with backoff (the third try is logged), reported once
    operator.wait_for_log(r"lonely: still SecretNotFound \(try 3\)", timeout=30)
    st = await wait_policy(
        kube, "lonely", lambda s: condition(s, "Ready").get("reason") == "SecretNotFound", operator=operator
    )
    warnings = [e for e in await policy_events(kube, "lonely") if e["reason"] == "SecretNotFound"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert operator.running

    await apply(kube, secret("queues-redis", {"url": redis_url}))
    st = await wait_policy(
        kube,
        "lonely",
        lambda s: condition(s, "Ready").get("status") == "True" and s.get("lastEvaluatedAt"),
        operator=operator,
        timeout=90,
        what="Ready=True once the Secret exists",
    )
    assert queue_state(st, "default").get("paused") is False, json.dumps(st)
    st = await evaluations(kube, "lonely", 1, operator=operator)  # keeps evaluating
    assert condition(st, "Ready")["status"] == "True"
    warnings = [e for e in await policy_events(kube, "lonely") if e["reason"] == "SecretNotFound"]
    assert len(warnings) == 1, warnings
