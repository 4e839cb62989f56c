"""A deleted QueuePolicy leaves the queues as it found them (DESIGN.md): the finalizer's rules.

:func:`release` decides which queues to resume (exactly those the policy
paused); :func:`finalize` does it and drops the policy's memory from Redis;
:func:`give_up` says when a failing cleanup stops holding the deletion up.
The operator's deletion handler only calls these.
"""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

from requeue.api import QueuePolicySpec, QueuePolicyStatus
from requeue.errors import PermanentError
from requeue.policy.actions import Resume
from requeue.policy.decide import Decision, release
from requeue.policy.evaluate import BullQueueOps
from requeue.policy.memory import memory_key
from requeue.queues.cluster import slot_tag

__all__ = ["finalize", "give_up", "plan", "resumes"]


def plan(status: QueuePolicyStatus | None, now: datetime) -> Decision:
    """What the deletion does: resume every queue the policy paused (others' stay paused)."""
    return release(status, now=now)


def resumes(decision: Decision) -> list[Resume]:
    """The queues ``decision`` resumes."""
    return [a for a in decision.actions if isinstance(a, Resume)]


async def finalize(redis: Redis, spec: QueuePolicySpec, decision: Decision, uid: str) -> None:
    """Resume the queues of ``decision`` and drop the policy's memory.

    :raises RequeueError: Redis failed; nothing is left half-known (resuming twice is harmless).
    """
    ops = BullQueueOps(redis, spec.prefix)
    for action in resumes(decision):
        await ops.resume(action.queue)
    await redis.delete(memory_key(uid, slot_tag(redis)))


def give_up(exc: BaseException, decision: Decision, *, attempt: int, attempts: int) -> bool:
    """Whether a failed cleanup (``attempt`` counts from 1) stops retrying.

    Without any queue to resume, nothing is lost (the memory expires by itself). Only a transient
    error may pass by itself; a permanent one (a URL that cannot be parsed, refused credentials)
    would hold the deletion forever.
    """
    return not resumes(decision) or isinstance(exc, PermanentError) or attempt >= attempts
