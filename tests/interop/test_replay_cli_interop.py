"""``requeue replay`` (the CLI, as a subprocess) against Node.js BullMQ 5 and 6.

Node producers add the jobs, Node workers fail them, ``requeue replay -f``
replays a subset chosen by name + failure reason + dataMatch, and a Node worker
of the same major then completes exactly that subset: name, data, opts and
priority unchanged, attempts reset. This proves that what requeue writes is
valid BullMQ data for the real implementation, not just for our own reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from support.cli import acli, write_manifest
from support.node import MAJORS, FailRule, NodeWorker, get_counts, run_producer

pytestmark = pytest.mark.interop

RATE_LIMITED = "429 Too Many Requests from provider"
INVALID = "invalid phone number"
FAIL_RULES = [  # the first matching rule wins
    FailRule(INVALID, name="whatsapp.send", data={"kind": "invalid"}),
    FailRule(RATE_LIMITED, name="whatsapp.send"),
    FailRule(RATE_LIMITED, name="email.send"),
]
SELECTOR = {"jobNames": ["whatsapp.send"], "failedReasonPattern": "429", "dataMatch": {"tenant": "acme"}}


def jobs() -> list[dict[str, Any]]:
    """16 jobs; the subset is the 6 whatsapp.send of tenant acme that failed with 429."""
    out: list[dict[str, Any]] = []
    for i in range(6):  # the subset: some with priority, some with several attempts, nested data
        opts: dict[str, Any] = {}
        if i % 2 == 0:
            opts["priority"] = 2 + i
        if i % 3 == 0:
            opts["attempts"] = 2
        data = {"i": i, "tenant": "acme", "to": f"+4915{i:07d}", "meta": {"tags": ["otp", i], "x": None}}
        out.append({"name": "whatsapp.send", "data": data, "opts": opts})
    for i in range(3):  # same name and tenant, other reason
        out.append(
            {"name": "whatsapp.send", "data": {"i": 10 + i, "tenant": "acme", "kind": "invalid"}, "opts": {}}
        )
    for i in range(3):  # same name and reason, other tenant
        out.append(
            {"name": "whatsapp.send", "data": {"i": 20 + i, "tenant": "globex"}, "opts": {"priority": 4}}
        )
    for i in range(2):  # same reason and tenant, other name
        out.append({"name": "email.send", "data": {"i": 30 + i, "tenant": "acme"}, "opts": {}})
    for i in range(2):  # completes
        out.append({"name": "report.build", "data": {"i": 40 + i, "tenant": "acme"}, "opts": {}})
    return out


@pytest.mark.parametrize("major", MAJORS)
async def test_cli_replays_a_filtered_subset_that_node_workers_then_complete(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    qname = f"notify-{major}"
    k = f"bull:{qname}"
    specs = jobs()
    ids = await run_producer(redis_url, qname, specs, major=major)
    by_id = dict(zip(ids, specs, strict=True))
    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_RULES) as worker:
        finals = await worker.wait_for_final(ids)
    failed = {i for i, f in finals.items() if f.outcome == "failed"}
    assert len(failed) == 14
    subset = {
        i
        for i in failed
        if by_id[i]["name"] == "whatsapp.send"
        and by_id[i]["data"]["tenant"] == "acme"
        and "kind" not in by_id[i]["data"]
    }
    assert len(subset) == 6
    for i in subset:
        attempts = by_id[i]["opts"].get("attempts", 1)
        assert await redis_client.hget(f"{k}:{i}", "atm") == str(attempts)
    before = {i: await redis_client.hgetall(f"{k}:{i}") for i in subset}

    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {
            "queue": qname,
            "selector": SELECTOR,
            "resetAttempts": True,
            "rate": {"jobsPerSecond": 1000, "batchSize": 4},
        },
    )
    res = await acli("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}", "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", 6, 6)

    # BullMQ's own layout: plain jobs in wait, priority jobs in prioritized by priority
    prioritized = {i for i in subset if by_id[i]["opts"].get("priority")}
    assert set(await redis_client.lrange(f"{k}:wait", 0, -1)) == subset - prioritized
    assert set(await redis_client.zrange(f"{k}:prioritized", 0, -1)) == prioritized
    for i in prioritized:
        score = await redis_client.zscore(f"{k}:prioritized", i)
        assert score is not None and int(score) >> 32 == by_id[i]["opts"]["priority"]
    assert set(await redis_client.zrange(f"{k}:failed", 0, -1)) == failed - subset
    for i in subset:
        after = await redis_client.hgetall(f"{k}:{i}")
        for field in ("name", "data", "opts", "priority", "timestamp"):
            assert after.get(field) == before[i].get(field), (i, field)

    # a Node worker of the same major, failing nothing now, completes exactly the subset, once each
    async with NodeWorker(redis_url, qname, major=major) as worker:
        outcomes = await worker.wait_for_final(subset)
    assert sorted(p.id for p in worker.processed) == sorted(subset)
    for i, outcome in outcomes.items():
        spec = by_id[i]
        assert outcome.outcome == "completed"
        assert outcome.name == spec["name"]
        assert outcome.data == spec["data"]
        for opt, value in spec["opts"].items():
            assert outcome.opts[opt] == value
        assert outcome.attempts_made_before == 0  # resetAttempts: a fresh set of attempts
        assert outcome.attempts_made == 1

    counts, paused = await get_counts(redis_url, qname, major=major)
    assert not paused
    assert counts["failed"] == len(failed) - len(subset)
    assert counts["completed"] == len(ids) - counts["failed"]
    assert counts["waiting"] == counts["prioritized"] == counts["active"] == 0
