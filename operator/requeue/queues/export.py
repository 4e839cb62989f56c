"""Reading whole jobs out of a BullMQ state, exactly and in bounded pieces (``requeue export``, the
clean's Postgres archive).

* **Ids a page at a time.** A sorted set (``failed``, ``completed``, ``delayed``, ...) is walked
  with a (score, id) cursor, as the replay's selection walks the failed set, so jobs added or
  removed meanwhile never make a page repeat or skip one that stays. A list (``wait``,
  ``active``, ``paused``) is walked from its oldest end by index (BullMQ pushes new jobs at
  the head, so they do not shift the pages still to come; jobs a worker takes meanwhile may).
* **Hashes byte-bounded.** ``HSTRLEN`` of the large fields first, then ``HGETALL`` in
  round trips of at most :data:`BYTES_PER_READ` (one job at least): memory stays bounded
  whatever the payloads, and every Redis call touches one key.
* **Exact bytes.** Hashes are read undecoded; a field name or value that is not UTF-8
  (or holds a NUL, which Postgres text refuses) is kept as base64 in ``rawFields``.
* **Logs with the job, bounded.** A job's log lines (``job.log()``, the list
  :meth:`~requeue.queues.keys.QueueKeys.logs`) are counted for a chunk in one pipelined round
  trip (``LLEN``); a job that has some is read from its newest line back, :data:`LOG_PAGE`
  lines per ``LRANGE`` (positive indexes, so lines appended meanwhile shift nothing), up to
  :data:`LOG_LINES_PER_JOB` lines and :data:`LOG_BYTES_PER_JOB` bytes (one line at least).
  Newest first because BullMQ's own ``keepLogs`` trims the same end, and the last lines are
  the ones that say why it failed; a cut list says so in ``logsCut``.
* **Corrupt jobs are kept, marked.** A missing hash, a key of another type, a job without
  a name or whose data is not JSON: the record carries ``corrupt`` (why) and everything
  that could be read.

One record per job (:func:`job_record`), the line ``requeue export`` prints::

    {"queue": "default", "prefix": "bull", "state": "failed", "id": "17",
     "name": "email.send", "corrupt": null,
     "data": {...}, "opts": {...}, "stacktrace": [...], "returnvalue": ...,
     "fields": {"timestamp": "1720000000000", "failedReason": "...", ...},
     "rawFields": {},
     "logs": ["connecting", "429 from upstream"], "rawLogs": {}, "logsTotal": 2, "logsCut": null}

``data``, ``opts``, ``stacktrace`` and ``returnvalue`` are the parsed JSON (the raw text when it
is not JSON). Every hash field is restored exactly by :func:`restore_fields`: a field is in
``fields`` as text unless its text is exactly the compact JSON of the parsed value (then the
parsed value stands for it), and in ``rawFields`` (base64) when it is not text. The log list is
restored exactly by :func:`restore_logs` unless ``logsCut`` says lines were left out: ``logs``
holds each line as text, ``null`` where the line is not text, and ``rawLogs`` that line's bytes
(base64) by its index.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.client import NEVER_DECODE

from requeue.queues.keys import QueueKeys

__all__ = [
    "BYTES_PER_READ",
    "EXPORT_STATES",
    "JSON_FIELDS",
    "LOG_BYTES_PER_JOB",
    "LOG_LINES_PER_JOB",
    "NO_LOGS",
    "JobLogs",
    "LogLimits",
    "RawJob",
    "add_logs",
    "compact_json",
    "id_pages",
    "job_record",
    "loads_strict",
    "log_lengths",
    "read_jobs",
    "read_logs",
    "restore_fields",
    "restore_logs",
]

#: BullMQ states and whether their key is a sorted set (True) or a list (False).
EXPORT_STATES: dict[str, bool] = {
    "failed": True,
    "completed": True,
    "delayed": True,
    "prioritized": True,
    "waiting-children": True,
    "wait": False,
    "paused": False,
    "active": False,
}
#: Hash fields BullMQ stores as JSON text; a record carries them parsed.
JSON_FIELDS = ("data", "opts", "stacktrace", "returnvalue")
#: Fields whose size is asked before reading (the ones that grow with payloads and attempts).
_LARGE_FIELDS = ("data", "stacktrace", "returnvalue", "failedReason", "opts")
#: Bytes of job hashes read per round trip at most (a larger single job is read alone).
BYTES_PER_READ = 4 * 1024 * 1024
#: Ids per page of a state.
DEFAULT_ID_PAGE = 500
#: Log lines kept per job at most, the newest (``requeue export --log-lines`` changes it).
LOG_LINES_PER_JOB = 1000
#: Bytes of log lines kept per job at most, the newest lines that fit (one line at least).
LOG_BYTES_PER_JOB = 1024 * 1024
#: Log lines per ``LRANGE``.
LOG_PAGE = 200


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def id_pages(
    redis: Redis, keys: QueueKeys, state: str, *, page: int = DEFAULT_ID_PAGE
) -> AsyncIterator[list[tuple[str, float | None]]]:
    """The ids of ``state`` (with their score in a sorted set, None in a list), a page at a
    time, oldest first; each page is one or two bounded Redis calls."""
    key = keys.key(state)
    if not EXPORT_STATES[state]:
        start = 0
        while True:
            ids = await redis.lrange(key, -(start + page), -(start + 1))
            if not ids:
                return
            yield [(_s(i), None) for i in reversed(ids)]
            if len(ids) < page:
                return
            start += page
    last: tuple[float, str] | None = None
    tied = 0  # members yielded so far at the cursor's score: where the next page starts in the tie
    kept: list[tuple[str, float | None]]
    while True:
        if last is None:
            items: list[Any] = await redis.zrangebyscore(
                key, "-inf", "+inf", start=0, num=page, withscores=True
            )
            kept = [(_s(m), float(s)) for m, s in items]
            full = len(items) == page
        else:
            kept, full = await _after(redis, key, last, tied, page)
        if kept:
            yield kept
            score = float(kept[-1][1] or 0)
            same = sum(1 for _, s in kept if s == score)
            tied = tied + same if last is not None and score == last[0] else same
            last = (score, kept[-1][0])
        if not full:
            return


async def _after(
    redis: Redis, key: str, last: tuple[float, str], tied: int, page: int
) -> tuple[list[tuple[str, float | None]], bool]:
    """The next page after ``last``, and whether the read was full. Members tied on its score
    are ordered by member, so the page starts right after the ``tied`` already yielded (checked:
    the member before must be ``last``); if the set changed under the cursor, the tie is read
    again from its start and what was yielded is skipped (bounded pages, each read once)."""
    offset = tied - 1
    items: list[Any] = await redis.zrangebyscore(
        key, last[0], "+inf", start=offset, num=page + 1, withscores=True
    )
    if items and (float(items[0][1]), _s(items[0][0])) == last:
        rest = items[1:]
        return [(_s(m), float(s)) for m, s in rest], len(rest) == page
    offset = 0
    while True:  # members tied on the cursor's score and at or before its id are skipped
        items = await redis.zrangebyscore(key, last[0], "+inf", start=offset, num=page, withscores=True)
        full = len(items) == page
        kept: list[tuple[str, float | None]] = [
            (_s(p[0]), float(p[1])) for p in items if (float(p[1]), _s(p[0])) > last
        ]
        if kept or not full:
            return kept, full
        offset += page


@dataclass(frozen=True)
class RawJob:
    """One job key as read: its hash (None when there is no key), or the key's type when it is not
    a hash (``kind``) with a string's value."""

    id: str
    fields: dict[bytes, bytes] | None
    kind: str = "hash"
    raw: bytes | None = None


