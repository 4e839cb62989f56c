"""``requeue export``: every job of one state as JSON lines on stdout, to keep before a clean.

The runbook's "Preserve logs and job data" step: ``requeue export --queue Q --state failed >
failed.jsonl``. One line per job (:func:`requeue.queues.export.job_record`): every hash field,
the data, options, stack traces and return value parsed when they are JSON, and corrupt jobs
(missing hash, not a hash, no name, data not JSON) kept raw with ``"corrupt": "<why>"``. A line
is never cut: the export restores every field exactly (:func:`requeue.queues.export.restore_fields`),
however large. Each line carries the job's log lines (``job.log()``; ``logs``, ``logsTotal``),
the newest ``--log-lines`` of them (1000 by default, 1 MiB at most); a job with more says so
in ``logsCut``, and :func:`requeue.queues.export.restore_logs` restores an uncut list exactly.
Memory stays bounded: ids are read a page at a time, hashes a few MiB per round trip, logs a
job at a time, and lines are written as they are made.

Filters, as ``requeue inspect`` lists a group: ``--name`` (exact job name), ``--reason`` (a
normalised reason as ``inspect`` groups it, or verbatim), or ``-f`` a DLQReplay manifest whose
``selector`` (jobNames, failedReasonPattern, dataMatch, failedAfter/failedBefore, jobIds)
chooses, with the manifest's queue, prefix and Redis. A job a filter cannot read (no hash, no
name) is left out by that filter; without filters every job is exported.

A summary goes to stderr (jobs written, corrupt among them, scanned). Failures exit as the
other commands do (2 queue not found or invalid manifest, 3 Redis unreachable) and print
the error object as the last line on stdout (``{"schemaVersion": 1, "error": {...}}``), so a
script reading the lines sees why they stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from redis import exceptions as rx

from requeue.commands.output import (
    EXIT_INTERRUPTED,
    ConnectRetry,
    RedactedValues,
    connect_retrying,
    error_label,
    error_object,
)
from requeue.commands.redis_env import cli_connect
from requeue.errors import RequeueError, SpecInvalid
from requeue.queues import BullQueue, FailedJob, map_redis_error
from requeue.queues.export import (
    EXPORT_STATES,
    LOG_LINES_PER_JOB,
    NO_LOGS,
    LogLimits,
    add_logs,
    compact_json,
    id_pages,
    job_record,
    log_lengths,
    read_jobs,
    read_logs,
)
from requeue.replay import normalize_reason

__all__ = ["EXPORT_STATES", "ExportOptions", "ExportSummary", "run_export"]


@dataclass(frozen=True)
class ExportOptions:
    """What ``requeue export`` was asked (flags already checked by click)."""

    redis_url: str | None
    queue: str | None
    prefix: str
    state: str
    name: str | None = None
    reason: str | None = None
    file: str | None = None
    secrets: tuple[str, ...] = ()
    limit: int | None = None
    connect_timeout: float = 10.0
    log_lines: int = LOG_LINES_PER_JOB


@dataclass
class ExportSummary:
    """What was written; printed on stderr at the end."""

    written: int = 0
    corrupt: int = 0
    scanned: int = 0
    bytes: int = 0
    limited: bool = False
    logs_cut: int = 0


@dataclass
class _Filter:
    """The job filter of ``--name``/``--reason`` or of a manifest's selector."""

    name: str | None = None
    reason: str | None = None
    matches: Callable[[FailedJob], bool] | None = None
    ids: frozenset[str] | None = None
    window: tuple[int, int] | None = None
    active: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.active = any(
            x is not None for x in (self.name, self.reason, self.matches, self.ids, self.window)
        )

    def keep(self, record: dict[str, Any]) -> bool:
        if not self.active:
            return True
        fields = record["fields"]
        if record["corrupt"] is not None and record["name"] is None:
            return False  # nothing a filter could judge
        if self.ids is not None and record["id"] not in self.ids:
            return False
        if self.name is not None and record["name"] != self.name:
            return False
        failed_reason = fields.get("failedReason")
        if self.reason is not None and self.reason not in (failed_reason, normalize_reason(failed_reason)):
            return False
        finished = int(float(fields.get("finishedOn") or 0))
        if self.window is not None and not (self.window[0] <= finished < self.window[1]):
            return False
        if self.matches is not None:
            raw = fields.get("data", compact_json(record["data"]) if "data" in record else None)
            job = FailedJob(record["id"], finished, record["name"], failed_reason, raw)
            return self.matches(job)
        return True


def _manifest_filter(opts: ExportOptions, static: Any) -> tuple[_Filter, str, str, Any]:
    """The filter, queue and prefix of ``-f``'s manifest, and the secret the Redis URL is in."""
    from requeue.commands.replay_cmd import load_manifest
    from requeue.replay.matcher import Matcher

    manifest = load_manifest(opts.file or "-")
    spec = manifest.spec
    matcher = Matcher(spec.selector)
    ids = spec.selector.job_ids
    window = None
    if spec.selector.failed_after or spec.selector.failed_before:
        window = (matcher.min_score, matcher.max_score(2**62))
    filt = _Filter(matches=matcher.matches, ids=frozenset(ids) if ids else None, window=window)
    return filt, spec.queue, spec.prefix, spec.redis.url_secret_ref


