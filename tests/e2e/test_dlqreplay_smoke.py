"""``spec.verify.smokeTest`` through the operator: kubectl applies a DLQReplay whose smoke request
carries a bearer token from a Secret; real workers complete the replayed jobs; the smoke endpoint
fails first and passes next, and the replay ends Succeeded with the smoke test in its status. With an
endpoint that keeps failing it ends Failed/SmokeTestFailed. The token never shows in the status,
the Events or the operator's log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.dlqreplay import condition, event_reasons, operator_command, replay, secret, wait_finished
from support.http_endpoint import endpoint
from support.kube import Kube
from support.leaks import leaks

pytestmark = pytest.mark.e2e

TOKEN = "e2e-Smoke-T0ken-41kq"


def smoke_replay(name: str, url: str, retries: int) -> dict[str, Any]:
    header = {
        "name": "Authorization",
        "prefix": "Bearer ",
        "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}},
    }
    smoke = {
        "url": url,
        "method": "POST",
        "headers": [header],
        "body": '{"test":true}',
        "retries": retries,
        "retryDelay": "200ms",
    }
    return replay(
        name,
        "default",
        rate={"jobsPerSecond": 10_000, "batchSize": 50},
        verify={"window": "30s", "minSuccessRate": 1.0, "smokeTest": smoke},
    )


async def test_smoke_test_decides_the_outcome_and_hides_its_token(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    got: list[str] = []

    async def flaky(request: web.Request) -> web.Response:
        got.append(request.headers.get("Authorization", ""))
        if len(got) == 1:
            return web.json_response(
                {"error": "cold start", "auth": request.headers["Authorization"]}, status=503
            )
        return web.json_response({"ok": True})

    async def down(request: web.Request) -> web.Response:
        return web.json_response({"error": "still down"}, status=502)

    await make_failed_jobs(redis_url, "default", [JobSpec("send", {"i": i}) for i in range(8)])
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": redis_url}))
    await asyncio.to_thread(kube.kubectl.apply, secret("api", {"token": TOKEN}))
    operator = operator_factory(operator_command())
    async with endpoint(flaky, path="/smoke", method="POST") as ok_url, run_worker(redis_url, "default"):
        await asyncio.to_thread(kube.kubectl.apply, smoke_replay("smoke-ok", ok_url, retries=2))
        st = await wait_finished(
            kube,
            "smoke-ok",
            operator=operator,
            timeout=60,
        )
        assert st["phase"] == "Succeeded", st
        assert condition(st, "Succeeded")["reason"] == "Verified"
        assert st["smokeTest"] == {"result": "Passed", "attempts": 2, "message": st["smokeTest"]["message"]}
        assert "HTTP 200 OK" in st["smokeTest"]["message"]
        assert got == [f"Bearer {TOKEN}"] * 2
        assert "SmokeTestPassed" in await asyncio.to_thread(event_reasons, kube, "smoke-ok")

    await make_failed_jobs(redis_url, "default", [JobSpec("send", {"again": i}) for i in range(3)])
    async with endpoint(down, path="/smoke", method="POST") as down_url, run_worker(redis_url, "default"):
        await asyncio.to_thread(kube.kubectl.apply, smoke_replay("smoke-ko", down_url, retries=1))
        st = await wait_finished(
            kube,
            "smoke-ko",
            operator=operator,
            timeout=60,
        )
    assert st["phase"] == "Failed", st
    assert condition(st, "Succeeded")["reason"] == "SmokeTestFailed"
    assert "HTTP 502 Bad Gateway (expected 200)" in st["message"] and "still down" in st["message"]
    assert "SmokeTestFailed" in await asyncio.to_thread(event_reasons, kube, "smoke-ko")

    shown = (await asyncio.to_thread(kube.kubectl, "get", "events,dlqreplays", "-o", "yaml")).stdout
    assert leaks(shown + operator.logs(), TOKEN) == []
