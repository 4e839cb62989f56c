"""targetQueue under faults: a crash mid-batch, a replay left half-copied by the old two-step
code, and source jobs that leave the failed set (retried, made active) while the replay runs.

Every check is on real BullMQ data: jobs failed by a real Python bullmq Worker, copies made
and originals removed by BullMQ's own scripts, a real Worker holding a job active.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Worker

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayPhase
from requeue.queues import BullQueue, QueueKeys, ReplayKeys, connect
from requeue.queues.raw import RawTransaction
from requeue.replay import ReplayEngine
from support import async_wait_until, replay
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.replay import replay_spec

Q, T = "default", "retry"


class ProcessKilled(BaseException):
    """Stands for SIGKILL: nothing in the engine catches it, nothing after it runs."""


def make_spec(**fields: Any) -> DLQReplaySpec:
    return replay_spec({"targetQueue": T, "rate": {"jobsPerSecond": 100_000, "batchSize": 10}}, **fields)


def jobs(n: int, **opts: Any) -> list[JobSpec]:
    return [JobSpec("whatsapp.send", {"i": i}, "429 rate limited", dict(opts)) for i in range(n)]


async def drive(
    engine: ReplayEngine, spec: DLQReplaySpec, st: DLQReplayStatus | None = None
) -> DLQReplayStatus:
    return await replay.drive(engine, spec, st, max_steps=2000)


async def until_replaying(engine: ReplayEngine, spec: DLQReplaySpec) -> DLQReplayStatus:
    """Step through selection; stop before the first batch moves anything."""
    st = DLQReplayStatus()
    for _ in range(100):
        st = (await engine.step(spec, st)).status
        if await engine.redis.hget(ReplayKeys(engine.replay_id).progress, "stage") == "replaying":
            return st
    raise AssertionError("selection did not finish")


async def copies(r: aioredis.Redis) -> list[str]:
    k = QueueKeys("bull", T)
    return [*await r.lrange(k.wait, 0, -1), *await r.zrange(k.prioritized, 0, -1)]


async def _has_copies(r: aioredis.Redis, n: int) -> bool:
    return len(await copies(r)) >= n


def copy_ids(ids: list[str]) -> list[str]:
    return sorted(f"requeue-{Q}-{i}" for i in ids)


async def test_crash_after_the_batch_was_sent_copies_once(
    redis_url: str, r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies right after sending a batch's EXEC, before reading the answer or writing
    status. Copy and removal are one transaction, so Redis holds either both or neither; a new
    engine rebuilt from Redis and an old status finishes with one copy per job."""
    ids = await make_failed_jobs(redis_url, Q, jobs(25) + jobs(5, priority=4))
    spec = make_spec()
    st = await until_replaying(ReplayEngine(r, replay_id="crash", owner="ns/crash"), spec)
    real_exec = RawTransaction.exec
    crashed: list[int] = []

    async def exec_then_die(self: RawTransaction, commands: Any) -> Any:
        if crashed:
            return await real_exec(self, commands)
        body = list(commands)
        assert self.conn is not None
        await self.conn.send_packed_command([b"*1\r\n$5\r\nMULTI\r\n", *body, b"*1\r\n$4\r\nEXEC\r\n"])
        crashed.append(len(body))
        raise ProcessKilled("SIGKILL after sending the batch")

    monkeypatch.setattr(RawTransaction, "exec", exec_then_die)
    with pytest.raises(ProcessKilled):
        await ReplayEngine(r, replay_id="crash", owner="ns/crash").step(spec, st)
    # Redis ran the whole batch: 10 copies made, 10 originals gone, counters advanced with them
    await async_wait_until(lambda: _has_copies(r, 10), message="Redis to finish the EXEC it was sent")
    assert len(await copies(r)) == 10
    assert await r.zcard(QueueKeys("bull", Q).failed) == 20
    assert await r.hget(ReplayKeys("crash").progress, "replayed") == "10"

    st = await drive(ReplayEngine(r, replay_id="crash", owner="ns/crash"), spec, st)  # stale status
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped) == (30, 30, 0)
    assert sorted(await copies(r)) == copy_ids(ids)
    assert await r.zcard(QueueKeys("bull", Q).failed) == 0
    for job_id in ids:
        assert not await r.exists(QueueKeys("bull", Q).job(job_id))


