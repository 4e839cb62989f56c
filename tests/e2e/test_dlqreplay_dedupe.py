"""``selector.dedupeBy`` end to end through kubectl: a DLQReplay and a QueuePolicy's auto replay each
move only the newest failed copy of an order; the others stay failed and are counted in the status,
by order, and in the ``Selected`` Event. The API server refuses dedupeBy with mode Bulk and a path
outside the subset."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from bullmq import Job, Queue

from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker, wait_in_set
from support.dlqreplay import events, operator_command, replay, secret, wait_finished, wait_status_async
from support.kube import Kube
from support.queuepolicy import (
    DLQR,
    apply,
    apply_until_green,
    auto_replay,
    gated_policy,
    gates,
    wait_auto_replay,
    wait_policy,
    with_a_redis_gate,
)

pytestmark = pytest.mark.e2e

#: order -> copies in the dead-letter set (the producer retried)
COPIES = {"o-1": 3, "o-2": 1, "o-3": 2, "o-4": 4}


def copies() -> list[JobSpec]:
    out = []
    for round_ in range(max(COPIES.values())):
        for order, n in COPIES.items():
            if round_ < n:
                out.append(
                    JobSpec("order.charge", {"orderId": order, "attempt": round_}, reason="502 Bad Gateway")
                )
    return out


async def newest(r: aioredis.Redis, queue: str, ids: set[str]) -> list[str]:
    """Per orderId, the last of ``ids`` in the failed set's order."""
    kept: dict[str, str] = {}
    for job_id in await r.zrange(f"bull:{queue}:failed", 0, -1):
        if job_id in ids:
            kept[json.loads(await r.hget(f"bull:{queue}:{job_id}", "data") or "{}")["orderId"]] = job_id
    return sorted(kept.values())


async def test_a_dlqreplay_with_dedupe_by_moves_the_newest_copy_of_each_order(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, "default", copies())
    kept = await newest(redis_client, "default", set(ids))
    duplicates = len(ids) - len(kept)
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())

    await apply(
        kube, replay("orders", "default", selector={"dedupeBy": "$.orderId", "jobNames": ["order.*"]})
    )
    st = await wait_status_async(
        kube, "orders", lambda s: s.get("phase") == "Succeeded", operator=operator, what="the replay's end"
    )

    assert (st["matched"], st["replayed"], st["duplicates"]) == (len(COPIES), len(COPIES), duplicates)
    assert st["breakdown"]["duplicatesByKey"] == {"o-4": 3, "o-1": 2, "o-3": 1}
    assert sorted(await redis_client.lrange("bull:default:wait", 0, -1)) == kept
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(set(ids) - set(kept))
    shown = (
        await asyncio.to_thread(kube.kubectl, "get", "dlqr", "orders", "-o", "jsonpath={.status.duplicates}")
    ).stdout
    assert shown == str(duplicates)
    selected = [
        e["message"] for e in await asyncio.to_thread(events, kube, "orders") if e["reason"] == "Selected"
    ]
    assert selected and f"{duplicates} duplicates left failed (dedupeBy $.orderId)" in selected[0]
    async with run_worker(redis_url, "default") as worker:
        await worker.wait_for(len(kept))
    assert sorted(worker.processed_ids) == kept


def _manifest(**spec: Any) -> str:
    return yaml.safe_dump(replay("refused", "default", **spec))


def test_the_api_server_refuses_dedupe_by_with_bulk_and_a_path_outside_the_subset(kube: Kube) -> None:
    bulk = kube.kubectl(
        "apply", "-f", "-", input=_manifest(mode="Bulk", selector={"dedupeBy": "$.orderId"}), check=False
    )
    assert bulk.returncode != 0
    assert "selector.dedupeBy needs mode Exact" in bulk.stderr
    wildcard = kube.kubectl(
        "apply", "-f", "-", input=_manifest(selector={"dedupeBy": "$.items[*]"}), check=False
    )
    assert wildcard.returncode != 0
    assert "dedupeBy must be a JSON path made of $ and .name or [index] steps" in wildcard.stderr
    kube.kubectl("apply", "-f", "-", input=_manifest(selector={"dedupeBy": "$.order.items[0].sku"}))
    out = kube.kubectl("explain", "dlqr.spec.selector.dedupeBy").stdout
    assert "only the newest" in out


async def test_a_queue_policy_auto_replay_passes_dedupe_by_to_its_child(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis, redis_factory: Any
) -> None:
    gate = await with_a_redis_gate(kube, redis_url, redis_factory)
    operator = operator_factory(operator_command())
    auto = auto_replay({"jobsPerSecond": 200, "batchSize": 50}, selector={"dedupeBy": "$.orderId"})
    await apply_until_green(
        kube, gated_policy("orders", ["default"], actions={"autoReplay": auto}), operator=operator
    )

    down = True
    q = Queue("default", {"connection": redis_url})
    async with run_worker(
        redis_url, "default", fail_when=lambda job: "ECONNREFUSED" if down else None
    ) as worker:
        gate.kill()
        await wait_policy(kube, "orders", lambda s: gates(s) == "False", operator=operator, what="the outage")
        ids: list[str] = []
        for job in copies():  # one add at a time: a producer retrying while the outage lasts
            added: Job = await q.add(job.name, job.data)
            ids.append(str(added.id))
        await wait_in_set(redis_url, "bull:default:failed", ids)
        kept = await newest(redis_client, "default", set(ids))

        down = False
        gate.restart()
        child = await wait_auto_replay(kube, "orders", operator=operator, what="the auto replay")
        obj = await asyncio.to_thread(kube.get, DLQR, child)
        assert obj is not None and obj["spec"]["selector"]["dedupeBy"] == "$.orderId"
        done = await wait_finished(
            kube,
            child,
            operator=operator,
            timeout=40,
            what="the child's end",
        )
        assert done["phase"] == "Succeeded", done
        assert (done["matched"], done["replayed"], done["duplicates"]) == (
            len(COPIES),
            len(COPIES),
            len(ids) - len(COPIES),
        )
        await worker.wait_for(len(ids) + len(kept))
    await q.close()
    assert sorted(worker.completed) == kept  # each order sent once more: its newest copy
    assert sorted(await redis_client.zrange("bull:default:failed", 0, -1)) == sorted(set(ids) - set(kept))
