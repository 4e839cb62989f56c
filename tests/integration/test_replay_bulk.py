"""Mode Bulk: a time window moved with BullMQ's own ``moveJobsToWait``, like ``Queue.retryJobs``.

Against real failed BullMQ jobs: Bulk moves exactly the failed jobs of the window (none
read, none left behind, none twice) to wait, as ``retryJobs`` would (priority and lifo
ignored, attempts kept unless ``resetAttempts``), keeps its guarantees across crashes and
concurrent steppers, and refuses what it cannot do (filters, older failed jobs in front
of the window) with a message that says what to do instead.
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest
import redis
import redis.asyncio as aioredis

from requeue.api import DLQReplayStatus, ReplayPhase
from requeue.clock import Clock, utcnow
from requeue.queues import BullQueue, QueueKeys, ReplayKeys
from requeue.replay import DEFAULT_TUNING, EngineTuning, ReplayEngine
from requeue.replay.matcher import to_ms
from requeue.replay.state import from_ms
from support.bullmq_jobs import (
    JobSpec,
    make_failed_jobs,
    mixed_jobs,
    next_millisecond,
    older_than,
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
#: Bulk's window ends this clock-skew margin before the replay starts.
MARGIN = timedelta(milliseconds=DEFAULT_TUNING.clock_skew_ms)


async def failed_scores(r: aioredis.Redis) -> list[tuple[str, float]]:
    """(id, score) of every failed job, lowest score first (``r`` decodes responses)."""
    return cast(list[tuple[str, float]], await r.zrange(K.failed, 0, -1, withscores=True))


def ahead() -> datetime:
    """The engines' clock here: the margin ahead of real time, so jobs that failed before a
    replay starts are in its window at once, without sleeping past the margin (one test
    shows the margin itself, with a clock of its own)."""
    return utcnow() + MARGIN


class Ticking:
    """A clock that stands still until a step loop moves it on (``tick``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def bulk_spec(**fields: Any) -> Any:
    return replay_spec({"rate": {"jobsPerSecond": 1_000_000, "batchSize": 1000}, "mode": "Bulk"}, **fields)


def engine(
    r: aioredis.Redis,
    replay_id: str,
    *,
    tuning: EngineTuning = DEFAULT_TUNING,
    clock: Clock = ahead,
    **kwargs: Any,
) -> ReplayEngine:
    """An engine (owner ``ns/<replay_id>``) on this file's clock unless told otherwise."""
    return ReplayEngine(r, replay_id=replay_id, owner=f"ns/{replay_id}", tuning=tuning, clock=clock, **kwargs)


async def failed_jobs(redis_url: str, specs: list[JobSpec]) -> list[str]:
    """Real failed jobs, failed before the millisecond any replay started after this starts in."""
    ids = await make_failed_jobs(redis_url, Q, specs)
    await next_millisecond()
    return ids


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@pytest.mark.parametrize("reset", [True, False])
async def test_bulk_moves_the_window_to_wait_as_retry_jobs_does(
    redis_url: str, r: aioredis.Redis, reset: bool
) -> None:
    specs = mixed_jobs(120)
    ids = await failed_jobs(redis_url, specs)
    order = list(await r.zrange(K.failed, 0, -1))
    before = {i: await r.hgetall(K.job(i)) for i in ids}
    st = await engine(r, "b").run(bulk_spec(resetAttempts=reset))
    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.skipped) == (120, 120, 0)
    assert st.breakdown is None and st.sample_ids == order[:10]
    # moveJobsToWait: oldest failure first, each LPUSHed, so wait reads newest..oldest;
    # jobs with a priority or lifo land in wait like every other (as Queue.retryJobs does)
    assert await r.lrange(K.wait, 0, -1) == order[::-1]
    assert await r.zcard(K.prioritized) == 0 and await r.zcard(K.failed) == 0
    gone = {"finishedOn", "processedOn", "failedReason"} | ({"atm", "ats"} if reset else set())
    for job_id in ids:
        assert await r.hgetall(K.job(job_id)) == {f: v for f, v in before[job_id].items() if f not in gone}
    assert sorted(await r.lrange(ReplayKeys("b").replayed, 0, -1)) == sorted(ids)
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(120)
    assert sorted(worker.completed) == sorted(ids)


