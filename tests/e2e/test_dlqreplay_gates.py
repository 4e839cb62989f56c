"""DLQReplay end to end with gates, pausing and verification, against real BullMQ workers.

The runbook's story: the provider's API is down (an HTTP gate the test turns
red and green), requeue holds the replay and pauses the queue meanwhile, then
replays the matching failed jobs and watches real workers complete them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from bullmq import Queue

from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.dlqreplay import (
    condition,
    event_reasons,
    operator_command,
    replay,
    secret,
    wait_finished,
    wait_gone_async,
    wait_status_async,
)
from support.http_endpoint import endpoint
from support.kube import Kube

pytestmark = pytest.mark.e2e


class Health:
    """A health endpoint on 127.0.0.1 answering :attr:`code` (the test flips it)."""

    code = 503
    url = ""

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if self.code == 200 else "down"}, status=self.code)


@pytest_asyncio.fixture
async def health() -> AsyncIterator[Health]:
    server = Health()
    async with endpoint(server.handle) as server.url:
        yield server


async def kubectl(kube: Kube, *args: str) -> str:
    return (await asyncio.to_thread(kube.kubectl, *args)).stdout


async def apply(kube: Kube, manifest: dict[str, Any]) -> None:
    await asyncio.to_thread(kube.kubectl.apply, manifest)


async def test_gate_red_holds_and_pauses_green_replays_and_workers_verify(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis, health: Health
) -> None:
    wanted = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("whatsapp.send", {"to": f"+49{i}"}, reason="429 Too Many Requests") for i in range(60)],
    )
    others = await make_failed_jobs(
        redis_url, "default", [JobSpec("pdf.generate", {"doc": i}, reason="disk full") for i in range(10)]
    )
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())

    await apply(
        kube,
        replay(
            "whatsapp-after-cgb-outage",
            "default",
            selector={"jobNames": ["whatsapp.*"], "failedReasonPattern": "429|rate limit"},
            rate={"jobsPerSecond": 20, "batchSize": 10},
            pauseQueue=True,
            gates=[{"name": "cgb-api", "http": {"url": health.url, "timeout": "2s"}}],
            gatePolicy={"interval": "500ms"},
            verify={"window": "2m", "minSuccessRate": 0.95},
        ),
    )
    name = "whatsapp-after-cgb-outage"
    st = await wait_status_async(
        kube,
        name,
        lambda s: (
            s.get("phase") == "WaitingForGates"
            and condition(s, "QueuePaused").get("reason") == "PausedByReplay"
        ),
        operator=operator,
        what="WaitingForGates with the queue paused by the replay",
    )
    assert condition(st, "GatesPassed")["status"] == "False"
    assert st["gates"][0]["name"] == "cgb-api" and st["gates"][0]["healthy"] is False
    assert st["queuePausedByReplay"] is True
    assert await redis_client.hexists("bull:default:meta", "paused")
    assert await redis_client.zcard("bull:default:failed") == 70  # zero moved while red
    assert await redis_client.llen("bull:default:wait") == 0

    async with run_worker(redis_url, "default") as worker:
        health.code = 200

        # `kubectl get dlqr` while it replays: the CRD's printer columns, server-side.
        async def replaying_row() -> list[str] | None:
            lines = (await kubectl(kube, "get", "dlqr")).splitlines()
            row = next((line.split() for line in lines[1:] if line.startswith(name)), None)
            if row and row[2] in ("Replaying", "Verifying", "Succeeded") and row[3].endswith("/60"):
                return row  # past selection: PROGRESS counts the 60 matched jobs
            return None

        header = (await kubectl(kube, "get", "dlqr")).splitlines()[0].split()
        assert header == ["NAME", "QUEUE", "PHASE", "PROGRESS", "AGE"]
        for _ in range(600):
            row = await replaying_row()
            if row:
                break
            await asyncio.sleep(0.05)
        assert row is not None, "the replay never left WaitingForGates"
        assert row[1] == "default" and re.fullmatch(r"\d+/60", row[3]), row

        st = await wait_finished(
            kube,
            name,
            operator=operator,
            timeout=90,
        )
        assert st["phase"] == "Succeeded", st
        assert sorted(worker.completed) == sorted(wanted)

    assert st["matched"] == st["replayed"] == st["completed"] == 60
    assert st["failedAgain"] == 0 and st["progress"] == "60/60"
    assert condition(st, "Succeeded")["reason"] == "Verified"
    assert condition(st, "GatesPassed")["status"] == "True"
    assert condition(st, "QueuePaused")["reason"] == "ResumedByReplay"
    assert st["queuePausedByReplay"] is False
    assert st["breakdown"]["byName"] == {"whatsapp.send": 60}
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(others)

    reasons = await asyncio.to_thread(event_reasons, kube, name)
    for reason in (
        "QueuePaused",
        "GatesPassed",
        "QueueResumed",
        "ReplayStarted",
        "ReplayFinished",
        "Verified",
    ):
        assert reason in reasons, reasons
    assert reasons.index("GatesPassed") < reasons.index("ReplayStarted") < reasons.index("Verified")
    described = await kubectl(kube, "describe", "dlqr", name)
    assert "ReplayFinished" in described and "Verified" in described


async def test_workers_failing_again_end_in_verification_failed(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "orders", [JobSpec("order.sync", {"n": i}) for i in range(20)])
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    async with run_worker(redis_url, "orders", fail_when=lambda job: "upstream still down"):
        await apply(kube, replay("orders-retry", "orders", verify={"window": "2m", "minSuccessRate": 0.9}))
        st = await wait_finished(
            kube,
            "orders-retry",
            operator=operator,
            timeout=60,
        )
    assert st["phase"] == "Failed"
    assert condition(st, "Succeeded")["reason"] == "VerificationFailed"
    assert st["replayed"] == 20 and st["failedAgain"] >= 3  # 3 of 20 failing already breaks 90%
    assert "VerificationFailed" in await asyncio.to_thread(event_reasons, kube, "orders-retry")
    assert set(await redis_client.zrange("bull:orders:failed", 0, -1)) <= set(ids)


async def test_queue_paused_by_someone_else_stays_paused(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "mail", [JobSpec("email.send", {"n": i}) for i in range(15)])
    queue = Queue("mail", {"connection": redis_url})
    try:
        await queue.pause()
    finally:
        await queue.close()
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await apply(kube, replay("mail-retry", "mail", pauseQueue=True, ttlSecondsAfterFinished=1))
    st = await wait_status_async(
        kube, "mail-retry", lambda s: s.get("phase") == "Succeeded", operator=operator, what="phase Succeeded"
    )
    assert st["replayed"] == 15
    assert condition(st, "QueuePaused")["reason"] == "PausedByOthers"
    assert st["queuePausedByReplay"] is False
    assert await redis_client.hexists("bull:mail:meta", "paused")  # still paused: not ours to resume
    # replayed, waiting for whoever paused the queue to resume it (BullMQ 5+ keeps them in `wait`
    # with the meta flag; older producers' pause moved them to the legacy `paused` list)
    waiting = await redis_client.lrange("bull:mail:wait", 0, -1) + await redis_client.lrange(
        "bull:mail:paused", 0, -1
    )
    assert sorted(waiting) == sorted(ids)
    # ttlSecondsAfterFinished: the finished replay deletes itself
    await wait_gone_async(kube, "mail-retry", operator=operator)
