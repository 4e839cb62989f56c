"""Where a policy's :class:`~requeue.policy.observe.PolicyMemory` lives: a hash in the watched Redis.

``requeue:policy:{uid}:memory`` maps each queue name to the JSON of its
:class:`~requeue.policy.observe.QueueMemory` (events cursor, failure-rate
buckets, first-seen times of lockless active jobs). It expires
:data:`MEMORY_TTL_SECONDS` after the last evaluation, so a deleted policy
leaves nothing behind for long. Losing it is harmless: the window restarts one
``window`` back and stalled timers restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.policy.observe import PolicyMemory, QueueMemory
from requeue.queues.cluster import slot_tag as client_slot_tag
from requeue.queues.keys import PolicyKeys

__all__ = ["MEMORY_TTL_SECONDS", "load_memory", "memory_key", "queue_save_memory", "replay_budget_key"]

#: The memory hash expires this long after the last evaluation wrote it: 7 days.
MEMORY_TTL_SECONDS = 7 * 24 * 3600


def memory_key(policy_uid: str, slot_tag: str = "") -> str:
    """``requeue:policy:{uid}:memory`` (on a Redis Cluster with the queues' hash tag before the uid)."""
    return PolicyKeys(policy_uid, slot_tag).memory


def replay_budget_key(policy_uid: str, slot_tag: str = "") -> str:
    """``requeue:policy:{uid}:replays``: job id -> times auto-replayed (see :mod:`.budget`)."""
    return PolicyKeys(policy_uid, slot_tag).replays


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def load_memory(redis: Redis, policy_uid: str) -> PolicyMemory:
    """Read the memory; a missing or corrupt entry becomes an empty one."""
    raw: Mapping[bytes | str, bytes | str] = await redis.hgetall(
        memory_key(policy_uid, client_slot_tag(redis))
    )
    queues: dict[str, QueueMemory] = {}
    for field, value in raw.items():
        try:
            data = json.loads(_text(value))
        except ValueError:
            continue
        if isinstance(data, dict):
            queues[_text(field)] = QueueMemory.from_json(data)
    return PolicyMemory(queues)


def queue_save_memory(
    pipe: Pipeline,
    policy_uid: str,
    memory: PolicyMemory,
    previous: PolicyMemory | None = None,
    *,
    slot_tag: str = "",
) -> int:
    """Queue the commands that store ``memory`` on ``pipe``; returns how many were queued.

    Fields of queues that left the policy are deleted; the TTL is refreshed. ``slot_tag``: the
    hash tag of the client's slot on a Redis Cluster (:func:`requeue.queues.cluster.slot_tag`).
    """
    key = memory_key(policy_uid, slot_tag)
    commands = 0
    if memory.queues:
        pipe.hset(
            key, mapping={q: json.dumps(m.to_json(), separators=(",", ":")) for q, m in memory.queues.items()}
        )
        commands += 1
    gone = [q for q in (previous.queues if previous else {}) if q not in memory.queues]
    if gone:
        pipe.hdel(key, *gone)
        commands += 1
    pipe.expire(key, MEMORY_TTL_SECONDS)
    return commands + 1
