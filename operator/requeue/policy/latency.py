"""Job latency and outcomes: what finished jobs took, from BullMQ's own records. Pure, no I/O.

Where the numbers come from, without a worker's cooperation: every job that
finishes leaves a ``completed`` or ``failed`` entry in ``{prefix}:{queue}:events``
(read incrementally for the failure rate, :mod:`requeue.policy.failure_rate`,
which also keeps the ids of those entries), and its job hash keeps
``timestamp`` (when it was added), ``processedOn`` (when a worker last took
it) and ``finishedOn``. :mod:`requeue.policy.collect` reads those fields with
one ``HMGET`` per finished job, in the pipeline it makes anyway.

* latency = ``finishedOn - timestamp``: added to finished, so a delayed job's
  delay and the retries of a job with several attempts are part of it;
* processing = ``finishedOn - processedOn``: the last attempt's work.

A job whose hash is gone by the time it is read (``removeOnComplete: true``
deletes it in the same script that writes the entry) is counted (its outcome
is in the entry) under the job name ``unknown`` and not timed. Times that make
no sense (a hash reprocessed since: ``processedOn`` after the finish) are not
observed rather than observed wrong.

The p95 over the window in ``.status.queues[]`` comes from a histogram with
buckets 5% wide (:data:`RATIO`), kept per window bucket in the policy's memory:
bounded whatever the traffic, and the p95 it reports is the upper edge of the
bucket holding the 95th percentile by rank, so at most 5% above the exact one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "OTHER",
    "RATIO",
    "UNKNOWN",
    "FinishedJob",
    "LatencyBuckets",
    "LatencyWindow",
    "bucket_index",
    "bucket_upper_seconds",
    "buckets_from_json",
    "buckets_to_json",
    "fold_name",
    "merge_window",
    "nearest_rank",
    "percentile",
]

#: Width of a status histogram bucket: each bucket's upper edge is 5% above its lower edge.
RATIO = 1.05
#: Job label for names beyond ``spec.metrics.maxJobNames``.
OTHER = "other"
#: Job label for finished jobs whose hash was gone (``removeOnComplete: true``) or not read.
UNKNOWN = "unknown"
#: Latencies below 1 ms share bucket 0.
_MIN_MS = 1
#: Longest job name used as a label value (longer ones are cut).
_NAME_LIMIT = 200


@dataclass(frozen=True)
class FinishedJob:
    """One ``completed``/``failed`` entry of the events stream and, once read, its job's times."""

    id: str
    #: "completed" or "failed".
    outcome: str
    #: The entry's time (the ms part of its stream id): when BullMQ finished the job.
    entry_ms: int
    #: Job name from the hash; None when the hash was gone or not read.
    name: str | None = None
    #: ``timestamp``: when the job was added (Unix ms).
    added_ms: int | None = None
    #: ``processedOn``: when a worker last took it.
    processed_ms: int | None = None
    #: ``finishedOn``.
    finished_ms: int | None = None

    @property
    def _finish(self) -> int:
        return self.finished_ms if self.finished_ms is not None else self.entry_ms

    @property
    def latency_seconds(self) -> float | None:
        """Added to finished, in seconds; None when unknown or inconsistent."""
        if self.added_ms is None or self.added_ms > self._finish:
            return None
        return (self._finish - self.added_ms) / 1000

    @property
    def processing_seconds(self) -> float | None:
        """Taken by a worker to finished, in seconds; None when unknown or inconsistent."""
        if self.processed_ms is None or self.processed_ms > self._finish:
            return None
        return (self._finish - self.processed_ms) / 1000


def fold_name(name: str | None, admitted: set[str], limit: int) -> str:
    """The job label for ``name``: itself while fewer than ``limit`` names are admitted (it is then
    admitted, in ``admitted``), :data:`OTHER` beyond, :data:`UNKNOWN` without a name."""
    if name is None:
        return UNKNOWN
    name = name[:_NAME_LIMIT]
    if name in admitted:
        return name
    if len(admitted) < limit:
        admitted.add(name)
        return name
    return OTHER


def bucket_index(seconds: float) -> int:
    """The status histogram bucket of a latency: 0 below 1 ms, else ``ceil(log_RATIO(ms))``."""
    ms = seconds * 1000
    if ms <= _MIN_MS:
        return 0
    return max(0, math.ceil(math.log(ms) / math.log(RATIO) - 1e-9))


def bucket_upper_seconds(index: int) -> float:
    """The upper edge of bucket ``index`` in seconds (every latency in it is at most this)."""
    return RATIO**index / 1000 if index > 0 else _MIN_MS / 1000


def nearest_rank(count: int, quantile: float) -> int:
    """The 1-based rank of the ``quantile`` by the nearest-rank method (p95 of 20 values: the 19th)."""
    return max(1, math.ceil(quantile * count))


def percentile(histogram: Mapping[int, int], quantile: float) -> float | None:
    """The upper edge of the bucket that holds the ``quantile`` by rank; None for no samples."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = nearest_rank(total, quantile)
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return round(bucket_upper_seconds(index), 3)
    return None  # unreachable: seen reaches total


#: Window buckets as kept in memory: ``(bucket start in Unix seconds, {histogram index: count})``.
LatencyBuckets = tuple[tuple[int, Mapping[int, int]], ...]


@dataclass(frozen=True)
class LatencyWindow:
    """The latency histogram over the window, and the buckets to remember."""

    #: Histogram index -> jobs, over the window.
    histogram: Mapping[int, int]
    buckets: LatencyBuckets

    @property
    def jobs(self) -> int:
        return sum(self.histogram.values())

    def p95(self) -> float | None:
        return percentile(self.histogram, 0.95)


def merge_window(
    remembered: LatencyBuckets,
    jobs: Iterable[FinishedJob],
    window: timedelta,
    now_s: int,
    buckets_per_window: int,
) -> LatencyWindow:
    """Add the latencies of ``jobs`` (each in the window bucket of its finish) and drop buckets
    older than ``window``; the same bucketing as the failure-rate window."""
    window_s = max(1, math.ceil(window.total_seconds()))
    width = max(1, math.ceil(window_s / buckets_per_window))
    merged: dict[int, dict[int, int]] = {start: dict(hist) for start, hist in remembered}
    for job in jobs:
        latency = job.latency_seconds
        if latency is None:
            continue
        second = job.entry_ms // 1000
        hist = merged.setdefault(second - second % width, {})
        index = bucket_index(latency)
        hist[index] = hist.get(index, 0) + 1
    horizon = now_s - window_s
    kept = tuple(sorted((s, h) for s, h in merged.items() if s + width > horizon and h))
    total: dict[int, int] = {}
    for _, hist in kept:
        for index, count in hist.items():
            total[index] = total.get(index, 0) + count
    return LatencyWindow(histogram=total, buckets=kept)


def buckets_to_json(buckets: LatencyBuckets) -> list[list[object]]:
    """``[[start, {"index": count}], ...]`` (JSON object keys are strings)."""
    return [[start, {str(i): c for i, c in hist.items()}] for start, hist in buckets]


def buckets_from_json(data: Sequence[object]) -> LatencyBuckets:
    """The inverse of :func:`buckets_to_json`; raises TypeError/ValueError on malformed data."""
    out: list[tuple[int, Mapping[int, int]]] = []
    for item in data:
        if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[1], dict):
            raise ValueError("malformed latency bucket")
        out.append((int(item[0]), {int(k): int(v) for k, v in item[1].items()}))
    return tuple(out)
