"""QueuePolicy thresholds: measure a queue, find its breaches, alert when they begin, recover when they end.

Rule 1 of :mod:`requeue.policy.decide`, kept apart because it is the one part
of a decision that carries its own state between evaluations (the bucketed
failure-rate window and the lockless-since times in :class:`QueueMemory`, the
open breach episodes in ``.status.queues[].breaches``). Pure, like the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from requeue.api.base import parse_duration
from requeue.api.conditions import Reason
from requeue.api.policy import (
    ProcessingStopped,
    QueueBreach,
    QueuePolicySpec,
    QueueState,
    StuckJob,
    Thresholds,
)
from requeue.policy.actions import BREACH_REASONS, Alert, BreachKind, Recover
from requeue.policy.job_failures import CorruptWindow, merge_corrupt, merge_names
from requeue.policy.latency import merge_window
from requeue.policy.ledger import Ledger, clip
from requeue.policy.observe import BUCKETS_PER_WINDOW, ActiveJob, QueueMemory, QueueObservation

__all__ = ["STUCK_LIST_LIMIT", "QueueHealth", "alert", "close_dropped", "find_breaches", "measure"]

#: ``.status.queues[].stuckActive`` lists at most this many jobs (the ones active longest).
STUCK_LIST_LIMIT = 20
#: Longest job name shown in ``stuckActive``.
_NAME_LIMIT = 200


def _seconds(value: datetime) -> int:
    return math.floor(value.timestamp())


@dataclass
class _Window:
    completed: int
    failed: int
    buckets: tuple[tuple[int, int, int], ...]


def _merge_window(memory: QueueMemory, obs: QueueObservation, window: timedelta, now: datetime) -> _Window:
    """Add the newly read events to the bucketed window and drop buckets older than the window."""
    window_s = max(1, math.ceil(window.total_seconds()))
    width = max(1, math.ceil(window_s / BUCKETS_PER_WINDOW))
    merged: dict[int, list[int]] = {start: [c, f] for start, c, f in memory.buckets}
    for second, (c, f) in obs.events.per_second.items():
        start = second - second % width
        slot = merged.setdefault(start, [0, 0])
        slot[0] += c
        slot[1] += f
    horizon = _seconds(now) - window_s
    kept = tuple(sorted((s, c, f) for s, (c, f) in merged.items() if s + width > horizon))
    return _Window(completed=sum(c for _, c, _ in kept), failed=sum(f for _, _, f in kept), buckets=kept)


@dataclass(frozen=True)
class QueueHealth:
    """What the thresholds are checked against, and the memory to carry to the next evaluation."""

    #: Failure rate over the window in percent; None when nothing finished in it.
    rate: float | None
    #: Jobs that finished (completed or failed) within the window.
    finished: int
    #: Stuck active jobs: without a lock, or active, for at least ``stalledActiveSeconds``.
    stalled: int
    memory: QueueMemory
    #: The stuck jobs read in detail, active longest first (at most :data:`STUCK_LIST_LIMIT`).
    stuck: tuple[StuckJob, ...] = ()
    #: Set while processing has stopped for ``stalledFor`` (and the queue is not ours to hold paused).
    stopped: ProcessingStopped | None = None
    #: Seconds jobs have waited with none finishing (0 while the queue progresses or is empty).
    stopped_seconds: int = 0
    #: Since when jobs have waited with none finishing (Unix second); None while nothing waits.
    idle_since: int | None = None
    #: Change of the failed count over the window; None without ``failedGrowing`` or an earlier sample.
    failed_change: int | None = None
    #: Seconds the change is measured over (from the baseline sample to now).
    failed_change_seconds: int = 0
    #: 95th percentile of job latency over the window (seconds); None when no job was timed in it.
    latency_p95: float | None = None
    #: Jobs the percentile is based on.
    latency_jobs: int = 0
    #: Failures per job name within the window, most first; None when names are not tracked.
    failed_names: Mapping[str, int] | None = None
    #: Corrupt failed jobs within the window; None when they are not looked for.
    corrupt: CorruptWindow | None = None


def measure(
    th: Thresholds,
    window: timedelta,
    mem: QueueMemory,
    obs: QueueObservation,
    now: datetime,
    *,
    track_names: bool = False,
) -> QueueHealth:
    """The failure rate over ``window``, stuck jobs, stopped processing, the failed trend, the
    job latency percentile and (``track_names``; ``obs.corrupt_checks`` set) the failed job names
    and corrupt jobs, from this observation and the memory."""
    win = _merge_window(mem, obs, window, now)
    finished = win.completed + win.failed
    rate = 100.0 * win.failed / finished if finished else None
    now_s = _seconds(now)
    lockless: dict[str, int] = {}
    if obs.lockless_active is not None:
        lockless = {jid: mem.lockless_since.get(jid, now_s) for jid in obs.lockless_active}
    stuck_ids, stuck = _stuck(th, obs, lockless, now_s)
    idle_since = _idle_since(mem, obs, now_s)
    samples, change, span = _failed_trend(th, window, mem, obs, now_s)
    latency = merge_window(mem.latency, obs.finished_jobs, window, now_s, BUCKETS_PER_WINDOW)
    names = (
        merge_names(mem.failed_names, obs.finished_jobs, window, now_s, BUCKETS_PER_WINDOW)
        if track_names
        else None
    )
    corrupt = (
        merge_corrupt(mem.corrupt, mem.corrupt_sample, obs.corrupt_checks, window, now_s, BUCKETS_PER_WINDOW)
        if obs.corrupt_checks is not None
        else None
    )
    memory = QueueMemory(
        cursor=obs.events.cursor or mem.cursor,
        buckets=win.buckets,
        lockless_since=lockless,
        idle_since=idle_since,
        failed_samples=samples,
        latency=latency.buckets,
        failed_names=names.buckets if names is not None else (),
        corrupt=corrupt.buckets if corrupt is not None else (),
        corrupt_sample=corrupt.sample if corrupt is not None else (),
    )
    stopped_seconds = 0 if idle_since is None else max(0, now_s - idle_since)
    return QueueHealth(
        rate,
        finished,
        len(stuck_ids),
        memory,
        stuck=stuck,
        stopped=_stopped(th, mem, obs, idle_since, stopped_seconds),
        stopped_seconds=stopped_seconds,
        idle_since=idle_since,
        failed_change=change,
        failed_change_seconds=span,
        latency_p95=latency.p95(),
        latency_jobs=latency.jobs,
        failed_names=names.counts if names is not None else None,
        corrupt=corrupt,
    )


def _stuck(
    th: Thresholds, obs: QueueObservation, lockless: Mapping[str, int], now_s: int
) -> tuple[set[str], tuple[StuckJob, ...]]:
    """The ids of stuck active jobs and, for those read in detail, the status entries.

    Stuck: the lock has been gone for ``stalledActiveSeconds`` (the worker died: BullMQ's
    stalled check in a live worker would have moved it back by then), or a worker took it
    ``stalledActiveSeconds`` ago and still holds it.
    """
    if th.stalled_active_seconds is None and obs.lockless_active is None:
        return set(), ()
    limit = th.stalled_active_seconds or 0
    ids = {jid for jid, t in lockless.items() if now_s - t >= limit}
    detailed: list[tuple[ActiveJob, int | None]] = []
    for job in obs.active_jobs or ():
        age = None if job.started_ms is None else max(0, now_s - job.started_ms // 1000)
        if job.id in ids or (age is not None and age >= limit):
            ids.add(job.id)
            detailed.append((job, age))
    detailed.sort(key=lambda ja: (ja[0].started_ms is None, ja[0].started_ms or 0, ja[0].id))
    stuck = tuple(
        StuckJob(
            id=clip(job.id, _NAME_LIMIT),
            name=clip(job.name, _NAME_LIMIT),
            started_at=None if job.started_ms is None else datetime.fromtimestamp(job.started_ms / 1000, UTC),
            age_seconds=age or 0,
            lock_expired=not job.locked,
        )
        for job, age in detailed[:STUCK_LIST_LIMIT]
    )
    return ids, stuck


def _idle_since(mem: QueueMemory, obs: QueueObservation, now_s: int) -> int | None:
    """Since when jobs have waited with none finishing: the last finish this read saw, else the
    remembered time, else now (the backlog just appeared, or a first read saw no finish)."""
    if obs.waiting + obs.prioritized == 0:
        return None
    finished = [second for second, (c, f) in obs.events.per_second.items() if c or f]
    if finished:
        return min(max(finished), now_s)
    return mem.idle_since if mem.idle_since is not None else now_s


def _stopped(
    th: Thresholds, mem: QueueMemory, obs: QueueObservation, idle_since: int | None, seconds: int
) -> ProcessingStopped | None:
    """Processing stopped for ``stalledFor``, with the cause the data shows; None otherwise.

    A queue this policy holds paused is not flagged: the red gate that paused it is the news.
    """
    if th.stalled_for is None or idle_since is None:
        return None
    if seconds < parse_duration(th.stalled_for).total_seconds():
        return None
    if obs.paused and mem.paused_by_policy:
        return None
    reason, why = _stop_cause(obs)
    backlog = obs.waiting + obs.prioritized
    return ProcessingStopped(
        reason=reason.value,
        since=datetime.fromtimestamp(idle_since, UTC),
        message=clip(f"{backlog} waiting, no job finished for {_span(seconds)}: {why}"),
    )


def _stop_cause(obs: QueueObservation) -> tuple[Reason, str]:
    """Which of paused, workers down, workers stuck or workers idle the observation shows."""
    if obs.paused:
        return Reason.PAUSED_BY_OTHERS, "the queue is paused (not by this policy)"
    if obs.workers is None:  # CLIENT LIST refused or unavailable: judge by the active jobs
        if obs.active == 0:
            return Reason.WORKERS_DOWN, "no job is active (worker connections could not be listed)"
        return Reason.WORKERS_STUCK, f"{obs.active} active job(s) do not finish (workers not listed)"
    if obs.workers == 0:
        return Reason.WORKERS_DOWN, f"no worker is connected ({obs.active} active)"
    if obs.active > 0:
        return (
            Reason.WORKERS_STUCK,
            f"{obs.workers} worker connection(s), {obs.active} active job(s) that do not finish",
        )
    return Reason.WORKERS_IDLE, f"{obs.workers} worker connection(s) and no active job"


def _failed_trend(
    th: Thresholds, window: timedelta, mem: QueueMemory, obs: QueueObservation, now_s: int
) -> tuple[tuple[tuple[int, int], ...], int | None, int]:
    """The failed-count samples to keep, the change since the window's baseline, and its span.

    One sample per window bucket (the first of each); the baseline is the newest sample from
    before the window, or the oldest one while the policy has watched for less than a window.
    Bounded: at most ``BUCKETS_PER_WINDOW + 2`` samples.
    """
    if th.failed_growing is None:
        return (), None, 0
    window_s = max(1, math.ceil(window.total_seconds()))
    width = max(1, math.ceil(window_s / BUCKETS_PER_WINDOW))
    samples = [s for s in mem.failed_samples if s[0] <= now_s]
    if not samples or now_s - samples[-1][0] >= width:
        samples.append((now_s, obs.failed))
    horizon = now_s - window_s
    before = [s for s in samples if s[0] <= horizon]
    kept = tuple(([before[-1]] if before else []) + [s for s in samples if s[0] > horizon])
    kept = kept[-(BUCKETS_PER_WINDOW + 2) :]
    base_s, base_failed = kept[0]
    if base_s >= now_s:
        return kept, None, 0
    return kept, obs.failed - base_failed, now_s - base_s


def _span(seconds: int) -> str:
    """``930`` -> ``"15m30s"``."""
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def find_breaches(spec: QueuePolicySpec, obs: QueueObservation, health: QueueHealth) -> dict[BreachKind, str]:
    """Every threshold the queue is above, with a short text saying by how much."""
    th = spec.thresholds
    rate, finished = health.rate, health.finished
    found: dict[BreachKind, str] = {}
    if th.failed is not None and obs.failed > th.failed:
        found[BreachKind.FAILED] = f"failed {obs.failed} > {th.failed}"
    backlog = obs.waiting + obs.prioritized
    if th.waiting is not None and backlog > th.waiting:
        found[BreachKind.WAITING] = f"waiting {backlog} > {th.waiting}"
    if (
        th.failure_rate_percent is not None
        and rate is not None
        and finished >= th.failure_rate_min_jobs
        and rate > th.failure_rate_percent
    ):
        found[BreachKind.FAILURE_RATE] = (
            f"failure rate {rate:.1f}% > {th.failure_rate_percent:g}% over {th.window} ({finished} jobs)"
        )
    if th.stalled_active_seconds is not None and health.stalled > 0:
        found[BreachKind.STALLED] = _stuck_text(health, th.stalled_active_seconds)
    if health.stopped is not None:
        found[BreachKind.PROCESSING_STOPPED] = (
            f"processing stopped ({health.stopped.reason}): {health.stopped.message}"
        )
    grow = th.failed_growing
    change = health.failed_change
    if grow is not None and change is not None and obs.failed > grow.above and change >= grow.min_increase:
        span = _span(health.failed_change_seconds)
        found[BreachKind.FAILED_GROWING] = (
            f"failed {obs.failed} > {grow.above} and growing: +{change} in {span}"
        )
    p95, limit = health.latency_p95, th.latency_p95
    if limit is not None and p95 is not None and p95 > parse_duration(limit).total_seconds():
        found[BreachKind.LATENCY_P95] = (
            f"job latency p95 {p95:g}s > {th.latency_p95} over {th.window} ({health.latency_jobs} jobs)"
        )
    return found


def _stuck_text(health: QueueHealth, limit: int) -> str:
    """E.g. ``1 active job(s) without a lock for >= 60s: 17 pdf.generate 75s (lock expired)``."""
    shown = ", ".join(
        f"{j.id} {j.name} {j.age_seconds}s{' (lock expired)' if j.lock_expired else ''}"
        for j in health.stuck[:3]
    )
    more = f" and {health.stalled - 3} more" if health.stalled > 3 else ""
    if all(j.lock_expired for j in health.stuck):
        text = f"{health.stalled} active job(s) without a lock for >= {limit}s"
    else:
        text = f"{health.stalled} active job(s) stuck (lock expired, or active) for >= {limit}s"
    return clip(f"{text}: {shown}{more}" if shown else text, 500)


def close_dropped(previous: Sequence[QueueState], observed: Sequence[str], ledger: Ledger) -> None:
    """A queue left the policy mid-breach: close its episodes with a Recover each."""
    for gone in previous:
        if gone.name in observed:
            continue
        for ended in gone.breaches:
            if ended.kind not in BreachKind.__members__.values():
                continue
            text = f"{ended.kind}: queue no longer watched by this policy"
            ledger.act(Recover(gone.name, BreachKind(ended.kind), text), text)


def alert(
    spec: QueuePolicySpec,
    name: str,
    current: Mapping[BreachKind, str],
    before: QueueState | None,
    repeat_after: timedelta,
    ledger: Ledger,
) -> list[QueueBreach]:
    """Alert breaches that began or are due again, recover those that ended; return the open ones."""
    old = {b.kind: b for b in (before.breaches if before else [])}
    breaches = [
        _alert_one(spec, name, kind, text, old.get(kind), repeat_after, ledger)
        for kind, text in current.items()
    ]
    _recover_ended(spec, name, current, old, ledger)
    return breaches


def _alert_one(
    spec: QueuePolicySpec,
    name: str,
    kind: BreachKind,
    text: str,
    had: QueueBreach | None,
    repeat_after: timedelta,
    ledger: Ledger,
) -> QueueBreach:
    """Alert a new breach once, a lasting one again every ``repeat_after``; the episode as it stands."""
    now = ledger.now
    if had is None:
        ledger.act(Alert(name, kind, text), text)
        if spec.alerts.events:
            ledger.announce("Warning", BREACH_REASONS[kind], f"queue {name}: {text}")
        return QueueBreach(kind=kind.value, message=text, since=now, last_alert_at=now)
    last = had.last_alert_at
    if last is None or now - last >= repeat_after:
        ledger.act(Alert(name, kind, text, repeat=True), f"still: {text}")
        if spec.alerts.events:
            ledger.announce(
                "Warning", BREACH_REASONS[kind], f"queue {name}: still {text} since {had.since.isoformat()}"
            )
        last = now
    return had.model_copy(update={"message": text, "last_alert_at": last})


def _recover_ended(
    spec: QueuePolicySpec,
    name: str,
    current: Mapping[BreachKind, str],
    old: Mapping[str, QueueBreach],
    ledger: Ledger,
) -> None:
    """One Recover for every known breach kind of the previous status that is no longer current."""
    for kind_name, had in old.items():
        try:
            kind = BreachKind(kind_name)
        except ValueError:
            continue
        if kind in current:
            continue
        if kind is BreachKind.PROCESSING_STOPPED:
            text = f"processing resumed (reported stopped since {had.since.isoformat()})"
        else:
            text = f"{kind.value} back within threshold (breached since {had.since.isoformat()})"
        ledger.act(Recover(name, kind, text), text)
        if spec.alerts.events:
            ledger.announce("Normal", Reason.RECOVERED, f"queue {name}: {text}")
