"""Completed and failed jobs per second, read from BullMQ's events stream since the last read.

Why the stream: completed jobs are usually removed (``removeOnComplete``), so
the completed set says nothing about throughput. Every finished job leaves an
entry in ``{prefix}:{queue}:events`` (a Redis stream written by BullMQ's
``moveToFinished``) whose ``event`` field is ``completed`` or ``failed``; a
``failed`` entry is written once, when the job has used up its attempts
(retries are ``retrying``/``delayed``/``waiting``), so the rate is "final
failures / finished jobs". The entry id carries the time (``<ms>-<seq>``), so
each entry is counted in its own second however late it is read.

Bounded work: one ``XRANGE (cursor + COUNT page`` per queue per round, all
queues in one pipeline; only queues that filled a page get another round, at
most ``max_pages`` in all. A reader that is still behind after that says so
(``EventTally.behind``) and continues from its cursor next time. BullMQ trims
the stream to ~10,000 entries (``opts.maxLenEvents``): more finished jobs than
that between two reads of a queue are not seen — poll busy queues often.

The first read of a queue (no cursor) starts ``window`` ago.

The same read keeps the job id of every ``completed``/``failed`` entry
(``EventTally.finished``): job latency (:mod:`requeue.policy.latency`) is
measured from these, so the stream is read once per evaluation for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.policy.latency import FinishedJob
from requeue.policy.observe import EventTally
from requeue.queues.keys import QueueKeys

__all__ = ["DEFAULT_MAX_PAGES", "DEFAULT_PAGE_SIZE", "EventReader", "read_events", "start_id"]

#: Stream entries per XRANGE call.
DEFAULT_PAGE_SIZE = 1000
#: Most XRANGE calls per queue per evaluation.
DEFAULT_MAX_PAGES = 10


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def start_id(cursor: str, *, now_ms: int, window_ms: int) -> str:
    """The XRANGE start: just after ``cursor``, or ``window`` ago on a first read."""
    if cursor:
        return "(" + cursor
    return f"{max(0, now_ms - window_ms)}-0"


@dataclass
class _Progress:
    cursor: str
    start: str
    counts: dict[int, list[int]] = field(default_factory=dict)
    finished: list[FinishedJob] = field(default_factory=list)
    pages: int = 0
    full: bool = False


class EventReader:
    """Reads the events streams of several queues, sharing pipelines with other commands.

    Usage: ``reader.queue_first(pipe)`` adds the first round to a pipeline the
    caller executes; ``reader.take_first(results)`` consumes its replies;
    ``await reader.finish(redis)`` runs the follow-up rounds (counted in
    :attr:`round_trips`) and ``reader.tallies()`` gives one :class:`EventTally`
    per queue.
    """

    def __init__(
        self,
        prefix: str,
        queues: Sequence[str],
        cursors: Mapping[str, str],
        *,
        now_ms: int,
        window_ms: int,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        self.page_size = page_size
        self.max_pages = max_pages
        self.round_trips = 0
        self._keys = {q: QueueKeys(prefix, q).events for q in queues}
        self._progress = {
            q: _Progress(
                cursor=cursors.get(q, ""),
                start=start_id(cursors.get(q, ""), now_ms=now_ms, window_ms=window_ms),
            )
            for q in queues
        }

    def queue_first(self, pipe: Pipeline) -> int:
        """Add every queue's first XRANGE to ``pipe``; returns how many commands were added."""
        for queue, progress in self._progress.items():
            pipe.xrange(self._keys[queue], min=progress.start, max="+", count=self.page_size)
        return len(self._progress)

    def take_first(self, replies: Sequence[Any]) -> None:
        """Consume the replies of :meth:`queue_first`, in order."""
        for (_, progress), entries in zip(self._progress.items(), replies, strict=True):
            self._consume(progress, entries)

    def _consume(self, progress: _Progress, entries: Iterable[Any]) -> None:
        n = 0
        counts = progress.counts
        for entry_id, fields in entries:
            n += 1
            eid = _text(entry_id)
            progress.cursor = eid
            event = fields.get("event") if "event" in fields else fields.get(b"event")
            if event is None:
                continue
            kind = _text(event)
            if kind == "completed":
                slot = 0
            elif kind == "failed":
                slot = 1
            else:
                continue
            ms = int(eid.split("-", 1)[0])
            second = ms // 1000
            job_id = fields.get("jobId") if "jobId" in fields else fields.get(b"jobId")
            if job_id is not None:
                progress.finished.append(FinishedJob(id=_text(job_id), outcome=kind, entry_ms=ms))
            bucket = counts.get(second)
            if bucket is None:
                bucket = counts[second] = [0, 0]
            bucket[slot] += 1
        progress.pages += 1
        progress.full = n >= self.page_size
        progress.start = "(" + progress.cursor if progress.cursor else progress.start

    async def finish(self, redis: Redis) -> None:
        """Read further pages for queues whose last page was full, within the page budget."""
        while True:
            pending = [(q, p) for q, p in self._progress.items() if p.full and p.pages < self.max_pages]
            if not pending:
                return
            pipe = redis.pipeline(transaction=False)
            for queue, progress in pending:
                pipe.xrange(self._keys[queue], min=progress.start, max="+", count=self.page_size)
            replies = await pipe.execute()
            self.round_trips += 1
            for (_, progress), entries in zip(pending, replies, strict=True):
                self._consume(progress, entries)

    def tallies(self) -> dict[str, EventTally]:
        return {
            q: EventTally(
                cursor=p.cursor,
                per_second={s: (c, f) for s, (c, f) in p.counts.items()},
                behind=p.full,
                finished=tuple(p.finished),
            )
            for q, p in self._progress.items()
        }


async def read_events(
    redis: Redis,
    prefix: str,
    queues: Sequence[str],
    cursors: Mapping[str, str],
    *,
    now_ms: int,
    window_ms: int,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> dict[str, EventTally]:
    """Read every queue's new ``completed``/``failed`` entries (standalone use of :class:`EventReader`)."""
    reader = EventReader(
        prefix, queues, cursors, now_ms=now_ms, window_ms=window_ms, page_size=page_size, max_pages=max_pages
    )
    pipe = redis.pipeline(transaction=False)
    reader.queue_first(pipe)
    reader.take_first(await pipe.execute())
    await reader.finish(redis)
    return reader.tallies()
