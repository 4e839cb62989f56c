"""The engine's fast path for a pure time window, against real failed BullMQ jobs.

A pure time window (no jobNames, failedReasonPattern or dataMatch) is selected inside Redis
(``SELECT_WINDOW``: one atomic page per call) and moved by BullMQ's ``moveJobsToWait`` in
chunks, each one write: WATCH, a guard that vetoes its own EXEC unless the chunk is exactly
the head of the failed set, and the MULTI with the move and its bookkeeping. Jobs with a
priority or lifo go through ``reprocessJob``. These tests hold it to what ``reprocessJob``
one by one would do, exactly once, across crashes at every point that has one.
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayPhase
from requeue.queues import BullQueue, QueueKeys, ReplayKeys
from requeue.replay import EngineTuning, ReplayEngine
from support.bullmq_jobs import (
    JobSpec,
    make_failed_jobs,
    mixed_jobs,
    run_worker,
    three_generations,
    worker_waiting,
)
from support.cli import cli, interrupt_cli, write_manifest
from support.replay import (
    ONE_BATCH_PER_STEP,
    drive,
    drive_losing_status,
    lose_every_third_reply,
    refail_first_replayed,
    replay_spec,
)

Q = "default"
K = QueueKeys("bull", Q)


def make_spec(**fields: Any) -> DLQReplaySpec:
    return replay_spec({"rate": {"jobsPerSecond": 1_000_000, "batchSize": 1000}}, **fields)


def expected_state(order: list[str], jobs: dict[str, JobSpec]) -> tuple[list[str], list[str]]:
    """What ``reprocessJob`` for each id in failure order leaves: the wait list (LPUSH, lifo
    RPUSH) and the prioritized ids in zset order (priority, then insertion)."""
    wait: list[str] = []
    prio: list[tuple[int, int, str]] = []
    for n, job_id in enumerate(order):
        opts = jobs[job_id].opts
        if opts.get("priority"):
            prio.append((opts["priority"], n, job_id))
        elif opts.get("lifo"):
            wait.append(job_id)
        else:
            wait.insert(0, job_id)
    return wait, [job_id for _, _, job_id in sorted(prio)]


async def bulk_moved(r: aioredis.Redis, replay_id: str) -> int:
    return int(await r.hget(ReplayKeys(replay_id).progress, "bulk_moved") or 0)


@pytest.mark.parametrize("reset", [True, False])
async def test_same_end_state_as_reprocess_job_one_by_one(
    redis_url: str, r: aioredis.Redis, reset: bool
) -> None:
    specs = mixed_jobs(150)
    ids = await make_failed_jobs(redis_url, Q, specs)
    by_id = dict(zip(ids, specs, strict=True))
    order = cast(list[str], await r.zrange(K.failed, 0, -1))
    before = {i: await r.hgetall(K.job(i)) for i in ids}
    st = await ReplayEngine(r, replay_id="eq", owner="ns/eq").run(make_spec(resetAttempts=reset))
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped, st.corrupt) == (150, 150, 0, 0)
    slow = sum(1 for s in specs if s.opts.get("priority") or s.opts.get("lifo"))
    assert await bulk_moved(r, "eq") == 150 - slow  # everything else went the bulk way
    wait, prioritized = expected_state(order, by_id)
    assert await r.lrange(K.wait, 0, -1) == wait
    assert await r.zrange(K.prioritized, 0, -1) == prioritized
    assert await r.zcard(K.failed) == 0
    for job_id in ids:
        after = await r.hgetall(K.job(job_id))
        gone = {"finishedOn", "processedOn", "failedReason"} | ({"atm", "ats"} if reset else set())
        assert after == {f: v for f, v in before[job_id].items() if f not in gone}, job_id
    assert await r.xlen(K.events) > 0
    # the breakdown is exact: names counted in Redis, reasons folded there and normalised here
    assert st.breakdown is not None
    assert st.breakdown.by_name == {"whatsapp.send": 75, "email.send": 75}
    assert st.breakdown.by_reason == {"timeout after <n>ms": 150}
    # and workers run every job once
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(150)
    assert sorted(worker.completed) == sorted(ids)


async def test_window_bounds_and_max_jobs_select_exactly(redis_url: str, r: aioredis.Redis) -> None:
    old, mid, new = await three_generations(redis_url, Q)
    scores = dict(cast(list[tuple[str, float]], await r.zrange(K.failed, 0, -1, withscores=True)))
    lo = min(scores[i] for i in mid)
    hi = max(scores[i] for i in mid) + 1
    assert max(scores[i] for i in old) < lo and min(scores[i] for i in new) >= hi
    window = {
        "failedAfter": datetime.fromtimestamp(lo / 1000, UTC).isoformat(),
        "failedBefore": datetime.fromtimestamp(hi / 1000, UTC).isoformat(),
    }
    st = await ReplayEngine(r, replay_id="w", owner="ns/w").run(make_spec(selector={**window, "maxJobs": 25}))
    assert (st.matched, st.replayed) == (25, 25)
    in_window = [m for m, s in sorted(scores.items(), key=lambda kv: (kv[1], kv[0])) if lo <= s < hi]
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(in_window[:25])
    assert set(await r.zrange(K.failed, 0, -1)) == set(old) | set(new) | set(in_window[25:])
    # the older failures sit in front of the window: moveJobsToWait (which always starts at the
    # head of the failed set) cannot be used, every job goes through reprocessJob
    assert await bulk_moved(r, "w") == 0


async def test_resume_after_crashes_between_every_selection_page_and_every_step(
    redis_url: str, r: aioredis.Redis
) -> None:
    specs = mixed_jobs(120)
    ids = await make_failed_jobs(redis_url, Q, specs)
    tuning = EngineTuning(select_window_page=7, select_step_members=14, move_chunk=9)
    spec = make_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 20})
    st = await drive_losing_status(r, spec, replay_id="cs", tuning=tuning)
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped) == (120, 120, 0)
    snapshot = await r.lrange(ReplayKeys("cs").snapshot, 0, -1)
    assert len(snapshot) == len(set(snapshot)) == 120
    moved = [*await r.lrange(K.wait, 0, -1), *await r.zrange(K.prioritized, 0, -1)]
    assert len(moved) == len(set(moved)) and set(moved) == set(ids)
    assert await bulk_moved(r, "cs") > 0


async def test_two_processes_on_one_replay_select_and_move_each_job_once(
    redis_url: str, r: aioredis.Redis
) -> None:
    """A handler running twice at once (kopf did, on the emulator): every selection page and
    every chunk is atomic and reads its cursor in Redis, so they share the work."""
    ids = await make_failed_jobs(redis_url, Q, mixed_jobs(200))
    tuning = EngineTuning(select_window_page=11, move_chunk=13)
    spec = make_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 30})
    one, two = await asyncio.gather(
        ReplayEngine(r, replay_id="tw", owner="ns/tw", tuning=tuning).run(spec),
        ReplayEngine(r, replay_id="tw", owner="ns/tw", tuning=tuning).run(spec),
    )
    for st in (one, two):
        assert st.phase == ReplayPhase.SUCCEEDED and (st.matched, st.replayed) == (200, 200)
    snapshot = await r.lrange(ReplayKeys("tw").snapshot, 0, -1)
    assert len(snapshot) == len(set(snapshot)) == 200
    moved = [*await r.lrange(K.wait, 0, -1), *await r.zrange(K.prioritized, 0, -1)]
    assert len(moved) == len(set(moved)) == 200 and set(moved) == set(ids)


@pytest.mark.parametrize("lost", ["before", "after"])
async def test_connection_lost_around_a_fast_chunk_moves_nothing_twice(
    redis_url: str, r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """The chunk's write reached Redis (or not), the reply never came back: the retry finds
    the cursor where Redis left it and moves nothing twice, loses nothing."""
    ids = await make_failed_jobs(redis_url, Q, [JobSpec("x", {"i": i}) for i in range(90)])
    calls = lose_every_third_reply(monkeypatch, write_lands=lost == "after")
    engine = ReplayEngine(
        r,
        replay_id=f"ls-{lost}",
        owner="ns/ls",
        backoff=0.001,
        redis_failure_bound=100,
        tuning=EngineTuning(move_chunk=10),
    )
    st = await drive(engine, make_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 30}))
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped) == (90, 90, 0)
    waiting = await r.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == 90 and set(waiting) == set(ids)
    assert await r.llen(ReplayKeys(f"ls-{lost}").replayed) == 90
    assert calls[0] >= 9


async def test_guard_vetoes_a_chunk_whose_plan_went_stale(redis_url: str, r: aioredis.Redis) -> None:
    """Between the plan and the chunk: the queue is paused, or a planned job leaves the failed
    set (someone retried it). The guard aborts the chunk's EXEC; nothing moves; the replay then
    finishes with that job counted as skipped."""
    ids = await make_failed_jobs(redis_url, Q, [JobSpec("x", {"i": i}) for i in range(12)])
    spec = make_spec()
    engine = ReplayEngine(r, replay_id="gv", owner="ns/gv")
    st = DLQReplayStatus()
    while st.matched == 0 or (await r.hget(ReplayKeys("gv").progress, "stage")) != "replaying":
        st = (await engine.step(spec, st)).status
    q = BullQueue(r, Q)
    mover = engine._mover
    plan = await mover.plan(q, 12, "pos")
    assert [c[0] for c in plan.chunks] == ["f"] and plan.chunks[0][1] == 12
    _, count, last = plan.chunks[0]
    # paused meanwhile: the target list chosen from the plan would be wrong
    assert await mover.fast_chunk(spec, q, plan.cursor, count, last, not plan.paused, plan.matched) is None
    # a planned job retried by someone else meanwhile
    first = cast(list[str], await r.zrange(K.failed, 0, 0))[0]
    assert await q.replay([first]) == [1]
    assert await mover.fast_chunk(spec, q, plan.cursor, count, last, plan.paused, plan.matched) is None
    assert await r.llen(K.wait) == 1 and await r.zcard(K.failed) == 11
    assert int(await r.hget(ReplayKeys("gv").progress, "fast_miss") or 0) == 2
    st = await drive(engine, spec, st)
    assert (st.replayed, st.skipped) == (11, 1)
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(ids)


async def test_paused_queue_fast_path_targets_the_paused_list(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(redis_url, Q, [JobSpec("x", {"i": i}) for i in range(25)])
    q = BullQueue(r, Q)
    await q.pause()
    st = await ReplayEngine(r, replay_id="pp", owner="ns/pp").run(make_spec())
    assert st.replayed == 25 and await bulk_moved(r, "pp") == 25
    assert sorted(await r.lrange(K.paused, 0, -1)) == sorted(ids)
    assert await r.llen(K.wait) == 0 and await q.is_paused()
    async with run_worker(redis_url, Q) as worker:
        await worker_waiting(r, Q)
        assert worker.processed == []
        await q.resume()
        await worker.wait_for(25)
    assert sorted(worker.completed) == sorted(ids)


async def test_jobs_failing_again_during_a_fast_replay_are_not_picked_again(
    redis_url: str, r: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, Q, [JobSpec("x", {"i": i}) for i in range(60)])
    spec = make_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 20})
    engine = ReplayEngine(r, replay_id="fa", owner="ns/fa", tuning=replace(ONE_BATCH_PER_STEP, move_chunk=10))
    st, refailed = await refail_first_replayed(engine, spec, redis_url, Q, 20)
    assert len(refailed) == 20
    st = await drive(engine, spec, st)
    assert (st.matched, st.replayed, st.skipped) == (60, 60, 0)
    assert set(await r.zrange(K.failed, 0, -1)) == refailed  # failed again, left alone
    assert set(await r.lrange(K.wait, 0, -1)) == set(ids) - refailed


async def test_sigkill_mid_fast_replay_then_rerun_moves_each_job_once(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    specs = mixed_jobs(200)
    ids = await make_failed_jobs(redis_url, Q, specs)
    manifest = write_manifest(tmp_path / "replay.yaml", {"rate": {"jobsPerSecond": 40, "batchSize": 8}})
    args = ("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}")
    interrupt_cli(
        *args,
        log=tmp_path / "first.log",
        redis_url=redis_url,
        ready=lambda s: s.llen(K.wait) + s.zcard(K.prioritized) >= 30,
        stop=signal.SIGKILL,
        exit_timeout=10,
    )
    before = await redis_client.llen(K.wait) + await redis_client.zcard(K.prioritized)
    assert 30 <= before < 200, "the kill must land mid-replay"
    # the rerun (same namespace/name: the same replay) at full speed
    manifest = write_manifest(
        tmp_path / "replay.yaml", {"rate": {"jobsPerSecond": 1_000_000, "batchSize": 1000}}
    )
    res = cli(*args, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", 200, 200)
    moved = [*await redis_client.lrange(K.wait, 0, -1), *await redis_client.zrange(K.prioritized, 0, -1)]
    assert len(moved) == len(set(moved)) == 200 and set(moved) == set(ids)
    assert await redis_client.zcard(K.failed) == 0


async def test_the_in_redis_json_shape_check_trims_whitespace_and_names_the_rest_corrupt(
    redis_url: str, r: aioredis.Redis
) -> None:
    """SELECT_WINDOW checks a job's data only looks like JSON, trimming ASCII whitespace by
    bytes (a trimming Lua pattern was quadratic on a long inner run of spaces)."""
    ids = await make_failed_jobs(redis_url, Q, [JobSpec("mail.send", {"n": n}) for n in range(6)])
    shapes = {
        ids[0]: '  {"n": 0}\n',
        ids[1]: '\t"text"  ',
        ids[2]: "   \r\n",
        ids[3]: " a" + " " * 200_000 + "b ",
        ids[4]: '"',
        ids[5]: "[1, 2]",
    }
    for job_id, data in shapes.items():
        await r.hset(K.job(job_id), "data", data)
    st = await drive(ReplayEngine(r, replay_id="shape", owner="ops/shape"), make_spec())
    assert (st.matched, st.corrupt) == (3, 3), st
    assert sorted(st.corrupt_ids) == sorted([ids[2], ids[3], ids[4]])
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted([ids[0], ids[1], ids[5]])
