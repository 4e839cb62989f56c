"""The rules of a replay's end of life: deletion's cleanup and ``ttlSecondsAfterFinished``.

The operator's deletion handler and daemon ask these; they hold no kopf and no
Redis, so they are unit-tested as plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from requeue.api import DLQReplayStatus, ReplayPhase, find_condition
from requeue.api.conditions import ReplayCondition
from requeue.errors import (
    AuthFailed,
    PermanentError,
    RedisUnreachable,
    RedisUrlInvalid,
    SecretNotFound,
    SpecInvalid,
)

__all__ = ["GiveUp", "cleanup_needed", "give_up_cleanup", "never_touched_redis", "ttl_left"]

#: Ready reasons of a replay stopped before it could touch Redis.
_BEFORE_REDIS = (
    SecretNotFound.reason,
    AuthFailed.reason,
    RedisUnreachable.reason,
    RedisUrlInvalid.reason,
    SpecInvalid.reason,
)


def never_touched_redis(status: DLQReplayStatus) -> bool:
    """Nothing of this replay can be in Redis: it never took a step there."""
    ready = find_condition(status.conditions, ReplayCondition.READY)
    return (
        status.phase == ReplayPhase.PENDING
        and status.started_at is None
        and status.matched == 0
        and not status.queue_paused_by_replay
        and (ready is None or ready.reason in _BEFORE_REDIS)
    )


def cleanup_needed(status: DLQReplayStatus) -> bool:
    """A deletion must visit Redis: the replay may hold the lease, a snapshot, or the paused queue."""
    return not status.phase.finished or status.queue_paused_by_replay


@dataclass(frozen=True)
class GiveUp:
    """A deletion stops trying to clean up; ``why`` ends up in the CleanupFailed Event."""

    why: str


def give_up_cleanup(
    exc: BaseException, status: DLQReplayStatus, *, attempt: int, attempts: int
) -> GiveUp | None:
    """Whether a failed cleanup (``attempt`` counts from 1) stops retrying, and why; None to retry.

    Only a transient error (Redis down, the lease held) may pass by itself: a URL that cannot be
    parsed, refused credentials or a missing Secret would hold the object forever. A replay that
    never reached Redis has nothing to clean up (``why`` is empty: no Event).
    """
    if isinstance(exc, PermanentError) and never_touched_redis(status):
        return GiveUp("")
    if isinstance(exc, PermanentError):
        return GiveUp("retrying cannot help")
    if attempt >= attempts:
        return GiveUp(f"{attempt} attempts failed")
    return None


def ttl_left(ttl: object, status: DLQReplayStatus, now: datetime) -> float | None:
    """Seconds until a finished replay is deleted (<= 0: now); None when it is kept
    (``ttlSecondsAfterFinished`` unset or not a count of seconds)."""
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
        return None
    finished = status.completed_at or now
    return (finished + timedelta(seconds=ttl) - now).total_seconds()
