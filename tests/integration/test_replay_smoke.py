"""``spec.verify.smokeTest``: after the replayed jobs verified, one request through the whole path.

The runbook's "Recovery Verification, step 3 (test workflow trigger)" as a test: real failed jobs
are replayed by ``requeue replay -f`` (a subprocess) and completed by real workers, then the smoke
request goes to a local HTTP receiver that the test controls; with ``waitForJob`` the receiver adds
a job the way the API would and a Node BullMQ worker completes (or fails) it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from requeue.api import DLQReplayStatus, ReplayPhase
from requeue.api.smoke import SmokeTestResult
from requeue.queues import QueueKeys
from requeue.queues.keys import Progress, ReplayKeys
from requeue.replay import ReplayEngine
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs, run_worker
from support.cli import acli, write_manifest
from support.http_endpoint import endpoint
from support.leaks import leaks
from support.node import FailRule, NodeWorker
from support.replay import replay_spec

Q = "default"
K = QueueKeys("bull", Q)
FAST = {"jobsPerSecond": 100_000, "batchSize": 50}
TOKEN = "smoke-T0ken-7hq3Xw!pz"
BODY_SECRET = "body-S3cret-0rder-9931"


class Receiver:
    """A smoke-test endpoint: answers each request with the next of ``answers`` (the last repeats),
    recording what it got; ``on_request`` runs first (e.g. adds the job the API would add)."""

    def __init__(self, *answers: tuple[int, str], on_request: Any = None) -> None:
        self.answers = list(answers)
        self.got: list[tuple[str, str, str]] = []
        self.on_request = on_request

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.method, request.headers.get("Authorization", ""), await request.text()))
        if self.on_request is not None:
            await self.on_request()
        status, body = self.answers[min(len(self.got), len(self.answers)) - 1]
        return web.Response(status=status, text=body, content_type="application/json")


def smoke_spec(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "rate": FAST,
        "verify": {
            "window": "30s",
            "minSuccessRate": 1.0,
            "smokeTest": {
                "url": url,
                "method": "POST",
                "headers": [
                    {
                        "name": "Authorization",
                        "prefix": "Bearer ",
                        "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}},
                    }
                ],
                "bodyFrom": {"secretKeyRef": {"name": "api", "key": "body"}},
                "expectStatus": [200, 202],
                "retryDelay": "100ms",
                **extra,
            },
        },
    }


def secrets_args(redis_url: str) -> tuple[str, ...]:
    body = json.dumps({"order": BODY_SECRET})
    return ("--redis-url", redis_url, "--secret", f"api/token={TOKEN}", "--secret", f"api/body={body}")


async def replay(
    manifest: Path, redis_url: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run the replay with a worker completing the replayed jobs; exit code, status, all output."""
    async with run_worker(redis_url, Q):
        res = await acli("replay", "-f", str(manifest), *secrets_args(redis_url), "-o", "json", env=env)
    return res.code, json.loads(res.stdout) if res.stdout.strip() else {}, res.output


async def test_a_smoke_test_that_fails_then_passes_succeeds_and_is_not_resent(
    redis_url: str, tmp_path: Path, r: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(5)])
    # the first answer echoes the bearer token back, as a careless API's error page does
    receiver = Receiver(
        (503, json.dumps({"error": "warming up", "auth": f"Bearer {TOKEN}"})), (202, '{"ok":true}')
    )
    async with endpoint(receiver.handle, path="/hooks/test", method="POST") as url:
        manifest = write_manifest(tmp_path / "r.yaml", smoke_spec(url), name="smoke-ok")
        code, st, output = await replay(manifest, redis_url)

        assert code == 0, output
        assert (st["phase"], st["completed"]) == ("Succeeded", 5)
        assert st["smokeTest"]["result"] == "Passed" and st["smokeTest"]["attempts"] == 2
        assert "smoke test passed: POST" in st["message"] and "HTTP 202 Accepted" in st["message"]
        assert [m for m, _, _ in receiver.got] == ["POST", "POST"]
        assert {a for _, a, _ in receiver.got} == {f"Bearer {TOKEN}"}
        assert {json.loads(b)["order"] for _, _, b in receiver.got} == {BODY_SECRET}
        assert leaks(output, TOKEN, BODY_SECRET) == []

        # the same command again: the replay finished, and its smoke test is not sent again
        again = await acli("replay", "-f", str(manifest), *secrets_args(redis_url))
        assert again.code == 0, again.output
        assert "already finished" in again.output
        assert len(receiver.got) == 2
    replay_id = "cli-" + hashlib.sha256(b"ops/smoke-ok").hexdigest()[:16]
    progress = await r.hgetall(ReplayKeys(replay_id).progress)
    assert progress[Progress.SMOKE] == "passed" and progress[Progress.SMOKE_ATTEMPTS] == "2"


