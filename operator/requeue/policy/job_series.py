"""A QueuePolicy's per-job series: latency and processing histograms, finished-job counters.

Each evaluation adds the jobs its events read saw finish since the last read
(:attr:`QueueObservation.finished_jobs`), so every job is counted once per
operator process (after a restart the counters start again from zero, as
Prometheus expects of a counter, and the read continues from the remembered
cursor).

The ``job`` label is bounded per policy and queue: the first
``spec.metrics.maxJobNames`` names seen keep their own label, later ones are
``other`` (:func:`requeue.policy.latency.fold_name`). Which names were admitted
is kept here, beside the series, so it lives and resets with them; it is
dropped with the series when the policy or the queue goes
(:mod:`requeue.policy.series`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from requeue.metrics import JOB_LATENCY_SECONDS, JOB_PROCESSING_SECONDS, JOB_SERIES, JOBS_FINISHED
from requeue.policy.latency import fold_name
from requeue.policy.observe import QueueObservation

__all__ = ["export_finished", "forget_job_names"]

#: (namespace, policy, queue) -> the job names with their own label.
_ADMITTED: dict[tuple[str, str, str], set[str]] = {}


def export_finished(
    namespace: str, policy: str, queues: Mapping[str, QueueObservation], max_job_names: int
) -> None:
    """Count and time the jobs each observed queue saw finish."""
    for queue, obs in queues.items():
        if obs.not_found is not None or not obs.finished_jobs:
            continue
        admitted = _ADMITTED.setdefault((namespace, policy, queue), set())
        for job in obs.finished_jobs:
            label = fold_name(job.name, admitted, max_job_names)
            JOBS_FINISHED.inc((namespace, policy, queue, label, job.outcome))
            latency = job.latency_seconds
            if latency is not None:
                JOB_LATENCY_SECONDS.observe((namespace, policy, queue, label), latency)
            processing = job.processing_seconds
            if processing is not None:
                JOB_PROCESSING_SECONDS.observe((namespace, policy, queue, label), processing)


def forget_job_names(namespace: str, policy: str, queues: Iterable[str] | None = None) -> None:
    """Remove the per-job series of ``queues`` (every queue when None) and their admitted names."""
    if queues is None:
        for metric in JOB_SERIES:
            metric.remove_policy(namespace, policy)
        for key in [k for k in _ADMITTED if k[:2] == (namespace, policy)]:
            del _ADMITTED[key]
        return
    for queue in queues:
        for metric in JOB_SERIES:
            metric.remove_policy(namespace, policy, queue)
        _ADMITTED.pop((namespace, policy, queue), None)
