"""Every kind of BullMQ job in the failed set, replayed with ``requeue replay`` (the CLI).

Node BullMQ 5 and 6 arrange real failed jobs (flows, deduplicated jobs, job schedulers,
priority, LIFO, backoff, a 1 MB payload); ``requeue replay`` replays them by id; a Node worker
of the same major then runs them. Where BullMQ's own ``Job.retry`` is the reference, the same
arrangement is made twice in one test, one copy retried by Node, the other replayed by requeue,
and the states compared.

What they show (BullMQ 5.81 and 6.7): requeue moves each kind through BullMQ's own
``reprocessJob``/``moveJobsToWait``, which put a flow child back among its parent's open
dependencies exactly as ``Job.retry`` does. Two consequences of BullMQ's design, not of
requeue's, are asserted so nobody is surprised: a ``failParentOnFailure`` parent stays failed
when its child is replayed, and a deduplicated job's id is free once it failed, so a replay does
not deduplicate a new add with that id. The one deliberate difference: BullMQ 5's ``Job.retry``
drops a job's priority, requeue keeps it (BullMQ 6's script, which BullMQ 5 workers read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from support.cli import acli, write_manifest
from support.node import MAJORS, FailRule, NodeWorker, run_node_script, run_producer

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


async def flow(
    redis_url: str, queue: str, major: int, children: list[dict[str, Any]]
) -> tuple[str, list[str]]:
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


async def members(redis: aredis.Redis, key: str, kind: str = "zset") -> list[str]:
    """A zset's members in order, a list's items, a set's members or a hash's fields, as str."""
    if kind == "zset":
        raw: Any = await redis.zrange(key, 0, -1)
    elif kind == "list":
        raw = await redis.lrange(key, 0, -1)
    elif kind == "set":
        raw = sorted(await redis.smembers(key))
    else:
        raw = await redis.hkeys(key)
    return [str(x) for x in raw]


async def parent_links(redis: aredis.Redis, k: str, parent: str, roles: dict[str, str]) -> dict[str, Any]:
    """Where the parent holds its children (by role): open, processed, failed/ignored, unsuccessful."""

    def role(key: str) -> str:
        return roles[key.rsplit(":", 1)[1]]

    pk = f"{k}:{parent}"
    return {
        "dependencies": sorted(role(x) for x in await members(redis, f"{pk}:dependencies", "set")),
        "processed": sorted(role(x) for x in await members(redis, f"{pk}:processed", "hash")),
        "failed": sorted(role(x) for x in await members(redis, f"{pk}:failed", "hash")),
        "unsuccessful": sorted(role(x) for x in await members(redis, f"{pk}:unsuccessful")),
    }


async def retried_flow(
    redis_url: str,
    redis: aredis.Redis,
    tmp_path: Path,
    *,
    major: int,
    qname: str,
    child_opts: dict[str, Any],
    by: str,
) -> list[dict[str, Any]]:
    """A parent with one healthy child and one failing child (``child_opts``); after the first
    worker run the failing child is retried ``by`` "node" (``Job.retry``) or "requeue"
    (``requeue replay``), then a healthy worker runs. Returns what a user sees (states by role
    and the parent's links) after the failure, after the retry and after the second run."""
    parent, (ok_child, bad_child) = await flow(
        redis_url,
        qname,
        major,
        [
            {"name": "child", "data": {"n": 1}},
            {"name": "child", "data": {"n": 2, "fail": True}, "opts": child_opts},
        ],
    )
    roles = {parent: "parent", ok_child: "ok_child", bad_child: "bad_child"}
    k = f"bull:{qname}"

    async def seen() -> dict[str, Any]:
        by_id = await states(redis_url, qname, major, list(roles))
        return {
            "states": {roles[i]: s for i, s in by_id.items()},
            "links": await parent_links(redis, k, parent, roles),
            "failed_set": sorted(roles[i] for i in await members(redis, f"{k}:failed")),
        }

    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_MARKED) as worker:
        await worker.wait_for_final([ok_child, bad_child])
        if child_opts.get("ignoreDependencyOnFailure"):
            await worker.wait_for_final([parent])  # the parent goes on without the child
    after_failure = await seen()

    if by == "node":
        out = await kinds(redis_url, qname, major, "retry", ids=[bad_child])
        assert out["results"] == {bad_child: "ok"}
    else:
        status = await replay(redis_url, qname, [bad_child], tmp_path)
        assert (status["phase"], status["replayed"]) == ("Succeeded", 1), status
    after_retry = await seen()

    async with NodeWorker(redis_url, qname, major=major) as worker:
        await worker.wait_for_final([bad_child])
        if after_retry["states"]["parent"] == "waiting-children":
            await worker.wait_for_final([parent])
    return [after_failure, after_retry, await seen()]


