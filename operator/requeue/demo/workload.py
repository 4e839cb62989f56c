"""The demo's BullMQ side: failed jobs made by real workers, the service's worker, a provider health API.

Failed jobs are made the honest way: ``Queue.addBulk``, then a real BullMQ
``Worker`` whose processor raises the outage's error, so BullMQ's own
``moveToFinished`` script writes the failed set and the job hashes, exactly
as in production Redis. Nothing is written by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from bullmq import Job, Queue, Worker

from requeue.queues import BullQueue

__all__ = ["OUTAGE", "HealthEndpoint", "ServiceWorker", "Workload", "plan", "seed_failed_jobs"]

#: (job name, the error the outage caused, share of the failed jobs).
OUTAGE: tuple[tuple[str, str, float], ...] = (
    ("whatsapp.send", "429 Too Many Requests", 0.60),
    ("pdf.generate", "timeout after 5012ms", 0.25),
    ("email.send", "connect ECONNREFUSED 10.0.3.7:587", 0.15),
)
#: Jobs per ``addBulk`` call (one MULTI pipeline each).
BULK = 500


@dataclass(frozen=True)
class Workload:
    """How many failed jobs of each name the demo seeds."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def plan(total: int) -> Workload:
    """Split ``total`` failed jobs over :data:`OUTAGE` by share (the first name takes the rounding)."""
    counts = {name: int(total * share) for name, _, share in OUTAGE[1:]}
    counts = {OUTAGE[0][0]: total - sum(counts.values()), **counts}
    return Workload(counts)


def _payload(name: str, i: int) -> dict[str, Any]:
    if name == "whatsapp.send":
        return {"to": f"+49151{i:07d}", "template": "visa_status_update", "visaId": f"V-2025-{i:05d}"}
    if name == "pdf.generate":
        return {"applicationId": f"A-{i:06d}", "template": "visa-approval", "locale": "de"}
    return {"to": f"applicant{i}@example.com", "subject": "Your visa application"}


async def seed_failed_jobs(
    redis_url: str,
    queue: str,
    workload: Workload,
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    prefix: str = "bull",
) -> float:
    """Add the jobs (interleaved, as an outage fails them) and fail each with its outage error.

    Returns the seconds it took. Uses its own worker, closed before returning.
    """
    started = time.monotonic()
    reasons = {name: reason for name, reason, _ in OUTAGE}
    remaining = dict(workload.counts)
    jobs: list[dict[str, Any]] = []
    i = 0
    while any(remaining.values()):
        for name in reasons:
            if remaining.get(name):
                remaining[name] -= 1
                jobs.append({"name": name, "data": _payload(name, i), "opts": {"attempts": 1}})
                i += 1
    client = aioredis.Redis.from_url(redis_url)
    try:
        failed_set = BullQueue(client, queue, prefix=prefix)
        before = (await failed_set.counts("failed"))["failed"]  # the queue may hold failed jobs already
        q = Queue(queue, {"connection": redis_url, "prefix": prefix})
        try:
            for start in range(0, len(jobs), BULK):
                await q.addBulk(jobs[start : start + BULK])
        finally:
            await q.close()

        async def fail(job: Job, token: str) -> None:
            raise Exception(reasons[job.name])

        options = {"connection": redis_url, "prefix": prefix, "concurrency": 200, "drainDelay": 1}
        worker = Worker(queue, fail, options)
        try:
            deadline = time.monotonic() + timeout
            while (await failed_set.counts("failed"))["failed"] < before + len(jobs):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"seeding: not all {len(jobs)} jobs failed within {timeout:.0f}s")
                await asyncio.sleep(0.05)
        finally:
            await worker.close()
    finally:
        await client.aclose()
    return time.monotonic() - started


@dataclass
class ServiceWorker:
    """The service's own BullMQ worker, healthy again: completes every job it is given."""

    redis_url: str
    queue: str
    concurrency: int = 50
    #: Job ids in the order the processor was called (a duplicate would show up twice).
    processed: list[str] = field(default_factory=list)
    completed: int = 0
    _worker: Worker | None = None

    def start(self) -> None:
        async def process(job: Job, token: str) -> str:
            self.processed.append(str(job.id))
            await asyncio.sleep(0.002)  # the provider call
            return "sent"

        self._worker = Worker(
            self.queue,
            process,
            {"connection": self.redis_url, "concurrency": self.concurrency, "drainDelay": 1},
        )
        self._worker.on("completed", self._on_completed)

    def _on_completed(self, job: Job, result: Any) -> None:
        self.completed += 1

    @property
    def duplicates(self) -> int:
        return len(self.processed) - len(set(self.processed))

    async def close(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.close()


class HealthEndpoint:
    """The provider's health API: ``GET /health`` answers 503 until :meth:`recover`, then 200.

    A tiny HTTP/1.1 server on a free loopback port, for the replay's http gate.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._healthy_at: float | None = None
        self._server: asyncio.Server | None = None
        self.port = 0
        self.requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    @property
    def healthy(self) -> bool:
        return self._healthy_at is not None and self._clock() >= self._healthy_at

    def recover(self, after: float) -> None:
        """Answer 200 from ``after`` seconds from now on."""
        self._healthy_at = self._clock() + after

    async def start(self) -> HealthEndpoint:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                if self.healthy:
                    status, body = "200 OK", {"status": "ok"}
                else:
                    status, body = (
                        "503 Service Unavailable",
                        {"status": "degraded", "reason": "rate limited by Meta"},
                    )
                data = json.dumps(body).encode()
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
