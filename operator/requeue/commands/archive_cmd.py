"""``requeue clean --archive-dsn``: write each job to a Postgres table, then remove it.

The same archive as a QueuePolicy's ``actions.clean.<state>.archive`` (:mod:`requeue.policy.archive`):
rounds of ``--archive-batch`` jobs, each archived in one transaction and then removed with
BullMQ's ``removeJob``; a job that could not be archived is never removed (exit 1,
``ArchiveFailed``), and a rerun after a crash archives nothing twice. ``--dry-run`` lists what
would go, as a plain ``requeue clean --dry-run`` does.

``-o json`` (``schemaVersion`` 1)::

    {"schemaVersion": 1, "queue": "default", "prefix": "bull", "state": "failed",
     "graceSeconds": 3600.0, "limit": 1000, "cutoff": "...Z", "dryRun": false,
     "archiveTable": "requeue_archived_jobs", "removed": 812, "archived": 812, "abortedRounds": 0}
"""

from __future__ import annotations

import time

from requeue.api.archive import ArchiveSpec
from requeue.api.base import SecretKeyRef
from requeue.commands.clean_cmd import clean_report
from requeue.commands.job_cmd import run_on_queue
from requeue.commands.output import print_json
from requeue.policy.archive import ArchivedClean, archived_clean
from requeue.queues import BullQueue
from requeue.secrets import StaticSecrets

__all__ = ["run_clean_archived"]

#: The Secret reference the CLI's ``--archive-dsn`` stands for (never shown: the value is the flag's).
_DSN_REF = SecretKeyRef(name="archive", key="dsn")


def run_clean_archived(
    *,
    redis_url: str,
    queue: str,
    prefix: str,
    state: str,
    grace_s: float,
    limit: int,
    output: str,
    connect_timeout: float,
    dsn: str,
    table: str,
    batch: int,
) -> int:
    """Archive and clean; 0 done, 1 archive failed (nothing of that round removed), 2 queue not
    found or a bad table name, 3 Redis unreachable."""
    from requeue.api.loading import parse
    from requeue.commands.output import RedactedValues, report_error
    from requeue.errors import RequeueError

    try:
        spec = parse(
            ArchiveSpec,
            {"dsnSecretRef": _DSN_REF.model_dump(by_alias=True), "table": table, "batchSize": batch},
            name="--archive-table",
        )
    except RequeueError as exc:
        hidden = RedactedValues()
        hidden.add_url(redis_url)
        return report_error(exc, hidden, json_output=output == "json")
    secrets = StaticSecrets({(_DSN_REF.name, _DSN_REF.key): dsn})
    cutoff_ms = round(time.time() * 1000) - round(grace_s * 1000)

    async def act(bull: BullQueue) -> ArchivedClean:
        return await archived_clean(
            bull, state, cutoff_ms=cutoff_ms, limit=limit, archive=spec, secrets=secrets
        )

    result = run_on_queue(redis_url, output == "json", connect_timeout, act, queue, prefix)
    if isinstance(result, int):
        return result
    done, hidden = result
    report = clean_report(queue, prefix, state, grace_s, limit, cutoff_ms, dry_run=False)
    cutoff = report["cutoff"]
    report |= {
        "archiveTable": table,
        "removed": done.removed,
        "archived": done.archived,
        "abortedRounds": done.aborted,
    }
    if output == "json":
        print_json(hidden.redact_json(report))
        return 0
    line = (
        f"queue {queue} (prefix {prefix}): archived to {table} and removed {done.removed} {state} jobs "
        f"finished before {cutoff} (limit {limit})"
    )
    if done.aborted:
        line += f"\n{done.aborted} rounds left their jobs in place (they changed meanwhile); run again"
    if done.removed == limit:
        line += "\nthe limit was reached: more may remain; run again"
    print(hidden.redact(line), flush=True)
    return 0
