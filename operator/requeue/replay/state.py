"""What every part of a replay shares: its stage in Redis, what a step returns, how it ends.

The engine's parts (selection, moves, verification) each write the same progress hash
and the same status conditions; keeping those few names here lets them live in their
own modules without importing the state machine that drives them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from redis.asyncio import Redis

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayPhase
from requeue.api.base import ConditionStatus, set_condition
from requeue.api.conditions import Reason, ReplayCondition
from requeue.queues import ReplayKeys
from requeue.queues.keys import Progress
from requeue.queues.keys import Stage as Stage  # declared with the Redis state; the parts import it from here
from requeue.replay.matcher import to_ms

#: How many job ids ``.status.sampleIds`` lists.
SAMPLE_IDS = 10
#: The spec fields (wire names) that say which jobs a replay moves and where to. A replay's
#: snapshot is taken with them, so they must not change while it runs under the same id.
SELECTION_FIELDS = ("queue", "prefix", "selector", "targetQueue", "mode")
#: Field of the progress hash that holds the selection a replay started with (JSON).
SELECTION_FIELD = Progress.SELECTION


@dataclass
class ReplayEvent:
    """Something worth an Event on the resource (``kubectl describe``)."""

    type: Literal["Normal", "Warning"]
    reason: Reason
    message: str


@dataclass(frozen=True)
class StepContext:
    """What every part of one engine step works on: the status it changes, the step's time,
    the generation its conditions are stamped with, and the Events it collects (``status``
    and ``events`` are changed in place; :meth:`at` moves the time on, sharing both)."""

    status: DLQReplayStatus
    now: datetime
    generation: int
    events: list[ReplayEvent] = field(default_factory=list)

    def at(self, now: datetime) -> StepContext:
        """The same step at a later time (between batches of one step)."""
        return replace(self, now=now)

    def condition(
        self, type: ReplayCondition, status: bool | ConditionStatus, reason: Reason, message: str
    ) -> None:
        """Set a condition of the status, stamped with this step's generation and time."""
        set_condition(self.status, type, status, reason, message, self.generation, self.now)

    def event(self, type: Literal["Normal", "Warning"], reason: Reason, message: str) -> None:
        """Collect an Event for the resource."""
        self.events.append(ReplayEvent(type, reason, message))


@dataclass
class StepResult:
    """The outcome of one step: the new status, seconds until the next step, events."""

    status: DLQReplayStatus
    delay: float
    events: list[ReplayEvent] = field(default_factory=list)


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

    def __init__(self, phase: ReplayPhase, reason: Reason, message: str) -> None:
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


def spec_values(spec: DLQReplaySpec, fields: Iterable[str]) -> dict[str, Any]:
    """``fields`` of ``spec`` in wire form (None for unset), as pinned and compared."""
    wire = spec.to_wire()
    return {key: wire.get(key) for key in fields}


def changed_fields(pinned: Mapping[str, Any], current: Mapping[str, Any], fields: Iterable[str]) -> list[str]:
    """The ``fields`` whose value in ``current`` is not the pinned one (both in wire form).

    One comparison for the operator (its pin annotation) and the CLI (the selection in Redis).
    """
    return [key for key in fields if current.get(key) != pinned.get(key)]


def selection_json(spec: DLQReplaySpec) -> str:
    """The selection of ``spec`` as the engine records it when a replay begins (``_begin``)."""
    return json.dumps(spec_values(spec, SELECTION_FIELDS), sort_keys=True)


async def recorded_selection(redis: Redis, keys: ReplayKeys) -> dict[str, Any] | None:
    """The selection the replay began with; None when it has not begun (or began with a requeue
    that did not record it, so there is nothing to compare with)."""
    stored = await redis.hget(keys.progress, SELECTION_FIELD)
    try:
        before = json.loads(stored) if stored is not None else None
    except ValueError:
        return None
    return before if isinstance(before, dict) else None


async def mark_replayed(redis: Redis, keys: ReplayKeys, now: datetime) -> None:
    """Every snapshot id is handled: verification comes next."""
    await redis.hset(
        keys.progress, mapping={Progress.STAGE: Stage.VERIFYING, Progress.REPLAYED_MS: str(to_ms(now))}
    )
