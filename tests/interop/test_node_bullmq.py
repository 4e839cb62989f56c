"""Proof of the replay approach against real Node.js BullMQ 5 and 6.

Node produces and fails jobs; Python replays a subset with the Python
``bullmq`` package's own ``reprocessJob`` script, one pipeline per batch; a Node
worker of the same major then processes exactly that subset. The recipe and the
5-vs-6 differences are written down in ``tests/support/node.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aredis
from bullmq import Queue

from support.bullmq_jobs import worker_waiting
from support.node import (
    MAJORS,
    FailRule,
    NodeWorker,
    get_counts,
    pause_queue,
    reprocess_failed,
    resume_queue,
    run_producer,
)

pytestmark = pytest.mark.interop

RATE_LIMITED = "429 Too Many Requests from provider"
DB_DOWN = "connect ECONNREFUSED 10.0.0.5:5432"
FAIL_RULES = [
    FailRule(RATE_LIMITED, name="whatsapp.send"),
    FailRule(DB_DOWN, data={"tenant": "acme"}),
]


def mixed_jobs() -> list[dict[str, Any]]:
    """12 jobs: 4 email.send (complete), 6 whatsapp.send (3 with priority; fail
    with 429), 2 report.build for tenant acme (attempts 2; fail with DB_DOWN)."""
    jobs: list[dict[str, Any]] = []
    for i in range(4):
        jobs.append({"name": "email.send", "data": {"i": i, "tenant": "globex"}, "opts": {}})
    for i in range(6):
        opts: dict[str, Any] = {"attempts": 2} if i % 3 == 0 else {}
        if i % 2 == 0:
            opts["priority"] = 5 + i
        tenant = "acme" if i == 5 else "globex"
        data = {"i": i, "tenant": tenant, "to": f"+4915{i:07d}", "text": "Dein Code: 1234"}
        jobs.append({"name": "whatsapp.send", "data": data, "opts": opts})
    for i in range(2):
        data = {"i": i, "tenant": "acme", "nested": {"a": [1, 2, {"b": None}]}}
        jobs.append({"name": "report.build", "data": data, "opts": {"attempts": 2}})
    return jobs


@pytest.fixture
async def py_queue_factory(redis_url: str) -> AsyncIterator[Any]:
    queues: list[Queue] = []

    def make(name: str, prefix: str = "bull") -> Queue:
        queue = Queue(name, {"connection": redis_url, "prefix": prefix})
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        await queue.close()


async def fail_with_node(
    redis_url: str, queue: str, jobs: list[dict[str, Any]], *, major: int, prefix: str = "bull"
) -> tuple[list[str], dict[str, Any]]:
    ids = await run_producer(redis_url, queue, jobs, major=major, prefix=prefix)
    assert len(ids) == len(jobs) and len(set(ids)) == len(ids)
    async with NodeWorker(redis_url, queue, major=major, prefix=prefix, fail=FAIL_RULES) as worker:
        finals = await worker.wait_for_final(ids)
    return ids, finals


@pytest.mark.parametrize("major", MAJORS)
async def test_replay_subset_processed_exactly_once_by_node(
    major: int, redis_url: str, redis_client: aredis.Redis, py_queue_factory: Any
) -> None:
    qname = f"notify-{major}"
    k = f"bull:{qname}"
    jobs = mixed_jobs()
    ids, finals = await fail_with_node(redis_url, qname, jobs, major=major)
    by_id = dict(zip(ids, jobs, strict=True))

    # --- Node failed exactly the matching jobs; BullMQ wrote its failed zset.
    expected_failed = {
        i for i, j in by_id.items() if j["name"] == "whatsapp.send" or j["data"]["tenant"] == "acme"
    }
    assert {i for i, f in finals.items() if f.outcome == "failed"} == expected_failed
    assert set(await redis_client.zrange(f"{k}:failed", 0, -1)) == expected_failed
    assert set(await redis_client.zrange(f"{k}:completed", 0, -1)) == set(ids) - expected_failed
    for i in expected_failed:
        job = await redis_client.hgetall(f"{k}:{i}")
        attempts = by_id[i]["opts"].get("attempts", 1)
        assert job["atm"] == str(attempts) and job["ats"] == str(attempts)
        want = RATE_LIMITED if by_id[i]["name"] == "whatsapp.send" else DB_DOWN
        assert job["failedReason"] == want

    # --- Select the subset (429s only) and snapshot the job hashes.
    subset = [i for i in ids if by_id[i]["name"] == "whatsapp.send"]
    prioritized = {i for i in subset if by_id[i]["opts"].get("priority")}
    plain = set(subset) - prioritized
    assert prioritized and plain
    before = {i: await redis_client.hgetall(f"{k}:{i}") for i in subset}
    completed_id = next(i for i in ids if by_id[i]["name"] == "email.send")

    # --- Replay: one pipeline, BullMQ's own reprocessJob (Python bullmq 3.4.4).
    queue = py_queue_factory(qname)
    codes = await reprocess_failed(queue, [*subset, "no-such-job", completed_id])
    assert codes == [1] * len(subset) + [-1, -3]
    # The same batch again is harmless: every job is refused as "not in failed".
    assert await reprocess_failed(queue, subset) == [-3] * len(subset)

    # --- Redis state after the replay, before any worker runs.
    assert set(await redis_client.zrange(f"{k}:failed", 0, -1)) == expected_failed - set(subset)
    assert set(await redis_client.lrange(f"{k}:wait", 0, -1)) == plain
    assert set(await redis_client.zrange(f"{k}:prioritized", 0, -1)) == prioritized
    for i in prioritized:
        score = await redis_client.zscore(f"{k}:prioritized", i)
        assert score is not None and int(score) >> 32 == by_id[i]["opts"]["priority"]
    assert await redis_client.zscore(f"{k}:marker", "0") is not None
    for i in subset:
        after = await redis_client.hgetall(f"{k}:{i}")
        removed = {"atm", "ats", "finishedOn", "processedOn", "failedReason"}
        assert removed.isdisjoint(after)
        assert after == {f: v for f, v in before[i].items() if f not in removed}
    events = await redis_client.xrange(f"{k}:events") or []
    waiting = [e for _, e in events if e and e.get("event") == "waiting" and e.get("prev") == "failed"]
    assert sorted(e["jobId"] for e in waiting) == sorted(subset)

    # --- The provider is healthy again: a Node worker of the same major
    # processes exactly the subset, once each, with attempts reset.
    async with NodeWorker(redis_url, qname, major=major) as worker:
        outcomes = await worker.wait_for_final(subset)
    assert len(worker.processed) == len(subset)
    for i, outcome in outcomes.items():
        assert outcome.outcome == "completed"
        assert outcome.name == by_id[i]["name"]
        assert outcome.data == by_id[i]["data"]
        assert outcome.attempts_made_before == 0
        assert outcome.attempts_made == 1
        assert outcome.attempts_started == 1
        for opt, value in by_id[i]["opts"].items():
            assert outcome.opts[opt] == value

    counts, paused = await get_counts(redis_url, qname, major=major)
    assert not paused
    assert counts["failed"] == len(expected_failed) - len(subset)
    assert counts["completed"] == len(ids) - counts["failed"]
    assert counts["waiting"] == counts["prioritized"] == counts["active"] == 0


@pytest.mark.parametrize("major", MAJORS)
async def test_replay_into_node_paused_queue_waits_for_resume(
    major: int, redis_url: str, redis_client: aredis.Redis, py_queue_factory: Any
) -> None:
    """Paused by Node; live traffic keeps arriving; the paused-aware replay keeps the
    replayed jobs unprocessed until Node resumes, then each runs exactly once."""
    qname, prefix = f"default-{major}", "ifx"
    k = f"{prefix}:{qname}"
    jobs = [
        {
            "name": "whatsapp.send",
            "data": {"i": i, "tenant": "globex"},
            "opts": {"priority": 3} if i % 2 else {},
        }
        for i in range(6)
    ]
    ids, finals = await fail_with_node(redis_url, qname, jobs, major=major, prefix=prefix)
    assert all(f.outcome == "failed" for f in finals.values())
    priority_ids = {i for i, j in zip(ids, jobs, strict=True) if j["opts"]}

    await pause_queue(redis_url, qname, major=major, prefix=prefix)
    live = await run_producer(
        redis_url,
        qname,
        [{"name": "email.send", "data": {"live": True}, "opts": {}}],
        major=major,
        prefix=prefix,
    )
    queue = py_queue_factory(qname, prefix)
    assert await reprocess_failed(queue, ids, paused_aware=True) == [1] * len(ids)

    assert await redis_client.hexists(f"{k}:meta", "paused")
    assert set(await redis_client.zrange(f"{k}:prioritized", 0, -1)) == priority_ids
    # Non-priority replayed jobs go where this major's own scripts put paused jobs.
    paused_list = set(await redis_client.lrange(f"{k}:paused", 0, -1))
    wait_list = set(await redis_client.lrange(f"{k}:wait", 0, -1))
    assert set(ids) - priority_ids <= paused_list
    assert live[0] in (paused_list if major == 5 else wait_list)
    assert await redis_client.zscore(f"{k}:marker", "0") is None

    async with NodeWorker(redis_url, qname, major=major, prefix=prefix) as worker:
        await worker_waiting(redis_client, qname, prefix=prefix)  # it looked, and found nothing to take
        assert worker.processed == []
        await resume_queue(redis_url, qname, major=major, prefix=prefix)
        outcomes = await worker.wait_for_final([*ids, *live])
    assert len(worker.processed) == len(ids) + 1
    assert all(o.outcome == "completed" and o.attempts_made == 1 for o in outcomes.values())
    assert await redis_client.llen(f"{k}:paused") == 0
    assert await redis_client.zcard(f"{k}:failed") == 0


@pytest.mark.parametrize("major", MAJORS)
async def test_naive_replay_into_paused_queue(
    major: int, redis_url: str, redis_client: aredis.Redis, py_queue_factory: Any
) -> None:
    """Characterisation: the plain recipe (always target ``wait``) into a queue that
    Node paused while a live job arrived. BullMQ 6 handles it; a BullMQ 5 resume
    does ``RENAME paused wait`` and orphans the replayed non-priority jobs. This
    is why the engine must use the paused-aware recipe (see support/node.py)."""
    qname = f"naive-{major}"
    k = f"bull:{qname}"
    jobs = [
        {"name": "whatsapp.send", "data": {"i": i}, "opts": {"priority": 2} if i == 0 else {}}
        for i in range(4)
    ]
    ids, _ = await fail_with_node(redis_url, qname, jobs, major=major)
    await pause_queue(redis_url, qname, major=major)
    live = await run_producer(redis_url, qname, [{"name": "email.send", "data": {}, "opts": {}}], major=major)
    queue = py_queue_factory(qname)
    assert await reprocess_failed(queue, ids) == [1] * len(ids)
    await resume_queue(redis_url, qname, major=major)

    if major == 6:
        async with NodeWorker(redis_url, qname, major=major) as worker:
            await worker.wait_for_final([*ids, *live])
        assert len(worker.processed) == len(ids) + 1
        return

    lost = set(ids[1:])
    async with NodeWorker(redis_url, qname, major=major) as worker:
        await worker.wait_for_final([ids[0], *live])
        await worker_waiting(redis_client, qname)  # the orphans are in no list it reads
    assert {p.id for p in worker.processed} == {ids[0], *live}
    for i in lost:
        assert await redis_client.exists(f"{k}:{i}")  # the hash survives ...
        for zset in ("failed", "completed", "prioritized", "delayed"):  # ... in no set
            assert await redis_client.zscore(f"{k}:{zset}", i) is None
        for lst in ("wait", "paused", "active"):
            assert i not in await redis_client.lrange(f"{k}:{lst}", 0, -1)
