"""Every kind of BullMQ job in the failed set, replayed with ``requeue replay`` (the CLI).

Node BullMQ 5 and 6 arrange real failed jobs (flows, deduplicated jobs, job schedulers,
priority, LIFO, backoff, a 1 MB payload); ``requeue replay`` replays them by id; a Node worker
of the same major then runs them. Where BullMQ's own ``Job.retry`` is the reference, the same
arrangement is made twice in one test, one copy retried by Node, the other replayed by requeue,
and the states compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from support.cli import acli, write_manifest
from support.node import MAJORS, FailRule, NodeWorker, run_node_script

pytestmark = pytest.mark.interop

BROKEN = "downstream 503"
FAIL_MARKED = [FailRule(BROKEN, data={"fail": True})]


async def kinds(redis_url: str, queue: str, major: int, action: str, **args: Any) -> dict[str, Any]:
    """One action of ``tests/interop/kinds.mjs``; its single JSON line."""
    lines = await run_node_script(
        "kinds.mjs", {"redisUrl": redis_url, "queue": queue, "action": action, **args}, major=major
    )
    assert len(lines) == 1, lines
    return lines[0]


async def states(redis_url: str, queue: str, major: int, ids: list[str]) -> dict[str, str]:
    out: dict[str, str] = (await kinds(redis_url, queue, major, "states", ids=ids))["states"]
    return out


async def replay(redis_url: str, queue: str, ids: list[str], tmp_path: Path) -> dict[str, Any]:
    """``requeue replay`` of exactly ``ids`` (Exact mode, attempts reset); its JSON status."""
    manifest = write_manifest(
        tmp_path / f"{queue}.yaml",
        {"queue": queue, "selector": {"jobIds": ids}, "resetAttempts": True},
    )
    res = await acli("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}", "-o", "json")
    assert res.code == 0, res.output
    status: dict[str, Any] = json.loads(res.stdout)
    return status


async def flow(redis_url: str, queue: str, major: int, children: list[dict[str, Any]]) -> tuple[str, list[str]]:
    out = await kinds(redis_url, queue, major, "flow", children=children)
    return str(out["parent"]), [str(c) for c in out["children"]]


@pytest.mark.parametrize("major", MAJORS)
async def test_failed_flow_child_replayed_then_parent_completes(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    qname = f"flow-{major}"
    parent, children = await flow(
        redis_url,
        qname,
        major,
        [{"name": "child", "data": {"n": 1}}, {"name": "child", "data": {"n": 2, "fail": True}}],
    )
    ok_child, bad_child = children
    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_MARKED) as worker:
        finals = await worker.wait_for_final(children)
    assert (finals[ok_child].outcome, finals[bad_child].outcome) == ("completed", "failed")
    assert await states(redis_url, qname, major, [parent, bad_child]) == {
        parent: "waiting-children",
        bad_child: "failed",
    }

    status = await replay(redis_url, qname, [bad_child], tmp_path)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", 1, 1)
    # back among the parent's open dependencies, as BullMQ's own retry puts it
    assert await redis_client.smembers(f"bull:{qname}:{parent}:dependencies") == {f"bull:{qname}:{bad_child}"}

    async with NodeWorker(redis_url, qname, major=major) as worker:
        finals = await worker.wait_for_final([bad_child, parent])
    assert (finals[bad_child].outcome, finals[parent].outcome) == ("completed", "completed")
    assert [p.id for p in worker.processed] == [bad_child, parent]
