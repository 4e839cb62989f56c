"""Gates in front of a real replay: ReplayEngine + GateRunner + real failed BullMQ jobs + real faults.

The engine's own tests use a stand-in gate; here every gate check is real (an
HTTP API answering 503, Postgres behind a proxy that refuses, a Redis that is
killed and restarted), so the whole path from fault to held replay is covered.
The clock is injected and moved by each step's delay, as the operator would sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayCondition, ReplayPhase
from requeue.api.base import find_condition
from requeue.gates import GateRunner
from requeue.gates.runner import GRACE
from requeue.queues import QueueKeys
from requeue.replay import ReplayEngine
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.gates import ControlledHttp
from support.redis_server import RedisServer
from support.replay import replay_spec
from support.tcp_proxy import TcpProxy

Q = "default"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)  # selection compares with real finishedOn times

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(seconds, 0.001))


def spec_with(gates: list[dict[str, Any]], **fields: Any) -> DLQReplaySpec:
    return replay_spec({"gates": gates, "gatePolicy": {"interval": "1s", "timeout": "10m"}}, **fields)


def engine_for(
    r: aioredis.Redis, spec: DLQReplaySpec, clock: Clock, secrets: StaticSecrets, redis_url: str, name: str
) -> ReplayEngine:
    runner = GateRunner(
        spec.gates, spec.gate_policy, secrets, default_redis_url=redis_url, namespace="ns", owner=name
    )
    return ReplayEngine(r, replay_id=f"uid-{name}", owner=f"ns/{name}", gates=runner, clock=clock)


async def steps(
    engine: ReplayEngine,
    spec: DLQReplaySpec,
    st: DLQReplayStatus,
    clock: Clock,
    *,
    n: int | None = None,
    until: Callable[[DLQReplayStatus], bool] | None = None,
    limit: int = 2000,
) -> DLQReplayStatus:
    """Step ``n`` times, or until ``until(status)``; the clock advances by each step's delay."""
    for i in range(limit):
        if n is not None and i >= n:
            return st
        if until is not None and until(st):
            return st
        res = await engine.step(spec, st)
        st = res.status
        clock.tick(res.delay)
        if st.phase.finished:
            return st
    raise AssertionError(f"no end after {limit} steps: {st.phase} {st.message}")


async def wait_len(r: aioredis.Redis) -> int:
    return int(await r.llen(QueueKeys("bull", Q).wait))


def jobs(n: int) -> list[JobSpec]:
    return [JobSpec("whatsapp.send", {"i": i}, "429 Too Many Requests") for i in range(n)]


async def test_red_http_gate_moves_nothing_and_green_starts(
    redis_url: str, r: aioredis.Redis, api: ControlledHttp
) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(20))
    api.health_status = 503
    spec = spec_with([{"name": "cgb-api", "http": {"url": api.url("/health")}}])
    clock = Clock()
    engine = engine_for(r, spec, clock, StaticSecrets({}), redis_url, "http-red")

    st = await steps(engine, spec, DLQReplayStatus(), clock, n=8)
    assert st.phase == ReplayPhase.WAITING_FOR_GATES
    assert st.replayed == 0 and await wait_len(r) == 0
    (gate,) = st.gates
    assert (gate.name, gate.healthy) == ("cgb-api", False)
    assert gate.message == "HTTP 503 Service Unavailable (expected 200)"
    assert gate.consecutive_failures >= 3  # checked again every interval
    passed = find_condition(st.conditions, ReplayCondition.GATES_PASSED)
    assert passed is not None and passed.reason == "GatesRed"
    assert "HTTP 503" in passed.message

    api.health_status = 200
    st = await steps(engine, spec, st, clock)
    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert st.replayed == 20 and await wait_len(r) == len(ids)
    assert st.gates[0].healthy and st.gates[0].message == "HTTP 200 OK"


