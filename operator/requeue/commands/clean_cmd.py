"""``requeue clean``: remove old completed or failed jobs with BullMQ's own ``cleanJobsInSet``.

Exactly what BullMQ's ``Queue.clean(grace, limit, state)`` removes: up to
``--limit`` jobs of the set finished ``--grace`` or longer ago, oldest first (one
script call, as BullMQ makes it; it also adds BullMQ's ``cleaned`` event).
``--dry-run`` lists what would go (the same range the script starts from) and
removes nothing.

``-o json`` (``schemaVersion`` 1)::

    {"schemaVersion": 1, "queue": "default", "prefix": "bull", "state": "failed",
     "graceSeconds": 3600.0, "limit": 1000, "cutoff": "2025-07-16T10:00:00.000000Z",
     "dryRun": false, "removed": 812, "ids": ["1", "2", ...]}   # ids: the first 100
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from requeue.commands.job_cmd import run_on_queue
from requeue.commands.output import print_json
from requeue.queues import BullQueue

__all__ = ["CLEAN_STATES", "run_clean"]

#: The sets ``requeue clean`` cleans.
CLEAN_STATES = ("completed", "failed")
#: Ids listed in the output at most.
_IDS_SHOWN = 100


def run_clean(
    *,
    redis_url: str,
    queue: str,
    prefix: str,
    state: str,
    grace_s: float,
    limit: int,
    dry_run: bool,
    output: str,
    connect_timeout: float,
) -> int:
    """Clean (or with ``dry_run`` list) old jobs of ``state``; 0 done, 2 queue not found,
    3 Redis unreachable."""
    cutoff_ms = round(time.time() * 1000) - round(grace_s * 1000)

    async def act(bull: BullQueue) -> list[str]:
        if dry_run:
            return await bull.clean_finished_preview(state, cutoff_ms=cutoff_ms, limit=limit)
        return await bull.clean_finished(state, cutoff_ms=cutoff_ms, limit=limit)

    result = run_on_queue(redis_url, output == "json", connect_timeout, act, queue, prefix)
    if isinstance(result, int):
        return result
    ids, secrets = result
    report = clean_report(queue, prefix, state, grace_s, limit, cutoff_ms, dry_run=dry_run)
    cutoff = report["cutoff"]
    report |= {
        "removed": len(ids),
        "ids": ids[:_IDS_SHOWN],
    }
    if output == "json":
        print_json(secrets.redact_json(report))
        return 0
    verb = "would remove" if dry_run else "removed"
    line = (
        f"queue {queue} (prefix {prefix}): {verb} {len(ids)} {state} jobs finished before {cutoff}"
        f" (limit {limit})"
    )
    if ids:
        shown = ", ".join(ids[:_IDS_SHOWN]) + (", ..." if len(ids) > _IDS_SHOWN else "")
        line += f"\nids: {shown}"
    if len(ids) == limit:
        line += f"\nthe limit was reached: more may {'qualify' if dry_run else 'remain'}; run again"
    print(secrets.redact(line), flush=True)
    return 0


def clean_report(
    queue: str, prefix: str, state: str, grace_s: float, limit: int, cutoff_ms: int, *, dry_run: bool
) -> dict[str, Any]:
    """The head of ``clean``'s JSON report, shared by a plain and an archiving clean."""
    return {
        "schemaVersion": 1,
        "queue": queue,
        "prefix": prefix,
        "state": state,
        "graceSeconds": grace_s,
        "limit": limit,
        "cutoff": datetime.fromtimestamp(cutoff_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "dryRun": dry_run,
    }
