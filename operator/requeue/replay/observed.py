"""What the operator tells Prometheus about its replays: phases, job outcomes, Redis reachability.

``requeue_replays{namespace,phase}`` is a tally over every replay this process
knows, so it is recomputed from one record of each replay's phase
(:class:`ReplayPhases`); the job counters grow by what a status's counters
grew by since the last write (:func:`count_jobs`), under the labels
:class:`ReplaySeries` gives a replay.

A replay's ``requeue_redis_up`` lives while it runs (:func:`redis_up`,
:func:`replay_finished`); its job counters until it is deleted
(:func:`forget_replay`). An auto replay's counters belong to its QueuePolicy and
go when the policy does (:func:`requeue.policy.series.forget_policy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from requeue.api import DLQReplayStatus, ReplayPhase
from requeue.metrics import KIND_REPLAY, REDIS_UP, REPLAY_JOBS, REPLAYS

__all__ = [
    "PHASES",
    "ReplayPhases",
    "ReplaySeries",
    "count_jobs",
    "forget_replay",
    "redis_up",
    "replay_finished",
]

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


@dataclass(frozen=True)
class ReplaySeries:
    """The ``namespace``, ``policy`` and ``replay`` labels of a replay's job counters.

    An auto replay is named after its outage, so one series per child would
    grow without bound; it is counted under its policy instead (``replay=""``).
    """

    namespace: str
    policy: str
    replay: str

    @classmethod
    def of(cls, namespace: str, name: str, policy: str = "") -> ReplaySeries:
        """The series of replay ``name``: under ``policy`` if a QueuePolicy created it."""
        return cls(namespace, policy, "") if policy else cls(namespace, "", name)

    def count(self, queue: str, outcome: str, n: int) -> None:
        """Add ``n`` jobs of ``outcome`` to ``requeue_replay_jobs_total``."""
        REPLAY_JOBS.labels(self.namespace, self.policy, self.replay, queue, outcome).inc(n)


def redis_up(namespace: str, name: str, up: bool) -> None:
    """Whether the running replay ``name`` could use its Redis at its last attempt."""
    REDIS_UP.labels(namespace, KIND_REPLAY, name).set(1 if up else 0)


def replay_finished(namespace: str, name: str) -> None:
    """A finished replay no longer talks to Redis: remove its ``requeue_redis_up`` series
    (finished auto replays would otherwise pile up, one per outage)."""
    REDIS_UP.remove_by_labels({"namespace": namespace, "kind": KIND_REPLAY, "owner": name})


def forget_replay(namespace: str, name: str) -> None:
    """A deleted replay: drop it from ``requeue_replays`` and remove its series
    (``requeue_redis_up``, and the job counters of a replay made by hand), so dashboards
    and the RequeueRedisUnreachable alert do not keep a stale value."""
    PHASES.observe(namespace, name, None)
    replay_finished(namespace, name)
    REPLAY_JOBS.remove_by_labels({"namespace": namespace, "policy": "", "replay": name})


def count_jobs(queue: str, series: ReplaySeries, before: DLQReplayStatus, after: DLQReplayStatus) -> None:
    """Add what the status counters grew by to ``requeue_replay_jobs_total``."""
    for attr, outcome in _COUNTED.items():
        grown = getattr(after, attr) - getattr(before, attr)
        if grown > 0:
            series.count(queue, outcome, grown)
