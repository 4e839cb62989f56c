"""One QueuePolicy evaluation against real Redis, real BullMQ jobs, real gates and a real webhook server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from bullmq import Queue, Worker
from prometheus_client import REGISTRY
from redis.asyncio.connection import Connection

from requeue.api.base import SecretKeyRef, find_condition
from requeue.api.conditions import PolicyCondition
from requeue.api.policy import QueuePolicySpec, QueuePolicyStatus
from requeue.gates.runner import GateRunner
from requeue.policy.budget import ReplayBudget
from requeue.policy.collect import collect
from requeue.policy.evaluate import BullQueueOps, ChildReplay, PolicyRef, evaluate
from requeue.policy.memory import load_memory
from requeue.policy.observe import PolicyMemory
from requeue.policy.slack import SlackNotifier
from requeue.queues import BullQueue, QueueKeys
from requeue.redact import redact_url
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, add_jobs, create_queues, make_failed_jobs
from support.redis_server import RedisServer

POLICY = PolicyRef(namespace="visapi", name="visapi-queues", uid="0b6c2f4e-uid", generation=3)
TOKEN = "T000/B000/s3cr3tw3bh00kt0k3n"


def spec(**overrides: Any) -> QueuePolicySpec:
    body: dict[str, Any] = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queues": ["orders"],
        "interval": "10s",
    }
    body.update(overrides)
    return QueuePolicySpec.model_validate(body)


class Webhook:
    """A Slack-like incoming webhook on a loopback port, recording every POST."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.retry_after: str | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.Response(
            status=self.status, text="ok" if self.status < 300 else "rate_limited", headers=headers
        )

    async def start(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/services/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{TOKEN}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = await Webhook().start()
    try:
        yield hook
    finally:
        await hook.stop()


@pytest.fixture
def redis(redis_client: aioredis.Redis) -> aioredis.Redis:
    """The shared ``redis_client`` (tests/conftest.py) under the name these tests use."""
    return redis_client


class Recorder:
    """ReplayCreator that records children (the Kubernetes side is the handler's, tested e2e)."""

    def __init__(self) -> None:
        self.children: list[ChildReplay] = []

    async def create(self, child: ChildReplay) -> str:
        if all(c.name != child.name for c in self.children):
            self.children.append(child)
        return child.name


def cond(status: QueuePolicyStatus, type_: PolicyCondition) -> tuple[str, str]:
    c = find_condition(status.conditions, type_)
    assert c is not None
    return c.status.value, c.reason


async def test_breach_alerts_once_on_slack_and_recovers_once(
    redis: aioredis.Redis,
    redis_url: str,
    webhook: Webhook,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = StaticSecrets({("ops-slack", "url"): webhook.url})
    notifier = SlackNotifier(secrets, SecretKeyRef(name="ops-slack", key="url"), min_interval=0)
    s = spec(thresholds={"failed": 5}, alerts={"slackWebhookSecretRef": {"name": "ops-slack", "key": "url"}})
    ops = BullQueueOps(redis)
    await make_failed_jobs(redis_url, "orders", [JobSpec("whatsapp.send", reason="429")] * 6)

    result = await evaluate(POLICY, s, None, redis=redis, ops=ops, notifier=notifier)
    assert cond(result.status, PolicyCondition.HEALTHY) == ("False", "FailedAboveThreshold")
    assert cond(result.status, PolicyCondition.READY) == ("True", "Evaluated")
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "FailedAboveThreshold")]
    assert len(webhook.posts) == 1 and "failed 6 > 5" in webhook.posts[0]["text"]
    assert "visapi-queues" in webhook.posts[0]["text"]

    for _ in range(3):
        result = await evaluate(
            POLICY, s, result.status, redis=redis, ops=ops, notifier=notifier, memory=result.memory
        )
    assert len(webhook.posts) == 1

    await BullQueue(redis, "orders").clean("failed", grace_ms=0, limit=100)
    result = await evaluate(
        POLICY, s, result.status, redis=redis, ops=ops, notifier=notifier, memory=result.memory
    )
    assert cond(result.status, PolicyCondition.HEALTHY) == ("True", "WithinThresholds")
    assert len(webhook.posts) == 2 and ":large_green_circle:" in webhook.posts[1]["text"]
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    everything = ours + repr(result.status) + repr(result.events)
    assert TOKEN not in everything and "s3cr3t" not in everything


