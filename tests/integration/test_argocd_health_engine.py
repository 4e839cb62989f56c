"""The Argo CD health checks in examples/argocd/ against statuses the real engine writes.

tests/unit/test_argocd_health.py runs the Lua scripts against statuses built
by hand from the API models. Here every status comes from the real code path
instead: ``ReplayEngine.step`` / ``cancel`` over a real Redis holding real
failed BullMQ jobs (a real HTTP gate whose answer the test picks, a real
worker for verification), and ``evaluate()`` for QueuePolicy. Each status is
wrapped into the object Argo CD reads from the API server (the operator's
merge patch drops nulls, hence ``exclude_none``) and judged by the same Lua
runner as the unit test, under Lua 5.1 and 5.4.

The engine's clock is injected and moved by each step's delay, as the
operator would sleep, so verify windows and gate timeouts pass without waiting.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import redis.asyncio as aioredis

from requeue.api import (
    API_VERSION,
    DLQReplay,
    DLQReplaySpec,
    DLQReplayStatus,
    PolicyCondition,
    QueuePolicy,
    QueuePolicySpec,
    QueuePolicyStatus,
    ReplayCondition,
    ReplayPhase,
)
from requeue.api.base import ConditionStatus, find_condition
from requeue.gates import GateRunner
from requeue.policy.evaluate import BullQueueOps, PolicyRef, evaluate
from requeue.replay import ReplayEngine
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, create_queues, make_failed_jobs, run_worker
from support.gates import ControlledHttp
from support.redis_server import free_port


def _unit_module() -> ModuleType:
    """tests/unit/test_argocd_health.py, for its Lua runner (tests/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "unit" / "test_argocd_health.py"
    spec = importlib.util.spec_from_file_location("_argocd_health_unit", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_unit = _unit_module()
health: Callable[[Path, dict[str, Any], str], dict[str, str]] = _unit.health
crd_schema: Callable[[str], dict[str, Any]] = _unit.crd_schema
RUNTIMES: dict[str, Any] = _unit.RUNTIMES
DLQREPLAY_LUA: Path = _unit.DLQREPLAY_LUA
QUEUEPOLICY_LUA: Path = _unit.QUEUEPOLICY_LUA

Q = "invoice"
NAMESPACE = "visapi"
GENERATION = 2
#: Secret values planted in gate specs and Secrets; no health message may show any of them.
HEADER_TOKEN = "hdr-t0ken-5ecret"
URL_TOKEN = "qry-t0ken-5ecret"
URL_PASSWORD = "url-passw0rd-5ecret"
REDIS_PASSWORD = "redis-passw0rd-5ecret"
SECRETS = (HEADER_TOKEN, URL_TOKEN, URL_PASSWORD, REDIS_PASSWORD)

# Phase -> Argo CD health, per examples/argocd/README.md.
EXPECTED = {
    ReplayPhase.PENDING: "Progressing",
    ReplayPhase.WAITING_FOR_GATES: "Progressing",
    ReplayPhase.REPLAYING: "Progressing",
    ReplayPhase.VERIFYING: "Progressing",
    ReplayPhase.SUCCEEDED: "Healthy",
    ReplayPhase.FAILED: "Degraded",
    ReplayPhase.SUSPENDED: "Suspended",
    ReplayPhase.CANCELLED: "Degraded",
}


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)  # selection compares with the jobs' real finishedOn

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(seconds, 0.001))


# -- driving the engine ------------------------------------------------------------------------------


