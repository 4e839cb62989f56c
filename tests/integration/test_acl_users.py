"""The README's least-privilege Redis ACL users, created from the README's own lines, run their
jobs; a user missing one right fails with ``Forbidden`` naming it, never a traceback.

The lines are read from README.md ("Redis ACL users"), so the documentation and this test
cannot drift: a new command in requeue's code or Lua fails here until the README grants it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from requeue.api.base import find_condition
from requeue.api.conditions import PolicyCondition
from requeue.api.gates import GateStatus, GateType
from requeue.api.policy import QueuePolicySpec
from requeue.policy.budget import ReplayBudget
from requeue.policy.evaluate import BullQueueOps, PolicyRef, evaluate
from requeue.queues import BullQueue, QueueKeys, ReplayKeys
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import CliResult, acli, write_manifest
from support.redis_server import RedisServer

README = Path(__file__).resolve().parents[2] / "README.md"
Q = "default"
K = QueueKeys("bull", Q)
POLICY = PolicyRef(namespace="visapi", name="visapi-queues", uid="acl-uid", generation=1)
#: ``ACL SETUSER NAME ... >PASSWORD ...``: the user's name and password.
_USER = re.compile(r"^ACL SETUSER (\S+) .*?>(\S+)")


def readme_acl_lines() -> dict[str, str]:
    """The ``ACL SETUSER`` lines of the README's "Redis ACL users" block, by user name."""
    text = README.read_text()
    section = text[text.index("### Redis ACL users") :]
    block = section[section.index("```\n") + 4 :]
    block = block[: block.index("```")]
    lines = {m.group(1): line for line in block.splitlines() if (m := _USER.match(line))}
    assert set(lines) == {"requeue-inspect", "requeue-replay", "requeue-policy"}, lines
    return lines


