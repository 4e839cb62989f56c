"""Helpers for tests that run :class:`requeue.replay.ReplayEngine` directly: specs and a step loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pytest
import redis
from redis.asyncio import Redis

from requeue.api import DLQReplaySpec, DLQReplayStatus
from requeue.clock import Clock, utcnow
from requeue.queues import raw as raw_module
from requeue.replay import DEFAULT_TUNING, EngineTuning, ReplayEngine

__all__ = [
    "ONE_BATCH_PER_STEP",
    "drive",
    "drive_losing_status",
    "lose_every_third_reply",
    "refail_first_replayed",
    "replay_spec",
    "replay_under_way",
]

#: A step moves one batch, as at a modest rate: tests that act between batches (kill Redis,
#: let jobs fail again) see the replay mid-way. At a high rate a step moves batches for up
#: to :attr:`EngineTuning.step_budget_s`.
ONE_BATCH_PER_STEP = EngineTuning(step_budget_s=0.0)


class Ticking(Protocol):
    """A test clock the step loop moves on by each step's delay."""

    def tick(self, seconds: float) -> None: ...


def replay_spec(base: Mapping[str, Any] | None = None, /, **fields: Any) -> DLQReplaySpec:
    """A DLQReplay spec for queue ``default`` (Redis URL from Secret ``redis``/``url``), fast rate.

    :param base: a test file's own defaults (wire names), applied before ``fields``.
    :param fields: spec fields (wire names) that replace the defaults.
    """
    body: dict[str, Any] = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queue": "default",
        "rate": {"jobsPerSecond": 100_000, "batchSize": 50},
    }
    body.update(base or {})
    body.update(fields)
    return DLQReplaySpec.model_validate(body)


async def replay_under_way(
    client: Redis, replay_id: str, *, redis_failure_bound: int, replayed: int = 10
) -> tuple[ReplayEngine, DLQReplaySpec, DLQReplayStatus]:
    """A replay of queue ``default`` in batches of 10, stepped until ``replayed`` jobs moved: where
    the tests that take Redis away mid-replay start (owner ``ns/<replay_id>``, one batch a step,
    10 ms backoff). Returns the engine, its spec and the status to step on from."""
    spec = replay_spec(rate={"jobsPerSecond": 100_000, "batchSize": 10})
    engine = ReplayEngine(
        client,
        replay_id=replay_id,
        owner=f"ns/{replay_id}",
        redis_failure_bound=redis_failure_bound,
        backoff=0.01,
        tuning=ONE_BATCH_PER_STEP,
    )
    st = DLQReplayStatus()
    while st.replayed < replayed:
        st = (await engine.step(spec, st)).status
    return engine, spec, st


async def drive(
    engine: ReplayEngine,
    spec: DLQReplaySpec,
    status: DLQReplayStatus | None = None,
    *,
    max_steps: int = 5000,
    clock: Ticking | None = None,
) -> DLQReplayStatus:
    """Step until the replay finishes, without sleeping; a test ``clock`` is moved on by each step's
    delay. Fails after ``max_steps`` steps."""
    st = status or DLQReplayStatus()
    for _ in range(max_steps):
        res = await engine.step(spec, st)
        st = res.status
        if clock is not None:
            clock.tick(res.delay)
        if st.phase.finished:
            return st
    raise AssertionError(f"not finished after {max_steps} steps: {st.phase} {st.message}")


async def drive_losing_status(
    redis: Redis,
    spec: DLQReplaySpec,
    *,
    replay_id: str,
    max_steps: int = 5000,
    tuning: EngineTuning = DEFAULT_TUNING,
    clock: Clock = utcnow,
) -> DLQReplayStatus:
    """Step as processes that crash before writing every other status: that step's result is
    thrown away and a new engine (a new process, owner ``ns/<replay_id>``, with ``tuning`` and
    ``clock``) goes on from the status before it. Returns the final status, or the last kept
    one after ``max_steps`` steps."""
    st = DLQReplayStatus()
    engine = ReplayEngine(redis, replay_id=replay_id, owner=f"ns/{replay_id}", tuning=tuning, clock=clock)
    for i in range(max_steps):
        result = await engine.step(spec, st)
        if result.status.phase.finished:
            return result.status
        if i % 2 == 0:
            engine = ReplayEngine(
                redis, replay_id=replay_id, owner=f"ns/{replay_id}", tuning=tuning, clock=clock
            )
            continue
        st = result.status
    return st


def lose_every_third_reply(monkeypatch: pytest.MonkeyPatch, *, write_lands: bool) -> list[int]:
    """Every third guarded chunk (``RawTransaction.guarded_exec``) loses its connection: before
    its write reaches Redis, or (``write_lands``) after Redis ran it, with the reply lost.
    Returns a one-item list counting the calls."""
    original = raw_module.RawTransaction.guarded_exec
    calls = [0]

    async def flaky(self: Any, before: Any, commands: Any) -> Any:
        calls[0] += 1
        if calls[0] % 3 == 0:
            if write_lands:
                await original(self, before, commands)
            raise redis.exceptions.ConnectionError("connection reset by peer (test)")
        return await original(self, before, commands)

    monkeypatch.setattr(raw_module.RawTransaction, "guarded_exec", flaky)
    return calls


async def refail_first_replayed(
    engine: ReplayEngine, spec: DLQReplaySpec, redis_url: str, queue: str, n: int
) -> tuple[DLQReplayStatus, set[str]]:
    """Step until ``n`` jobs are replayed, then let a real worker fail each of them again
    (while the replay is still under way). Returns the status so far and the refailed ids."""
    from support.bullmq_jobs import run_worker

    st = DLQReplayStatus()
    while st.replayed < n:
        st = (await engine.step(spec, st)).status
    async with run_worker(redis_url, queue, fail_when=lambda job: "still broken") as worker:
        await worker.wait_for(n)
    return st, set(worker.failed)
