"""QueuePolicy signals about processing, against real Node BullMQ workers: processing stopped
(workers down, paused by someone, workers stuck), failures growing, stuck active jobs.

Time is the evaluation's injected ``now``: the policy's memory remembers when the queue last
made progress (from BullMQ's events stream), so a later ``now`` is a later evaluation without
waiting for it. Nothing here sleeps for a fixed time; each wait polls for its condition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from requeue.api.base import SecretKeyRef, find_condition
from requeue.api.conditions import PolicyCondition
from requeue.api.policy import QueuePolicySpec, QueuePolicyStatus, QueueState
from requeue.policy.evaluate import BullQueueOps, EvaluationResult, PolicyRef, evaluate
from requeue.policy.memory import load_memory
from requeue.policy.slack import SlackNotifier
from requeue.queues import QueueKeys
from requeue.queues.workers import CLIENT_LIST, client_names, count_workers, worker_bases
from requeue.secrets import StaticSecrets
from support import async_wait_until
from support.node import FailRule, NodeWorker, pause_queue, run_producer
from support.queuepolicy import SlackSink

POLICY = PolicyRef(namespace="visapi", name="processing", uid="5e1f-processing-uid", generation=1)
MAJOR = 6


def spec(**thresholds: Any) -> QueuePolicySpec:
    """A policy over ``orders`` with these thresholds (wire names), alerting a Slack webhook."""
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": ["orders"],
            "thresholds": thresholds,
            "alerts": {"slackWebhookSecretRef": {"name": "ops-slack", "key": "url"}},
        }
    )


class Evaluator:
    """Evaluates one policy again and again, carrying status and memory like the daemon does."""

    def __init__(self, redis: aioredis.Redis, policy: QueuePolicySpec, slack: SlackSink) -> None:
        self.redis = redis
        self.spec = policy
        self.notifier = SlackNotifier(
            StaticSecrets({("ops-slack", "url"): slack.url}),
            SecretKeyRef(name="ops-slack", key="url"),
            min_interval=0,
        )
        self.last: EvaluationResult | None = None
        self.events: list[tuple[str, str, str]] = []
        #: The next evaluation starts without the kept memory (it loads it from Redis, as after a restart).
        self.restarted = False

    async def __call__(self, now: datetime) -> QueueState:
        last = self.last
        self.last = await evaluate(
            POLICY,
            self.spec,
            last.status if last else None,
            redis=self.redis,
            ops=BullQueueOps(self.redis),
            notifier=self.notifier,
            memory=last.memory if last and not self.restarted else None,
            now=now,
        )
        self.restarted = False
        self.events += [(e.type, e.reason, e.message) for e in self.last.events]
        return self.last.status.queues[0]

    @property
    def status(self) -> QueuePolicyStatus:
        assert self.last is not None
        return self.last.status

    def healthy(self) -> tuple[str, str]:
        c = find_condition(self.status.conditions, PolicyCondition.HEALTHY)
        assert c is not None
        return c.status.value, c.reason

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


async def no_worker_connected(redis: aioredis.Redis, queue: str) -> None:
    """Wait until Redis lists no worker connection of ``queue`` (a stopped process's sockets
    close with it; Redis notices on its next read)."""

    async def gone() -> bool:
        names = [c.get("name", "") for c in await redis.client_list()]
        return count_workers(names, "bull", [queue])[queue] == 0

    await async_wait_until(gone, timeout=10, interval=0.02, message=f"no worker connection of {queue}")


def idle_gauge(queue: str) -> float | None:
    return REGISTRY.get_sample_value(
        "bullmq_queue_idle_seconds", {"namespace": POLICY.namespace, "policy": POLICY.name, "queue": queue}
    )


async def test_workers_down_is_flagged_once_and_cleared_once_when_they_are_back(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    async with NodeWorker(redis_url, "orders", major=MAJOR) as worker:
        done = await run_producer(redis_url, "orders", [{"name": "order.sync", "data": {}}] * 3, major=MAJOR)
        await worker.wait_for_final(done)
    await no_worker_connected(redis_client, "orders")
    waiting = await run_producer(
        redis_url, "orders", [{"name": "order.sync", "data": {"i": i}} for i in range(5)], major=MAJOR
    )
    evaluate_at = Evaluator(redis_client, spec(stalledFor="1m"), slack)
    t0 = datetime.now(UTC)

    q = await evaluate_at(t0)
    assert q.waiting == 5 and q.processing_stopped is None
    assert q.workers is None  # this read saw the 3 completions: no reason to list connections
    assert q.idle_since is not None and t0 - timedelta(seconds=60) < q.idle_since <= t0  # the last completion
    assert evaluate_at.healthy() == ("True", "WithinThresholds") and slack.messages == []

    q = await evaluate_at(t0 + timedelta(seconds=61))
    assert q.processing_stopped is not None, q
    assert q.processing_stopped.reason == "WorkersDown", q.processing_stopped
    assert q.processing_stopped.since == q.idle_since and q.workers == 0
    assert (
        "5 waiting" in q.processing_stopped.message
        and "no worker is connected" in q.processing_stopped.message
    )
    assert evaluate_at.healthy() == ("False", "ProcessingStopped")
    assert [b.kind for b in q.breaches] == ["processingStopped"]
    assert evaluate_at.reasons() == ["ProcessingStopped"]
    assert len(slack.messages) == 1 and "processing stopped (WorkersDown)" in slack.messages[0]
    assert (idle_gauge("orders") or 0) >= 61

    await evaluate_at(t0 + timedelta(seconds=62))
    await evaluate_at(t0 + timedelta(seconds=63))
    assert evaluate_at.reasons() == ["ProcessingStopped"] and len(slack.messages) == 1

    async with NodeWorker(redis_url, "orders", major=MAJOR) as worker:
        await worker.wait_for_final(waiting)
    q = await evaluate_at(t0 + timedelta(seconds=64))
    assert q.processing_stopped is None and q.idle_since is None and q.waiting == 0
    assert evaluate_at.healthy() == ("True", "WithinThresholds")
    assert evaluate_at.reasons() == ["ProcessingStopped", "Recovered"]
    assert "processing resumed" in evaluate_at.events[-1][2]
    assert len(slack.messages) == 2 and ":large_green_circle:" in slack.messages[1]
    assert idle_gauge("orders") == 0


async def test_a_queue_paused_by_someone_says_so(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    async with NodeWorker(redis_url, "orders", major=MAJOR):
        await pause_queue(redis_url, "orders", major=MAJOR)  # the application's own pause
        await run_producer(redis_url, "orders", [{"name": "order.sync", "data": {}}] * 4, major=MAJOR)
        evaluate_at = Evaluator(redis_client, spec(stalledFor="10m"), slack)
        t0 = datetime.now(UTC)
        await evaluate_at(t0)
        q = await evaluate_at(t0 + timedelta(minutes=10))
    assert q.processing_stopped is not None and q.processing_stopped.reason == "PausedByOthers"
    assert q.workers is not None and q.workers >= 1  # the worker was there: the pause is the cause
    assert "paused" in q.processing_stopped.message


async def test_workers_holding_jobs_that_never_finish_are_stuck(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    keys = QueueKeys("bull", "orders")
    worker = NodeWorker(redis_url, "orders", major=MAJOR, concurrency=2, process_ms=600_000)
    await worker.start()
    try:
        await run_producer(redis_url, "orders", [{"name": "pdf.render", "data": {}}] * 5, major=MAJOR)

        async def both_active() -> bool:
            return int(await redis_client.llen(keys.active)) == 2

        await async_wait_until(both_active, timeout=20, interval=0.02, message="2 active jobs")
        evaluate_at = Evaluator(redis_client, spec(stalledFor="15m"), slack)
        t0 = datetime.now(UTC)
        await evaluate_at(t0)
        q = await evaluate_at(t0 + timedelta(minutes=15))
        assert q.processing_stopped is not None and q.processing_stopped.reason == "WorkersStuck", q
        assert q.active == 2 and q.waiting == 3 and q.workers is not None and q.workers >= 1
    finally:
        await worker.kill()


def test_worker_connections_are_counted_as_bullmq_names_them() -> None:
    node, python = worker_bases("bull", "orders")
    names = [
        node,  # Node BullMQ, an unnamed worker
        f"{node}:w:pdf-1",  # Node BullMQ, Worker({name: "pdf-1"})
        python,  # Python bullmq
        f"{node}:qe",  # QueueEvents: not a worker
        f"{python}x",
        "",
        "bull:other",
        f"{node}:w:" + ":w:" * 50_000,  # hostile names stay linear
        "x" + ":w:" * 50_000,
    ]
    assert count_workers(names, "bull", ["orders", "other"]) == {"orders": 4, "other": 1}


async def test_connection_names_read_from_the_raw_client_list_are_redis_own(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    """The names :func:`client_names` reads from ``CLIENT LIST`` as it came are the ones redis-py's
    full parse gives, for named and unnamed connections, on text and bytes clients alike."""
    node, _python = worker_bases("bull", "orders")
    named = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        for client, name in zip(named, (node, f"{node}:w:pdf-1", "lib-name=x"), strict=True):
            await client.client_setname(name)
        expected = sorted(str(c.get("name", "")) for c in await redis_client.client_list())
        raw = await redis_client.execute_command(*CLIENT_LIST)  # type: ignore[no-untyped-call]
        assert sorted(client_names(raw)) == expected
        assert sorted(client_names(raw.decode() if isinstance(raw, bytes) else raw)) == expected
        assert {node, f"{node}:w:pdf-1", "lib-name=x", ""} <= set(expected)
        assert count_workers(client_names(raw), "bull", ["orders"]) == {"orders": 2}
    finally:
        for client in named:
            await client.aclose()


async def test_failures_growing_is_judged_from_remembered_samples(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    rule = [FailRule("ECONNREFUSED 10.0.0.7:5432", name="whatsapp.send")]
    job = {"name": "whatsapp.send", "data": {}}
    async with NodeWorker(redis_url, "orders", major=MAJOR, fail=rule) as worker:
        first = await run_producer(redis_url, "orders", [job] * 8, major=MAJOR)
        await worker.wait_for_final(first)
        evaluate_at = Evaluator(redis_client, spec(failedGrowing={"above": 5}, window="5m"), slack)
        t0 = datetime.now(UTC)
        q = await evaluate_at(t0)
        assert q.failed == 8 and q.failed_change is None and q.healthy  # one sample: no trend yet

        more = await run_producer(redis_url, "orders", [job] * 4, major=MAJOR)
        await worker.wait_for_final(more)
    q = await evaluate_at(t0 + timedelta(minutes=1))
    assert q.failed == 12 and q.failed_change == 4
    assert evaluate_at.healthy() == ("False", "FailedGrowing")
    assert evaluate_at.reasons() == ["FailedGrowing"]
    assert "failed 12 > 5 and growing: +4 in 1m" in slack.messages[0]

    # the samples live in the policy's memory in Redis: a restarted operator goes on from them
    stored = (await load_memory(redis_client, POLICY.uid)).get("orders").failed_samples
    assert [count for _, count in stored] == [8, 12]
    evaluate_at.restarted = True
    q = await evaluate_at(t0 + timedelta(minutes=2))
    assert q.failed_change == 4 and evaluate_at.reasons() == ["FailedGrowing"]  # still rising over 5m

    q = await evaluate_at(t0 + timedelta(minutes=6, seconds=1))  # flat for a whole window
    assert q.failed == 12 and q.failed_change == 0 and q.healthy
    assert evaluate_at.reasons() == ["FailedGrowing", "Recovered"]
    assert len(slack.messages) == 2


async def test_a_killed_worker_leaves_stuck_jobs_named_with_their_ages(
    redis_client: aioredis.Redis, redis_url: str, slack: SlackSink
) -> None:
    keys = QueueKeys("bull", "orders")
    worker = NodeWorker(
        redis_url, "orders", major=MAJOR, concurrency=2, process_ms=600_000, lock_duration_ms=1500
    )
    await worker.start()
    try:
        await run_producer(redis_url, "orders", [{"name": "pdf.render", "data": {}}] * 3, major=MAJOR)

        async def active_ids() -> list[str] | None:
            ids = [str(i) for i in await redis_client.lrange(keys.active, 0, -1)]
            return ids if len(ids) == 2 else None

        active = await async_wait_until(active_ids, timeout=20, interval=0.02, message="2 active jobs")
        evaluate_at = Evaluator(redis_client, spec(stalledActiveSeconds=60, stalledFor="1m"), slack)
        t0 = datetime.now(UTC)
        q = await evaluate_at(t0)
        assert q.stalled == 0 and q.stuck_active == []

        q = await evaluate_at(t0 + timedelta(seconds=61))  # active for a minute, locks still renewed
        assert q.stalled == 2 and sorted(j.id for j in q.stuck_active) == sorted(active)
        assert all(
            j.name == "pdf.render" and j.age_seconds >= 60 and not j.lock_expired for j in q.stuck_active
        )
        assert q.processing_stopped is not None and q.processing_stopped.reason == "WorkersStuck"
        assert evaluate_at.reasons() == ["StalledJobs", "ProcessingStopped"]
        stalled_event = evaluate_at.events[0][2]
        assert all(f"{jid} pdf.render" in stalled_event for jid in active), stalled_event
    finally:
        await worker.kill()  # dies holding both jobs

    async def locks_expired() -> bool:
        return not await redis_client.exists(*(keys.lock(jid) for jid in active))

    await async_wait_until(
        locks_expired, timeout=10, interval=0.05, message="the dead worker's locks expired"
    )
    await no_worker_connected(redis_client, "orders")
    q = await evaluate_at(t0 + timedelta(seconds=62))
    assert q.stalled == 2 and all(j.lock_expired for j in q.stuck_active)
    assert q.processing_stopped is not None and q.processing_stopped.reason == "WorkersDown"
    assert q.workers == 0 and q.active == 2
    assert evaluate_at.reasons() == ["StalledJobs", "ProcessingStopped"]  # one Event per episode
    assert len(slack.messages) == 1