async def _sizes(redis: Redis, keys: QueueKeys, ids: Sequence[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            for name in _LARGE_FIELDS:
                pipe.hstrlen(keys.job(job_id), name)
        replies = await pipe.execute(raise_on_error=False)
    n = len(_LARGE_FIELDS)
    return [
        sum(r for r in replies[i * n : (i + 1) * n] if isinstance(r, int)) + 1024 for i in range(len(ids))
    ]


async def read_jobs(
    redis: Redis, keys: QueueKeys, ids: Sequence[str], *, budget: int = BYTES_PER_READ
) -> AsyncIterator[list[RawJob]]:
    """The jobs of ``ids`` in order, in chunks of at most ``budget`` bytes (one job at least)."""
    sizes = await _sizes(redis, keys, ids)
    chunk: list[str] = []
    used = 0
    for job_id, size in zip(ids, sizes, strict=True):
        if chunk and used + size > budget:
            yield await _read_chunk(redis, keys, chunk)
            chunk, used = [], 0
        chunk.append(job_id)
        used += size
    if chunk:
        yield await _read_chunk(redis, keys, chunk)


async def _read_chunk(redis: Redis, keys: QueueKeys, ids: Sequence[str]) -> list[RawJob]:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.execute_command("HGETALL", keys.job(job_id), **{NEVER_DECODE: True})
        replies = await pipe.execute(raise_on_error=False)
    out: list[RawJob] = []
    for job_id, reply in zip(ids, replies, strict=True):
        if isinstance(reply, rx.ResponseError) and "WRONGTYPE" in str(reply):
            out.append(await _other_type(redis, keys, job_id))
        elif isinstance(reply, Exception):
            raise reply
        else:
            out.append(RawJob(job_id, dict(reply) if reply else None, "hash" if reply else "none"))
    return out


async def _other_type(redis: Redis, keys: QueueKeys, job_id: str) -> RawJob:
    """A job key that is not a hash (written by hand, or by something else): its type, and a
    string's value."""
    kind = _s(await redis.type(keys.job(job_id)))
    raw = None
    if kind == "string":
        raw = await redis.execute_command("GET", keys.job(job_id), **{NEVER_DECODE: True})  # type: ignore[no-untyped-call]
    return RawJob(job_id, None, kind, raw)


@dataclass(frozen=True)
class LogLimits:
    """How much of one job's log list is kept: the newest ``lines`` lines, ``bytes`` at most."""

    lines: int = LOG_LINES_PER_JOB
    bytes: int = LOG_BYTES_PER_JOB

    def describe(self) -> str:
        return f"at most {self.lines} lines and {self.bytes} bytes per job"


@dataclass(frozen=True)
class JobLogs:
    """The newest lines of a job's log list (oldest first, as stored) and the list's length when
    it was counted; fewer lines than ``total`` means the list was cut (or trimmed meanwhile)."""

    lines: list[bytes]
    total: int

    @property
    def cut(self) -> bool:
        return len(self.lines) < self.total


#: A job without log lines.
NO_LOGS = JobLogs([], 0)


async def log_lengths(redis: Redis, keys: QueueKeys, ids: Sequence[str]) -> list[int]:
    """How many log lines each job of ``ids`` has (one pipelined round trip; a logs key that is
    not a list counts as none)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.llen(keys.logs(job_id))
        replies = await pipe.execute(raise_on_error=False)
    out = []
    for reply in replies:
        if isinstance(reply, rx.ResponseError) and "WRONGTYPE" in str(reply):
            out.append(0)
        elif isinstance(reply, Exception):
            raise reply
        else:
            out.append(int(reply))
    return out


async def read_logs(
    redis: Redis, keys: QueueKeys, job_id: str, total: int, limits: LogLimits = LogLimits()
) -> JobLogs:
    """The newest lines of the job's log list of ``total`` lines (:func:`log_lengths`), within
    ``limits``, read :data:`LOG_PAGE` at a time from the newest back."""
    if total <= 0 or limits.lines <= 0:
        return JobLogs([], max(total, 0))
    key = keys.logs(job_id)
    newest_first: list[bytes] = []
    used = 0
    end = total - 1
    floor = max(0, total - limits.lines)
    while end >= floor:
        start = max(floor, end - LOG_PAGE + 1)
        page: list[bytes] = await redis.execute_command("LRANGE", key, start, end, **{NEVER_DECODE: True})  # type: ignore[no-untyped-call]
        for line in reversed(page):
            if newest_first and used + len(line) > limits.bytes:
                return JobLogs(newest_first[::-1], total)
            newest_first.append(line)
            used += len(line)
        if len(page) < end - start + 1:
            break  # the list was trimmed meanwhile: what is left was read
        end = start - 1
    return JobLogs(newest_first[::-1], total)


def add_logs(record: dict[str, Any], logs: JobLogs, limits: LogLimits) -> dict[str, Any]:
    """Put a job's log lines into its record (see the module docstring)."""
    texts: list[str | None] = []
    raw: dict[str, str] = {}
    for i, line in enumerate(logs.lines):
        text = _text(line)
        texts.append(text)
        if text is None:
            raw[str(i)] = base64.b64encode(line).decode()
    record["logs"] = texts
    record["rawLogs"] = raw
    record["logsTotal"] = logs.total
    record["logsCut"] = (
        f"kept the newest {len(logs.lines)} of {logs.total} log lines ({limits.describe()})"
        if logs.cut
        else None
    )
    return record


def restore_logs(record: dict[str, Any]) -> list[bytes]:
    """Every line of the job's log list, byte for byte, oldest first.

    :raises ValueError: the record's lines were cut (``logsCut``): the list cannot be restored.
    """
    if record.get("logsCut"):
        raise ValueError(f"job {record.get('id')}: {record['logsCut']}: its log list cannot be restored")
    raw = record.get("rawLogs") or {}
    return [
        base64.b64decode(raw[str(i)]) if text is None else text.encode()
        for i, text in enumerate(record.get("logs") or [])
    ]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # JSON.parse refuses NaN and Infinity too


def loads_strict(text: str) -> Any:
    """``json.loads`` as ``JSON.parse`` reads: NaN and Infinity are not JSON."""
    return json.loads(text, parse_constant=_no_constant)


def compact_json(value: Any) -> str:
    """The compact JSON text a parsed value stands for (what ``JSON.stringify`` writes)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _text(value: bytes) -> str | None:
    """``value`` as text if it is UTF-8 without NUL; else None (kept as base64)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _corrupt(job: RawJob, fields: dict[str, str], binary: bool) -> str | None:
    if job.fields is None:
        if job.kind == "none":
            return "job hash missing (its id is still in a BullMQ set)"
        return f"job key is a {job.kind}, not a hash"
    if not fields.get("name"):
        return "job has no name"
    if "data" not in fields:
        return "job has no data" if not binary else "job data is not UTF-8 text"
    try:
        loads_strict(fields["data"])
    except ValueError:
        return "job data is not JSON"
    return None


def job_record(job: RawJob, *, queue: str, prefix: str, state: str) -> dict[str, Any]:
    """The JSON record of one job (see the module docstring); :func:`restore_fields` inverts it."""
    fields: dict[str, str] = {}
    raw_fields: dict[str, str] = {}
    for k, v in (job.fields or {}).items():
        name, value = _text(k), _text(v)
        if name is None or value is None:
            raw_fields[base64.b64encode(k).decode()] = base64.b64encode(v).decode()
        else:
            fields[name] = value
    record: dict[str, Any] = {
        "queue": queue,
        "prefix": prefix,
        "state": state,
        "id": job.id,
        "name": fields.get("name"),
        "corrupt": _corrupt(job, fields, bool(raw_fields)),
    }
    for name in JSON_FIELDS:
        if name not in fields:
            continue
        text = fields[name]
        try:
            parsed = loads_strict(text)
        except ValueError:
            record[name] = text  # not JSON: the text itself, and kept in fields
            continue
        record[name] = parsed
        if compact_json(parsed) == text:
            del fields[name]
    record["fields"] = fields
    record["rawFields"] = raw_fields
    if job.raw is not None:
        record["rawValue"] = base64.b64encode(job.raw).decode()
    return record


def restore_fields(record: dict[str, Any]) -> dict[bytes, bytes]:
    """Every field of the job hash a record was made from, byte for byte."""
    out = {k.encode(): v.encode() for k, v in record["fields"].items()}
    for name in JSON_FIELDS:
        if name in record and name not in record["fields"]:
            out[name.encode()] = compact_json(record[name]).encode()
    for k, v in record.get("rawFields", {}).items():
        out[base64.b64decode(k)] = base64.b64decode(v)
    return out
