"""QueuePolicy end to end: `actions.clean` removes only finished jobs past the grace, in bounded batches.

The jobs are real (completed and failed by real BullMQ workers); "older than the
grace" is made by moving the finish time of some of them two hours back (their
``finishedOn`` and their score in the finished set, the two things BullMQ's
clean script reads), so the test needs no long wait.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.dlqreplay import operator_command, secret
from support.kube import Kube
from support.queuepolicy import apply, condition, policy, queue_state, wait_policy

pytestmark = pytest.mark.e2e


async def age(redis: aioredis.Redis, state: str, ids: list[str], hours: float) -> None:
    """Pretend these finished jobs finished ``hours`` ago."""
    finished = int((time.time() - hours * 3600) * 1000)
    for job_id in ids:
        await redis.hset(f"bull:default:{job_id}", "finishedOn", finished)
        await redis.zadd(f"bull:default:{state}", {job_id: finished}, xx=True)


async def test_clean_removes_only_jobs_older_than_grace_in_bounded_batches(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    failed = await make_failed_jobs(
        redis_url, "default", [JobSpec("pdf.generate", {"i": i}) for i in range(5)]
    )
    q = Queue("default", {"connection": redis_url})
    async with run_worker(redis_url, "default") as worker:
        jobs = await q.addBulk([{"name": "email.send", "data": {"i": i}} for i in range(10)])
        await worker.wait_for(10)
    await q.close()
    completed = [str(j.id) for j in jobs]
    await age(redis_client, "completed", completed[:7], hours=2)
    await age(redis_client, "failed", failed[:2], hours=2)

    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await apply(
        kube,
        policy(
            "retention",
            ["default"],
            interval="1s",
            actions={
                "clean": {"completed": {"grace": "1h", "limit": 3}, "failed": {"grace": "1h", "limit": 100}}
            },
        ),
    )

    st = await wait_policy(
        kube,
        "retention",
        lambda s: (
            queue_state(s, "default").get("completed") == 3 and queue_state(s, "default").get("failed") == 3
        ),
        operator=operator,
        timeout=30,
        what="old finished jobs cleaned",
    )
    assert condition(st, "Ready")["status"] == "True"
    assert set(await redis_client.zrange("bull:default:completed", 0, -1)) == set(completed[7:])
    assert set(await redis_client.zrange("bull:default:failed", 0, -1)) == set(failed[2:])
    for job_id in completed[:7] + failed[:2]:
        assert not await redis_client.exists(f"bull:default:{job_id}")  # the job hashes went too
    for job_id in completed[7:] + failed[2:]:
        assert await redis_client.exists(f"bull:default:{job_id}")
    # at most `limit` completed jobs per evaluation: 7 old ones took three evaluations (3 + 3 + 1)
    removed = [a["result"] for a in reversed(st["lastActions"]) if a["action"] == "Clean"]
    completed_runs = [
        a["result"]
        for a in reversed(st["lastActions"])
        if a["action"] == "Clean" and a["reason"].startswith("completed")
    ]
    assert completed_runs == ["removed 3", "removed 3", "removed 1"], removed
    assert [
        a["result"] for a in st["lastActions"] if a["action"] == "Clean" and a["reason"].startswith("failed")
    ] == ["removed 2"], removed


async def test_clean_with_archive_writes_jobs_to_postgres_from_a_secret_before_removing(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    pg_dsn: str,
) -> None:
    table = f"archive_e2e_{uuid.uuid4().hex[:10]}"
    failed = await make_failed_jobs(
        redis_url, "default", [JobSpec("pdf.generate", {"i": i}) for i in range(6)]
    )
    await age(redis_client, "failed", failed[:4], hours=2)
    before = {i: await redis_client.hgetall(f"bull:default:{i}") for i in failed[:4]}

    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(kube, secret("archive-db", {"dsn": pg_dsn}))
    operator = operator_factory(operator_command())
    archive = {"dsnSecretRef": {"name": "archive-db", "key": "dsn"}, "table": table}
    try:
        await apply(
            kube,
            policy(
                "keep-then-clean",
                ["default"],
                interval="1s",
                actions={"clean": {"failed": {"grace": "1h", "limit": 100, "archive": archive}}},
            ),
        )
        st = await wait_policy(
            kube,
            "keep-then-clean",
            lambda s: queue_state(s, "default").get("failed") == 2,
            operator=operator,
            timeout=30,
            what="old failed jobs archived and cleaned",
        )
        assert set(await redis_client.zrange("bull:default:failed", 0, -1)) == set(failed[4:])
        assert any(a.get("result") == "archived and removed 4" for a in st.get("lastActions", []))
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(f"SELECT job_id, fields FROM {table}").fetchall()
        assert {job_id: fields for job_id, fields in rows} == before  # one row each, exact fields
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