async def test_window_bounds_and_max_jobs(redis_url: str, r: aioredis.Redis) -> None:
    old, mid, new = await three_generations(redis_url, Q)
    await next_millisecond()
    scores = dict(await failed_scores(r))
    hi = max(scores[i] for i in mid) + 1
    assert min(scores[i] for i in new) >= hi
    # no lower bound: everything failed before failedBefore, oldest first, at most maxJobs
    st = await engine(r, "w").run(bulk_spec(selector={"failedBefore": iso(hi), "maxJobs": 50}))
    assert (st.phase, st.matched, st.replayed) == (ReplayPhase.SUCCEEDED, 50, 50)
    in_order = [m for m, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))]
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(in_order[:50])
    assert set(await r.zrange(K.failed, 0, -1)) == set(in_order[50:])
    # a lower bound at the head of what is left is fine
    lo = min(scores[i] for i in in_order[50:])
    st = await engine(r, "w2").run(bulk_spec(selector={"failedAfter": iso(lo), "failedBefore": iso(hi)}))
    assert (st.phase, st.matched, st.replayed) == (ReplayPhase.SUCCEEDED, 20, 20)
    assert set(await r.zrange(K.failed, 0, -1)) == set(new)
    assert set(old) | set(mid) == set(await r.lrange(K.wait, 0, -1))


@pytest.mark.parametrize("dry_run", [False, True])
async def test_older_failed_jobs_in_front_of_the_window_fail_it_and_move_nothing(
    redis_url: str, r: aioredis.Redis, dry_run: bool
) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec("a", {"i": i}) for i in range(5)])
    await next_millisecond()
    later = await failed_jobs(redis_url, [JobSpec("b", {"i": i}) for i in range(5)])
    lo = min(s for m, s in await failed_scores(r) if m in later)
    st = await engine(r, "o").run(bulk_spec(selector={"failedAfter": iso(lo)}, dryRun=dry_run))
    assert st.phase == ReplayPhase.FAILED
    assert "mode Bulk moves the oldest failed jobs first" in st.message
    assert "drop failedAfter" in st.message and "mode Exact" in st.message
    assert await r.zcard(K.failed) == 10 and await r.llen(K.wait) == 0


async def test_jobs_that_failed_within_the_margin_or_fail_again_stay_failed(
    redis_url: str, r: aioredis.Redis
) -> None:
    """The window ends a margin before the start; a replayed job failing again lands above it."""
    early = await make_failed_jobs(redis_url, Q, [JobSpec("x", {"i": i}) for i in range(40)])
    await next_millisecond()
    recent = await make_failed_jobs(redis_url, Q, [JobSpec("y", {"i": i}) for i in range(5)])
    # the replay starts exactly a margin after the first recent failure: that one and later
    # ones are within the margin; the clock stands still until the step loop moves it on
    first_recent = min(s for m, s in await failed_scores(r) if m in recent)
    clock = Ticking(from_ms(int(first_recent)) + MARGIN)
    assert to_ms(clock()) - int(first_recent) == DEFAULT_TUNING.clock_skew_ms
    spec = bulk_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 20})
    one = engine(r, "m", tuning=replace(ONE_BATCH_PER_STEP, bulk_chunk=10), clock=clock)
    st, refailed = await refail_first_replayed(one, spec, redis_url, Q, 20)
    assert st.matched == 40
    assert len(refailed) == 20
    st = await drive(one, spec, st, clock=clock)
    assert (st.phase, st.matched, st.replayed, st.skipped) == (ReplayPhase.SUCCEEDED, 40, 40, 0)
    assert set(await r.zrange(K.failed, 0, -1)) == refailed | set(recent)
    assert set(await r.lrange(K.wait, 0, -1)) == set(early) - refailed


