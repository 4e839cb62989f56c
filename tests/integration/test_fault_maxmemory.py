"""Redis at ``maxmemory`` (policy ``noeviction``) refuses writes mid-replay: the replay holds
with a named reason, moves and records nothing it did not do, and finishes once memory frees,
each job moved exactly once.

A full Redis answers PING and every read, so it is not "unreachable": the on-call person must
read that it is out of memory (and raise ``maxmemory`` or free memory), not go looking for a
network fault.
"""

from __future__ import annotations

import time
from typing import Any

from requeue.api import ReplayCondition, ReplayPhase
from requeue.api.base import find_condition
from requeue.errors import RedisOutOfMemory
from requeue.queues import QueueKeys, connect
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.replay import replay_under_way

Q = "default"
K = QueueKeys("bull", Q)
N = 60
#: Steps taken while Redis is full: enough to pass the failure bound and be reported.
FULL_STEPS = 4


async def test_replay_holds_on_redis_oom_with_a_named_reason_and_resumes_when_memory_frees(
    redis_factory: Any,
) -> None:
    server = redis_factory()
    ids = await make_failed_jobs(server.url, Q, [JobSpec("whatsapp.send", {"i": i}) for i in range(N)])
    client = await connect(server.url, timeout_s=5)
    try:
        engine, spec, st = await replay_under_way(client, "oom", redis_failure_bound=2)
        assert st.phase == ReplayPhase.REPLAYING

        # Redis full: every write is refused with "OOM command not allowed ..."
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)
        wait_before = await client.lrange(K.wait, 0, -1)
        failed_before = await client.zrange(K.failed, 0, -1)
        replayed_before = st.replayed

        results = []
        for _ in range(FULL_STEPS):
            result = await engine.step(spec, st)
            results.append(result)
            st = result.status
        assert st.phase == ReplayPhase.REPLAYING  # held, not failed, not finished
        assert st.replayed == replayed_before  # nothing counted that did not move
        ready = find_condition(st.conditions, ReplayCondition.READY)
        assert ready is not None and ready.status == "False", ready
        assert ready.reason == RedisOutOfMemory.reason == "RedisOutOfMemory", ready
        assert "out of memory" in ready.message and "maxmemory" in ready.message, ready.message
        warnings = [e for r in results for e in r.events if e.type == "Warning"]
        assert [e.reason for e in warnings] == [RedisOutOfMemory.reason]  # once, not once per retry
        assert all(r.delay > 0 for r in results)  # backing off, not spinning
        assert await client.lrange(K.wait, 0, -1) == wait_before
        assert await client.zrange(K.failed, 0, -1) == failed_before

        # memory frees: the replay goes on by itself and finishes
        await client.config_set("maxmemory", 0)
        deadline = time.monotonic() + 60
        reachable_events = []
        while not st.phase.finished:
            assert time.monotonic() < deadline, st
            result = await engine.step(spec, st)
            reachable_events += [e.reason for e in result.events if e.reason == "RedisReachable"]
            st = result.status
        assert st.phase == ReplayPhase.SUCCEEDED, st.message
        assert (st.matched, st.replayed, st.skipped) == (N, N, 0)
        assert reachable_events == ["RedisReachable"]
        ready = find_condition(st.conditions, ReplayCondition.READY)
        assert ready is not None and ready.status == "True", ready
        moved = await client.lrange(K.wait, 0, -1)
        assert len(moved) == len(set(moved)) == N and set(moved) == set(ids)  # each exactly once
        assert await client.zcard(K.failed) == 0

        async with run_worker(server.url, Q) as run:
            await run.wait_for(N)
        assert sorted(run.completed) == sorted(ids) and run.failed == []
    finally:
        await client.aclose()
