"""QueuePolicy evaluation: observe queues -> decide (pure) -> act through small protocols.

* :mod:`.observe` — :class:`Observation` and the carried :class:`PolicyMemory`;
* :mod:`.decide` — :func:`decide`, :func:`settle`, :func:`release`;
* :mod:`.actions` — the action types, :class:`BreachKind`, :class:`PolicyEvent`;
* :mod:`.ledger` — what one evaluation accumulates (actions, Events, ``lastActions``, conditions);
* :mod:`.thresholds` / :mod:`.pausing` / :mod:`.autoreplay` — rules 1, 2-3 and 4 of :func:`decide`;
* :mod:`.collect` / :mod:`.failure_rate` — reading Redis in as few round trips as possible;
* :mod:`.evaluate` — :func:`evaluate` and its protocols :class:`QueueOps`,
  :class:`ReplayCreator`, :class:`Notifier`;
* :mod:`.budget` — the per-job auto-replay budget the replay engine applies;
* :mod:`.slack` — the rate-limited Slack notifier.
"""

from requeue.policy.actions import (
    Action,
    ActionKind,
    Alert,
    AutoReplay,
    BreachKind,
    Clean,
    Pause,
    PolicyEvent,
    Recover,
    Resume,
)
from requeue.policy.budget import ReplayBudget
from requeue.policy.collect import CollectStats, collect
from requeue.policy.decide import Decision, decide, queues_to_observe, release, settle
from requeue.policy.evaluate import (
    BullQueueOps,
    ChildReplay,
    EvaluationResult,
    Notifier,
    PolicyRef,
    QueueOps,
    ReplayCreator,
    child_replay,
    evaluate,
    forget_metrics,
)
from requeue.policy.failure_rate import read_events
from requeue.policy.memory import load_memory
from requeue.policy.observe import EventTally, Observation, PolicyMemory, QueueMemory, QueueObservation
from requeue.policy.slack import SlackNotifier

__all__ = [
    "Action",
    "ActionKind",
    "Alert",
    "AutoReplay",
    "BreachKind",
    "BullQueueOps",
    "ChildReplay",
    "Clean",
    "CollectStats",
    "Decision",
    "EvaluationResult",
    "EventTally",
    "Notifier",
    "Observation",
    "Pause",
    "PolicyEvent",
    "PolicyMemory",
    "PolicyRef",
    "QueueMemory",
    "QueueObservation",
    "QueueOps",
    "Recover",
    "ReplayBudget",
    "ReplayCreator",
    "Resume",
    "SlackNotifier",
    "child_replay",
    "collect",
    "decide",
    "evaluate",
    "forget_metrics",
    "load_memory",
    "queues_to_observe",
    "read_events",
    "release",
    "settle",
]
