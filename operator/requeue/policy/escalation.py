"""Escalation levels (``spec.escalation``): which level is in force, and what entering or leaving it does.

Pure, like :mod:`.decide` (which calls :func:`escalate` after the per-queue rules):
the signals are the queue states just decided (counts, breaches, processing stopped,
stuck jobs) and the gate results; the outcome is the new ``.status.escalation``, the
Events, the pauses and resumes (through the :class:`~requeue.policy.ledger.Ledger`, so
the evaluator carries them out like any other), one message per channel per change,
and whether a snapshot of failed job ids is to be read.

**No flapping.** Every level has its own *in force* flag with hysteresis: it turns on
once the level's conditions have held continuously for ``holdFor`` and off once they
have been clear continuously for ``holdFor`` (measured between evaluations, from the
first evaluation that saw the change: ``.status.escalation.levels[].since``). The level
in force is the highest whose flag is on. So a condition that toggles faster than
``holdFor`` changes nothing, and a change of the level in force is one transition: one
Event, and one message to each channel of the level left and the level entered.

**Pauses are owned.** A level with ``pauseQueues`` pauses the listed queues that are not
paused and remembers them (``pausedQueues``); a queue the gate rule (``pauseWhileGatesFail``)
holds is taken over, so green gates do not resume it while the level is in force. When no
level that pauses is in force, exactly the remembered queues that are still paused are
resumed (or handed back to the gate rule while a gate is still red); a queue someone else
paused is never remembered, one someone resumed by hand is forgotten.

**Messages are retried.** Each change of level queues one message per channel in
``.status.escalation.pendingNotifications``; the evaluator sends what is due and
:func:`with_results` drops what went out. A message that failed (the webhook answered 5xx, or
could not be reached) stays, with its attempts and the time of the next one (backoff
:func:`retry_delay`), and is tried again at a later evaluation, at most
:data:`~requeue.api.escalation.MAX_NOTIFY_ATTEMPTS` times; a channel's messages go out in order
(a new one for a channel that has some waiting is tried right away, behind them). One that was
sent is never sent again: it leaves the list in the status written with its result. (A crash
between the webhook's answer and that status write sends it once more, as it would the
change of level itself: delivery is at least once.)

**Dry run** (``spec.dryRun``): the level is tracked and reported the same way, the Events
are emitted (prefixed "[dry run]"), would-be pauses and resumes are recorded in
``lastActions`` once per would-be transition, and no message is sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from requeue.api.base import find_condition, parse_duration, set_condition
from requeue.api.conditions import PolicyCondition, Reason
from requeue.api.escalation import (
    MAX_NOTIFY_ATTEMPTS,
    MAX_PENDING_NOTIFICATIONS,
    MAX_SAMPLE,
    EscalationChannel,
    EscalationCondition,
    EscalationLevel,
    EscalationLevelState,
    EscalationNotification,
    EscalationSnapshot,
    EscalationSpec,
    EscalationStatus,
    FailedSample,
    GatesRed,
    PendingNotification,
    SnapshotQueue,
)
from requeue.api.gates import GateSpec, GateStatus
from requeue.api.policy import QueuePolicySpec, QueueState
from requeue.metrics import ESCALATION_LEVEL, ESCALATION_MESSAGES, ESCALATION_MESSAGES_PENDING
from requeue.policy.actions import ActionKind, Pause, PolicyEvent, Resume
from requeue.policy.ledger import Ledger, clip
from requeue.policy.observe import QueueObservation

#: Characters of a failed job id kept in the snapshot (ids are the producer's, of any length).
MAX_ID_CHARS = 200

__all__ = [
    "Delivery",
    "EscalationOutcome",
    "LevelTiming",
    "Notice",
    "Signals",
    "blocks_auto_replay",
    "count_deliveries",
    "escalate",
    "export_level",
    "forget_level",
    "held_queues",
    "judge",
    "retry_delay",
    "step_levels",
    "undo_failed",
    "with_results",
]

#: Longest message to a channel.
NOTICE_LIMIT = 3000
#: Wait before the first retry of a message; doubled after each failed attempt up to :data:`RETRY_MAX`.
RETRY_FIRST = timedelta(seconds=15)
RETRY_MAX = timedelta(minutes=5)


def retry_delay(attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts (>= 1): 15 s, 30 s, 1 m, ... at most 5 m."""
    doubled: timedelta = RETRY_FIRST * (1 << max(0, min(attempts - 1, 16)))
    return min(RETRY_MAX, doubled)


