"""The QueuePolicy resource: watch queues, pause during outages, replay after, clean, alert."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field, field_validator, model_validator

from requeue.api.archive import ArchiveSpec
from requeue.api.base import (
    INT64_MAX,
    SECONDS_MAX,
    ApiModel,
    Condition,
    Duration,
    KeyPrefix,
    QueueName,
    SecretKeyRef,
    StatusModel,
    cel_rules,
)
from requeue.api.common import Rate, RedisConnection, Selector
from requeue.api.escalation import (
    HASH_LOOKUPS_MESSAGE,
    MAX_FAILED_NAMES,
    EscalationSpec,
    EscalationStatus,
    missing_thresholds,
    threshold_cel_rules,
    uses_condition,
)
from requeue.api.gates import GatePolicy, GateSpec, GateStatus
from requeue.api.jsonpath import MAX_PATH_LENGTH, PATH_PATTERN, parse_json_path
from requeue.api.replay import Verify


class FailedGrowing(ApiModel):
    """Alert while the failed count is above a level and rising (the runbook's "failed > 50 and growing")."""

    above: int = Field(ge=0, le=INT64_MAX, description="Only judged while more than this many jobs failed.")
    min_increase: int = Field(
        default=1,
        ge=1,
        le=INT64_MAX,
        description="Rising means at least this many more failed jobs than at the start of `window`.",
    )


class Thresholds(ApiModel):
    """When a queue counts as unhealthy; unset thresholds are not checked."""

    failed: int | None = Field(
        default=None, ge=0, le=INT64_MAX, description="Alert above this many failed jobs."
    )
    waiting: int | None = Field(
        default=None, ge=0, le=INT64_MAX, description="Alert above this waiting backlog."
    )
    failure_rate_percent: float | None = Field(
        default=None, ge=0, le=100, description="Alert above this failure rate over `window`."
    )
    window: Duration = Field(default="5m", description="Window for the failure rate.")
    stalled_active_seconds: int | None = Field(
        default=None,
        ge=1,
        le=SECONDS_MAX,
        description=(
            "Alert when an active job's lock expired this long ago, or when it has been active this long "
            "(the stuck jobs are listed in .status.queues[].stuckActive)."
        ),
    )
    stalled_for: Duration | None = Field(
        default=None,
        description=(
            "Alert when jobs have been waiting and none completed or failed for this long, e.g. 15m "
            "(processing stopped; the cause is in .status.queues[].processingStopped). Unset: not checked."
        ),
    )
    failed_growing: FailedGrowing | None = Field(
        default=None, description="Alert while the failed count is above a level and rising over `window`."
    )
    failure_rate_min_jobs: int = Field(
        default=10,
        ge=1,
        le=INT64_MAX,
        description="Fewest finished jobs in the window before failureRatePercent is judged.",
    )
    latency_p95: Duration | None = Field(
        default=None,
        description=(
            "Alert when the 95th percentile of job latency (added to finished) over `window` is above this, "
            "e.g. 30s (the runbook's p95 alert; .status.queues[].latencyP95Seconds). Unset: not checked."
        ),
    )


class AutoReplaySpec(ApiModel):
    """Replay jobs that failed during an outage once its gates have been green for a while."""

    selector: Selector = Field(default_factory=Selector, description="Which failed jobs qualify.")
    stable_for: Duration = Field(
        default="2m", description="How long all gates must be green before replaying."
    )
    max_replays_per_job: int = Field(
        default=2, ge=1, le=100, description="Never auto-replay one job more often than this."
    )
    cooldown: Duration = Field(default="10m", description="Minimum time between two auto replays.")
    rate: Rate = Field(default_factory=Rate, description="Replay speed.")
    verify: Verify | None = Field(default=None, description="Verify each auto replay.")


class CleanRule(ApiModel):
    """Remove finished jobs older than grace, at most limit per evaluation."""

    grace: Duration = Field(description="Keep jobs that finished more recently than this.")
    limit: int = Field(default=1000, ge=1, le=100_000, description="Most jobs removed per evaluation.")
    archive: ArchiveSpec | None = Field(
        default=None,
        description=(
            "Write each job to a Postgres table before removing it; a job that could not be written "
            "is not removed. Unset: removed without a copy."
        ),
    )


class CleanSpec(ApiModel):
    """Retention for finished jobs, applied with BullMQ's own clean script."""

    completed: CleanRule | None = Field(default=None, description="Retention of completed jobs.")
    failed: CleanRule | None = Field(default=None, description="Retention of failed jobs.")


class Actions(ApiModel):
    """What requeue may do by itself."""

    pause_while_gates_fail: bool = Field(
        default=False, description="Pause every queue while a gate is red; resume when all are green."
    )
    auto_replay: AutoReplaySpec | None = Field(default=None, description="Replay after recovery.")
    clean: CleanSpec | None = Field(default=None, description="Clean old finished jobs.")


class Alerts(ApiModel):
    """Where breaches and recoveries are reported."""

    events: bool = Field(default=True, description="Emit Kubernetes Events.")
    slack_webhook_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Slack incoming-webhook URL."
    )
    repeat_after: Duration = Field(
        default="1h", description="Repeat an alert for a breach that lasts longer than this."
    )


