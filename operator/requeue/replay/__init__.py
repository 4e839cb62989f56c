"""The replay engine: select -> snapshot -> replay -> verify, one bounded step at a time."""

from requeue.replay.engine import (
    GateRunnerLike,
    ReplayEngine,
    ReplayEvent,
    StepResult,
    StoredProgress,
)
from requeue.replay.matcher import Matcher, is_subset, normalize_reason
from requeue.replay.tuning import DEFAULT_TUNING, EngineTuning

__all__ = [
    "DEFAULT_TUNING",
    "EngineTuning",
    "GateRunnerLike",
    "Matcher",
    "ReplayEngine",
    "ReplayEvent",
    "StepResult",
    "StoredProgress",
    "is_subset",
    "normalize_reason",
]
