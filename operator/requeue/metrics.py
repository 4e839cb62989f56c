"""Every Prometheus metric requeue exports, defined once.

Served on ``/metrics`` by ``requeue run``. Names follow Prometheus conventions:
``_total`` only on counters, base units (seconds, ratios) in the name.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "Jobs handled by replays, by outcome: replayed, skipped, corrupt, failed_again, completed.",
    ["namespace", "replay", "queue", "outcome"],
)
REPLAY_BATCH_SECONDS = Histogram(
    "requeue_replay_batch_duration_seconds",
    "Duration of one replay batch (one pipelined Redis round trip).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)

# -- queue policies ------------------------------------------------------------

QUEUE_JOBS = Gauge(
    "bullmq_queue_jobs",
    "Jobs in a BullMQ queue, by state (waiting, active, completed, failed, delayed, prioritized).",
    ["namespace", "policy", "queue", "state"],
)
QUEUE_FAILURE_RATIO = Gauge(
    "bullmq_queue_failure_ratio",
    "Failed / (completed + failed) over the policy's window, 0-1.",
    ["namespace", "policy", "queue"],
)
QUEUE_PAUSED = Gauge(
    "bullmq_queue_paused",
    "1 while the queue is paused.",
    ["namespace", "policy", "queue"],
)
QUEUE_DEPTH_LEGACY = Gauge(
    "queue_depth_total",
    "Runbook-compatible job count per queue and status, for existing dashboards.",
    ["queue", "status"],
)
ACTIONS = Counter(
    "requeue_actions_total",
    "Actions taken by policies (alert, recover, pause, resume, auto_replay, clean).",
    ["action", "queue"],
)
POLICY_EVALUATION_SECONDS = Histogram(
    "requeue_policy_evaluation_seconds",
    "Duration of one QueuePolicy evaluation.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REDIS_UP = Gauge(
    "requeue_redis_up",
    "1 when requeue could reach the Redis of a resource at its last attempt.",
    ["namespace", "owner"],
)
