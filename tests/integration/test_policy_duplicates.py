"""Duplicate waiting jobs (the runbook's "Duplicate jobs in queue"), on real Redis with jobs a
real Node BullMQ producer added: the same order added twice (business key ``$.orderId``), and a
job id pushed into the lists a second time by hand (an ``LPUSH`` gone wrong).

Asserted as a user checks them: ``.status.queues[].duplicates``, the Warning Event, the
``bullmq_queue_duplicate_jobs`` gauge (gone with the policy), and ``requeue inspect --duplicates``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pydantic import ValidationError

from requeue.api.jsonpath import parse_json_path
from requeue.api.policy import QueuePolicySpec
from requeue.policy.collect import collect
from requeue.policy.evaluate import PolicyRef
from requeue.policy.observe import PolicyMemory
from requeue.policy.series import forget_policy
from requeue.queues import QueueKeys
from requeue.queues.duplicates import find_duplicates
from support.cli import cli
from support.node import run_producer
from support.policy_eval import evaluate_after

POLICY = PolicyRef(namespace="shop", name="dupes", uid="5e1f-dupes-uid", generation=1)
MAJOR = 6
Q = "orders"
#: orderId of each job the producer adds, in order; the last one is added with a priority.
ORDERS = ["A-1", "A-2", "A-1", "A-3", "A-2", "A-1", "A-3"]


def spec(**duplicates: object) -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}, "queues": [Q], "duplicates": duplicates}
    )


def gauge(kind: str) -> float | None:
    return REGISTRY.get_sample_value(
        "bullmq_queue_duplicate_jobs",
        {"namespace": POLICY.namespace, "policy": POLICY.name, "queue": Q, "kind": kind},
    )


async def seed(redis_url: str, redis_client: aioredis.Redis) -> list[str]:
    """The producer's jobs, then two ids listed twice by hand: one again in wait, one also in
    prioritized. Returns the job ids, in ``ORDERS`` order."""
    jobs = [{"name": "order.create", "data": {"orderId": o, "n": i}} for i, o in enumerate(ORDERS)]
    jobs[-1]["opts"] = {"priority": 5}
    ids = await run_producer(redis_url, Q, jobs, major=MAJOR)
    keys = QueueKeys("bull", Q)
    assert await redis_client.llen(keys.wait) == 6 and await redis_client.zcard(keys.prioritized) == 1
    await redis_client.lpush(keys.wait, ids[1])
    await redis_client.zadd(keys.prioritized, {ids[2]: 1})
    return ids


async def test_duplicates_by_id_and_business_key_in_status_event_and_metric(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await seed(redis_url, redis_client)
    policy = spec(businessKey="$.orderId")
    t0 = datetime.now(UTC)

    first = await evaluate_after(POLICY, redis_client, policy, None, t0)
    dup = first.status.queues[0].duplicates
    assert dup is not None
    assert dup.scanned == 9  # 7 wait (6 + the pushed copy) + 2 prioritized
    assert dup.ids == 2 and sorted(dup.sample_ids) == sorted([ids[1], ids[2]])
    assert dup.business_keys == 3
    by_key = {k.key: (k.jobs, sorted(k.job_ids)) for k in dup.sample_keys}
    assert by_key == {
        '"A-1"': (3, sorted([ids[0], ids[2], ids[5]])),
        '"A-2"': (2, sorted([ids[1], ids[4]])),
        '"A-3"': (2, sorted([ids[3], ids[6]])),  # one waiting, one prioritized
    }
    assert dup.sample_keys[0].key == '"A-1"'  # most jobs first
    warnings = [e for e in first.events if e.reason == "DuplicateJobs"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "2 job ids listed more than once" in warnings[0].message
    assert "3 values of $.orderId" in warnings[0].message
    assert gauge("id") == 2 and gauge("business_key") == 3

    second = await evaluate_after(POLICY, redis_client, policy, first, t0 + timedelta(seconds=30))
    assert [e for e in second.events if e.reason == "DuplicateJobs"] == []  # once, not every evaluation
    assert second.status.queues[0].duplicates == dup

    # the hand-made copies removed: the id duplicates are gone, the business keys stay
    keys = QueueKeys("bull", Q)
    await redis_client.lrem(keys.wait, 1, ids[1])
    await redis_client.zrem(keys.prioritized, ids[2])
    third = await evaluate_after(POLICY, redis_client, policy, second, t0 + timedelta(seconds=60))
    after = third.status.queues[0].duplicates
    assert after is not None and after.ids == 0 and after.business_keys == 3 and after.scanned == 7
    assert gauge("id") == 0 and gauge("business_key") == 3

    forget_policy(POLICY.namespace, POLICY.name)
    assert gauge("id") is None and gauge("business_key") is None


async def test_reads_are_bounded_to_the_newest_max_jobs_per_list(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await seed(redis_url, redis_client)
    # the 2 newest of wait: the pushed copy of ids[1] and ids[5]; prioritized: ids[2] (score 1), ids[6]
    result = await evaluate_after(
        POLICY, redis_client, spec(businessKey="$.orderId", maxJobs=2), None, datetime.now(UTC)
    )
    dup = result.status.queues[0].duplicates
    assert dup is not None and dup.scanned == 4
    assert dup.ids == 0  # the other copies of ids[1] and ids[2] were beyond the bound
    assert [(k.key, sorted(k.job_ids)) for k in dup.sample_keys] == [('"A-1"', sorted([ids[2], ids[5]]))]
    forget_policy(POLICY.namespace, POLICY.name)


async def test_without_business_key_only_ids_are_looked_for_and_unset_means_off(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await seed(redis_url, redis_client)
    result = await evaluate_after(POLICY, redis_client, spec(), None, datetime.now(UTC))
    dup = result.status.queues[0].duplicates
    assert dup is not None and dup.ids == 2 and dup.business_keys is None and dup.sample_keys == []
    assert gauge("id") == 2 and gauge("business_key") is None  # no key named: no series for it
    off = QueuePolicySpec.model_validate(
        {"redis": {"urlSecretRef": {"name": "r", "key": "u"}}, "queues": [Q]}
    )
    forget_policy(POLICY.namespace, POLICY.name)
    result = await evaluate_after(POLICY, redis_client, off, None, datetime.now(UTC))
    assert result.status.queues[0].duplicates is None and gauge("id") is None
    assert [e for e in result.events if e.reason == "DuplicateJobs"] == []
    forget_policy(POLICY.namespace, POLICY.name)


async def test_the_read_costs_a_round_trip_per_list_read_and_two_per_distinct_id_with_a_key(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await seed(redis_url, redis_client)
    memory = PolicyMemory()
    now = datetime.now(UTC)
    off = QueuePolicySpec.model_validate(
        {"redis": {"urlSecretRef": {"name": "r", "key": "u"}}, "queues": [Q]}
    )
    _, base = await collect(redis_client, off, [Q], memory, now=now)
    _, by_id = await collect(redis_client, spec(), [Q], memory, now=now)
    _, by_key = await collect(redis_client, spec(businessKey="$.orderId"), [Q], memory, now=now)
    assert (by_id.round_trips - base.round_trips, by_id.commands - base.commands) == (1, 3)
    # 3 list reads + one HGET per distinct id read (7 jobs; the two copies are not read twice)
    assert (by_key.round_trips - base.round_trips, by_key.commands - base.commands) == (3, 3 + 7 + 7)


def test_a_business_key_outside_the_path_subset_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="UnsupportedSegment"):
        spec(businessKey="$..orderId")
    with pytest.raises(ValidationError, match="NoSegment"):
        spec(businessKey="$")


async def test_inspect_duplicates_lists_ids_and_business_keys(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await seed(redis_url, redis_client)
    res = cli(
        "inspect",
        "--redis-url",
        redis_url,
        "--queue",
        Q,
        "--duplicates",
        "--business-key",
        "$.orderId",
        "-o",
        "json",
    )
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["scanned"] == 9 and data["ids"]["count"] == 2 and data["ids"]["extra"] == 2
    lists = {s["id"]: (s["times"], s["lists"]) for s in data["ids"]["sample"]}
    assert lists == {ids[1]: (2, ["wait"]), ids[2]: (2, ["wait", "prioritized"])}
    bk = data["businessKey"]
    assert bk["path"] == "$.orderId" and bk["count"] == 3 and bk["extraJobs"] == 4
    assert bk["sample"][0] == {
        "key": '"A-1"',
        "jobs": 3,
        "jobIds": [ids[5], ids[2], ids[0]],
    }  # wait: newest first

    text = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--duplicates")
    assert text.code == 0, text.stderr
    assert "DUPLICATE IDS: 2 ids listed more than once" in text.stdout
    assert f"{ids[2]}" in text.stdout and "wait, prioritized" in text.stdout
    assert "BUSINESS KEYS" not in text.stdout

    bad = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--duplicates", "--business-key", "$.a[*]")
    assert bad.code == 2 and "UnsupportedSegment" in bad.stderr
    missing = cli("inspect", "--redis-url", redis_url, "--queue", "ordres", "--duplicates")
    assert missing.code == 2 and "QueueNotFound" in missing.stderr + missing.stdout


async def test_payloads_over_the_read_limit_are_not_read_for_their_key(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Two 1 MiB jobs of the same order (a producer's payloads, not requeue's to bound) are
    neither read nor counted: only their size is asked; the small copies still are."""
    jobs = [{"name": "order.create", "data": {"orderId": "BIG", "blob": "x" * (1 << 20)}}] * 2
    jobs += [{"name": "order.create", "data": {"orderId": "SMALL"}}] * 2
    await run_producer(redis_url, Q, jobs, major=MAJOR)
    read = await find_duplicates(redis_client, {Q: QueueKeys("bull", Q)}, path=parse_json_path("$.orderId"))
    dupes = read.queues[Q]
    assert dupes.business_keys == 1 and [key for key, _, _ in dupes.sample_keys] == ['"SMALL"']
    assert read.commands == 3 + 4 + 2  # the lists, the four sizes, the two small payloads