class AclRedis:
    """A redis-server of this test's own, with the README's users created on it."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.admin = redis.Redis(host=server.host, port=server.port, decode_responses=True)
        self.lines = readme_acl_lines()

    def create(self, user: str, *, without: str | None = None) -> str:
        """Run the README's line for ``user`` (less the command or ``~pattern`` ``without``); the
        URL that logs in as it."""
        args = shlex.split(self.lines[user])
        if without is not None:
            right = without if without.startswith("~") else f"+{without}"
            assert right in args, f"the README's {user} line grants no {right}"
            args.remove(right)
        self.admin.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        password = _USER.match(self.lines[user]).group(2)  # type: ignore[union-attr]
        return f"redis://{user}:{password}@{self.server.host}:{self.server.port}/0"


@pytest.fixture
def acl(redis_factory: Callable[..., RedisServer]) -> Iterator[AclRedis]:
    server = AclRedis(redis_factory())
    try:
        yield server
    finally:
        server.admin.close()


def jobs(n: int) -> list[JobSpec]:
    """Failed jobs, some prioritized (BullMQ moves those into another key)."""
    return [
        JobSpec(
            "whatsapp.send",
            {"i": i},
            reason="429 Too Many Requests",
            opts={"priority": 2} if i % 3 == 0 else {},
        )
        for i in range(n)
    ]


def gates(healthy: bool) -> list[GateStatus]:
    return [GateStatus(name="db", type=GateType.HTTP, healthy=healthy, message="checked")]


def policy_spec() -> QueuePolicySpec:
    return QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": [Q, "other"],
            "interval": "10s",
            "thresholds": {"failed": 2},
            "gates": [{"name": "db", "http": {"url": "http://127.0.0.1:1/"}}],
            "actions": {"pauseWhileGatesFail": True},
        }
    )


def assert_forbidden(res: CliResult, names: str) -> None:
    """Exit 3, reason Forbidden, the message naming ``names``, and no traceback."""
    assert res.code == 3, res.output
    assert "Forbidden" in res.output and names in res.output, res.output
    assert "Traceback" not in res.output and "replay-password" not in res.output


async def test_each_readme_user_runs_its_job(acl: AclRedis, tmp_path: Path) -> None:
    ids = await make_failed_jobs(acl.server.url, Q, jobs(9))
    await make_failed_jobs(acl.server.url, "other", jobs(1))
    manifest = write_manifest(tmp_path / "replay.yaml", {"rate": {"jobsPerSecond": 1000, "batchSize": 4}})

    inspect_url = acl.create("requeue-inspect")
    res = await acli("inspect", "--redis-url", inspect_url, "--queue", Q, "-o", "json")
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["counts"]["failed"] == 9
    for one in (("--job", ids[1]), ("--name", "whatsapp.send")):
        res = await acli("inspect", "--redis-url", inspect_url, "--queue", Q, *one, "-o", "json")
        assert res.code == 0, res.output

    replay_url = acl.create("requeue-replay")
    res = await acli("replay", "-f", str(manifest), "--redis-url", replay_url, "--dry-run", "-o", "json")
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["matched"] == 9
    assert acl.admin.zcard(K.failed) == 9
    res = await acli("replay", "-f", str(manifest), "--redis-url", replay_url, "-o", "json")
    assert res.code == 0, res.output
    assert acl.admin.zcard(K.failed) == 0
    assert sorted([*acl.admin.lrange(K.wait, 0, -1), *acl.admin.zrange(K.prioritized, 0, -1)]) == sorted(ids)
    res = await acli("inspect", "--redis-url", inspect_url, "--queue", Q, "--job", ids[1], "-o", "json")
    assert res.code == 0 and json.loads(res.stdout)["state"] == "waiting", res.output

    as_replay = aioredis.Redis.from_url(replay_url, decode_responses=True)
    try:  # the budget a policy's auto replays are charged to runs with the replay user's rights
        budget = ReplayBudget(f"requeue:policy:{POLICY.uid}:replays", 1)
        assert await budget.take(as_replay, "r1", ["1", "2"]) == ["1", "2"]
        assert await budget.take(as_replay, "r2", ["1"]) == []
    finally:
        await as_replay.aclose()

    as_policy = aioredis.Redis.from_url(acl.create("requeue-policy"), decode_responses=True)
    try:
        ops, spec = BullQueueOps(as_policy), policy_spec()
        red = await evaluate(POLICY, spec, None, redis=as_policy, ops=ops, gates=gates(False))
        assert await BullQueue(as_policy, Q).is_paused()
        green = await evaluate(
            POLICY, spec, red.status, redis=as_policy, ops=ops, gates=gates(True), memory=red.memory
        )
    finally:
        await as_policy.aclose()
    ready = find_condition(green.status.conditions, PolicyCondition.READY)
    assert ready is not None and ready.status == "True", ready
    healthy = find_condition(green.status.conditions, PolicyCondition.HEALTHY)
    assert healthy is not None and healthy.reason == "WithinThresholds", healthy
    assert sorted(
        (a.action, a.queue, a.result) for a in green.status.last_actions if a.action in ("Pause", "Resume")
    ) == [
        ("Pause", Q, "paused"),
        ("Pause", "other", "paused"),
        ("Resume", Q, "resumed"),
        ("Resume", "other", "resumed"),
    ]


async def test_the_read_only_user_cannot_dry_run_and_is_told_which_command(
    acl: AclRedis,
    tmp_path: Path,
) -> None:
    await make_failed_jobs(acl.server.url, Q, jobs(3))
    manifest = write_manifest(tmp_path / "replay.yaml", {})
    res = await acli("replay", "-f", str(manifest), "--redis-url", acl.create("requeue-inspect"), "--dry-run")
    assert_forbidden(res, "may not use ")
    assert re.search(
        r"may not use (the command [A-Z]+|a command inside the Lua script \w+ \(one of: )", res.output
    ), res.output


async def test_a_replay_user_missing_a_command_is_forbidden_naming_it(acl: AclRedis, tmp_path: Path) -> None:
    await make_failed_jobs(acl.server.url, Q, jobs(3))
    manifest = write_manifest(tmp_path / "replay.yaml", {})
    url = acl.create("requeue-replay", without="hgetall")  # a command requeue calls itself
    res = await acli("replay", "-f", str(manifest), "--redis-url", url, "-o", "json")
    assert_forbidden(res, "may not use the command HGETALL")

    url = acl.create("requeue-replay", without="xadd")  # only BullMQ's scripts call it
    res = await acli("replay", "-f", str(manifest), "--redis-url", url)
    assert_forbidden(res, "may not use a command inside the Lua script ")
    script = r"the Lua script (reprocessJob|moveJobsToWait) \(one of: [A-Z, ]*XADD"
    assert re.search(script, res.output), res.output
    assert acl.admin.zcard(K.failed) == 3

    url = acl.create("requeue-replay", without="~requeue:*")  # requeue's own state
    res = await acli("replay", "-f", str(manifest), "--redis-url", url)
    assert_forbidden(res, "a key outside the user's key patterns")
    assert acl.admin.zcard(K.failed) == 3


async def test_a_policy_user_missing_a_command_is_not_ready_forbidden(acl: AclRedis) -> None:
    await make_failed_jobs(acl.server.url, Q, jobs(3))
    as_policy = aioredis.Redis.from_url(acl.create("requeue-policy", without="zcard"), decode_responses=True)
    try:
        result = await evaluate(
            POLICY,
            policy_spec(),
            None,
            redis=as_policy,
            ops=BullQueueOps(as_policy),
            gates=gates(True),
            now=datetime.now(UTC),
        )
    finally:
        await as_policy.aclose()
    ready = find_condition(result.status.conditions, PolicyCondition.READY)
    assert ready is not None and (ready.status, ready.reason) == ("False", "Forbidden"), ready
    assert "ZCARD" in ready.message


def assert_queue_not_found(res: CliResult, listing: str) -> None:
    """Exit 2, reason QueueNotFound (the typo is what to fix), ``listing`` in the message."""
    assert res.code == 2, res.output
    assert "QueueNotFound" in res.output and "Forbidden" not in res.output, res.output
    assert listing in res.output and "Traceback" not in res.output, res.output


async def test_a_mistyped_queue_is_not_found_for_the_readme_users(acl: AclRedis, tmp_path: Path) -> None:
    await make_failed_jobs(acl.server.url, Q, jobs(2))
    inspect_url = acl.create("requeue-inspect")
    res = await acli("inspect", "--redis-url", inspect_url, "--queue", "defualt", "-o", "json")
    assert_queue_not_found(res, "queues there: default")

    typo = write_manifest(tmp_path / "typo.yaml", {"queue": "defualt"})
    replay_url = acl.create("requeue-replay")
    res = await acli("replay", "-f", str(typo), "--redis-url", replay_url, "-o", "json")
    assert_queue_not_found(res, "queues there: default")
    assert acl.admin.zcard(K.failed) == 2

    # a user granted less than the README: still QueueNotFound, only the listing is missing
    url = acl.create("requeue-inspect", without="scan")
    res = await acli("inspect", "--redis-url", url, "--queue", "defualt", "-o", "json")
    assert_queue_not_found(res, "cannot list the queues there: this user may not SCAN")


async def test_replays_list_and_forget_with_the_readme_users(acl: AclRedis, tmp_path: Path) -> None:
    await make_failed_jobs(acl.server.url, Q, jobs(3))
    manifest = write_manifest(tmp_path / "replay.yaml", {"rate": {"jobsPerSecond": 1000, "batchSize": 4}})
    replay_url = acl.create("requeue-replay")
    res = await acli("replay", "-f", str(manifest), "--redis-url", replay_url, "-o", "json")
    assert res.code == 0, res.output
    # another replay of another queue running now: list reads the lease naming it
    acl.admin.hset(ReplayKeys("cli-ops-other").progress, mapping={"stage": "replaying", "queue": "other"})
    acl.admin.set(QueueKeys("bull", "other").lease, "cli-ops-other ops/other token elsewhere:1", px=60_000)

    res = await acli("replays", "list", "--redis-url", acl.create("requeue-inspect"), "-o", "json")
    assert res.code == 0, res.output
    listed = {r["id"]: r for r in json.loads(res.stdout)["replays"]}
    assert listed["cli-ops-other"]["phase"] == "Running"
    [done] = [r for r in listed.values() if r["id"] != "cli-ops-other"]
    assert done["phase"] == "Succeeded" and done["expiresInSeconds"] > 0, done

    res = await acli("replays", "forget", done["id"], "--redis-url", replay_url, "-o", "json")
    assert res.code == 0, res.output
    assert acl.admin.exists(*ReplayKeys(done["id"]).all()) == 0
    res = await acli("replays", "forget", "cli-ops-other", "--redis-url", replay_url, "-o", "json")
    assert res.code == 2 and json.loads(res.stdout)["error"]["reason"] == "ReplayRunning", res.output


async def test_the_readme_users_run_duplicates_escalation_export_and_an_archiving_clean(
    acl: AclRedis, tmp_path: Path, pg_dsn: str
) -> None:
    """The features that read more than counts, each with exactly the README's rights: a policy
    with ``duplicates.businessKey``, an escalation snapshot and the conditions failedJobNames and
    corruptJobs, ``inspect --duplicates`` and
    ``export`` as the read-only user, and a clean that archives to Postgres as the policy user."""
    await make_failed_jobs(acl.server.url, Q, jobs(4))
    acl.admin.lpush(K.wait, "dup-1", "dup-1")
    acl.admin.hset(K.job("dup-1"), mapping={"name": "x", "data": '{"orderId": 7}', "timestamp": "1"})

    inspect_url = acl.create("requeue-inspect")
    res = await acli("inspect", "--redis-url", inspect_url, "--queue", Q, "--duplicates",
                     "--business-key", "$.orderId", "-o", "json")  # fmt: skip
    assert res.code == 0, res.output
    res = await acli("export", "--redis-url", inspect_url, "--queue", Q, "--state", "failed")
    assert res.code == 0, res.output
    assert len(res.stdout.splitlines()) == 4

    spec = QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": [Q],
            "interval": "10s",
            "duplicates": {"businessKey": "$.orderId"},
            "escalation": {
                "levels": [
                    {
                        "name": "L1",
                        "holdFor": "0s",
                        "when": {
                            "any": [
                                {"failed": {"above": 1}},
                                {"failedJobNames": {"atLeast": 5}},
                                {"corruptJobs": {"above": 0}},
                            ]
                        },
                        "actions": {"snapshot": True, "sampleSize": 2},
                    }
                ]
            },
        }
    )
    as_policy = aioredis.Redis.from_url(acl.create("requeue-policy"), decode_responses=True)
    try:
        result = await evaluate(POLICY, spec, None, redis=as_policy, ops=BullQueueOps(as_policy), gates=[])
    finally:
        await as_policy.aclose()
    assert [e for e in result.events if e.type == "Warning" and "Forbidden" in e.message] == []
    assert result.status.queues, [(c.type, c.reason, c.message) for c in result.status.conditions]
    queue = result.status.queues[0]
    assert queue.duplicates is not None and queue.duplicates.ids == 1, queue.duplicates
    esc = result.status.escalation
    assert esc is not None and esc.snapshot is not None and esc.snapshot.failed_sample, esc
    assert len(esc.snapshot.failed_sample[0].ids) == 2
    # failedJobNames and corruptJobs read the failed jobs' hashes (hmget, hstrlen, zscore)
    assert queue.failed_job_names is not None and queue.corrupt_jobs is not None
    assert queue.corrupt_jobs.checked == 4 and queue.corrupt_jobs.found == 0, queue.corrupt_jobs

    table = f"acl_archive_{datetime.now(UTC).strftime('%H%M%S%f')}"
    policy_url = acl.create("requeue-policy")
    res = await acli("clean", "--redis-url", policy_url, "--queue", Q, "--state", "failed", "--grace", "0s",
                     "--archive-dsn", pg_dsn, "--archive-table", table, "-o", "json")  # fmt: skip
    try:
        assert res.code == 0, res.output
        assert json.loads(res.stdout)["archived"] == 4 and acl.admin.zcard(K.failed) == 0
    finally:
        import psycopg

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
