"""DLQReplay under faults the test injects into its own redis-servers: refused credentials, a crash mid-run.

Every failure has a name (a ``Ready=False`` condition with a reason, a Warning
Event), never a crash loop; once the fault is gone the replay finishes and each
matched job was moved exactly once (DESIGN.md, Principles).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from support import wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    condition,
    events,
    operator_command,
    replay,
    secret,
    wait_finished,
    wait_status_async,
)
from support.kube import Kube

pytestmark = pytest.mark.e2e

PASSWORD = "s3cr3t-Pa55word-never-shown"
WRONG = "wrong-Pa55word-never-shown"


def jobs(n: int) -> list[JobSpec]:
    return [JobSpec("whatsapp.send", {"n": i}, reason="429 Too Many Requests") for i in range(n)]


async def apply(kube: Kube, manifest: dict[str, Any]) -> None:
    await asyncio.to_thread(kube.kubectl.apply, manifest)


async def test_wrong_password_is_auth_failed_until_the_secret_is_fixed(
    kube: Kube,
    operator_factory: Any,
    redis_factory: Any,
) -> None:
    server = redis_factory(password=PASSWORD)
    ids = await make_failed_jobs(server.url, "default", jobs(12))
    wrong_url = f"redis://:{WRONG}@127.0.0.1:{server.port}/0"
    await apply(kube, secret("redis", {"url": wrong_url}))
    operator = operator_factory(operator_command())
    await apply(kube, replay("auth", "default", rate={"jobsPerSecond": 1000, "batchSize": 5}))

    st = await wait_status_async(
        kube,
        "auth",
        lambda s: condition(s, "Ready").get("reason") == "AuthFailed",
        operator=operator,
        what="Ready=False/AuthFailed",
    )
    assert condition(st, "Ready")["status"] == "False"
    assert st.get("phase") != "Failed", st  # a person can fix the Secret: keep retrying with backoff
    assert st.get("replayed", 0) == 0
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        assert await client.zcard("bull:default:failed") == 12  # nothing moved
        assert await client.llen("bull:default:wait") == 0
        evs = await asyncio.to_thread(events, kube, "auth")
        auth_events = [e for e in evs if e.get("reason") == "AuthFailed"]
        assert len(auth_events) == 1, evs  # one Event per distinct problem, not per retry
        assert auth_events[0]["type"] == "Warning"

        await apply(kube, secret("redis", {"url": server.url}))  # the on-call person fixes the Secret
        st = await wait_status_async(
            kube,
            "auth",
            lambda s: s.get("phase") == "Succeeded",
            operator=operator,
            timeout=90,
            what="phase Succeeded after the Secret was fixed",
        )
        assert st["matched"] == st["replayed"] == 12
        assert condition(st, "Ready")["status"] == "True"
        assert await client.zcard("bull:default:failed") == 0
        waiting = await client.lrange("bull:default:wait", 0, -1)
        assert sorted(waiting) == sorted(ids) and len(set(waiting)) == len(waiting)
    finally:
        await client.aclose()

    # the passwords appear nowhere a person (or a log shipper) can read them
    evs = await asyncio.to_thread(events, kube, "auth")
    seen = json.dumps(st) + json.dumps(evs) + operator.logs()
    seen += (await asyncio.to_thread(kube.kubectl, "describe", "dlqr", "auth")).stdout
    assert WRONG not in seen and PASSWORD not in seen
    assert "Recovered" in [e.get("reason") for e in evs]


async def test_redis_killed_mid_run_resumes_after_restart_each_job_once(
    kube: Kube,
    operator_factory: Any,
    redis_factory: Any,
) -> None:
    # AOF with fsync always: what Redis acknowledged survives the SIGKILL (as on a persistent volume)
    server = redis_factory(args=["--appendonly", "yes", "--appendfsync", "always"])
    n = 40
    ids = await make_failed_jobs(server.url, "default", jobs(n))
    await apply(kube, secret("redis", {"url": server.url}))
    operator = operator_factory(operator_command())
    await apply(kube, replay("slow", "default", rate={"jobsPerSecond": 8, "batchSize": 2}))

    await wait_status_async(
        kube,
        "slow",
        lambda s: s.get("phase") == "Replaying" and s.get("replayed", 0) >= 4,
        operator=operator,
        what="the replay is under way",
    )
    server.kill()
    st = await wait_status_async(
        kube,
        "slow",
        lambda s: condition(s, "Ready").get("reason") == "RedisUnreachable",
        operator=operator,
        timeout=60,
        what="Ready=False/RedisUnreachable",
    )
    assert st["phase"] not in ("Failed", "Succeeded"), st
    assert st["replayed"] < n, st  # really mid-run
    # it keeps retrying with backoff, not in a crash loop: a few retries logged, one process
    await asyncio.to_thread(
        wait_until,
        lambda: operator.logs().count("Redis error") >= 4,
        timeout=30,
        message=lambda: f"four Redis retries logged: {operator.logs()[-3000:]}",
    )
    assert operator.running and operator.starts == 1
    st = await wait_status_async(kube, "slow", lambda s: s.get("phase") != "Failed", operator=operator)
    log = operator.logs()
    assert log.count("Traceback") <= 1, log[-5000:]
    reasons = [e.get("reason") for e in await asyncio.to_thread(events, kube, "slow")]
    assert reasons.count("RedisUnreachable") == 1, reasons
    assert all(e != "Failed" for e in reasons), reasons

    server.start()  # same port, same directory: the AOF brings the data (and the snapshot) back
    st = await wait_finished(
        kube,
        "slow",
        operator=operator,
        timeout=120,
    )
    assert st["phase"] == "Succeeded", st
    assert st["matched"] == st["replayed"] == n
    assert condition(st, "Ready")["status"] == "True"
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        waiting = await client.lrange("bull:default:wait", 0, -1)
        assert len(waiting) == len(set(waiting)) == n  # no job moved twice
        assert set(waiting) == set(ids)
        assert await client.zcard("bull:default:failed") == 0  # none left behind
    finally:
        await client.aclose()
    reasons = [e.get("reason") for e in await asyncio.to_thread(events, kube, "slow")]
    assert reasons.count("RedisReachable") == 1, reasons  # the Warning's all-clear, once
    assert operator.running and operator.starts == 1
