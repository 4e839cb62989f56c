"""Real BullMQ jobs for tests, produced and processed by the Python ``bullmq`` package.

Failed jobs are made the honest way: ``Queue.addBulk`` then a real ``Worker``
whose processor raises ``Exception(reason)``; BullMQ's own ``moveToFinished``
script writes the failed set and the job hash. Nothing is written by hand, so
the data has exactly the shape production Redis holds.

Key layout observed with bullmq 3.4.4 (Python) on redis 7 — see the harness tests:

* ``{prefix}:{queue}:failed`` is a sorted set of job ids scored by ``finishedOn``
  (ms since epoch), so ids failed within the same millisecond tie and sort
  lexicographically, not numerically ("10" < "9").
* ``{prefix}:{queue}:{id}`` is a hash of strings: ``name``, ``data`` (JSON text),
  ``opts`` (JSON; without explicit attempts it says ``"attempts":0``), ``timestamp``,
  ``delay``, ``priority`` (``"0"`` when unset), ``processedOn``, ``finishedOn``,
  ``failedReason`` (``str(exception)``), ``stacktrace`` (JSON list of Python
  tracebacks, one per attempt), ``atm`` (attempts made) and ``ats`` (attempts
  started). There is no ``attemptsMade`` field.
* A job with ``attempts: N`` only reaches ``failed`` after N tries (without a
  ``backoff`` the retries are immediate), and then ``atm == N``.
* Without ``connection`` BullMQ silently connects to localhost:6379 (the shared
  Redis): every helper here passes the URL explicitly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job, Queue, Worker

from support import async_wait_until

__all__ = [
    "JobSpec",
    "WorkerRun",
    "add_jobs",
    "create_queues",
    "make_failed_jobs",
    "mixed_jobs",
    "next_millisecond",
    "older_than",
    "run_worker",
    "three_generations",
    "worker_waiting",
]

#: Jobs per ``addBulk`` call (one MULTI pipeline each).
BULK_CHUNK = 500
#: Parallel jobs per test worker.
WORKER_CONCURRENCY = 50


@dataclass(frozen=True)
class JobSpec:
    """One job to create: its name, payload, the error its processor raises, and BullMQ opts."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    #: The exception message the processor raises, stored by BullMQ as ``failedReason``.
    reason: str = "boom"
    #: BullMQ job options, e.g. ``{"priority": 3, "attempts": 2, "jobId": "order-7"}``.
    opts: dict[str, Any] = field(default_factory=dict)


def mixed_jobs(n: int) -> list[JobSpec]:
    """Plain jobs with, interleaved, jobs with a priority, lifo jobs and jobs with attempts made."""
    out = []
    for i in range(n):
        opts: dict[str, Any] = {"attempts": 2} if i % 3 == 0 else {}
        if i % 11 == 5:
            opts["priority"] = 1 + i % 3
        elif i % 13 == 7:
            opts["lifo"] = True
        out.append(
            JobSpec(("whatsapp.send", "email.send")[i % 2], {"i": i}, f"timeout after {4000 + i}ms", opts)
        )
    return out


async def three_generations(redis_url: str, queue: str) -> tuple[list[str], list[str], list[str]]:
    """30 failed jobs named "a", then 40 "b", then 20 "c", each group failed after the one
    before (apart on the failed set's score): for tests of time windows."""
    groups: list[list[str]] = []
    for name, n in (("a", 30), ("b", 40), ("c", 20)):
        if groups:
            await next_millisecond()
        groups.append(await make_failed_jobs(redis_url, queue, [JobSpec(name, {"i": i}) for i in range(n)]))
    return groups[0], groups[1], groups[2]


