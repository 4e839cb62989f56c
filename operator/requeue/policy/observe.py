"""What one QueuePolicy evaluation sees, and the small state it carries between evaluations.

Pure data, no I/O: :mod:`requeue.policy.collect` fills an :class:`Observation`
from Redis, :func:`requeue.policy.decide.decide` turns it into a decision.

Two kinds of state survive an evaluation:

* ``.status`` (:class:`~requeue.api.policy.QueuePolicyStatus`): everything a
  person wants to read — counts, who paused a queue, breaches and when they
  were alerted, gate history, last actions.
* :class:`PolicyMemory`: bookkeeping nobody needs to read — per queue the
  events-stream cursor, the failure-rate window (counts per time bucket),
  when an active job was first seen without a lock, since when jobs have waited
  with none finishing, samples of the failed count over the window, and the latency
  histogram over the window. Stored as JSON in Redis
  beside the queues (:mod:`requeue.policy.memory`), so it survives restarts
  without bloating the status object every interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from requeue.api.conditions import Reason
from requeue.api.gates import GateStatus
from requeue.api.policy import CORRUPT_SAMPLE
from requeue.policy.job_failures import CorruptCheck, NameBuckets, names_from_json, names_to_json
from requeue.policy.latency import FinishedJob, LatencyBuckets, buckets_from_json, buckets_to_json
from requeue.queues.duplicates import Duplicates

__all__ = [
    "BUCKETS_PER_WINDOW",
    "ActiveJob",
    "EventTally",
    "Observation",
    "PolicyMemory",
    "QueueMemory",
    "QueueObservation",
]

#: The failure-rate window is kept as this many buckets (its edge is exact to 1/N of the window).
BUCKETS_PER_WINDOW = 10


@dataclass(frozen=True)
class EventTally:
    """``completed`` and ``failed`` entries read from a queue's events stream since the last cursor.

    ``per_second`` maps the Unix second of each entry (from its stream id) to
    ``(completed, failed)``, so the entries land in the right window bucket
    however late they were read.
    """

    #: The id of the last entry read; the next read starts after it. "" when nothing was ever read.
    cursor: str = ""
    per_second: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    #: True when the read stopped at its page budget with entries left (the reader is behind).
    behind: bool = False
    #: Every ``completed``/``failed`` entry read, oldest first (job id, outcome, entry time).
    finished: tuple[FinishedJob, ...] = ()

    @property
    def completed(self) -> int:
        return sum(c for c, _ in self.per_second.values())

    @property
    def failed(self) -> int:
        return sum(f for _, f in self.per_second.values())


@dataclass(frozen=True)
class ActiveJob:
    """One of the oldest active jobs of a queue, as read for the stuck-job check."""

    id: str
    #: Job name ("" when the hash is gone).
    name: str = ""
    #: ``processedOn``: when a worker took it (Unix ms); None when the hash has none.
    started_ms: int | None = None
    #: Its lock key exists.
    locked: bool = True


@dataclass(frozen=True)
class QueueObservation:
    """One queue as it was seen in one evaluation."""

    name: str
    waiting: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    delayed: int = 0
    prioritized: int = 0
    paused: bool = False
    events: EventTally = field(default_factory=EventTally)
    #: Ids of active jobs whose lock key is gone; None when stalled jobs were not checked.
    lockless_active: frozenset[str] | None = None
    #: The oldest active jobs (a page from the active list's tail), with their names, start
    #: times and locks; None when stalled jobs were not checked.
    active_jobs: tuple[ActiveJob, ...] | None = None
    #: Worker connections of the queue (CLIENT LIST, named as BullMQ names them); None when
    #: not read (only read while processing looks stopped) or CLIENT LIST was refused.
    workers: int | None = None
    #: Per state ("completed", "failed"): jobs that finished before the clean rule's grace.
    #: None when not counted (then any job in the state makes a Clean due).
    cleanable: Mapping[str, int] | None = None
    #: The QueueNotFound message when BullMQ has no key for this queue (its counts are then
    #: zeros that mean nothing); None when the queue exists.
    not_found: str | None = None
    #: The jobs that finished since the last read, with names and times from their hashes
    #: (:mod:`requeue.policy.latency`); those beyond the lookup limit without.
    finished_jobs: tuple[FinishedJob, ...] = ()
    #: Duplicate waiting jobs (:mod:`requeue.queues.duplicates`); None when ``spec.duplicates``
    #: is unset.
    duplicates: Duplicates | None = None
    #: The failed jobs checked for corruption (:mod:`requeue.policy.job_failures`); None when not
    #: checked (no escalation condition ``corruptJobs``).
    corrupt_checks: tuple[CorruptCheck, ...] | None = None


@dataclass(frozen=True)
class Observation:
    """Everything one evaluation saw: every queue, every gate, or why it could not look."""

    at: datetime
    queues: Mapping[str, QueueObservation] = field(default_factory=dict)
    #: Last gate results (thresholds applied); None when the gates have not been checked yet.
    gates: tuple[GateStatus, ...] | None = None
    #: Set when Redis could not be read; ``queues`` is then empty. Never contains secrets.
    error: str | None = None
    #: CamelCase reason for ``error``, e.g. RedisUnreachable.
    error_reason: Reason = Reason.REDIS_UNREACHABLE


@dataclass(frozen=True)
class QueueMemory:
    """What the policy remembers about one queue between evaluations."""

    #: Events-stream id read last ("" = never read).
    cursor: str = ""
    #: Failure-rate window: ``(bucket start in Unix seconds, completed, failed)``, oldest first.
    buckets: tuple[tuple[int, int, int], ...] = ()
    #: Active job id -> Unix second it was first seen without a lock.
    lockless_since: Mapping[str, int] = field(default_factory=dict)
    #: This policy paused the queue (mirrors ``pausedByPolicy``; written to Redis *before* the
    #: pause, so an operator killed before its status write still knows the pause is its own).
    paused_by_policy: bool = False
    #: Unix second since which jobs have waited and none completed or failed (the last finish,
    #: or when the backlog appeared); None while the queue has no backlog.
    idle_since: int | None = None
    #: ``(Unix second, failed count)`` samples, oldest first: at most one per window bucket, plus
    #: the newest one from before the window (the baseline ``failedGrowing`` compares with).
    failed_samples: tuple[tuple[int, int], ...] = ()
    #: Latency window: per window bucket, the status histogram (:mod:`requeue.policy.latency`).
    latency: LatencyBuckets = ()
    #: Failures per job name and window bucket (:mod:`requeue.policy.job_failures`).
    failed_names: NameBuckets = ()
    #: Corrupt-job window: ``(bucket start, checked, found)``, oldest first.
    corrupt: tuple[tuple[int, int, int], ...] = ()
    #: The newest corrupt jobs in the window: ``(id, reason, entry ms)``, newest first.
    corrupt_sample: tuple[tuple[str, str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "c": self.cursor,
            "b": [list(b) for b in self.buckets],
            "l": dict(self.lockless_since),
        }
        if self.paused_by_policy:
            data["p"] = 1
        if self.idle_since is not None:
            data["s"] = self.idle_since
        if self.failed_samples:
            data["f"] = [list(f) for f in self.failed_samples]
        if self.latency:
            data["t"] = buckets_to_json(self.latency)
        if self.failed_names:
            data["n"] = names_to_json(self.failed_names)
        if self.corrupt:
            data["x"] = [list(b) for b in self.corrupt]
        if self.corrupt_sample:
            data["xs"] = [list(x) for x in self.corrupt_sample]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueueMemory:
        """Tolerant: anything malformed is dropped (the window then starts afresh)."""
        try:
            buckets = tuple((int(b[0]), int(b[1]), int(b[2])) for b in data.get("b", ()))
            lockless = {str(k): int(v) for k, v in dict(data.get("l", {})).items()}
            idle = data.get("s")
            samples = tuple((int(f[0]), int(f[1])) for f in data.get("f", ()))
            latency = buckets_from_json(data.get("t", ()))[-(BUCKETS_PER_WINDOW + 1) :]
            names = names_from_json(data.get("n", {}))
            corrupt = tuple((int(b[0]), int(b[1]), int(b[2])) for b in data.get("x", ()))
            corrupt_sample = tuple((str(x[0]), str(x[1]), int(x[2])) for x in data.get("xs", ()))
            return cls(
                cursor=str(data.get("c", "")),
                buckets=buckets,
                lockless_since=lockless,
                paused_by_policy=data.get("p") == 1,
                idle_since=None if idle is None else int(idle),
                failed_samples=samples[-(BUCKETS_PER_WINDOW + 2) :],
                latency=latency,
                failed_names=names,
                corrupt=corrupt[-(BUCKETS_PER_WINDOW + 1) :],
                corrupt_sample=corrupt_sample[:CORRUPT_SAMPLE],
            )
        except (TypeError, ValueError, IndexError, AttributeError):
            return cls()


@dataclass(frozen=True)
class PolicyMemory:
    """Per-queue :class:`QueueMemory` of one policy."""

    queues: Mapping[str, QueueMemory] = field(default_factory=dict)

    def get(self, queue: str) -> QueueMemory:
        return self.queues.get(queue, QueueMemory())