class Replay:
    """One DLQReplay: its spec, the real engine with a real gate runner, and the status so far."""

    def __init__(self, r: aioredis.Redis, redis_url: str, api: ControlledHttp, **fields: Any) -> None:
        body: dict[str, Any] = {
            "redis": {"urlSecretRef": {"name": "visapi-redis", "key": "url"}},
            "queue": Q,
            "rate": {"jobsPerSecond": 100_000, "batchSize": 50},
            "gates": [
                {
                    "name": "worker",
                    "http": {
                        "url": api.url(f"/health?token={URL_TOKEN}"),
                        "headers": [
                            {
                                "name": "Authorization",
                                "prefix": "Bearer ",
                                "valueFrom": {"secretKeyRef": {"name": "worker-api", "key": "token"}},
                            }
                        ],
                        "timeout": "2s",
                    },
                }
            ],
            "gatePolicy": {"interval": "1s", "timeout": "10m"},
        }
        body.update(fields)
        self.spec = DLQReplaySpec.model_validate(body)
        self.clock = Clock()
        secrets = StaticSecrets({("worker-api", "token"): HEADER_TOKEN, ("cache", "url"): cache_url()})
        runner = GateRunner(
            self.spec.gates,
            self.spec.gate_policy,
            secrets,
            default_redis_url=redis_url,
            namespace=NAMESPACE,
            owner=f"{self.spec.queue}-after-sync",
        )
        self.name = f"{self.spec.queue}-after-sync-x7k2p"
        self.engine = ReplayEngine(
            r, replay_id=f"uid-{self.name}", owner=f"{NAMESPACE}/{self.name}", gates=runner, clock=self.clock
        )
        self.status = DLQReplayStatus()

    async def step(self, *, until: Callable[[DLQReplayStatus], bool] | None = None, limit: int = 200) -> None:
        """One step, or steps until ``until(status)``; the clock advances by each step's delay."""
        for _ in range(limit):
            result = await self.engine.step(self.spec, self.status, generation=GENERATION)
            self.status = result.status
            self.clock.tick(result.delay)
            if until is None or until(self.status):
                return
            if self.status.phase.finished:
                break
        raise AssertionError(f"not reached: {self.status.phase} {self.status.message!r}")

    def suspend(self, value: bool = True) -> None:
        self.spec = self.spec.model_copy(update={"suspend": value})

    def obj(self) -> dict[str, Any]:
        """The DLQReplay as Argo CD reads it from the API server."""
        return replay_object(self.name, self.spec, self.status)


def cache_url() -> str:
    """A Redis behind a password on a port nothing listens on: its gate fails naming the URL."""
    return f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"