async def next_millisecond() -> None:
    """Wait until the clock is past every millisecond a job failed so far can carry: those jobs
    then have lower failed-set scores than any failing from now on, and than a replay's start
    (its bound is exclusive). BullMQ rounds the failure time, so a score may be the current
    millisecond plus one: at most 2 ms of waiting, no fixed sleep."""
    target_ns = (time.time_ns() // 1_000_000 + 2) * 1_000_000
    await asyncio.sleep(max(0, target_ns - time.time_ns()) / 1e9 + 1e-4)  # + a loop tick of slack


async def older_than(redis: aioredis.Redis, queue: str, margin_ms: int, *, prefix: str = "bull") -> None:
    """Wait until every job in ``queue``'s failed set failed more than ``margin_ms`` ago (by
    its score, plus BullMQ's rounding): for a process whose clock a test cannot set (the
    operator, the CLI) and which leaves out jobs younger than a margin (mode Bulk). The wait
    ends at the deadline the newest failure gives, not after a guessed sleep."""
    newest = await redis.zrange(f"{prefix}:{queue}:failed", -1, -1, withscores=True)
    if newest:
        target_ns = (int(newest[0][1]) + margin_ms + 2) * 1_000_000
        await asyncio.sleep(max(0, target_ns - time.time_ns()) / 1e9)


async def worker_waiting(
    redis: aioredis.Redis, queue: str, *, prefix: str = "bull", timeout: float = 10.0
) -> None:
    """Wait until a worker of ``queue`` blocks for new work (``BZPOPMIN`` on the queue's marker,
    on its connection named ``{prefix}:{queue}``): it looked for a job and found none it may
    take. The positive signal that a worker takes nothing, instead of a fixed sleep."""
    # Python bullmq names its connections "{prefix}:{queue}"; Node BullMQ 5 and 6
    # "{prefix}:{base64 of queue}", with ":w:{worker name}" after it for named workers.
    names = (f"{prefix}:{queue}", f"{prefix}:{base64.b64encode(queue.encode()).decode()}")

    def ours(name: str) -> bool:
        return any(name == n or name.startswith(f"{n}:") for n in names)

    async def blocked() -> bool:
        return any(ours(c.get("name", "")) and c.get("cmd") == "bzpopmin" for c in await redis.client_list())

    await async_wait_until(
        blocked, timeout=timeout, interval=0.02, message=f"a worker of {queue} blocked waiting for work"
    )


def _queue_opts(redis_url: str, prefix: str) -> dict[str, Any]:
    return {"connection": redis_url, "prefix": prefix}


async def _add_all(queue: Queue, jobs: Sequence[JobSpec]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(jobs), BULK_CHUNK):
        chunk = jobs[start : start + BULK_CHUNK]
        added = await queue.addBulk([{"name": j.name, "data": j.data, "opts": dict(j.opts)} for j in chunk])
        ids.extend(str(job.id) for job in added)
    return ids


async def wait_in_set(
    redis_url: str,
    key: str,
    ids: Sequence[str],
    *,
    timeout: float = 60.0,
) -> None:
    """Block until every id is a member of the sorted set ``key`` (bounded by ``timeout``)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            scores = await client.zmscore(key, list(ids)) if ids else []
            missing = sum(1 for s in scores if s is None)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{missing} of {len(ids)} jobs not in {key} after {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def add_jobs(redis_url: str, queue: str, jobs: Sequence[JobSpec], *, prefix: str = "bull") -> list[str]:
    """Add real jobs and leave them waiting; their ids in order.

    With one job this makes a queue that exists (BullMQ wrote its keys) with an
    empty failed set: what requeue must tell apart from a queue that does not exist.
    """
    q = Queue(queue, _queue_opts(redis_url, prefix))
    try:
        return await _add_all(q, jobs)
    finally:
        await q.close()


async def create_queues(redis_url: str, *queues: str, prefix: str = "bull") -> None:
    """Make each queue exist with no job in it: one job added and removed, as a queue looks whose
    jobs were all processed and removed (BullMQ keeps its ``meta``, ``id`` and ``events``)."""
    for name in queues:
        q = Queue(name, _queue_opts(redis_url, prefix))
        try:
            job = await q.add("created", {})
            await job.remove()
        finally:
            await q.close()


async def make_failed_jobs(
    redis_url: str,
    queue: str,
    jobs: Sequence[JobSpec],
    *,
    prefix: str = "bull",
    timeout: float = 60.0,
) -> list[str]:
    """Create real jobs, fail each with its ``reason`` through a real Worker; return ids in order.

    Returns once every job is in ``{prefix}:{queue}:failed`` (jobs with
    ``attempts > 1`` are retried by BullMQ first). The queue must have no other
    worker; jobs already waiting in it would be failed too ("unexpected job").
    """
    q = Queue(queue, _queue_opts(redis_url, prefix))
    try:
        ids = await _add_all(q, jobs)
    finally:
        await q.close()
    reasons = dict(zip(ids, (j.reason for j in jobs), strict=True))

    async def fail(job: Job, token: str) -> None:
        raise Exception(reasons.get(str(job.id), "unexpected job"))

    worker = Worker(
        queue, fail, {**_queue_opts(redis_url, prefix), "concurrency": WORKER_CONCURRENCY, "drainDelay": 1}
    )
    try:
        await wait_in_set(redis_url, f"{prefix}:{queue}:failed", ids, timeout=timeout)
    finally:
        await worker.close()
    return ids


@dataclass
class WorkerRun:
    """What a :func:`run_worker` worker did, in completion order."""

    #: ``(id, name)`` of every job the processor was called for (including failing ones).
    processed: list[tuple[str, str]] = field(default_factory=list)
    #: Ids BullMQ has moved to ``completed`` (recorded from the worker's events).
    completed: list[str] = field(default_factory=list)
    #: Ids BullMQ has moved to ``failed`` or back for a retry attempt.
    failed: list[str] = field(default_factory=list)

    @property
    def processed_ids(self) -> list[str]:
        return [job_id for job_id, _ in self.processed]

    async def wait_for(self, count: int, *, timeout: float = 30.0) -> None:
        """Wait until ``count`` jobs have finished (completed or failed)."""
        deadline = time.monotonic() + timeout
        while len(self.completed) + len(self.failed) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"worker finished {len(self.completed) + len(self.failed)} of {count} jobs in {timeout}s"
                )
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def run_worker(
    redis_url: str,
    queue: str,
    *,
    fail_when: Callable[[Job], bool | str | None] | None = None,
    prefix: str = "bull",
    concurrency: int = WORKER_CONCURRENCY,
) -> AsyncIterator[WorkerRun]:
    """Run a real Worker on ``queue`` for the duration of the block, recording what it ran.

    ``fail_when(job)`` returning a string fails the job with that message, ``True``
    fails it with ``"failed by fail_when"``; falsy completes it (return value
    ``"ok"``). The worker is closed gracefully (active jobs finish) on exit.
    """
    run = WorkerRun()

    async def process(job: Job, token: str) -> str:
        job_id = str(job.id)
        run.processed.append((job_id, job.name))
        verdict = fail_when(job) if fail_when is not None else None
        if verdict:
            raise Exception(verdict if isinstance(verdict, str) else "failed by fail_when")
        return "ok"

    worker = Worker(
        queue, process, {**_queue_opts(redis_url, prefix), "concurrency": concurrency, "drainDelay": 1}
    )
    # The events fire after BullMQ moved the job to completed/failed in Redis,
    # so a test that saw them may assert on Redis right away.
    worker.on("completed", lambda job, result: run.completed.append(str(job.id)))
    worker.on("failed", lambda job, err: run.failed.append(str(job.id)))
    try:
        yield run
    finally:
        await worker.close()
