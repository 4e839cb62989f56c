"""``spec.cancel: true`` through kubectl: the running replay stops, the object stays in phase Cancelled
with counts that match Redis, one Cancelled Event; the queue is left as found and the lease released.
kubectl -> the API stand-in <- ``requeue run`` subprocess; real Redis, real BullMQ jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    check_exactly_once,
    condition,
    event_reasons,
    in_redis,
    operator_command,
    replay,
    replay_uid,
    secret,
    wait_status_async,
)
from support.kube import Kube

pytestmark = pytest.mark.e2e

CANCEL = '{"spec": {"cancel": true}}'


def jobs(n: int) -> list[JobSpec]:
    return [JobSpec(name="whatsapp.send", data={"n": i}, reason="429 Too Many Requests") for i in range(n)]


async def kubectl(kube: Kube, *args: str) -> str:
    proc = await asyncio.to_thread(kube.kubectl, *args)
    return proc.stdout


async def test_cancel_mid_run_keeps_the_record_with_true_counts(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "default", jobs(100))
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await asyncio.to_thread(
        kube.kubectl.apply, replay("stop-me", "default", rate={"jobsPerSecond": 10, "batchSize": 5})
    )
    await wait_status_async(
        kube, "stop-me", lambda s: s.get("replayed", 0) > 0, operator=operator, what="jobs moving"
    )

    await kubectl(kube, "patch", "dlqr", "stop-me", "--type=merge", "-p", CANCEL)
    st = await wait_status_async(
        kube, "stop-me", lambda s: s.get("phase") == "Cancelled", operator=operator, what="phase Cancelled"
    )

    seen = await in_redis(redis_client, replay_uid(kube, "stop-me"))
    check_exactly_once(seen, ids, what="after cancel")
    assert seen.done and seen.progress.get("outcome") == "Cancelled"
    moved = len(seen.waiting)
    assert 0 < moved < 100 and st["replayed"] == moved and st["matched"] == 100
    assert st["progress"] == f"{moved}/100" and len(seen.failed) == 100 - moved
    assert st["message"].startswith(f"cancelled (spec.cancel) at {moved}/100: moved {moved}")
    assert (condition(st, "Succeeded")["status"], condition(st, "Succeeded")["reason"]) == (
        "False",
        "Cancelled",
    )
    assert (condition(st, "Progressing")["status"], condition(st, "Progressing")["reason"]) == (
        "False",
        "Cancelled",
    )
    assert st.get("completedAt")
    assert not await redis_client.exists("requeue:lease:bull:default")
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert (await asyncio.to_thread(event_reasons, kube, "stop-me")).count("Cancelled") == 1
    assert "Cancelled" in await kubectl(kube, "get", "dlqr", "stop-me")  # the printer column


async def test_cancel_while_gates_hold_resumes_the_queue_the_replay_paused(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "held", jobs(10))
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await asyncio.to_thread(
        kube.kubectl.apply,
        replay(
            "held",
            "held",
            pauseQueue=True,
            gatePolicy={"interval": "500ms"},
            gates=[{"name": "down", "http": {"url": "http://127.0.0.1:9/health", "timeout": "1s"}}],
        ),
    )
    await wait_status_async(
        kube,
        "held",
        lambda s: s.get("queuePausedByReplay") is True,
        operator=operator,
        what="queue paused by the replay",
    )
    assert await redis_client.hexists("bull:held:meta", "paused")

    await kubectl(kube, "patch", "dlqr", "held", "--type=merge", "-p", CANCEL)
    st = await wait_status_async(
        kube, "held", lambda s: s.get("phase") == "Cancelled", operator=operator, what="phase Cancelled"
    )

    assert st["message"] == "cancelled (spec.cancel) before selecting; nothing moved"
    assert st.get("queuePausedByReplay") is False
    assert not await redis_client.hexists("bull:held:meta", "paused")  # resumed: the replay had paused it
    assert not await redis_client.exists("requeue:lease:bull:held")
    assert await redis_client.zcard("bull:held:failed") == 10
    reasons = await asyncio.to_thread(event_reasons, kube, "held")
    assert reasons.count("Cancelled") == 1 and "QueueResumed" in reasons
    # the record stays: a later edit is reported as ignored, nothing runs again
    await kubectl(kube, "patch", "dlqr", "held", "--type=merge", "-p", '{"spec": {"cancel": false}}')
    st = await wait_status_async(
        kube,
        "held",
        lambda s: condition(s, "SpecIgnored").get("reason") == "ReplayFinished",
        operator=operator,
        what="SpecIgnored/ReplayFinished",
    )
    assert st["phase"] == "Cancelled"
    assert await redis_client.zcard("bull:held:failed") == 10