async def test_replay_left_between_copy_and_removal_by_the_old_two_step_code(
    redis_url: str, r: aioredis.Redis
) -> None:
    """requeue 0.1 copied a batch in one transaction and removed the originals in a second; a
    crash between them left copies, the copied ids in ``<progress>:copied`` and ``copied_upto``
    ahead of the cursor. Rebuilt from Redis at that point, the engine removes those originals
    without copying them again (even when a copy was processed and removed meanwhile)."""
    ids = await make_failed_jobs(redis_url, Q, jobs(12))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 5})
    engine = ReplayEngine(r, replay_id="legacy", owner="ns/legacy")
    st = await until_replaying(engine, spec)
    first = cast(list[str], await r.lrange(ReplayKeys("legacy").snapshot, 0, 4))
    source, target = BullQueue(r, Q), BullQueue(r, T)
    async with r.pipeline(transaction=True) as pipe:  # what the old first transaction did
        pipe.rpush(ReplayKeys("legacy").progress + ":copied", *first)
        for job_id, job in zip(
            first, await source.fetch(first, ("name", "data", "opts", "priority")), strict=True
        ):
            assert job is not None
            await target.queue_copy(pipe, job, new_id=f"requeue-{Q}-{job_id}", timestamp_ms=1)
        pipe.hset(ReplayKeys("legacy").progress, "copied_upto", "5")
        await pipe.execute()
    # one copy already ran and was removed (removeOnComplete): copying again would run it twice
    gone = f"requeue-{Q}-{first[0]}"
    await r.lrem(QueueKeys("bull", T).wait, 0, gone)
    await r.delete(QueueKeys("bull", T).job(gone))

    st = await drive(ReplayEngine(r, replay_id="legacy", owner="ns/legacy"), spec, st)
    assert (st.matched, st.replayed, st.skipped) == (12, 12, 0)
    assert sorted(await copies(r)) == sorted(set(copy_ids(ids)) - {gone})
    assert await r.zcard(QueueKeys("bull", Q).failed) == 0
    assert not await r.exists(ReplayKeys("legacy").progress + ":copied")


async def test_source_job_made_active_meanwhile_is_neither_copied_nor_counted(
    redis_url: str, r: aioredis.Redis
) -> None:
    """Someone retries a selected job and a worker is running it when the batch comes: it is
    skipped (not moved, not removed, no copy), and runs exactly once, in the source queue."""
    ids = await make_failed_jobs(redis_url, Q, jobs(8))
    spec = make_spec()
    engine = ReplayEngine(r, replay_id="active", owner="ns/active")
    st = await until_replaying(engine, spec)
    busy = ids[3]
    assert await BullQueue(r, Q).replay([busy]) == [1]  # someone else's retry
    release, started = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def hold(job: Job, token: str) -> str:
        ran.append(str(job.id))
        started.set()
        await release.wait()
        return "ok"

    worker = Worker(Q, hold, {"connection": redis_url, "prefix": "bull", "drainDelay": 1})
    try:
        await asyncio.wait_for(started.wait(), 20)
        assert busy in await r.lrange(QueueKeys("bull", Q).active, 0, -1)
        st = await drive(engine, spec, st)
        assert (st.matched, st.replayed, st.skipped) == (8, 7, 1)
        assert f"requeue-{Q}-{busy}" not in await copies(r)
        assert sorted(await copies(r)) == copy_ids([i for i in ids if i != busy])
        assert await r.exists(QueueKeys("bull", Q).job(busy))  # not removed while active
        release.set()
        for _ in range(200):
            if await r.zscore(QueueKeys("bull", Q).completed, busy) is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        release.set()
        await worker.close()
    assert ran == [busy]
    assert await r.zscore(QueueKeys("bull", Q).completed, busy) is not None


async def test_source_job_retried_between_read_and_commit_aborts_the_batch(
    redis_url: str, r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch WATCHes the source job hashes it read: a retry landing between the read and
    EXEC aborts the transaction (nothing copied, nothing removed), and the next attempt sees the
    job is no longer failed and skips it. Workers then run every job exactly once."""
    ids = await make_failed_jobs(redis_url, Q, jobs(6))
    spec = make_spec()
    engine = ReplayEngine(r, replay_id="race", owner="ns/race")
    st = await until_replaying(engine, spec)
    victim = ids[2]
    other = await connect(redis_url)
    real_exec = RawTransaction.exec
    aborted: list[Any] = []

    async def interfere_then_exec(self: RawTransaction, commands: Any) -> Any:
        if not aborted:
            assert await BullQueue(other, Q).replay([victim]) == [1]
        result = await real_exec(self, commands)
        if not aborted:
            aborted.append(result)
        return result

    monkeypatch.setattr(RawTransaction, "exec", interfere_then_exec)
    try:
        st = await drive(engine, spec, st)
    finally:
        await other.aclose()
    assert aborted == [None]  # WATCH fired: the first EXEC did nothing
    assert (st.replayed, st.skipped) == (5, 1)
    assert sorted(await copies(r)) == copy_ids([i for i in ids if i != victim])
    async with run_worker(redis_url, Q) as source_worker, run_worker(redis_url, T) as target_worker:
        await source_worker.wait_for(1)
        await target_worker.wait_for(5)
    assert source_worker.processed_ids == [victim]
    assert sorted(target_worker.processed_ids) == copy_ids([i for i in ids if i != victim])
