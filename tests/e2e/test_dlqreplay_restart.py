"""Restart safety: SIGKILL the operator (an OOM-killed pod) mid-replay, again and again.

Each restart continues from ``.status`` plus the Redis snapshot; in the end
every matched job was moved exactly once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import operator_command, replay, secret, wait_finished, wait_status_async
from support.kube import Kube

pytestmark = pytest.mark.e2e

JOBS = 5000


async def test_sigkill_three_times_during_a_5k_replay_moves_each_job_once(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(
        redis_url,
        "default",
        [
            JobSpec("whatsapp.send", {"to": f"+49{i}", "text": "x" * 100}, reason="429 Too Many Requests")
            for i in range(JOBS)
        ],
        timeout=120,
    )
    await asyncio.to_thread(kube.kubectl.apply, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await asyncio.to_thread(
        kube.kubectl.apply,
        replay(
            "big",
            "default",
            selector={"jobNames": ["whatsapp.*"]},
            rate={"jobsPerSecond": 300, "batchSize": 100},
        ),
    )

    kills = [
        ("the replay has started", lambda s: s.get("phase") == "Replaying"),
        ("about a third is moved", lambda s: s.get("replayed", 0) >= 1500),
        ("about two thirds are moved", lambda s: s.get("replayed", 0) >= 3300),
    ]
    seen = []
    for what, predicate in kills:
        st = await wait_status_async(kube, "big", predicate, operator=operator, timeout=60, what=what)
        assert st["phase"] in ("Replaying", "WaitingForGates", "Pending"), st  # still mid-run
        seen.append(st.get("replayed", 0))
        operator.kill()  # SIGKILL: no cleanup, no final status write
        operator.start()

    st = await wait_finished(
        kube,
        "big",
        operator=operator,
        timeout=90,
    )
    assert st["phase"] == "Succeeded", st
    assert st["matched"] == st["replayed"] == JOBS
    assert st["skipped"] == 0 and st["progress"] == f"{JOBS}/{JOBS}"
    assert seen[1] < JOBS and seen[2] < JOBS
    waiting = await redis_client.lrange("bull:default:wait", 0, -1)
    assert len(waiting) == len(set(waiting)) == JOBS  # no job moved twice
    assert set(waiting) == set(ids)
    assert await redis_client.zcard("bull:default:failed") == 0  # none left behind
    assert operator.starts == 4
