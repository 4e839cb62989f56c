"""``selector.dedupeBy`` against Node.js BullMQ 5 and 6: a dead-letter set holding the same order
several times (the producer retried) is replayed once per order.

Node producers add several copies of each order, a Node worker fails them all, and
``requeue replay`` with ``dedupeBy: $.orderId`` moves exactly the newest failed copy of each
order (the others stay failed and are counted, by order, in the dry run and the status); a
Node worker then sends each order once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from support.cli import acli, keyspace, write_manifest
from support.node import MAJORS, FailRule, NodeWorker, run_producer

pytestmark = pytest.mark.interop

DOWN = "502 Bad Gateway from the payment provider"
#: order -> how many copies the producer sent (its retries): 1 to 4
COPIES = {"o-1": 1, "o-2": 2, "o-3": 3, "o-4": 4, "o-5": 2, "o-6": 1}


def jobs() -> list[dict[str, Any]]:
    """The copies interleaved as a retrying producer sends them, plus jobs the selector must treat
    otherwise: two without an orderId (not deduplicated) and copies of another tenant (not matched)."""
    out: list[dict[str, Any]] = []
    for round_ in range(max(COPIES.values())):
        for order, n in COPIES.items():
            if round_ < n:
                data = {"orderId": order, "tenant": "acme", "attempt": round_}
                out.append(
                    {"name": "order.charge", "data": data, "opts": {"priority": 3} if round_ == 2 else {}}
                )
    out.append({"name": "order.charge", "data": {"tenant": "acme", "note": "no order id"}, "opts": {}})
    out.append({"name": "order.charge", "data": {"tenant": "acme", "orderId": None}, "opts": {}})
    for _ in range(2):
        out.append({"name": "order.charge", "data": {"orderId": "o-1", "tenant": "globex"}, "opts": {}})
    return out


async def newest_per_order(r: aredis.Redis, qname: str, tenant: str = "acme") -> tuple[list[str], list[str]]:
    """(kept, duplicates) as the definition says, read from the failed set's own order: per orderId,
    the last member; jobs without one are all kept."""
    kept: dict[str, str] = {}
    no_key: list[str] = []
    every: list[str] = []
    for job_id in [str(i) for i in await r.zrange(f"bull:{qname}:failed", 0, -1)]:
        data = json.loads(await r.hget(f"bull:{qname}:{job_id}", "data") or "{}")
        if data.get("tenant") != tenant:
            continue
        every.append(job_id)
        if data.get("orderId") is None:
            no_key.append(job_id)
        else:
            kept[data["orderId"]] = job_id
    keep = set(kept.values()) | set(no_key)
    return sorted(keep), sorted(i for i in every if i not in keep)


@pytest.mark.parametrize("major", MAJORS)
async def test_dedupe_by_replays_the_newest_copy_of_each_order_and_node_sends_each_once(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    qname = f"orders-{major}"
    specs = jobs()
    ids = await run_producer(redis_url, qname, specs, major=major)
    async with NodeWorker(redis_url, qname, major=major, fail=[FailRule(DOWN, name="order.charge")]) as w:
        finals = await w.wait_for_final(ids)
    assert all(f.outcome == "failed" for f in finals.values())
    kept, duplicates = await newest_per_order(redis_client, qname)
    assert len(kept) == len(COPIES) + 2 and len(duplicates) == sum(COPIES.values()) - len(COPIES)
    spec = {
        "queue": qname,
        "selector": {"dedupeBy": "$.orderId", "dataMatch": {"tenant": "acme"}, "failedReasonPattern": "502"},
        "rate": {"jobsPerSecond": 1000, "batchSize": 3},
    }
    secret = ("--secret", f"redis/url={redis_url}")

    # the dry run names the duplicates by order and moves nothing
    dry = write_manifest(tmp_path / "dry.yaml", {**spec, "dryRun": True}, name="orders-dry")
    before = keyspace(redis_url)
    res = await acli("replay", "-f", str(dry), *secret, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["matched"], status["duplicates"], status["noDedupeKey"]) == (len(kept), len(duplicates), 2)
    expected_by_order = {order: n - 1 for order, n in COPIES.items() if n > 1}
    assert status["breakdown"]["duplicatesByKey"] == expected_by_order
    assert keyspace(redis_url) == before  # nothing moved, and the dedupe keys are gone too
    text_res = await acli("replay", "-f", str(dry), *secret)
    assert text_res.code == 0, text_res.output
    assert (
        f"duplicates that would stay failed (an older copy of a newer failed job): {len(duplicates)}"
        in text_res.stdout
    )
    assert "duplicates by dedupeBy value:" in text_res.stdout
    assert "o-4" in text_res.stdout

    # the replay moves exactly the newest copy of each order (and each job without an orderId)
    run = write_manifest(tmp_path / "run.yaml", spec, name="orders")
    res = await acli("replay", "-f", str(run), *secret, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", len(kept), len(kept))
    assert (status["duplicates"], status["noDedupeKey"]) == (len(duplicates), 2)
    waiting = [
        *await redis_client.lrange(f"bull:{qname}:wait", 0, -1),
        *await redis_client.zrange(f"bull:{qname}:prioritized", 0, -1),
    ]
    assert sorted(waiting) == kept
    failed_now = set(await redis_client.zrange(f"bull:{qname}:failed", 0, -1))
    other_tenant = {i for i, s in zip(ids, specs, strict=True) if s["data"].get("tenant") == "globex"}
    assert failed_now == set(duplicates) | other_tenant

    # a Node worker sends each order once: its newest copy
    async with NodeWorker(redis_url, qname, major=major) as worker:
        outcomes = await worker.wait_for_final(kept)
    assert all(o.outcome == "completed" for o in outcomes.values())
    assert sorted(p.id for p in worker.processed) == kept
    orders = Counter(p.data.get("orderId") for p in worker.processed if p.data.get("orderId"))
    assert orders == Counter({order: 1 for order in COPIES})
