"""A job's log lines (``job.log()`` in a Node BullMQ worker) travel with it: ``requeue export``
writes them on the job's line (the newest ``--log-lines``, a cut marked ``logsCut``) and
restores an uncut list byte for byte; ``requeue clean --archive-dsn`` stores them in the row's
``logs`` column, adds that column to a table made by the previous version, and a line logged
between the archive and the removal keeps the round's jobs in Redis.

Real Node BullMQ 6 workers log then fail; the machine's Postgres.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from requeue.api.archive import ArchiveSpec
from requeue.policy.archive import ArchiveDestination, archived_clean
from requeue.queues import BullQueue, QueueKeys, connect
from requeue.queues.export import restore_fields, restore_logs
from requeue.secrets import StaticSecrets
from support import async_wait_until
from support.cli import acli
from support.node import FailRule, NodeWorker, run_producer

pytestmark = pytest.mark.interop

MAJOR = 6
Q = "notify"
K = QueueKeys("bull", Q)
#: Lines a person would log: text with a newline, a JSON-looking line, non-ASCII, JS line breaks.
LINES = ["connecting to smtp", 'payload {"to": "+4915"}\nsecond line', "héllo ✓ \u2028 sep", "x" * 5000]

#: The table requeue created before the ``logs`` column existed (verbatim).
PREVIOUS_TABLE = (
    "CREATE TABLE {} ("
    " prefix text NOT NULL, queue text NOT NULL, job_id text NOT NULL,"
    " job_timestamp bigint NOT NULL, state text NOT NULL, name text,"
    " failed_reason text, finished_at timestamptz, corrupt text, data jsonb,"
    " fields jsonb NOT NULL, raw_fields jsonb,"
    " archived_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (prefix, queue, job_id, job_timestamp))"
)


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    name = f"archive_logs_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


async def fail_with_logs(redis_url: str, client: aioredis.Redis) -> dict[str, str]:
    """Jobs failed by a Node worker that logged first: kind -> job id."""
    jobs = [
        {"name": "mail.send", "data": {"kind": "few"}, "opts": {}},
        {"name": "mail.send", "data": {"kind": "many"}, "opts": {}},
        {"name": "mail.send", "data": {"kind": "none"}, "opts": {}},
    ]
    ids = await run_producer(redis_url, Q, jobs, major=MAJOR)
    rules = [
        FailRule("SMTP 421", data={"kind": "few"}, logs=LINES),
        FailRule("SMTP 421", data={"kind": "many"}, log_lines=1500),
        FailRule("SMTP 421", data={"kind": "none"}),
    ]
    async with NodeWorker(redis_url, Q, major=MAJOR, fail=rules):
        await async_wait_until(
            lambda: _failed(client, 3), timeout=120, message="the three jobs failed by the Node worker"
        )
    return dict(zip(("few", "many", "none"), ids, strict=True))


async def _failed(client: aioredis.Redis, n: int) -> bool:
    return int(await client.zcard(K.failed)) >= n


async def raw_list(redis_url: str, key: str) -> list[bytes]:
    raw = aioredis.Redis.from_url(redis_url)  # undecoded: the bytes as stored
    try:
        return [v if isinstance(v, bytes) else v.encode() for v in await raw.lrange(key, 0, -1)]
    finally:
        await raw.aclose()


def lines_of(stdout: str) -> dict[str, dict[str, Any]]:
    return {rec["id"]: rec for rec in map(json.loads, stdout.splitlines())}


@pytest.mark.timeout(300)
async def test_export_writes_each_jobs_logs_and_restores_them_exactly(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await fail_with_logs(redis_url, redis_client)
    # a line that is not UTF-8 (written by hand: Node writes text): kept as base64
    await redis_client.rpush(K.logs(ids["none"]), b"\xff\x00 not text")

    res = await acli("export", "--redis-url", redis_url, "--queue", Q, "--state", "failed")

    assert res.code == 0, res.stderr
    got = lines_of(res.stdout)
    few, many, odd = got[ids["few"]], got[ids["many"]], got[ids["none"]]
    assert few["logs"] == LINES and few["logsTotal"] == 4 and few["logsCut"] is None
    assert restore_logs(few) == await raw_list(redis_url, K.logs(ids["few"]))
    assert restore_fields(few)[b"failedReason"] == b"SMTP 421"
    # 1500 lines: the newest 1000 kept, in order, and the cut said on the line and on stderr
    assert many["logsTotal"] == 1500 and many["logs"] == [
        f"line {k} of {ids['many']}" for k in range(500, 1500)
    ]
    assert many["logsCut"] == (
        "kept the newest 1000 of 1500 log lines (at most 1000 lines and 1048576 bytes per job)"
    )
    with pytest.raises(ValueError, match="cannot be restored"):
        restore_logs(many)
    assert "the logs of 1 jobs were cut to their newest lines" in res.stderr
    assert odd["logs"] == [None] and odd["rawLogs"] == {"0": "/wAgbm90IHRleHQ="}
    assert restore_logs(odd) == [b"\xff\x00 not text"]

    fewer = await acli(
        "export", "--redis-url", redis_url, "--queue", Q, "--state", "failed", "--log-lines", "2"
    )
    assert fewer.code == 0, fewer.stderr
    cut = lines_of(fewer.stdout)[ids["few"]]
    assert cut["logs"] == LINES[-2:] and cut["logsTotal"] == 4
    assert cut["logsCut"] == "kept the newest 2 of 4 log lines (at most 2 lines and 1048576 bytes per job)"


@pytest.mark.timeout(300)
async def test_archive_stores_the_logs_and_migrates_the_previous_table(
    redis_url: str, redis_client: aioredis.Redis, pg_dsn: str, table: str
) -> None:
    ids = await fail_with_logs(redis_url, redis_client)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the previous version's table and a row
        conn.execute(PREVIOUS_TABLE.format(table))
        conn.execute(
            f"INSERT INTO {table} (prefix, queue, job_id, job_timestamp, state, fields) "
            "VALUES ('bull', 'old', '1', 1, 'failed', '{}')"
        )

    res = await acli(
        "clean", "--redis-url", redis_url, "--queue", Q, "--state", "failed", "--grace", "0s",
        "--archive-dsn", pg_dsn, "--archive-table", table, "-o", "json",
    )  # fmt: skip

    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["removed"] == 3
    with psycopg.connect(pg_dsn) as conn:
        got: dict[str, Any] = dict(
            conn.execute(f"SELECT job_id, logs FROM {table} WHERE queue = %s", (Q,)).fetchall()
        )
        old = conn.execute(f"SELECT logs FROM {table} WHERE queue = 'old'").fetchall()
    assert old == [(None,)]  # the previous version's row, kept
    assert got[ids["few"]] == {"lines": LINES, "raw": {}, "total": 4, "cut": None}
    assert got[ids["none"]] is None
    many = got[ids["many"]]
    assert many["total"] == 1500 and many["lines"] == [f"line {k} of {ids['many']}" for k in range(500, 1500)]
    assert many["cut"].startswith("kept the newest 1000 of 1500 log lines")
    for job_id in ids.values():  # removeJob took the logs with the job
        assert not await redis_client.exists(K.job(job_id), K.logs(job_id))


class LoggingMeanwhile(ArchiveDestination):
    """The real table, while the job's worker appends a log line (as BullMQ's addLog: RPUSH) between
    the archive's write and its removal."""

    def __init__(self, *args: Any, client: aioredis.Redis, job_id: str) -> None:
        super().__init__(*args)
        self.client, self.job_id, self.logged = client, job_id, False

    async def write(self, chunks: list[list[tuple[Any, ...]]]) -> int:
        written = await super().write(chunks)
        if not self.logged:
            await self.client.rpush(K.logs(self.job_id), "one more line")
            self.logged = True
        return written


