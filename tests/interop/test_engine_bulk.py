"""Mode Bulk against Node.js BullMQ 5 and 6: what it moves, Node workers run exactly once.

Bulk replays a time window with BullMQ's own ``moveJobsToWait`` (what ``Queue.retryJobs``
runs). Here a Node app's jobs fail, the app pauses its queue (BullMQ 5: ``RENAME wait
paused``) while live jobs keep arriving, requeue replays the window in Bulk, the app
resumes, and a Node worker of the same major runs every replayed job exactly once, with
its data unchanged, jobs with a priority included (Bulk queues them as plain jobs, as
``retryJobs`` does), and the attempt counters as ``resetAttempts`` says.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aredis

from requeue.api import DLQReplaySpec, ReplayPhase
from requeue.clock import utcnow
from requeue.queues import connect
from requeue.replay import EngineTuning, ReplayEngine
from support.node import (
    MAJORS,
    FailRule,
    NodeWorker,
    pause_with_live_traffic,
    resume_then_run_each_once,
    run_producer,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("reset", [True, False], ids=["resetAttempts", "keepAttempts"])
async def test_bulk_replay_into_node_paused_queue_runs_each_job_once(
    major: int, reset: bool, redis_url: str, redis_client: aredis.Redis
) -> None:
    qname = f"bulk-{major}-{reset}"
    k = f"bull:{qname}"
    jobs: list[dict[str, Any]] = [
        {
            "name": "whatsapp.send",
            "data": {"i": i, "to": f"+4915{i:07d}"},
            "opts": {"attempts": 2, **({"priority": 3} if i % 4 == 0 else {})},
        }
        for i in range(40)
    ]
    ids = await run_producer(redis_url, qname, jobs, major=major)
    by_id = dict(zip(ids, jobs, strict=True))
    rules = [FailRule("429 Too Many Requests", name="whatsapp.send")]
    async with NodeWorker(redis_url, qname, major=major, fail=rules) as worker:
        await worker.wait_for_final(ids, timeout_s=60)
    live = await pause_with_live_traffic(redis_url, qname, major=major)

    client = await connect(redis_url)
    try:
        spec = DLQReplaySpec.model_validate(
            {
                "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
                "queue": qname,
                "mode": "Bulk",
                "resetAttempts": reset,
                "rate": {"jobsPerSecond": 100_000, "batchSize": 15},
            }
        )
        margin = EngineTuning(clock_skew_ms=100)

        def ahead() -> datetime:
            """The engine's clock, the margin ahead of real time: the jobs that failed above are
            in Bulk's window at once, without sleeping past the margin."""
            return utcnow() + timedelta(milliseconds=margin.clock_skew_ms)

        st = await ReplayEngine(
            client, replay_id=f"bulk-{major}-{reset}", owner="ns/bulk", tuning=margin, clock=ahead
        ).run(spec)
    finally:
        await client.aclose()
    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.skipped) == (40, 40, 0)
    assert await redis_client.zcard(f"{k}:failed") == 0
    assert await redis_client.zcard(f"{k}:prioritized") == 0  # Bulk: as retryJobs, all to wait

    outcomes = await resume_then_run_each_once(redis_url, qname, major=major, ids=[*ids, *live])
    assert all(o.outcome == "completed" for o in outcomes.values())
    for i in ids:
        assert outcomes[i].data == by_id[i]["data"]
        assert outcomes[i].attempts_made_before == (0 if reset else 2)
    assert await redis_client.llen(f"{k}:paused") == 0 and await redis_client.llen(f"{k}:wait") == 0
