"""A QueuePolicy watching a queue on a real Redis Cluster (3 primaries, 3 replicas), end to end.

The application is Node BullMQ with a ``{bull}`` prefix over an ioredis Cluster; the policy's
Secret holds a ``redis+cluster://`` URL. Its gates: a killable redis-server of the test's own
(the "dependency") and the cluster itself (a ``redis`` gate without ``urlSecretRef``: every
primary PINGed, ``cluster_state:ok`` required). The dependency dies while jobs are running:
the policy pauses the queue, the jobs fail; it comes back: the policy resumes the queue and
one child DLQReplay moves every job that failed in the outage, once. Every key the policy
owns lives in the queue's slot, on the primary that serves it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aredis
from redis.crc import key_slot

from support import async_wait_until
from support.cli import acli
from support.dlqreplay import check_exactly_once, in_redis, operator_command, secret, wait_finished
from support.kube import Kube
from support.node import FailRule, NodeWorker, run_producer
from support.queuepolicy import (
    DLQR,
    FAST_GATES,
    QPOL,
    apply,
    condition,
    gates,
    object_uid,
    policy,
    queue_state,
    redis_gate,
    wait_auto_replay,
    wait_policy,
)
from support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.e2e, pytest.mark.interop]

PREFIX = "{bull}"
MAJOR = 6
QUEUE = "policy-cluster"
NAME = "cluster-queues"
OUTAGE = "ECONNREFUSED cache:6379"
#: Jobs held active while the dependency dies; they fail after the policy paused the queue.
JOBS = 8
#: How long the failing worker holds each job: the gate turns red and the policy pauses well
#: within it (the test checks that the jobs failed after the outage began, it does not assume it).
HOLD_MS = 8000


@pytest_asyncio.fixture
async def owner(cluster: RedisCluster) -> AsyncIterator[aredis.Redis]:
    """A plain client to the primary that serves ``{bull}``'s slot."""
    node = cluster.owner_of(PREFIX)
    client = aredis.Redis(host=node.host, port=node.port, password=cluster.password, decode_responses=True)
    yield client
    await client.aclose()


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


