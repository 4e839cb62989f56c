"""Condition types and reasons: the words ``.status.conditions``, Events and the CLI use.

They are API: alerts, dashboards and runbooks match on them, so each is
spelled once, here. ``requeue crds`` writes the reasons table of
``docs/api-reference.md`` from :data:`REASON_DOCS`, and the README's
troubleshooting table may only name reasons that exist (a unit test checks it).

There is one :class:`Reason` vocabulary rather than one per kind: the failure
reasons (``SecretNotFound``, ``RedisUnreachable``, ...) are shared by both
kinds and by the CLI, and a reason must mean the same wherever it appears.
The condition *types* differ per kind: :class:`ReplayCondition` and
:class:`PolicyCondition`.

Each :mod:`requeue.errors` class carries its reason as a member of
:class:`Reason`; a class and its reason have the same name.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["REASON_DOCS", "ConditionType", "PolicyCondition", "Reason", "ReplayCondition", "stored_reason"]


class ReplayCondition(StrEnum):
    """The condition types of a DLQReplay."""

    #: The replay can work: its Secret, Redis and the queue's lease are available.
    READY = "Ready"
    #: The replay is moving through its stages (False once it finished, is suspended or held).
    PROGRESSING = "Progressing"
    #: The outcome: True (Succeeded), False (Failed, Cancelled) or Unknown (still running).
    SUCCEEDED = "Succeeded"
    #: Every gate passes.
    GATES_PASSED = "GatesPassed"
    #: The queue is paused (by this replay while gates are red, or by someone else).
    QUEUE_PAUSED = "QueuePaused"
    #: A spec edit is not applied (invalid, an immutable field, or after the end).
    SPEC_IGNORED = "SpecIgnored"


class PolicyCondition(StrEnum):
    """The condition types of a QueuePolicy."""

    #: No queue breaches a threshold, and every listed queue exists.
    HEALTHY = "Healthy"
    #: Every gate passes.
    GATES_PASSED = "GatesPassed"
    #: The last evaluation could observe every queue.
    READY = "Ready"
    #: An escalation level (spec.escalation) is in force.
    ESCALATED = "Escalated"


#: Any condition type.
ConditionType = ReplayCondition | PolicyCondition


class Reason(StrEnum):
    """Every reason requeue writes to a condition, an Event or a status entry (see :data:`REASON_DOCS`)."""

    # -- failures (requeue.errors): Ready=False, Warning Events, CLI errors
    SPEC_INVALID = "SpecInvalid"
    SECRET_NOT_FOUND = "SecretNotFound"
    QUEUE_NOT_FOUND = "QueueNotFound"
    JOB_NOT_FOUND = "JobNotFound"
    REPLAY_NOT_FOUND = "ReplayNotFound"
    REPLAY_RUNNING = "ReplayRunning"
    SELECTION_CHANGED = "SelectionChanged"
    REDIS_URL_INVALID = "RedisUrlInvalid"
    HASH_TAG_REQUIRED = "HashTagRequired"
    AUTH_FAILED = "AuthFailed"
    FORBIDDEN = "Forbidden"
    REDIS_UNREACHABLE = "RedisUnreachable"
    REDIS_OUT_OF_MEMORY = "RedisOutOfMemory"
    REDIS_CERTIFICATE_UNTRUSTED = "RedisCertificateUntrusted"
    SENTINEL_MASTER_UNKNOWN = "SentinelMasterUnknown"
    QUEUE_LOCKED = "QueueLocked"
    ARCHIVE_FAILED = "ArchiveFailed"
    KUBERNETES_API_ERROR = "KubernetesApiError"
    DESTINATION_DENIED = "DestinationDenied"
    GATE_MISCONFIGURED = "GateMisconfigured"
    VERIFICATION_FAILED = "VerificationFailed"
    SMOKE_TEST_FAILED = "SmokeTestFailed"
    GATES_TIMED_OUT = "GatesTimedOut"
    TRANSIENT_ERROR = "TransientError"
    PERMANENT_ERROR = "PermanentError"
    ERROR = "Error"
    INTERNAL_ERROR = "InternalError"
    CLEANUP_FAILED = "CleanupFailed"
    # -- a DLQReplay's outcome (Succeeded)
    SUCCEEDED = "Succeeded"
    VERIFIED = "Verified"
    DRY_RUN = "DryRun"
    SNAPSHOT_LOST = "SnapshotLost"
    OLDER_FAILED_JOBS = "OlderFailedJobs"
    CANCELLED = "Cancelled"
    IN_PROGRESS = "InProgress"
    # -- a DLQReplay's progress (Progressing, Ready)
    READY = "Ready"
    SELECTING = "Selecting"
    REPLAYING = "Replaying"
    THROTTLED = "Throttled"
    VERIFYING = "Verifying"
    SMOKE_TESTING = "SmokeTesting"
    SUSPENDED = "Suspended"
    INTERRUPTED = "Interrupted"
    HELD_BY_GATES = "HeldByGates"
    FINISHED = "Finished"
    # -- gates (GatesPassed, Events)
    NO_GATES = "NoGates"
    ALL_GATES_PASSED = "AllGatesPassed"
    GATES_PASSED = "GatesPassed"
    GATES_RED = "GatesRed"
    GATES_PENDING = "GatesPending"
    GATES_NOT_CHECKED = "GatesNotChecked"
    GATE_FAILED = "GateFailed"
    GATES_FAILED = "GatesFailed"
    GATES_RECOVERED = "GatesRecovered"
    # -- the queue's pause (QueuePaused, Events)
    PAUSED_BY_OTHERS = "PausedByOthers"
    PAUSED_BY_REPLAY = "PausedByReplay"
    RESUMED_BY_REPLAY = "ResumedByReplay"
    QUEUE_PAUSED_BY_OTHERS = "QueuePausedByOthers"
    QUEUE_PAUSED = "QueuePaused"
    QUEUE_RESUMED = "QueueResumed"
    # -- spec edits (SpecIgnored)
    SPEC_IGNORED = "SpecIgnored"
    SPEC_ACCEPTED = "SpecAccepted"
    IMMUTABLE_FIELD_CHANGED = "ImmutableFieldChanged"
    REPLAY_FINISHED = "ReplayFinished"
    SMOKE_TEST_PASSED = "SmokeTestPassed"
    # -- a DLQReplay's Events
    REPLAY_STARTED = "ReplayStarted"
    SELECTED = "Selected"
    RESUMED = "Resumed"
    CORRUPT_JOBS = "CorruptJobs"
    JOBS_NOT_FAILED = "JobsNotFailed"
    REDIS_REACHABLE = "RedisReachable"
    RECOVERED = "Recovered"
    # -- a QueuePolicy (Ready, Healthy, .status.queues[].reason, Events)
    EVALUATED = "Evaluated"
    WITHIN_THRESHOLDS = "WithinThresholds"
    THRESHOLDS_BREACHED = "ThresholdsBreached"
    FAILED_ABOVE_THRESHOLD = "FailedAboveThreshold"
    WAITING_ABOVE_THRESHOLD = "WaitingAboveThreshold"
    FAILURE_RATE_ABOVE_THRESHOLD = "FailureRateAboveThreshold"
    STALLED_JOBS = "StalledJobs"
    PROCESSING_STOPPED = "ProcessingStopped"
    FAILED_GROWING = "FailedGrowing"
    LATENCY_ABOVE_THRESHOLD = "LatencyAboveThreshold"
    DUPLICATE_JOBS = "DuplicateJobs"
    # -- why processing stopped (.status.queues[].processingStopped.reason; PausedByOthers too)
    WORKERS_DOWN = "WorkersDown"
    WORKERS_STUCK = "WorkersStuck"
    WORKERS_IDLE = "WorkersIdle"
    AUTO_REPLAY = "AutoReplay"
    ACTION_FAILED = "ActionFailed"
    NOTIFY_FAILED = "NotifyFailed"
    NOTIFY_RETRIED = "NotifyRetried"
    RESOLVED = "Resolved"
    # -- escalation (Escalated, Events)
    NOT_ESCALATED = "NotEscalated"
    ESCALATION_RAISED = "EscalationRaised"
    ESCALATION_LOWERED = "EscalationLowered"
    ESCALATION_CLEARED = "EscalationCleared"


#: What each reason means and where it appears; the reasons table of docs/api-reference.md.
REASON_DOCS: dict[Reason, str] = {
    Reason.SPEC_INVALID: "The spec does not validate; the message names the field (CLI exit 2).",
    Reason.SECRET_NOT_FOUND: "A referenced Secret or key does not exist in the resource's namespace "
    "(CLI exit 2).",
    Reason.ARCHIVE_FAILED: "A clean with `archive` could not write the jobs to Postgres (unreachable, "
    "credentials refused, no permission on the table, a bad DSN or table name): nothing was removed; "
    "the message names the cause (CLI exit 1; a QueuePolicy's Clean fails with an ActionFailed Event).",
    Reason.JOB_NOT_FOUND: "CLI (`requeue inspect --job`): no job with that id in the queue, neither a "
    "job hash nor an entry in any of BullMQ's sets (removed, or a typo; exit 2).",
    Reason.REPLAY_NOT_FOUND: "CLI (`requeue replays forget`): no replay state with that id in this Redis "
    "(`requeue replays list` shows the ones there are; exit 2).",
    Reason.REPLAY_RUNNING: "CLI (`requeue replays forget`): the replay has not finished; its keys are its "
    "progress and are not removed while it runs (exit 2).",
    Reason.QUEUE_NOT_FOUND: "The queue has no BullMQ key under the prefix: a typo? The message lists "
    "the queues that exist there (CLI exit 2).",
    Reason.SELECTION_CHANGED: "A resumed replay's manifest selects other jobs than at its start "
    "(CLI exit 2).",
    Reason.REDIS_URL_INVALID: "The Redis URL (Secret or flag) cannot be parsed; shown redacted (CLI exit 2).",
    Reason.HASH_TAG_REQUIRED: "On a Redis Cluster (`redis+cluster://`), the queue's prefix (or name) "
    "has no hash tag such as `{bull}`, or targetQueue (or another queue of the same QueuePolicy) hashes to "
    "another slot: BullMQ's and requeue's keys of a queue must share one slot (CLI exit 2).",
    Reason.AUTH_FAILED: "Redis, Postgres or an HTTP gate refused the credentials (CLI exit 3).",
    Reason.FORBIDDEN: "Redis's ACL user lacks a command or key pattern requeue needs (NOPERM; the "
    "message names it; README 'Redis ACL users'; CLI exit 3).",
    Reason.REDIS_UNREACHABLE: "Redis cannot be reached or answered with an error (CLI exit 3).",
    Reason.REDIS_OUT_OF_MEMORY: "Redis is at maxmemory and refuses writes; the replay holds.",
    Reason.REDIS_CERTIFICATE_UNTRUSTED: "The rediss:// server's TLS certificate does not verify with "
    "the CA given (spec.redis.tls.caSecretRef) or names another "
    "host; retried (CLI exit 3).",
    Reason.SENTINEL_MASTER_UNKNOWN: "The Sentinels of a redis+sentinel:// URL answer but monitor no master "
    "of the name in its path (the message lists the names they do); retried (CLI exit 3).",
    Reason.QUEUE_LOCKED: "Another replay (or process) holds the queue's lease; this one waits.",
    Reason.KUBERNETES_API_ERROR: "The Kubernetes API server was unreachable or answered with an error.",
    Reason.DESTINATION_DENIED: "A gate's (or verify.smokeTest's) host is refused by the operator's gate "
    "destination policy; a smoke test to it ends the replay Failed at once.",
    Reason.GATE_MISCONFIGURED: "A gate's check cannot run because of its configuration: the DSN or CA "
    "bundle in its Secret does not parse, or a redis gate has no Redis to check; like SecretNotFound, "
    "DestinationDenied and RedisUrlInvalid on a gate, it is neither red nor green: a QueuePolicy's Ready is "
    "False and nothing is paused, resumed or replayed on it; a DLQReplay fails at once (CLI exit 2).",
    Reason.VERIFICATION_FAILED: "Fewer replayed jobs completed than verify.minSuccessRate asks.",
    Reason.SMOKE_TEST_FAILED: "verify.smokeTest did not pass after its retries: a wrong status or JSON "
    "value, no answer, or the job it triggered failed or did not complete in time (the message has the "
    "answer: status and a short body excerpt, secrets redacted; CLI exit 1).",
    Reason.GATES_TIMED_OUT: "The gates stayed red past gatePolicy.timeout.",
    Reason.TRANSIENT_ERROR: "A temporary failure without a more specific name; retried.",
    Reason.PERMANENT_ERROR: "A failure retrying cannot fix, without a more specific name.",
    Reason.ERROR: "A requeue failure without a more specific name.",
    Reason.INTERNAL_ERROR: "An unexpected error (a bug): logged with its traceback; retried with backoff.",
    Reason.CLEANUP_FAILED: "Event: a deletion gave up cleaning up (Redis unreachable for good, bad URL, "
    "missing Secret); resume the queue by hand if it was paused.",
    Reason.SUCCEEDED: "The replay finished and moved every selected job.",
    Reason.VERIFIED: "The replay finished and verify.minSuccessRate of the replayed jobs completed.",
    Reason.DRY_RUN: "A dry run finished: it counted the matching jobs and moved none.",
    Reason.SNAPSHOT_LOST: "The replay's snapshot vanished from Redis (e.g. a restart without persistence).",
    Reason.OLDER_FAILED_JOBS: "Mode Bulk, and jobs older than failedAfter are still in the failed set.",
    Reason.CANCELLED: "The replay was cancelled (spec.cancel: true) or deleted before it finished: "
    "nothing more moves, .status keeps the counts of what did, the queue is left as found.",
    Reason.IN_PROGRESS: "Succeeded is Unknown: the replay has not finished yet.",
    Reason.READY: "Ready is True: the replay can work.",
    Reason.SELECTING: "Progressing: selecting the matching failed jobs.",
    Reason.REPLAYING: "Progressing: moving the selected jobs.",
    Reason.THROTTLED: "Progressing: waiting for the rate limit.",
    Reason.VERIFYING: "Progressing: waiting for the replayed jobs to complete.",
    Reason.SMOKE_TESTING: "Progressing: verification passed; running verify.smokeTest.",
    Reason.SUSPENDED: "spec.suspend is true: the replay waits.",
    Reason.INTERRUPTED: "CLI (`requeue replay`): stopped by Ctrl-C / SIGINT or SIGTERM; the queue it "
    "paused was resumed and its lease released. Rerunning the same command resumes it (exit 130).",
    Reason.HELD_BY_GATES: "Progressing is False: the gates are red.",
    Reason.FINISHED: "The replay ended (Progressing False; Ready True, it holds no lease).",
    Reason.NO_GATES: "GatesPassed is True: no gates are configured.",
    Reason.ALL_GATES_PASSED: "GatesPassed is True: every gate passes.",
    Reason.GATES_PASSED: "Event: every gate passes again.",
    Reason.GATES_RED: "A gate fails; .status.gates[].message says why.",
    Reason.GATES_PENDING: "The gates have not passed yet.",
    Reason.GATES_NOT_CHECKED: "A QueuePolicy's gates have not been checked yet.",
    Reason.GATE_FAILED: "A QueuePolicy's gate fails; .status.gates[].message says why.",
    Reason.GATES_FAILED: "Event: a QueuePolicy's gates turned red.",
    Reason.GATES_RECOVERED: "Event: a QueuePolicy's gates pass again.",
    Reason.PAUSED_BY_OTHERS: "The queue was paused by someone else: a replay leaves it paused; for a "
    "QueuePolicy's processingStopped it is why no job finishes.",
    Reason.PAUSED_BY_REPLAY: "The replay paused the queue while its gates are red.",
    Reason.RESUMED_BY_REPLAY: "The replay resumed the queue it had paused.",
    Reason.QUEUE_PAUSED_BY_OTHERS: "Event: the queue was paused by someone else; replayed jobs wait in it.",
    Reason.QUEUE_PAUSED: "Event: requeue paused the queue.",
    Reason.QUEUE_RESUMED: "Event: requeue resumed the queue.",
    Reason.SPEC_IGNORED: "Event: a spec edit is not applied (see the SpecIgnored condition).",
    Reason.SPEC_ACCEPTED: "SpecIgnored is False: the spec is valid and consistent.",
    Reason.IMMUTABLE_FIELD_CHANGED: "An immutable field changed after the replay started; the started "
    "values stay in use.",
    Reason.REPLAY_FINISHED: "Event or SpecIgnored: the replay finished (a finished one never runs again).",
    Reason.SMOKE_TEST_PASSED: "Event: verify.smokeTest's request (and the job it triggered) passed.",
    Reason.REPLAY_STARTED: "Event: the replay started.",
    Reason.SELECTED: "Event: the matching jobs were selected.",
    Reason.RESUMED: "Event: the replay resumed from Redis after a restart.",
    Reason.CORRUPT_JOBS: "Jobs with a missing hash or non-JSON data: counted, skipped, never fatal.",
    Reason.JOBS_NOT_FAILED: "Event: ids of selector.jobIds (`requeue replay --job`) that were not in the "
    "failed set when the replay selected; counted in .status.notFailed, named in .status.notFailedIds, "
    "left alone.",
    Reason.REDIS_REACHABLE: "Event: Redis answers again after an outage.",
    Reason.RECOVERED: "Event: the problem last reported is resolved.",
    Reason.EVALUATED: "A QueuePolicy's Ready is True: the last evaluation observed every queue.",
    Reason.WITHIN_THRESHOLDS: "Healthy is True: no queue breaches a threshold.",
    Reason.THRESHOLDS_BREACHED: "Healthy is False: queues breach more than one kind of threshold.",
    Reason.FAILED_ABOVE_THRESHOLD: "Healthy is False: a queue holds more failed jobs than allowed.",
    Reason.WAITING_ABOVE_THRESHOLD: "Healthy is False: a queue holds more waiting jobs than allowed.",
    Reason.FAILURE_RATE_ABOVE_THRESHOLD: "Healthy is False: a queue's failure rate is above its threshold.",
    Reason.STALLED_JOBS: "Healthy is False: a queue has active jobs whose lock expired, or that are "
    "active longer than stalledActiveSeconds; .status.queues[].stuckActive lists them.",
    Reason.PROCESSING_STOPPED: "Healthy is False: jobs wait and none completed or failed for "
    "thresholds.stalledFor; .status.queues[].processingStopped.reason says why.",
    Reason.FAILED_GROWING: "Healthy is False: a queue's failed count is above thresholds.failedGrowing.above "
    "and rose over the window.",
    Reason.LATENCY_ABOVE_THRESHOLD: "Healthy is False: the 95th percentile of a queue's job latency "
    "(added to finished) over the window is above thresholds.latencyP95.",
    Reason.DUPLICATE_JOBS: "Event: a queue has duplicate waiting jobs (a job id listed twice, or two jobs "
    "with the same spec.duplicates.businessKey); .status.queues[].duplicates lists a sample.",
    Reason.WORKERS_DOWN: "processingStopped: no worker is connected to the queue (or, where CLIENT LIST "
    "is refused, no job is active).",
    Reason.WORKERS_STUCK: "processingStopped: workers hold active jobs that do not finish.",
    Reason.WORKERS_IDLE: "processingStopped: workers are connected and nothing is active (a rate limit, "
    "a global concurrency of 0, workers on another prefix?).",
    Reason.AUTO_REPLAY: "Event: the policy created (or would create) a DLQReplay.",
    Reason.ACTION_FAILED: "Event: an action of the policy failed; lastActions[].result says why.",
    Reason.NOTIFY_FAILED: "Event: the Slack notification failed, or an escalation message did (retried at "
    "later evaluations: .status.escalation.pendingNotifications), or was given up after its last attempt.",
    Reason.NOTIFY_RETRIED: "Event: an escalation message that had failed was sent at a later attempt.",
    Reason.RESOLVED: "Event: the problem last reported is resolved.",
    Reason.NOT_ESCALATED: "Escalated is False: no escalation level's conditions have held for its holdFor.",
    Reason.ESCALATION_RAISED: "Escalated is True, and an Event: a higher escalation level is in force; "
    ".status.escalation says which, since when and which conditions held.",
    Reason.ESCALATION_LOWERED: "Escalated is True, and an Event: a lower escalation level is in force "
    "(the higher one's conditions were clear for its holdFor).",
    Reason.ESCALATION_CLEARED: "Event: escalation ended; the queues it paused were resumed.",
}


def stored_reason(text: str | None, default: Reason) -> Reason:
    """The reason stored as text (e.g. in Redis); ``default`` if missing or unknown to this version."""
    try:
        return Reason(text) if text else default
    except ValueError:
        return default
