"""A clean that archives to Postgres first (``requeue clean --archive-dsn``, a QueuePolicy's
``actions.clean.<state>.archive``): against real BullMQ failed jobs and the machine's Postgres.

Each test writes its own table and drops it. The rows are compared with the jobs removed: every
removed job has exactly one row holding its fields as they were; a job whose archive failed
stays in Redis.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from requeue.api.archive import ArchiveSpec
from requeue.api.policy import QueuePolicySpec
from requeue.policy.archive import ArchiveDestination, archive_row, archived_clean
from requeue.policy.evaluate import BullQueueOps, PolicyRef, evaluate
from requeue.queues import BullQueue, QueueKeys, ReprocessResult
from requeue.queues.export import read_jobs
from requeue.secrets import StaticSecrets
from support import wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import acli, keyspace, popen_cli, write_manifest

Q = "orders"
K = QueueKeys("bull", Q)


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    """A table name of this test's own; dropped after it."""
    name = f"archive_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def rows(pg_dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_dsn) as conn:
        return conn.execute(f"SELECT job_id, fields, corrupt, data, state FROM {table}").fetchall()


def hashes(url: str, ids: list[str]) -> dict[str, dict[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {i: {str(k): str(v) for k, v in client.hgetall(K.job(i)).items()} for i in ids}
    finally:
        client.close()


async def seed(redis_url: str, r: aioredis.Redis, n: int) -> list[str]:
    """``n`` real failed jobs (a BullMQ worker failed them), plus two corrupt entries by hand."""
    ids = await make_failed_jobs(
        redis_url,
        Q,
        [JobSpec("whatsapp.send", {"i": i, "to": f"+49{i:08d}"}, reason="429") for i in range(n)],
    )
    await r.hset(K.job("broken"), mapping={"name": "x", "data": "{not json", "timestamp": "7"})
    await r.zadd(K.failed, {"broken": 1, "dangling": 2})  # "dangling": its hash is gone
    return ["broken", "dangling", *ids]


def clean_args(redis_url: str, dsn: str, table: str, *extra: str) -> list[str]:
    return [
        "clean", "--redis-url", redis_url, "--queue", Q, "--state", "failed", "--grace", "0s",
        "--limit", "100000", "--archive-dsn", dsn, "--archive-table", table, *extra,
    ]  # fmt: skip


async def test_clean_killed_mid_run_then_rerun_archives_each_removed_job_once(
    redis_url: str, r: aioredis.Redis, pg_dsn: str, table: str, tmp_path: Path
) -> None:
    ids = await seed(redis_url, r, 1500)
    before = hashes(redis_url, ids)
    # a crash between an archive and its removal, as a killed run leaves it: rows for jobs still in Redis
    pre = ArchiveDestination(
        ArchiveSpec.model_validate({"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": table}),
        StaticSecrets({("pg", "dsn"): pg_dsn}),
    )
    await pre.open()
    try:
        async for jobs in read_jobs(r, K, ids[:40]):
            await pre.write([[archive_row(j, queue=Q, prefix="bull", state="failed") for j in jobs]])
    finally:
        await pre.close()

    proc = popen_cli(
        *clean_args(redis_url, pg_dsn, table, "--archive-batch", "20"), log=tmp_path / "clean.log"
    )
    sync = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: sync.zcard(K.failed) < len(ids) - 200, timeout=60, message="the clean under way")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        left = sync.zcard(K.failed)
    finally:
        sync.close()
        if proc.poll() is None:
            proc.kill()
    assert 0 < left < len(ids), "killed mid-run"

    res = await acli(*clean_args(redis_url, pg_dsn, table, "-o", "json"))
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["removed"] == left
    assert await r.zcard(K.failed) == 0
    assert not [i for i in ids if await r.exists(K.job(i))]

    got = rows(pg_dsn, table)
    assert sorted(row[0] for row in got) == sorted(ids)  # nothing lost, nothing twice
    by_id = {row[0]: row for row in got}
    for job_id in ids:  # each row holds the job's fields as they were, exactly
        assert by_id[job_id][1] == before[job_id], job_id
        assert by_id[job_id][4] == "failed"
    assert by_id["broken"][2] == "job data is not JSON" and by_id["broken"][3] is None
    assert by_id["dangling"][2] == "job hash missing (its id is still in a BullMQ set)"
    assert by_id[ids[5]][2] is None and by_id[ids[5]][3] == json.loads(before[ids[5]]["data"])


async def test_archive_unreachable_or_refused_removes_nothing(
    redis_url: str, r: aioredis.Redis, pg_dsn: str, table: str
) -> None:
    await seed(redis_url, r, 30)
    snapshot = keyspace(redis_url)

    # Postgres unreachable: a port nothing listens on (discard, 9)
    res = await acli(
        *clean_args(redis_url, "postgresql://postgres:s3cr%40t@127.0.0.1:9/test", table, "-o", "json")
    )
    assert res.code == 1, res.output
    error = json.loads(res.stdout)["error"]
    assert error["reason"] == "ArchiveFailed"
    assert "connection refused" in error["message"] and "nothing was removed" in error["message"]
    assert "s3cr" not in res.output
    assert keyspace(redis_url) == snapshot

    # a role that may not write the table
    role = f"noperm_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (prefix text, queue text, job_id text, job_timestamp bigint, "
                     "PRIMARY KEY (prefix, queue, job_id, job_timestamp))")  # fmt: skip
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        dsn = f"host=127.0.0.1 port=5432 dbname=test user={role}"
        res = await acli(*clean_args(redis_url, dsn, table))
        assert res.code == 1, res.output
        assert "ArchiveFailed" in res.stderr and "permission denied" in res.stderr
        assert keyspace(redis_url) == snapshot
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    # an unsafe table name is refused before anything is touched
    res = await acli(*clean_args(redis_url, pg_dsn, 'jobs"; drop table x; --'))
    assert res.code == 2 and "archive" in res.stderr.lower()
    assert keyspace(redis_url) == snapshot


