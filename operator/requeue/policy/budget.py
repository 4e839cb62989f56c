"""Per-job replay budget of a QueuePolicy's auto replays (``autoReplay.maxReplaysPerJob``).

A job that fails again after every auto replay must not loop forever. The
policy counts, per job id, how often its auto replays took the job, in the
Redis hash ``requeue:policy:{uid}:replays`` (job id -> count), and a job at
its budget is no longer selected.

How the replay engine uses it (the policy cannot select for the child: the
child DLQReplay does its own selection):

1. The policy creates the child DLQReplay with :meth:`ReplayBudget.annotations`
   (``requeue.dev/replay-budget-key``, ``requeue.dev/max-replays-per-job``)
   beside the owner reference.
2. The DLQReplay handler reads them back with
   :meth:`ReplayBudget.from_annotations` (None for replays a person created)
   and hands the budget to the engine.
3. While snapshotting, for every page of selected ids the engine calls
   ``allowed = await budget.take(redis, replay_uid, ids)`` and snapshots only
   ``allowed``; the others are counted as skipped (reason: over budget).

``take`` is one Lua call per page (at most :data:`MAX_IDS_PER_CALL` ids):
atomic check-and-increment, and idempotent per replay — ids this replay
already took (a set ``{budget key}:{replay uid}``) are allowed again without
being counted twice, so a retried snapshot step does not burn budget. Both
keys expire :data:`BUDGET_TTL_SECONDS` after their last use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from requeue.policy.memory import replay_budget_key
from requeue.queues.keys import POLICY_KEY_PREFIX, budget_taken_key

__all__ = [
    "ANNOTATION_BUDGET_KEY",
    "ANNOTATION_MAX_REPLAYS",
    "BUDGET_TTL_SECONDS",
    "MAX_IDS_PER_CALL",
    "ReplayBudget",
]

#: Annotation on a child DLQReplay: the Redis hash counting replays per job id.
ANNOTATION_BUDGET_KEY = "requeue.dev/replay-budget-key"
#: Annotation on a child DLQReplay: how often one job may be auto-replayed.
ANNOTATION_MAX_REPLAYS = "requeue.dev/max-replays-per-job"
#: Budget hash and per-replay sets expire this long after their last use: 30 days.
BUDGET_TTL_SECONDS = 30 * 24 * 3600
#: Most ids per :meth:`ReplayBudget.take` call (bounded Lua work).
MAX_IDS_PER_CALL = 1000

# KEYS[1] budget hash, KEYS[2] ids this replay already took; ARGV[1] max, ARGV[2] ttl, ARGV[3..] ids
_TAKE = """
local limit = tonumber(ARGV[1])
local allowed = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call("SISMEMBER", KEYS[2], id) == 1 then
    allowed[#allowed + 1] = id
  else
    local n = tonumber(redis.call("HGET", KEYS[1], id) or "0")
    if n < limit then
      redis.call("HINCRBY", KEYS[1], id, 1)
      redis.call("SADD", KEYS[2], id)
      allowed[#allowed + 1] = id
    end
  end
end
if #ARGV >= 3 then
  redis.call("EXPIRE", KEYS[1], ARGV[2])
  if redis.call("EXISTS", KEYS[2]) == 1 then redis.call("EXPIRE", KEYS[2], ARGV[2]) end
end
return allowed
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class ReplayBudget:
    """The budget hash of one policy and its ``maxReplaysPerJob``."""

    key: str
    max_per_job: int

    @classmethod
    def for_policy(cls, policy_uid: str, max_per_job: int, *, slot_tag: str = "") -> ReplayBudget:
        """``slot_tag``: the policy's queues' hash tag on a Redis Cluster ("" off one)."""
        return cls(replay_budget_key(policy_uid, slot_tag), max_per_job)

    def annotations(self) -> dict[str, str]:
        """Annotations to put on a child DLQReplay."""
        return {ANNOTATION_BUDGET_KEY: self.key, ANNOTATION_MAX_REPLAYS: str(self.max_per_job)}

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None) -> ReplayBudget | None:
        """The budget a DLQReplay carries, or None (malformed values count as none)."""
        if not annotations or ANNOTATION_BUDGET_KEY not in annotations:
            return None
        key = annotations[ANNOTATION_BUDGET_KEY]
        try:
            limit = int(annotations.get(ANNOTATION_MAX_REPLAYS, ""))
        except ValueError:
            return None
        if limit < 1 or not key.startswith(POLICY_KEY_PREFIX):
            return None
        return cls(key, limit)

    async def take(self, redis: Redis, replay_uid: str, ids: Sequence[str]) -> list[str]:
        """Charge ``ids`` to replay ``replay_uid``; return those within budget, in order."""
        if not ids:
            return []
        if len(ids) > MAX_IDS_PER_CALL:
            raise ValueError(f"at most {MAX_IDS_PER_CALL} ids per call, got {len(ids)}")
        script = redis.register_script(_TAKE)
        allowed = await script(
            keys=[self.key, budget_taken_key(self.key, replay_uid)],
            args=[self.max_per_job, BUDGET_TTL_SECONDS, *ids],
        )
        return [_text(i) for i in allowed]

    async def used(self, redis: Redis, ids: Sequence[str]) -> dict[str, int]:
        """How often each id was auto-replayed (read-only; for dry runs and inspection)."""
        if not ids:
            return {}
        values = await redis.hmget(self.key, list(ids))
        return {i: int(v) if v is not None else 0 for i, v in zip(ids, values, strict=True)}

    async def over_budget(self, redis: Redis, ids: Sequence[str]) -> set[str]:
        """The ids that have used their budget (read-only)."""
        return {i for i, n in (await self.used(redis, ids)).items() if n >= self.max_per_job}
