"""Observe many queues in as few Redis round trips as possible.

One pipeline carries, for every queue: the lengths of ``wait``, ``paused``
(pre-BullMQ-5), ``active``, and the sizes of ``completed``, ``failed``,
``delayed``, ``prioritized``; the ``paused`` flag of ``meta``; whether BullMQ
has any key for the queue at all (one ``EXISTS``); the first page
of the events stream; and, when ``thresholds.stalledActiveSeconds`` is set,
the first ``stalled_scan_limit`` ids of ``active``; and, per clean rule, how
many jobs finished before the grace (so Clean runs only when there is
something to remove). A second pipeline (only
when some queue has active jobs and stalled jobs are checked) asks which of
those ids still have a lock. Further round trips happen only for queues whose
events stream needs another page, and, when a queue does not exist (a typo), for
the bounded ``SCAN`` that lists the queues that do (:mod:`requeue.queues.existence`).

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
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.api.base import parse_duration
from requeue.api.gates import GateStatus
from requeue.api.policy import CleanRule, QueuePolicySpec
from requeue.policy.failure_rate import DEFAULT_MAX_PAGES, DEFAULT_PAGE_SIZE, EventReader
from requeue.policy.observe import EventTally, Observation, PolicyMemory, QueueObservation
from requeue.queues.adapter import queue_paused_read
from requeue.queues.existence import existence_keys, list_queues, queue_not_found, redis_location
from requeue.queues.keys import QueueKeys

__all__ = ["DEFAULT_STALLED_SCAN_LIMIT", "CollectStats", "collect"]

#: Most active job ids checked for a lock per queue per evaluation.
DEFAULT_STALLED_SCAN_LIMIT = 1000
_PER_QUEUE = 9  # commands per queue before the events page


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
    plan = _Plan(
        queues=queues,
        keys={q: QueueKeys(spec.prefix, q) for q in queues},
        now_ms=now_ms,
        check_stalled=spec.thresholds.stalled_active_seconds is not None,
        stalled_scan_limit=stalled_scan_limit,
        clean_rules=_clean_rules(spec),
    )
    reader = EventReader(
        spec.prefix,
        queues,
        {q: memory.get(q).cursor for q in queues},
        now_ms=now_ms,
        window_ms=window_ms,
        page_size=page_size,
        max_pages=max_pages,
    )

    pipe = redis.pipeline(transaction=False)
    commands = _queue_first_round(pipe, plan, reader)
    first = _split_first_round(await pipe.execute(), plan, reader)
    lockless, lock_trips, lock_commands = await _lockless_active(redis, plan, first.active_ids)
    before = reader.round_trips
    await reader.finish(redis)
    round_trips = 1 + lock_trips + reader.round_trips - before
    not_found, list_trips = await _not_found(redis, plan, first)

    observed = _queue_observations(plan, first, reader.tallies(), lockless, not_found)
    observation = Observation(at=now, queues=observed, gates=tuple(gates) if gates is not None else None)
    return observation, CollectStats(
        round_trips=round_trips + list_trips, commands=commands + lock_commands + list_trips
    )


@dataclass(frozen=True)
class _Plan:
    """What one observation reads, settled before the first command is queued.

    The first round trip's replies come back as one flat list in the order the
    commands were queued; the step that queues them and the step that splits
    the replies both follow this one description, so they cannot drift apart.
    """

    queues: Sequence[str]
    keys: dict[str, QueueKeys]
    now_ms: int
    #: ``thresholds.stalledActiveSeconds`` is set: read active ids and their locks.
    check_stalled: bool
    stalled_scan_limit: int
    #: ``(state, rule)`` of each configured clean rule, completed before failed.
    clean_rules: list[tuple[str, CleanRule]]


def _clean_rules(spec: QueuePolicySpec) -> list[tuple[str, CleanRule]]:
    """The configured clean rules, as ``(state, rule)`` in a fixed order."""
    clean = spec.actions.clean
    return [
        (state, rule)
        for state, rule in (
            ("completed", clean.completed if clean else None),
            ("failed", clean.failed if clean else None),
        )
        if rule is not None
    ]


def _queue_first_round(pipe: Pipeline, plan: _Plan, reader: EventReader) -> int:
    """Queue every command of the first round trip on ``pipe``; return how many.

    In this order: the counts of each queue, each queue's first events page,
    (when stalled jobs are checked) each queue's first active ids, and per
    queue and clean rule the jobs that finished before the grace.
    """
    queues = plan.queues
    for q in queues:
        k = plan.keys[q]
        pipe.llen(k.wait)
        pipe.llen(k.paused)
        pipe.llen(k.active)
        pipe.zcard(k.completed)
        pipe.zcard(k.failed)
        pipe.zcard(k.delayed)
        pipe.zcard(k.prioritized)
        queue_paused_read(pipe, k)
        pipe.exists(*existence_keys(k))
    commands = len(queues) * _PER_QUEUE + reader.queue_first(pipe)
    if plan.check_stalled:
        for q in queues:
            pipe.lrange(plan.keys[q].active, 0, plan.stalled_scan_limit - 1)
        commands += len(queues)
    for q in queues:
        for state, rule in plan.clean_rules:
            cutoff = plan.now_ms - int(parse_duration(rule.grace).total_seconds() * 1000)
            pipe.zcount(plan.keys[q].key(state), 0, f"({cutoff}")
    return commands + len(queues) * len(plan.clean_rules)


@dataclass(frozen=True)
class _FirstRound:
    """The first round trip's replies, per kind (the events pages went to the reader)."""

    #: ``_PER_QUEUE`` replies per queue, in queue order.
    counts: list[Any]
    #: Queue -> its first active job ids (empty when stalled jobs are not checked).
    active_ids: dict[str, list[str]]
    #: Queue -> state -> jobs a clean rule would remove.
    cleanable: dict[str, dict[str, int]]


