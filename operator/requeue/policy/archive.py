"""A clean that keeps what it removes: each job written to a Postgres table, then removed.

``actions.clean.<state>.archive`` of a QueuePolicy, and ``requeue clean --archive-dsn``.
One round, at most ``archive.batchSize`` jobs:

1. The ids BullMQ's ``cleanJobsInSet`` would take (``ZRANGEBYSCORE <state> 0 <cutoff> LIMIT``,
   oldest first).
2. ``WATCH`` their job hashes and log lists on the connection that will remove them; then (on
   another connection) check each id is still in the set at or before the cutoff, and read the
   hashes byte-bounded (:func:`requeue.queues.export.read_jobs`) and each job's log lines (the
   newest 1000 and 1 MiB, as ``requeue export``; a cut list says so in the row).
3. Write them to Postgres in one transaction: ``INSERT ... ON CONFLICT (prefix, queue, job_id,
   job_timestamp) DO UPDATE ... WHERE`` the stored fields differ. Committed, or the round stops
   with :class:`~requeue.errors.ArchiveFailed` and nothing is removed.
4. ``MULTI``, BullMQ's ``removeJob`` for exactly those ids (it deletes their logs too), ``EXEC``.
   A job that changed since step 2 (BullMQ touches a job's hash whenever it leaves ``failed`` or
   ``completed``: a retry, a replay, a removal; ``job.log()`` appends to its log list) aborts the
   EXEC: nothing of that round is removed, and the next round reads it again.

Why ``removeJob`` per id and not ``cleanJobsInSet`` with bounds: ``cleanJobsInSet`` removes the
first ``limit`` members at or before a timestamp as they are when it runs; a job that left the
set between the archive and the clean lets the next unarchived one (same finish time, or next
in order) in. ``removeJob`` removes exactly the ids archived, and the WATCH makes it all or
nothing. (BullMQ then emits ``removed`` events instead of one ``cleaned`` event.)

Exactly once across crashes: a process killed after step 3 leaves rows whose jobs are still
in Redis; the rerun reads the same jobs, the same key makes the insert a no-op, and removes
them. A job that changed between an archive and its removal (step 4 aborted) is written again
when it is finally removed, over its row (the newer failure is what is lost otherwise). One row
per job whatever happens. The table (created when missing)::

    prefix text, queue text, job_id text, job_timestamp bigint,   -- the key
    state text, name text, failed_reason text, finished_at timestamptz,
    corrupt text,            -- why the job is corrupt (missing hash, data not JSON, ...), or NULL
    data jsonb,              -- the data parsed, NULL when not JSON
    fields jsonb,            -- every hash field as its exact text
    raw_fields jsonb,        -- fields that are not UTF-8 text: base64 name -> base64 value
    archived_at timestamptz,
    logs jsonb               -- the job's log lines: {"lines": [...], "raw": {index: base64},
                             --   "total": N, "cut": null or why fewer than N}; NULL: none

A table made by requeue before ``logs`` existed gets the column (``ALTER TABLE ... ADD COLUMN IF
NOT EXISTS``) when the archive opens; a user who may not alter it is told the statement to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from redis import exceptions as rx

from requeue.api.archive import ArchiveSpec
from requeue.api.base import parse_duration
from requeue.errors import ArchiveFailed, RequeueError
from requeue.queues import BullQueue
from requeue.queues.export import (
    NO_LOGS,
    JobLogs,
    LogLimits,
    RawJob,
    add_logs,
    job_record,
    log_lengths,
    read_jobs,
    read_logs,
)
from requeue.redact import encode_userinfo, redact_text, sensitive_parts
from requeue.secrets import SecretSource

__all__ = [
    "ARCHIVE_STATES",
    "ArchiveDestination",
    "ArchivedClean",
    "ArchivingOps",
    "archive_row",
    "archived_clean",
]

#: The sets a clean with archive cleans (BullMQ touches their jobs' hashes on every way out).
ARCHIVE_STATES = ("completed", "failed")
#: Rounds in a row whose removal was aborted (jobs changing under the clean) before it stops.
MAX_ABORTED_ROUNDS = 3

_COLUMNS = (
    "prefix",
    "queue",
    "job_id",
    "job_timestamp",
    "state",
    "name",
    "failed_reason",
    "finished_at",
    "corrupt",
    "data",
    "fields",
    "raw_fields",
    "logs",
)


@dataclass
class ArchivedClean:
    """What one clean with archive did."""

    #: Jobs removed from Redis (each written to Postgres first).
    removed: int = 0
    #: Rows written or found already written (a rerun after a crash finds them).
    archived: int = 0
    #: Rounds whose removal was aborted because a job changed meanwhile.
    aborted: int = 0
    #: Round trips to Redis.
    calls: int = 0


@runtime_checkable
class ArchivingOps(Protocol):
    """Queue operations that can clean with archive (:class:`requeue.policy.BullQueueOps`)."""

    async def clean_archived(
        self, queue: str, state: str, *, grace_ms: int, limit: int, archive: ArchiveSpec
    ) -> ArchivedClean: ...


def _ms_time(value: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(float(value or "")) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _jsonb_safe(value: Any) -> bool:
    """Whether Postgres's jsonb takes ``value`` (it refuses NUL and lone surrogates in strings)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return "\\u0000" not in text


