"""``spec.escalation`` and ``.status.escalation`` of a QueuePolicy: the runbook's escalation levels.

A level is a named set of conditions over signals the policy already observes
(per-queue counts and breaches, processing stopped and why, stuck active jobs,
gate results) plus what to do while it is in force. The model is deliberately
flat: a level holds when **all** of ``when.all`` hold and, if ``when.any`` is
not empty, **at least one** of ``when.any`` holds. Each condition sets exactly
one signal, so a condition is always readable on its own in ``.status`` ("which
conditions held").
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from requeue.api.base import INT64_MAX, ApiModel, Duration, SecretKeyRef, StatusModel, cel_rules
from requeue.api.gates import GateName, GateType

__all__ = [
    "CONDITION_SIGNALS",
    "THRESHOLD_RULES",
    "BreachName",
    "BreachingCondition",
    "CountCondition",
    "EscalationAction",
    "EscalationChannel",
    "EscalationCondition",
    "EscalationLevel",
    "EscalationLevelState",
    "EscalationNotification",
    "EscalationSnapshot",
    "EscalationSpec",
    "EscalationStatus",
    "EscalationWhen",
    "FailedCondition",
    "FailedJobNamesCondition",
    "FailedSample",
    "GatesCondition",
    "GatesRed",
    "PendingNotification",
    "ProcessingStoppedCondition",
    "SnapshotQueue",
    "StoppedCause",
]

#: A level or channel name.
LevelName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-_.A-Za-z0-9]*)?$")]

#: Most levels one policy may define (the runbook has three).
MAX_LEVELS = 5
#: Most failed job ids a snapshot keeps per queue.
MAX_SAMPLE = 50
#: Most distinct failed job names a policy tracks per queue over its window (a
#: ``failedJobNames`` condition counts up to this many).
MAX_FAILED_NAMES = 50
#: Most attempts at one escalation message before it is given up.
MAX_NOTIFY_ATTEMPTS = 8
#: Most messages waiting for a retry, all channels together (the oldest beyond are dropped).
MAX_PENDING_NOTIFICATIONS = 10


class StoppedCause(StrEnum):
    """Why processing stopped (``.status.queues[].processingStopped.reason``)."""

    PAUSED_BY_OTHERS = "PausedByOthers"
    WORKERS_DOWN = "WorkersDown"
    WORKERS_STUCK = "WorkersStuck"
    WORKERS_IDLE = "WorkersIdle"


class BreachName(StrEnum):
    """A threshold breach (``.status.queues[].breaches[].kind``; the policy's BreachKind)."""

    FAILED = "failed"
    WAITING = "waiting"
    FAILURE_RATE = "failureRate"
    STALLED = "stalled"
    PROCESSING_STOPPED = "processingStopped"
    FAILED_GROWING = "failedGrowing"
    LATENCY_P95 = "latencyP95"


class GatesRed(StrEnum):
    """How many of the selected gates must be red."""

    #: At least one of them.
    ANY = "any"
    #: Every one of them (and at least one gate is selected).
    ALL = "all"


class FailedCondition(ApiModel):
    """Queues whose failed count is above a level (and, with ``growing``, rising over the window)."""

    above: int = Field(ge=0, le=INT64_MAX, description="More failed jobs than this.")
    growing: bool = Field(
        default=False,
        description=(
            "Also rising: the failed count rose by thresholds.failedGrowing.minIncrease (1 when unset) "
            "over thresholds.window (.status.queues[].failedChange)."
        ),
    )
    min_queues: int = Field(default=1, ge=1, le=500, description="In at least this many queues.")


class CountCondition(ApiModel):
    """Queues where a count is above a level."""

    above: int = Field(ge=0, le=INT64_MAX, description="More than this many.")
    min_queues: int = Field(default=1, ge=1, le=500, description="In at least this many queues.")


class ProcessingStoppedCondition(ApiModel):
    """Queues whose processing stopped for thresholds.stalledFor (requires thresholds.stalledFor)."""

    reasons: list[Annotated[StoppedCause, Field(strict=False)]] = Field(
        default_factory=list,
        max_length=4,
        description="Only these causes (PausedByOthers, WorkersDown, WorkersStuck, WorkersIdle); empty: any.",
    )
    min_queues: int = Field(default=1, ge=1, le=500, description="In at least this many queues.")


class BreachingCondition(ApiModel):
    """Queues breaching thresholds ("failures across several queues")."""

    kinds: list[Annotated[BreachName, Field(strict=False)]] = Field(
        default_factory=list,
        max_length=7,
        description=(
            "Only these breaches (failed, waiting, failureRate, stalled, processingStopped, failedGrowing, "
            "latencyP95); empty: any."
        ),
    )
    min_queues: int = Field(default=1, ge=1, le=500, description="In at least this many queues.")


class FailedJobNamesCondition(ApiModel):
    """Failures across several job names: distinct names of jobs that failed within thresholds.window,
    across the policy's queues (one name failing in two queues counts once)."""

    at_least: int = Field(
        ge=1,
        le=MAX_FAILED_NAMES,
        description=(
            "At least this many distinct job names failed within the window (the names are read from the "
            f"failed jobs' hashes; at most {MAX_FAILED_NAMES} names are tracked per queue)."
        ),
    )
    min_failures: int = Field(
        default=1,
        ge=1,
        le=INT64_MAX,
        description="A name counts once this many of its jobs failed within the window (queues together).",
    )


class GatesCondition(ApiModel):
    """The policy's gates are red: the named ones and those of the kinds given (none given: every gate)."""

    names: list[GateName] = Field(default_factory=list, max_length=20, description="Gates by name.")
    kinds: list[Annotated[GateType, Field(strict=False)]] = Field(
        default_factory=list, max_length=3, description="Gates by kind: redis, postgres, http."
    )
    red: GatesRed = Field(
        default=GatesRed.ANY,
        strict=False,
        description="any: one selected gate is red; all: every selected gate is.",
    )


#: The signal fields of :class:`EscalationCondition`, in the order they are judged and shown.
CONDITION_SIGNALS = (
    "failed",
    "waiting",
    "stuckActive",
    "processingStopped",
    "breaching",
    "gates",
    "failedJobNames",
    "corruptJobs",
)

#: The conditions that read job hashes (``spec.metrics.maxJobLookups`` must not be 0).
_HASH_CONDITIONS = ("failedJobNames", "corruptJobs")


class EscalationCondition(ApiModel):
    """One signal; set exactly one field."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "[has(self.failed), has(self.waiting), has(self.stuckActive), has(self.processingStopped), "
                "has(self.breaching), has(self.gates), has(self.failedJobNames), has(self.corruptJobs)]"
                ".filter(x, x).size() == 1",
                "set exactly one of failed, waiting, stuckActive, processingStopped, breaching, gates, "
                "failedJobNames or corruptJobs",
            )
        )
    )

    failed: FailedCondition | None = Field(default=None, description="Failed count above a level.")
    waiting: CountCondition | None = Field(default=None, description="Backlog (wait + prioritized) above.")
    stuck_active: CountCondition | None = Field(
        default=None,
        description="Stuck active jobs (.status.queues[].stalled; requires thresholds.stalledActiveSeconds).",
    )
    processing_stopped: ProcessingStoppedCondition | None = Field(
        default=None, description="Processing stopped (requires thresholds.stalledFor)."
    )
    breaching: BreachingCondition | None = Field(default=None, description="Queues breaching thresholds.")
    gates: GatesCondition | None = Field(default=None, description="Gates red.")
    failed_job_names: FailedJobNamesCondition | None = Field(
        default=None,
        description=(
            "Failures across several job names within thresholds.window (.status.queues[].failedJobNames; "
            "needs the failed jobs' hashes: not with removeOnFail: true)."
        ),
    )
    corrupt_jobs: CountCondition | None = Field(
        default=None,
        description=(
            "Corrupt jobs found within thresholds.window: failed jobs whose hash BullMQ cannot read (gone "
            "while still listed as failed, no name, no data or data that is not JSON), checked as the "
            "events stream reports them failed (.status.queues[].corruptJobs)."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EscalationCondition:
        fields = (
            self.failed,
            self.waiting,
            self.stuck_active,
            self.processing_stopped,
            self.breaching,
            self.gates,
            self.failed_job_names,
            self.corrupt_jobs,
        )
        if sum(x is not None for x in fields) != 1:
            raise ValueError(
                "an escalation condition sets exactly one of failed, waiting, stuckActive, "
                "processingStopped, breaching, gates, failedJobNames or corruptJobs"
            )
        return self


class EscalationWhen(ApiModel):
    """When a level holds: every condition of ``all`` and, if ``any`` is set, one of ``any``."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "(has(self.all) && size(self.all) > 0) || (has(self.any) && size(self.any) > 0)",
                "a level needs at least one condition in all or any",
            )
        )
    )

    all: list[EscalationCondition] = Field(
        default_factory=list, max_length=20, description="Conditions that must all hold."
    )
    any: list[EscalationCondition] = Field(
        default_factory=list,
        max_length=20,
        description="Conditions of which one must hold (empty: none needed).",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> EscalationWhen:
        if not self.all and not self.any:
            raise ValueError("a level needs at least one condition in all or any")
        return self


class EscalationChannel(ApiModel):
    """A channel told when the level is entered and left: a Slack-compatible incoming webhook."""

    name: LevelName = Field(description="Names the channel in status and Events, e.g. oncall.")
    webhook_secret_ref: SecretKeyRef = Field(description="Secret key holding the webhook URL.")
    mention: str = Field(
        default="",
        max_length=200,
        description='Put in front of the message, e.g. "<!here>" or "<@U024BE7LH>".',
    )


class EscalationAction(ApiModel):
    """What requeue does while a level is in force."""

    notify: list[EscalationChannel] = Field(
        default_factory=list,
        max_length=5,
        description="Channels told once when the level is entered and once when it is left.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    pause_queues: bool = Field(
        default=False,
        description=(
            "Pause every listed queue not paused yet; leaving escalation resumes exactly the queues "
            "it paused."
        ),
    )
    stop_auto_replay: bool = Field(
        default=False, description="Create no auto replay (actions.autoReplay) while the level is in force."
    )
    snapshot: bool = Field(
        default=False,
        description="On entering the level, record the counts and a sample of failed job ids in status.",
    )
    sample_size: int = Field(
        default=10,
        ge=1,
        le=MAX_SAMPLE,
        description="Failed job ids per queue in the snapshot (newest first).",
    )


class EscalationLevel(ApiModel):
    """One level: when it holds and what it does. Later levels are higher."""

    name: LevelName = Field(description="Shown in status, Events and messages, e.g. L1 or operational.")
    when: EscalationWhen = Field(description="The conditions.")
    hold_for: Duration = Field(
        default="5m",
        description=(
            "No flapping: the level is entered only after its conditions held this long, and left only after "
            "they were clear this long."
        ),
    )
    actions: EscalationAction = Field(default_factory=EscalationAction, description="What it does.")

    @model_validator(mode="after")
    def _unique_channels(self) -> EscalationLevel:
        names = [c.name for c in self.actions.notify]
        if len(set(names)) != len(names):
            raise ValueError(f"level {self.name!r}: notify channel names must be unique")
        return self


class EscalationSpec(ApiModel):
    """The runbook's escalation levels, lowest first; the highest level that holds is in force."""

    levels: list[EscalationLevel] = Field(
        min_length=1,
        max_length=MAX_LEVELS,
        description="Levels, lowest first (level 1 is the first).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EscalationSpec:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("escalation level names must be unique")
        return self


# ----------------------------------------------------------------- status


class EscalationLevelState(StatusModel):
    """Whether a level's conditions hold, and since when (what holdFor is measured from)."""

    name: str = Field(description="Level name.")
    holding: bool = Field(default=False, description="Its conditions held at the last evaluation.")
    since: datetime | None = Field(default=None, description="Since when they hold (or are clear).")
    in_force: bool = Field(
        default=False,
        description="On once the conditions held for holdFor, off once they were clear for holdFor.",
    )


class SnapshotQueue(StatusModel):
    """One queue's counts when the level was entered."""

    name: str = Field(description="Queue name.")
    waiting: int = Field(default=0, description="Jobs in wait (+ prioritized).")
    active: int = Field(default=0, description="Active jobs.")
    failed: int = Field(default=0, description="Failed jobs.")
    delayed: int = Field(default=0, description="Delayed jobs.")
    completed: int = Field(default=0, description="Completed jobs kept.")
    paused: bool = Field(default=False, description="Whether the queue was paused.")


class FailedSample(StatusModel):
    """The newest failed job ids of one queue when the level was entered."""

    queue: str = Field(description="Queue name.")
    ids: list[str] = Field(default_factory=list, max_length=MAX_SAMPLE, description="Job ids, newest first.")


class EscalationSnapshot(StatusModel):
    """What the queues looked like when a level with ``snapshot`` was entered."""

    level: str = Field(description="The level entered.")
    at: datetime = Field(description="When.")
    queues: list[SnapshotQueue] = Field(default_factory=list, description="Counts per queue.")
    failed_sample: list[FailedSample] = Field(
        default_factory=list, description="A sample of failed job ids per queue (newest first)."
    )


class EscalationNotification(StatusModel):
    """The last message to a channel."""

    channel: str = Field(description="Channel name.")
    at: datetime = Field(description="When.")
    result: str = Field(
        default="",
        description=(
            '"sent" (after a retry: "sent (attempt N)"), "failed: ..." (retried: see pendingNotifications), '
            '"gave up: ..." or "[dry run] not sent".'
        ),
    )


class PendingNotification(StatusModel):
    """A message to a channel that failed to send and is retried at a later evaluation."""

    channel: str = Field(description="Channel name.")
    webhook_secret_ref: SecretKeyRef = Field(description="The Secret key holding the channel's webhook URL.")
    text: str = Field(description="The message, as it is to be sent.")
    since: datetime = Field(description="When it was first due (the change of level it tells of).")
    attempts: int = Field(default=0, description=f"Attempts made so far (at most {MAX_NOTIFY_ATTEMPTS}).")
    next_attempt_at: datetime = Field(description="The first evaluation at or after this tries again.")
    last_error: str = Field(default="", description="Why the last attempt failed.")


class EscalationStatus(StatusModel):
    """Where escalation stands."""

    level: int = Field(default=0, description="The level in force: 0 none, 1 the first level, ...")
    name: str = Field(default="", description="Its name (empty at level 0).")
    since: datetime | None = Field(default=None, description="Since when this level is in force.")
    reasons: list[str] = Field(
        default_factory=list, max_length=20, description="Why: the conditions that held when it was entered."
    )
    dry_run: bool = Field(default=False, description="Decided in a dry run: nothing was paused or sent.")
    paused_queues: list[str] = Field(
        default_factory=list, description="Queues escalation paused (resumed when escalation ends)."
    )
    dry_run_paused_queues: list[str] = Field(
        default_factory=list, description="In a dry run: queues escalation would have paused."
    )
    levels: list[EscalationLevelState] = Field(
        default_factory=list, description="Each level's conditions and since when (holdFor)."
    )
    snapshot: EscalationSnapshot | None = Field(default=None, description="The last snapshot taken.")
    notifications: list[EscalationNotification] = Field(
        default_factory=list, description="The last message per channel."
    )
    pending_notifications: list[PendingNotification] = Field(
        default_factory=list,
        max_length=MAX_PENDING_NOTIFICATIONS,
        description=(
            "Messages that failed to send, oldest first: retried at later evaluations (with backoff, "
            f"at most {MAX_NOTIFY_ATTEMPTS} attempts each), in order per channel."
        ),
    )


def _each_condition(test: str) -> str:
    """CEL over a QueuePolicy spec: ``test`` (about condition ``c``) holds for every condition."""
    return (
        "!has(self.escalation) || self.escalation.levels.all(l, "
        f"(!has(l.when.all) || l.when.all.all(c, {test})) && (!has(l.when.any) || l.when.any.all(c, {test})))"
    )


#: (threshold field, the condition that needs it (CEL about ``c``), message): a condition over a
#: signal the policy only measures when that threshold is set. Checked by the model
#: (:func:`missing_thresholds`) and, as CEL rules on QueuePolicySpec, by the API server.
THRESHOLD_RULES: tuple[tuple[str, str, str], ...] = (
    (
        "failedGrowing",
        "has(c.failed) && has(c.failed.growing) && c.failed.growing",
        "an escalation condition failed.growing needs thresholds.failedGrowing (the failed count's trend)",
    ),
    (
        "stalledFor",
        "has(c.processingStopped)",
        "an escalation condition processingStopped needs thresholds.stalledFor",
    ),
    (
        "stalledActiveSeconds",
        "has(c.stuckActive)",
        "an escalation condition stuckActive needs thresholds.stalledActiveSeconds",
    ),
)


#: The message when a condition that reads job hashes meets ``spec.metrics.maxJobLookups: 0``.
HASH_LOOKUPS_MESSAGE = (
    "an escalation condition failedJobNames or corruptJobs reads the failed jobs' hashes: "
    "metrics.maxJobLookups must not be 0"
)


def threshold_cel_rules() -> list[tuple[str, str]]:
    """The CEL rules (rule, message) of :data:`THRESHOLD_RULES` for QueuePolicySpec, and the rule
    that conditions reading job hashes need ``metrics.maxJobLookups`` above 0."""
    uses_hashes = " || ".join(f"has(c.{name})" for name in _HASH_CONDITIONS)
    return [
        *(
            (
                f"(has(self.thresholds) && has(self.thresholds.{field})) || "
                f"({_each_condition(f'!({needs})')})",
                message,
            )
            for field, needs, message in THRESHOLD_RULES
        ),
        (
            "!has(self.metrics) || !has(self.metrics.maxJobLookups) || self.metrics.maxJobLookups > 0 || "
            f"({_each_condition(f'!({uses_hashes})')})",
            HASH_LOOKUPS_MESSAGE,
        ),
    ]


def uses_condition(escalation: EscalationSpec | None, signal: str) -> bool:
    """Whether any level of ``escalation`` has a condition on ``signal`` (a python field name, e.g.
    ``corrupt_jobs``): the policy reads what such a signal needs only when one does."""
    if escalation is None:
        return False
    return any(
        getattr(c, signal) is not None
        for level in escalation.levels
        for c in (*level.when.all, *level.when.any)
    )


def missing_thresholds(escalation: EscalationSpec | None, configured: set[str]) -> list[str]:
    """Messages of :data:`THRESHOLD_RULES` broken by ``escalation`` given the thresholds set (wire names)."""
    if escalation is None:
        return []
    conditions = [c for level in escalation.levels for c in (*level.when.all, *level.when.any)]
    uses = {
        "failedGrowing": any(c.failed is not None and c.failed.growing for c in conditions),
        "stalledFor": any(c.processing_stopped is not None for c in conditions),
        "stalledActiveSeconds": any(c.stuck_active is not None for c in conditions),
    }
    return [message for field, _, message in THRESHOLD_RULES if uses[field] and field not in configured]