class PolicyMetrics(ApiModel):
    """What the policy exports to Prometheus beyond its queue gauges."""

    max_job_names: int = Field(
        default=20,
        ge=0,
        le=1000,
        description=(
            "Job names with their own `job` label on the job latency, processing and outcome series, per "
            "queue: the first names seen; later ones are counted under `other` (bounded series)."
        ),
    )
    max_job_lookups: int = Field(
        default=1000,
        ge=0,
        le=10_000,
        description=(
            "Finished jobs whose hash is read per queue and evaluation (one HMGET each, the newest) for job "
            "latency and names. Jobs beyond it are counted as job `unknown` and not timed; 0 reads none "
            "(no latency, outcomes only)."
        ),
    )


#: :data:`PATH_PATTERN` inside a CEL string literal (backslashes escaped).
_CEL_PATH_PATTERN = PATH_PATTERN.replace("\\", "\\\\")


class DuplicatesSpec(ApiModel):
    """Look for duplicate jobs among those waiting (the runbook's "Duplicate jobs in queue")."""

    business_key: str | None = Field(
        default=None,
        description=(
            "JSON path into the job data naming a job's business identity, e.g. $.orderId (only .name and "
            "[index] steps, as selector.dedupeBy). Two waiting jobs with the same value there are duplicates "
            "by key. Unset: only job ids listed twice are looked for."
        ),
        json_schema_extra={
            "maxLength": MAX_PATH_LENGTH,
            **cel_rules(
                (
                    f"self.matches('{_CEL_PATH_PATTERN}')",
                    "businessKey must be a JSON path made of $ and .name or [index] steps, e.g. $.orderId "
                    "(no wildcards, filters or quotes)",
                )
            ),
        },
    )
    max_jobs: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description=(
            "Job ids read per list (wait, paused, prioritized) and queue at each evaluation: the newest of "
            "wait and paused, the next to run of prioritized. Jobs beyond are not checked; with businessKey, "
            "one HGET per id read."
        ),
    )

    @field_validator("business_key")
    @classmethod
    def _supported_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_json_path(value)
        return value


