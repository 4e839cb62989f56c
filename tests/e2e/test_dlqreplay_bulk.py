"""A DLQReplay in mode Bulk end to end: kubectl -> API server emulator <- `requeue run`.

What an on-call engineer sees: the replay runs to Succeeded, every failed job of the
window is back in ``wait`` once, the Events say it went the Bulk way, and a window with
older failed jobs in front of it fails with a reason that says what to do.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from requeue.replay import DEFAULT_TUNING
from support.bullmq_jobs import JobSpec, make_failed_jobs, next_millisecond, older_than
from support.dlqreplay import condition, events, operator_command, replay, secret, wait_status_async
from support.kube import Kube

pytestmark = pytest.mark.e2e


async def test_bulk_replay_succeeds_and_says_how_it_moved(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(
        redis_url, "default", [JobSpec("whatsapp.send", {"n": i}) for i in range(300)]
    )
    # Bulk's window ends a clock-skew margin before the replay starts; the operator runs on the real clock
    await older_than(redis_client, "default", DEFAULT_TUNING.clock_skew_ms)
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await asyncio.to_thread(
        kube.kubectl.apply,
        replay("bulk", "default", mode="Bulk", rate={"jobsPerSecond": 1000, "batchSize": 100}),
    )
    st = await wait_status_async(
        kube,
        "bulk",
        lambda s: s.get("phase") == "Succeeded",
        operator=operator,
        timeout=60,
        what="the Bulk replay's end",
    )
    assert (st["matched"], st["replayed"], st["progress"]) == (300, 300, "300/300")
    assert "breakdown" not in st and len(st["sampleIds"]) == 10
    waiting = await redis_client.lrange("bull:default:wait", 0, -1)
    assert len(waiting) == len(set(waiting)) == 300 and set(waiting) == set(ids)
    said = await asyncio.to_thread(events, kube, "bulk")
    selected = [e["message"] for e in said if e["reason"] == "Selected"]
    assert selected and "mode Bulk: 300 failed jobs" in selected[0]


async def test_bulk_with_older_failed_jobs_in_front_fails_and_moves_nothing(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "default", [JobSpec("old", {"n": i}) for i in range(5)])
    await next_millisecond()
    after = datetime.now(UTC).isoformat()
    await make_failed_jobs(redis_url, "default", [JobSpec("new", {"n": i}) for i in range(5)])
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await asyncio.to_thread(
        kube.kubectl.apply, replay("bulk", "default", mode="Bulk", selector={"failedAfter": after})
    )
    st = await wait_status_async(
        kube,
        "bulk",
        lambda s: s.get("phase") == "Failed",
        operator=operator,
        timeout=60,
        what="the Bulk replay refusing older failed jobs",
    )
    assert condition(st, "Succeeded")["reason"] == "OlderFailedJobs"
    assert "drop failedAfter" in st["message"] and "mode Exact" in st["message"]
    assert await redis_client.zcard("bull:default:failed") == 10
    assert await redis_client.llen("bull:default:wait") == 0
