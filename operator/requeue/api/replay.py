"""The DLQReplay resource: replay a selection of failed jobs once gates pass, then verify."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator, model_validator

from requeue.api.base import (
    INT64_MAX,
    SECONDS_MAX,
    ApiModel,
    Condition,
    Duration,
    KeyPrefix,
    QueueName,
    StatusModel,
    cel_rules,
)
from requeue.api.common import WINDOW_RULE, Rate, RedisConnection, Selector
from requeue.api.gates import GatePolicy, GateSpec, GateStatus
from requeue.api.smoke import SmokeTest, SmokeTestStatus

#: Most ids ``selector.jobIds`` may list: a hand-picked set, read in one bounded pass per page.
MAX_JOB_IDS = 1000
#: A BullMQ job id as ``selector.jobIds`` takes it (BullMQ's ids are any string; ``"17"``, ``"order:42"``).
JobId = Annotated[str, Field(min_length=1, max_length=256)]

#: Why jobIds takes no other filter: ids name the jobs; a filter beside them would leave some
#: named jobs out without saying so, which is what naming them was meant to avoid.
_JOB_IDS_RULE = (
    "!has(self.jobIds) || ((!has(self.jobNames) || size(self.jobNames) == 0)"
    " && !has(self.failedReasonPattern) && !has(self.dataMatch) && !has(self.failedAfter)"
    " && !has(self.failedBefore) && !has(self.maxJobs) && !has(self.dedupeBy))",
    "jobIds names the jobs to replay and takes no other filter (jobNames, failedReasonPattern, "
    "dataMatch, failedAfter, failedBefore, maxJobs, dedupeBy)",
)


class ReplaySelector(Selector):
    """Which failed jobs a DLQReplay picks: by filters (all must match), or exactly the ids in jobIds."""

    model_config = ConfigDict(json_schema_extra=cel_rules(WINDOW_RULE, _JOB_IDS_RULE))

    job_ids: list[JobId] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_JOB_IDS,
        description=(
            "Replay exactly these job ids (at most 1000, no duplicates), in this order, each once. "
            "Ids not in the failed set when the replay selects are left alone and listed in "
            "status.notFailedIds. Takes no other filter and not mode Bulk. Unset: select by the filters."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("job_ids")
    @classmethod
    def _no_duplicates(cls, value: list[str] | None) -> list[str] | None:
        if value is None or len(set(value)) == len(value):
            return value
        seen: set[str] = set()
        twice: list[str] = []
        for job_id in value:
            if job_id in seen and job_id not in twice:
                twice.append(job_id)
            seen.add(job_id)
        raise ValueError(f"jobIds lists {', '.join(repr(i) for i in twice[:5])} more than once")

    @model_validator(mode="after")
    def _ids_or_filters(self) -> ReplaySelector:
        if self.job_ids is not None and (
            self.job_names
            or self.failed_reason_pattern is not None
            or self.data_match is not None
            or self.failed_after is not None
            or self.failed_before is not None
            or self.max_jobs is not None
            or self.dedupe_by is not None
        ):
            raise ValueError(_JOB_IDS_RULE[1])
        return self


class Verify(ApiModel):
    """Watch the replayed jobs after the replay and judge the outcome."""

    window: Duration = Field(default="5m", description="How long to watch the replayed jobs.")
    min_success_rate: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Fraction (0-1) of replayed jobs that must complete within the window.",
    )
    max_failed_again: int | None = Field(
        default=None,
        ge=0,
        le=INT64_MAX,
        description="Fail if more replayed jobs than this fail again. Unset: no bound.",
    )
    smoke_test: SmokeTest | None = Field(
        default=None,
        description="After verification passed, send this HTTP request (and optionally wait for the job "
        "it triggers); the replay succeeds only if it passes, else Failed with reason SmokeTestFailed.",
    )


class ReplayMode(StrEnum):
    """How a replay moves jobs: job by job as ``Job.retry`` would, or in bulk as ``Queue.retryJobs``."""

    #: Each job goes where BullMQ's ``Job.retry`` puts it; corrupt jobs are left alone.
    EXACT = "Exact"
    #: BullMQ's ``moveJobsToWait`` over the time window, like ``Queue.retryJobs``.
    BULK = "Bulk"


#: Why Bulk takes no per-job filter: ``moveJobsToWait`` moves the oldest failed jobs up to a
#: time, so only a time window (and a count) can say which jobs it takes.
_BULK_RULE = (
    "!has(self.mode) || self.mode != 'Bulk' || (!has(self.targetQueue) && (!has(self.selector)"
    " || ((!has(self.selector.jobNames) || size(self.selector.jobNames) == 0)"
    " && !has(self.selector.failedReasonPattern) && !has(self.selector.dataMatch)"
    " && !has(self.selector.jobIds))))",
    "mode Bulk takes only a time window (failedAfter, failedBefore, maxJobs) and no targetQueue;"
    " use mode Exact to filter by name, reason, data or job ids",
)


#: Why Bulk takes no ``dedupeBy``: ``moveJobsToWait`` moves jobs without anyone reading their
#: data, so nothing can tell two copies of one message apart.
_BULK_DEDUPE_RULE = (
    "!has(self.mode) || self.mode != 'Bulk' || !has(self.selector) || !has(self.selector.dedupeBy)",
    "selector.dedupeBy needs mode Exact: mode Bulk moves jobs with BullMQ's moveJobsToWait "
    "without reading their data, so it cannot tell duplicates apart",
)


class DLQReplaySpec(ApiModel):
    """Replay failed BullMQ jobs: which, how fast, after which checks, verified how."""

    model_config = ConfigDict(json_schema_extra=cel_rules(_BULK_RULE, _BULK_DEDUPE_RULE))

    redis: RedisConnection = Field(description="The Redis that holds the queue.")
    prefix: KeyPrefix = Field(default="bull", description="BullMQ key prefix.")
    queue: QueueName = Field(
        description="Queue whose failed set is replayed.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "queue is immutable"}]
        },
    )
    selector: ReplaySelector = Field(
        default_factory=ReplaySelector,
        description="Which failed jobs to replay; immutable once created.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "selector is immutable"}]
        },
    )
    rate: Rate = Field(default_factory=Rate, description="Replay speed; may change while running.")
    mode: ReplayMode = Field(
        default=ReplayMode.EXACT,
        strict=False,
        description=(
            "How jobs move. Exact: each job goes where BullMQ's Job.retry puts it (prioritized "
            "for a priority, next in line for lifo), corrupt jobs stay failed and are listed, "
            "the status breaks the selection down by name and reason. Bulk: BullMQ's own "
            "moveJobsToWait, as Queue.retryJobs does, about twice as fast on large failed sets: every "
            "job of the time window goes to wait (priority and lifo ignored, corrupt jobs moved "
            "too), no breakdown, and jobs that failed in the last second before the replay "
            "started stay failed. Bulk takes only a time window, no targetQueue, and fails if "
            "older failed jobs than failedAfter exist. Immutable."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "mode is immutable"}]
        },
    )
    reset_attempts: bool = Field(
        default=True, description="Reset attemptsMade so replayed jobs get their full retries again."
    )
    pause_queue: bool = Field(
        default=False,
        description="Pause the queue while gates are red and resume it before replaying.",
    )
    gates: list[GateSpec] = Field(
        default_factory=list,
        max_length=20,
        description="Health checks that must pass before (and while) replaying.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    gate_policy: GatePolicy = Field(default_factory=GatePolicy, description="Gate timing.")
    verify: Verify | None = Field(
        default=None, description="Verify the outcome after replaying. Unset: succeed when all moved."
    )
    target_queue: QueueName | None = Field(
        default=None,
        description="Move matched jobs into this queue (same Redis and prefix) instead of retrying in place.",
    )
    suspend: bool = Field(default=False, description="Stop at the next batch (and resume the queue).")
    cancel: bool = Field(
        default=False,
        description=(
            "Stop for good at the next batch: the queue is resumed if this replay paused it (a queue "
            "paused by someone else stays paused), the lease released, and the replay ends in phase "
            "Cancelled (reason Cancelled) with its counts; jobs not yet moved stay failed. Unlike "
            "deleting the resource, the record stays."
        ),
    )
    dry_run: bool = Field(
        default=False, description="Only count and break down what would be replayed; move nothing."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=SECONDS_MAX,
        description="Delete this resource that many seconds after it finished.",
    )

    @model_validator(mode="after")
    def _bulk_takes_a_time_window(self) -> DLQReplaySpec:
        s = self.selector
        per_job = (
            s.job_names
            or s.failed_reason_pattern is not None
            or s.data_match is not None
            or s.job_ids is not None
        )
        if self.mode == ReplayMode.BULK and s.dedupe_by is not None:
            raise ValueError(_BULK_DEDUPE_RULE[1])
        if self.mode == ReplayMode.BULK and (per_job or self.target_queue):
            raise ValueError(_BULK_RULE[1])
        return self


class ReplayPhase(StrEnum):
    """Where a replay is in its life."""

    #: Accepted, not started.
    PENDING = "Pending"
    #: Checking gates; nothing moved yet (or held mid-replay).
    WAITING_FOR_GATES = "WaitingForGates"
    #: Moving jobs from the snapshot back to the queue.
    REPLAYING = "Replaying"
    #: All moved; watching the replayed jobs for verify.window.
    VERIFYING = "Verifying"
    #: Done and, if asked, verified.
    SUCCEEDED = "Succeeded"
    #: Stopped by an error, a gate timeout or failed verification.
    FAILED = "Failed"
    #: spec.suspend is true.
    SUSPENDED = "Suspended"
    #: spec.cancel was set (or the resource deleted) before it finished.
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        """Whether the replay will never move another job."""
        return self in (ReplayPhase.SUCCEEDED, ReplayPhase.FAILED, ReplayPhase.CANCELLED)


class Breakdown(StatusModel):
    """Matched jobs grouped for a human, most common first."""

    by_name: dict[str, int] = Field(default_factory=dict, description="Matched jobs per job name.")
    by_reason: dict[str, int] = Field(
        default_factory=dict, description="Matched jobs per normalised failure reason."
    )
    duplicates_by_key: dict[str, int] | None = Field(
        default=None,
        description="selector.dedupeBy: failed jobs left failed per value (a bounded sample: the 20 values "
        "with the most duplicates among the first 1000 values that had any). Unset when none was left.",
    )


class DLQReplayStatus(StatusModel):
    """What the replay did so far; enough, with the Redis snapshot, to resume after a crash."""

    phase: ReplayPhase = Field(default=ReplayPhase.PENDING, description="Current phase.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, GatesPassed, QueuePaused, Progressing, Succeeded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int = Field(default=0, description="Generation last acted upon.")
    matched: int = Field(default=0, description="Failed jobs selected into the snapshot.")
    replayed: int = Field(default=0, description="Jobs moved back to the queue.")
    skipped: int = Field(
        default=0, description="Selected jobs no longer in the failed set when their turn came."
    )
    corrupt: int = Field(default=0, description="Jobs whose data could not be read.")
    not_failed: int = Field(
        default=0,
        description="Ids of selector.jobIds that were not in the failed set when the replay selected "
        "(replayed already, completed, waiting, removed, or a typo); left alone.",
    )
    not_failed_ids: list[str] = Field(
        default_factory=list, description="The first 100 of those ids, in the order jobIds lists them."
    )
    over_budget: int = Field(
        default=0,
        description="Failed jobs the selector matched but left out of the snapshot: they had reached "
        "their auto-replay budget (the owning QueuePolicy's maxReplaysPerJob).",
    )
    duplicates: int = Field(
        default=0,
        description="Failed jobs the selector matched but left failed because a newer failed job has "
        "the same selector.dedupeBy value (only the newest of each value is replayed).",
    )
    no_dedupe_key: int = Field(
        default=0,
        description="Matched jobs whose data has no value (or null) at selector.dedupeBy: not "
        "deduplicated, each replayed.",
    )
    failed_again: int = Field(default=0, description="Replayed jobs that failed again.")
    completed: int = Field(default=0, description="Replayed jobs that completed during verify.")
    progress: str = Field(default="", description='Replayed and skipped of matched, e.g. "1200/5000".')
    started_at: datetime | None = Field(default=None, description="When replaying started.")
    replay_finished_at: datetime | None = Field(
        default=None, description="When the last job was moved; the verify window starts here."
    )
    completed_at: datetime | None = Field(default=None, description="When it finished.")
    gates: list[GateStatus] = Field(default_factory=list, description="Last result of every gate.")
    queue_paused_by_replay: bool = Field(
        default=False, description="True while this replay holds the queue paused."
    )
    breakdown: Breakdown | None = Field(default=None, description="Matched jobs by name and reason.")
    sample_ids: list[str] = Field(default_factory=list, description="First matched job ids.")
    corrupt_ids: list[str] = Field(default_factory=list, description="First corrupt job ids.")
    smoke_test: SmokeTestStatus | None = Field(
        default=None, description="The post-replay smoke test (spec.verify.smokeTest), once it started."
    )
    message: str = Field(default="", description="Last thing worth telling a person.")