#: How much of a job's log list a row keeps (as ``requeue export``'s default).
ARCHIVE_LOG_LIMITS = LogLimits()


def _logs_json(record: dict[str, Any]) -> Jsonb | None:
    if not record["logsTotal"]:
        return None
    return Jsonb(
        {
            "lines": record["logs"],
            "raw": record["rawLogs"],
            "total": record["logsTotal"],
            "cut": record["logsCut"],
        }
    )


def archive_row(
    job: RawJob, *, queue: str, prefix: str, state: str, logs: JobLogs = NO_LOGS
) -> tuple[Any, ...]:
    """The table row of one job (columns as :data:`_COLUMNS`)."""
    record = add_logs(job_record(job, queue=queue, prefix=prefix, state=state), logs, ARCHIVE_LOG_LIMITS)
    fields = {k.decode(): v.decode() for k, v in (job.fields or {}).items() if _utf8_no_nul(k, v)}
    try:
        timestamp = int(float(fields.get("timestamp") or 0))
    except ValueError:
        timestamp = 0
    data = record.get("data") if record["corrupt"] is None else None
    return (
        prefix,
        queue,
        job.id,
        timestamp,
        state,
        fields.get("name"),
        fields.get("failedReason"),
        _ms_time(fields.get("finishedOn")),
        record["corrupt"],
        Jsonb(data) if data is not None and _jsonb_safe(data) else None,
        Jsonb(fields),
        Jsonb(record["rawFields"]) if record["rawFields"] else None,
        _logs_json(record),
    )


def _utf8_no_nul(*values: bytes) -> bool:
    try:
        return all("\0" not in v.decode("utf-8") for v in values)
    except UnicodeDecodeError:
        return False