async def test_a_failing_smoke_test_fails_the_replay_with_the_answer(redis_url: str, tmp_path: Path) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(3)])
    answer = json.dumps({"error": "provider rejected", "echo": f"Bearer {TOKEN}", "pad": "x" * 5000})
    receiver = Receiver((500, answer))
    async with endpoint(receiver.handle, path="/hooks/test", method="POST") as url:
        manifest = write_manifest(tmp_path / "r.yaml", smoke_spec(url, retries=1), name="smoke-ko")
        code, st, output = await replay(manifest, redis_url)

    assert code == 1, output
    assert st["phase"] == "Failed"
    succeeded = next(c for c in st["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "SmokeTestFailed"
    assert st["completed"] == 3  # the replay itself verified; the smoke test decided
    assert len(receiver.got) == 2  # 1 + retries
    assert "smoke test failed after 2 attempts" in st["message"]
    assert "HTTP 500 Internal Server Error (expected 200, 202)" in st["message"]
    assert 'body: {"error": "provider rejected"' in st["message"]
    assert len(st["message"]) <= 512 and "x" * 300 not in st["message"]  # a bounded excerpt
    assert st["smokeTest"]["result"] == "Failed" and st["smokeTest"]["attempts"] == 2
    assert leaks(output, TOKEN, BODY_SECRET) == []


async def test_a_denied_destination_is_refused_before_anything_is_sent(
    redis_url: str, tmp_path: Path
) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={})])
    receiver = Receiver((200, "{}"))
    async with endpoint(receiver.handle, path="/hooks/test", method="POST") as url:
        manifest = write_manifest(tmp_path / "r.yaml", smoke_spec(url), name="smoke-denied")
        code, st, output = await replay(manifest, redis_url, env={"REQUEUE_GATE_DENY": "127.0.0.0/8"})

    assert code == 2, output  # configuration, as a missing Secret: not an outage to retry
    assert st["phase"] == "Failed"
    succeeded = next(c for c in st["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "DestinationDenied"
    assert "smoke test not sent" in st["message"] and "REQUEUE_GATE_DENY" in st["message"]
    assert receiver.got == []


async def test_wait_for_job_passes_when_the_triggered_job_completes(redis_url: str, tmp_path: Path) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(4)])
    # a job of that name completed before the request: it must not count
    [old] = await add_jobs(redis_url, "orders", [JobSpec(name="order.created", data={"old": True})])

    async def add_order() -> None:  # what the API does when the smoke request arrives
        await add_jobs(redis_url, "orders", [JobSpec(name="order.created", data={"smoke": True})])

    receiver = Receiver((202, '{"queued":true}'), on_request=add_order)
    wait = {"queue": "orders", "name": "order.created", "timeout": "30s"}
    async with (
        endpoint(receiver.handle, path="/hooks/test", method="POST") as url,
        NodeWorker(redis_url, "orders", major=5) as orders,
    ):
        await orders.wait_for_final([old])
        manifest = write_manifest(tmp_path / "r.yaml", smoke_spec(url, waitForJob=wait), name="smoke-job")
        code, st, output = await replay(manifest, redis_url)

    assert code == 0, output
    assert st["phase"] == "Succeeded"
    job_id = st["smokeTest"]["jobId"]
    assert job_id is not None and job_id != old
    assert orders.final_outcomes()[job_id].data == {"smoke": True}
    assert f"job {job_id} completed in queue orders" in st["message"]
    assert len(receiver.got) == 1