async def test_slack_failures_are_events_with_the_url_redacted_and_lines_are_kept(
    redis: aioredis.Redis,
    redis_url: str,
    webhook: Webhook,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = [100.0]
    notifier = SlackNotifier(
        StaticSecrets({("ops-slack", "url"): webhook.url}),
        SecretKeyRef(name="ops-slack", key="url"),
        min_interval=30,
        clock=lambda: clock[0],
    )
    s = spec(queues=["a", "b"], thresholds={"failed": 0})
    ops = BullQueueOps(redis)
    webhook.status, webhook.retry_after = 429, "60"
    await create_queues(redis_url, "b")
    await make_failed_jobs(redis_url, "a", [JobSpec("x")])
    result = await evaluate(POLICY, s, None, redis=redis, ops=ops, notifier=notifier)
    assert [e.reason for e in result.events if e.type == "Warning"] == [
        "FailedAboveThreshold",
        "NotifyFailed",
    ]
    assert len(webhook.posts) == 1

    webhook.status, webhook.retry_after = 200, None
    await make_failed_jobs(redis_url, "b", [JobSpec("x")])
    clock[0] += 30  # inside Retry-After: held back, nothing lost
    result = await evaluate(
        POLICY, s, result.status, redis=redis, ops=ops, notifier=notifier, memory=result.memory
    )
    assert len(webhook.posts) == 1 and notifier.pending == 2
    clock[0] += 31
    result = await evaluate(
        POLICY, s, result.status, redis=redis, ops=ops, notifier=notifier, memory=result.memory
    )
    assert len(webhook.posts) == 2
    text = webhook.posts[1]["text"]
    assert "*a*: failed 1 > 0" in text and "*b*: failed 1 > 0" in text
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    assert TOKEN not in ours + repr(result.events)


async def test_red_gate_pauses_green_resumes_only_ours(
    redis: aioredis.Redis,
    redis_url: str,
    redis_factory: Any,
) -> None:
    dependency: RedisServer = redis_factory()
    secrets = StaticSecrets({("cache", "url"): dependency.url})
    s = spec(
        queues=["critical", "default", "bulk"],
        gates=[
            {
                "name": "cache",
                "redis": {
                    "urlSecretRef": {"name": "cache", "key": "url"},
                    "maxLatency": "2s",
                    "timeout": "2s",
                },
            }
        ],
        actions={"pauseWhileGatesFail": True},
    )
    runner = GateRunner(s.gates, s.gate_policy, secrets, namespace="visapi", owner="visapi-queues")
    ops = BullQueueOps(redis)
    await create_queues(redis_url, "critical", "default")
    await BullQueue(redis, "bulk").pause()  # someone else's pause

    gates = await runner.check([], datetime.now(UTC))
    result = await evaluate(POLICY, s, None, redis=redis, ops=ops, gates=gates)
    assert result.decision.actions == ()
    assert cond(result.status, PolicyCondition.GATES_PASSED) == ("True", "AllGatesPassed")

    dependency.kill()
    gates = await runner.check(gates, datetime.now(UTC))
    result = await evaluate(POLICY, s, result.status, redis=redis, ops=ops, gates=gates, memory=result.memory)
    assert cond(result.status, PolicyCondition.GATES_PASSED) == ("False", "GateFailed")
    paused = {q: await BullQueue(redis, q).is_paused() for q in ("critical", "default", "bulk")}
    assert paused == {"critical": True, "default": True, "bulk": True}
    assert {q.name: q.paused_by_policy for q in result.status.queues} == {
        "critical": True,
        "default": True,
        "bulk": False,
    }
    assert [(a.action, a.queue, a.result) for a in result.status.last_actions] == [
        ("Pause", "default", "paused"),
        ("Pause", "critical", "paused"),
    ]

    dependency.restart()
    gates = await runner.check(gates, datetime.now(UTC))
    result = await evaluate(POLICY, s, result.status, redis=redis, ops=ops, gates=gates, memory=result.memory)
    paused = {q: await BullQueue(redis, q).is_paused() for q in ("critical", "default", "bulk")}
    assert paused == {"critical": False, "default": False, "bulk": True}
    assert (
        sample(
            "requeue_actions_total",
            namespace=POLICY.namespace,
            policy=POLICY.name,
            action="resume",
            queue="default",
        )
        >= 1
    )


async def test_auto_replay_once_per_outage_with_a_per_job_budget(
    redis: aioredis.Redis,
    redis_url: str,
) -> None:
    s = spec(
        gates=[{"name": "db", "http": {"url": "http://127.0.0.1:1/"}}],
        actions={
            "autoReplay": {
                "selector": {"jobNames": ["whatsapp.send"]},
                "stableFor": "2m",
                "cooldown": "10m",
                "maxReplaysPerJob": 2,
                "rate": {"jobsPerSecond": 50},
            }
        },
    )
    from requeue.api.gates import GateStatus, GateType

    def gates(healthy: bool) -> list[GateStatus]:
        return [GateStatus(name="db", type=GateType.HTTP, healthy=healthy, message="checked")]

    recorder = Recorder()
    ops = BullQueueOps(redis)
    start = datetime.now(UTC) - timedelta(seconds=1)
    result = await evaluate(
        POLICY, s, None, redis=redis, ops=ops, replays=recorder, gates=gates(False), now=start
    )
    ids = await make_failed_jobs(redis_url, "orders", [JobSpec("whatsapp.send", {"to": i}) for i in range(5)])
    recovered = datetime.now(UTC) + timedelta(seconds=1)
    result = await evaluate(
        POLICY,
        s,
        result.status,
        redis=redis,
        ops=ops,
        replays=recorder,
        gates=gates(True),
        memory=result.memory,
        now=recovered,
    )
    assert recorder.children == []
    result = await evaluate(
        POLICY,
        s,
        result.status,
        redis=redis,
        ops=ops,
        replays=recorder,
        gates=gates(True),
        memory=result.memory,
        now=recovered + timedelta(minutes=2),
    )
    assert len(recorder.children) == 1
    child = recorder.children[0]
    assert child.spec.queue == "orders" and child.spec.selector.job_names == ["whatsapp.send"]
    assert child.spec.selector.failed_after == start and child.spec.selector.failed_before == recovered
    assert child.spec.rate.jobs_per_second == 50 and [g.name for g in child.spec.gates] == ["db"]
    assert child.labels == {"requeue.dev/policy": "visapi-queues", "requeue.dev/auto-replay": "true"}
    assert result.status.last_actions[0].result == child.name
    for minutes in (3, 30, 300):
        result = await evaluate(
            POLICY,
            s,
            result.status,
            redis=redis,
            ops=ops,
            replays=recorder,
            gates=gates(True),
            memory=result.memory,
            now=recovered + timedelta(minutes=minutes),
        )
    assert len(recorder.children) == 1  # once per outage

    # the budget the replay engine applies while snapshotting
    budget = ReplayBudget.from_annotations(dict(child.annotations))
    assert budget is not None and budget.max_per_job == 2
    assert await budget.take(redis, "replay-1", ids) == ids
    assert await budget.take(redis, "replay-1", ids) == ids  # a retried step is not charged twice
    assert await budget.take(redis, "replay-2", ids[:3]) == ids[:3]
    assert await budget.take(redis, "replay-3", ids) == ids[3:]  # first three used their budget
    assert await budget.over_budget(redis, ids) == set(ids)  # 4 and 5 now used theirs too
    assert await budget.used(redis, [*ids[:1], "never-replayed"]) == {ids[0]: 2, "never-replayed": 0}
    assert ReplayBudget.from_annotations({"requeue.dev/replay-budget-key": "x"}) is None


async def age_failed_jobs(redis: aioredis.Redis, keys: QueueKeys, ids: list[str], *, seconds: int) -> None:
    """Make failed jobs look as if they failed ``seconds`` earlier: their score in the failed set
    and the times in their hashes, the two things BullMQ's ``cleanJobsInSet`` reads."""
    async with redis.pipeline(transaction=True) as pipe:
        for job_id in ids:
            fields = await redis.hmget(keys.job(job_id), ["timestamp", "processedOn", "finishedOn"])
            earlier = {
                name: int(value) - seconds * 1000
                for name, value in zip(("timestamp", "processedOn", "finishedOn"), fields, strict=True)
                if value is not None
            }
            for name, value in earlier.items():
                pipe.hset(keys.job(job_id), name, value)
            pipe.zadd(keys.failed, {job_id: earlier["finishedOn"]}, xx=True)
        await pipe.execute()


async def test_clean_removes_only_jobs_older_than_grace_in_bounded_batches(
    redis: aioredis.Redis,
    redis_url: str,
) -> None:
    old = await make_failed_jobs(redis_url, "orders", [JobSpec("old", {"i": i}) for i in range(10)])
    await age_failed_jobs(redis, QueueKeys("bull", "orders"), old, seconds=60)
    new = await make_failed_jobs(redis_url, "orders", [JobSpec("new", {"i": i}) for i in range(3)])

    calls: list[int] = []

    class CountingOps(BullQueueOps):
        async def clean(self, queue: str, state: str, *, grace_ms: int, limit: int) -> int:
            calls.append(limit)
            return await super().clean(queue, state, grace_ms=grace_ms, limit=limit)

    s = spec(actions={"clean": {"failed": {"grace": "4s", "limit": 1000}}})
    result = await evaluate(POLICY, s, None, redis=redis, ops=CountingOps(redis), clean_batch=4)
    assert calls == [4, 4, 4]  # 4 + 4 + 2 removed: the short batch ends it
    remaining = set(await redis.zrange(QueueKeys("bull", "orders").failed, 0, -1))
    assert remaining == set(new) and not remaining & set(old)
    assert [(a.action, a.result) for a in result.status.last_actions] == [("Clean", "removed 10")]
    calls.clear()
    result = await evaluate(
        POLICY, s, result.status, redis=redis, ops=CountingOps(redis), memory=result.memory, clean_batch=4
    )
    assert calls == []  # nothing older than grace: no Clean at all


class CountingConnection(Connection):
    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


async def test_one_round_trip_observes_every_queue(redis_url: str) -> None:
    pool = aioredis.ConnectionPool.from_url(
        redis_url, connection_class=CountingConnection, decode_responses=True
    )
    client = aioredis.Redis(connection_pool=pool)
    try:
        await client.ping()
        names = [f"q{i}" for i in range(50)]
        for name in names:  # a job waits in each: the queue is known to exist without asking
            await add_jobs(redis_url, name, [JobSpec(name="send")])
        s = spec(
            queues=names,
            thresholds={"failureRatePercent": 5, "failed": 1},
            actions={"clean": {"completed": {"grace": "1h"}, "failed": {"grace": "1d"}}},
        )
        CountingConnection.sends = 0
        observation, stats = await collect(client, s, names, PolicyMemory(), now=datetime.now(UTC))
        assert CountingConnection.sends == 1 == stats.round_trips
        # 7 sizes, the paused flag, the events page, 2 clean rules
        assert stats.commands == 50 * 11 and len(observation.queues) == 50

        # a queue with no job at all: one EXISTS tells it from a typo, in one more round trip
        await create_queues(redis_url, "drained")
        CountingConnection.sends = 0
        every = [*names, "drained"]
        observation, stats = await collect(
            client, spec(queues=every), every, PolicyMemory(), now=datetime.now(UTC)
        )
        assert CountingConnection.sends == 2 == stats.round_trips
        assert stats.commands == 51 * 9 + 1 and observation.queues["drained"].not_found is None

        CountingConnection.sends = 0
        result = await evaluate(POLICY, s, None, redis=client, ops=BullQueueOps(client))
        # load memory + observe + store memory; nothing to act on
        assert CountingConnection.sends == 3 == result.round_trips
        CountingConnection.sends = 0
        result = await evaluate(
            POLICY, s, result.status, redis=client, ops=BullQueueOps(client), memory=result.memory
        )
        assert CountingConnection.sends == 2 == result.round_trips
        assert set((await load_memory(client, POLICY.uid)).queues) == set(names)
    finally:
        await client.aclose()
        await pool.disconnect()


async def test_stalled_active_job_without_a_lock(redis: aioredis.Redis, redis_url: str) -> None:
    release = asyncio.Event()

    async def hang(job: Any, token: str) -> str:
        await release.wait()
        return "ok"

    q = Queue("orders", {"connection": redis_url})
    worker = Worker("orders", hang, {"connection": redis_url, "drainDelay": 1})
    try:
        job = await q.add("pdf.generate", {})
        keys = QueueKeys("bull", "orders")
        for _ in range(200):
            if await redis.lrange(keys.active, 0, -1):
                break
            await asyncio.sleep(0.02)
        s = spec(thresholds={"stalledActiveSeconds": 60})
        t0 = datetime.now(UTC)
        result = await evaluate(POLICY, s, None, redis=redis, ops=BullQueueOps(redis), now=t0)
        assert result.status.queues[0].stalled == 0 and result.status.queues[0].active == 1
        await redis.delete(keys.job(str(job.id)) + ":lock")  # what PX expiry does to a dead worker's lock
        # lockless for 10 s: not yet stalled; for 75 s (> stalledActiveSeconds): stalled
        for seconds, stalled in ((10, 0), (75, 1)):
            result = await evaluate(
                POLICY,
                s,
                result.status,
                redis=redis,
                ops=BullQueueOps(redis),
                memory=result.memory,
                now=t0 + timedelta(seconds=seconds),
            )
            assert result.status.queues[0].stalled == stalled, seconds
        assert cond(result.status, PolicyCondition.HEALTHY) == ("False", "StalledJobs")
    finally:
        release.set()
        await worker.close()
        await q.close()


async def test_unreachable_redis_is_a_condition_not_an_exception(redis_factory: Any) -> None:
    server: RedisServer = redis_factory()
    client = aioredis.Redis.from_url(
        server.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2
    )
    try:
        s = spec(queues=["orders"], thresholds={"failed": 1})
        await make_failed_jobs(server.url, "orders", [JobSpec("x")] * 2)
        result = await evaluate(POLICY, s, None, redis=client, ops=BullQueueOps(client))
        redis_up = {"namespace": POLICY.namespace, "kind": "QueuePolicy", "owner": POLICY.name}
        assert sample("requeue_redis_up", **redis_up) == 1
        assert sample("bullmq_queue_jobs", **POLICY_LABELS, queue="orders", state="failed") == 2
        server.kill()
        result = await evaluate(
            POLICY, s, result.status, redis=client, ops=BullQueueOps(client), memory=result.memory
        )
        assert cond(result.status, PolicyCondition.READY) == ("False", "RedisUnreachable")
        assert [e.reason for e in result.events] == ["RedisUnreachable"]
        assert result.decision.actions == ()
        # RequeueRedisUnreachable can fire for the policy; its queue gauges are gone, not frozen
        assert sample("requeue_redis_up", **redis_up) == 0
        assert policy_series() == []
    finally:
        await client.aclose()


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


POLICY_LABELS = {"namespace": POLICY.namespace, "policy": POLICY.name}


def policy_series() -> list[str]:
    """Every queue gauge sample labelled with :data:`POLICY`."""
    return [
        f"{s.name}{s.labels}"
        for family in REGISTRY.collect()
        if family.type == "gauge"
        for s in family.samples
        if POLICY_LABELS.items() <= s.labels.items()
    ]


async def test_metrics_carry_the_observed_counts(redis: aioredis.Redis, redis_url: str) -> None:
    await make_failed_jobs(redis_url, "orders", [JobSpec("x")] * 3)
    await BullQueue(redis, "orders").pause()
    before = sample("requeue_policy_evaluation_seconds_count")
    await evaluate(POLICY, spec(), None, redis=redis, ops=BullQueueOps(redis))
    labels = {"namespace": "visapi", "policy": "visapi-queues", "queue": "orders"}
    assert sample("bullmq_queue_jobs", **labels, state="failed") == 3
    assert sample("bullmq_queue_jobs", **labels, state="waiting") == 0
    assert sample("bullmq_queue_paused", **labels) == 1
    assert sample("queue_depth_total", **labels, status="failed") == 3
    assert sample("requeue_policy_evaluation_seconds_count") == before + 1


class _Killed(BaseException):
    """The process dies (SIGKILL) right after a Redis command: nothing after it runs."""


class DiesAfterPause(BullQueueOps):
    async def pause(self, queue: str) -> None:
        await super().pause(queue)
        raise _Killed


async def test_a_pause_is_still_ours_when_the_process_died_before_writing_anything_else(
    redis: aioredis.Redis,
    redis_url: str,
) -> None:
    # Regression: pausedByPolicy lived only in .status, written after the pause; an operator
    # killed in between came back to a paused queue it took for someone else's, and never resumed it.
    from requeue.api.gates import GateStatus, GateType

    def gates(healthy: bool) -> list[GateStatus]:
        return [GateStatus(name="db", type=GateType.HTTP, healthy=healthy, message="checked")]

    s = spec(
        queues=["default"],
        gates=[{"name": "db", "http": {"url": "http://127.0.0.1:1/"}}],
        actions={"pauseWhileGatesFail": True},
    )
    await create_queues(redis_url, "default")
    green = await evaluate(POLICY, s, None, redis=redis, ops=BullQueueOps(redis), gates=gates(True))
    with pytest.raises(_Killed):
        await evaluate(
            POLICY,
            s,
            green.status,
            redis=redis,
            ops=DiesAfterPause(redis),
            gates=gates(False),
            memory=green.memory,
        )
    assert await BullQueue(redis, "default").is_paused()

    # the restarted process: the last written status, no memory in the process
    ops = BullQueueOps(redis)
    again = await evaluate(POLICY, s, green.status, redis=redis, ops=ops, gates=gates(False))
    held = {q.name: q for q in again.status.queues}["default"]
    assert held.paused and held.paused_by_policy
    assert [a.kind.value for a in again.decision.actions] == []  # not paused twice
    back = await evaluate(
        POLICY, s, again.status, redis=redis, ops=ops, gates=gates(True), memory=again.memory
    )
    assert [(a.kind.value, a.queue) for a in back.decision.actions] == [("Resume", "default")]
    assert not await BullQueue(redis, "default").is_paused()
    assert not {q.name: q for q in back.status.queues}["default"].paused_by_policy

    # the mark is gone with the pause: a later pause by someone else is theirs, and stays
    await BullQueue(redis, "default").pause()
    fresh = await evaluate(POLICY, s, green.status, redis=redis, ops=ops, gates=gates(True))
    assert fresh.decision.actions == () and await BullQueue(redis, "default").is_paused()
    assert not {q.name: q for q in fresh.status.queues}["default"].paused_by_policy


async def test_a_queue_with_no_bullmq_keys_is_reported_never_acted_on_and_the_others_evaluated(
    redis: aioredis.Redis,
    redis_url: str,
) -> None:
    """A typo in spec.queues: QueueNotFound in its .status.queues[] entry (naming the queues that exist),
    Healthy=False with that reason, one Warning Event; no pause creates its keys; "orders" is evaluated."""
    from requeue.api.gates import GateStatus, GateType

    red = [GateStatus(name="db", type=GateType.HTTP, healthy=False, message="down")]
    s = spec(
        queues=["orders", "ordres"],
        thresholds={"failed": 1},
        gates=[{"name": "db", "http": {"url": "http://127.0.0.1:1/"}}],
        actions={"pauseWhileGatesFail": True},
    )
    await make_failed_jobs(redis_url, "orders", [JobSpec("x")] * 2)
    await add_jobs(redis_url, "emails", [JobSpec("email.send")])
    ops = BullQueueOps(redis)

    result = await evaluate(POLICY, s, None, redis=redis, ops=ops, gates=red)
    queues = {q.name: q for q in result.status.queues}
    shown = redact_url(redis_url)  # the password never shows
    expected = (
        f'queue "ordres" has no BullMQ keys under prefix "bull" in {shown}; did you mean "orders"? '
        "queues there: emails, orders"
    )
    assert (queues["ordres"].reason, queues["ordres"].message) == ("QueueNotFound", expected)
    assert not queues["ordres"].healthy and not queues["ordres"].paused_by_policy
    assert queues["orders"].reason == "" and queues["orders"].reasons == ["failed 2 > 1"]
    assert queues["orders"].paused_by_policy and await BullQueue(redis, "orders").is_paused()
    assert [(a.kind.value, a.queue) for a in result.decision.actions if a.queue == "ordres"] == []
    assert await redis.keys("bull:ordres:*") == []  # not paused into existence
    healthy = find_condition(result.status.conditions, PolicyCondition.HEALTHY)
    assert healthy is not None and (healthy.status.value, healthy.reason) == ("False", "QueueNotFound")
    assert expected in healthy.message and "orders: failed 2 > 1" in healthy.message
    assert cond(result.status, PolicyCondition.READY) == ("True", "Evaluated")
    assert [(e.type, e.message) for e in result.events if e.reason == "QueueNotFound"] == [
        ("Warning", expected)
    ]

    again = await evaluate(POLICY, s, result.status, redis=redis, ops=ops, gates=red, memory=result.memory)
    assert not [e for e in again.events if e.reason == "QueueNotFound"]  # one Event, not one per interval
    assert {q.name: q.reason for q in again.status.queues} == {"orders": "", "ordres": "QueueNotFound"}

    await create_queues(redis_url, "ordres")  # the app starts using that name: now it is a queue
    fixed = await evaluate(POLICY, s, again.status, redis=redis, ops=ops, gates=red, memory=again.memory)
    assert {q.name: q.reason for q in fixed.status.queues} == {"orders": "", "ordres": ""}
    assert cond(fixed.status, PolicyCondition.HEALTHY) == ("False", "FailedAboveThreshold")
