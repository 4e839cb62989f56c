"""QueuePolicy end to end: duplicate waiting jobs, through the operator, kubectl and /metrics.

kubectl -> emulator <- `requeue run` (a subprocess); real redis-server and a real Node BullMQ
producer that adds one order twice (same ``orderId``, no ``jobId``), plus a job id pushed into
``wait`` a second time by hand. No worker runs, so the jobs stay waiting.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from support.kube import Kube
from support.node import run_producer
from support.queuepolicy import (
    apply,
    evaluations,
    kubectl,
    metric,
    operator_with_metrics,
    policy,
    policy_events,
    queue_state,
    scrape,
    wait_policy,
)

pytestmark = pytest.mark.e2e


async def test_duplicates_are_in_status_an_event_and_a_gauge_that_goes_with_the_policy(
    kube: Kube, operator_factory: Any, redis_url: str, redis_client: aioredis.Redis
) -> None:
    operator, port = await operator_with_metrics(kube, operator_factory, redis_url)
    orders = ["A-1", "A-2", "A-1", "A-3"]
    ids = await run_producer(
        redis_url, "orders", [{"name": "order.create", "data": {"orderId": o}} for o in orders], major=6
    )
    await redis_client.lpush("bull:orders:wait", ids[3])

    await apply(
        kube,
        policy("dupes", ["orders"], interval="1s", duplicates={"businessKey": "$.orderId", "maxJobs": 100}),
    )
    st = await wait_policy(
        kube,
        "dupes",
        lambda s: (queue_state(s, "orders").get("duplicates") or {}).get("scanned") == 5,
        operator=operator,
        what="duplicates read",
    )
    dup = queue_state(st, "orders")["duplicates"]
    assert dup["ids"] == 1 and dup["sampleIds"] == [ids[3]], dup
    assert dup["businessKeys"] == 1, dup
    assert dup["sampleKeys"] == [{"key": '"A-1"', "jobs": 2, "jobIds": [ids[2], ids[0]]}], dup
    out = await kubectl(
        kube, "get", "queuepolicy", "dupes", "-o", "jsonpath={.status.queues[0].duplicates.ids}"
    )
    assert out == "1"

    await evaluations(kube, "dupes", 2, operator=operator)
    warnings = [e for e in await policy_events(kube, "dupes") if e["reason"] == "DuplicateJobs"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert "1 job ids listed more than once" in warnings[0]["message"]

    text = await scrape(port)
    labels = {"namespace": "default", "policy": "dupes", "queue": "orders"}
    assert metric(text, "bullmq_queue_duplicate_jobs", **labels, kind="id") == 1
    assert metric(text, "bullmq_queue_duplicate_jobs", **labels, kind="business_key") == 1

    await kubectl(kube, "delete", "queuepolicy", "dupes", "--timeout=60s")
    text = await scrape(port)
    assert metric(text, "bullmq_queue_duplicate_jobs", policy="dupes") is None


def test_a_business_key_outside_the_path_subset_is_refused_by_the_api_server(kube: Kube) -> None:
    bad = policy("bad-key", ["orders"], duplicates={"businessKey": "$..orderId"})
    result = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert "businessKey must be a JSON path" in result.stderr
