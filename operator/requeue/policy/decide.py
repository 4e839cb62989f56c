"""QueuePolicy decisions: (spec, previous status, observation, memory, now) -> :class:`Decision`.

Pure: no I/O, no clock, no randomness, so every rule is a table test and the
invariants are hypothesis properties (tests/unit/test_policy_decide*.py).

:func:`decide` composes the rules; each lives with its state: rule 1 in
:mod:`.thresholds`, rules 2 and 3 in :mod:`.pausing`, rule 4 in
:mod:`.autoreplay`. They add to one :class:`~requeue.policy.ledger.Ledger`,
so actions, Events and ``lastActions`` come out in the order listed here.

Rules, in the order they are applied:

1. **Thresholds.** A queue breaches ``failed`` / ``waiting`` (wait + prioritized,
   the backlog) when above the threshold, ``failureRate`` when the failure rate
   over ``window`` is above the percentage and at least ``failureRateMinJobs``
   jobs finished in the window, ``stalled`` when an active job has been
   without a lock, or active, for ``stalledActiveSeconds`` (the oldest listed in
   ``stuckActive``), ``processingStopped`` when jobs have waited and none
   completed or failed for ``stalledFor`` (the cause in ``processingStopped.reason``;
   not for a queue this policy holds paused), ``failedGrowing`` when the failed
   count is above ``failedGrowing.above`` and rose by ``minIncrease`` over ``window``.
   A breach is alerted once when it begins (:class:`Alert`), again every ``alerts.repeatAfter`` while it
   lasts (``repeat=True``), and once when it clears (:class:`Recover`). The
   ``Healthy`` condition is False while any queue breaches; its reason names
   the breach (``FailedAboveThreshold``...; ``ThresholdsBreached`` when kinds mix).
2. **Gates.** ``GatesPassed`` follows the gate results. An outage begins when a
   gate turns red (``outageStartedAt``) and ends when all are green
   (``gatesGreenSince``). Gates not checked yet change nothing. A gate whose
   check cannot run because of its configuration (``misconfigured``: a missing
   Secret or key, a denied destination, a URL/DSN/CA that does not parse) is
   neither red nor green: it changes nothing either (no pause, no resume, no
   auto replay; the previous state is kept), ``GatesPassed`` is Unknown and
   ``Ready`` False with its reason (``SecretNotFound``...), with a Warning Event.
   Escalation conditions on gates count it as not red.
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

A listed queue BullMQ has no key for (a typo: ``defualt``) is none of this:
its ``.status.queues[]`` entry says ``reason: QueueNotFound`` with the queues
that do exist, ``Healthy`` is False with that reason, a Warning Event says so
once, and nothing is paused, replayed or cleaned there (a pause would create
the key and hide the typo). The other queues are evaluated as usual.

``dryRun``: Alert and Recover still notify (reporting is what a dry run is
for); Pause, Resume, AutoReplay and Clean are decided, recorded in
``lastActions`` with ``dryRun: true`` (a dry-run Pause/Resume once per
would-be transition, tracked by ``dryRunPaused``) and left out of
:attr:`Decision.to_execute`. Clean is routine housekeeping and is recorded in
``lastActions`` only when it removed something (by the evaluator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from requeue.api.base import ConditionStatus, HasConditions, find_condition, parse_duration, set_condition
from requeue.api.conditions import PolicyCondition, Reason
from requeue.api.escalation import uses_condition
from requeue.api.policy import (
    CleanRule,
    CorruptJobRef,
    DuplicateKey,
    FailedJobName,
    PolicyAction,
    QueueBreach,
    QueueCorruptJobs,
    QueueDuplicates,
    QueuePolicySpec,
    QueuePolicyStatus,
    QueueState,
)
from requeue.errors import QueueNotFound
from requeue.policy import autoreplay, escalation, job_failures, thresholds
from requeue.policy.actions import (
    BREACH_REASONS,
    REMEDIATION,
    Action,
    ActionKind,
    AutoReplay,
    BreachKind,
    Clean,
    Pause,
    PolicyEvent,
    Resume,
)
from requeue.policy.ledger import Ledger, clip
from requeue.policy.observe import Observation, PolicyMemory, QueueMemory, QueueObservation
from requeue.policy.pausing import (
    Gates,
    Hold,
    gate_results,
    misconfigured_gates,
    misconfigured_reason,
    pause_or_resume,
    track_gates,
)
from requeue.queues.duplicates import Duplicates

__all__ = [
    "LAST_ACTIONS_LIMIT",
    "Decision",
    "decide",
    "observation_failed",
    "queues_to_observe",
    "release",
    "settle",
    "spec_rejected",
    "unobserved",
]

#: ``.status.lastActions`` keeps this many entries, newest first.
LAST_ACTIONS_LIMIT = 20


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
    #: Escalation's messages to send and snapshot to read (:mod:`.escalation`).
    escalation: escalation.EscalationOutcome | None = None

    @property
    def to_execute(self) -> tuple[Action, ...]:
        """The actions to carry out: all of them, or in a dry run only Alert and Recover."""
        if not self.dry_run:
            return self.actions
        return tuple(a for a in self.actions if not isinstance(a, REMEDIATION))


# ----------------------------------------------------------------- helpers


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


def queues_to_observe(spec: QueuePolicySpec, status: QueuePolicyStatus | None) -> list[str]:
    """The listed queues, then queues no longer listed that this policy still holds paused."""
    listed = list(dict.fromkeys(spec.queues))
    seen = set(listed)
    held = [q.name for q in (status.queues if status else []) if q.paused_by_policy and q.name not in seen]
    held += escalation.held_queues(status.escalation if status else None)
    return listed + list(dict.fromkeys(q for q in held if q not in seen))


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
    ledger = Ledger(now=now, generation=generation, conditions=list(prev.conditions))
    gates = track_gates(spec, prev, observation, ledger)
    if observation.error is not None:
        return _unobservable(spec, prev, observation, observation.error, memory, gates, ledger)
    tally = _decide_queues(spec, prev, observation, memory, gates, ledger)
    escalated = _escalate(spec, prev, observation, gates, tally, ledger, policy_name)
    if escalation.blocks_auto_replay(spec, escalated.status):
        marks = autoreplay.ReplayMarks(prev.last_auto_replay_at, prev.last_replayed_outage)
    else:
        marks = autoreplay.plan(
            spec, prev, observation, gates.finished_outage(), policy_name=policy_name, ledger=ledger
        )
    _schedule_clean(spec, observation, ledger)
    _set_health(spec, observation, tally, ledger)
    _gates_unusable(spec, prev, observation, ledger)
    new_status = _status(prev, observation, gates, marks, tally, ledger)
    new_status.escalation = escalated.status
    return Decision(
        new_status,
        PolicyMemory(tally.memory),
        tuple(ledger.actions),
        tuple(ledger.events),
        spec.dry_run,
        prev,
        escalated,
    )


def _escalate(
    spec: QueuePolicySpec,
    prev: QueuePolicyStatus,
    observation: Observation,
    gates: Gates,
    tally: _Tally,
    ledger: Ledger,
    policy_name: str,
) -> escalation.EscalationOutcome:
    """Escalation levels (:mod:`.escalation`) over the queue states just decided; its pause
    hand-overs replace those states."""
    states = {q.name: q for q in tally.queues}
    listed = set(spec.queues)
    signals = escalation.Signals(
        queues=[q for q in tally.queues if q.name in listed],
        gates=spec.gates,
        results=observation.gates,
        min_increase=spec.thresholds.failed_growing.min_increase if spec.thresholds.failed_growing else 1,
    )
    outcome = escalation.escalate(
        spec,
        prev.escalation,
        signals,
        observation.queues,
        states,
        gates.state == "red" and spec.actions.pause_while_gates_fail,
        ledger,
        policy_name=policy_name,
    )
    if outcome.queues:
        tally.queues = [outcome.queues.get(q.name, q) for q in tally.queues]
    return outcome


def unobserved(owner: HasConditions, reason: Reason, message: str, *, generation: int, now: datetime) -> None:
    """The queues could not be observed (Redis, a Secret, the spec): ``Ready`` is False with the
    problem's reason, ``Healthy`` Unknown. The operator uses it too, for problems met before
    :func:`decide` runs."""
    set_condition(owner, PolicyCondition.READY, False, reason, message, generation, now)
    set_condition(
        owner,
        PolicyCondition.HEALTHY,
        ConditionStatus.UNKNOWN,
        reason,
        "queues could not be observed",
        generation,
        now,
    )


def observation_failed(
    status: QueuePolicyStatus, reason: Reason, message: str, *, generation: int, now: datetime
) -> None:
    """A problem before any evaluation could run (Secret, Redis connection): :func:`unobserved`,
    computed for this generation."""
    unobserved(status, reason, message, generation=generation, now=now)
    status.observed_generation = generation


def spec_rejected(
    status: QueuePolicyStatus, reason: Reason, message: str, *, generation: int, now: datetime
) -> None:
    """The spec does not validate: ``Ready`` is False with the reason; nothing else is known anew."""
    set_condition(status, PolicyCondition.READY, False, reason, message, generation, now)
    status.observed_generation = generation


def _unobservable(
    spec: QueuePolicySpec,
    prev: QueuePolicyStatus,
    observation: Observation,
    error: str,
    memory: PolicyMemory,
    gates: Gates,
    ledger: Ledger,
) -> Decision:
    """Redis could not be read: keep what we knew, act on nothing, say why in ``Ready`` and ``Healthy``."""
    reason = observation.error_reason
    prev_ready = find_condition(prev.conditions, PolicyCondition.READY)
    if prev_ready is None or prev_ready.reason != reason:
        ledger.announce("Warning", reason, error)
    unobserved(ledger, reason, clip(error), generation=ledger.generation, now=ledger.now)
    new_status = prev.model_copy(
        update={
            "conditions": ledger.conditions,
            "gates": gate_results(prev, observation),
            "observed_generation": ledger.generation,
            "last_evaluated_at": ledger.now,
            "gates_green_since": gates.green_since,
            "outage_started_at": gates.outage_started,
        }
    )
    return Decision(new_status, memory, (), tuple(ledger.events), spec.dry_run, prev)


# ----------------------------------------------------------------- per queue


@dataclass(frozen=True)
class _Scope:
    """What every queue of one evaluation is judged by."""

    spec: QueuePolicySpec
    gates: Gates
    window: timedelta
    repeat_after: timedelta


@dataclass
class _Tally:
    """Per-queue outcomes: the new ``.status.queues`` and memory, and what breaches."""

    queues: list[QueueState] = field(default_factory=list)
    memory: dict[str, QueueMemory] = field(default_factory=dict)
    breach_kinds: set[BreachKind] = field(default_factory=set)
    #: ``"{queue}: {breach}"`` for the ``Healthy`` message.
    breach_texts: list[str] = field(default_factory=list)
    #: QueueNotFound messages of listed queues that do not exist.
    not_found: list[str] = field(default_factory=list)


def _decide_queues(
    spec: QueuePolicySpec,
    prev: QueuePolicyStatus,
    observation: Observation,
    memory: PolicyMemory,
    gates: Gates,
    ledger: Ledger,
) -> _Tally:
    """Rules 1 and 3 for every queue to observe: thresholds, then pause or resume."""
    scope = _Scope(
        spec, gates, parse_duration(spec.thresholds.window), parse_duration(spec.alerts.repeat_after)
    )
    tally = _Tally()
    observed = queues_to_observe(spec, prev)
    thresholds.close_dropped(prev.queues, observed, ledger)
    prev_queues = {q.name: q for q in prev.queues}
    for name in observed:
        _decide_queue(scope, name, prev_queues.get(name), observation.queues.get(name), memory, ledger, tally)
    return tally


def _decide_queue(
    scope: _Scope,
    name: str,
    before: QueueState | None,
    obs: QueueObservation | None,
    memory: PolicyMemory,
    ledger: Ledger,
    tally: _Tally,
) -> None:
    listed = name in scope.spec.queues
    if obs is None:
        # not observed (an unlisted queue we hold paused that the collector skipped): keep it
        if before is not None and not listed:
            tally.queues.append(before)
        return
    if obs.not_found is not None:
        _not_found(name, before, obs.not_found, listed, ledger, tally)
        return
    mem = memory.get(name)
    health = thresholds.measure(
        scope.spec.thresholds,
        scope.window,
        mem,
        obs,
        ledger.now,
        track_names=uses_condition(scope.spec.escalation, "failed_job_names"),
    )
    tally.memory[name] = health.memory
    current = thresholds.find_breaches(scope.spec, obs, health) if listed else {}
    breaches = thresholds.alert(scope.spec, name, current, before, scope.repeat_after, ledger)
    for kind, text in current.items():
        tally.breach_kinds.add(kind)
        tally.breach_texts.append(f"{name}: {text}")
    hold = pause_or_resume(scope.spec, scope.gates, name, before, obs, mem, ledger)
    # an unlisted queue has no breaches and no dry-run pause; it stays only while it is still ours
    if listed or hold.by_policy:
        state = _queue_state(name, obs, hold, health, breaches)
        keyed = scope.spec.duplicates is not None and scope.spec.duplicates.business_key is not None
        state.duplicates = duplicates_state(obs.duplicates, keyed=keyed)
        _announce_duplicates(scope.spec, name, before, state.duplicates, ledger)
        tally.queues.append(state)


#: Longest job id kept in ``.status.queues[].duplicates`` samples.
_ID_CHARS = 200


def duplicates_state(found: Duplicates | None, *, keyed: bool = True) -> QueueDuplicates | None:
    """``.status.queues[].duplicates`` from what the bounded read found (None: not looked for;
    ``businessKeys`` unset unless ``keyed``: no key named). Ids are cut to 200 characters (a job
    id is anything a producer chose)."""
    if found is None:
        return None
    return QueueDuplicates(
        scanned=found.scanned,
        ids=found.ids,
        business_keys=found.business_keys if keyed else None,
        sample_ids=[clip(j, _ID_CHARS) for j in found.sample_ids],
        sample_keys=[
            DuplicateKey(key=k, jobs=n, job_ids=[clip(j, _ID_CHARS) for j in ids])
            for k, n, ids in found.sample_keys
        ],
    )


def _announce_duplicates(
    spec: QueuePolicySpec,
    name: str,
    before: QueueState | None,
    now: QueueDuplicates | None,
    ledger: Ledger,
) -> None:
    """One Warning Event when duplicates appear (none, or none looked for, at the last evaluation);
    not again while they stay (the status and the gauge carry the counts)."""
    if now is None or not (now.ids or now.business_keys):
        return
    prev = before.duplicates if before is not None else None
    if prev is not None and (prev.ids or prev.business_keys):
        return
    parts = []
    if now.ids:
        parts.append(f"{now.ids} job ids listed more than once (e.g. {', '.join(now.sample_ids[:3])})")
    if now.business_keys:
        path = spec.duplicates.business_key if spec.duplicates else ""
        keys = ", ".join(k.key for k in now.sample_keys[:3])
        parts.append(f"{now.business_keys} values of {path} held by several waiting jobs (e.g. {keys})")
    ledger.announce(
        "Warning",
        Reason.DUPLICATE_JOBS,
        clip(f"queue {name}: " + "; ".join(parts) + f" among the {now.scanned} waiting ids read"),
    )


def _not_found(
    name: str, before: QueueState | None, message: str, listed: bool, ledger: Ledger, tally: _Tally
) -> None:
    """A queue without BullMQ keys: reported (an Event when it starts), never acted on."""
    if not listed:  # an unlisted queue we held paused is gone: nothing is left to resume
        return
    tally.not_found.append(message)
    tally.queues.append(
        QueueState(name=name, healthy=False, reason=QueueNotFound.reason, message=clip(message))
    )
    if before is None or before.reason != QueueNotFound.reason:
        ledger.announce("Warning", QueueNotFound.reason, message)


def _queue_state(
    name: str,
    obs: QueueObservation,
    hold: Hold,
    health: thresholds.QueueHealth,
    breaches: list[QueueBreach],
) -> QueueState:
    rate = health.rate
    return QueueState(
        name=name,
        waiting=obs.waiting,
        active=obs.active,
        completed=obs.completed,
        failed=obs.failed,
        delayed=obs.delayed,
        prioritized=obs.prioritized,
        paused=hold.paused,
        paused_by_policy=hold.by_policy,
        dry_run_paused=hold.dry_paused,
        failure_rate_percent=None if rate is None else round(rate, 2),
        stalled=health.stalled,
        stuck_active=list(health.stuck),
        workers=obs.workers,
        idle_since=None if health.idle_since is None else datetime.fromtimestamp(health.idle_since, UTC),
        processing_stopped=health.stopped,
        failed_change=health.failed_change,
        latency_p95_seconds=health.latency_p95,
        latency_jobs=health.latency_jobs,
        failed_job_names=(
            None
            if health.failed_names is None
            else [FailedJobName(name=n, failed=c) for n, c in health.failed_names.items()]
        ),
        corrupt_jobs=_corrupt_state(health.corrupt),
        healthy=not breaches,
        reasons=[b.message for b in breaches],
        breaches=breaches,
    )


def _corrupt_state(window: job_failures.CorruptWindow | None) -> QueueCorruptJobs | None:
    """``.status.queues[].corruptJobs`` from the corrupt-job window (ids cut to 200 characters)."""
    if window is None:
        return None
    return QueueCorruptJobs(
        found=window.found,
        checked=window.checked,
        sample=[
            CorruptJobRef(id=clip(jid, _ID_CHARS), reason=reason, at=datetime.fromtimestamp(ms / 1000, UTC))
            for jid, reason, ms in window.sample
        ],
    )


# ----------------------------------------------------------------- clean and status


def _schedule_clean(spec: QueuePolicySpec, observation: Observation, ledger: Ledger) -> None:
    """Rule 5: a Clean per listed queue and configured state with jobs past the grace (or any, uncounted)."""
    clean = spec.actions.clean
    if clean is None:
        return
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
                ledger.act(Clean(name, state, parse_duration(rule.grace), rule.limit, rule.archive))


def _set_health(spec: QueuePolicySpec, observation: Observation, tally: _Tally, ledger: Ledger) -> None:
    """``Healthy`` names the breach (or ``ThresholdsBreached`` when kinds mix; ``QueueNotFound``
    first, the mistake to fix first); ``Ready``: observed."""
    kinds = tally.breach_kinds
    if tally.not_found:
        set_condition(
            ledger,
            PolicyCondition.HEALTHY,
            False,
            QueueNotFound.reason,
            clip("; ".join(tally.not_found + tally.breach_texts)),
            ledger.generation,
            ledger.now,
        )
    elif kinds:
        reason = BREACH_REASONS[next(iter(kinds))] if len(kinds) == 1 else Reason.THRESHOLDS_BREACHED
        set_condition(
            ledger,
            PolicyCondition.HEALTHY,
            False,
            reason,
            clip("; ".join(tally.breach_texts)),
            ledger.generation,
            ledger.now,
        )
    else:
        set_condition(
            ledger,
            PolicyCondition.HEALTHY,
            True,
            Reason.WITHIN_THRESHOLDS,
            f"{len(spec.queues)} queue(s) within thresholds",
            ledger.generation,
            ledger.now,
        )
    set_condition(
        ledger,
        PolicyCondition.READY,
        True,
        Reason.EVALUATED,
        f"observed {len(observation.queues)} queue(s)",
        ledger.generation,
        ledger.now,
    )


def _gates_unusable(
    spec: QueuePolicySpec, prev: QueuePolicyStatus, observation: Observation, ledger: Ledger
) -> None:
    """Rule 2's configuration case: a gate whose check cannot run (a missing Secret...) makes
    ``Ready`` False with its reason (``SecretNotFound``...), and a Warning Event says so once
    when it begins or its reason changes. The queues were still observed and judged; only the
    gate is unusable, and nothing was decided on it (:mod:`.pausing`)."""
    unusable = misconfigured_gates(spec, observation.gates)
    if not unusable:
        return
    reason = misconfigured_reason(unusable[0])
    message = clip(
        "; ".join(f"gate {g.name} cannot be checked: {g.message}" for g in unusable)
        + ": nothing is paused, resumed or replayed because of it until it is fixed"
    )
    before = find_condition(prev.conditions, PolicyCondition.READY)
    if before is None or before.status != ConditionStatus.FALSE or before.reason != reason:
        ledger.announce("Warning", reason, message)
    set_condition(ledger, PolicyCondition.READY, False, reason, message, ledger.generation, ledger.now)


def _status(
    prev: QueuePolicyStatus,
    observation: Observation,
    gates: Gates,
    marks: autoreplay.ReplayMarks,
    tally: _Tally,
    ledger: Ledger,
) -> QueuePolicyStatus:
    return QueuePolicyStatus(
        conditions=ledger.conditions,
        observed_generation=ledger.generation,
        queues=tally.queues,
        gates=gate_results(prev, observation),
        last_actions=(list(reversed(ledger.records)) + list(prev.last_actions))[:LAST_ACTIONS_LIMIT],
        last_evaluated_at=ledger.now,
        gates_green_since=gates.green_since,
        outage_started_at=gates.outage_started,
        last_auto_replay_at=marks.last_auto_replay_at,
        last_replayed_outage=marks.last_replayed_outage,
    )


# ----------------------------------------------------------------- after the decision


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
            events.append(PolicyEvent("Normal", Reason.QUEUE_RESUMED, f"resumed {q.name}: {reason}"))
            records.append(PolicyAction(at=now, action=ActionKind.RESUME.value, queue=q.name, reason=reason))
            q = q.model_copy(update={"paused_by_policy": False})
        queues.append(q.model_copy(update={"dry_run_paused": False}))
    resumed = {a.queue for a in actions}
    for name in escalation.held_queues(prev.escalation):
        if name not in resumed:  # paused by an escalation level: ours to resume as well
            actions.append(Resume(name, reason, escalation=True))
            events.append(PolicyEvent("Normal", Reason.QUEUE_RESUMED, f"resumed {name}: {reason}"))
            records.append(PolicyAction(at=now, action=ActionKind.RESUME.value, queue=name, reason=reason))
    esc = prev.escalation.model_copy(update={"paused_queues": []}) if prev.escalation else None
    new_status = prev.model_copy(
        update={
            "queues": queues,
            "last_actions": (records[::-1] + list(prev.last_actions))[:LAST_ACTIONS_LIMIT],
            "escalation": esc,
        }
    )
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
    status = decision.status
    entries = list(status.last_actions)
    cleaned: list[PolicyAction] = []
    for index, text in (results or {}).items():
        action = decision.actions[index]
        if isinstance(action, Clean):
            cleaned.append(_clean_record(action, text, now=now, dry_run=decision.dry_run))
        else:
            _annotate(entries, action, text, now=now)
    queues = {q.name: q for q in status.queues}
    replay_failed = False
    failed: list[Action] = []
    for index, text in (failures or {}).items():
        action = decision.actions[index]
        failed.append(action)
        _annotate(entries, action, f"failed: {text}", now=now)
        replay_failed = _undo(queues, action) or replay_failed
    update: dict[str, object] = {
        "queues": list(queues.values()),
        "last_actions": (cleaned[::-1] + entries)[:LAST_ACTIONS_LIMIT],
        "escalation": escalation.undo_failed(status.escalation, failed),
    }
    if replay_failed and decision.previous is not None:
        update["last_replayed_outage"] = decision.previous.last_replayed_outage
        update["last_auto_replay_at"] = decision.previous.last_auto_replay_at
    return status.model_copy(update=update)


def _annotate(entries: list[PolicyAction], action: Action, text: str, *, now: datetime) -> None:
    """Put an outcome on the ``lastActions`` entry this evaluation recorded for ``action``."""
    for i, entry in enumerate(entries):
        if entry.at == now and entry.action == action.kind.value and entry.queue == action.queue:
            entries[i] = entry.model_copy(update={"result": clip(text, 200)})
            return


def _clean_record(action: Clean, text: str, *, now: datetime, dry_run: bool) -> PolicyAction:
    """The ``lastActions`` entry of a Clean that removed something."""
    grace = format_duration(action.grace)
    return PolicyAction(
        at=now,
        action=ActionKind.CLEAN.value,
        queue=action.queue,
        result=clip(text, 200),
        reason=f"{action.state} jobs older than {grace}, at most {action.limit}",
        dry_run=dry_run,
    )


def _undo(queues: dict[str, QueueState], action: Action) -> bool:
    """Undo the status effect of a failed action; True when it was an AutoReplay (un-mark the outage)."""
    state = queues.get(action.queue)
    if isinstance(action, Pause | Resume) and action.escalation:
        return False  # escalation's marks: escalation.undo_failed
    if isinstance(action, Pause) and state is not None:
        queues[action.queue] = state.model_copy(update={"paused_by_policy": False, "paused": False})
    elif isinstance(action, Resume) and state is not None:
        queues[action.queue] = state.model_copy(update={"paused_by_policy": True, "paused": True})
    elif isinstance(action, Resume):
        queues[action.queue] = QueueState(name=action.queue, paused=True, paused_by_policy=True)
    return isinstance(action, AutoReplay)
