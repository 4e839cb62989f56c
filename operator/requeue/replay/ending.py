"""How a replay ends: the one Failed/Succeeded transition the engine and the operator share.

The engine ends a replay when its work is done (or cannot be done); the operator
ends one whose spec was invalid before it ever started. Both must leave the same
phase, conditions and Event behind, so the transition lives here, without Redis or kopf.
"""

from __future__ import annotations

from datetime import datetime

from requeue.api import DLQReplayStatus, ReplayPhase, find_condition, set_condition
from requeue.api.base import ConditionStatus
from requeue.api.conditions import Reason, ReplayCondition
from requeue.errors import GatesTimedOut
from requeue.replay.state import ReplayEvent

__all__ = ["end", "fail", "release_ready"]


def end(
    st: DLQReplayStatus, phase: ReplayPhase, reason: Reason, message: str, *, generation: int, now: datetime
) -> ReplayEvent:
    """Put ``st`` in its final ``phase`` (Succeeded, Failed or Cancelled); the Event that announces it
    (a Warning for Failed; a cancel was asked for, so it is Normal)."""
    st.phase = phase
    st.completed_at = now
    st.message = message
    ok = phase == ReplayPhase.SUCCEEDED
    cancelled = phase == ReplayPhase.CANCELLED
    progressing = Reason.CANCELLED if cancelled else Reason.FINISHED
    set_condition(st, ReplayCondition.PROGRESSING, False, progressing, message, generation, now)
    set_condition(st, ReplayCondition.SUCCEEDED, ok, reason, message, generation, now)
    release_ready(st, generation, now)
    if reason == GatesTimedOut.reason:
        set_condition(st, ReplayCondition.GATES_PASSED, False, GatesTimedOut.reason, message, generation, now)
    return ReplayEvent("Normal" if ok or cancelled else "Warning", reason, message)


def fail(st: DLQReplayStatus, reason: Reason, message: str, *, generation: int, now: datetime) -> ReplayEvent:
    """End ``st`` as Failed for a problem that also makes it not Ready (bad spec, refused credentials)."""
    set_condition(st, ReplayCondition.READY, False, reason, message, generation, now)
    return end(st, ReplayPhase.FAILED, reason, message, generation=generation, now=now)


def release_ready(st: DLQReplayStatus, generation: int, now: datetime) -> None:
    """A replay that ended holds no lease (released with the end); a Ready=True that said it
    held one says so now. A Ready=False keeps its reason (e.g. AuthFailed)."""
    ready = find_condition(st.conditions, ReplayCondition.READY)
    if ready is not None and ready.status == ConditionStatus.TRUE:
        set_condition(
            st,
            ReplayCondition.READY,
            True,
            Reason.FINISHED,
            "finished; holds no queue lease",
            generation,
            now,
        )
