"""DLQReplay end to end: kubectl -> kmock API server <- `requeue run` subprocess; real Redis, real BullMQ.

The operator runs as a subprocess exactly as in a pod (``python -m requeue run``);
what the tests assert is what a user sees (kubectl get/describe/events) and
what Redis holds.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest
import redis.asyncio as aioredis

from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    condition,
    event_reasons,
    operator_command,
    replay,
    secret,
    status,
    wait_status_async,
)
from support.kube import Kube
from support.redis_server import free_port

pytestmark = pytest.mark.e2e


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
    st = await wait_status_async(kube, "r1", lambda s: condition(s, "Ready").get("reason") == "SecretNotFound",
                                 operator=operator, what="Ready=False/SecretNotFound")
    assert st["phase"] == "Pending"
    assert condition(st, "Ready")["status"] == "False"
    assert "default/redis" in condition(st, "Ready")["message"]
    assert await redis_client.zcard("bull:default:failed") == 30  # nothing moved
    reasons = await asyncio.to_thread(event_reasons, kube, "r1")
    assert reasons.count("SecretNotFound") == 1  # one Event per distinct problem, not per retry

    await apply(kube, secret("redis", {"url": redis_url}))
    st = await wait_status_async(kube, "r1", lambda s: s.get("phase") == "Succeeded", operator=operator,
                                 what="phase Succeeded after the Secret appeared")
    assert st["matched"] == st["replayed"] == 30
    assert st["progress"] == "30/30"
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Succeeded")["status"] == "True"
    assert await redis_client.zcard("bull:default:failed") == 0
    assert sorted(await redis_client.lrange("bull:default:wait", 0, -1)) == sorted(ids)
    assert "Recovered" in await asyncio.to_thread(event_reasons, kube, "r1")

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'requeue_replays{namespace="default",phase="Succeeded"} 1.0' in metrics
    assert 'requeue_replay_jobs_total{namespace="default",outcome="replayed",queue="default",replay="r1"} 30.0' \
        in metrics
    assert 'requeue_redis_up{namespace="default",owner="r1"} 1.0' in metrics
    assert status(kube, "r1")["observedGeneration"] == 1