# ----------------------------------------------------------------- signals


@dataclass(frozen=True)
class Signals:
    """What the conditions are judged on: the listed queues' new states and the gates."""

    queues: Sequence[QueueState]
    gates: Sequence[GateSpec]
    #: None: gates not checked yet (a gates condition does not hold).
    results: Sequence[GateStatus] | None
    #: ``thresholds.failedGrowing.minIncrease`` (1 when unset): what "growing" means.
    min_increase: int = 1


def _enough(hits: list[str], min_queues: int, what: str) -> str | None:
    if len(hits) < min_queues:
        return None
    shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
    return f"{what} in {len(hits)} queue(s): {shown}"


def judge(condition: EscalationCondition, signals: Signals) -> str | None:
    """Why ``condition`` holds (a short text for ``.status.escalation.reasons``), or None."""
    queues = [q for q in signals.queues if not q.reason]  # QueueNotFound entries carry no counts
    if (c := condition.failed) is not None:
        hits = [
            f"{q.name} {q.failed}" + (f" (+{q.failed_change})" if c.growing else "")
            for q in queues
            if q.failed > c.above
            and (not c.growing or (q.failed_change is not None and q.failed_change >= signals.min_increase))
        ]
        return _enough(hits, c.min_queues, f"failed > {c.above}" + (" and growing" if c.growing else ""))
    if (w := condition.waiting) is not None:
        hits = [
            f"{q.name} {q.waiting + q.prioritized}" for q in queues if q.waiting + q.prioritized > w.above
        ]
        return _enough(hits, w.min_queues, f"waiting > {w.above}")
    if (s := condition.stuck_active) is not None:
        hits = [f"{q.name} {q.stalled}" for q in queues if q.stalled > s.above]
        return _enough(hits, s.min_queues, f"stuck active jobs > {s.above}")
    if (p := condition.processing_stopped) is not None:
        wanted = {r.value for r in p.reasons}
        hits = [
            f"{q.name} ({q.processing_stopped.reason})"
            for q in queues
            if q.processing_stopped is not None and (not wanted or q.processing_stopped.reason in wanted)
        ]
        return _enough(hits, p.min_queues, "processing stopped")
    if (n := condition.failed_job_names) is not None:
        return _judge_names(queues, n.at_least, n.min_failures)
    if (x := condition.corrupt_jobs) is not None:
        hits = [
            f"{q.name} {q.corrupt_jobs.found}"
            for q in queues
            if q.corrupt_jobs is not None and q.corrupt_jobs.found > x.above
        ]
        return _enough(hits, x.min_queues, f"corrupt jobs > {x.above}")
    if (b := condition.breaching) is not None:
        kinds = {k.value for k in b.kinds}
        hits = [
            f"{q.name} ({', '.join(sorted(x.kind for x in q.breaches if not kinds or x.kind in kinds))})"
            for q in queues
            if any(not kinds or x.kind in kinds for x in q.breaches)
        ]
        return _enough(hits, b.min_queues, "breaching")
    g = condition.gates
    assert g is not None  # the model sets exactly one signal
    return _judge_gates(g.names, {k.value for k in g.kinds}, g.red, signals)


