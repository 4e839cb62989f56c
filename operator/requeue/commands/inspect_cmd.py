"""``requeue inspect``: what is in a queue's failed set, by job name, failure reason and hour.

Output: rich tables on a terminal, plain aligned text otherwise (logs, pipes),
and ``-o json`` for scripts. The JSON shape (``schemaVersion`` 1) is::

    {
      "schemaVersion": 1,
      "queue": "default", "prefix": "bull",
      "redis": "redis://default:***@redis:6379/0",      # always redacted
      "scannedAt": "2025-07-16T11:02:03Z", "elapsedSeconds": 0.41,
      "paused": false,
      "counts": {"wait": 0, "paused": 0, "active": 0, "prioritized": 0,
                 "delayed": 0, "completed": 10, "failed": 20000},   # BullMQ getCounts
      "total": 20000,            # failed-set members scanned
      "readable": 19998,         # total - corrupt; the groups cover these
      "oldestFailure": "2025-07-16T09:00:12Z", "newestFailure": "2025-07-16T10:59:58Z",
      "corrupt": {"count": 2, "ids": ["17", "18"],
                  "byProblem": {"job data is not JSON": 1, "job hash missing or has no name": 1}},
      "byName":   {"groups": [{"key": "whatsapp.send", "count": 6667, "sampleIds": ["3"]}, ...],
                   "otherGroups": 0, "otherJobs": 0, "capped": false},
      "byReason": {...same shape; keys are normalised reasons, e.g. "timeout after <n>ms"},
      "byHour":   {...same shape; keys are UTC hours "2025-07-16T09:00:00Z", in time order}
    }

Groups are the ``--top`` largest, most jobs first (hours: the busiest, in time
order); ``otherGroups``/``otherJobs`` count what was left out.

A queue with no BullMQ key under the prefix (a typo) is refused, exit 2, naming
the queues that do exist there; an existing queue with an empty failed set is
not an error. On any error, ``-o json`` prints
``{"schemaVersion": 1, "error": {"reason": "QueueNotFound", "message": "...", "exitCode": 2}}``
(redacted; :func:`requeue.commands.output.error_object`) on stdout as well as the one line on stderr.

An unreachable Redis is retried at the start for ``--connect-timeout`` seconds (one
line on stderr per retry), then exit 3.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from redis import exceptions as rx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from requeue.analysis import FailedSetReport, TopGroups, analyse_failed_set
from requeue.commands.output import (
    ConnectRetry,
    RedactedValues,
    connect_retrying,
    is_tty,
    make_console,
    print_json,
    report_error,
)
from requeue.commands.redis_env import cli_connect
from requeue.errors import RequeueError
from requeue.queues import BullQueue, QueueKeys, map_redis_error
from requeue.redact import redact_url

__all__ = ["run_inspect"]


def run_inspect(
    *,
    redis_url: str,
    queue: str,
    prefix: str = "bull",
    top: int = 20,
    sample: int = 1,
    output: str = "auto",
    no_color: bool = False,
    connect_timeout: float = 10.0,
) -> int:
    """Scan, print, return the exit code (0; 2 when the queue does not exist or the URL is not
    usable; 3 when Redis is unreachable for ``connect_timeout`` seconds or refuses us).

    :param output: ``table``, ``text``, ``json``, or ``auto`` (table on a terminal, else text).
    :param no_color: no colours (also when ``NO_COLOR`` is set; see :func:`.output.make_console`).
    """
    secrets = RedactedValues()
    secrets.add_url(redis_url)

    def note(text: str) -> None:
        print(f"requeue: {secrets.redact(text)}", file=sys.stderr, flush=True)

    try:
        report = asyncio.run(
            _scan(redis_url, queue, prefix, top, sample, ConnectRetry(connect_timeout), note)
        )
    except RequeueError as exc:
        return report_error(exc, secrets, json_output=output == "json")
    report.redis = redact_url(redis_url)
    if output == "json":
        print_json(secrets.redact_json(report.to_json()))
    elif output == "table" or (output == "auto" and is_tty(sys.stdout)):
        _print_tables(report, make_console(no_color=no_color), secrets)
    else:
        print(secrets.redact(render_text(report)), end="")
    return 0


async def _scan(
    url: str, queue: str, prefix: str, top: int, sample: int, retry: ConnectRetry, note: Callable[[str], None]
) -> FailedSetReport:
    redis = await connect_retrying(lambda: cli_connect(url, queues=[QueueKeys(prefix, queue)]), retry, note)
    try:
        bull = BullQueue(redis, queue, prefix=prefix)
        await bull.require_exists()  # QueueNotFound (exit 2) rather than "0 failed jobs" for a typo
        return await analyse_failed_set(bull, top=top, samples=sample)
    except (rx.RedisError, OSError) as exc:  # after connecting: named, redacted, exit 3
        raise map_redis_error(exc, url=url, queue=queue) from None
    finally:
        await redis.aclose()


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "-"


def _headline(r: FailedSetReport) -> list[str]:
    counts = " ".join(f"{k}={v}" for k, v in r.counts.items())
    lines = [
        f"queue {r.queue} (prefix {r.prefix}) at {r.redis}: {r.total} failed jobs, {r.corrupt} corrupt; "
        f"scanned in {r.elapsed_s:.2f}s",
        f"counts: {counts}; {'PAUSED' if r.paused else 'not paused'}",
    ]
    if r.oldest_ms is not None:
        data = r.to_json()
        lines.append(f"failures from {data['oldestFailure']} to {data['newestFailure']}")
    return lines


_TITLES = (("by_name", "JOB NAME"), ("by_reason", "FAILURE REASON (normalised)"), ("by_hour", "HOUR (UTC)"))


def render_text(r: FailedSetReport) -> str:
    """Plain, aligned text: one block per breakdown; no colours, no box drawing."""
    out = _headline(r)
    for attr, title in _TITLES:
        b: TopGroups = getattr(r, attr)
        out.append("")
        width = max([len(title), *(len(g.key) for g in b.groups)])
        out.append(f"{title:<{width}}  {'COUNT':>8}  {'SHARE':>6}  SAMPLE IDS")
        for g in b.groups:
            out.append(
                f"{g.key:<{width}}  {g.count:>8}  {_pct(g.count, r.readable):>6}  {', '.join(g.sample_ids)}"
            )
        if not b.groups:
            out.append("(none)")
        if b.other_jobs:
            out.append(
                f"... {b.other_jobs} more jobs in {b.other_groups} more groups"
                + (" (too many distinct keys; counted, not grouped)" if b.capped else "")
            )
    if r.corrupt:
        problems = ", ".join(f"{k}: {v}" for k, v in r.corrupt_by_problem.items())
        out.append("")
        out.append(f"CORRUPT {r.corrupt} ({problems}); first ids: {', '.join(r.corrupt_ids)}")
    return "\n".join(out) + "\n"


def _print_tables(r: FailedSetReport, console: Console, secrets: RedactedValues) -> None:
    """The rich tables; every value is redacted before rich lays it out (a job name or a failure
    reason may quote a secret, and a table could cut it where no later redaction would find it)."""
    hide = secrets.redact
    for line in _headline(r):
        console.print(hide(line), highlight=False, markup=False)
    for attr, title in _TITLES:
        b: TopGroups = getattr(r, attr)
        table = Table(title=f"by {title.lower()}", title_justify="left")
        table.add_column(title.split(" (")[0].title(), overflow="fold")
        table.add_column("Count", justify="right")
        table.add_column("Share", justify="right")
        table.add_column("Sample ids", overflow="fold")
        for g in b.groups:
            table.add_row(
                Text(hide(g.key)),
                str(g.count),
                _pct(g.count, r.readable),
                Text(hide(", ".join(g.sample_ids))),
            )
        if b.other_jobs:
            table.add_row(
                Text(f"{b.other_groups} more groups", style="dim"),
                str(b.other_jobs),
                _pct(b.other_jobs, r.readable),
                "",
            )
        console.print(table)
    if r.corrupt:
        problems = ", ".join(f"{k}: {v}" for k, v in r.corrupt_by_problem.items())
        console.print(
            Text.assemble(
                (f"corrupt: {r.corrupt}", "yellow"),
                hide(f" ({problems}); first ids: {', '.join(r.corrupt_ids)}"),
            ),
            highlight=False,
        )