async def test_gate_turning_red_mid_replay_holds_within_one_interval(
    redis_url: str, r: aioredis.Redis, pg_dsn: str
) -> None:
    await make_failed_jobs(redis_url, Q, jobs(200))
    rate, interval = 20, 1.0  # 20 jobs/s in batches of 5: at most ~25 jobs move in one interval
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        secrets = StaticSecrets({("db", "dsn"): pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")})
        spec = spec_with(
            [
                {
                    "name": "database",
                    "postgres": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "timeout": "2s"},
                }
            ],
            rate={"jobsPerSecond": rate, "batchSize": 5},
        )
        clock = Clock()
        engine = engine_for(r, spec, clock, secrets, redis_url, "pg-mid")
        st = await steps(engine, spec, DLQReplayStatus(), clock, until=lambda s: s.replayed >= 40)
        assert st.phase == ReplayPhase.REPLAYING

        await proxy.refuse()  # the database goes away mid-replay
        at_fault, fault_time = st.replayed, clock.now
        st = await steps(engine, spec, st, clock, until=lambda s: s.phase == ReplayPhase.WAITING_FOR_GATES)
        assert clock.now - fault_time <= timedelta(seconds=interval + 0.5)
        assert st.replayed - at_fault <= rate * interval + 5
        assert st.gates[0].message.endswith("connection refused")
        held = st.replayed
        st = await steps(engine, spec, st, clock, n=10)  # ~10 intervals red: nothing moves
        assert st.phase == ReplayPhase.WAITING_FOR_GATES
        assert st.replayed == held and await wait_len(r) == held
        progressing = find_condition(st.conditions, ReplayCondition.PROGRESSING)
        assert progressing is not None and progressing.reason == "HeldByGates"

        await proxy.passthrough()  # back: the replay resumes and finishes, every job once
        st = await steps(engine, spec, st, clock)
        assert st.phase == ReplayPhase.SUCCEEDED, st.message
        assert st.replayed == 200 and await wait_len(r) == 200


async def test_restarted_redis_must_pass_success_threshold_before_the_replay_starts(
    redis_url: str, r: aioredis.Redis, redis_factory: Callable[[], RedisServer]
) -> None:
    await make_failed_jobs(redis_url, Q, jobs(10))
    dependency = redis_factory()  # e.g. the cache the workers need, not the queue's own Redis
    dependency.kill()
    secrets = StaticSecrets({("cache", "url"): dependency.url})
    spec = spec_with(
        [{"name": "cache", "redis": {"urlSecretRef": {"name": "cache", "key": "url"}, "maxLatency": "1s"}}],
        gatePolicy={"interval": "1s", "timeout": "10m", "successThreshold": 3},
    )
    clock = Clock()
    engine = engine_for(r, spec, clock, secrets, redis_url, "cache")
    st = await steps(engine, spec, DLQReplayStatus(), clock, n=5)
    assert st.phase == ReplayPhase.WAITING_FOR_GATES and st.gates[0].message.endswith("connection refused")

    dependency.restart()
    successes = []
    st = await steps(engine, spec, st, clock, until=lambda s: s.gates[0].consecutive_failures == 0)
    while st.phase == ReplayPhase.WAITING_FOR_GATES:
        successes.append(st.gates[0].consecutive_successes)
        assert st.replayed == 0
        st = await steps(engine, spec, st, clock, n=1)
    assert successes[0] == 1 and max(successes) == 2  # started on the third pass in a row
    st = await steps(engine, spec, st, clock)
    assert st.phase == ReplayPhase.SUCCEEDED and st.replayed == 10


async def test_a_hanging_gate_never_hangs_the_replay(
    redis_url: str, r: aioredis.Redis, api: ControlledHttp
) -> None:
    await make_failed_jobs(redis_url, Q, jobs(3))
    spec = spec_with([{"name": "slow-api", "http": {"url": api.url("/slow?seconds=60"), "timeout": "1s"}}])
    clock = Clock()
    engine = engine_for(r, spec, clock, StaticSecrets({}), redis_url, "hang")
    st = DLQReplayStatus()
    for _ in range(3):
        started = time.monotonic()
        res = await engine.step(spec, st)
        assert time.monotonic() - started < 1 + GRACE + 1.0
        st = res.status
        clock.tick(res.delay)
    assert st.phase == ReplayPhase.WAITING_FOR_GATES
    assert st.gates[0].message.endswith("within 1s (timeout)")
    assert st.replayed == 0


async def test_gates_time_out_with_the_gate_message(
    redis_url: str, r: aioredis.Redis, api: ControlledHttp
) -> None:
    await make_failed_jobs(redis_url, Q, jobs(3))
    api.health_status = 429
    spec = spec_with(
        [{"name": "cgb-api", "http": {"url": api.url("/health")}}],
        gatePolicy={"interval": "1s", "timeout": "5s"},
    )
    clock = Clock()
    engine = engine_for(r, spec, clock, StaticSecrets({}), redis_url, "timeout")
    st = await steps(engine, spec, DLQReplayStatus(), clock, limit=50)
    assert st.phase == ReplayPhase.FAILED
    cond = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    assert cond is not None and cond.reason == "GatesTimedOut"
    assert "HTTP 429 Too Many Requests (expected 200)" in cond.message
    assert st.replayed == 0 and await wait_len(r) == 0
