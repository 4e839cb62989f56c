"""Deleting a QueuePolicy while its auto replay runs: the runbook's "abort" step, done with kubectl.

An on-call engineer removes a policy mid-replay (wrong selector, wrong moment).
Kubernetes' garbage collector (the emulator's, here) deletes the child DLQReplay
the policy owns; the child's finalizer stops the replay. What must hold: nothing
is replayed after the delete returns and the child is gone, every job is either
done once or still failed (none lost, none twice), no queue is left paused, and
no lease or snapshot is left behind in Redis.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Queue

from requeue.queues.keys import QueueKeys
from support.bullmq_jobs import run_worker, wait_in_set, worker_waiting
from support.dlqreplay import operator_command, wait_gone_async, wait_status_async
from support.kube import Kube
from support.queuepolicy import (
    DLQR,
    apply_until_green,
    auto_replay,
    gated_policy,
    gates,
    kubectl,
    object_uid,
    wait_auto_replay,
    wait_policy,
    with_a_redis_gate,
)

pytestmark = pytest.mark.e2e

JOBS = 40


async def test_deleting_a_policy_mid_replay_stops_its_child_and_loses_nothing(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    redis_factory: Any,
) -> None:
    gate = await with_a_redis_gate(kube, redis_url, redis_factory)
    operator = operator_factory(operator_command())
    # slow on purpose: 2 jobs a second, so the delete lands mid-replay
    slow = auto_replay({"jobsPerSecond": 2, "batchSize": 1})
    manifest = gated_policy("visapi-queues", ["default"], actions={"autoReplay": slow})
    await apply_until_green(kube, manifest, operator=operator)

    down = True
    q = Queue("default", {"connection": redis_url})
    async with run_worker(
        redis_url, "default", fail_when=lambda job: "ECONNREFUSED cache:6379" if down else None
    ) as worker:
        gate.kill()
        await wait_policy(
            kube, "visapi-queues", lambda s: gates(s) == "False", operator=operator, what="the outage"
        )
        jobs = await q.addBulk([{"name": "whatsapp.send", "data": {"i": i}} for i in range(JOBS)])
        ids = [str(j.id) for j in jobs]
        await wait_in_set(redis_url, "bull:default:failed", ids)
        down = False
        gate.restart()
        child = await wait_auto_replay(kube, "visapi-queues", operator=operator)
        running = await wait_status_async(
            kube,
            child,
            lambda s: (s.get("replayed") or 0) >= 2,
            operator=operator,
            timeout=40,
            what="child mid-replay",
        )
        replay_uid = await object_uid(kube, DLQR, child)
        assert running["phase"] == "Replaying" and running["matched"] == JOBS, running

        # kubectl delete waits for the policy's finalizer; the collector then takes the child
        await kubectl(kube, "delete", "queuepolicy", "visapi-queues", "--timeout=60s")
        await wait_gone_async(kube, child, operator=operator, timeout=30)

        # nothing moves any more: every move is fenced by the queue's lease, and the child's
        # finalizer released it (nothing else holds it), so the failed set holds steady
        assert await redis_client.get(QueueKeys("bull", "default").lease) is None
        left = await redis_client.zcard("bull:default:failed")
        await worker_waiting(redis_client, "default")  # the worker ran what had been moved
        assert await redis_client.zcard("bull:default:failed") == left
        assert 0 < left < JOBS, left
        await worker.wait_for(JOBS + (JOBS - left))

    await q.close()
    # every job exactly once: done (replayed before the delete) or still failed (never replayed)
    failed_now = {str(m) for m in await redis_client.zrange("bull:default:failed", 0, -1)}
    completed = set(worker.completed)
    assert completed | failed_now == set(ids) and not completed & failed_now
    assert len(worker.completed) == len(completed) == JOBS - left  # none ran twice
    # nothing left behind: queue running, lease released, the replay's keys dropped
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert not await redis_client.exists("requeue:lease:bull:default")
    leftovers = [k async for k in redis_client.scan_iter(match=f"requeue:replay:{replay_uid}:*")]
    assert leftovers == []
    listed = await kubectl(kube, "get", "dlqr,qpol", "-o", "name")
    assert listed.strip() == ""
