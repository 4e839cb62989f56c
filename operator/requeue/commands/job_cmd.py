"""``requeue inspect --job ID`` (one job, as Bull Board shows it) and ``requeue inspect --name/--reason``
(the failed jobs of one group that ``requeue inspect`` shows). Read-only.

A job's data and stack traces can be megabytes: each is printed up to a bound
(:data:`DATA_LIMIT`, :data:`STACK_LIMIT`) followed by ``… (N bytes more)``. A job
hash that is missing (its id still in a set) or whose data is not JSON is shown
raw with the problem named, never a crash. ``-o json`` of a job (``schemaVersion`` 1)::

    {"schemaVersion": 1, "queue": "default", "prefix": "bull", "id": "17",
     "state": "failed",                    # BullMQ's getState: failed, completed, waiting, ...
     "problems": ["job data is not JSON"], # empty when the hash reads cleanly
     "name": "email.send",
     "data": {"to": "..."},                # parsed JSON, or the raw text when not JSON
     "dataBytes": 123, "dataTruncated": false,
     "opts": {"attempts": 3}, "attemptsMade": 3, "attemptsStarted": 3,
     "attempts": 3,                        # tries BullMQ allows: opts.attempts, at least 1
     "failedReason": "...", "stacktrace": ["...", "..."],   # each bounded; newest last
     "timestamps": {"created": "...Z", "processed": "...Z", "finished": "...Z"},
     "fields": {...}}                      # every other field of the hash, raw

Secret values the command knows (the Redis URL's password) are redacted; secrets
inside job data are not special-cased (requeue cannot know them), only bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from requeue.commands.output import RedactedValues, print_json, run_on_redis
from requeue.commands.redis_env import cli_connect
from requeue.errors import JobNotFound
from requeue.queues import BullQueue, Cursor, QueueKeys
from requeue.replay import normalize_reason

__all__ = ["DATA_LIMIT", "STACK_LIMIT", "JobView", "bounded", "run_job_list", "run_job_view", "run_on_queue"]

#: Bytes of a job's data printed (text and JSON output); the rest is counted, not shown.
DATA_LIMIT = 10 * 1024
#: Bytes of each stack trace printed.
STACK_LIMIT = 4 * 1024
#: Stack traces printed (the newest; BullMQ keeps one per attempt).
STACK_ENTRIES = 3
#: Hash fields shown under their own heading (the rest go to "other fields").
_KNOWN = (
    "name",
    "data",
    "opts",
    "atm",
    "ats",
    "failedReason",
    "stacktrace",
    "timestamp",
    "processedOn",
    "finishedOn",
    "delay",
    "priority",
    "returnvalue",
)
_TIMES = (("created", "timestamp"), ("processed", "processedOn"), ("finished", "finishedOn"))


def bounded(value: str, limit: int) -> tuple[str, int]:
    """``value`` cut to at most ``limit`` UTF-8 bytes (never inside a character), and how many
    bytes were left out."""
    raw = value.encode()
    if len(raw) <= limit:
        return value, 0
    return raw[:limit].decode("utf-8", "ignore"), len(raw) - limit


def _more(rest: int) -> str:
    return f"… ({rest} bytes more)" if rest else ""


def _iso(ms: str | None) -> str | None:
    try:
        return datetime.fromtimestamp(int(float(ms or "")) / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None


def allowed_attempts(opts: Any) -> int:
    """How many tries BullMQ gives a job: ``opts.attempts``, where 0, 1 or none all mean one try
    (BullMQ writes ``"attempts":0`` when the producer set none; it retries only while
    ``attemptsMade < attempts``)."""
    attempts = opts.get("attempts") if isinstance(opts, dict) else None
    return attempts if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 1 else 1


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@dataclass
class JobView:
    """One job as read from Redis, with every oversized value already bounded."""

    queue: str
    prefix: str
    id: str
    state: str
    fields: dict[str, str]
    problems: list[str] = field(default_factory=list)

    @property
    def data_text(self) -> tuple[str, int, Any]:
        """(shown text, bytes left out, parsed JSON or None)."""
        raw = self.fields.get("data")
        try:
            parsed = json.loads(raw) if raw is not None else None
        except ValueError:
            parsed = None
        pretty = json.dumps(parsed, indent=2, ensure_ascii=False) if parsed is not None else (raw or "")
        shown, rest = bounded(pretty, DATA_LIMIT)
        return shown, rest, parsed

    @property
    def opts(self) -> Any:
        try:
            return json.loads(self.fields.get("opts") or "{}")
        except ValueError:
            return self.fields.get("opts")

    @property
    def stacktraces(self) -> list[str]:
        """The newest :data:`STACK_ENTRIES` traces, each bounded (a raw text when not a JSON list)."""
        raw = self.fields.get("stacktrace")
        if not raw:
            return []
        try:
            entries = json.loads(raw)
        except ValueError:
            entries = [raw]
        if not isinstance(entries, list):
            entries = [str(entries)]
        out = []
        for entry in entries[-STACK_ENTRIES:]:
            shown, rest = bounded(str(entry), STACK_LIMIT)
            out.append(shown + ("\n" + _more(rest) if rest else ""))
        return out

    def to_json(self) -> dict[str, Any]:
        shown, rest, parsed = self.data_text
        opts = self.opts
        return {
            "schemaVersion": 1,
            "queue": self.queue,
            "prefix": self.prefix,
            "id": self.id,
            "state": self.state,
            "problems": self.problems,
            "name": self.fields.get("name"),
            "data": parsed if parsed is not None and not rest else shown,
            "dataBytes": len((self.fields.get("data") or "").encode()),
            "dataTruncated": bool(rest),
            "opts": opts,
            "attempts": allowed_attempts(opts),
            # BullMQ writes atm/ats on the first try; a job never tried has made none
            "attemptsMade": _int(self.fields.get("atm")) or 0,
            "attemptsStarted": _int(self.fields.get("ats")) or 0,
            "failedReason": self.fields.get("failedReason"),
            "stacktrace": self.stacktraces,
            "timestamps": {k: _iso(self.fields.get(f)) for k, f in _TIMES},
            "fields": {k: bounded(v, STACK_LIMIT)[0] for k, v in self.fields.items() if k not in _KNOWN},
        }

    def render_text(self) -> str:
        j = self.to_json()
        shown, rest, _ = self.data_text
        lines = [f"job {self.id} in queue {self.queue} (prefix {self.prefix}): {self.state}"]
        lines += [f"PROBLEM: {p}" for p in self.problems]
        lines.append(f"name: {j['name'] if j['name'] is not None else '(none)'}")
        for label, _ in _TIMES:
            lines.append(f"{label}: {j['timestamps'][label] or '-'}")
        retries = j["attempts"] - 1
        lines.append(
            f"attempts: made {j['attemptsMade']}, started {j['attemptsStarted']}, allowed {j['attempts']} "
            + (f"({retries} {'retry' if retries == 1 else 'retries'})" if retries else "(no retries)")
        )
        lines.append(f"failed reason: {j['failedReason'] or '-'}")
        lines.append(f"opts: {json.dumps(j['opts']) if not isinstance(j['opts'], str) else j['opts']}")
        lines.append("data:")
        lines.append(shown + ("\n" + _more(rest) if rest else ""))
        traces = j["stacktrace"]
        if traces:
            lines.append(f"stack traces (newest {len(traces)}, last attempt last):")
            lines += traces
        for k, v in j["fields"].items():
            lines.append(f"{k}: {v}")
        return "\n".join(lines) + "\n"


def _problems(fields: dict[str, str] | None) -> list[str]:
    if fields is None:
        return ["job hash missing (its id is still in a BullMQ set)"]
    out = []
    if not fields.get("name"):
        out.append("job has no name")
    data = fields.get("data")
    if data is None:
        out.append("job has no data")
    else:
        try:
            json.loads(data)
        except ValueError:
            out.append("job data is not JSON")
    return out


def run_on_queue(
    redis_url: str,
    json_output: bool,
    connect_timeout: float,
    work: Callable[[BullQueue], Any],
    queue: str,
    prefix: str,
) -> tuple[Any, RedactedValues] | int:
    """:func:`~requeue.commands.output.run_on_redis` on one queue: refuse a queue without BullMQ
    keys (QueueNotFound), then ``await work(queue)``."""

    async def slot_owner() -> list[Redis]:  # a Redis Cluster URL: the primary serving the queue's slot
        return [await cli_connect(redis_url, queues=[QueueKeys(prefix, queue)])]

    async def on_queue(clients: list[Redis]) -> Any:
        bull = BullQueue(clients[0], queue, prefix=prefix)
        await bull.require_exists()
        return await work(bull)

    return run_on_redis(redis_url, json_output, connect_timeout, on_queue, opener=slot_owner, queue=queue)


def run_job_view(
    *,
    redis_url: str,
    queue: str,
    prefix: str,
    job_id: str,
    output: str = "text",
    connect_timeout: float = 10.0,
) -> int:
    """Print one job; 0, or 2 when the queue or the job does not exist, 3 when Redis is unreachable."""

    async def read(bull: BullQueue) -> JobView:
        fields = await bull.job_hash(job_id)
        state = await bull.job_state(job_id)
        if fields is None and state == "unknown":
            raise JobNotFound(
                f'queue "{queue}" (prefix "{prefix}") has no job "{job_id}": no job hash and '
                "in none of BullMQ's sets (removed, or a typo?)",
                queue=queue,
            )
        return JobView(queue, prefix, job_id, state, fields or {}, _problems(fields))

    result = run_on_queue(redis_url, output == "json", connect_timeout, read, queue, prefix)
    if isinstance(result, int):
        return result
    view, secrets = result
    if output == "json":
        print_json(secrets.redact_json(view.to_json()))
    else:
        print(secrets.redact(view.render_text()), end="", flush=True)
    return 0


@dataclass(frozen=True)
class ListedJob:
    id: str
    name: str | None
    failed_at_ms: int
    failed_reason: str | None


async def _matching(
    bull: BullQueue, name: str | None, reason: str | None, limit: int
) -> tuple[list[ListedJob], int, bool]:
    """Failed jobs (oldest first) whose name is ``name`` and whose reason, normalised as
    ``requeue inspect`` groups it (or verbatim), is ``reason``; (jobs, scanned, more)."""
    out: list[ListedJob] = []
    cursor, scanned = Cursor(), 0
    while True:
        page = await bull.select_page(cursor, with_data=False)
        scanned += page.scanned
        for job in page.jobs:
            if name is not None and job.name != name:
                continue
            if reason is not None and reason not in (job.failed_reason, normalize_reason(job.failed_reason)):
                continue
            if len(out) == limit:
                return out, scanned, True
            out.append(ListedJob(job.id, job.name, job.finished_on, job.failed_reason))
        if page.done:
            return out, scanned, False
        cursor = page.cursor


def run_job_list(
    *,
    redis_url: str,
    queue: str,
    prefix: str,
    name: str | None,
    reason: str | None,
    limit: int,
    output: str = "text",
    connect_timeout: float = 10.0,
) -> int:
    """List the failed jobs of one group (``--name``, ``--reason``: a key ``requeue inspect`` shows)."""

    async def read(bull: BullQueue) -> tuple[list[ListedJob], int, bool]:
        return await _matching(bull, name, reason, limit)

    result = run_on_queue(redis_url, output == "json", connect_timeout, read, queue, prefix)
    if isinstance(result, int):
        return result
    (jobs, scanned, more), secrets = result
    if output == "json":
        print_json(
            secrets.redact_json(
                {
                    "schemaVersion": 1,
                    "queue": queue,
                    "prefix": prefix,
                    "filter": {"name": name, "reason": reason},
                    "scanned": scanned,
                    "more": more,
                    "jobs": [
                        {
                            "id": j.id,
                            "name": j.name,
                            "failedAt": _iso(str(j.failed_at_ms)),
                            "failedReason": j.failed_reason,
                        }
                        for j in jobs
                    ],
                }
            )
        )
        return 0
    lines = [f"{'ID':<24}  {'FAILED AT (UTC)':<27}  {'NAME':<24}  REASON"]
    for j in jobs:
        lines.append(
            f"{j.id:<24}  {_iso(str(j.failed_at_ms)) or '-':<27}  {j.name or '(none)':<24}  "
            f"{bounded(j.failed_reason or '-', 200)[0]}"
        )
    tail = ", more match (raise --limit)" if more else ""
    lines.append(
        f"{len(jobs)} failed jobs shown (oldest first){tail}; "
        f"{scanned} scanned; `requeue inspect --job ID` shows one"
    )
    print(secrets.redact("\n".join(lines) + "\n"), end="", flush=True)
    return 0