def run_export(opts: ExportOptions, *, out: BinaryIO | None = None) -> int:
    """Write the lines; the exit code (0 done, 2 queue not found or bad manifest, 3 Redis
    unreachable, 130 interrupted)."""
    from requeue.secrets import StaticSecrets

    stream = out or sys.stdout.buffer
    hidden = RedactedValues()
    hidden.add_url(opts.redis_url)
    summary = ExportSummary()

    def note(text: str) -> None:
        print(f"requeue: {hidden.redact(text)}", file=sys.stderr, flush=True)

    async def go() -> tuple[str, str]:
        try:
            static = StaticSecrets.from_flags(opts.secrets)
        except ValueError as exc:
            raise SpecInvalid(str(exc)) from None
        queue, prefix, filt = opts.queue or "", opts.prefix, _Filter(name=opts.name, reason=opts.reason)
        url = opts.redis_url
        if opts.file is not None:
            filt, queue, prefix, ref = _manifest_filter(opts, static)
            if url is None:
                url = await static.get(ref)
                hidden.add_url(url)
        assert url is not None
        redis = await connect_retrying(lambda: cli_connect(url), ConnectRetry(opts.connect_timeout), note)
        try:
            bull = BullQueue(redis, queue, prefix=prefix)
            await bull.require_exists()
            await _export(bull, opts, filt, stream, summary)
        except (rx.RedisError, OSError) as exc:
            raise map_redis_error(exc, url=url, queue=queue) from None
        finally:
            await redis.aclose()
        return queue, prefix

    try:
        queue, prefix = asyncio.run(go())
    except RequeueError as exc:
        if summary.scanned:
            _summary(summary, opts, opts.queue or "", opts.prefix, hidden, stopped=True)
        return _fail(exc, hidden, stream)
    except KeyboardInterrupt:
        _summary(summary, opts, opts.queue or "", opts.prefix, hidden, stopped=True)
        print("requeue: interrupted; the lines written so far are whole", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `requeue export ... | head`: the reader has what it wanted
        return 0
    _summary(summary, opts, queue, prefix, hidden, stopped=False)
    return 0


#: Bytes of lines gathered before a write (a chunk's jobs with their logs can be many MiB).
_WRITE_BYTES = 1024 * 1024


async def _export(
    bull: BullQueue, opts: ExportOptions, filt: _Filter, stream: BinaryIO, summary: ExportSummary
) -> None:
    limits = LogLimits(lines=opts.log_lines)
    async for page in id_pages(bull.redis, bull.keys, opts.state):
        summary.scanned += len(page)
        async for chunk in read_jobs(bull.redis, bull.keys, [job_id for job_id, _ in page]):
            counts = await log_lengths(bull.redis, bull.keys, [job.id for job in chunk])
            lines: list[bytes] = []
            held = 0
            for job, count in zip(chunk, counts, strict=True):
                record = job_record(job, queue=bull.name, prefix=bull.prefix, state=opts.state)
                if not filt.keep(record):
                    continue
                if opts.limit is not None and summary.written >= opts.limit:
                    summary.limited = True
                    break
                logs = await read_logs(bull.redis, bull.keys, job.id, count, limits) if count else NO_LOGS
                add_logs(record, logs, limits)
                line = _one_line(json.dumps(record, ensure_ascii=False)).encode() + b"\n"
                lines.append(line)
                held += len(line)
                summary.written += 1
                summary.bytes += len(line)
                summary.corrupt += record["corrupt"] is not None
                summary.logs_cut += logs.cut
                if held >= _WRITE_BYTES:
                    stream.write(b"".join(lines))
                    lines, held = [], 0
            stream.write(b"".join(lines))
            stream.flush()
            if summary.limited:
                return


#: Characters that some line readers (Python's ``str.splitlines``, JavaScript before ES2019) take
#: for line ends; JSON allows them raw in strings, so they are escaped to keep one job per line.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _one_line(text: str) -> str:
    return text.translate(_LINE_BREAKS)


def _summary(
    summary: ExportSummary,
    opts: ExportOptions,
    queue: str,
    prefix: str,
    hidden: RedactedValues,
    *,
    stopped: bool,
) -> None:
    what = f"{opts.state} jobs of queue {queue} (prefix {prefix})"
    text = (
        f"requeue: {'stopped after exporting' if stopped else 'exported'} {summary.written} {what}: "
        f"{summary.corrupt} corrupt, {summary.scanned} scanned, {summary.bytes} bytes"
    )
    if summary.logs_cut:
        text += (
            f"; the logs of {summary.logs_cut} jobs were cut to their newest lines "
            f"(--log-lines {opts.log_lines}, 1 MiB per job; see logsCut)"
        )
    if summary.limited:
        text += f"; --limit {opts.limit} reached, more may match"
    print(hidden.redact(text), file=sys.stderr, flush=True)


def _fail(exc: RequeueError, hidden: RedactedValues, stream: BinaryIO) -> int:
    """The error object as the last line on stdout, the error on stderr; the exit code."""
    try:
        obj = error_object(exc.reason, exc.message, exc.exit_code, hidden)
        stream.write(json.dumps(obj).encode() + b"\n")
        stream.flush()
    except BrokenPipeError:
        pass
    print(f"requeue: {error_label(exc)}: {hidden.redact(exc.message)}", file=sys.stderr, flush=True)
    return exc.exit_code