async def test_policy_clean_with_archive(redis_url: str, r: aioredis.Redis, pg_dsn: str, table: str) -> None:
    ids = await seed(redis_url, r, 25)
    before = hashes(redis_url, ids)
    spec = QueuePolicySpec.model_validate(
        {
            "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
            "queues": [Q],
            "actions": {
                "clean": {
                    "failed": {
                        "grace": "0s",
                        "limit": 1000,
                        "archive": {
                            "dsnSecretRef": {"name": "pg", "key": "dsn"},
                            "table": table,
                            "batchSize": 7,
                        },
                    }
                }
            },
        }
    )
    policy = PolicyRef(namespace="shop", name="orders", uid="uid-archive")
    ops = BullQueueOps(r, secrets=StaticSecrets({("pg", "dsn"): pg_dsn}))
    result = await evaluate(policy, spec, None, redis=r, ops=ops)
    assert [(a.action, a.result) for a in result.status.last_actions] == [
        ("Clean", f"archived and removed {len(ids)}")
    ]
    assert await r.zcard(K.failed) == 0
    assert {row[0]: row[1] for row in rows(pg_dsn, table)} == before

    # Postgres refusing: the Clean fails with the reason named, and removes nothing
    await seed(redis_url, r, 5)
    bad = BullQueueOps(r, secrets=StaticSecrets({("pg", "dsn"): "host=127.0.0.1 port=9 dbname=test"}))
    result = await evaluate(policy, spec, result.status, redis=r, ops=bad, memory=result.memory)
    assert await r.zcard(K.failed) == 7
    [failure] = [e for e in result.events if e.reason == "ActionFailed"]
    assert failure.type == "Warning" and failure.message.startswith(f"Clean {Q} failed: archive to postgres")
    assert "connection refused; nothing was removed" in failure.message


class ReplayingMeanwhile(ArchiveDestination):
    """The real archive table, while a BullMQ ``reprocessJob`` (a person retrying a job in Bull
    Board, a replay) moves one of the round's jobs back to wait between the write and the removal."""

    def __init__(self, *args: Any, queue: BullQueue, job_id: str) -> None:
        super().__init__(*args)
        self.queue, self.job_id, self.moved = queue, job_id, False

    async def write(self, chunks: list[list[tuple[Any, ...]]]) -> int:
        written = await super().write(chunks)
        if not self.moved:
            assert await self.queue.replay([self.job_id]) == [ReprocessResult.REPLAYED]
            self.moved = True
        return written


async def test_a_job_that_changes_between_archive_and_removal_is_not_removed(
    redis_url: str, r: aioredis.Redis, pg_dsn: str, table: str
) -> None:
    ids = await make_failed_jobs(redis_url, Q, [JobSpec("pdf.generate", {"i": i}) for i in range(12)])
    spec = ArchiveSpec.model_validate(
        {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": table, "batchSize": 5}
    )
    secrets = StaticSecrets({("pg", "dsn"): pg_dsn})
    bull = BullQueue(r, Q)
    retried = ids[2]
    done = await archived_clean(
        bull,
        "failed",
        cutoff_ms=10**13,
        limit=100,
        archive=spec,
        secrets=secrets,
        destination=ReplayingMeanwhile(spec, secrets, queue=bull, job_id=retried),
    )
    # the first round's EXEC was aborted (the retried job's hash changed): none of its five removed
    # then; the retried job left the failed set, so later rounds never take it
    assert done.aborted == 1 and done.removed == 11
    assert await r.lrange(K.wait, 0, -1) == [retried]  # waiting, not removed
    assert await r.exists(K.job(retried))
    assert await r.zcard(K.failed) == 0
    removed = [i for i in ids if i != retried]
    got = {row[0] for row in rows(pg_dsn, table)}
    assert set(removed) <= got  # every removed job archived; the retried one too (a copy, harmless)


async def test_export_with_a_manifest_selector(redis_url: str, r: aioredis.Redis, tmp_path: Path) -> None:
    sends = await make_failed_jobs(
        redis_url, Q, [JobSpec("whatsapp.send", {"to": i}, reason="429") for i in range(4)]
    )
    await make_failed_jobs(
        redis_url, Q, [JobSpec("email.send", {"to": i}, reason="smtp down") for i in range(3)]
    )
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {"queue": Q, "selector": {"jobNames": ["whatsapp.*"], "dataMatch": {"to": 2}}},
    )
    res = await acli("export", "-f", str(manifest), "--state", "failed", "--secret", f"redis/url={redis_url}")
    assert res.code == 0, res.output
    [line] = [json.loads(x) for x in res.stdout.splitlines()]
    assert line["id"] == sends[2] and line["data"] == {"to": 2} and line["fields"]["failedReason"] == "429"
    assert "exported 1 failed jobs" in res.stderr and "7 scanned" in res.stderr

    res = await acli("export", "-f", str(manifest), "--state", "failed")  # the Secret not given
    assert res.code == 2 and json.loads(res.stdout)["error"]["reason"] == "SecretNotFound"
