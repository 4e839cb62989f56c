"""What a QueuePolicy decision can contain: the actions, the breach kinds, the Events.

Its own module because every part of the decision (:mod:`.decide`,
:mod:`.thresholds`, :mod:`.autoreplay`) and every consumer (:mod:`.evaluate`,
:mod:`.slack`) speaks this vocabulary; :mod:`.decide` re-exports all of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Literal

from requeue.api.archive import ArchiveSpec
from requeue.api.common import Rate, Selector
from requeue.api.conditions import Reason
from requeue.api.replay import Verify

__all__ = [
    "BREACH_REASONS",
    "REMEDIATION",
    "Action",
    "ActionKind",
    "Alert",
    "AutoReplay",
    "BreachKind",
    "Clean",
    "Pause",
    "PolicyEvent",
    "Recover",
    "Resume",
]


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
    #: Active jobs without a lock, or active, for ``thresholds.stalledActiveSeconds``.
    STALLED = "stalled"
    #: Jobs waiting and none completed or failed for ``thresholds.stalledFor``.
    PROCESSING_STOPPED = "processingStopped"
    #: Failed count above ``thresholds.failedGrowing.above`` and rising over the window.
    FAILED_GROWING = "failedGrowing"
    #: 95th percentile of job latency over the window above ``thresholds.latencyP95``.
    LATENCY_P95 = "latencyP95"


#: Condition reason / Event reason of each breach kind.
BREACH_REASONS: Mapping[BreachKind, Reason] = {
    BreachKind.FAILED: Reason.FAILED_ABOVE_THRESHOLD,
    BreachKind.WAITING: Reason.WAITING_ABOVE_THRESHOLD,
    BreachKind.FAILURE_RATE: Reason.FAILURE_RATE_ABOVE_THRESHOLD,
    BreachKind.STALLED: Reason.STALLED_JOBS,
    BreachKind.PROCESSING_STOPPED: Reason.PROCESSING_STOPPED,
    BreachKind.FAILED_GROWING: Reason.FAILED_GROWING,
    BreachKind.LATENCY_P95: Reason.LATENCY_ABOVE_THRESHOLD,
}


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
    #: Paused by an escalation level (``.status.escalation.pausedQueues``), not by a red gate.
    escalation: bool = False


@dataclass(frozen=True)
class Resume:
    """Resume a queue this policy paused."""

    kind: ClassVar[ActionKind] = ActionKind.RESUME
    queue: str
    reason: str
    #: Resumes a queue an escalation level paused.
    escalation: bool = False


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
    #: Write each job to Postgres first (:mod:`requeue.policy.archive`); None: remove without a copy.
    archive: ArchiveSpec | None = None


#: Every action a decision can contain.
Action = Alert | Recover | Pause | Resume | AutoReplay | Clean

#: Actions that change queues (left out of :attr:`Decision.to_execute` in a dry run).
REMEDIATION = (Pause, Resume, AutoReplay, Clean)


@dataclass(frozen=True)
class PolicyEvent:
    """A Kubernetes Event to emit on the QueuePolicy."""

    type: Literal["Normal", "Warning"]
    reason: Reason
    message: str
