"""QueuePolicy decisions: (spec, previous status, observation, memory, now) -> :class:`Decision`.

Pure: no I/O, no clock, no randomness, so every rule is a table test and the
invariants are hypothesis properties (tests/unit/test_policy_decide*.py).

Rules, in the order they are applied:

1. **Thresholds.** A queue breaches ``failed`` / ``waiting`` (wait + prioritized,
   the backlog) when above the threshold, ``failureRate`` when the failure rate
   over ``window`` is above the percentage and at least ``failureRateMinJobs``
   jobs finished in the window, ``stalled`` when an active job has been
   without a lock for ``stalledActiveSeconds``. A breach is alerted once when
   it begins (:class:`Alert`), again every ``alerts.repeatAfter`` while it
   lasts (``repeat=True``), and once when it clears (:class:`Recover`). The
   ``Healthy`` condition is False while any queue breaches; its reason names
   the breach (``FailedAboveThreshold``...; ``ThresholdsBreached`` when kinds mix).
2. **Gates.** ``GatesPassed`` follows the gate results. An outage begins when a
   gate turns red (``outageStartedAt``) and ends when all are green
   (``gatesGreenSince``). Gates not checked yet change nothing.
3. **pauseWhileGatesFail.** While any gate is red, every listed queue that is
   not paused is paused and marked ``pausedByPolicy``. When all gates are
   green (or the option is switched off, or the queue leaves the policy),
   exactly the queues marked ``pausedByPolicy`` that are still paused are
   resumed. A queue someone else paused is never marked, hence never resumed;
   a queue someone resumed by hand loses the mark.
4. **autoReplay.** Once per outage, when all gates have been green for
   ``stableFor`` and the last auto replay is at least ``cooldown`` ago: one
   :class:`AutoReplay` (a child DLQReplay) per listed queue with failed jobs,
   selecting the jobs that failed between the outage's start and the
   recovery (intersected with the user's selector). A new outage that begins
   before the previous one was replayed extends it rather than replacing it,
   so its failures are not forgotten.
5. **clean.** Every evaluation, per queue and per configured state that has
   jobs older than the grace (or any jobs, when the collector did not count).

``dryRun``: Alert and Recover still notify (reporting is what a dry run is
for); Pause, Resume, AutoReplay and Clean are decided, recorded in
``lastActions`` with ``dryRun: true`` (a dry-run Pause/Resume once per
would-be transition, tracked by ``dryRunPaused``) and left out of
:attr:`Decision.to_execute`. Clean is routine housekeeping and is recorded in
``lastActions`` only when it removed something (by the evaluator).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal

from requeue.api.base import ConditionStatus, find_condition, parse_duration, set_condition
from requeue.api.common import Rate, Selector
from requeue.api.gates import GateStatus
from requeue.api.policy import (
    CleanRule,
    PolicyAction,
    QueueBreach,
    QueuePolicySpec,
    QueuePolicyStatus,
    QueueState,
)
from requeue.api.replay import Verify
from requeue.policy.observe import (
    BUCKETS_PER_WINDOW,
    Observation,
    PolicyMemory,
    QueueMemory,
    QueueObservation,
)

__all__ = [
    "BREACH_REASONS",
    "LAST_ACTIONS_LIMIT",
    "Action",
    "ActionKind",
    "Alert",
    "AutoReplay",
    "BreachKind",
    "Clean",
    "CondType",
    "Decision",
    "Pause",
    "PolicyEvent",
    "Recover",
    "Resume",
    "child_replay_name",
    "decide",
    "queues_to_observe",
    "release",
    "settle",
]

#: ``.status.lastActions`` keeps this many entries, newest first.
LAST_ACTIONS_LIMIT = 20
#: Longest condition message; longer ones end in "...".
MESSAGE_LIMIT = 1000


class ActionKind(StrEnum):
    """What the policy can do; the values are ``lastActions[].action`` and the metric label."""

    #: A threshold breach began (or repeats).
    ALERT = "Alert"
    #: A breach cleared.
    RECOVER = "Recover"
    #: Pause a queue while a gate is red.
    PAUSE = "Pause"
    #: Resume a queue this policy paused.
    RESUME = "Resume"
    #: Create a child DLQReplay for what failed during an outage.
    AUTO_REPLAY = "AutoReplay"
    #: Remove old finished jobs.
    CLEAN = "Clean"


class BreachKind(StrEnum):
    """Which threshold a queue breaches."""

    #: More failed jobs than ``thresholds.failed``.
    FAILED = "failed"
    #: A larger backlog (wait + prioritized) than ``thresholds.waiting``.
    WAITING = "waiting"
    #: Failure rate over the window above ``thresholds.failureRatePercent``.
    FAILURE_RATE = "failureRate"
    #: Active jobs without a lock for ``thresholds.stalledActiveSeconds``.
    STALLED = "stalled"


#: Condition reason / Event reason of each breach kind.
BREACH_REASONS: Mapping[BreachKind, str] = {
    BreachKind.FAILED: "FailedAboveThreshold",
    BreachKind.WAITING: "WaitingAboveThreshold",
    BreachKind.FAILURE_RATE: "FailureRateAboveThreshold",
    BreachKind.STALLED: "StalledJobs",
}


class CondType(StrEnum):
    """The condition types of a QueuePolicy."""

    #: No queue breaches a threshold.
    HEALTHY = "Healthy"
    #: Every gate passes.
    GATES_PASSED = "GatesPassed"
    #: The last evaluation could observe every queue.
    READY = "Ready"


@dataclass(frozen=True)
class Alert:
    """Tell people a queue breaches a threshold."""

    kind: ClassVar[ActionKind] = ActionKind.ALERT
    queue: str
    breach: BreachKind
    message: str
    #: True when this repeats an alert for a breach that lasts longer than ``repeatAfter``.
    repeat: bool = False


@dataclass(frozen=True)
class Recover:
    """Tell people a breach cleared."""

    kind: ClassVar[ActionKind] = ActionKind.RECOVER
    queue: str
    breach: BreachKind
    message: str


@dataclass(frozen=True)
class Pause:
    """Pause a queue (BullMQ's ``pause`` script) because a gate is red."""

    kind: ClassVar[ActionKind] = ActionKind.PAUSE
    queue: str
    reason: str


@dataclass(frozen=True)
class Resume:
    """Resume a queue this policy paused."""

    kind: ClassVar[ActionKind] = ActionKind.RESUME
    queue: str
    reason: str


@dataclass(frozen=True)
class AutoReplay:
    """Create the child DLQReplay ``name`` for ``queue`` with this selector."""

    kind: ClassVar[ActionKind] = ActionKind.AUTO_REPLAY
    queue: str
    #: Deterministic (policy, queue, outage start): creating it twice is a no-op (409).
    name: str
    selector: Selector
    rate: Rate
    verify: Verify | None
    max_replays_per_job: int
    outage_started_at: datetime
    recovered_at: datetime
    reason: str


@dataclass(frozen=True)
class Clean:
    """Remove up to ``limit`` jobs of ``state`` that finished more than ``grace`` ago."""

    kind: ClassVar[ActionKind] = ActionKind.CLEAN
    queue: str
    state: Literal["completed", "failed"]
    grace: timedelta
    limit: int


#: Every action a decision can contain.
Action = Alert | Recover | Pause | Resume | AutoReplay | Clean

#: Actions that change queues (left out of :attr:`Decision.to_execute` in a dry run).
_REMEDIATION = (Pause, Resume, AutoReplay, Clean)


@dataclass(frozen=True)
class PolicyEvent:
    """A Kubernetes Event to emit on the QueuePolicy."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """The outcome of one evaluation: the new status and memory, what to do, what to announce."""

    status: QueuePolicyStatus
    memory: PolicyMemory
    #: Everything decided, including what a dry run only records.
    actions: tuple[Action, ...]
    events: tuple[PolicyEvent, ...]
    dry_run: bool
    #: The status the decision started from (:func:`settle` restores parts of it on failures).
    previous: QueuePolicyStatus | None = None

    @property
    def to_execute(self) -> tuple[Action, ...]:
        """The actions to carry out: all of them, or in a dry run only Alert and Recover."""
        if not self.dry_run:
            return self.actions
        return tuple(a for a in self.actions if not isinstance(a, _REMEDIATION))


# ----------------------------------------------------------------- helpers


def _clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(value: datetime) -> int:
    return math.floor(value.timestamp())


def format_duration(value: timedelta) -> str:
    """``timedelta(days=1, minutes=30)`` -> ``"1d30m"`` (the spec's own notation)."""
    ms = round(value.total_seconds() * 1000)
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def child_replay_name(policy: str, queue: str, outage_started_at: datetime) -> str:
    """``{policy}-{queue}-{hash}``: a valid, deterministic DLQReplay name (at most 63 characters).

    Deterministic so that a retried evaluation creates the same child (the API
    server answers 409 the second time) instead of a second replay.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{policy}-{queue}".lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(f"{policy}/{queue}/{outage_started_at.isoformat()}".encode()).hexdigest()
    return f"{slug or 'replay'}-{digest[:10]}"


def queues_to_observe(spec: QueuePolicySpec, status: QueuePolicyStatus | None) -> list[str]:
    """The listed queues, then queues no longer listed that this policy still holds paused."""
    listed = list(dict.fromkeys(spec.queues))
    seen = set(listed)
    held = [q.name for q in (status.queues if status else []) if q.paused_by_policy and q.name not in seen]
    return listed + held


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
    return _Window(
        completed=sum(c for _, c, _ in kept), failed=sum(f for _, _, f in kept), buckets=kept
    )


def _breaches(
    spec: QueuePolicySpec, obs: QueueObservation, rate: float | None, finished: int, stalled: int
) -> dict[BreachKind, str]:
    th = spec.thresholds
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
    if th.stalled_active_seconds is not None and stalled > 0:
        found[BreachKind.STALLED] = (
            f"{stalled} active job(s) without a lock for >= {th.stalled_active_seconds}s"
        )
    return found


def _gate_state(
    spec: QueuePolicySpec, gates: Sequence[GateStatus] | None
) -> tuple[Literal["none", "unknown", "red", "green"], str]:
    if not spec.gates:
        return "none", "no gates configured"
    if gates is None:
        return "unknown", "gates not checked yet"
    names = {g.name for g in spec.gates}
    by_name = {g.name: g for g in gates if g.name in names}
    red = [g for g in by_name.values() if not g.healthy]
    if red:
        return "red", _clip("; ".join(f"{g.name}: {g.message or 'unhealthy'}" for g in red))
    missing = sorted(names - by_name.keys())
    if missing:
        return "unknown", f"not checked yet: {', '.join(missing)}"
    return "green", f"{len(names)} gate(s) healthy"


def _intersect(selector: Selector, after: datetime, before: datetime) -> Selector | None:
    lo = max(after, selector.failed_after) if selector.failed_after else after
    hi = min(before, selector.failed_before) if selector.failed_before else before
    if lo >= hi:
        return None
    return selector.model_copy(update={"failed_after": lo, "failed_before": hi})


# ----------------------------------------------------------------- decide


def decide(
    spec: QueuePolicySpec,
    status: QueuePolicyStatus | None,
    observation: Observation,
    memory: PolicyMemory | None = None,
    *,
    now: datetime,
    generation: int = 0,
    policy_name: str = "policy",
) -> Decision:
    """Decide one evaluation. See the module docstring for the rules.

    :param status: the previous status (None for a new policy).
    :param memory: the previous :class:`PolicyMemory` (None: start afresh).
    :param policy_name: names child DLQReplays (see :func:`child_replay_name`).
    """
    prev = status or QueuePolicyStatus()
    memory = memory or PolicyMemory()
    prev_queues = {q.name: q for q in prev.queues}
    dry = spec.dry_run
    actions: list[Action] = []
    events: list[PolicyEvent] = []
    records: list[PolicyAction] = []

    def record(action: ActionKind, queue: str, reason: str, *, dry_run: bool = False) -> None:
        records.append(PolicyAction(at=now, action=action.value, queue=queue, reason=reason,
                                    dry_run=dry_run))

    conditions = list(prev.conditions)

    # -- gates and outage bookkeeping -----------------------------------------
    gate_state, gate_message = _gate_state(spec, observation.gates)
    prev_gates = find_condition(prev.conditions, CondType.GATES_PASSED)
    prev_red = prev_gates is not None and prev_gates.status == ConditionStatus.FALSE
    auto = spec.actions.auto_replay
    outage_started = prev.outage_started_at
    green_since = prev.gates_green_since
    if gate_state == "red":
        if not prev_red:
            unreplayed = (
                auto is not None and outage_started is not None
                and prev.last_replayed_outage != outage_started
            )
            if not unreplayed:
                outage_started = now
            events.append(PolicyEvent("Warning", "GatesFailed", gate_message))
        green_since = None
    elif gate_state == "green":
        if green_since is None:
            green_since = now
        if prev_red:
            events.append(PolicyEvent("Normal", "GatesRecovered", gate_message))
    gate_cond = {
        "none": (ConditionStatus.TRUE, "NoGates"),
        "unknown": (ConditionStatus.UNKNOWN, "GatesNotChecked"),
        "red": (ConditionStatus.FALSE, "GateFailed"),
        "green": (ConditionStatus.TRUE, "AllGatesPassed"),
    }[gate_state]
    conditions = set_condition(conditions, type=CondType.GATES_PASSED, status=gate_cond[0],
                               reason=gate_cond[1], message=gate_message, generation=generation, now=now)
    gates = list(observation.gates) if observation.gates is not None else list(prev.gates)

    # -- Redis could not be read: keep what we knew, act on nothing ----------
    if observation.error is not None:
        prev_ready = find_condition(prev.conditions, CondType.READY)
        if prev_ready is None or prev_ready.reason != observation.error_reason:
            events.append(PolicyEvent("Warning", observation.error_reason, observation.error))
        conditions = set_condition(conditions, type=CondType.READY, status=False,
                                   reason=observation.error_reason, message=_clip(observation.error),
                                   generation=generation, now=now)
        conditions = set_condition(conditions, type=CondType.HEALTHY, status=ConditionStatus.UNKNOWN,
                                   reason=observation.error_reason, message="queues could not be observed",
                                   generation=generation, now=now)
        new_status = prev.model_copy(update={
            "conditions": conditions, "gates": gates, "observed_generation": generation,
            "last_evaluated_at": now, "gates_green_since": green_since,
            "outage_started_at": outage_started,
        })
        return Decision(new_status, memory, (), tuple(events), dry, prev)

    # -- per queue: thresholds, pause/resume, memory --------------------------
    th = spec.thresholds
    window = parse_duration(th.window)
    repeat_after = parse_duration(spec.alerts.repeat_after)
    pause_enabled = spec.actions.pause_while_gates_fail
    listed = set(spec.queues)
    new_queues: list[QueueState] = []
    new_memory: dict[str, QueueMemory] = {}
    breach_kinds: set[BreachKind] = set()
    breach_texts: list[str] = []

    observed_names = queues_to_observe(spec, prev)
    for gone in prev.queues:
        if gone.name in observed_names:
            continue
        for ended in gone.breaches:  # a queue left the policy mid-breach: close its episodes
            if ended.kind not in BreachKind.__members__.values():
                continue
            text = f"{ended.kind}: queue no longer watched by this policy"
            actions.append(Recover(gone.name, BreachKind(ended.kind), text))
            record(ActionKind.RECOVER, gone.name, text)

    for name in observed_names:
        before = prev_queues.get(name)
        obs = observation.queues.get(name)
        if obs is None:
            # not observed (an unlisted queue we hold paused that the collector skipped): keep it
            if before is not None and name not in listed:
                new_queues.append(before)
            continue
        mem = memory.get(name)

        # failure rate and stalled jobs
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
        new_memory[name] = QueueMemory(cursor=obs.events.cursor or mem.cursor, buckets=win.buckets,
                                       lockless_since=lockless)

        # thresholds -> alerts (listed queues only)
        current = _breaches(spec, obs, rate, finished, stalled) if name in listed else {}
        old = {b.kind: b for b in (before.breaches if before else [])}
        breaches: list[QueueBreach] = []
        for kind, text in current.items():
            had = old.get(kind)
            if had is None:
                actions.append(Alert(name, kind, text))
                record(ActionKind.ALERT, name, text)
                if spec.alerts.events:
                    events.append(PolicyEvent("Warning", BREACH_REASONS[kind], f"queue {name}: {text}"))
                breaches.append(QueueBreach(kind=kind.value, message=text, since=now, last_alert_at=now))
                continue
            last = had.last_alert_at
            if last is None or now - last >= repeat_after:
                actions.append(Alert(name, kind, text, repeat=True))
                record(ActionKind.ALERT, name, f"still: {text}")
                if spec.alerts.events:
                    events.append(PolicyEvent("Warning", BREACH_REASONS[kind],
                                              f"queue {name}: still {text} since {had.since.isoformat()}"))
                last = now
            breaches.append(had.model_copy(update={"message": text, "last_alert_at": last}))
        for kind_name, had in old.items():
            try:
                kind = BreachKind(kind_name)
            except ValueError:
                continue
            if kind in current:
                continue
            text = f"{kind.value} back within threshold (breached since {had.since.isoformat()})"
            actions.append(Recover(name, kind, text))
            record(ActionKind.RECOVER, name, text)
            if spec.alerts.events:
                events.append(PolicyEvent("Normal", "Recovered", f"queue {name}: {text}"))
        for kind in current:
            breach_kinds.add(kind)
            breach_texts.append(f"{name}: {current[kind]}")

        # pause / resume
        # memory's mark covers a pause whose status write was lost (the process died in between)
        by_policy = (before.paused_by_policy if before else False) or mem.paused_by_policy
        dry_paused = (before.dry_run_paused if before else False) and dry
        if by_policy and not obs.paused:
            by_policy = False  # resumed by someone else (or never took effect): not ours any more
        want_paused = pause_enabled and name in listed and gate_state == "red"
        may_resume = gate_state == "green" or not pause_enabled or name not in listed
        paused_now = obs.paused
        if want_paused and not obs.paused:
            reason = f"gate red: {gate_message}"
            if dry:
                if not dry_paused:
                    actions.append(Pause(name, reason))
                    record(ActionKind.PAUSE, name, reason, dry_run=True)
                    events.append(PolicyEvent("Normal", "QueuePaused", f"[dry run] would pause {name}: "
                                              f"{reason}"))
                    dry_paused = True
            else:
                actions.append(Pause(name, reason))
                record(ActionKind.PAUSE, name, reason)
                events.append(PolicyEvent("Normal", "QueuePaused", f"paused {name}: {reason}"))
                by_policy = True
                paused_now = True
        elif may_resume:
            reason = (
                "all gates green" if gate_state == "green"
                else "pauseWhileGatesFail is off" if not pause_enabled
                else "queue no longer in the policy"
            )
            if by_policy and not dry:
                actions.append(Resume(name, reason))
                record(ActionKind.RESUME, name, reason)
                events.append(PolicyEvent("Normal", "QueueResumed", f"resumed {name}: {reason}"))
                by_policy = False
                paused_now = False
            if dry_paused:
                actions.append(Resume(name, reason))
                record(ActionKind.RESUME, name, reason, dry_run=True)
                events.append(PolicyEvent("Normal", "QueueResumed", f"[dry run] would resume {name}: "
                                          f"{reason}"))
                dry_paused = False

        if name not in listed:
            if by_policy:  # still ours (dry run, or gates unknown): remember it
                new_queues.append(_queue_state(name, obs, paused_now, by_policy, False, rate, stalled, []))
            continue
        new_queues.append(_queue_state(name, obs, paused_now, by_policy, dry_paused, rate, stalled, breaches))

    # -- auto replay ----------------------------------------------------------
    last_auto = prev.last_auto_replay_at
    last_replayed = prev.last_replayed_outage
    if (
        auto is not None
        and gate_state == "green"
        and outage_started is not None
        and green_since is not None
        and last_replayed != outage_started
        and now - green_since >= parse_duration(auto.stable_for)
        and (last_auto is None or now - last_auto >= parse_duration(auto.cooldown))
    ):
        created = 0
        for name in spec.queues:
            obs = observation.queues.get(name)
            if obs is None or obs.failed == 0:
                continue
            selector = _intersect(auto.selector, outage_started, green_since)
            if selector is None:
                continue
            child = child_replay_name(policy_name, name, outage_started)
            reason = (f"outage {outage_started.isoformat()} - {green_since.isoformat()} over, "
                      f"gates green for {auto.stable_for}")
            actions.append(AutoReplay(
                queue=name, name=child, selector=selector, rate=auto.rate, verify=auto.verify,
                max_replays_per_job=auto.max_replays_per_job, outage_started_at=outage_started,
                recovered_at=green_since, reason=reason,
            ))
            record(ActionKind.AUTO_REPLAY, name, reason, dry_run=dry)
            events.append(PolicyEvent("Normal", "AutoReplay",
                                      f"{'[dry run] would create' if dry else 'creating'} DLQReplay "
                                      f"{child} for {name}: {reason}"))
            created += 1
        last_replayed = outage_started
        if created:
            last_auto = now

    # -- clean ----------------------------------------------------------------
    clean = spec.actions.clean
    if clean is not None:
        for name in spec.queues:
            obs = observation.queues.get(name)
            if obs is None:
                continue
            rules: tuple[tuple[Literal["completed", "failed"], CleanRule | None, int], ...] = (
                ("completed", clean.completed, obs.completed),
                ("failed", clean.failed, obs.failed),
            )
            for state, rule, count in rules:
                if obs.cleanable is not None:
                    count = obs.cleanable.get(state, count)
                if rule is not None and count > 0:
                    actions.append(Clean(name, state, parse_duration(rule.grace), rule.limit))

    # -- conditions and status ------------------------------------------------
    if breach_kinds:
        reason = BREACH_REASONS[next(iter(breach_kinds))] if len(breach_kinds) == 1 else "ThresholdsBreached"
        conditions = set_condition(conditions, type=CondType.HEALTHY, status=False, reason=reason,
                                   message=_clip("; ".join(breach_texts)), generation=generation, now=now)
    else:
        conditions = set_condition(conditions, type=CondType.HEALTHY, status=True,
                                   reason="WithinThresholds",
                                   message=f"{len(spec.queues)} queue(s) within thresholds",
                                   generation=generation, now=now)
    conditions = set_condition(conditions, type=CondType.READY, status=True, reason="Evaluated",
                               message=f"observed {len(observation.queues)} queue(s)",
                               generation=generation, now=now)
    last_actions = (list(reversed(records)) + list(prev.last_actions))[:LAST_ACTIONS_LIMIT]
    new_status = QueuePolicyStatus(
        conditions=conditions,
        observed_generation=generation,
        queues=new_queues,
        gates=gates,
        last_actions=last_actions,
        last_evaluated_at=now,
        gates_green_since=green_since,
        outage_started_at=outage_started,
        last_auto_replay_at=last_auto,
        last_replayed_outage=last_replayed,
    )
    return Decision(new_status, PolicyMemory(new_memory), tuple(actions), tuple(events), dry, prev)


def _queue_state(
    name: str, obs: QueueObservation, paused: bool, by_policy: bool, dry_paused: bool,
    rate: float | None, stalled: int, breaches: list[QueueBreach],
) -> QueueState:
    return QueueState(
        name=name, waiting=obs.waiting, active=obs.active, completed=obs.completed, failed=obs.failed,
        delayed=obs.delayed, prioritized=obs.prioritized, paused=paused, paused_by_policy=by_policy,
        dry_run_paused=dry_paused,
        failure_rate_percent=None if rate is None else round(rate, 2), stalled=stalled,
        healthy=not breaches, reasons=[b.message for b in breaches], breaches=breaches,
    )


def release(status: QueuePolicyStatus | None, *, now: datetime, reason: str = "policy deleted") -> Decision:
    """What to do when the policy goes away (finalizer): resume every queue it paused, for real.

    Leaves things as found (DESIGN.md): queues someone else paused stay paused.
    """
    prev = status or QueuePolicyStatus()
    actions: list[Action] = []
    events: list[PolicyEvent] = []
    records: list[PolicyAction] = []
    queues: list[QueueState] = []
    for q in prev.queues:
        if q.paused_by_policy:
            actions.append(Resume(q.name, reason))
            events.append(PolicyEvent("Normal", "QueueResumed", f"resumed {q.name}: {reason}"))
            records.append(PolicyAction(at=now, action=ActionKind.RESUME.value, queue=q.name, reason=reason))
            q = q.model_copy(update={"paused_by_policy": False})
        queues.append(q.model_copy(update={"dry_run_paused": False}))
    new_status = prev.model_copy(update={
        "queues": queues, "last_actions": (records[::-1] + list(prev.last_actions))[:LAST_ACTIONS_LIMIT],
    })
    return Decision(new_status, PolicyMemory(), tuple(actions), tuple(events), False, prev)


def settle(
    decision: Decision,
    *,
    now: datetime,
    results: Mapping[int, str] | None = None,
    failures: Mapping[int, str] | None = None,
) -> QueuePolicyStatus:
    """The status to write once the actions ran: outcomes recorded, failed effects undone.

    ``results`` and ``failures`` map an index into ``decision.actions`` to a
    short text (e.g. the child DLQReplay name, "removed 37", or the error).

    * A failed Pause is not ours: ``pausedByPolicy`` goes back to False (else a
      later pause by someone else could be mistaken for ours and resumed).
    * A failed Resume stays ours, so the next evaluation tries again.
    * A failed AutoReplay un-marks the outage as replayed (the retry creates
      the same deterministic names; those that exist are kept).
    * A Clean that removed something is added to ``lastActions``.
    """
    results = results or {}
    failures = failures or {}
    status = decision.status
    queues = {q.name: q for q in status.queues}
    entries = list(status.last_actions)
    clean_records: list[PolicyAction] = []
    replay_failed = False

    def annotate(action: Action, text: str) -> None:
        for i, entry in enumerate(entries):
            if entry.at == now and entry.action == action.kind.value and entry.queue == action.queue:
                entries[i] = entry.model_copy(update={"result": _clip(text, 200)})
                return

    for index, text in results.items():
        action = decision.actions[index]
        if isinstance(action, Clean):
            grace = format_duration(action.grace)
            clean_records.append(PolicyAction(
                at=now, action=ActionKind.CLEAN.value, queue=action.queue, result=_clip(text, 200),
                reason=f"{action.state} jobs older than {grace}, at most {action.limit}",
                dry_run=decision.dry_run))
        else:
            annotate(action, text)
    for index, text in failures.items():
        action = decision.actions[index]
        annotate(action, f"failed: {text}")
        state = queues.get(action.queue)
        if isinstance(action, Pause) and state is not None:
            queues[action.queue] = state.model_copy(update={"paused_by_policy": False, "paused": False})
        elif isinstance(action, Resume) and state is not None:
            queues[action.queue] = state.model_copy(update={"paused_by_policy": True, "paused": True})
        elif isinstance(action, Resume):
            queues[action.queue] = QueueState(name=action.queue, paused=True, paused_by_policy=True)
        elif isinstance(action, AutoReplay):
            replay_failed = True
    update: dict[str, object] = {
        "queues": list(queues.values()),
        "last_actions": (clean_records[::-1] + entries)[:LAST_ACTIONS_LIMIT],
    }
    if replay_failed and decision.previous is not None:
        update["last_replayed_outage"] = decision.previous.last_replayed_outage
        update["last_auto_replay_at"] = decision.previous.last_auto_replay_at
    return status.model_copy(update=update)
