"""``requeue seed``: failed BullMQ jobs to rehearse a replay on, made as production makes them.

Someone trying requeue (or a runbook) needs a failed set before anything can be inspected or
replayed. This adds the demo's outage mix with ``Queue.addBulk`` and fails each job with a real
BullMQ ``Worker`` whose processor raises the outage's error, so BullMQ's own scripts write the
failed set and the job hashes: the data has exactly the shape a real outage leaves.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from requeue.commands.output import RedactedValues, make_console, report_error
from requeue.demo.workload import OUTAGE, plan, seed_failed_jobs
from requeue.errors import RedisUnreachable
from requeue.queues import BullQueue, map_redis_error
from requeue.redact import redact_url

__all__ = ["run_seed"]

#: States whose jobs the seeding worker would take and fail (or that a worker is processing).
_PENDING = ("wait", "paused", "prioritized", "delayed", "active")


async def _pending_jobs(redis_url: str, queue: str, prefix: str) -> dict[str, int]:
    """The queue's jobs a worker would take: the seeding worker must not fail someone's real job."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        counts = await BullQueue(client, queue, prefix=prefix).counts(*_PENDING)
    finally:
        await client.aclose()
    return {state: n for state, n in counts.items() if n}


async def _seed(redis_url: str, queue: str, prefix: str, jobs: int, timeout: float) -> dict[str, int] | float:  # noqa: ASYNC109
    pending = await _pending_jobs(redis_url, queue, prefix)
    if pending:
        return pending
    return await seed_failed_jobs(redis_url, queue, plan(jobs), timeout=timeout, prefix=prefix)


def run_seed(*, redis_url: str, queue: str, prefix: str, jobs: int, timeout: float, no_color: bool) -> int:
    """Seed ``jobs`` failed jobs into ``queue``; print what was made; return the exit code."""
    hidden = RedactedValues()
    hidden.add_url(redis_url)
    workload = plan(jobs)
    try:
        took = asyncio.run(_seed(redis_url, queue, prefix, jobs, timeout))
    except (RedisError, OSError) as exc:
        return report_error(map_redis_error(exc, url=redis_url, queue=queue), hidden)
    except TimeoutError as exc:
        return report_error(RedisUnreachable(f"{exc} at {redact_url(redis_url)}", queue=queue), hidden)
    if isinstance(took, dict):
        counts = ", ".join(f"{state} {n}" for state, n in took.items())
        make_console(no_color=no_color, stderr=True).print(
            f"requeue: queue {prefix}:{queue} at {redact_url(redis_url)} has jobs a worker would take "
            f"({counts}): the seeding worker would fail them too. Seed into an idle queue "
            "(another --queue, or a test Redis); nothing was added",
            highlight=False,
            markup=False,
        )
        return 2
    console = make_console(no_color=no_color)
    reasons = {name: reason for name, reason, _ in OUTAGE}
    where = f"{prefix}:{queue} at {redact_url(redis_url)}"
    console.print(
        f"seeded {workload.total} failed jobs into {where} in {took:.1f}s:",
        highlight=False,
        markup=False,
    )
    for name, count in workload.counts.items():
        console.print(f"  {count:>7}  {name}  ({reasons[name]})", highlight=False, markup=False)
    return 0
