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
from datetime import datetime, timedelta

from requeue.api.conditions import Reason
from requeue.api.policy import QueueBreach, QueuePolicySpec, QueueState, Thresholds
from requeue.policy.actions import BREACH_REASONS, Alert, BreachKind, Recover
from requeue.policy.ledger import Ledger
from requeue.policy.observe import BUCKETS_PER_WINDOW, QueueMemory, QueueObservation

__all__ = ["QueueHealth", "alert", "close_dropped", "find_breaches", "measure"]


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
    #: Active jobs without a lock for at least ``stalledActiveSeconds``.
    stalled: int
    memory: QueueMemory


def measure(
    th: Thresholds, window: timedelta, mem: QueueMemory, obs: QueueObservation, now: datetime
) -> QueueHealth:
    """The failure rate over ``window`` and the stalled jobs, from this observation and the memory."""
    win = _merge_window(mem, obs, window, now)
    finished = win.completed + win.failed
    rate = 100.0 * win.failed / finished if finished else None
    lockless: dict[str, int] = {}
    stalled = 0
    if obs.lockless_active is not None:
        now_s = _seconds(now)
        lockless = {jid: mem.lockless_since.get(jid, now_s) for jid in obs.lockless_active}
        limit = th.stalled_active_seconds or 0
        stalled = sum(1 for t in lockless.values() if now_s - t >= limit)
    memory = QueueMemory(cursor=obs.events.cursor or mem.cursor, buckets=win.buckets, lockless_since=lockless)
    return QueueHealth(rate, finished, stalled, memory)


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
        found[BreachKind.STALLED] = (
            f"{health.stalled} active job(s) without a lock for >= {th.stalled_active_seconds}s"
        )
    return found


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
        text = f"{kind.value} back within threshold (breached since {had.since.isoformat()})"
        ledger.act(Recover(name, kind, text), text)
        if spec.alerts.events:
            ledger.announce("Normal", Reason.RECOVERED, f"queue {name}: {text}")