async def test_resume_after_losing_the_status_between_every_step(redis_url: str, r: aioredis.Redis) -> None:
    ids = await failed_jobs(redis_url, mixed_jobs(90))
    st = await drive_losing_status(
        r,
        bulk_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 20}),
        replay_id="cs",
        tuning=replace(DEFAULT_TUNING, bulk_chunk=7),
        clock=ahead,
    )
    assert (st.phase, st.matched, st.replayed, st.skipped) == (ReplayPhase.SUCCEEDED, 90, 90, 0)
    waiting = await r.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == 90 and set(waiting) == set(ids)


async def test_two_processes_on_one_replay_move_each_job_once(redis_url: str, r: aioredis.Redis) -> None:
    ids = await failed_jobs(redis_url, mixed_jobs(200))
    spec = bulk_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 30})
    tuning = replace(DEFAULT_TUNING, bulk_chunk=13)
    one, two = await asyncio.gather(
        engine(r, "tw", tuning=tuning).run(spec), engine(r, "tw", tuning=tuning).run(spec)
    )
    for st in (one, two):
        assert st.phase == ReplayPhase.SUCCEEDED and (st.matched, st.replayed) == (200, 200)
    waiting = await r.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == 200 and set(waiting) == set(ids)
    replayed = await r.lrange(ReplayKeys("tw").replayed, 0, -1)
    assert sorted(replayed) == sorted(ids)


async def test_a_stale_second_selection_changes_nothing(redis_url: str, r: aioredis.Redis) -> None:
    """A process that read the stage before another one selected must not select again (nor
    take a count of 0 for "nothing to replay"): it re-reads instead."""
    await failed_jobs(redis_url, [JobSpec("x", {"i": i}) for i in range(12)])
    spec = bulk_spec()
    first = engine(r, "st")
    st = DLQReplayStatus()
    while (await r.hget(ReplayKeys("st").progress, "stage")) != "selecting":
        st = (await first.step(spec, st)).status
    stale = dict(cast(dict[str, str], await r.hgetall(ReplayKeys("st").progress)))
    st = (await first.step(spec, st)).status
    assert (st.matched, await r.hget(ReplayKeys("st").progress, "stage")) == (12, "replaying")
    other = engine(r, "st")
    with pytest.raises(redis.exceptions.WatchError):
        await other._bulk.select(spec, BullQueue(r, Q), DLQReplayStatus(), stale)
    assert await r.hget(ReplayKeys("st").progress, "stage") == "replaying"
    st = await drive(first, spec, st)
    assert (st.matched, st.replayed) == (12, 12)


@pytest.mark.parametrize("lost", ["before", "after"])
async def test_connection_lost_around_a_chunk_moves_nothing_twice(
    redis_url: str, r: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """The chunk's write reached Redis (or not), its reply never came back."""
    ids = await failed_jobs(redis_url, [JobSpec("x", {"i": i}) for i in range(90)])
    calls = lose_every_third_reply(monkeypatch, write_lands=lost == "after")
    flaky = engine(
        r, f"ls-{lost}", tuning=replace(DEFAULT_TUNING, bulk_chunk=10), backoff=0.001, redis_failure_bound=100
    )
    st = await drive(flaky, bulk_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 30}))
    assert (st.phase, st.matched, st.replayed, st.skipped) == (ReplayPhase.SUCCEEDED, 90, 90, 0)
    waiting = await r.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == 90 and set(waiting) == set(ids)
    assert await r.llen(ReplayKeys(f"ls-{lost}").replayed) == 90
    assert calls[0] >= 9


async def test_jobs_leaving_the_window_meanwhile_count_as_skipped(redis_url: str, r: aioredis.Redis) -> None:
    ids = await failed_jobs(redis_url, [JobSpec("x", {"i": i}) for i in range(30)])
    spec = bulk_spec(rate={"jobsPerSecond": 1_000_000, "batchSize": 10})
    sk = engine(r, "sk", tuning=ONE_BATCH_PER_STEP)
    st = DLQReplayStatus()
    while st.replayed < 10:
        st = (await sk.step(spec, st)).status
    newest = cast(list[str], await r.zrange(K.failed, -3, -1))
    assert await BullQueue(r, Q).replay(newest) == [1, 1, 1]  # someone retried three meanwhile
    st = await drive(sk, spec, st)
    assert (st.phase, st.matched, st.replayed, st.skipped) == (ReplayPhase.SUCCEEDED, 30, 27, 3)
    assert st.progress == "30/30"
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(ids)


