"""What a QueuePolicy tells Prometheus: its queues' gauges, its actions, its Redis.

Three rules keep the series honest:

* a successful observation sets every queue gauge and ``requeue_redis_up`` to 1;
* an observation that failed removes the policy's queue gauges (a scrape then
  shows nothing, not the last value read minutes ago) and sets
  ``requeue_redis_up`` to 0 when Redis itself was the problem (unreachable,
  refused credentials or commands), or removes it when the problem was another
  (an invalid spec, a missing Secret: whether Redis is up is then unknown);
* a deleted policy removes every series it labels, counters included, and the
  auto-replay counts it kept under its name; the per-job latency, processing and
  outcome series (:mod:`requeue.policy.job_series`) go with it, and with a queue
  removed from its spec. A failed observation keeps them: they are counters and
  histograms of what was seen, not gauges of the present.
"""

from __future__ import annotations

from collections.abc import Sequence

from requeue.api.conditions import Reason
from requeue.api.policy import QueuePolicyStatus, QueueState
from requeue.errors import (
    AuthFailed,
    Forbidden,
    RedisCertificateUntrusted,
    RedisOutOfMemory,
    RedisUnreachable,
    SentinelMasterUnknown,
)
from requeue.metrics import (
    ACTIONS,
    KIND_POLICY,
    QUEUE_DUPLICATE_JOBS,
    QUEUE_FAILURE_RATIO,
    QUEUE_GAUGES,
    QUEUE_IDLE_SECONDS,
    QUEUE_JOBS,
    QUEUE_PAUSED,
    REDIS_UP,
    REPLAY_JOBS,
)
from requeue.policy.job_series import forget_job_names

__all__ = ["REDIS_DOWN_REASONS", "export_observed", "export_unobserved", "forget_policy", "forget_queues"]

#: Reasons that say requeue could not use the policy's Redis: ``requeue_redis_up`` 0.
REDIS_DOWN_REASONS = frozenset(
    cls.reason
    for cls in (
        RedisUnreachable,
        RedisCertificateUntrusted,
        RedisOutOfMemory,
        SentinelMasterUnknown,
        AuthFailed,
        Forbidden,
    )
)

_STATES = ("waiting", "active", "completed", "failed", "delayed", "prioritized")


def export_observed(namespace: str, policy: str, status: QueuePolicyStatus, observed: Sequence[str]) -> None:
    """Set the gauges of the queues just ``observed`` from ``status``, and Redis up."""
    REDIS_UP.labels(namespace, KIND_POLICY, policy).set(1)
    # Label values by position (the metrics' label order: namespace, policy, queue[, state]);
    # the queue gauges are plain numbers per policy (requeue.policy_metrics): exact removes are
    # dict pops, a policy's series go with one.
    for q in status.queues:
        if q.name not in observed:
            continue
        name = q.name
        for state in _STATES:
            QUEUE_JOBS.set((namespace, policy, name, state), getattr(q, state))
        QUEUE_PAUSED.set((namespace, policy, name), 1 if q.paused else 0)
        idle = 0.0
        if q.idle_since is not None and status.last_evaluated_at is not None:
            idle = max(0.0, (status.last_evaluated_at - q.idle_since).total_seconds())
        QUEUE_IDLE_SECONDS.set((namespace, policy, name), idle)
        _export_duplicates(namespace, policy, q)
        if q.failure_rate_percent is not None:
            QUEUE_FAILURE_RATIO.set((namespace, policy, name), q.failure_rate_percent / 100)
        else:
            QUEUE_FAILURE_RATIO.remove((namespace, policy, name))


def _export_duplicates(namespace: str, policy: str, q: QueueState) -> None:
    """The duplicate gauges of a queue whose policy looks for duplicates; none otherwise (the
    business-key series only when a key is named: 0 would claim a check that was not made)."""
    found = q.duplicates
    if found is not None:
        QUEUE_DUPLICATE_JOBS.set((namespace, policy, q.name, "id"), found.ids)
    else:
        QUEUE_DUPLICATE_JOBS.remove((namespace, policy, q.name, "id"))
    if found is not None and found.business_keys is not None:
        QUEUE_DUPLICATE_JOBS.set((namespace, policy, q.name, "business_key"), found.business_keys)
    else:
        QUEUE_DUPLICATE_JOBS.remove((namespace, policy, q.name, "business_key"))


def export_unobserved(namespace: str, policy: str, reason: Reason | str | None) -> None:
    """The policy could not observe its queues (``reason`` says why): its gauges go stale."""
    for gauge in QUEUE_GAUGES:
        gauge.remove_policy(namespace, policy)
    if reason in REDIS_DOWN_REASONS:
        REDIS_UP.labels(namespace, KIND_POLICY, policy).set(0)
    else:
        REDIS_UP.remove_by_labels({"namespace": namespace, "kind": KIND_POLICY, "owner": policy})


def forget_queues(namespace: str, policy: str, queues: Sequence[str]) -> None:
    """Drop the gauges of queues the policy no longer watches (removed from its spec)."""
    for queue in queues:
        for gauge in QUEUE_GAUGES:
            gauge.remove_policy(namespace, policy, queue)
    forget_job_names(namespace, policy, queues)


def forget_policy(namespace: str, policy: str) -> None:
    """A deleted policy: remove every series labelled with it, so nothing outlives it."""
    labels = {"namespace": namespace, "policy": policy}
    for gauge in QUEUE_GAUGES:
        gauge.remove_policy(namespace, policy)
    for metric in (ACTIONS, REPLAY_JOBS):
        metric.remove_by_labels(labels)
    REDIS_UP.remove_by_labels({"namespace": namespace, "kind": KIND_POLICY, "owner": policy})
    forget_job_names(namespace, policy)
