"""GateRunner semantics without services: thresholds, hysteresis, due/interval, the hard time bound."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from requeue.api import GatePolicy, GateSpec, GateStatus, GateType
from requeue.gates import GateResult, GateRunner
from requeue.gates import runner as runner_module
from requeue.gates.runner import GRACE, fold
from requeue.secrets import StaticSecrets

NOW = datetime(2025, 7, 16, 12, 0, tzinfo=UTC)


def http(name: str = "api") -> GateSpec:
    return GateSpec.model_validate({"name": name, "http": {"url": "http://127.0.0.1:1/health"}})


def redis(name: str = "redis") -> GateSpec:
    return GateSpec.model_validate({"name": name, "redis": {}})


def runner(*gates: GateSpec, **policy: object) -> GateRunner:
    return GateRunner(list(gates), GatePolicy.model_validate(policy), StaticSecrets({}))


def status(
    name: str = "api",
    *,
    ok: int = 0,
    bad: int = 0,
    healthy: bool = False,
    at: datetime | None = NOW,
    type: GateType = GateType.HTTP,
) -> GateStatus:
    return GateStatus(
        name=name,
        type=type,
        healthy=healthy,
        consecutive_successes=ok,
        consecutive_failures=bad,
        last_checked_at=at,
    )


def run(results: list[bool], **policy: object) -> list[tuple[bool, int, int]]:
    pol = GatePolicy.model_validate(policy)
    prev: GateStatus | None = None
    out = []
    for passed in results:
        prev = fold(http(), prev, GateResult(passed, "x", 0.01), pol, NOW)
        out.append((prev.healthy, prev.consecutive_successes, prev.consecutive_failures))
    return out


def test_fold_default_thresholds_follow_the_last_result() -> None:
    assert run([True, False, True]) == [(True, 1, 0), (False, 0, 1), (True, 1, 0)]


def test_fold_success_threshold() -> None:
    assert run([True, True, True], success_threshold=3) == [(False, 1, 0), (False, 2, 0), (True, 3, 0)]
    # a failure resets the streak
    assert run([True, False, True], success_threshold=2) == [(False, 1, 0), (False, 0, 1), (False, 1, 0)]


def test_fold_failure_threshold_keeps_a_healthy_gate_through_blips() -> None:
    assert run([True, False, False, False], failure_threshold=3) == [
        (True, 1, 0),
        (True, 0, 1),
        (True, 0, 2),
        (False, 0, 3),
    ]
    # a gate that never was healthy does not become healthy by failing less than the threshold
    assert run([False], failure_threshold=3) == [(False, 0, 1)]


def test_fold_records_message_latency_and_time() -> None:
    s = fold(
        http(),
        None,
        GateResult(False, "HTTP 500 Internal Server Error (expected 200)", 0.0123),
        GatePolicy(),
        NOW,
    )
    assert s.message == "HTTP 500 Internal Server Error (expected 200)"
    assert s.latency_ms == 12.3
    assert s.last_checked_at == NOW
    assert s.type is GateType.HTTP


def test_fold_ignores_a_previous_status_of_another_type() -> None:
    prev = status(ok=5, healthy=True, type=GateType.REDIS)
    s = fold(http(), prev, GateResult(True, "ok", 0.0), GatePolicy(success_threshold=2), NOW)
    assert (s.healthy, s.consecutive_successes) == (False, 1)


def test_all_passed_and_any_red() -> None:
    r = runner(http("a"), http("b"), success_threshold=2, failure_threshold=2)
    assert not r.all_passed([])
    assert not r.all_passed([status("a", ok=2)])  # b never checked
    assert r.all_passed([status("a", ok=2), status("b", ok=3)])
    assert not r.all_passed([status("a", ok=2), status("b", ok=1)])
    assert not r.any_red([status("a", bad=1), status("b", ok=1)])
    assert r.any_red([status("a", bad=2), status("b", ok=1)])
    # statuses of gates no longer in the spec (renamed, removed, retyped) do not count
    assert not r.any_red([status("old", bad=9)])
    assert not r.all_passed([status("a", ok=2), status("b", ok=2, type=GateType.REDIS)])


def test_no_gates() -> None:
    r = runner()
    assert r.all_passed([])
    assert not r.any_red([])
    assert not r.due([], NOW)
    assert r.next_check_in([], NOW) is None


def test_due_after_the_interval_since_the_oldest_check() -> None:
    r = runner(http("a"), redis("b"), interval="30s")
    assert r.due([], NOW)  # never checked
    checked = [status("a", at=NOW), status("b", at=NOW - timedelta(seconds=10), type=GateType.REDIS)]
    assert not r.due(checked, NOW)
    assert r.next_check_in(checked, NOW) == 20
    assert r.due(checked, NOW + timedelta(seconds=20))
    assert r.due([status("a", at=NOW)], NOW)  # b was never checked
    assert r.due([status("a", at=None), checked[1]], NOW)


def test_due_accepts_naive_times_as_utc() -> None:
    r = runner(http("a"), interval="10s")
    assert not r.due([status("a", at=NOW.replace(tzinfo=None))], NOW + timedelta(seconds=5))
    assert r.due([status("a", at=NOW)], (NOW + timedelta(seconds=10)).replace(tzinfo=None))


def test_summary_names_failing_gates() -> None:
    r = runner(http("a"), http("b"), http("c"))
    text = r.summary(
        [
            status("a", ok=1),
            GateStatus(
                name="b",
                type=GateType.HTTP,
                healthy=False,
                message="HTTP 429 Too Many Requests (expected 200)",
                consecutive_failures=1,
                last_checked_at=NOW,
            ),
        ]
    )
    assert text == "a: ok; b: HTTP 429 Too Many Requests (expected 200); c: not checked yet"
    assert [s.name for s in r.failing([status("a", bad=1), status("b", ok=1)])] == ["a"]


async def test_a_check_that_ignores_cancellation_is_abandoned() -> None:
    release = asyncio.Event()

    async def stubborn() -> GateResult:
        while True:
            try:
                await release.wait()
                return GateResult.ok("late")
            except asyncio.CancelledError:
                continue  # a driver that insists on cleaning up first

    started = time.monotonic()
    result = await runner_module._bounded(http(), stubborn, 0.2)
    assert time.monotonic() - started < 0.2 + GRACE + 0.5
    assert result == GateResult(False, "no result within 0.2s (timeout)", result.latency)
    assert len(runner_module._abandoned) == 1
    release.set()
    for _ in range(100):
        if not runner_module._abandoned:
            break
        await asyncio.sleep(0.01)
    assert not runner_module._abandoned


async def test_a_check_that_raises_becomes_a_result() -> None:
    async def broken() -> GateResult:
        raise KeyError("surprise")

    result = await runner_module._bounded(http(), broken, 1.0)
    assert not result.healthy
    assert result.message == "check failed unexpectedly: KeyError: 'surprise'"


async def test_cancelling_check_cancels_the_gates() -> None:
    started = asyncio.Event()

    async def slow() -> GateResult:
        started.set()
        await asyncio.sleep(30)
        return GateResult.ok("never")

    task = asyncio.create_task(runner_module._bounded(http(), slow, 60))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
