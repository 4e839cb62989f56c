"""Run a QueuePolicy evaluation against real Redis, the way the operator's daemon chains them."""

from __future__ import annotations

from datetime import datetime

import redis.asyncio as aioredis

from requeue.api.policy import QueuePolicySpec
from requeue.policy.evaluate import BullQueueOps, EvaluationResult, PolicyRef, evaluate

__all__ = ["evaluate_after"]


async def evaluate_after(
    ref: PolicyRef,
    redis: aioredis.Redis,
    policy: QueuePolicySpec,
    last: EvaluationResult | None,
    now: datetime,
) -> EvaluationResult:
    """One evaluation at ``now`` with BullQueueOps, carrying on ``last``'s status and memory (the
    first one with ``last=None``): what the daemon does every ``spec.interval``."""
    return await evaluate(
        ref,
        policy,
        last.status if last else None,
        redis=redis,
        ops=BullQueueOps(redis),
        memory=last.memory if last else None,
        now=now,
    )
