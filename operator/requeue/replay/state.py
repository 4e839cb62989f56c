"""What every part of a replay shares: its stage in Redis, what a step returns, how it ends.

The engine's parts (selection, moves, verification) each write the same progress hash
and the same status conditions; keeping those few names here lets them live in their
own modules without importing the state machine that drives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from redis.asyncio import Redis

from requeue.api import DLQReplayStatus, ReplayPhase, set_condition
from requeue.api.base import ConditionStatus
from requeue.queues import ReplayKeys
from requeue.replay.select import to_ms

#: How many job ids ``.status.sampleIds`` lists.
SAMPLE_IDS = 10


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class ReplayEvent:
    """Something worth an Event on the resource (``kubectl describe``)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class StepResult:
    """The outcome of one step: the new status, seconds until the next step, events."""

    status: DLQReplayStatus
    delay: float
    events: list[ReplayEvent] = field(default_factory=list)


class Stage:
    """The engine's stage as stored in Redis (``progress.stage``); the phase follows from it."""

    GATES = "gates"
    SELECTING = "selecting"
    REPLAYING = "replaying"
    VERIFYING = "verifying"
    DONE = "done"


@dataclass(frozen=True)
class StoredProgress:
    """What Redis remembers of a replay before any step runs ("resuming", "already finished")."""

    stage: str
    outcome: str
    replayed: int
    matched: int

    @property
    def finished(self) -> bool:
        """The replay reached its end (Succeeded or Failed) and will move nothing more."""
        return self.stage == Stage.DONE


class Finish(Exception):
    """Internal: end the replay with this outcome."""

    def __init__(self, phase: ReplayPhase, reason: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase
        self.reason = reason
        self.message = message


def int_field(p: dict[str, str], key: str) -> int:
    """A counter of the progress hash; a missing or mangled one counts as zero."""
    try:
        return int(p.get(key) or 0)
    except ValueError:
        return 0


def from_ms(ms: int) -> datetime:
    """The UTC moment of a millisecond timestamp stored in the progress hash."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def cond(st: DLQReplayStatus, type: str, status: bool | ConditionStatus, reason: str, message: str,
         gen: int, now: datetime) -> None:
    """Set one condition of the status (its transition time changes only with its status)."""
    st.conditions = set_condition(st.conditions, type=type, status=status, reason=reason,
                                  message=message, generation=gen, now=now)


async def mark_replayed(redis: Redis, keys: ReplayKeys, now: datetime) -> None:
    """Every snapshot id is handled: verification comes next."""
    await redis.hset(keys.progress, mapping={"stage": Stage.VERIFYING, "replayed_ms": str(to_ms(now))})
