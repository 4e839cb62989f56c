"""Observe many queues in as few Redis round trips as possible.

One pipeline carries, for every queue: the lengths of ``wait``, ``paused``
(pre-BullMQ-5), ``active``, and the sizes of ``completed``, ``failed``,
``delayed``, ``prioritized``; the ``paused`` flag of ``meta``; the first page
of the events stream; and, when ``thresholds.stalledActiveSeconds`` is set,
the first ``stalled_scan_limit`` ids of ``active``; and, per clean rule, how
many jobs finished before the grace (so Clean runs only when there is
something to remove). A second pipeline (only
when some queue has active jobs and stalled jobs are checked) asks which of
those ids still have a lock. Further round trips happen only for queues whose
events stream needs another page.

These are plain read-only commands rather than BullMQ's ``getCounts`` script:
observing must not change anything (``getCounts`` may pop a pre-v5 marker),
and redis-py checks ``SCRIPT EXISTS`` before each pipeline that carries a
script, which would cost a round trip per evaluation. The numbers are the
ones ``getCounts`` reports on BullMQ 5+ data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from requeue.api.base import parse_duration
from requeue.api.gates import GateStatus
from requeue.api.policy import QueuePolicySpec
from requeue.policy.failure_rate import DEFAULT_MAX_PAGES, DEFAULT_PAGE_SIZE, EventReader
from requeue.policy.observe import Observation, PolicyMemory, QueueObservation
from requeue.queues.keys import QueueKeys

__all__ = ["DEFAULT_STALLED_SCAN_LIMIT", "CollectStats", "collect"]

#: Most active job ids checked for a lock per queue per evaluation.
DEFAULT_STALLED_SCAN_LIMIT = 1000
_PER_QUEUE = 8  # commands per queue before the events page


@dataclass(frozen=True)
class CollectStats:
    """What one observation cost."""

    round_trips: int
    commands: int


async def collect(
    redis: Redis,
    spec: QueuePolicySpec,
    queues: Sequence[str],
    memory: PolicyMemory,
    *,
    now: datetime,
    gates: Sequence[GateStatus] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    max_pages: int = DEFAULT_MAX_PAGES,
    stalled_scan_limit: int = DEFAULT_STALLED_SCAN_LIMIT,
) -> tuple[Observation, CollectStats]:
    """Observe ``queues`` (see the module docstring); Redis errors propagate to the caller."""
    now_ms = int(now.timestamp() * 1000)
    window_ms = int(parse_duration(spec.thresholds.window).total_seconds() * 1000)
    check_stalled = spec.thresholds.stalled_active_seconds is not None
    keys = {q: QueueKeys(spec.prefix, q) for q in queues}
    reader = EventReader(spec.prefix, queues, {q: memory.get(q).cursor for q in queues},
                         now_ms=now_ms, window_ms=window_ms, page_size=page_size, max_pages=max_pages)

    pipe = redis.pipeline(transaction=False)
    for q in queues:
        k = keys[q]
        pipe.llen(k.wait)
        pipe.llen(k.paused)
        pipe.llen(k.active)
        pipe.zcard(k.completed)
        pipe.zcard(k.failed)
        pipe.zcard(k.delayed)
        pipe.zcard(k.prioritized)
        pipe.hexists(k.meta, "paused")
    commands = len(queues) * _PER_QUEUE + reader.queue_first(pipe)
    if check_stalled:
        for q in queues:
            pipe.lrange(keys[q].active, 0, stalled_scan_limit - 1)
        commands += len(queues)
    clean = spec.actions.clean
    clean_rules = [(state, rule) for state, rule in
                   (("completed", clean.completed if clean else None),
                    ("failed", clean.failed if clean else None)) if rule is not None]
    for q in queues:
        for state, rule in clean_rules:
            cutoff = now_ms - int(parse_duration(rule.grace).total_seconds() * 1000)
            pipe.zcount(keys[q].key(state), 0, f"({cutoff}")
    commands += len(queues) * len(clean_rules)
    replies = await pipe.execute()
    round_trips = 1

    n = len(queues)
    counts = replies[: n * _PER_QUEUE]
    reader.take_first(replies[n * _PER_QUEUE: n * _PER_QUEUE + n])
    rest = replies[n * _PER_QUEUE + n:]
    active_ids: dict[str, list[str]] = {}
    if check_stalled:
        for q, ids in zip(queues, rest[:n], strict=True):
            active_ids[q] = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        rest = rest[n:]
    cleanable: dict[str, dict[str, int]] = {}
    for i, q in enumerate(queues):
        per = rest[i * len(clean_rules):(i + 1) * len(clean_rules)]
        cleanable[q] = {state: int(c) for (state, _), c in zip(clean_rules, per, strict=True)}

    lockless: dict[str, frozenset[str]] = {}
    if check_stalled:
        lookups = [(q, jid) for q in queues for jid in active_ids[q]]
        if lookups:
            pipe = redis.pipeline(transaction=False)
            for q, jid in lookups:
                pipe.exists(keys[q].lock(jid))
            exists = await pipe.execute()
            round_trips += 1
            commands += len(lookups)
            missing: dict[str, set[str]] = {}
            for (q, jid), present in zip(lookups, exists, strict=True):
                if not present:
                    missing.setdefault(q, set()).add(jid)
            lockless = {q: frozenset(ids) for q, ids in missing.items()}

    before = reader.round_trips
    await reader.finish(redis)
    round_trips += reader.round_trips - before
    tallies = reader.tallies()

    observed: dict[str, QueueObservation] = {}
    for i, q in enumerate(queues):
        wait, paused_list, active, completed, failed, delayed, prioritized, paused = counts[
            i * _PER_QUEUE: (i + 1) * _PER_QUEUE]
        observed[q] = QueueObservation(
            name=q, waiting=int(wait) + int(paused_list), active=int(active), completed=int(completed),
            failed=int(failed), delayed=int(delayed), prioritized=int(prioritized), paused=bool(paused),
            events=tallies[q],
            lockless_active=lockless.get(q, frozenset()) if check_stalled else None,
            cleanable=cleanable[q],
        )
    observation = Observation(at=now, queues=observed, gates=tuple(gates) if gates is not None else None)
    return observation, CollectStats(round_trips=round_trips, commands=commands)
