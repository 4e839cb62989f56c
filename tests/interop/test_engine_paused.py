"""The replay engine against a queue that a Node.js BullMQ 5 or 6 app paused.

BullMQ 5 pauses by ``RENAME wait paused`` and resumes by ``RENAME paused wait``,
overwriting whatever was pushed onto ``wait`` meanwhile (see tests/support/node.py and
``test_naive_replay_into_paused_queue``). The engine therefore sends replayed jobs to
the ``paused`` list while ``meta.paused`` is set, WATCHing ``meta`` so a pause or resume
racing the batch aborts it. Here Node pauses, live traffic keeps arriving, requeue replays
(both batch paths: ``moveJobsToWait`` for runs of jobs without a priority, ``reprocessJob``
for each job with one), Node resumes, and a Node worker of the same major processes every replayed job
exactly once.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aredis

from requeue.api import DLQReplaySpec, ReplayPhase
from requeue.api.base import find_condition
from requeue.api.conditions import ReplayCondition
from requeue.queues import ReplayKeys, connect
from requeue.replay import ReplayEngine
from support.node import (
    MAJORS,
    FailRule,
    NodeWorker,
    pause_with_live_traffic,
    resume_then_run_each_once,
    run_producer,
)

pytestmark = pytest.mark.interop

RATE_LIMITED = "429 Too Many Requests from provider"


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("with_priority", [False, True], ids=["moveJobsToWait", "reprocessJob"])
async def test_engine_replay_into_node_paused_queue(
    major: int, with_priority: bool, redis_url: str, redis_client: aredis.Redis
) -> None:
    qname = f"paused-{major}-{'prio' if with_priority else 'plain'}"
    k = f"bull:{qname}"
    jobs: list[dict[str, Any]] = [
        {
            "name": "whatsapp.send",
            "data": {"i": i, "to": f"+4915{i:07d}"},
            "opts": {"priority": 3} if with_priority and i % 4 == 0 else {},
        }
        for i in range(45)
    ]
    jobs += [{"name": "email.send", "data": {"i": i}, "opts": {}} for i in range(5)]
    ids = await run_producer(redis_url, qname, jobs, major=major)
    by_id = dict(zip(ids, jobs, strict=True))
    rules = [FailRule(RATE_LIMITED, name="whatsapp.send"), FailRule("smtp down", name="email.send")]
    async with NodeWorker(redis_url, qname, major=major, fail=rules) as worker:
        await worker.wait_for_final(ids)
    wanted = [i for i in ids if by_id[i]["name"] == "whatsapp.send"]

    # the app pauses its queue (BullMQ 5: RENAME wait paused), and live jobs keep arriving
    await run_producer(
        redis_url, qname, [{"name": "email.send", "data": {"early": True}, "opts": {}}], major=major
    )
    live = await pause_with_live_traffic(redis_url, qname, major=major)

    client = await connect(redis_url)
    try:
        spec = DLQReplaySpec.model_validate(
            {
                "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
                "queue": qname,
                "selector": {"jobNames": ["whatsapp.*"]},
                "rate": {"jobsPerSecond": 100_000, "batchSize": 20},
            }
        )
        engine = ReplayEngine(client, replay_id=f"paused-{major}-{with_priority}", owner="ns/paused")
        st = await engine.run(spec)
        bulk = await client.hget(ReplayKeys(engine.replay_id).progress, "bulk_moved")
    finally:
        await client.aclose()
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped) == (45, 45, 0)
    cond = find_condition(st.conditions, ReplayCondition.QUEUE_PAUSED)
    assert cond is not None and cond.reason == "PausedByOthers"
    plain = {i for i in wanted if not by_id[i]["opts"]}
    # which batch path ran: moveJobsToWait for runs of jobs without a priority at the head of
    # the failed set, reprocessJob for each job with one (never moveJobsToWait: it ignores it)
    if with_priority:
        assert 0 < int(bulk or 0) <= len(plain)
    else:
        assert int(bulk or 0) == 45
    assert await redis_client.hexists(f"{k}:meta", "paused")
    assert plain <= set(await redis_client.lrange(f"{k}:paused", 0, -1))
    prioritized = set(await redis_client.zrange(f"{k}:prioritized", 0, -1))
    assert prioritized == set(wanted) - plain

    outcomes = await resume_then_run_each_once(redis_url, qname, major=major, ids=[*wanted, *live])
    assert all(o.outcome == "completed" for o in outcomes.values())
    for i in wanted:
        assert outcomes[i].data == by_id[i]["data"]
        assert outcomes[i].attempts_made_before == 0  # resetAttempts (default) on both paths
    assert await redis_client.llen(f"{k}:paused") == 0
    assert await redis_client.llen(f"{k}:wait") == 0
    assert set(await redis_client.zrange(f"{k}:failed", 0, -1)) == set(ids) - set(wanted)
