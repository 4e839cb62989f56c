"""Which job names failed, and which failed jobs are corrupt, over the policy's window. Pure, no I/O.

Both come from what the policy reads anyway: the events stream says which jobs failed since
the last read (:mod:`requeue.policy.failure_rate`), and the job latency read fetches the
newest of their hashes (``spec.metrics.maxJobLookups`` per queue, :mod:`requeue.policy.collect`).

* **Failed job names** (escalation condition ``failedJobNames``): each failed job whose hash
  gave a name adds one to that name in the window bucket of its failure. At most
  :data:`~requeue.api.escalation.MAX_FAILED_NAMES` names are kept per queue: beyond, those
  with the fewest failures in the window (then the longest quiet, then by name) are dropped,
  so the memory is bounded whatever the traffic. A job whose hash is gone when read
  (``removeOnFail: true``) or beyond the lookup limit has no name and is not counted.
* **Corrupt jobs** (escalation condition ``corruptJobs``): the newest
  :data:`MAX_CORRUPT_CHECKS` of those failed jobs per queue and evaluation are checked the way
  the replay's selection and ``requeue export`` judge a job (:func:`corrupt_reason`): a hash
  gone while its id is still in the failed set, a key that is not a hash, no name, no data, or
  data that is not JSON (read only up to :data:`DATA_LIMIT` bytes; a bigger payload is taken as
  readable). Counted per window bucket with a sample of the newest ids.

The buckets are the failure-rate window's (``BUCKETS_PER_WINDOW`` per window, by the events
entry's time), so "within the window" means the same for every signal of a policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from requeue.api.escalation import MAX_FAILED_NAMES
from requeue.api.policy import CORRUPT_SAMPLE
from requeue.policy.latency import FinishedJob
from requeue.queues.duplicates import DATA_LIMIT
from requeue.queues.export import loads_strict

__all__ = [
    "DATA_LIMIT",
    "MAX_CORRUPT_CHECKS",
    "CorruptCheck",
    "CorruptWindow",
    "NameBuckets",
    "NameWindow",
    "corrupt_reason",
    "merge_corrupt",
    "merge_names",
    "names_from_json",
    "names_to_json",
]

#: Failed jobs checked for corruption per queue and evaluation (the newest of those read).
MAX_CORRUPT_CHECKS = 100
#: Longest job name kept (longer ones are cut, as for the ``job`` label).
NAME_LIMIT = 200

#: Per name, its failures per window bucket: ``((name, ((bucket start s, count), ...)), ...)``.
NameBuckets = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]


def _width(window: timedelta, buckets_per_window: int) -> tuple[int, int]:
    window_s = max(1, math.ceil(window.total_seconds()))
    return window_s, max(1, math.ceil(window_s / buckets_per_window))


# ----------------------------------------------------------------- failed job names


@dataclass(frozen=True)
class NameWindow:
    """Failures per job name over the window, and the buckets to remember."""

    #: Name -> failures within the window, most first (then by name).
    counts: Mapping[str, int]
    buckets: NameBuckets


def merge_names(
    remembered: NameBuckets,
    jobs: Iterable[FinishedJob],
    window: timedelta,
    now_s: int,
    buckets_per_window: int,
    limit: int = MAX_FAILED_NAMES,
) -> NameWindow:
    """Add the failed jobs of ``jobs`` that have a name, drop buckets older than ``window``, and keep
    at most ``limit`` names (the most failures in the window, then the most recent, then by name)."""
    window_s, width = _width(window, buckets_per_window)
    merged: dict[str, dict[int, int]] = {name: dict(per) for name, per in remembered}
    for job in jobs:
        if job.outcome != "failed" or not job.name:
            continue
        second = job.entry_ms // 1000
        per = merged.setdefault(job.name[:NAME_LIMIT], {})
        start = second - second % width
        per[start] = per.get(start, 0) + 1
    horizon = now_s - window_s
    kept: dict[str, tuple[tuple[int, int], ...]] = {}
    for name, per in merged.items():
        live = tuple(sorted((s, c) for s, c in per.items() if s + width > horizon and c > 0))
        if live:
            kept[name] = live
    ranked = sorted(kept, key=lambda n: (-sum(c for _, c in kept[n]), -kept[n][-1][0], n))[:limit]
    counts = {name: sum(c for _, c in kept[name]) for name in ranked}
    return NameWindow(counts=counts, buckets=tuple((name, kept[name]) for name in sorted(ranked)))


def names_to_json(buckets: NameBuckets) -> dict[str, list[list[int]]]:
    """``{name: [[start, count], ...]}``."""
    return {name: [[s, c] for s, c in per] for name, per in buckets}


def names_from_json(data: object) -> NameBuckets:
    """The inverse of :func:`names_to_json`; raises TypeError/ValueError on malformed data."""
    if not isinstance(data, dict):
        raise ValueError("malformed failed-names memory")
    out = []
    for name, per in data.items():
        out.append((str(name)[:NAME_LIMIT], tuple((int(s), int(c)) for s, c in per)))
    return tuple(sorted(out))[:MAX_FAILED_NAMES]


# ----------------------------------------------------------------- corrupt jobs


@dataclass(frozen=True)
class CorruptCheck:
    """One failed job checked: when it failed, and why it is corrupt (None: readable)."""

    id: str
    #: The events entry's time (when BullMQ failed it), Unix ms.
    entry_ms: int
    reason: str | None = None


def corrupt_reason(
    *,
    not_a_hash: bool,
    fields_present: bool,
    name: str | None,
    data_length: int,
    data: str | None,
    in_failed_set: bool,
) -> str | None:
    """Why a failed job's hash is one BullMQ cannot read, or None; the same notion as the replay's
    selection and ``requeue export`` (:func:`requeue.queues.export.job_record`).

    :param not_a_hash: the job key holds another type (WRONGTYPE).
    :param fields_present: the hash has any field (else it is gone, or never was).
    :param data_length: ``HSTRLEN data`` (0: no data field).
    :param data: the data when it was read (at most :data:`DATA_LIMIT` bytes), else None.
    :param in_failed_set: its id is still in the queue's failed set.
    """
    if not_a_hash:
        return "job key is not a hash" if in_failed_set else None
    if not fields_present:
        # gone: removed with the job (removeOnFail, a clean, a retry that completed) unless still listed
        return "job hash missing (its id is still in the failed set)" if in_failed_set else None
    if not name:
        return "job has no name"
    if data_length <= 0:
        return "job has no data"
    if data is None:
        return None  # bigger than DATA_LIMIT: not read, taken as readable
    try:
        loads_strict(data)
    except (ValueError, RecursionError):
        return "job data is not JSON"
    return None


@dataclass(frozen=True)
class CorruptWindow:
    """Corrupt jobs over the window, and what to remember."""

    found: int
    checked: int
    #: ``(bucket start s, checked, found)``, oldest first.
    buckets: tuple[tuple[int, int, int], ...]
    #: The newest corrupt jobs in the window, newest first: ``(id, reason, entry ms)``.
    sample: tuple[tuple[str, str, int], ...] = field(default_factory=tuple)


def merge_corrupt(
    remembered: Sequence[tuple[int, int, int]],
    sample: Sequence[tuple[str, str, int]],
    checks: Iterable[CorruptCheck],
    window: timedelta,
    now_s: int,
    buckets_per_window: int,
    sample_size: int = CORRUPT_SAMPLE,
) -> CorruptWindow:
    """Add this evaluation's checks to the bucketed window, drop what is older than ``window``."""
    window_s, width = _width(window, buckets_per_window)
    merged: dict[int, list[int]] = {s: [c, f] for s, c, f in remembered}
    found_now: list[tuple[str, str, int]] = []
    for check in checks:
        second = check.entry_ms // 1000
        slot = merged.setdefault(second - second % width, [0, 0])
        slot[0] += 1
        if check.reason is not None:
            slot[1] += 1
            found_now.append((check.id, check.reason, check.entry_ms))
    horizon = now_s - window_s
    kept = tuple(sorted((s, c, f) for s, (c, f) in merged.items() if s + width > horizon))
    horizon_ms = (kept[0][0] if kept else now_s) * 1000
    newest = sorted([*found_now, *sample], key=lambda x: (-x[2], x[0]))
    seen: set[tuple[str, int]] = set()
    picked: list[tuple[str, str, int]] = []
    for item in newest:
        if item[2] < horizon_ms or (item[0], item[2]) in seen:
            continue
        seen.add((item[0], item[2]))
        picked.append(item)
        if len(picked) >= sample_size:
            break
    return CorruptWindow(
        found=sum(f for _, _, f in kept),
        checked=sum(c for _, c, _ in kept),
        buckets=kept,
        sample=tuple(picked),
    )
