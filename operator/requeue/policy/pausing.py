"""QueuePolicy gates and what they pause: rules 2 and 3 of :mod:`requeue.policy.decide`.

Together because a red gate is what pauses a queue and all gates green is what
resumes it; the same gate state also brackets the outage auto replay waits for.
The care here is to resume only what this policy paused (``pausedByPolicy``,
and the memory's mark when a status write was lost), and in a dry run to say
"would pause" once per would-be pause rather than every evaluation.

A gate whose check cannot run because of its configuration (``misconfigured``:
a missing Secret or key, a destination the operator's policy denies, a URL, DSN
or CA bundle that does not parse) is neither red nor green. While such a gate
exists and no other gate is really red, the state is ``misconfigured``: nothing
is paused, nothing this policy paused is resumed (the previous state is kept),
and no auto replay starts (its outage needs the gates green). ``GatesPassed``
is Unknown with the configuration reason; ``Ready`` says it too (:mod:`.decide`).
A gate that really is red still pauses, whatever another gate's configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from requeue.api.base import ConditionStatus, find_condition, set_condition
from requeue.api.conditions import PolicyCondition, Reason, stored_reason
from requeue.api.gates import GateStatus
from requeue.api.policy import QueuePolicySpec, QueuePolicyStatus, QueueState
from requeue.gates.result import CONFIGURATION_REASONS
from requeue.policy import autoreplay
from requeue.policy.actions import ActionKind, Pause, Resume
from requeue.policy.ledger import Ledger, clip
from requeue.policy.observe import Observation, QueueMemory, QueueObservation

__all__ = [
    "GateState",
    "Gates",
    "Hold",
    "gate_results",
    "misconfigured_gates",
    "misconfigured_reason",
    "pause_or_resume",
    "track_gates",
]


GateState = Literal["none", "unknown", "misconfigured", "red", "green"]

#: ``GatesPassed`` status and reason for each gate state.
_GATE_CONDITIONS: Mapping[GateState, tuple[ConditionStatus, Reason]] = {
    "none": (ConditionStatus.TRUE, Reason.NO_GATES),
    "unknown": (ConditionStatus.UNKNOWN, Reason.GATES_NOT_CHECKED),
    "misconfigured": (ConditionStatus.UNKNOWN, Reason.GATE_MISCONFIGURED),  # the gate's reason, really
    "red": (ConditionStatus.FALSE, Reason.GATE_FAILED),
    "green": (ConditionStatus.TRUE, Reason.ALL_GATES_PASSED),
}


def misconfigured_gates(spec: QueuePolicySpec, gates: Sequence[GateStatus] | None) -> list[GateStatus]:
    """The statuses of configured gates whose last check could not run because of their configuration."""
    names = {g.name for g in spec.gates}
    return [g for g in gates or () if g.name in names and g.misconfigured]


def misconfigured_reason(gate: GateStatus) -> Reason:
    """The reason a misconfigured gate names (GateMisconfigured for one unknown to this version)."""
    return stored_reason(gate.misconfigured, Reason.GATE_MISCONFIGURED)


def _gate_state(spec: QueuePolicySpec, gates: Sequence[GateStatus] | None) -> tuple[GateState, str]:
    if not spec.gates:
        return "none", "no gates configured"
    if gates is None:
        return "unknown", "gates not checked yet"
    names = {g.name for g in spec.gates}
    by_name = {g.name: g for g in gates if g.name in names}
    red = [g for g in by_name.values() if not g.healthy and not g.misconfigured]
    if red:
        return "red", clip("; ".join(f"{g.name}: {g.message or 'unhealthy'}" for g in red))
    unusable = misconfigured_gates(spec, gates)
    if unusable:
        return "misconfigured", clip(
            "; ".join(f"{g.name} cannot be checked ({g.misconfigured}): {g.message}" for g in unusable)
        )
    missing = sorted(names - by_name.keys())
    if missing:
        return "unknown", f"not checked yet: {', '.join(missing)}"
    return "green", f"{len(names)} gate(s) healthy"


@dataclass(frozen=True)
class Gates:
    """Where the gates stand after this evaluation, and the outage they bracket."""

    state: GateState
    message: str
    outage_started: datetime | None
    green_since: datetime | None

    def finished_outage(self) -> autoreplay.Outage | None:
        """The outage, once all gates are green again (what auto replay waits for)."""
        if self.state != "green" or self.outage_started is None or self.green_since is None:
            return None
        return autoreplay.Outage(self.outage_started, self.green_since)


def track_gates(
    spec: QueuePolicySpec, prev: QueuePolicyStatus, observation: Observation, ledger: Ledger
) -> Gates:
    """Rule 2: ``GatesPassed``, when the outage began and since when the gates are all green."""
    state, message = _gate_state(spec, observation.gates)
    prev_gates = find_condition(prev.conditions, PolicyCondition.GATES_PASSED)
    prev_red = prev_gates is not None and (
        prev_gates.status == ConditionStatus.FALSE
        # misconfigured in the middle of an outage (it keeps the state): the outage goes on
        or (
            prev_gates.status == ConditionStatus.UNKNOWN
            and prev_gates.reason in CONFIGURATION_REASONS
            and prev.outage_started_at is not None
            and prev.gates_green_since is None
        )
    )
    outage_started = prev.outage_started_at
    green_since = prev.gates_green_since
    if state == "red":
        if not prev_red:
            if not autoreplay.outage_pending(spec, prev):
                outage_started = ledger.now
            ledger.announce("Warning", Reason.GATES_FAILED, message)
        green_since = None
    elif state == "green":
        if green_since is None:
            green_since = ledger.now
        if prev_red:
            ledger.announce("Normal", Reason.GATES_RECOVERED, message)
    # "misconfigured": outage_started and green_since stay as they were (the previous state is kept)
    status, reason = _GATE_CONDITIONS[state]
    if state == "misconfigured":
        reason = misconfigured_reason(misconfigured_gates(spec, observation.gates)[0])
    set_condition(
        ledger, PolicyCondition.GATES_PASSED, status, reason, message, ledger.generation, ledger.now
    )
    return Gates(state, message, outage_started, green_since)


def gate_results(prev: QueuePolicyStatus, observation: Observation) -> list[GateStatus]:
    return list(observation.gates) if observation.gates is not None else list(prev.gates)


@dataclass
class Hold:
    """Whether a queue is paused, by this policy, or (in a dry run) would have been."""

    paused: bool
    by_policy: bool
    dry_paused: bool


def pause_or_resume(
    spec: QueuePolicySpec,
    gates: Gates,
    name: str,
    before: QueueState | None,
    obs: QueueObservation,
    mem: QueueMemory,
    ledger: Ledger,
) -> Hold:
    """Rule 3: pause a listed queue while a gate is red; resume only what this policy paused.

    Gates ``misconfigured`` (or not checked yet): neither; the queue stays as it is."""
    # memory's mark covers a pause whose status write was lost (the process died in between)
    by_policy = (before.paused_by_policy if before else False) or mem.paused_by_policy
    # resumed by someone else (or never took effect): not ours any more
    by_policy = by_policy and obs.paused
    dry = spec.dry_run
    pause_enabled = spec.actions.pause_while_gates_fail
    hold = Hold(obs.paused, by_policy, (before.dry_run_paused if before else False) and dry)
    listed = name in spec.queues
    gate_state = gates.state
    if pause_enabled and listed and gate_state == "red" and not obs.paused:
        _pause(Pause(name, f"gate red: {gates.message}"), hold, dry, ledger)
    elif gate_state == "green" or not pause_enabled or not listed:
        reason = (
            "all gates green"
            if gate_state == "green"
            else "pauseWhileGatesFail is off"
            if not pause_enabled
            else "queue no longer in the policy"
        )
        _resume(Resume(name, reason), hold, dry, ledger)
    return hold


def _pause(action: Pause, hold: Hold, dry: bool, ledger: Ledger) -> None:
    """Pause for real, or in a dry run say once per would-be pause that it would."""
    if not dry:
        _transition(action, ledger, dry_run=False)
        hold.by_policy = hold.paused = True
    elif not hold.dry_paused:
        _transition(action, ledger, dry_run=True)
        hold.dry_paused = True


def _resume(action: Resume, hold: Hold, dry: bool, ledger: Ledger) -> None:
    """Resume what this policy paused; end a dry-run pause with a would-be resume."""
    if hold.by_policy and not dry:
        _transition(action, ledger, dry_run=False)
        hold.by_policy = hold.paused = False
    if hold.dry_paused:
        _transition(action, ledger, dry_run=True)
        hold.dry_paused = False


#: Event reason and verbs (would-be, done) of a pause and a resume.
_TRANSITIONS: Mapping[ActionKind, tuple[Reason, str, str]] = {
    ActionKind.PAUSE: (Reason.QUEUE_PAUSED, "pause", "paused"),
    ActionKind.RESUME: (Reason.QUEUE_RESUMED, "resume", "resumed"),
}


def _transition(action: Pause | Resume, ledger: Ledger, *, dry_run: bool) -> None:
    """Decide, record and announce a pause or resume (in a dry run: one that would happen)."""
    event_reason, verb, done = _TRANSITIONS[action.kind]
    ledger.act(action, action.reason, dry_run=dry_run)
    said = f"[dry run] would {verb}" if dry_run else done
    ledger.announce("Normal", event_reason, f"{said} {action.queue}: {action.reason}")