async def test_wait_for_job_fails_when_the_triggered_job_fails(redis_url: str, tmp_path: Path) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={})])

    async def add_order() -> None:
        await add_jobs(redis_url, "orders", [JobSpec(name="order.created", data={"smoke": True})])

    receiver = Receiver((200, "{}"), on_request=add_order)
    wait = {"queue": "orders", "name": "order.created", "timeout": "30s"}
    broken = FailRule("provider 401: invalid api key", name="order.created")
    async with (
        endpoint(receiver.handle, path="/hooks/test", method="POST") as url,
        NodeWorker(redis_url, "orders", major=6, fail=[broken]),
    ):
        manifest = write_manifest(tmp_path / "r.yaml", smoke_spec(url, waitForJob=wait), name="smoke-job-ko")
        code, st, output = await replay(manifest, redis_url)

    assert code == 1, output
    succeeded = next(c for c in st["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "SmokeTestFailed"
    assert "added after the request, failed: provider 401: invalid api key" in st["message"]
    assert st["smokeTest"]["result"] == "Failed" and st["smokeTest"]["jobId"]
    assert len(receiver.got) == 1  # a request that passed is not retried for a failed job


async def test_a_resumed_replay_does_not_send_a_passed_smoke_test_again(
    redis_url: str, r: aioredis.Redis
) -> None:
    """A new engine (a restarted operator) with the status lost goes on from Redis: waiting for the
    job, not sending the request that already passed."""
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(3)])
    receiver = Receiver((200, "{}"))
    secrets = StaticSecrets({("api", "token"): TOKEN, ("api", "body"): "{}"})
    async with endpoint(receiver.handle, path="/hooks/test", method="POST") as url, run_worker(redis_url, Q):
        wait = {"queue": "orders", "name": "order.created", "timeout": "30s"}
        spec = replay_spec(smoke_spec(url, waitForJob=wait))
        first = ReplayEngine(r, replay_id="resume-smoke", owner="ops/resume-smoke")
        first.smoke.secrets = secrets
        st = DLQReplayStatus()
        while st.smoke_test is None or st.smoke_test.result != SmokeTestResult.WAITING_FOR_JOB:
            result = await first.step(spec, st)
            st = result.status
            assert not st.phase.finished, st.message
            await asyncio.sleep(result.delay)
        assert len(receiver.got) == 1

        second = ReplayEngine(r, replay_id="resume-smoke", owner="ops/resume-smoke")
        second.smoke.secrets = secrets
        await add_jobs(redis_url, "orders", [JobSpec(name="order.created", data={})])
        async with NodeWorker(redis_url, "orders", major=6):
            final = await second.run(spec, DLQReplayStatus())

    assert final.phase == ReplayPhase.SUCCEEDED, final.message
    assert final.smoke_test is not None and final.smoke_test.job_id is not None
    assert len(receiver.got) == 1


async def test_an_attempt_cut_off_by_a_crash_still_counts(redis_url: str, r: aioredis.Redis) -> None:
    """The driver dies while the request is in flight (its task cancelled mid-request): the next
    driver does not get a fresh set of attempts, so a request that kills its sender cannot loop."""
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={})])
    arrived = asyncio.Event()
    never = asyncio.Event()
    got: list[str] = []

    async def hang(request: web.Request) -> web.Response:
        got.append(request.method)
        arrived.set()
        await never.wait()
        return web.json_response({})

    secrets = StaticSecrets({("api", "token"): TOKEN, ("api", "body"): "{}"})
    async with endpoint(hang, path="/hooks/test", method="POST") as url, run_worker(redis_url, Q):
        spec = replay_spec(smoke_spec(url, retries=0, timeout="20s"))
        first = ReplayEngine(r, replay_id="crash-smoke", owner="ops/crash-smoke")
        first.smoke.secrets = secrets
        driving = asyncio.create_task(first.run(spec))
        await asyncio.wait_for(arrived.wait(), 30)
        driving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await driving

        second = ReplayEngine(r, replay_id="crash-smoke", owner="ops/crash-smoke")
        second.smoke.secrets = secrets
        final = await second.run(spec, DLQReplayStatus())
        never.set()

    assert final.phase == ReplayPhase.FAILED
    assert final.message == "smoke test failed after 1 attempt: no answer recorded"
    assert got == ["POST"]