class ArchiveDestination:
    """The archive table in Postgres: connect (DSN from a Secret), create it when missing, write."""

    def __init__(self, spec: ArchiveSpec, secrets: SecretSource) -> None:
        self.spec = spec
        self.secrets = secrets
        self.timeout = parse_duration(spec.timeout).total_seconds()
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.hidden: list[str] = []
        self.target = "postgres"
        schema, _, name = spec.table.rpartition(".")
        self.table = sql.Identifier(schema, name) if schema else sql.Identifier(name)

    def _failed(self, what: str, exc: BaseException | None = None) -> ArchiveFailed:
        from requeue.gates.postgres import _connect_failure  # the gate's words for libpq's errors

        detail = ""
        if isinstance(exc, TimeoutError):
            detail = f": no answer within {self.spec.timeout} (timeout)"
        elif isinstance(exc, psycopg.Error) and what == "connect":
            detail = f": {_connect_failure(exc)}"
        elif isinstance(exc, psycopg.Error):
            code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
            detail = f"{code}: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        elif exc is not None:
            detail = f": {type(exc).__name__}: {exc}"
        message = (
            f"archive to {self.target} table {self.spec.table} failed ({what}){detail}; nothing was removed"
        )
        return ArchiveFailed(redact_text(message, self.hidden))

    async def open(self) -> None:
        """Connect and create the table when missing."""
        from requeue.gates.destinations import DestinationDenied, current_policy, pin_postgres
        from requeue.gates.postgres import _describe

        ref = self.spec.dsn_secret_ref
        dsn = encode_userinfo((await self.secrets.get(ref)).strip())
        self.hidden = sensitive_parts(dsn)
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise ArchiveFailed(
                f"the DSN in secret {ref.name}/{ref.key} is not a valid connection string or "
                "postgresql:// URL; nothing was removed"
            ) from None
        self.target = _describe(params)
        try:
            await pin_postgres(current_policy(), params)
        except DestinationDenied as exc:
            raise self._failed(f"destination denied: {exc.message}") from None
        except OSError:
            pass  # not resolvable: connecting says so in its own words
        options = str(params.pop("options", "") or "")
        params["options"] = f"{options} -c statement_timeout={max(1, int(self.timeout * 1000))}".strip()
        params["connect_timeout"] = max(2, math.ceil(self.timeout))
        params.setdefault("application_name", "requeue-archive")
        try:
            async with asyncio.timeout(self.timeout):
                self.conn = await psycopg.AsyncConnection.connect(make_conninfo("", **params))
        except (psycopg.Error, OSError) as exc:
            raise self._failed("connect", exc) from None
        await self._run("create table", self._create)

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create the table when missing; give a table made before the ``logs`` column that column
        (altered only when missing, so a user with INSERT/UPDATE alone keeps working on a table
        already migrated). One transaction: nothing is left open for the writes to nest in."""
        try:
            async with conn.transaction():
                await conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        " prefix text NOT NULL, queue text NOT NULL, job_id text NOT NULL,"
                        " job_timestamp bigint NOT NULL, state text NOT NULL, name text,"
                        " failed_reason text, finished_at timestamptz, corrupt text, data jsonb,"
                        " fields jsonb NOT NULL, raw_fields jsonb,"
                        " archived_at timestamptz NOT NULL DEFAULT now(), logs jsonb,"
                        " PRIMARY KEY (prefix, queue, job_id, job_timestamp))"
                    ).format(self.table)
                )
                cur = await conn.execute(
                    "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'logs' "
                    "AND NOT attisdropped",
                    (self.table.as_string(conn),),
                )
                if await cur.fetchone() is None:
                    await conn.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS logs jsonb").format(self.table)
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            if "must be owner" not in str(exc):
                raise
            raise ArchiveFailed(
                f"archive table {self.spec.table} has no logs column (added by this version of "
                f"requeue) and this user may not add it: run ALTER TABLE "
                f"{self.table.as_string(conn)} ADD COLUMN logs jsonb as its owner; nothing was removed"
            ) from None

    async def _run(self, what: str, work: Any) -> Any:
        assert self.conn is not None
        try:
            async with asyncio.timeout(self.timeout):
                return await work(self.conn)
        except (psycopg.Error, OSError) as exc:
            raise self._failed(what, exc) from None

    async def write(self, chunks: list[list[tuple[Any, ...]]]) -> int:
        """Write the rows in one transaction (all or none); the rows of the call."""
        insert = sql.SQL(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (prefix, queue, job_id, job_timestamp) DO UPDATE "
            "SET state = EXCLUDED.state, name = EXCLUDED.name, failed_reason = EXCLUDED.failed_reason, "
            "finished_at = EXCLUDED.finished_at, corrupt = EXCLUDED.corrupt, data = EXCLUDED.data, "
            "fields = EXCLUDED.fields, raw_fields = EXCLUDED.raw_fields, logs = EXCLUDED.logs, "
            "archived_at = now() "
            "WHERE {}.fields IS DISTINCT FROM EXCLUDED.fields "
            "OR {}.raw_fields IS DISTINCT FROM EXCLUDED.raw_fields "
            "OR {}.logs IS DISTINCT FROM EXCLUDED.logs"
        ).format(
            self.table,
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
            self.table,
            self.table,
            self.table,
        )

        async def go(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction(), conn.cursor() as cur:
                for rows in chunks:
                    await cur.executemany(insert, rows)
            return sum(len(rows) for rows in chunks)

        written: int = await self._run("write", go)
        return written

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


async def archived_clean(
    bull: BullQueue,
    state: str,
    *,
    cutoff_ms: int,
    limit: int,
    archive: ArchiveSpec,
    secrets: SecretSource,
    destination: ArchiveDestination | None = None,
) -> ArchivedClean:
    """Archive, then remove, up to ``limit`` jobs of ``state`` finished at or before ``cutoff_ms``
    (oldest first), ``archive.batchSize`` per round (see the module docstring).

    :param destination: where the rows go (default: ``ArchiveDestination(archive, secrets)``).
    :raises ArchiveFailed: Postgres refused or could not be reached; the jobs of that round stay.
    """
    if state not in ARCHIVE_STATES:
        raise ValueError(f"a clean with archive cleans completed or failed, not {state!r}")
    result = ArchivedClean()
    destination = destination or ArchiveDestination(archive, secrets)
    await destination.open()
    try:
        aborted_in_a_row = 0
        while result.removed < limit:
            want = min(archive.batch_size, limit - result.removed)
            removed, archived, full = await _round(bull, state, cutoff_ms, want, destination, result)
            result.archived += archived
            if removed is None:
                result.aborted += 1
                aborted_in_a_row += 1
                if aborted_in_a_row >= MAX_ABORTED_ROUNDS:
                    break
                continue
            aborted_in_a_row = 0
            result.removed += removed
            if removed == 0 or not full:
                break
    finally:
        await destination.close()
    return result


async def _round(
    bull: BullQueue,
    state: str,
    cutoff_ms: int,
    want: int,
    destination: ArchiveDestination,
    result: ArchivedClean,
) -> tuple[int | None, int, bool]:
    """One round: (jobs removed, or None when the removal was aborted; rows written; whether the
    range had ``want`` ids, so more may follow)."""
    redis, keys = bull.redis, bull.keys
    set_key = keys.key(state)
    ids = [str(i) for i in await redis.zrangebyscore(set_key, 0, cutoff_ms, start=0, num=want)]
    result.calls += 1
    if not ids:
        return 0, 0, False
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(*[key for i in ids for key in (keys.job(i), keys.logs(i))])
        scores = await redis.zmscore(set_key, ids)
        live = [i for i, s in zip(ids, scores, strict=True) if s is not None and s <= cutoff_ms]
        chunks = []
        async for jobs in read_jobs(redis, keys, live):
            counts = await log_lengths(redis, keys, [j.id for j in jobs])
            rows = []
            for job, count in zip(jobs, counts, strict=True):
                logs = NO_LOGS
                if count:
                    logs = await read_logs(redis, keys, job.id, count, ARCHIVE_LOG_LIMITS)
                    result.calls += 1
                rows.append(archive_row(job, queue=bull.name, prefix=bull.prefix, state=state, logs=logs))
            chunks.append(rows)
        result.calls += 2 + 2 * len(chunks)
        archived = await destination.write(chunks)
        pipe.multi()  # type: ignore[no-untyped-call]
        for job_id in live:
            await bull.queue_remove(pipe, job_id)
        try:
            replies = await pipe.execute()
        except rx.WatchError:
            return None, archived, True
        finally:
            result.calls += 1
    return sum(1 for r in replies if int(r) == 1), archived, len(ids) == want


async def run_archived_clean(
    ops: object, queue: str, state: str, *, grace_ms: int, limit: int, archive: ArchiveSpec
) -> tuple[str | None, int]:
    """A policy's Clean with archive through ``ops``; the ``lastActions`` text and the calls made."""
    if not isinstance(ops, ArchivingOps):
        raise RequeueError(f"{type(ops).__name__} cannot clean with archive")
    done = await ops.clean_archived(queue, state, grace_ms=grace_ms, limit=limit, archive=archive)
    text = f"archived and removed {done.removed}" if done.removed else None
    if done.aborted:
        text = f"{text or 'removed 0'}; {done.aborted} rounds left for later (jobs changed meanwhile)"
    return text, done.calls