@pytest.mark.timeout(300)
async def test_a_line_logged_between_archive_and_removal_keeps_the_round_and_is_archived_next(
    redis_url: str, redis_client: aioredis.Redis, pg_dsn: str, table: str
) -> None:
    ids = await fail_with_logs(redis_url, redis_client)
    spec = ArchiveSpec.model_validate(
        {"dsnSecretRef": {"name": "pg", "key": "dsn"}, "table": table, "batchSize": 10}
    )
    secrets = StaticSecrets({("pg", "dsn"): pg_dsn})
    client = await connect(redis_url)
    try:
        done = await archived_clean(
            BullQueue(client, Q),
            "failed",
            cutoff_ms=10**13,
            limit=100,
            archive=spec,
            secrets=secrets,
            destination=LoggingMeanwhile(spec, secrets, client=redis_client, job_id=ids["few"]),
        )
    finally:
        await client.aclose()
    # the first round's EXEC aborted (a log list it watched changed); the next archived the new line
    assert done.aborted == 1 and done.removed == 3
    with psycopg.connect(pg_dsn) as conn:
        [(logs,)] = conn.execute(f"SELECT logs FROM {table} WHERE job_id = %s", (ids["few"],)).fetchall()
    assert logs["lines"] == [*LINES, "one more line"] and logs["total"] == 5


@pytest.mark.timeout(300)
async def test_a_user_who_may_not_alter_the_previous_table_is_told_the_statement_and_nothing_goes(
    redis_url: str, redis_client: aioredis.Redis, pg_dsn: str, table: str
) -> None:
    ids = await fail_with_logs(redis_url, redis_client)
    role = f"archiver_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the table is the owner's; the role writes
        conn.execute(PREVIOUS_TABLE.format(table))
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {role}")
    dsn = f"host=127.0.0.1 port=5432 dbname=test user={role}"
    args = (
        "clean", "--redis-url", redis_url, "--queue", Q, "--state", "failed", "--grace", "0s",
        "--archive-dsn", dsn, "--archive-table", table, "-o", "json",
    )  # fmt: skip
    try:
        refused = await acli(*args)
        assert refused.code == 1, refused.output
        error = json.loads(refused.stdout)["error"]
        assert error["reason"] == "ArchiveFailed"
        assert error["message"] == (
            f"archive table {table} has no logs column (added by this version of requeue) and this "
            f'user may not add it: run ALTER TABLE "{table}" ADD COLUMN logs jsonb as its owner; '
            "nothing was removed"
        )
        assert await redis_client.zcard(K.failed) == 3
        assert all([await redis_client.exists(K.logs(ids[k])) for k in ("few", "many")])

        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the owner runs what it said
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN logs jsonb')
        done = await acli(*args)
        assert done.code == 0, done.output
        assert json.loads(done.stdout)["removed"] == 3
        with psycopg.connect(pg_dsn) as conn:
            [(logs,)] = conn.execute(f"SELECT logs FROM {table} WHERE job_id = %s", (ids["few"],)).fetchall()
        assert logs["lines"] == LINES
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
            conn.execute(f"DROP ROLE IF EXISTS {role}")