def _judge_names(queues: Sequence[QueueState], at_least: int, min_failures: int) -> str | None:
    """Failures across several job names: the names (all queues together) with at least
    ``min_failures`` failures in the window, when there are ``at_least`` of them."""
    totals: dict[str, int] = {}
    for q in queues:
        for entry in q.failed_job_names or ():
            totals[entry.name] = totals.get(entry.name, 0) + entry.failed
    names = sorted((n for n, c in totals.items() if c >= min_failures), key=lambda n: (-totals[n], n))
    if len(names) < at_least:
        return None
    shown = ", ".join(f"{n} {totals[n]}" for n in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"failures across {len(names)} job names: {shown}{more}"


def _judge_gates(names: Sequence[str], kinds: set[str], red: GatesRed, signals: Signals) -> str | None:
    if signals.results is None:
        return None
    selected = [
        gate.name
        for gate in signals.gates
        if (not names and not kinds) or gate.name in names or gate.type.value in kinds
    ]
    if not selected:
        return None
    results = {r.name: r for r in signals.results}
    # a gate that cannot be checked (misconfigured: a missing Secret...) is not red
    red_ones = [
        n for n in selected if n in results and not results[n].healthy and not results[n].misconfigured
    ]
    if red == GatesRed.ALL and len(red_ones) == len(selected):
        return f"every selected gate red: {', '.join(red_ones)}"
    if red == GatesRed.ANY and red_ones:
        return f"gate(s) red: {', '.join(red_ones)}"
    return None


def judge_level(level: EscalationLevel, signals: Signals) -> list[str] | None:
    """The reasons a level holds (all of ``when.all`` and one of ``when.any``), or None."""
    reasons: list[str] = []
    for condition in level.when.all:
        why = judge(condition, signals)
        if why is None:
            return None
        reasons.append(why)
    if level.when.any:
        held = [why for c in level.when.any if (why := judge(c, signals)) is not None]
        if not held:
            return None
        reasons.extend(held)
    return reasons


# ----------------------------------------------------------------- the level machine


@dataclass(frozen=True)
class LevelTiming:
    """A level as the machine sees it: its name and hold time."""

    name: str
    hold_for: timedelta


@dataclass(frozen=True)
class _Flag:
    holding: bool
    since: datetime
    in_force: bool


def step_levels(
    levels: Sequence[LevelTiming],
    previous: Mapping[str, EscalationLevelState],
    previous_in_force: Mapping[str, bool],
    holding: Sequence[bool],
    now: datetime,
) -> tuple[int, list[EscalationLevelState], list[bool]]:
    """One step of every level's hysteresis; returns (level in force 0..n, level states, in-force flags).

    ``previous`` maps a level name to its last state; a level seen for the first time
    starts clear and not in force, its ``since`` now.
    """
    states: list[EscalationLevelState] = []
    flags: list[bool] = []
    for timing, holds in zip(levels, holding, strict=True):
        before = previous.get(timing.name)
        in_force = previous_in_force.get(timing.name, False)
        kept = before.since if before is not None and before.holding == holds else None
        since = kept or now
        if now - since >= timing.hold_for:
            in_force = holds
        states.append(EscalationLevelState(name=timing.name, holding=holds, since=since, in_force=in_force))
        flags.append(in_force)
    current = max((i + 1 for i, on in enumerate(flags) if on), default=0)
    return current, states, flags


# ----------------------------------------------------------------- the outcome


@dataclass(frozen=True)
class Notice:
    """One message to one channel about one change of level (new, or a retry)."""

    channel: EscalationChannel
    text: str
    #: When it was first due (with the channel and text, it names its pending entry).
    since: datetime | None = None
    #: Attempts made before this one.
    attempts: int = 0


@dataclass(frozen=True)
class Delivery:
    """What became of one attempt: ``error`` None when the webhook took it."""

    notice: Notice
    error: str | None = None


@dataclass(frozen=True)
class SnapshotRequest:
    """Read the newest ``sample_size`` failed job ids of each of ``queues``."""

    queues: tuple[str, ...]
    sample_size: int


@dataclass
class EscalationOutcome:
    """What :func:`escalate` decided (the pauses and Events are in the ledger)."""

    status: EscalationStatus | None
    #: Messages to send now, in order (each channel's oldest first; none in a dry run: they are
    #: recorded in the status as not sent). The sender skips the rest of a channel after a failure.
    notices: list[Notice] = field(default_factory=list)
    snapshot: SnapshotRequest | None = None
    #: Queue states the pause hand-over changed (``pausedByPolicy`` taken over or handed back).
    queues: dict[str, QueueState] = field(default_factory=dict)


def blocks_auto_replay(spec: QueuePolicySpec, status: EscalationStatus | None) -> bool:
    """Whether the level in force says ``stopAutoReplay``."""
    level = _level(spec.escalation, status)
    return level is not None and level.actions.stop_auto_replay


def held_queues(status: EscalationStatus | None) -> list[str]:
    """Queues escalation holds paused (observed even when no longer listed, to resume them)."""
    return list(status.paused_queues) if status is not None else []


def _level(spec: EscalationSpec | None, status: EscalationStatus | None) -> EscalationLevel | None:
    if spec is None or status is None or status.level == 0:
        return None
    return next((lv for lv in spec.levels if lv.name == status.name), None)


def escalate(
    spec: QueuePolicySpec,
    prev: EscalationStatus | None,
    signals: Signals,
    observed: Mapping[str, QueueObservation],
    states: Mapping[str, QueueState],
    gates_red: bool,
    ledger: Ledger,
    *,
    policy_name: str,
) -> EscalationOutcome:
    """Judge the levels, step their hysteresis, and decide what a change of level does.

    :param observed: this evaluation's queue observations (paused or not).
    :param states: the queue states the per-queue rules decided (``pausedByPolicy``).
    :param gates_red: the gate rule holds queues paused now (a gate red and
        ``pauseWhileGatesFail``): queues escalation releases are handed back to it.
    """
    esc = spec.escalation
    if esc is None and (prev is None or (prev.level == 0 and not prev.paused_queues)):
        return EscalationOutcome(None)
    levels = list(esc.levels) if esc is not None else []
    reasons = [judge_level(level, signals) for level in levels]
    previous = {s.name: s for s in (prev.levels if prev else [])}
    current, level_states, _ = step_levels(
        [LevelTiming(lv.name, parse_duration(lv.hold_for)) for lv in levels],
        previous,
        {s.name: s.in_force for s in previous.values()},
        [r is not None for r in reasons],
        ledger.now,
    )
    names = [lv.name for lv in levels]
    before_name = prev.name if prev is not None and prev.level else ""
    # a level renamed or removed from the spec counts as left (its index: 0)
    before_index = names.index(before_name) + 1 if before_name in names else 0
    before_level = levels[before_index - 1] if before_index else None
    after_level = levels[current - 1] if current else None
    after_name = after_level.name if after_level else ""
    dry = spec.dry_run
    same = prev is not None and before_name == after_name
    status = EscalationStatus(
        level=current,
        name=after_name,
        since=(prev.since if same and prev is not None else ledger.now) if current else None,
        reasons=list(prev.reasons) if same and prev is not None and current else [],
        dry_run=dry,
        paused_queues=list(prev.paused_queues) if prev else [],
        dry_run_paused_queues=list(prev.dry_run_paused_queues) if prev and dry else [],
        levels=level_states,
        snapshot=prev.snapshot if prev else None,
        notifications=list(prev.notifications) if prev else [],
        pending_notifications=list(prev.pending_notifications) if prev and not dry else [],
    )
    outcome = EscalationOutcome(status)
    transition: Reason | None = None
    if before_name != after_name:
        why = (reasons[current - 1] or []) if current else []
        status.reasons = [clip(r, 300) for r in why][:20]
        transition = _transition(
            before_level,
            before_name,
            after_level,
            current > before_index,
            status,
            outcome,
            ledger,
            policy_name,
        )
        if after_level is not None and after_level.actions.snapshot:
            status.snapshot = _snapshot(after_level, signals, ledger.now)
            outcome.snapshot = SnapshotRequest(
                tuple(q.name for q in signals.queues if not q.reason), after_level.actions.sample_size
            )
    pausing = after_level is not None and after_level.actions.pause_queues
    listed = [q.name for q in signals.queues if not q.reason]
    _hold(status, pausing, after_name, listed, observed, states, gates_red, outcome, ledger, dry)
    _condition(status, transition, ledger)
    outcome.notices = _due(status, outcome.notices, ledger.now)
    if esc is None and status.level == 0 and not status.paused_queues:
        outcome.status = None
        outcome.notices = []
    return outcome


def _due(status: EscalationStatus, new: Sequence[Notice], now: datetime) -> list[Notice]:
    """Queue the new messages behind those waiting (at most :data:`MAX_PENDING_NOTIFICATIONS`, the
    oldest dropped beyond), and list what to send now: every waiting message of a channel that has
    a new one or whose oldest message is due, oldest first."""
    pending = list(status.pending_notifications)
    for notice in new:
        pending.append(
            PendingNotification(
                channel=notice.channel.name,
                webhook_secret_ref=notice.channel.webhook_secret_ref,
                text=notice.text,
                since=now,
                next_attempt_at=now,
            )
        )
    while len(pending) > MAX_PENDING_NOTIFICATIONS:
        dropped = pending.pop(0)
        note(status, dropped.channel, now, f"dropped after {dropped.attempts} attempt(s): too many waiting")
    status.pending_notifications = pending
    fresh = {n.channel.name for n in new}
    oldest: dict[str, PendingNotification] = {}
    for p in pending:
        oldest.setdefault(p.channel, p)
    due = {c for c, p in oldest.items() if c in fresh or p.next_attempt_at <= now}
    return [
        Notice(
            EscalationChannel(name=p.channel, webhook_secret_ref=p.webhook_secret_ref),
            p.text,
            since=p.since,
            attempts=p.attempts,
        )
        for p in pending
        if p.channel in due
    ]


def _transition(
    before: EscalationLevel | None,
    before_name: str,
    after: EscalationLevel | None,
    raised: bool,
    status: EscalationStatus,
    outcome: EscalationOutcome,
    ledger: Ledger,
    policy_name: str,
) -> Reason:
    """One Event, and one notice per channel of the level left and the level entered."""
    dry = status.dry_run
    prefix = "[dry run] " if dry else ""
    was = before_name or "none"
    if after is None:
        reason, text = Reason.ESCALATION_CLEARED, f"escalation cleared (was {was})"
    elif raised:
        reason, text = (
            Reason.ESCALATION_RAISED,
            f"escalation raised to {after.name} (level {status.level}, was {was})",
        )
    else:
        reason = Reason.ESCALATION_LOWERED
        text = f"escalation lowered to {after.name} (level {status.level}, was {was})"
    if status.reasons:
        text += ": " + "; ".join(status.reasons)
    ledger.announce(
        "Warning" if reason == Reason.ESCALATION_RAISED else "Normal", reason, clip(prefix + text)
    )
    channels: dict[str, EscalationChannel] = {}
    for lv in (before, after):
        for channel in lv.actions.notify if lv else []:
            channels[channel.name] = channel
    icon = ":rotating_light:" if reason == Reason.ESCALATION_RAISED else ":large_green_circle:"
    for channel in channels.values():
        mention = f"{channel.mention} " if channel.mention else ""
        body = clip(f"{mention}{icon} *requeue* QueuePolicy `{policy_name}`: {text}", NOTICE_LIMIT)
        if dry:
            note(status, channel.name, ledger.now, "[dry run] not sent")
        else:
            outcome.notices.append(Notice(channel, body))
    return reason


def note(status: EscalationStatus, channel: str, at: datetime, result: str) -> None:
    """Record the last message to ``channel`` (one entry per channel)."""
    kept = [n for n in status.notifications if n.channel != channel]
    status.notifications = [*kept, EscalationNotification(channel=channel, at=at, result=clip(result, 300))]


def _hold(
    status: EscalationStatus,
    pausing: bool,
    level_name: str,
    listed: Sequence[str],
    observed: Mapping[str, QueueObservation],
    states: Mapping[str, QueueState],
    gates_red: bool,
    outcome: EscalationOutcome,
    ledger: Ledger,
    dry: bool,
) -> None:
    """Pause the listed queues while a pausing level is in force; release only what it paused."""
    ours: list[str] = []
    for name in status.paused_queues:
        obs = observed.get(name)
        # kept while still paused (or not observed this time); resumed by someone else: not ours
        if obs is None or obs.paused:
            ours.append(name)
    would = [n for n in status.dry_run_paused_queues if n in listed] if dry else []
    if pausing:
        reason = f"escalation {level_name}"
        for name in listed:
            obs = observed.get(name)
            if obs is None or name in ours:
                continue
            if dry:
                if not obs.paused and name not in would:
                    _record(Pause(name, reason, escalation=True), ledger, dry_run=True)
                    would.append(name)
                continue
            if any(isinstance(x, Pause) and x.queue == name for x in ledger.actions):
                continue  # the gate rule pauses it now (it is taken over once paused)
            withdrawn = _withdraw_resume(name, ledger)
            state = outcome_state(name, outcome, states)
            if not obs.paused:
                _record(Pause(name, reason, escalation=True), ledger, dry_run=False)
                ours.append(name)
            elif withdrawn or (state is not None and state.paused_by_policy):
                # the gate rule holds it (or was about to resume it): escalation takes it over
                ours.append(name)
                if state is not None:
                    outcome.queues[name] = state.model_copy(
                        update={"paused_by_policy": False, "paused": True}
                    )
    else:
        release = "escalation ended" if not level_name else f"escalation {level_name} does not pause"
        for name in list(ours):
            obs = observed.get(name)
            if obs is None:
                continue
            if dry:
                continue  # a dry run keeps real pauses and their marks (as pauseWhileGatesFail does)
            ours.remove(name)
            state = outcome_state(name, outcome, states)
            if gates_red and name in listed:
                # the gate rule wants it paused: hand it back rather than resume and pause again
                if state is not None:
                    outcome.queues[name] = state.model_copy(update={"paused_by_policy": True, "paused": True})
                continue
            _record(Resume(name, release, escalation=True), ledger, dry_run=False)
        for name in would:
            _record(Resume(name, release, escalation=True), ledger, dry_run=True)
        would = []
    status.paused_queues = ours
    status.dry_run_paused_queues = would if dry else []


def outcome_state(
    name: str, outcome: EscalationOutcome, states: Mapping[str, QueueState]
) -> QueueState | None:
    """The queue's state as decided so far (a hand-over already made, else the per-queue rules')."""
    return outcome.queues.get(name) or states.get(name)


def _withdraw_resume(name: str, ledger: Ledger) -> bool:
    """Take back a gate-rule Resume of ``name`` decided in this evaluation (escalation keeps it paused)."""
    found = False
    for i, action in enumerate(ledger.actions):
        if isinstance(action, Resume) and not action.escalation and action.queue == name:
            del ledger.actions[i]
            found = True
            break
    if found:
        ledger.records[:] = [
            r
            for r in ledger.records
            if not (r.action == ActionKind.RESUME.value and r.queue == name and not r.dry_run)
        ]
        ledger.events[:] = [
            e
            for e in ledger.events
            if not (e.reason == Reason.QUEUE_RESUMED and e.message.startswith(f"resumed {name}: "))
        ]
    return found


def _record(action: Pause | Resume, ledger: Ledger, *, dry_run: bool) -> None:
    verb = ("pause", "paused") if isinstance(action, Pause) else ("resume", "resumed")
    ledger.act(action, action.reason, dry_run=dry_run)
    said = f"[dry run] would {verb[0]}" if dry_run else verb[1]
    reason = Reason.QUEUE_PAUSED if isinstance(action, Pause) else Reason.QUEUE_RESUMED
    ledger.announce("Normal", reason, f"{said} {action.queue}: {action.reason}")


def _snapshot(level: EscalationLevel, signals: Signals, now: datetime) -> EscalationSnapshot:
    return EscalationSnapshot(
        level=level.name,
        at=now,
        queues=[
            SnapshotQueue(
                name=q.name,
                waiting=q.waiting + q.prioritized,
                active=q.active,
                failed=q.failed,
                delayed=q.delayed,
                completed=q.completed,
                paused=q.paused,
            )
            for q in signals.queues
            if not q.reason
        ],
    )


def _condition(status: EscalationStatus, transition: Reason | None, ledger: Ledger) -> None:
    """``Escalated``: True with the level and why (reason of the last change), False at level 0."""
    if status.level == 0:
        set_condition(
            ledger,
            PolicyCondition.ESCALATED,
            False,
            Reason.NOT_ESCALATED,
            "no escalation level in force",
            ledger.generation,
            ledger.now,
        )
        return
    before = find_condition(ledger.conditions, PolicyCondition.ESCALATED)
    reason = transition or (
        Reason(before.reason)
        if before is not None and before.reason in _IN_FORCE
        else Reason.ESCALATION_RAISED
    )
    set_condition(
        ledger,
        PolicyCondition.ESCALATED,
        True,
        reason,
        clip(f"level {status.level} ({status.name}): " + "; ".join(status.reasons)),
        ledger.generation,
        ledger.now,
    )


_IN_FORCE = {Reason.ESCALATION_RAISED.value, Reason.ESCALATION_LOWERED.value}


def undo_failed(status: EscalationStatus | None, failed: Sequence[object]) -> EscalationStatus | None:
    """The escalation status once some of its pauses or resumes failed.

    A failed pause is not ours (a later pause by someone else must not be mistaken for
    it); a failed resume stays ours, so the next evaluation tries again.
    """
    if status is None:
        return None
    paused = list(status.paused_queues)
    for action in failed:
        if isinstance(action, Pause) and action.escalation and action.queue in paused:
            paused.remove(action.queue)
        elif isinstance(action, Resume) and action.escalation and action.queue not in paused:
            paused.append(action.queue)
    return status.model_copy(update={"paused_queues": paused}) if paused != status.paused_queues else status


def with_results(
    status: EscalationStatus | None,
    *,
    now: datetime,
    delivered: Sequence[Delivery],
    sample: Mapping[str, Sequence[str]] | None,
) -> tuple[EscalationStatus | None, list[PolicyEvent]]:
    """Record what the evaluator did for escalation: each attempt's outcome (a message sent leaves
    ``pendingNotifications``; one that failed waits for its next attempt, or is given up after the
    last) and the failed-id sample. Returns the status and the Events to emit: a Warning when a
    message first fails and when it is given up, a Normal one when a retry got it through."""
    if status is None:
        return None, []
    status = status.model_copy(deep=True)
    events: list[PolicyEvent] = []
    for outcome in delivered:
        notice = outcome.notice
        name = notice.channel.name
        index = next(
            (
                i
                for i, p in enumerate(status.pending_notifications)
                if (p.channel, p.since, p.text) == (name, notice.since, notice.text)
            ),
            None,
        )
        entry = status.pending_notifications[index] if index is not None else None
        attempt = notice.attempts + 1
        if outcome.error is None:
            if index is not None:
                del status.pending_notifications[index]
            note(status, name, now, "sent" if attempt == 1 else f"sent (attempt {attempt})")
            if attempt > 1:
                events.append(
                    PolicyEvent(
                        "Normal", Reason.NOTIFY_RETRIED, clip(f"channel {name}: sent at attempt {attempt}")
                    )
                )
            continue
        error = clip(outcome.error, 250)
        if attempt >= MAX_NOTIFY_ATTEMPTS or entry is None or index is None:
            if index is not None:
                del status.pending_notifications[index]
            note(status, name, now, f"gave up after {attempt} attempt(s): {error}")
            events.append(
                PolicyEvent(
                    "Warning",
                    Reason.NOTIFY_FAILED,
                    clip(f"channel {name}: gave up after {attempt} attempt(s): {error}"),
                )
            )
            continue
        retry_at = now + retry_delay(attempt)
        status.pending_notifications[index] = entry.model_copy(
            update={"attempts": attempt, "next_attempt_at": retry_at, "last_error": error}
        )
        note(status, name, now, f"failed: {error} (attempt {attempt} of {MAX_NOTIFY_ATTEMPTS}, retried)")
        if attempt == 1:
            events.append(
                PolicyEvent(
                    "Warning",
                    Reason.NOTIFY_FAILED,
                    clip(
                        f"channel {name}: {error}; retried at later evaluations "
                        f"(at most {MAX_NOTIFY_ATTEMPTS} attempts)"
                    ),
                )
            )
    if sample is not None and status.snapshot is not None:
        status.snapshot.failed_sample = [
            FailedSample(queue=queue, ids=[clip(i, MAX_ID_CHARS) for i in list(ids)[:MAX_SAMPLE]])
            for queue, ids in sample.items()
        ]
    return status, events


def export_level(namespace: str, policy: str, status: EscalationStatus | None) -> None:
    """``requeue_escalation_level{namespace,policy}``: the level in force (0 none), and
    ``requeue_escalation_messages_pending``; no series for a policy without escalation."""
    if status is None:
        forget_level(namespace, policy)
    else:
        ESCALATION_LEVEL.labels(namespace=namespace, policy=policy).set(status.level)
        ESCALATION_MESSAGES_PENDING.labels(namespace=namespace, policy=policy).set(
            len(status.pending_notifications)
        )


def count_deliveries(namespace: str, policy: str, delivered: Sequence[Delivery]) -> None:
    """``requeue_escalation_messages_total{channel,outcome}``: sent, failed or given_up."""
    for outcome in delivered:
        if outcome.error is None:
            result = "sent"
        elif outcome.notice.attempts + 1 >= MAX_NOTIFY_ATTEMPTS:
            result = "given_up"
        else:
            result = "failed"
        ESCALATION_MESSAGES.labels(namespace, policy, outcome.notice.channel.name, result).inc()


def forget_level(namespace: str, policy: str) -> None:
    """Drop the policy's escalation series (the policy was deleted or has no escalation)."""
    with contextlib.suppress(KeyError):
        ESCALATION_LEVEL.remove(namespace, policy)
    with contextlib.suppress(KeyError):
        ESCALATION_MESSAGES_PENDING.remove(namespace, policy)
    ESCALATION_MESSAGES.remove_by_labels({"namespace": namespace, "policy": policy})
