"""QueuePolicy end to end: pause while a gate is red, resume when green, auto replay after the outage.

The dependencies are things the test controls: the real Postgres behind a TCP
proxy the test drops, and a redis-server of the test's own that it kills and
restarts. Workers are real BullMQ workers; the auto replays are real child
DLQReplays run by the same operator.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from bullmq import Job, Queue

from support import async_wait_until
from support.bullmq_jobs import JobSpec, create_queues, make_failed_jobs, run_worker, wait_in_set
from support.dlqreplay import operator_command, secret, wait_finished
from support.kube import Kube
from support.queuepolicy import (
    DLQR,
    FAST_GATES,
    QPOL,
    apply,
    apply_until_green,
    auto_replay,
    condition,
    evaluations,
    gated_policy,
    gates,
    kubectl,
    metric,
    object_uid,
    policy,
    policy_events,
    queue_state,
    scrape,
    wait_auto_replay,
    wait_policy,
    with_a_redis_gate,
)
from support.redis_server import free_port

pytestmark = pytest.mark.e2e


async def test_gate_red_pauses_green_resumes_never_a_queue_paused_by_others(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    pg_dsn: str,
    proxy_factory: Any,
) -> None:
    proxy = await proxy_factory("127.0.0.1", 5432)
    await create_queues(redis_url, "default")  # the app's queue: exists, nothing in it
    bulk = Queue("bulk", {"connection": redis_url})
    await bulk.pause()  # someone else paused it
    await bulk.close()
    await apply(kube, secret("redis", {"url": redis_url}))
    await apply(kube, secret("db", {"dsn": f"postgresql://postgres@127.0.0.1:{proxy.port}/test"}))
    operator = operator_factory(operator_command())
    st = await apply_until_green(
        kube,
        policy(
            "visapi-queues",
            ["default", "bulk"],
            interval="1s",
            gates=[
                {
                    "name": "database",
                    "postgres": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "timeout": "1s"},
                }
            ],
            gatePolicy=FAST_GATES,
            actions={"pauseWhileGatesFail": True},
        ),
        operator=operator,
        ready=True,
    )
    assert st.get("gatesGreenSince")
    assert queue_state(st, "bulk")["paused"] is True and queue_state(st, "bulk")["pausedByPolicy"] is False

    # the database goes away: requeue pauses `default` (and leaves `bulk` as it is)
    await proxy.drop()
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: queue_state(s, "default").get("pausedByPolicy"),
        operator=operator,
        what="default paused by the policy",
    )
    assert await redis_client.hexists("bull:default:meta", "paused")
    assert condition(st, "GatesPassed")["status"] == "False"
    assert "gatesGreenSince" not in st, st  # removed by the merge patch's explicit null
    assert st.get("outageStartedAt")
    assert queue_state(st, "bulk")["pausedByPolicy"] is False
    pause = next(a for a in st["lastActions"] if a["action"] == "Pause")
    assert pause["queue"] == "default" and pause["result"] == "paused" and pause["dryRun"] is False
    reasons = [e["reason"] for e in await policy_events(kube, "visapi-queues")]
    assert "GatesFailed" in reasons and "QueuePaused" in reasons, reasons

    # back: `default` resumes, `bulk` stays paused by whoever paused it
    await proxy.passthrough()
    st = await wait_policy(
        kube,
        "visapi-queues",
        lambda s: gates(s) == "True" and not queue_state(s, "default").get("paused"),
        operator=operator,
        what="default resumed",
    )
    assert not await redis_client.hexists("bull:default:meta", "paused")
    st = await evaluations(kube, "visapi-queues", 2, operator=operator)
    assert await redis_client.hget("bull:bulk:meta", "paused") == "1"
    assert queue_state(st, "bulk")["paused"] is True
    assert [a["queue"] for a in st["lastActions"] if a["action"] in ("Pause", "Resume")] == ["default"] * 2

    # deleting the policy mid-outage resumes what it paused (finalizer), nothing else
    uid = await object_uid(kube, QPOL, "visapi-queues")
    await proxy.drop()
    await wait_policy(
        kube,
        "visapi-queues",
        lambda s: queue_state(s, "default").get("pausedByPolicy"),
        operator=operator,
        what="paused again",
    )
    assert await redis_client.exists(f"requeue:policy:{uid}:memory")
    await kubectl(kube, "delete", "qpol", "visapi-queues", "--timeout=60s")
    assert await asyncio.to_thread(kube.get, "requeue.dev/v1alpha1/queuepolicies", "visapi-queues") is None
    assert not await redis_client.hexists("bull:default:meta", "paused")
    assert await redis_client.hget("bull:bulk:meta", "paused") == "1"
    assert not await redis_client.exists(f"requeue:policy:{uid}:memory")


async def test_auto_replay_once_per_outage_within_the_per_job_budget(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    redis_factory: Any,
) -> None:
    old = await make_failed_jobs(
        redis_url, "default", [JobSpec("whatsapp.send", {"old": i}) for i in range(3)]
    )
    gate = await with_a_redis_gate(kube, redis_url, redis_factory)
    port = free_port()
    operator = operator_factory(operator_command(metrics_port=port))
    auto = auto_replay({"jobsPerSecond": 200, "batchSize": 50}, maxReplaysPerJob=1)
    manifest = gated_policy("visapi-queues", ["default"], actions={"autoReplay": auto})
    await apply_until_green(kube, manifest, operator=operator)
    uid = await object_uid(kube, QPOL, "visapi-queues")

    down = True
    poison: set[str] = set()

    def verdict(job: Job) -> str | None:
        if str(job.id) in poison:
            return "TypeError: cannot read properties of undefined"
        return "ECONNREFUSED cache:6379" if down else None

    q = Queue("default", {"connection": redis_url})
    async with run_worker(redis_url, "default", fail_when=verdict) as worker:
        # outage 1: the gate goes red, then jobs fail
        gate.kill()
        await wait_policy(
            kube, "visapi-queues", lambda s: gates(s) == "False", operator=operator, what="outage 1"
        )
        jobs = await q.addBulk([{"name": "whatsapp.send", "data": {"i": i}} for i in range(6)])
        first = [str(j.id) for j in jobs]
        poison.update(first[:2])
        await wait_in_set(redis_url, "bull:default:failed", first)

        # recovery: after stableFor, one child DLQReplay replays what failed during the outage
        down = False
        gate.restart()
        child1 = await wait_auto_replay(
            kube, "visapi-queues", operator=operator, what="the first auto replay"
        )
        obj = await asyncio.to_thread(kube.get, DLQR, child1)
        assert obj is not None
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("QueuePolicy", "visapi-queues", uid)
        assert owner["controller"] is True and owner["blockOwnerDeletion"] is True
        assert obj["metadata"]["labels"]["requeue.dev/policy"] == "visapi-queues"
        assert obj["metadata"]["annotations"]["requeue.dev/max-replays-per-job"] == "1"
        assert obj["spec"]["redis"] == {"urlSecretRef": {"name": "redis", "key": "url"}}
        listed = await kubectl(kube, "get", "dlqr", "-l", "requeue.dev/policy=visapi-queues")
        assert child1 in listed
        done1 = await wait_finished(
            kube,
            child1,
            operator=operator,
            timeout=40,
            what="child 1 finished",
        )
        assert done1["phase"] == "Succeeded" and done1["matched"] == done1["replayed"] == 6, done1
        await worker.wait_for(6 + 6)
        assert sorted(worker.completed) == sorted(first[2:])
        # replayed once: no second child for the same outage; the old failures were never touched
        await evaluations(kube, "visapi-queues", 3, operator=operator)
        children = (await asyncio.to_thread(kube.kubectl.json, "get", "dlqr"))["items"]
        assert [c["metadata"]["name"] for c in children] == [child1]
        assert not set(old) & set(worker.processed_ids)

        # outage 2: the two poison jobs fail again (retried by hand), plus two new jobs
        down = True
        gate.kill()
        await wait_policy(
            kube, "visapi-queues", lambda s: gates(s) == "False", operator=operator, what="outage 2"
        )
        for job_id in first[:2]:
            job = await Job.fromId(q, job_id)
            await job.retry("failed")
        jobs = await q.addBulk([{"name": "whatsapp.send", "data": {"i": i}} for i in range(6, 8)])
        second = [str(j.id) for j in jobs]
        await wait_in_set(redis_url, "bull:default:failed", first[:2] + second)
        down = False
        gate.restart()
        child2 = await wait_auto_replay(
            kube, "visapi-queues", after=child1, operator=operator, what="the second auto replay"
        )
        done2 = await wait_finished(
            kube,
            child2,
            operator=operator,
            timeout=40,
            what="child 2 finished",
        )
        # the poison jobs used their one auto replay: only the new jobs are replayed
        assert done2["phase"] == "Succeeded" and done2["matched"] == done2["replayed"] == 2, done2
        # outage 2: 2 poison retried by hand + 2 new jobs fail, then child 2 runs the 2 new ones
        await worker.wait_for(12 + 2 + 2 + 2)
    await q.close()
    # /metrics: the children count under their policy, so outages add no series; finished
    # children drop their requeue_redis_up
    text = await scrape(port)
    assert (
        metric(
            text,
            "requeue_replay_jobs_total",
            namespace="default",
            policy="visapi-queues",
            replay="",
            queue="default",
            outcome="replayed",
        )
        == 6 + 2
    )

    async def children_unlabelled() -> bool:
        text = await scrape(port)
        return not any(f'"{child}"' in text for child in (child1, child2))

    await async_wait_until(children_unlabelled, message="no series names a child replay")
    assert sorted(worker.completed) == sorted(first[2:] + second)
    failed_now = set(await redis_client.zrange("bull:default:failed", 0, -1))
    assert failed_now == set(old) | set(first[:2])
    assert [worker.processed_ids.count(i) for i in first[:2]] == [3, 3]  # fail, child 1, by hand
    budget = await redis_client.hgetall(f"requeue:policy:{uid}:replays")
    assert budget == {**dict.fromkeys(first, "1"), **dict.fromkeys(second, "1")}, budget
    messages = [
        e.get("message", "")
        for e in await asyncio.to_thread(lambda: kube.kubectl.json("get", "events")["items"])
        if e["involvedObject"]["name"] == child2
    ]
    assert any("2 over their auto-replay budget" in m for m in messages), messages