async def test_a_policy_on_a_cluster_pauses_on_red_and_auto_replays_once_green(
    kube: Kube, operator_factory: Any, cluster: RedisCluster, owner: aredis.Redis, redis_factory: Any
) -> None:
    k = f"{PREFIX}:{QUEUE}"
    dependency = redis_factory()
    await apply(kube, secret("redis", {"url": cluster.url}))
    await apply(kube, secret("gate-redis", {"url": dependency.url}))
    operator = operator_factory(operator_command())
    on_the_cluster = {
        "name": "cluster",
        "redis": {"timeout": "2s", "maxLatency": "2s", "maxMemoryPercent": 95},
    }
    await apply(
        kube,
        policy(
            NAME,
            [QUEUE],
            prefix=PREFIX,
            interval="1s",
            gates=[redis_gate(), on_the_cluster],
            gatePolicy=FAST_GATES,
            actions={
                "pauseWhileGatesFail": True,
                "autoReplay": {
                    "selector": {"jobNames": ["whatsapp.*"]},
                    "stableFor": "1s",
                    "cooldown": "1s",
                    "maxReplaysPerJob": 1,
                    "rate": {"jobsPerSecond": 200, "batchSize": 3},
                },
                "clean": {"completed": {"grace": "1s"}},
            },
        ),
    )
    ids = await run_producer(
        cluster.node_js_url,
        QUEUE,
        [{"name": "whatsapp.send", "data": {"i": i, "tenant": "acme"}, "opts": {}} for i in range(JOBS)],
        major=MAJOR,
        prefix=PREFIX,
    )
    st = await wait_policy(
        kube,
        NAME,
        lambda s: gates(s) == "True" and condition(s, "Ready").get("status") == "True",
        operator=operator,
        what="gates green, the queue observed on the cluster",
    )
    cluster_gate = next(g for g in st["gates"] if g["name"] == "cluster")
    assert cluster_gate["healthy"] is True
    assert "cluster_state:ok, 3 primaries" in cluster_gate["message"], cluster_gate
    uid = await object_uid(kube, QPOL, NAME)

    failing = NodeWorker(
        cluster.node_js_url,
        QUEUE,
        major=MAJOR,
        prefix=PREFIX,
        fail=[FailRule(OUTAGE, data={"tenant": "acme"})],
        concurrency=JOBS,
        process_ms=HOLD_MS,
    )
    async with failing:
        await async_wait_until(
            lambda: _at_least(owner.llen(f"{k}:active"), JOBS), timeout=30, message="every job active"
        )
        # the dependency dies: the gate goes red and the policy pauses the queue on the slot's primary
        dependency.kill()
        st = await wait_policy(
            kube,
            NAME,
            lambda s: queue_state(s, QUEUE).get("pausedByPolicy"),
            operator=operator,
            what="the queue paused by the policy",
        )
        assert await owner.hget(f"{k}:meta", "paused") == "1"
        # `requeue resume --dry-run` names the holder from the policy's memory in the queue's slot
        res = await acli(
            "resume",
            "--redis-url",
            cluster.url,
            "--queue",
            QUEUE,
            "--prefix",
            PREFIX,
            "--dry-run",
            "-o",
            "json",
        )
        assert res.code == 0, res.output
        assert json.loads(res.stdout)["pausedBy"] == [f"QueuePolicy {uid}"], res.output
        outage_started = _ms(st["outageStartedAt"])
        finals = await failing.wait_for_final(ids, timeout_s=60)
    assert {f.outcome for f in finals.values()} == {"failed"}
    failed_at = [int(await owner.hget(f"{k}:{i}", "finishedOn") or 0) for i in ids]
    assert min(failed_at) >= outage_started, "the jobs failed before the outage began: raise HOLD_MS"

    # it comes back: the queue resumes, then one child DLQReplay replays what failed in the outage
    dependency.restart()
    child = await wait_auto_replay(kube, NAME, operator=operator)
    done = await wait_finished(
        kube,
        child,
        operator=operator,
        timeout=60,
        what="the child replay finished",
    )
    assert (done["phase"], done["matched"], done["replayed"]) == ("Succeeded", JOBS, JOBS), done
    st = await wait_policy(
        kube, NAME, lambda s: not queue_state(s, QUEUE).get("paused"), operator=operator, what="resumed"
    )
    assert not await owner.hexists(f"{k}:meta", "paused")
    child_uid = await object_uid(kube, DLQR, child)
    seen = await in_redis(owner, f"{PREFIX}:{child_uid}", queue=QUEUE, prefix=PREFIX)
    check_exactly_once(seen, ids, selected=set(ids), what="auto replay on a cluster")

    # every key of the policy is in the queue's slot, on its primary, and on no other primary
    slot = key_slot(PREFIX.encode())
    memory, budget = f"requeue:policy:{PREFIX}:{uid}:memory", f"requeue:policy:{PREFIX}:{uid}:replays"
    assert {key_slot(memory.encode()), key_slot(budget.encode())} == {slot}
    assert QUEUE in await owner.hkeys(memory)
    assert await owner.hgetall(budget) == dict.fromkeys(ids, "1")  # each job charged once
    assert await _policy_keys_elsewhere(cluster, uid) == []

    # Node BullMQ runs each replayed job once; the policy then cleans the completed ones
    async with NodeWorker(cluster.node_js_url, QUEUE, major=MAJOR, prefix=PREFIX) as worker:
        outcomes = await worker.wait_for_final(ids)
    assert {i for i, o in outcomes.items() if o.outcome == "completed"} == set(ids)
    assert sorted(p.id for p in worker.processed) == sorted(ids)
    await async_wait_until(
        lambda: _none_left(owner, f"{k}:completed"), timeout=30, message="the completed jobs cleaned"
    )
    assert await owner.exists(*(f"{k}:{i}" for i in ids)) == 0
    assert cluster.password not in operator.logs()


async def _at_least(count: Any, n: int) -> bool | None:
    return True if int(await count) >= n else None


async def _none_left(client: aredis.Redis, key: str) -> bool | None:
    return True if await client.zcard(key) == 0 else None


async def _policy_keys_elsewhere(cluster: RedisCluster, uid: str) -> list[str]:
    """Keys naming the policy on the primaries that do not serve ``{bull}``."""
    owner = cluster.owner_of(PREFIX)
    found: list[str] = []
    for node in cluster.nodes:
        if node is owner or not node.running:
            continue
        client = aredis.Redis(
            host=node.host, port=node.port, password=cluster.password, decode_responses=True
        )
        try:
            if (await client.info("replication"))["role"] != "master":
                continue
            found += [key async for key in client.scan_iter(match=f"requeue:*{uid}*", count=1000)]
        finally:
            await client.aclose()
    return found


async def test_a_policy_whose_queues_are_in_two_slots_is_refused_by_name(
    kube: Kube, operator_factory: Any, cluster: RedisCluster
) -> None:
    """Hash tags in the queue names (prefix without one) put the queues in two slots: the policy
    says HashTagRequired in Ready, rather than failing with CROSSSLOT or MOVED later."""
    await apply(kube, secret("redis", {"url": cluster.url}))
    operator = operator_factory(operator_command())
    await apply(kube, policy("two-slots", ["{a}", "{b}"], prefix="bull", interval="1s"))
    st = await wait_policy(
        kube,
        "two-slots",
        lambda s: condition(s, "Ready").get("reason") == "HashTagRequired",
        operator=operator,
        what="Ready=False HashTagRequired",
    )
    assert condition(st, "Ready")["status"] == "False"
    assert "{bull}" in condition(st, "Ready")["message"]
