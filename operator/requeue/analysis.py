"""Failed-set analysis (``requeue inspect``): what is in a queue's failed set, grouped for a person.

One pass over the failed sorted set in score order, a bounded page at a time,
through the engine's own page script (:meth:`requeue.queues.BullQueue.select_page`:
one Lua call and one JSON reply per page, no per-job round trips). Memory is
bounded by the number of distinct groups (capped at :data:`MAX_GROUPS` per
breakdown; further keys are counted in ``otherJobs``), never by the size of the set.

Groups:

* by job name;
* by normalised failure reason (:func:`requeue.replay.normalize_reason`: numbers,
  ids and UUIDs folded, so "timeout after 5012ms" and "timeout after 4990ms" are
  one group);
* by hour of failure (the failed set's score, UTC).

Each group keeps its first ``samples`` job ids (oldest failures first). Jobs that
cannot be replayed (hash missing, no name, data not JSON) are counted as corrupt,
with their first ids and why; they are not part of the groups.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from requeue.clock import utcnow
from requeue.queues import DEFAULT_PAGE_SIZE, BullQueue, FailedJob
from requeue.replay import normalize_reason

__all__ = [
    "INSPECT_SCHEMA_VERSION",
    "MAX_GROUPS",
    "FailedSetReport",
    "Group",
    "TopGroups",
    "analyse_failed_set",
]

#: Version of the ``-o json`` shape; bumped only on an incompatible change.
INSPECT_SCHEMA_VERSION = 1
#: Distinct keys tracked per breakdown; further keys count in ``otherJobs`` (bounded memory).
MAX_GROUPS = 10_000
#: Corrupt job ids listed.
CORRUPT_IDS = 20
_HOUR_MS = 3_600_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Group:
    """Jobs sharing one key (a name, a normalised reason or an hour)."""

    key: str
    count: int
    sample_ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "count": self.count, "sampleIds": list(self.sample_ids)}


@dataclass
class TopGroups:
    """The largest groups of one dimension, and what was left out."""

    groups: list[Group]
    #: Groups not shown (beyond ``--top``).
    other_groups: int = 0
    #: Jobs in groups not shown, including keys beyond :data:`MAX_GROUPS`.
    other_jobs: int = 0
    #: True when more than :data:`MAX_GROUPS` distinct keys were seen.
    capped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [g.to_json() for g in self.groups],
            "otherGroups": self.other_groups,
            "otherJobs": self.other_jobs,
            "capped": self.capped,
        }


class _Tally:
    """Counts and first ids per key, at most ``max_groups`` keys."""

    __slots__ = ("counts", "max_groups", "overflow", "samples", "want")

    def __init__(self, samples: int, max_groups: int) -> None:
        self.counts: dict[Any, int] = {}
        self.samples: dict[Any, list[str]] = {}
        self.want = samples
        self.max_groups = max_groups
        self.overflow = 0

    def add(self, key: Any, job_id: str) -> None:
        counts = self.counts
        n = counts.get(key)
        if n is None:
            if len(counts) >= self.max_groups:
                self.overflow += 1
                return
            counts[key] = 1
            self.samples[key] = [job_id] if self.want else []
            return
        counts[key] = n + 1
        if n < self.want:
            self.samples[key].append(job_id)

    def top(self, n: int, label: Callable[[Any], str], *, chronological: bool = False) -> TopGroups:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], label(kv[0])))
        shown = ranked[:n]
        if chronological:
            shown.sort(key=lambda kv: kv[0])
        rest = ranked[n:]
        return TopGroups(
            groups=[Group(label(k), c, self.samples[k]) for k, c in shown],
            other_groups=len(rest),
            other_jobs=sum(c for _, c in rest) + self.overflow,
            capped=self.overflow > 0,
        )


@dataclass
class FailedSetReport:
    """The result of one scan; :meth:`to_json` is the documented ``-o json`` shape."""

    queue: str
    prefix: str
    scanned_at: datetime
    total: int
    corrupt: int
    corrupt_ids: list[str]
    corrupt_by_problem: dict[str, int]
    oldest_ms: int | None
    newest_ms: int | None
    by_name: TopGroups
    by_reason: TopGroups
    by_hour: TopGroups
    counts: dict[str, int] = field(default_factory=dict)
    paused: bool = False
    elapsed_s: float = 0.0
    redis: str = ""

    @property
    def readable(self) -> int:
        return self.total - self.corrupt

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": INSPECT_SCHEMA_VERSION,
            "queue": self.queue,
            "prefix": self.prefix,
            "redis": self.redis,
            "scannedAt": self.scanned_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "elapsedSeconds": round(self.elapsed_s, 3),
            "paused": self.paused,
            "counts": dict(self.counts),
            "total": self.total,
            "readable": self.readable,
            "oldestFailure": _iso(self.oldest_ms) if self.oldest_ms is not None else None,
            "newestFailure": _iso(self.newest_ms) if self.newest_ms is not None else None,
            "corrupt": {
                "count": self.corrupt,
                "ids": list(self.corrupt_ids),
                "byProblem": dict(self.corrupt_by_problem),
            },
            "byName": self.by_name.to_json(),
            "byReason": self.by_reason.to_json(),
            "byHour": self.by_hour.to_json(),
        }


async def analyse_failed_set(
    queue: BullQueue,
    *,
    top: int = 20,
    samples: int = 1,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_groups: int = MAX_GROUPS,
    on_page: Callable[[int], Awaitable[None] | None] | None = None,
) -> FailedSetReport:
    """Scan ``queue``'s failed set once and group it; read-only.

    The scan covers the jobs in the set when it starts (up to its highest score
    then); jobs failing meanwhile with a later score are left for the next run,
    so a busy queue cannot keep the scan going forever.

    :param top: groups kept per breakdown (the largest; hours then shown in time order).
    :param samples: job ids kept per group.
    :param on_page: called with the running total after each page (progress display).
    """
    started = time.perf_counter()
    scanned_at = utcnow()
    counts = await queue.counts()
    paused = await queue.is_paused()
    upper = await _upper_bound(queue)
    scan = _Scan(samples, max_groups)
    if upper is not None:
        await _scan_pages(queue, scan, upper=upper, page_size=page_size, on_page=on_page)
    return scan.report(queue, top=top, scanned_at=scanned_at, counts=counts, paused=paused, started=started)


async def _upper_bound(queue: BullQueue) -> int | None:
    """One past the failed set's highest score now; None when the set is empty (nothing to scan).

    Fixing it before the first page is what lets the scan end on a busy queue.
    """
    last = await queue.redis.zrange(queue.keys.failed, -1, -1, withscores=True)
    return int(last[0][1]) + 1 if last else None


async def _scan_pages(
    queue: BullQueue,
    scan: _Scan,
    *,
    upper: int,
    page_size: int,
    on_page: Callable[[int], Awaitable[None] | None] | None,
) -> None:
    """Feed every page below ``upper`` to ``scan``, in score order, reporting progress after each.

    Only the data's shape is asked of Redis (``with_data=False``: is it JSON), not the data:
    the report counts corrupt jobs, it shows no data (several times less to send and parse).
    """
    pages = queue.iter_pages(max_score=upper, count=page_size, with_data=False)
    async with contextlib.aclosing(pages):
        async for page in pages:
            scan.take(page.scanned, page.jobs)
            if on_page is not None:
                progress = on_page(scan.total)
                if progress is not None:
                    await progress


class _Scan:
    """What the pages seen so far add up to: the three tallies, corrupt jobs, totals, time range.

    Memory stays bounded (see the module docstring): per group a count and a few
    ids, and at most :data:`CORRUPT_IDS` corrupt ids.
    """

    __slots__ = (
        "corrupt",
        "corrupt_ids",
        "hours",
        "names",
        "newest",
        "oldest",
        "problems",
        "reasons",
        "total",
    )

    def __init__(self, samples: int, max_groups: int) -> None:
        self.names = _Tally(samples, max_groups)
        self.reasons = _Tally(samples, max_groups)
        self.hours = _Tally(samples, max_groups)
        self.problems: dict[str, int] = {}
        self.corrupt_ids: list[str] = []
        self.total = 0
        self.corrupt = 0
        self.oldest: int | None = None
        self.newest: int | None = None

    def take(self, scanned: int, jobs: list[FailedJob]) -> None:
        """Count one page of ``scanned`` members, of which ``jobs`` were read.

        The hottest loop of ``requeue inspect`` (it runs once per failed job):
        everything it touches is bound to a local first, and the corrupt count
        is written back once per page rather than once per job.
        """
        self.total += scanned
        if jobs:
            first, final = jobs[0].finished_on, jobs[-1].finished_on
            self.oldest = first if self.oldest is None else min(self.oldest, first)
            self.newest = final if self.newest is None else max(self.newest, final)
        names, reasons, hours = self.names, self.reasons, self.hours
        problems, corrupt_ids = self.problems, self.corrupt_ids
        corrupt = 0
        for job in jobs:
            problem = job.corrupt_reason
            if problem is not None:
                corrupt += 1
                problems[problem] = problems.get(problem, 0) + 1
                if len(corrupt_ids) < CORRUPT_IDS:
                    corrupt_ids.append(job.id)
                continue
            job_id = job.id
            names.add(job.name, job_id)
            reasons.add(normalize_reason(job.failed_reason), job_id)
            hours.add(job.finished_on // _HOUR_MS, job_id)
        self.corrupt += corrupt

    def report(
        self,
        queue: BullQueue,
        *,
        top: int,
        scanned_at: datetime,
        counts: dict[str, int],
        paused: bool,
        started: float,
    ) -> FailedSetReport:
        """The report of the finished scan: the ``top`` groups of each breakdown (hours in time order)."""
        return FailedSetReport(
            queue=queue.name,
            prefix=queue.prefix,
            scanned_at=scanned_at,
            total=self.total,
            corrupt=self.corrupt,
            corrupt_ids=self.corrupt_ids,
            corrupt_by_problem=self.problems,
            oldest_ms=self.oldest,
            newest_ms=self.newest,
            by_name=self.names.top(top, str),
            by_reason=self.reasons.top(top, str),
            by_hour=self.hours.top(top, lambda h: _iso(int(h) * _HOUR_MS), chronological=True),
            counts=counts,
            paused=paused,
            elapsed_s=time.perf_counter() - started,
        )
