"""A gate whose Secret does not exist is a configuration error, not an outage, end to end.

The user's report: ``kubectl apply -f examples/policy.yaml`` without the database
Secret paused the live queue ("gate red: database: secret ... not found"). Here
the operator runs against the API stand-in through kubectl, the queue is a real
BullMQ queue in a real Redis, and the database is the machine's Postgres behind a
TCP proxy the test drops.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from support.bullmq_jobs import JobSpec, create_queues, make_failed_jobs
from support.dlqreplay import condition as replay_condition
from support.dlqreplay import event_reasons, operator_command, replay, secret, wait_status_async
from support.kube import Kube
from support.queuepolicy import (
    FAST_GATES,
    apply,
    condition,
    evaluations,
    policy,
    policy_events,
    queue_state,
    wait_policy,
)

pytestmark = pytest.mark.e2e

DB_GATE = {
    "name": "database",
    "postgres": {"dsnSecretRef": {"name": "visapi-db", "key": "dsn"}, "timeout": "1s"},
}


async def test_missing_gate_secret_never_pauses_then_the_secret_makes_the_gate_work(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    proxy_factory: Any,
) -> None:
    proxy = await proxy_factory("127.0.0.1", 5432)
    await create_queues(redis_url, "default")
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await apply(
        kube,
        policy(
            "visapi-queues",
            ["default"],
            interval="1s",
            gates=[DB_GATE],
            gatePolicy=FAST_GATES,
            actions={"pauseWhileGatesFail": True},
        ),
    )
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: condition(s, "Ready").get("reason") == "SecretNotFound",
        operator=operator,
        what="Ready False SecretNotFound",
    )
    st = await evaluations(kube, "visapi-queues", 3, operator=operator)  # and it stays so
    ready = condition(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "SecretNotFound", ready
    assert "visapi-db" in ready["message"]
    assert condition(st, "GatesPassed")["status"] == "Unknown"
    assert condition(st, "GatesPassed")["reason"] == "SecretNotFound"
    assert st["gates"][0]["misconfigured"] == "SecretNotFound", st["gates"]
    assert "default/visapi-db" in st["gates"][0]["message"]
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert queue_state(st, "default")["paused"] is False
    assert not [a for a in st.get("lastActions", []) if a["action"] == "Pause"]
    assert "outageStartedAt" not in st
    warnings = [e for e in await policy_events(kube, "visapi-queues") if e["reason"] == "SecretNotFound"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert "visapi-db" in warnings[0]["message"]
    reasons = [e["reason"] for e in await policy_events(kube, "visapi-queues")]
    assert "QueuePaused" not in reasons and "GatesFailed" not in reasons, reasons

    # the Secret is created while the database is down: now the gate is red for real, and pauses
    await proxy.drop()
    await apply(kube, secret("visapi-db", {"dsn": f"postgresql://postgres@127.0.0.1:{proxy.port}/test"}))
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: queue_state(s, "default").get("pausedByPolicy"),
        operator=operator,
        what="default paused for the red database",
    )
    assert await redis_client.hexists("bull:default:meta", "paused")
    assert condition(st, "GatesPassed")["reason"] == "GateFailed"
    assert condition(st, "Ready")["status"] == "True"
    assert st["gates"][0].get("misconfigured") is None

    # the database is back: resumed
    await proxy.passthrough()
    await wait_policy(
        kube,
        "visapi-queues",
        lambda s: (
            condition(s, "GatesPassed").get("status") == "True"
            and not queue_state(s, "default").get("paused")
        ),
        operator=operator,
        what="default resumed",
    )
    assert not await redis_client.hexists("bull:default:meta", "paused")


async def test_replay_with_a_missing_gate_secret_fails_at_once_and_holds_nothing(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "default", [JobSpec("whatsapp.send", {"i": i}) for i in range(5)])
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await apply(
        kube,
        replay(
            "after-outage",
            "default",
            pauseQueue=True,
            gates=[DB_GATE],
            gatePolicy={"interval": "500ms", "timeout": "30m"},  # not waited for
        ),
    )
    st = await wait_status_async(
        kube, "after-outage", lambda s: s.get("phase") == "Failed", operator=operator, what="Failed"
    )
    done = replay_condition(st, "Succeeded")
    assert done["status"] == "False" and done["reason"] == "SecretNotFound", done
    assert "gate database cannot be checked" in done["message"] and "default/visapi-db" in done["message"]
    assert st["gates"][0]["misconfigured"] == "SecretNotFound"
    assert "SecretNotFound" in event_reasons(kube, "after-outage")
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert [k async for k in redis_client.scan_iter(match="requeue:lease:*")] == []  # lease released
    assert await redis_client.zcard("bull:default:failed") == 5  # nothing moved
