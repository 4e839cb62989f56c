"""The replay engine against a real redis-server and real failed BullMQ jobs (failed by real workers)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis.asyncio as aioredis

from requeue.api import (
    DLQReplaySpec,
    DLQReplayStatus,
    GatePolicy,
    GateStatus,
    GateType,
    Reason,
    ReplayCondition,
    ReplayPhase,
)
from requeue.api.base import find_condition
from requeue.errors import RedisUnreachable
from requeue.queues import BullQueue, QueueKeys, ReplayKeys, connect
from requeue.replay import ReplayEngine, StepResult
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker, worker_waiting
from support.replay import drive, drive_losing_status, replay_under_way
from support.replay import replay_spec as make_spec

Q = "default"


async def wait_ids(r: aioredis.Redis, queue: str = Q) -> list[str]:
    return cast(list[str], await r.lrange(QueueKeys("bull", queue).wait, 0, -1))


async def failed_ids(r: aioredis.Redis, queue: str = Q) -> set[str]:
    return set(cast(list[str], await r.zrange(QueueKeys("bull", queue).failed, 0, -1)))


def jobs(n: int, name: str = "whatsapp.send", reason: str = "429 rate limited", **opts: Any) -> list[JobSpec]:
    return [JobSpec(name, {"i": i}, reason, dict(opts)) for i in range(n)]


# -- basics ------------------------------------------------------------------


async def test_replays_matching_jobs_once_and_leaves_others(redis_url: str, r: aioredis.Redis) -> None:
    wa = await make_failed_jobs(redis_url, Q, jobs(40) + jobs(30, name="pdf.generate"))
    want, other = wa[:40], wa[40:]
    spec = make_spec(selector={"jobNames": ["whatsapp.*"]})
    st = await ReplayEngine(r, replay_id="u1", owner="ns/a").run(spec)
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped, st.corrupt) == (40, 40, 0, 0)
    assert st.progress == "40/40"
    assert sorted(await wait_ids(r)) == sorted(want)
    assert await failed_ids(r) == set(other)
    assert st.breakdown is not None and st.breakdown.by_name == {"whatsapp.send": 40}
    assert st.breakdown.by_reason == {"<n> rate limited": 40}
    cond = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    assert cond is not None and cond.status == "True"
    # the lease is released and the replay's keys expire
    assert not await r.exists(QueueKeys("bull", Q).lease)
    assert await r.ttl(ReplayKeys("u1").snapshot) > 0


async def test_dry_run_changes_nothing(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(
        redis_url, Q, [JobSpec("email.send", {"i": i}, f"timeout after {5000 + i * 7}ms") for i in range(25)]
    )
    before_failed = cast(
        list[tuple[str, float]], await r.zrange(QueueKeys("bull", Q).failed, 0, -1, withscores=True)
    )
    before_hash = await r.hgetall(QueueKeys("bull", Q).job(ids[0]))
    st = await ReplayEngine(r, replay_id="dry", owner="ns/dry").run(make_spec(dryRun=True))
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed) == (25, 0)
    assert st.breakdown is not None and st.breakdown.by_reason == {"timeout after <n>ms": 25}
    # failure order: jobs failed in the same millisecond tie and sort by id as strings ("10" < "9")
    assert st.sample_ids == [m for m, _ in before_failed[:10]]
    assert await r.zrange(QueueKeys("bull", Q).failed, 0, -1, withscores=True) == before_failed
    assert await r.hgetall(QueueKeys("bull", Q).job(ids[0])) == before_hash
    assert await wait_ids(r) == []
    assert not await r.exists(QueueKeys("bull", Q).lease)


async def test_priority_jobs_go_to_prioritized(redis_url: str, r: aioredis.Redis) -> None:
    plain = await make_failed_jobs(redis_url, Q, jobs(5))
    prio = await make_failed_jobs(redis_url, Q, jobs(5, priority=3))
    st = await ReplayEngine(r, replay_id="p", owner="ns/p").run(make_spec())
    assert st.replayed == 10
    assert sorted(await wait_ids(r)) == sorted(plain)
    assert sorted(await r.zrange(QueueKeys("bull", Q).prioritized, 0, -1)) == sorted(prio)


@pytest.mark.parametrize("reset", [True, False])
async def test_reset_attempts(redis_url: str, r: aioredis.Redis, reset: bool) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(3, attempts=2))
    assert await r.hget(QueueKeys("bull", Q).job(ids[0]), "atm") == "2"
    await ReplayEngine(r, replay_id="a", owner="ns/a").run(make_spec(resetAttempts=reset))
    for job_id in ids:
        assert await r.hget(QueueKeys("bull", Q).job(job_id), "atm") == (None if reset else "2")


async def test_corrupt_jobs_are_counted_not_fatal(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(10))
    k = QueueKeys("bull", Q)
    await r.delete(k.job(ids[1]))  # hash missing
    await r.hset(k.job(ids[2]), "data", "{not json")
    await r.hdel(k.job(ids[3]), "name")
    st = await ReplayEngine(r, replay_id="c", owner="ns/c").run(make_spec())
    assert st.phase == ReplayPhase.SUCCEEDED
    assert st.corrupt == 3
    assert sorted(st.corrupt_ids) == sorted(ids[1:4])
    assert st.replayed == 7
    assert sorted(await wait_ids(r)) == sorted(ids[:1] + ids[4:])


async def test_paused_queue_keeps_replayed_jobs_waiting_until_resumed(
    redis_url: str, r: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(8))
    q = BullQueue(r, Q)
    await q.pause()
    st = await ReplayEngine(r, replay_id="pz", owner="ns/pz").run(make_spec())
    assert st.replayed == 8
    paused = find_condition(st.conditions, ReplayCondition.QUEUE_PAUSED)
    assert paused is not None and paused.reason == "PausedByOthers"
    assert await q.is_paused()  # someone else's pause is left alone
    async with run_worker(redis_url, Q) as worker:
        # a worker connected to a paused queue takes nothing; the replayed jobs wait in the
        # legacy paused list, which every BullMQ major's resume hands back to wait
        await worker_waiting(r, Q)
        assert worker.processed == []
        assert sorted(await r.lrange(QueueKeys("bull", Q).paused, 0, -1)) == sorted(ids)
        assert await wait_ids(r) == []
        await q.resume()
        await worker.wait_for(8)
    assert sorted(worker.completed) == sorted(ids)


# -- exactly once under restarts ------------------------------------------------


async def test_resume_after_cancelled_task_replays_each_job_once(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(300))
    spec = make_spec(rate={"jobsPerSecond": 3000, "batchSize": 20})
    seen: list[DLQReplayStatus] = []
    started = asyncio.Event()

    async def record(result: StepResult) -> None:
        seen.append(result.status)
        if result.status.replayed >= 60:
            started.set()

    task = asyncio.create_task(ReplayEngine(r, replay_id="rs", owner="ns/rs").run(spec, on_step=record))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0 < seen[-1].replayed < 300
    # resume from an older status than Redis knows (the last status write was lost)
    stale = seen[len(seen) // 2]
    st = await ReplayEngine(r, replay_id="rs", owner="ns/rs").run(spec, stale)
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped) == (300, 300, 0)
    waiting = await wait_ids(r)
    assert len(waiting) == len(set(waiting)) == 300
    assert set(waiting) == set(ids)
    assert await failed_ids(r) == set()


async def test_crash_between_moves_and_status_write(redis_url: str, r: aioredis.Redis) -> None:
    """Every status returned by step() is thrown away once: the next step starts from the previous one."""
    ids = await make_failed_jobs(redis_url, Q, jobs(120))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 25})
    st = await drive_losing_status(r, spec, replay_id="cr")
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.matched, st.replayed, st.skipped) == (120, 120, 0)
    waiting = await wait_ids(r)
    assert sorted(waiting) == sorted(ids)


async def test_jobs_failing_again_are_not_replayed_again(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(30))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 10})
    engine = ReplayEngine(r, replay_id="fa", owner="ns/fa")
    st = DLQReplayStatus()
    while st.replayed < 10:
        st = (await engine.step(spec, st)).status
    # a worker fails the replayed ones again while the replay goes on
    async with run_worker(redis_url, Q, fail_when=lambda job: "still broken") as worker:
        await worker.wait_for(10)
    refailed = set(worker.failed)
    st = await drive(engine, spec, st)
    assert st.replayed == 30
    assert refailed <= await failed_ids(r)  # not picked up a second time
    assert set(await wait_ids(r)) == set(ids) - refailed


async def test_second_replay_on_the_queue_waits_with_holder_named(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, jobs(20))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 5})
    first = ReplayEngine(r, replay_id="one", owner="team/first")
    second = ReplayEngine(r, replay_id="two", owner="team/second")
    st1 = (await first.step(spec, DLQReplayStatus())).status
    res = await second.step(spec, DLQReplayStatus())
    ready = find_condition(res.status.conditions, ReplayCondition.READY)
    assert ready is not None and ready.reason == "QueueLocked" and "team/first" in ready.message
    assert res.status.phase in (ReplayPhase.PENDING, ReplayPhase.WAITING_FOR_GATES)
    assert [e.reason for e in res.events] == ["QueueLocked"]
    assert res.delay > 0
    st1 = await drive(first, spec, st1)
    assert st1.replayed == 20
    st2 = await drive(second, spec, res.status)  # runs once the lease is free
    assert st2.phase == ReplayPhase.SUCCEEDED and st2.matched == 0


async def test_target_queue_moves_each_job_exactly_once(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(30) + jobs(3, priority=2))
    spec = make_spec(targetQueue="retry", rate={"jobsPerSecond": 100_000, "batchSize": 7})
    st = await drive(ReplayEngine(r, replay_id="t", owner="ns/t"), spec)
    assert (st.matched, st.replayed) == (33, 33)
    assert await failed_ids(r) == set()
    for job_id in ids:
        assert not await r.exists(QueueKeys("bull", Q).job(job_id))
    copies = await wait_ids(r, "retry") + list(await r.zrange(QueueKeys("bull", "retry").prioritized, 0, -1))
    assert sorted(copies) == sorted(f"requeue-{Q}-{i}" for i in ids)
    async with run_worker(redis_url, "retry") as worker:
        await worker.wait_for(33)
    assert sorted(name for _, name in worker.processed) == ["whatsapp.send"] * 33


# -- verify ------------------------------------------------------------------


async def test_verify_succeeds_when_workers_complete(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, jobs(20))
    spec = make_spec(verify={"window": "30s", "minSuccessRate": 1.0})
    async with run_worker(redis_url, Q):
        st = await ReplayEngine(r, replay_id="v", owner="ns/v").run(spec)
    assert st.phase == ReplayPhase.SUCCEEDED
    assert (st.completed, st.failed_again) == (20, 0)
    cond = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    assert cond is not None and cond.reason == "Verified"


async def test_verify_fails_when_jobs_fail_again(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, jobs(20))
    spec = make_spec(verify={"window": "30s", "minSuccessRate": 0.9})
    async with run_worker(redis_url, Q, fail_when=lambda job: job.data["i"] % 2 == 0):
        st = await ReplayEngine(r, replay_id="vf", owner="ns/vf").run(spec)
    assert st.phase == ReplayPhase.FAILED
    cond = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    assert cond is not None and cond.status == "False" and cond.reason == "VerificationFailed"
    assert st.failed_again >= 2


# -- gates -------------------------------------------------------------------


class FlipGate:
    """A real GateRunnerLike whose one gate is as healthy as the test says."""

    def __init__(self, healthy: bool, policy: GatePolicy | None = None) -> None:
        self.healthy = healthy
        self.policy = policy or GatePolicy(interval="1s", timeout="1m")
        self.checks = 0

    async def check(self, previous: list[GateStatus], now: datetime) -> list[GateStatus]:
        self.checks += 1
        prev = previous[0] if previous else None
        ok = self.healthy
        return [
            GateStatus(
                name="db",
                type=GateType.POSTGRES,
                healthy=ok,
                message="ok" if ok else "connection refused",
                last_checked_at=now,
                consecutive_successes=(prev.consecutive_successes + 1 if prev and ok else int(ok)),
                consecutive_failures=(prev.consecutive_failures + 1 if prev and not ok else int(not ok)),
            )
        ]

    def all_passed(self, statuses: list[GateStatus]) -> bool:
        return bool(statuses) and statuses[0].consecutive_successes >= self.policy.success_threshold

    def any_red(self, statuses: list[GateStatus]) -> bool:
        return bool(statuses) and statuses[0].consecutive_failures >= self.policy.failure_threshold

    def due(self, statuses: list[GateStatus], now: datetime) -> bool:
        last = statuses[0].last_checked_at if statuses else None
        return last is None or now - last >= timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


GATES = [{"name": "db", "postgres": {"dsnSecretRef": {"name": "pg", "key": "dsn"}}}]


async def steps(
    engine: ReplayEngine, spec: DLQReplaySpec, st: DLQReplayStatus, n: int, clock: Clock
) -> tuple[DLQReplayStatus, list[str]]:
    events: list[str] = []
    for _ in range(n):
        res = await engine.step(spec, st)
        st = res.status
        events += [e.reason for e in res.events]
        clock.tick(max(res.delay, 0.01))
    return st, events


async def test_red_gate_holds_and_pauses_then_green_resumes_and_replays(
    redis_url: str, r: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(12))
    gate, clock = FlipGate(healthy=False), Clock()
    spec = make_spec(gates=GATES, pauseQueue=True)
    engine = ReplayEngine(r, replay_id="g", owner="ns/g", gates=gate, clock=clock)
    st, events = await steps(engine, spec, DLQReplayStatus(), 6, clock)
    assert st.phase == ReplayPhase.WAITING_FOR_GATES
    assert st.replayed == 0 and await wait_ids(r) == []
    assert st.queue_paused_by_replay and await BullQueue(r, Q).is_paused()
    assert "QueuePaused" in events and "GatesRed" in events
    gate.healthy = True
    clock.tick(2)
    st = await drive(engine, spec, st, clock=clock)
    assert st.phase == ReplayPhase.SUCCEEDED and st.replayed == 12
    assert not await BullQueue(r, Q).is_paused() and not st.queue_paused_by_replay
    assert sorted(await wait_ids(r)) == sorted(ids)


async def test_gates_time_out(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, jobs(3))
    gate, clock = FlipGate(False, GatePolicy(interval="1s", timeout="5s")), Clock()
    spec = make_spec(gates=GATES, pauseQueue=True)
    engine = ReplayEngine(r, replay_id="gt", owner="ns/gt", gates=gate, clock=clock)
    st, events = await steps(engine, spec, DLQReplayStatus(), 12, clock)
    assert st.phase == ReplayPhase.FAILED
    cond = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    assert cond is not None and cond.reason == "GatesTimedOut"
    assert "QueueResumed" in events and not await BullQueue(r, Q).is_paused()
    assert st.replayed == 0 and len(await failed_ids(r)) == 3


async def test_recheck_during_replay_holds_on_red(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, jobs(40))
    gate, clock = FlipGate(True), Clock()
    spec = make_spec(gates=GATES, rate={"jobsPerSecond": 100_000, "batchSize": 10})
    engine = ReplayEngine(r, replay_id="rc", owner="ns/rc", gates=gate, clock=clock)
    st = DLQReplayStatus()
    while st.replayed < 10:
        st = (await engine.step(spec, st)).status
    gate.healthy = False
    clock.tick(2)
    st, _ = await steps(engine, spec, st, 5, clock)
    assert st.phase == ReplayPhase.WAITING_FOR_GATES
    frozen = st.replayed
    assert 10 <= frozen < 40
    gate.healthy = True
    clock.tick(2)
    st = await drive(engine, spec, st, clock=clock)
    assert st.replayed == 40


async def test_failure_threshold_rides_out_a_blip_during_replay(redis_url: str, r: aioredis.Redis) -> None:
    """failureThreshold 3: one or two failed checks while replaying do not hold the replay
    (the start still needed every gate to pass); the third in a row does."""
    await make_failed_jobs(redis_url, Q, jobs(100))
    gate = FlipGate(
        True, GatePolicy.model_validate({"interval": "1s", "timeout": "1m", "failureThreshold": 3})
    )
    clock = Clock()  # only moves when the test says: one batch of 10 per step
    spec = make_spec(gates=GATES, rate={"jobsPerSecond": 100_000, "batchSize": 10})
    engine = ReplayEngine(r, replay_id="blip", owner="ns/blip", gates=gate, clock=clock)
    st = DLQReplayStatus()
    while st.replayed < 10:
        st = (await engine.step(spec, st)).status
    # a blip: two failed checks in a row, then healthy again; the replay never stops
    for healthy in (False, False, True):
        gate.healthy = healthy
        clock.tick(1.5)
        before = st.replayed
        st = (await engine.step(spec, st)).status
        assert st.phase == ReplayPhase.REPLAYING, st.message
        assert st.replayed > before
    assert st.gates[0].consecutive_successes == 1
    # a real outage: held on the third failure in a row, not before
    failures = []
    gate.healthy = False
    while st.phase == ReplayPhase.REPLAYING:
        clock.tick(1.5)
        st = (await engine.step(spec, st)).status
        failures.append(st.gates[0].consecutive_failures)
    assert failures == [1, 2, 3]
    assert st.phase == ReplayPhase.WAITING_FOR_GATES
    held = st.replayed
    assert held == 60  # 10 before, 3 batches during the blip, 2 more until the third failure
    st, _ = await steps(engine, spec, st, 5, clock)
    assert st.replayed == held
    gate.healthy = True
    clock.tick(1.5)
    st = await drive(engine, spec, st, clock=clock)
    assert st.phase == ReplayPhase.SUCCEEDED and st.replayed == 100


async def test_failing_gate_below_threshold_still_blocks_the_start(redis_url: str, r: aioredis.Redis) -> None:
    """Starting needs every gate passed (successThreshold); failureThreshold only governs holding."""
    await make_failed_jobs(redis_url, Q, jobs(5))
    gate = FlipGate(
        False, GatePolicy.model_validate({"interval": "1s", "timeout": "1m", "failureThreshold": 3})
    )
    clock = Clock()
    engine = ReplayEngine(r, replay_id="start", owner="ns/start", gates=gate, clock=clock)
    st, _ = await steps(engine, make_spec(gates=GATES), DLQReplayStatus(), 4, clock)
    assert st.phase == ReplayPhase.WAITING_FOR_GATES and st.replayed == 0


# -- suspend, cancel, Redis faults ------------------------------------------------


async def test_suspend_and_cancel_clean_up(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, jobs(30))
    gate, clock = FlipGate(False), Clock()
    spec = make_spec(gates=GATES, pauseQueue=True)
    engine = ReplayEngine(r, replay_id="s", owner="ns/s", gates=gate, clock=clock)
    st, _ = await steps(engine, spec, DLQReplayStatus(), 4, clock)
    assert await BullQueue(r, Q).is_paused()
    res = await engine.step(make_spec(gates=GATES, pauseQueue=True, suspend=True), st)
    assert res.status.phase == ReplayPhase.SUSPENDED
    assert not await BullQueue(r, Q).is_paused()
    assert not await r.exists(QueueKeys("bull", Q).lease)
    st, _ = await steps(engine, spec, res.status, 3, clock)  # unsuspended: red again, paused again
    assert await BullQueue(r, Q).is_paused()
    done = await engine.cancel(spec, st)
    assert done.status.phase == ReplayPhase.CANCELLED
    assert not await BullQueue(r, Q).is_paused()
    assert not await r.exists(QueueKeys("bull", Q).lease, *ReplayKeys("s").all())
    again = await engine.cancel(spec, done.status)  # idempotent
    assert again.status.phase == ReplayPhase.CANCELLED


async def test_a_step_moves_batches_while_the_token_bucket_has_them(
    redis_url: str, r: aioredis.Redis
) -> None:
    """At a high rate one step moves batch after batch (the status, lease and spec read once);
    where the bucket runs dry, a step moves one batch and says how long to wait."""

    async def first_replay_step(jobs_per_second: int) -> StepResult:
        await make_failed_jobs(redis_url, Q, jobs(60))
        spec = make_spec(rate={"jobsPerSecond": jobs_per_second, "batchSize": 10})
        engine = ReplayEngine(r, replay_id=f"r{jobs_per_second}", owner="ns/r")
        st = DLQReplayStatus()
        while st.matched == 0:
            st = (await engine.step(spec, st)).status
        return await engine.step(spec, st)

    fast = await first_replay_step(1_000_000)
    assert (fast.status.replayed, fast.status.phase) == (60, ReplayPhase.SUCCEEDED)  # 6 batches, one step
    slow = await first_replay_step(100)
    assert slow.status.replayed == 10 and slow.delay > 0  # one batch, then wait for tokens


async def test_redis_killed_mid_run_surfaces_redis_unavailable(redis_factory: Any) -> None:
    server = redis_factory()
    await make_failed_jobs(server.url, Q, jobs(50))
    client = await connect(server.url, timeout_s=1)
    try:
        engine, spec, st = await replay_under_way(client, "k", redis_failure_bound=3)
        server.kill()
        results = [await engine.step(spec, st) for _ in range(3)]
        last = results[-1]
        ready = find_condition(last.status.conditions, ReplayCondition.READY)
        assert ready is not None and ready.reason == "RedisUnreachable"
        assert "127.0.0.1" in ready.message
        assert [e.reason for e in last.events] == ["RedisUnreachable"]
        assert last.status.phase == ReplayPhase.REPLAYING and last.delay > 0
        with pytest.raises(RedisUnreachable):
            await engine.run(spec, last.status)
    finally:
        await client.aclose()


async def test_redis_back_after_a_reported_outage_is_ready_again_with_an_event(redis_factory: Any) -> None:
    # Regression: the step that reached Redis again set Ready=True inside _step, so the check for
    # "Ready was RedisUnreachable" never matched and the outage's Warning got no RedisReachable.
    server = redis_factory(args=["--appendonly", "yes", "--appendfsync", "always"])  # data survives
    ids = await make_failed_jobs(server.url, Q, jobs(30))
    client = await connect(server.url, timeout_s=1)
    try:
        engine, spec, st = await replay_under_way(client, "back", redis_failure_bound=2)
        server.kill()
        for _ in range(2):
            st = (await engine.step(spec, st)).status
        lost = find_condition(st.conditions, ReplayCondition.READY)
        assert lost is not None and lost.reason == "RedisUnreachable", lost
        server.start()
        back = await engine.step(spec, st)
        ready = find_condition(back.status.conditions, ReplayCondition.READY)
        assert ready is not None and ready.status == "True", ready
        assert [e.reason for e in back.events].count(Reason.REDIS_REACHABLE) == 1
        assert engine.redis_failures == 0
        st = back.status
        while not st.phase.finished:
            result = await engine.step(spec, st)
            assert "RedisReachable" not in [e.reason for e in result.events]  # once per outage
            st = result.status
        assert st.phase == ReplayPhase.SUCCEEDED and st.replayed == 30
        assert sorted(await client.lrange(f"bull:{Q}:wait", 0, -1)) == sorted(ids)
    finally:
        await client.aclose()