async def test_paused_queue_keeps_the_replayed_jobs_until_resumed(redis_url: str, r: aioredis.Redis) -> None:
    ids = await failed_jobs(redis_url, [JobSpec("x", {"i": i}) for i in range(25)])
    q = BullQueue(r, Q)
    await q.pause()
    st = await engine(r, "pp").run(bulk_spec())
    assert st.replayed == 25 and await q.is_paused()
    async with run_worker(redis_url, Q) as worker:
        await worker_waiting(r, Q)
        assert worker.processed == []
        await q.resume()
        await worker.wait_for(25)
    assert sorted(worker.completed) == sorted(ids)


async def test_verify_watches_the_jobs_bulk_moved(redis_url: str, r: aioredis.Redis) -> None:
    ids = await failed_jobs(redis_url, [JobSpec("x", {"i": i}) for i in range(20)])
    async with run_worker(redis_url, Q, fail_when=lambda job: "again" if job.data["i"] < 5 else None):
        st = await engine(r, "v").run(bulk_spec(verify={"window": "3s", "minSuccessRate": 0.9}))
    assert st.phase == ReplayPhase.FAILED
    assert (st.replayed, st.completed, st.failed_again) == (20, 15, 5)
    assert len(ids) == 20


async def test_dry_run_says_what_bulk_would_do_unlike_exact(redis_url: str, r: aioredis.Redis) -> None:
    specs = mixed_jobs(60)
    await failed_jobs(redis_url, specs)
    st = await engine(r, "d").run(bulk_spec(dryRun=True))
    assert (st.phase, st.matched, st.replayed) == (ReplayPhase.SUCCEEDED, 60, 0)
    prio = sum(1 for s in specs if s.opts.get("priority"))
    lifo = sum(1 for s in specs if s.opts.get("lifo"))
    assert f"{prio} with a priority and {lifo} lifo would be queued as plain jobs" in st.message
    assert "60 jobs would move to default's wait" in st.message
    assert await r.zcard(K.failed) == 60 and await r.llen(K.wait) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"selector": {"jobNames": ["x"]}},
        {"selector": {"failedReasonPattern": "429"}},
        {"selector": {"dataMatch": {"a": 1}}},
        {"targetQueue": "other"},
    ],
)
def test_bulk_takes_only_a_time_window(extra: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="mode Bulk takes only a time window"):
        bulk_spec(**extra)


def test_cli_refuses_bulk_with_a_filter_with_exit_code_2(redis_url: str, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "replay.yaml", {"mode": "Bulk", "selector": {"jobNames": ["x"]}})
    res = cli("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}")
    assert res.code == 2
    assert "mode Bulk takes only a time window" in res.output


async def test_sigkill_mid_bulk_replay_then_rerun_moves_each_job_once(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    ids = await make_failed_jobs(redis_url, Q, mixed_jobs(200))
    await older_than(redis_client, Q, DEFAULT_TUNING.clock_skew_ms)  # the CLI runs on the real clock
    manifest = write_manifest(
        tmp_path / "replay.yaml", {"mode": "Bulk", "rate": {"jobsPerSecond": 40, "batchSize": 8}}
    )
    args = ("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}")
    interrupt_cli(
        *args,
        log=tmp_path / "first.log",
        redis_url=redis_url,
        ready=lambda s: s.llen(K.wait) >= 30,
        stop=signal.SIGKILL,
        exit_timeout=10,
    )
    before = await redis_client.llen(K.wait)
    assert 30 <= before < 200, "the kill must land mid-replay"
    write_manifest(
        tmp_path / "replay.yaml", {"mode": "Bulk", "rate": {"jobsPerSecond": 1_000_000, "batchSize": 1000}}
    )
    res = cli(*args, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", 200, 200)
    waiting = await redis_client.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == 200 and set(waiting) == set(ids)
    assert await redis_client.zcard(K.failed) == 0