class QueuePolicySpec(ApiModel):
    """A standing policy over one or more queues of one Redis."""

    model_config = ConfigDict(json_schema_extra=cel_rules(*threshold_cel_rules()))

    redis: RedisConnection = Field(description="The Redis that holds the queues.")
    prefix: KeyPrefix = Field(default="bull", description="BullMQ key prefix.")
    queues: list[QueueName] = Field(
        min_length=1,
        max_length=500,
        description="Queues this policy watches.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    interval: Duration = Field(default="30s", description="Time between two evaluations.")
    gates: list[GateSpec] = Field(
        default_factory=list,
        max_length=20,
        description="Dependencies whose health drives actions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    gate_policy: GatePolicy = Field(default_factory=GatePolicy, description="Gate thresholds.")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Alerting thresholds.")
    actions: Actions = Field(default_factory=Actions, description="Automatic remediation.")
    alerts: Alerts = Field(default_factory=Alerts, description="Alert destinations.")
    metrics: PolicyMetrics = Field(default_factory=PolicyMetrics, description="Prometheus series options.")
    dry_run: bool = Field(
        default=False, description="Decide and report only: no pause, resume, replay or clean."
    )
    escalation: EscalationSpec | None = Field(
        default=None,
        description="Escalation levels (the runbook's levels 1-3): conditions, hold time, actions.",
    )
    duplicates: DuplicatesSpec | None = Field(
        default=None,
        description=(
            "Look for duplicate jobs waiting: ids listed twice and, with businessKey, jobs with the same "
            "key (.status.queues[].duplicates, a Warning Event, bullmq_queue_duplicate_jobs). "
            "Unset: not looked for."
        ),
    )

    @model_validator(mode="after")
    def _escalation_thresholds(self) -> QueuePolicySpec:
        configured = {name for name, value in self.thresholds.to_wire().items() if value is not None}
        missing = missing_thresholds(self.escalation, configured)
        reads_hashes = any(uses_condition(self.escalation, c) for c in ("failed_job_names", "corrupt_jobs"))
        if self.metrics.max_job_lookups == 0 and reads_hashes:
            missing.append(HASH_LOOKUPS_MESSAGE)
        if missing:
            raise ValueError("; ".join(missing))
        return self


class QueueBreach(StatusModel):
    """One threshold a queue is breaching, and when requeue last alerted about it."""

    kind: str = Field(
        description="failed, waiting, failureRate, stalled, processingStopped, failedGrowing or latencyP95."
    )
    message: str = Field(default="", description='What was measured, e.g. "failed 150 > 100".')
    since: datetime = Field(description="When the breach began.")
    last_alert_at: datetime | None = Field(default=None, description="When it was last alerted.")


class ProcessingStopped(StatusModel):
    """A queue with jobs waiting where no job completed or failed for ``thresholds.stalledFor``."""

    reason: str = Field(
        description=(
            "What the data shows: PausedByOthers (the queue is paused, not by this policy), WorkersDown "
            "(no worker connected, or none listed and no job active), WorkersStuck (workers hold active "
            "jobs that do not finish), WorkersIdle (workers connected, none takes a job)."
        )
    )
    since: datetime = Field(description="The last time a job completed or failed (or jobs began to wait).")
    message: str = Field(default="", description="The evidence, e.g. the waiting, active and worker counts.")


class StuckJob(StatusModel):
    """An active job whose lock expired, or that has been active longer than ``stalledActiveSeconds``."""

    id: str = Field(description="Job id.")
    name: str = Field(default="", description="Job name (cut to 200 characters).")
    started_at: datetime | None = Field(
        default=None, description="When a worker took it (processedOn); unset when the job hash has none."
    )
    age_seconds: int = Field(default=0, description="Seconds since it was taken.")
    lock_expired: bool = Field(
        default=False, description="Its lock is gone: the worker holding it died or lost Redis."
    )


class DuplicateKey(StatusModel):
    """A business key held by more than one waiting job."""

    key: str = Field(description="The value at spec.duplicates.businessKey, as JSON (cut to 200 characters).")
    jobs: int = Field(default=0, description="Waiting jobs holding it (among those read).")
    job_ids: list[str] = Field(default_factory=list, description="Jobs holding it (at most 10).")


class QueueDuplicates(StatusModel):
    """Duplicate jobs found among the waiting jobs read (spec.duplicates)."""

    scanned: int = Field(default=0, description="Job ids read from wait, paused and prioritized.")
    ids: int = Field(default=0, description="Job ids listed more than once (in one list or in two).")
    business_keys: int | None = Field(
        default=None,
        description=(
            "Business keys held by more than one waiting job; unset without spec.duplicates.businessKey."
        ),
    )
    sample_ids: list[str] = Field(default_factory=list, description="Duplicate ids (at most 10).")
    sample_keys: list[DuplicateKey] = Field(
        default_factory=list, description="Duplicate business keys with their jobs (at most 10)."
    )


class FailedJobName(StatusModel):
    """A job name that failed within the window, and how many of its jobs did."""

    name: str = Field(description="Job name (cut to 200 characters).")
    failed: int = Field(default=0, description="Its jobs that failed within the window (among those read).")


#: Most corrupt job ids ``.status.queues[].corruptJobs.sample`` lists.
CORRUPT_SAMPLE = 10


class CorruptJobRef(StatusModel):
    """A failed job whose hash BullMQ cannot read."""

    id: str = Field(description="Job id (cut to 200 characters).")
    reason: str = Field(
        description=(
            "Why: job hash missing (its id still in the failed set), job key is not a hash, job has no name, "
            "job has no data, job data is not JSON."
        )
    )
    at: datetime = Field(description="When it failed (the events stream's entry).")


class QueueCorruptJobs(StatusModel):
    """Corrupt jobs among the failed jobs checked within the window (an escalation corruptJobs condition)."""

    found: int = Field(default=0, description="Corrupt failed jobs found within the window.")
    checked: int = Field(default=0, description="Failed jobs checked within the window.")
    sample: list[CorruptJobRef] = Field(
        default_factory=list,
        max_length=CORRUPT_SAMPLE,
        description=f"The newest corrupt jobs found (at most {CORRUPT_SAMPLE}).",
    )


class QueueState(StatusModel):
    """The last observation of one queue."""

    name: str = Field(description="Queue name.")
    waiting: int = Field(default=0, description="Jobs in wait.")
    active: int = Field(default=0, description="Jobs being processed.")
    completed: int = Field(default=0, description="Completed jobs kept.")
    failed: int = Field(default=0, description="Failed jobs kept.")
    delayed: int = Field(default=0, description="Delayed jobs.")
    prioritized: int = Field(default=0, description="Jobs waiting with a priority.")
    paused: bool = Field(default=False, description="Whether the queue is paused.")
    paused_by_policy: bool = Field(default=False, description="Whether this policy paused it.")
    dry_run_paused: bool = Field(
        default=False, description="Whether this policy would have paused it, were it not a dry run."
    )
    failure_rate_percent: float | None = Field(
        default=None, description="Failed / (completed + failed) over the window, in percent."
    )
    stalled: int = Field(
        default=0,
        description=(
            "Stuck active jobs: lock expired stalledActiveSeconds ago, or active that long "
            "(among the oldest active jobs read)."
        ),
    )
    stuck_active: list[StuckJob] = Field(
        default_factory=list,
        max_length=20,
        description="The stuck active jobs, longest active first (at most 20).",
    )
    workers: int | None = Field(
        default=None,
        description=(
            "Worker connections of the queue, as BullMQ's getWorkersCount counts them (CLIENT LIST); "
            "unset when not read (only while processing looks stopped) or CLIENT LIST is refused."
        ),
    )
    idle_since: datetime | None = Field(
        default=None,
        description=(
            "Since when jobs have waited and none completed or failed (the last finish seen, or when the "
            "backlog appeared); unset while nothing waits."
        ),
    )
    processing_stopped: ProcessingStopped | None = Field(
        default=None, description="Set while processing has stopped for thresholds.stalledFor."
    )
    failed_change: int | None = Field(
        default=None,
        description="Change of the failed count over the window (thresholds.failedGrowing); unset before "
        "a second observation.",
    )
    latency_p95_seconds: float | None = Field(
        default=None,
        description=(
            "95th percentile of job latency (added to finished) over the window, in seconds, from the job "
            "hashes of the jobs that finished in it (at most 5% above the exact value); unset when none was "
            "timed."
        ),
    )
    latency_jobs: int = Field(
        default=0, description="Jobs the latency percentile is based on (finished in the window and timed)."
    )
    duplicates: QueueDuplicates | None = Field(
        default=None, description="Duplicate waiting jobs (spec.duplicates); unset when not looked for."
    )
    failed_job_names: list[FailedJobName] | None = Field(
        default=None,
        max_length=MAX_FAILED_NAMES,
        description=(
            "Job names that failed within the window, most failures first (from the failed jobs' hashes, "
            f"at most {MAX_FAILED_NAMES}); unset unless an escalation condition failedJobNames reads them."
        ),
    )
    corrupt_jobs: QueueCorruptJobs | None = Field(
        default=None,
        description=(
            "Corrupt failed jobs found within the window; unset unless an escalation condition corruptJobs "
            "looks for them."
        ),
    )
    healthy: bool = Field(default=True, description="No threshold breached.")
    reasons: list[str] = Field(default_factory=list, description="Breached thresholds.")
    breaches: list[QueueBreach] = Field(
        default_factory=list, description="Breached thresholds with their alert bookkeeping."
    )
    reason: str = Field(
        default="",
        description=(
            "Why the queue could not be evaluated: QueueNotFound when BullMQ has no key for it under "
            "spec.prefix (a typo?). Empty when it was evaluated."
        ),
    )
    message: str = Field(
        default="", description="What is wrong with the queue; for QueueNotFound, the queues that exist."
    )


class PolicyAction(StatusModel):
    """Something the policy did (or, in dry run, would have done)."""

    at: datetime = Field(description="When.")
    action: str = Field(description="Alert, Recover, Pause, Resume, AutoReplay or Clean.")
    queue: str = Field(default="", description="Queue concerned, if any.")
    reason: str = Field(default="", description="Why.")
    dry_run: bool = Field(default=False, description="Only decided, not done.")
    result: str = Field(default="", description="Outcome, e.g. the child DLQReplay name.")


class QueuePolicyStatus(StatusModel):
    """Observed queue health and recent actions."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Healthy, GatesPassed, Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int = Field(default=0, description="Generation last acted upon.")
    queues: list[QueueState] = Field(default_factory=list, description="Per-queue observation.")
    gates: list[GateStatus] = Field(default_factory=list, description="Last result of every gate.")
    last_actions: list[PolicyAction] = Field(
        default_factory=list, description="Most recent actions, newest first (bounded)."
    )
    last_evaluated_at: datetime | None = Field(default=None, description="Last evaluation time.")
    gates_green_since: datetime | None = Field(
        default=None, description="Since when every gate has been healthy."
    )
    outage_started_at: datetime | None = Field(
        default=None, description="When the current or last outage began (first red gate)."
    )
    last_auto_replay_at: datetime | None = Field(default=None, description="Last auto replay.")
    last_replayed_outage: datetime | None = Field(
        default=None,
        description="Start of the outage whose failures were last auto-replayed (once per outage).",
    )
    escalation: EscalationStatus | None = Field(
        default=None, description="The escalation level in force, since when and why (spec.escalation)."
    )