def replay_object(name: str, spec: DLQReplaySpec, status: DLQReplayStatus) -> dict[str, Any]:
    obj = {
        "apiVersion": API_VERSION,
        "kind": "DLQReplay",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": GENERATION},
        "spec": spec.to_wire(),
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    DLQReplay.model_validate(obj)
    jsonschema.Draft4Validator(crd_schema("dlqreplays")).validate(obj)
    return obj


def failing(n: int) -> list[JobSpec]:
    return [
        JobSpec("invoice.render", {"i": i}, "TypeError: Cannot read properties of undefined")
        for i in range(n)
    ]


def at(phase: ReplayPhase) -> Callable[[DLQReplayStatus], bool]:
    return lambda st: st.phase == phase


# -- one scenario per phase: the objects Argo CD would see in it -----------------------------------

Scenario = Callable[[aioredis.Redis, str, ControlledHttp], Awaitable[list[dict[str, Any]]]]


async def pending(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(5))
    replay = Replay(r, redis_url, api)
    before = replay.obj()  # the status before the first step
    await replay.step()  # the first step claims the queue and records the stage: still Pending
    assert replay.status.phase == ReplayPhase.PENDING
    return [before, replay.obj()]


async def waiting_for_gates(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(5))
    api.health_status = 503
    replay = Replay(r, redis_url, api)
    await replay.step(until=lambda st: st.phase == ReplayPhase.WAITING_FOR_GATES and bool(st.gates))
    first = replay.obj()
    await replay.step(until=lambda st: st.gates[0].consecutive_failures >= 3)
    assert replay.status.phase == ReplayPhase.WAITING_FOR_GATES
    assert not replay.status.gates[0].healthy and replay.status.replayed == 0
    # held mid-replay: a gate turning red while replaying sends the replay back to waiting
    held = Replay(r, redis_url, api, queue="held", rate={"jobsPerSecond": 2, "batchSize": 1})
    await make_failed_jobs(redis_url, "held", failing(6))
    api.health_status = 200
    await held.step(until=lambda st: st.phase == ReplayPhase.REPLAYING and st.replayed >= 2)
    api.health_status = 503
    await held.step(until=at(ReplayPhase.WAITING_FOR_GATES))
    assert 0 < held.status.replayed < 6
    return [first, replay.obj(), held.obj()]


async def replaying(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(20))
    replay = Replay(r, redis_url, api, rate={"jobsPerSecond": 2, "batchSize": 2})
    await replay.step(until=at(ReplayPhase.REPLAYING))
    selecting = replay.obj()  # selection runs in the Replaying phase
    await replay.step(until=lambda st: st.replayed >= 4)
    assert replay.status.phase == ReplayPhase.REPLAYING and replay.status.replayed < 20
    return [selecting, replay.obj()]


async def verifying(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(10))
    replay = Replay(r, redis_url, api, verify={"window": "10m"})
    await replay.step(until=at(ReplayPhase.VERIFYING))
    entered = replay.obj()
    await replay.step()  # one verification pass: nothing has run yet, all pending
    assert replay.status.phase == ReplayPhase.VERIFYING and replay.status.completed == 0
    return [entered, replay.obj()]


async def succeeded(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(10))
    objects = []
    replay = Replay(r, redis_url, api, verify={"window": "10m"})
    await replay.step(until=at(ReplayPhase.VERIFYING))
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(10)
    await replay.step(until=lambda st: st.phase.finished)
    assert replay.status.completed == 10
    objects.append(replay.obj())
    # without verify: Succeeded right after the last batch
    await make_failed_jobs(redis_url, "plain", failing(3))
    plain = Replay(r, redis_url, api, queue="plain")
    await plain.step(until=lambda st: st.phase.finished)
    objects.append(plain.obj())
    return objects


async def failed(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(10))
    replay = Replay(r, redis_url, api, verify={"window": "10m", "minSuccessRate": 0.9})
    await replay.step(until=at(ReplayPhase.VERIFYING))
    async with run_worker(redis_url, Q, fail_when=lambda job: "still broken") as worker:
        await worker.wait_for(10)
    await replay.step(until=lambda st: st.phase.finished)
    verification = find_condition(replay.status.conditions, ReplayCondition.SUCCEEDED)
    assert verification is not None and verification.reason == "VerificationFailed"
    objects = [replay.obj()]

    # GatesTimedOut, with gates whose failures name URLs carrying a password and a token
    await make_failed_jobs(redis_url, "gated", failing(3))
    api.health_status = 503
    gates = [
        {"name": "worker", "http": {"url": api.url(f"/health?token={URL_TOKEN}")}},
        {
            "name": "legacy-api",
            "http": {"url": f"http://ops:{URL_PASSWORD}@127.0.0.1:{free_port()}/healthz?token={URL_TOKEN}"},
        },
        {"name": "cache", "redis": {"urlSecretRef": {"name": "cache", "key": "url"}}},
    ]
    gated = Replay(
        r, redis_url, api, queue="gated", gates=gates, gatePolicy={"interval": "1s", "timeout": "3s"}
    )
    await gated.step(until=lambda st: st.phase.finished)
    timed_out = find_condition(gated.status.conditions, ReplayCondition.SUCCEEDED)
    assert timed_out is not None and timed_out.reason == "GatesTimedOut"
    assert gated.status.replayed == 0
    objects.append(gated.obj())
    return objects


async def suspended(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(10))
    replay = Replay(r, redis_url, api, rate={"jobsPerSecond": 2, "batchSize": 2})
    await replay.step(until=lambda st: st.phase == ReplayPhase.REPLAYING and st.replayed >= 2)
    replay.suspend()
    await replay.step()
    assert replay.status.phase == ReplayPhase.SUSPENDED and 0 < replay.status.replayed < 10
    objects = [replay.obj()]
    # created suspended: never started
    await make_failed_jobs(redis_url, "later", failing(2))
    later = Replay(r, redis_url, api, queue="later", suspend=True)
    await later.step()
    assert later.status.phase == ReplayPhase.SUSPENDED
    objects.append(later.obj())
    return objects


async def cancelled(r: aioredis.Redis, redis_url: str, api: ControlledHttp) -> list[dict[str, Any]]:
    await make_failed_jobs(redis_url, Q, failing(10))
    replay = Replay(r, redis_url, api, rate={"jobsPerSecond": 2, "batchSize": 2})
    await replay.step(until=lambda st: st.phase == ReplayPhase.REPLAYING and st.replayed >= 2)
    replay.status = (await replay.engine.cancel(replay.spec, replay.status)).status
    assert replay.status.phase == ReplayPhase.CANCELLED and replay.status.replayed < 10
    objects = [replay.obj()]
    # deleted while waiting for a red gate (the queue this replay paused is resumed)
    api.health_status = 503
    await make_failed_jobs(redis_url, "waiting", failing(2))
    waiting = Replay(r, redis_url, api, queue="waiting")
    await waiting.step(until=at(ReplayPhase.WAITING_FOR_GATES))
    waiting.status = (await waiting.engine.cancel(waiting.spec, waiting.status)).status
    objects.append(waiting.obj())
    return objects


SCENARIOS: dict[ReplayPhase, Scenario] = {
    ReplayPhase.PENDING: pending,
    ReplayPhase.WAITING_FOR_GATES: waiting_for_gates,
    ReplayPhase.REPLAYING: replaying,
    ReplayPhase.VERIFYING: verifying,
    ReplayPhase.SUCCEEDED: succeeded,
    ReplayPhase.FAILED: failed,
    ReplayPhase.SUSPENDED: suspended,
    ReplayPhase.CANCELLED: cancelled,
}


def assert_readable(message: str, obj: dict[str, Any]) -> None:
    """Non-empty, no Lua artefacts, and no secret (also none anywhere in the status)."""
    assert message.strip(), "empty health message"
    assert not re.search(r"\bnil\b|table: 0x|userdata", message), message
    shown = message + json.dumps(obj["status"])
    for secret in SECRETS:
        assert secret not in shown, f"{secret!r} leaked: {message}"
    assert not re.search(r"://[^/\s:@]+:(?!\*\*\*@)[^/\s@]+@", shown), message  # user:password@


def test_every_phase_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(ReplayPhase) == set(EXPECTED)


@pytest.mark.parametrize("phase", list(SCENARIOS), ids=str)
async def test_dlqreplay_health_from_the_engine(
    phase: ReplayPhase, r: aioredis.Redis, redis_url: str, api: ControlledHttp
) -> None:
    objects = await SCENARIOS[phase](r, redis_url, api)
    assert objects
    for obj in objects:
        status = obj["status"]
        assert status["phase"] == phase.value
        for lua in RUNTIMES:
            result = health(DLQREPLAY_LUA, obj, lua)
            assert result["status"] == EXPECTED[phase], (lua, status)
            message = result["message"]
            assert_readable(message, obj)
            assert message.startswith(phase.value), message
            if status.get("progress"):
                assert status["progress"] in message, message
            if status.get("message"):
                assert status["message"] in message, message
        print(f"{phase.value:>16}: {result['status']:<11} {result['message']}")


# -- QueuePolicy ---------------------------------------------------------------------------------------

POLICY = PolicyRef(namespace=NAMESPACE, name="visapi-queues", uid="uid-visapi-queues", generation=3)


def policy_object(spec: QueuePolicySpec, status: QueuePolicyStatus) -> dict[str, Any]:
    obj = {
        "apiVersion": API_VERSION,
        "kind": "QueuePolicy",
        "metadata": {
            "name": POLICY.name,
            "namespace": POLICY.namespace,
            "uid": POLICY.uid,
            "generation": POLICY.generation,
        },
        "spec": spec.to_wire(),
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    QueuePolicy.model_validate(obj)
    jsonschema.Draft4Validator(crd_schema("queuepolicies")).validate(obj)
    return obj


async def test_queuepolicy_health_from_evaluate(r: aioredis.Redis, redis_url: str) -> None:
    spec = QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "visapi-redis", "key": "url"}},
            "queues": [Q, "bulk"],
            "interval": "30s",
            "thresholds": {"failed": 5},
        }
    )
    ops = BullQueueOps(r)
    await create_queues(redis_url, "bulk")  # a watched queue with no keys would be QueueNotFound
    await make_failed_jobs(redis_url, Q, failing(3))
    result = await evaluate(POLICY, spec, None, redis=r, ops=ops)
    healthy = find_condition(result.status.conditions, PolicyCondition.HEALTHY)
    assert healthy is not None and healthy.status == ConditionStatus.TRUE
    cases = [(policy_object(spec, result.status), "Healthy", healthy.message)]

    await make_failed_jobs(redis_url, Q, failing(4))  # 7 failed > 5
    result = await evaluate(POLICY, spec, result.status, redis=r, ops=ops, memory=result.memory)
    breach = find_condition(result.status.conditions, PolicyCondition.HEALTHY)
    assert breach is not None and breach.status == ConditionStatus.FALSE
    assert "7" in breach.message
    cases.append((policy_object(spec, result.status), "Degraded", breach.message))

    # Redis lost (behind a password): Healthy=Unknown, so Progressing until it answers again
    lost = aioredis.Redis.from_url(cache_url(), decode_responses=True)
    try:
        result = await evaluate(
            POLICY, spec, result.status, redis=lost, ops=BullQueueOps(lost), memory=result.memory
        )
    finally:
        await lost.aclose()
    unknown = find_condition(result.status.conditions, PolicyCondition.HEALTHY)
    assert unknown is not None and unknown.status == ConditionStatus.UNKNOWN
    cases.append((policy_object(spec, result.status), "Progressing", unknown.message))

    for obj, expected, message in cases:
        for lua in RUNTIMES:
            assert health(QUEUEPOLICY_LUA, obj, lua) == {"status": expected, "message": message}
        assert_readable(message, obj)
        print(f"QueuePolicy: {expected:<9} {message}")