def _split_first_round(replies: list[Any], plan: _Plan, reader: EventReader) -> _FirstRound:
    """Split the replies of :func:`_queue_first_round`; the events pages go to ``reader``."""
    queues, rules = plan.queues, plan.clean_rules
    n = len(queues)
    counts = replies[: n * _PER_QUEUE]
    reader.take_first(replies[n * _PER_QUEUE : n * _PER_QUEUE + n])
    rest = replies[n * _PER_QUEUE + n :]
    active_ids: dict[str, list[str]] = {}
    if plan.check_stalled:
        for q, ids in zip(queues, rest[:n], strict=True):
            active_ids[q] = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        rest = rest[n:]
    cleanable: dict[str, dict[str, int]] = {}
    for i, q in enumerate(queues):
        per = rest[i * len(rules) : (i + 1) * len(rules)]
        cleanable[q] = {state: int(c) for (state, _), c in zip(rules, per, strict=True)}
    return _FirstRound(counts=counts, active_ids=active_ids, cleanable=cleanable)


async def _lockless_active(
    redis: Redis, plan: _Plan, active_ids: dict[str, list[str]]
) -> tuple[dict[str, frozenset[str]], int, int]:
    """Which of the active ids have no lock: queue -> ids, plus the round trips and commands spent.

    A second round trip, made only when stalled jobs are checked and some queue
    has active jobs: the ids had to be read first.
    """
    if not plan.check_stalled:
        return {}, 0, 0
    lookups = [(q, jid) for q in plan.queues for jid in active_ids[q]]
    if not lookups:
        return {}, 0, 0
    pipe = redis.pipeline(transaction=False)
    for q, jid in lookups:
        pipe.exists(plan.keys[q].lock(jid))
    exists = await pipe.execute()
    missing: dict[str, set[str]] = {}
    for (q, jid), present in zip(lookups, exists, strict=True):
        if not present:
            missing.setdefault(q, set()).add(jid)
    return {q: frozenset(ids) for q, ids in missing.items()}, 1, len(lookups)


async def _not_found(redis: Redis, plan: _Plan, first: _FirstRound) -> tuple[dict[str, str], int]:
    """Queue -> QueueNotFound message for each queue BullMQ has no key for, and the ``SCAN``
    round trips spent listing the queues that exist (one bounded listing, only when needed)."""
    missing = [q for i, q in enumerate(plan.queues) if not int(first.counts[(i + 1) * _PER_QUEUE - 1])]
    if not missing:
        return {}, 0
    prefix = plan.keys[missing[0]].prefix
    listing = await list_queues(redis, prefix)
    location = redis_location(redis)
    return {q: queue_not_found(q, prefix, location, listing).message for q in missing}, listing.calls


def _queue_observations(
    plan: _Plan,
    first: _FirstRound,
    tallies: dict[str, EventTally],
    lockless: dict[str, frozenset[str]],
    not_found: dict[str, str],
) -> dict[str, QueueObservation]:
    """One :class:`QueueObservation` per queue from what was read.

    ``waiting`` adds the pre-BullMQ-5 ``paused`` list, as ``getCounts`` does;
    ``lockless_active`` is None when stalled jobs are not checked (unknown, not none).
    """
    observed: dict[str, QueueObservation] = {}
    for i, q in enumerate(plan.queues):
        wait, paused_list, active, completed, failed, delayed, prioritized, paused, _ = first.counts[
            i * _PER_QUEUE : (i + 1) * _PER_QUEUE
        ]
        observed[q] = QueueObservation(
            name=q,
            waiting=int(wait) + int(paused_list),
            active=int(active),
            completed=int(completed),
            failed=int(failed),
            delayed=int(delayed),
            prioritized=int(prioritized),
            paused=bool(paused),
            events=tallies[q],
            lockless_active=lockless.get(q, frozenset()) if plan.check_stalled else None,
            cleanable=first.cleanable[q],
            not_found=not_found.get(q),
        )
    return observed
