"""The replay engine: select -> snapshot -> replay -> verify, one bounded step at a time."""

from requeue.replay.engine import GateRunnerLike, ReplayEngine, ReplayEvent, StepResult, utcnow
from requeue.replay.select import Matcher, is_subset, normalize_reason

__all__ = [
    "GateRunnerLike",
    "Matcher",
    "ReplayEngine",
    "ReplayEvent",
    "StepResult",
    "is_subset",
    "normalize_reason",
    "utcnow",
]
