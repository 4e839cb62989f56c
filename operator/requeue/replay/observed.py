"""What the operator tells Prometheus about its replays: phases, job outcomes, Redis reachability.

``requeue_replays{namespace,phase}`` is a tally over every replay this process
knows, so it is recomputed from one record of each replay's phase
(:class:`ReplayPhases`); the job counters grow by what a status's counters
grew by since the last write (:func:`count_jobs`).
"""

from __future__ import annotations

import contextlib

from requeue.api import DLQReplayStatus, ReplayPhase
from requeue.metrics import REDIS_UP, REPLAY_JOBS, REPLAYS

__all__ = ["PHASES", "ReplayPhases", "count_jobs", "forget_replay"]

#: Job counters of the status, exported as requeue_replay_jobs_total{outcome=...} from their deltas.
#: (``replayed`` and ``skipped`` are counted by the engine as it moves jobs.)
_COUNTED = {"corrupt": "corrupt", "failed_again": "failed_again", "completed": "completed"}


class ReplayPhases:
    """The phase of every replay of this process, published as ``requeue_replays``."""

    def __init__(self) -> None:
        self.phases: dict[tuple[str, str], str] = {}
        self.namespaces: set[str] = set()

    def observe(self, namespace: str, name: str, phase: ReplayPhase | None) -> None:
        """Record (or, with None, forget) the phase of one replay and republish the gauge."""
        if phase is None:
            self.phases.pop((namespace, name), None)
        else:
            self.phases[(namespace, name)] = phase.value
        self.namespaces.add(namespace)
        for ns in self.namespaces:
            for p in ReplayPhase:
                REPLAYS.labels(ns, p.value).set(self.count(ns, p))

    def count(self, namespace: str, phase: ReplayPhase) -> int:
        """How many replays of ``namespace`` are in ``phase``."""
        return sum(1 for (n, _), v in self.phases.items() if n == namespace and v == phase.value)


#: The process's one tally (Prometheus' registry is per process too).
PHASES = ReplayPhases()


def forget_replay(namespace: str, name: str) -> None:
    """A deleted replay: drop it from ``requeue_replays`` and remove its ``requeue_redis_up`` series,
    so dashboards and the RequeueRedisUnreachable alert do not keep a stale value."""
    PHASES.observe(namespace, name, None)
    with contextlib.suppress(KeyError):
        REDIS_UP.remove(namespace, name)


def count_jobs(
    namespace: str, name: str, queue: str, before: DLQReplayStatus, after: DLQReplayStatus
) -> None:
    """Add what the status counters grew by to ``requeue_replay_jobs_total``."""
    for attr, outcome in _COUNTED.items():
        grown = getattr(after, attr) - getattr(before, attr)
        if grown > 0:
            REPLAY_JOBS.labels(namespace, name, queue, outcome).inc(grown)