@pytest.mark.parametrize("major", MAJORS)
@pytest.mark.parametrize("option", ["failParentOnFailure", "ignoreDependencyOnFailure"])
async def test_flow_child_option_replay_matches_bullmq_job_retry(
    major: int, option: str, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    """The same flow twice: Node's ``Job.retry`` on one, ``requeue replay`` on the other; every
    state a user can see is the same at every step."""
    child_opts = {option: True}
    by_node = await retried_flow(
        redis_url,
        redis_client,
        tmp_path,
        major=major,
        qname=f"{option}-node-{major}",
        child_opts=child_opts,
        by="node",
    )
    by_requeue = await retried_flow(
        redis_url,
        redis_client,
        tmp_path,
        major=major,
        qname=f"{option}-rq-{major}",
        child_opts=child_opts,
        by="requeue",
    )
    assert by_requeue == by_node
    if option == "failParentOnFailure":  # the parent failed with the child; retrying the child
        assert by_node[0]["states"]["parent"] == "failed"  # does not bring the parent back
        assert by_node[2]["states"] == {"parent": "failed", "ok_child": "completed", "bad_child": "completed"}
    else:  # the parent went on without the child and completed; the child runs again alone
        assert by_node[0]["states"]["parent"] == "completed"
        assert by_node[2]["states"] == {
            "parent": "completed",
            "ok_child": "completed",
            "bad_child": "completed",
        }


async def deduplicated_retry(
    redis_url: str, redis: aredis.Redis, tmp_path: Path, *, major: int, qname: str, by: str
) -> dict[str, Any]:
    """A deduplicated job (``deduplication: {id}``) fails, is retried ``by`` "node" or "requeue";
    then the app adds the same deduplication id again while the retried job waits, and once
    more after it completed. Returns what BullMQ did with each later add."""
    k = f"bull:{qname}"
    dedup = {"deduplication": {"id": "otp-4915"}}
    first = str(
        (await kinds(redis_url, qname, major, "add", name="otp", data={"fail": True}, opts=dedup))["id"]
    )
    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_MARKED) as worker:
        await worker.wait_for_final([first])
    key_after_failure = await redis.get(f"{k}:de:otp-4915")

    if by == "node":
        assert (await kinds(redis_url, qname, major, "retry", ids=[first]))["results"] == {first: "ok"}
    else:
        status = await replay(redis_url, qname, [first], tmp_path)
        assert (status["phase"], status["replayed"]) == ("Succeeded", 1), status

    while_waiting = str(
        (await kinds(redis_url, qname, major, "add", name="otp", data={"n": 2}, opts=dedup))["id"]
    )
    wait_list = await members(redis, f"{k}:wait", "list")
    run_ids = [first] if while_waiting == first else [first, while_waiting]
    async with NodeWorker(redis_url, qname, major=major) as worker:
        finals = await worker.wait_for_final(run_ids)
    after = str((await kinds(redis_url, qname, major, "add", name="otp", data={"n": 3}, opts=dedup))["id"])
    again = str((await kinds(redis_url, qname, major, "add", name="otp", data={"n": 4}, opts=dedup))["id"])
    return {
        "key_after_failure": key_after_failure,
        "deduplicated_while_waiting": while_waiting == first,
        "wait_list": ["first" if i == first else "new" for i in wait_list],
        "outcomes": sorted(f.outcome for f in finals.values()),
        "deduplicated_after_completion": after in (first, while_waiting),
        "later_add_deduplicated_by_the_next": again == after,
    }


