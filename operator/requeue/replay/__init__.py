"""The replay engine: select -> snapshot -> replay -> verify, one bounded step at a time."""

from requeue.replay.engine import (
    GateRunnerLike,
    ReplayEngine,
    ReplayEvent,
    StepResult,
    StoredProgress,
    utcnow,
)
from requeue.replay.select import Matcher, is_subset, normalize_reason

__all__ = [
    "GateRunnerLike",
    "Matcher",
    "ReplayEngine",
    "ReplayEvent",
    "StepResult",
    "StoredProgress",
    "is_subset",
    "normalize_reason",
    "utcnow",
]
