"""``selector.jobIds``: exactly the named failed jobs move, each once; named ids that are not failed
are counted and named, never silently dropped. Jobs are failed (and completed) by real BullMQ workers."""

from __future__ import annotations

import redis.asyncio as aioredis

from requeue.api import DLQReplayStatus, ReplayPhase
from requeue.api.conditions import Reason
from requeue.queues import ReplayKeys
from requeue.queues.by_id import ID_PAGE_SIZE
from requeue.replay import ReplayEngine, StepResult
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs, run_worker
from support.replay import drive, drive_losing_status, replay_spec

Q = "default"


async def _completed(redis_url: str, n: int) -> list[str]:
    ids = await add_jobs(redis_url, Q, [JobSpec(name="done", data={"i": i}) for i in range(n)])
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(n)
    return ids


async def test_named_failed_jobs_move_once_and_the_others_are_named(
    redis_url: str, r: aioredis.Redis
) -> None:
    failed = await make_failed_jobs(
        redis_url, Q, [JobSpec(name=f"job.{i % 3}", data={"i": i}, reason=f"boom {i}") for i in range(10)]
    )
    [done] = await _completed(redis_url, 1)
    corrupt = failed[9]
    await r.hset(f"bull:{Q}:{corrupt}", "data", "{not json")
    named = [failed[3], failed[7], done, "no-such-job", failed[1], corrupt]
    spec = replay_spec(selector={"jobIds": named})
    engine = ReplayEngine(r, replay_id="ids-1", owner="ns/ids-1")
    events: list[tuple[str, str]] = []

    async def collect(result: StepResult) -> None:
        events.extend((e.reason, e.message) for e in result.events)

    st = await engine.run(spec, on_step=collect)

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.skipped, st.corrupt) == (3, 3, 0, 1)
    assert st.not_failed == 2 and st.not_failed_ids == [done, "no-such-job"]
    assert st.corrupt_ids == [corrupt]
    # the snapshot keeps the order the ids were named in
    snapshot = await r.lrange(ReplayKeys("ids-1").snapshot, 0, -1)
    assert snapshot == [failed[3], failed[7], failed[1]]
    still_failed = set(await r.zrange(f"bull:{Q}:failed", 0, -1))
    assert still_failed == set(failed) - {failed[3], failed[7], failed[1]}
    assert await r.zscore(f"bull:{Q}:completed", done) is not None  # left alone
    [warning] = [m for reason, m in events if reason == Reason.JOBS_NOT_FAILED]
    assert f"2 of the ids are not in the failed set (left alone): {done}, no-such-job" in warning

    # a real worker runs exactly the three named jobs, once each
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(3)
    assert sorted(worker.processed_ids) == sorted([failed[3], failed[7], failed[1]])


async def test_many_ids_across_pages_exactly_once_through_crashes(redis_url: str, r: aioredis.Redis) -> None:
    n = ID_PAGE_SIZE + 50
    failed = await make_failed_jobs(redis_url, Q, [JobSpec(name="bulk", data={"i": i}) for i in range(n)])
    absent = [f"gone-{i}" for i in range(5)]
    named = failed[::2] + absent + failed[1::2]
    spec = replay_spec(selector={"jobIds": named}, rate={"jobsPerSecond": 100_000, "batchSize": 7})

    st = await drive_losing_status(r, spec, replay_id="ids-2")

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.skipped, st.not_failed) == (n, n, 0, 5)
    assert st.not_failed_ids == absent
    assert await r.zcard(f"bull:{Q}:failed") == 0
    assert await r.llen(f"bull:{Q}:wait") == n  # each moved once: no id twice in wait
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(n)
    assert sorted(worker.processed_ids) == sorted(failed)


async def test_dry_run_names_what_it_would_leave(redis_url: str, r: aioredis.Redis) -> None:
    failed = await make_failed_jobs(redis_url, Q, [JobSpec(name="a", data={})])
    spec = replay_spec(selector={"jobIds": [failed[0], "typo"]}, dryRun=True)
    st = await drive(ReplayEngine(r, replay_id="ids-3", owner="ns/ids-3"), spec, DLQReplayStatus())
    assert st.phase == ReplayPhase.SUCCEEDED and st.matched == 1 and st.not_failed == 1
    assert "1 of the ids are not in the failed set (left alone): typo" in st.message
    assert await r.zscore(f"bull:{Q}:failed", failed[0]) is not None