@pytest.mark.parametrize("major", MAJORS)
async def test_deduplicated_job_replay_keeps_bullmq_deduplication_as_job_retry_does(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    by_node = await deduplicated_retry(
        redis_url, redis_client, tmp_path, major=major, qname=f"dedup-node-{major}", by="node"
    )
    by_requeue = await deduplicated_retry(
        redis_url, redis_client, tmp_path, major=major, qname=f"dedup-rq-{major}", by="requeue"
    )
    assert by_requeue == by_node
    # What BullMQ does, and so what requeue does: the failure deleted the deduplication key
    # (BullMQ frees the id when a job finishes), and a retry does not set it again; so an add
    # with the same id while the retried job waits is NOT deduplicated: both run. Later jobs
    # are deduplicated among themselves as before (the id is BullMQ's again).
    assert by_node == {
        "key_after_failure": None,
        "deduplicated_while_waiting": False,
        "wait_list": ["new", "first"],
        "outcomes": ["completed", "completed"],
        "deduplicated_after_completion": False,
        "later_add_deduplicated_by_the_next": True,
    }


@pytest.mark.parametrize("major", MAJORS)
async def test_failed_job_scheduler_runs_replay_and_the_scheduler_keeps_producing(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    qname = f"sched-{major}"
    k = f"bull:{qname}"
    await kinds(
        redis_url,
        qname,
        major,
        "scheduler",
        schedulerId="digest-every-300ms",
        repeat={"every": 300},
        name="digest",
        data={"fail": True},
    )
    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_MARKED) as worker:
        await worker.wait_for(2, timeout_s=30)
    failed = await members(redis_client, f"{k}:failed")
    assert len(failed) >= 2 and all(i.startswith("repeat:digest-every-300ms:") for i in failed), failed

    status = await replay(redis_url, qname, failed, tmp_path)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", len(failed), len(failed))
    assert await redis_client.zcard(f"{k}:failed") == 0

    # healthy again: the replayed runs complete once each, and the scheduler goes on adding runs
    async with NodeWorker(redis_url, qname, major=major) as worker:
        finals = await worker.wait_for_final(failed)
        await worker.wait_for(len(failed) + 2, timeout_s=30)
    assert all(finals[i].outcome == "completed" for i in failed)
    runs = [p.id for p in worker.processed]
    assert sorted(i for i in runs if i in failed) == sorted(failed)  # each replayed run once
    fresh = [p for p in worker.processed if p.id not in failed]
    assert len(fresh) >= 2 and all(p.outcome == "completed" and p.name == "digest" for p in fresh)
    assert len(set(runs)) == len(runs)
    schedulers = (await kinds(redis_url, qname, major, "schedulers"))["ids"]
    assert schedulers == ["digest-every-300ms"]


def big_payload() -> str:
    """1 MiB of text that is not one repeated byte: every BMP range JSON escapes or not."""
    chars = "".join(chr(c) for c in range(0x20, 0x2FF) if chr(c) not in '"\\') + "\u00e4\u20ac\U0001f4e6\n\t"
    out = (chars * (2**20 // len(chars) + 1))[: 2**20]
    return out


OPTION_JOBS: dict[str, dict[str, Any]] = {
    "plain": {},
    "lifo": {"lifo": True},
    "priority5": {"priority": 5},
    "priority1": {"priority": 1},
    "backoff": {"attempts": 2, "backoff": {"type": "fixed", "delay": 50}},
    "plain2": {},
}


async def retried_options(
    redis_url: str, redis: aredis.Redis, tmp_path: Path, *, major: int, qname: str, by: str, blob: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Jobs with each option (and a 1 MiB payload) fail; all are retried ``by`` "node" (``Job.retry``
    in failed-set order) or "requeue"; returns where they landed and the order a worker ran them."""
    specs = [
        {"name": role, "data": {"fail": True, "role": role}, "opts": opts}
        for role, opts in OPTION_JOBS.items()
    ]
    specs.append({"name": "big", "data": {"fail": True, "role": "big", "blob": blob}, "opts": {}})
    ids = await run_producer(redis_url, qname, specs, major=major)
    roles = {i: str(s["name"]) for i, s in zip(ids, specs, strict=True)}
    k = f"bull:{qname}"
    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_MARKED) as worker:
        finals = await worker.wait_for_final(ids)
    assert all(f.outcome == "failed" for f in finals.values())
    assert finals[next(i for i, r in roles.items() if r == "backoff")].attempts_made == 2
    failed = await members(redis, f"{k}:failed")
    data_before = {roles[i]: str(await redis.hget(f"{k}:{i}", "data")) for i in ids}

    if by == "node":
        out = await kinds(redis_url, qname, major, "retry", ids=failed)
        assert out["results"] == dict.fromkeys(failed, "ok")
    else:
        status = await replay(redis_url, qname, failed, tmp_path)
        assert (status["phase"], status["replayed"]) == ("Succeeded", len(ids)), status
    landed: dict[str, Any] = {
        "failed_order": [roles[i] for i in failed],
        "wait": [roles[i] for i in await members(redis, f"{k}:wait", "list")],
        "prioritized": [roles[i] for i in await members(redis, f"{k}:prioritized")],
        "data_unchanged": {
            roles[i]: str(await redis.hget(f"{k}:{i}", "data")) == data_before[roles[i]] for i in ids
        },
    }
    async with NodeWorker(redis_url, qname, major=major) as worker:
        finals = await worker.wait_for_final(ids)
    landed["ran"] = [roles[p.id] for p in worker.processed]
    landed["outcomes"] = {roles[i]: (f.outcome, f.attempts_made) for i, f in finals.items()}
    ran_data = {roles[i]: f.data for i, f in finals.items()}
    assert ran_data["big"]["blob"] == blob  # the 1 MiB payload reached the worker byte for byte
    return landed, data_before


@pytest.mark.parametrize("major", MAJORS)
async def test_priority_lifo_backoff_and_1mb_jobs_land_where_job_retry_puts_them(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    blob = big_payload()
    by_node, _ = await retried_options(
        redis_url, redis_client, tmp_path, major=major, qname=f"opts-node-{major}", by="node", blob=blob
    )
    by_requeue, data = await retried_options(
        redis_url, redis_client, tmp_path, major=major, qname=f"opts-rq-{major}", by="requeue", blob=blob
    )
    # requeue: BullMQ 6's reprocessJob on both majors, so priority jobs go back to
    # prioritized, by priority, behind the plain ones (a worker takes wait first)
    assert by_requeue["prioritized"] == ["priority1", "priority5"]
    priority = {"priority1", "priority5"}
    # each job LPUSHed in failed-set order, the LIFO one RPUSHed: it is the next one taken
    plain = [r for r in by_requeue["failed_order"] if r not in priority and r != "lifo"]
    assert by_requeue["wait"] == [*reversed(plain), "lifo"]
    assert by_requeue["ran"] == ["lifo", *plain, "priority1", "priority5"]
    assert all(by_requeue["data_unchanged"].values())
    assert json.loads(data["big"])["blob"] == blob
    # attempts reset: the backoff job (attempts 2) had a fresh budget and completed first time
    assert by_requeue["outcomes"] == dict.fromkeys(by_requeue["outcomes"], ("completed", 1))
    same = ("wait", "prioritized", "ran", "failed_order")
    assert {k: v for k, v in by_node.items() if k not in same} == {
        k: v for k, v in by_requeue.items() if k not in same
    }
    node_plain = [r for r in by_node["failed_order"] if r not in priority and r != "lifo"]
    if major == 6:  # exactly where Job.retry puts them
        assert by_node["prioritized"] == ["priority1", "priority5"]
        assert by_node["wait"] == [*reversed(node_plain), "lifo"]
    else:
        # BullMQ 5's own Job.retry (reprocessJob-8) drops the priority: its priority jobs go to
        # wait like plain ones. requeue keeps them prioritized (BullMQ 5 workers consume
        # prioritized too); everything else is the same.
        assert by_node["prioritized"] == []
        node_all = [r for r in by_node["failed_order"] if r != "lifo"]
        assert by_node["wait"] == [*reversed(node_all), "lifo"]


@pytest.mark.parametrize("major", MAJORS)
async def test_jobs_job_retry_refuses_are_refused_counted_and_named(
    major: int, redis_url: str, redis_client: aredis.Redis, tmp_path: Path
) -> None:
    """A completed job, an id with no job, and a flow parent waiting for its failed child:
    BullMQ's ``Job.retry`` refuses each; ``requeue replay`` leaves each alone too, counts it in
    ``notFailed``, names it in ``notFailedIds`` and moves only the failed one."""
    qname = f"refuse-{major}"
    k = f"bull:{qname}"
    failed_id, completed_id = await run_producer(
        redis_url,
        qname,
        [{"name": "a", "data": {"fail": True}, "opts": {}}, {"name": "b", "data": {}, "opts": {}}],
        major=major,
    )
    parent, (child,) = await flow(redis_url, qname, major, [{"name": "c", "data": {"fail": True}}])
    async with NodeWorker(redis_url, qname, major=major, fail=FAIL_MARKED) as worker:
        await worker.wait_for_final([failed_id, completed_id, child])
    assert await states(redis_url, qname, major, [parent, completed_id]) == {
        parent: "waiting-children",
        completed_id: "completed",
    }
    refused = [completed_id, "no-such-job", parent]

    by_node = (await kinds(redis_url, qname, major, "retry", ids=refused))["results"]
    assert by_node[completed_id] == f"Job {completed_id} is not in the failed state. reprocessJob"
    assert by_node[parent] == f"Job {parent} is not in the failed state. reprocessJob"
    assert by_node["no-such-job"] == "no such job"  # Job.fromId finds nothing to retry

    status = await replay(redis_url, qname, [failed_id, *refused], tmp_path)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", 1, 1)
    assert status["notFailed"] == 3
    assert sorted(status["notFailedIds"]) == sorted(refused)
    assert await members(redis_client, f"{k}:wait", "list") == [failed_id]
    assert await states(redis_url, qname, major, [parent, completed_id, child]) == {
        parent: "waiting-children",
        completed_id: "completed",
        child: "failed",
    }
