"""Every Prometheus metric requeue exports, defined once.

Served on ``/metrics`` by ``requeue run``. Names follow Prometheus conventions:
``_total`` only on counters, base units (seconds, ratios) in the name. The one
exception is ``queue_depth_total``, the runbook's name for a gauge, kept so that
dashboards built on the runbook keep working; :data:`QUEUE_JOBS` is the same
number under a correct name.

Label sets are bounded and never collide:

* every queue-level series carries ``namespace`` and ``policy`` (two policies in
  two namespaces that both watch a queue named ``default`` are two series);
* a replay a QueuePolicy created (an auto replay, named after its outage) is
  counted under its policy (``policy=NAME, replay=""``), so outages do not add
  series; a replay made by hand is ``policy="", replay=NAME``;
* the series of a deleted DLQReplay or QueuePolicy are removed, and a policy that
  cannot read its Redis removes its queue gauges rather than keep old values
  (see :mod:`requeue.policy.series` and :mod:`requeue.replay.observed`).

The queue-level series (the queue gauges, the per-job histograms and counter) are
:mod:`requeue.policy_metrics` collectors: plain numbers per policy rendered at scrape
time, not one ``prometheus_client`` child object per series (one operator watching
2,000 queues would keep ~51 MiB of those). Same exposition.

``*_created`` series are not exported: Prometheus does not use them, and every
labelled counter and histogram would double its series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

from requeue.policy_metrics import PolicyCounter, PolicyGauge, PolicyHistogram, PolicySeries, TwinGauge

disable_created_metrics()  # type: ignore[no-untyped-call]  # (prometheus_client leaves it unannotated)

#: ``kind`` label values of :data:`REDIS_UP`: which resource the ``owner`` label names.
KIND_REPLAY = "DLQReplay"
KIND_POLICY = "QueuePolicy"

# -- gates ---------------------------------------------------------------------

GATE_HEALTHY = Gauge(
    "requeue_gate_healthy",
    "1 when the gate's last check passed, 0 when it failed.",
    ["namespace", "owner", "gate", "type"],
)
GATE_CHECK_SECONDS = Histogram(
    "requeue_gate_check_duration_seconds",
    "Duration of one gate check.",
    ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# -- replays -------------------------------------------------------------------

REPLAYS = Gauge(
    "requeue_replays",
    "DLQReplay objects known to this operator, by phase.",
    ["namespace", "phase"],
)
REPLAY_JOBS = Counter(
    "requeue_replay_jobs_total",
    "Jobs handled by replays, by outcome: replayed, skipped, corrupt, failed_again, completed. "
    'Auto replays count under their QueuePolicy (replay=""), '
    'replays made by hand under their name (policy="").',
    ["namespace", "policy", "replay", "queue", "outcome"],
)
REPLAY_BATCH_SECONDS = Histogram(
    "requeue_replay_batch_duration_seconds",
    "Duration of one replay batch (one pipelined Redis round trip).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)

# -- queue policies ------------------------------------------------------------

QUEUE_JOBS = PolicyGauge(
    "bullmq_queue_jobs",
    "Jobs in a BullMQ queue, by state (waiting, active, completed, failed, delayed, prioritized).",
    ["namespace", "policy", "queue", "state"],
)
QUEUE_FAILURE_RATIO = PolicyGauge(
    "bullmq_queue_failure_ratio",
    "Failed / (completed + failed) over the policy's window, 0-1.",
    ["namespace", "policy", "queue"],
)
QUEUE_PAUSED = PolicyGauge(
    "bullmq_queue_paused",
    "1 while the queue is paused.",
    ["namespace", "policy", "queue"],
)
QUEUE_DEPTH_LEGACY = TwinGauge(
    QUEUE_JOBS,
    "queue_depth_total",
    "A gauge despite its _total suffix: the runbook's name, kept for existing dashboards. "
    "Same values as bullmq_queue_jobs (status = state); use that in new queries.",
    ["namespace", "policy", "queue", "status"],
)
QUEUE_IDLE_SECONDS = PolicyGauge(
    "bullmq_queue_idle_seconds",
    "Seconds jobs have waited in the queue with none completing or failing (0 while nothing waits): "
    "processing stopped when it passes the policy's thresholds.stalledFor.",
    ["namespace", "policy", "queue"],
)
QUEUE_DUPLICATE_JOBS = PolicyGauge(
    "bullmq_queue_duplicate_jobs",
    "Duplicate waiting jobs found by the policy's spec.duplicates among the ids it reads (bounded by "
    "maxJobs per list): kind=id counts job ids listed more than once in wait/paused/prioritized, "
    "kind=business_key counts businessKey values held by more than one waiting job.",
    ["namespace", "policy", "queue", "kind"],
)
#: Buckets of the job latency and processing histograms: 50 ms to 1 h, 30 s (the runbook's p95
#: alert) among them.
JOB_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
JOB_LATENCY_SECONDS = PolicyHistogram(
    "bullmq_job_latency_seconds",
    "Time from a job being added to it finishing (completed or, after its last attempt, failed), read "
    "from the job hash (finishedOn - timestamp) when the events stream reports it finished. The job label "
    "is its name; names beyond the policy's spec.metrics.maxJobNames are counted as job=other.",
    ["namespace", "policy", "queue", "job"],
    buckets=JOB_SECONDS_BUCKETS,
)
JOB_PROCESSING_SECONDS = PolicyHistogram(
    "bullmq_job_processing_seconds",
    "Time from a worker taking a job (its last attempt) to it finishing (finishedOn - processedOn).",
    ["namespace", "policy", "queue", "job"],
    buckets=JOB_SECONDS_BUCKETS,
)
JOBS_FINISHED = PolicyCounter(
    "bullmq_jobs_finished_total",
    "Jobs that finished, by outcome (completed, failed: after the last attempt), from the events stream. "
    "job=unknown: the hash was gone when read (removeOnComplete: true) or beyond the lookup limit.",
    ["namespace", "policy", "queue", "job", "outcome"],
)
ACTIONS = Counter(
    "requeue_actions_total",
    "Actions taken by policies (alert, recover, pause, resume, auto_replay, clean).",
    ["namespace", "policy", "action", "queue"],
)
POLICY_EVALUATION_SECONDS = Histogram(
    "requeue_policy_evaluation_seconds",
    "Duration of one QueuePolicy evaluation.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REDIS_UP = Gauge(
    "requeue_redis_up",
    "1 when requeue could reach the Redis of a resource (a running DLQReplay or a QueuePolicy) "
    "at its last attempt, 0 when it could not.",
    ["namespace", "kind", "owner"],
)

ESCALATION_LEVEL = Gauge(
    "requeue_escalation_level",
    "The escalation level a QueuePolicy has in force (spec.escalation): 0 none, 1 its first level, ...",
    ["namespace", "policy"],
)

ESCALATION_MESSAGES = Counter(
    "requeue_escalation_messages_total",
    "Attempts at sending escalation messages (spec.escalation levels' notify), by channel and outcome: "
    "sent, failed (retried at a later evaluation) or given_up (its last attempt failed).",
    ["namespace", "policy", "channel", "outcome"],
)
ESCALATION_MESSAGES_PENDING = Gauge(
    "requeue_escalation_messages_pending",
    "Escalation messages that failed to send and wait for a retry (.status.escalation.pendingNotifications).",
    ["namespace", "policy"],
)

#: The per-job series a QueuePolicy adds to; removed when it or its queue goes.
JOB_SERIES = (JOB_LATENCY_SECONDS, JOB_PROCESSING_SECONDS, JOBS_FINISHED)

#: The gauges a QueuePolicy sets per queue; removed when it cannot observe them
#: (:data:`QUEUE_DEPTH_LEGACY` shows :data:`QUEUE_JOBS`' series: set and removed with them).
QUEUE_GAUGES = (
    QUEUE_JOBS,
    QUEUE_FAILURE_RATIO,
    QUEUE_PAUSED,
    QUEUE_IDLE_SECONDS,
    QUEUE_DUPLICATE_JOBS,
)

#: A metric as exported: its name (a counter's without ``_total``), type, label names and HELP.
Described = tuple[str, str, tuple[str, ...], str]


def described() -> list[Described]:
    """Every metric this module defines, whichever class stores it (what the tests and the chart's
    rules are checked against)."""
    found: list[Described] = []
    for obj in globals().values():
        if isinstance(obj, MetricWrapperBase):
            found.append((obj._name, str(obj._type), tuple(obj._labelnames), obj._documentation))
        elif isinstance(obj, PolicySeries | TwinGauge):
            found.append((obj.name, obj.type, obj.labelnames, obj.documentation))
    return found
