"""Observe many queues in as few Redis round trips as possible.

One pipeline carries, for every queue: the lengths of ``wait``, ``paused``
(pre-BullMQ-5), ``active``, and the sizes of ``completed``, ``failed``,
``delayed``, ``prioritized``; the ``paused`` flag of ``meta``; the first page
of the events stream; and, when ``thresholds.stalledActiveSeconds`` is set,
the ids of the ``stalled_scan_limit`` oldest active jobs (the tail of
``active``: BullMQ pushes a job it starts at the head); and, per clean rule, how
many jobs finished before the grace (so Clean runs only when there is
something to remove). A second pipeline asks, for those active ids, whether
their lock still exists and their job's name and ``processedOn``, and, when
``thresholds.stalledFor`` is set and some queue has a backlog but saw no job
finish since the last read, ``CLIENT LIST`` (one per evaluation, whatever the
number of queues) to count each queue's worker connections
(:mod:`requeue.queues.workers`), and, for the jobs the events stream says
finished since the last read (at most ``spec.metrics.maxJobLookups`` per queue, the newest),
one ``HMGET`` of their name, ``timestamp``, ``processedOn`` and ``finishedOn``
(job latency, :mod:`requeue.policy.latency`); it is made only when one of
these is needed.
When an escalation condition ``corruptJobs`` is set, the same round trip checks the newest
failed ones of those jobs (at most :data:`~requeue.policy.job_failures.MAX_CORRUPT_CHECKS` per
queue): ``HSTRLEN`` of their data and ``ZSCORE`` in the failed set beside the ``HMGET``; a
third round trip, only when some checked job has data of at most 64 KiB, reads that data to
see that it is JSON (:mod:`requeue.policy.job_failures`).
A refused ``CLIENT LIST`` (an ACL without it, a managed Redis that renamed it)
leaves the worker counts unknown instead of failing the observation. Further
round trips happen only for queues whose events stream needs another page, and
for queues where every count is zero and the flag unset: one ``EXISTS`` of every key
BullMQ writes for a queue tells an empty queue from one that does not exist (a typo); for
those, the bounded ``SCAN`` that lists the queues that do (:mod:`requeue.queues.existence`).
A queue with any job is known to exist without asking (one command per queue and
evaluation less; issue 16's "at most 10 per queue with the defaults").

When ``spec.duplicates`` is set, :func:`requeue.queues.duplicates.find_duplicates` adds one
round trip (two with a business key) for all the queues that exist, reading at most
``maxJobs`` ids per list.

These are plain read-only commands rather than BullMQ's ``getCounts`` script:
observing must not change anything (``getCounts`` may pop a pre-v5 marker),
and redis-py checks ``SCRIPT EXISTS`` before each pipeline that carries a
script, which would cost a round trip per evaluation. The numbers are the
ones ``getCounts`` reports on BullMQ 5+ data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.api.base import parse_duration
from requeue.api.escalation import uses_condition
from requeue.api.gates import GateStatus
from requeue.api.jsonpath import parse_json_path
from requeue.api.policy import CleanRule, QueuePolicySpec
from requeue.policy.failure_rate import DEFAULT_MAX_PAGES, DEFAULT_PAGE_SIZE, EventReader
from requeue.policy.job_failures import DATA_LIMIT, MAX_CORRUPT_CHECKS, CorruptCheck, corrupt_reason
from requeue.policy.latency import FinishedJob
from requeue.policy.observe import ActiveJob, EventTally, Observation, PolicyMemory, QueueObservation
from requeue.queues.adapter import queue_paused_read
from requeue.queues.duplicates import DuplicateRead, Duplicates, find_duplicates
from requeue.queues.existence import existence_keys, list_queues, queue_not_found, redis_location
from requeue.queues.keys import QueueKeys
from requeue.queues.workers import CLIENT_LIST, client_names, count_workers

__all__ = ["DEFAULT_STALLED_SCAN_LIMIT", "CollectStats", "collect"]

#: Most active jobs (the oldest) checked per queue per evaluation: lock, name and start time.
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
    job_lookups: int | None = None,
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
        job_lookups=spec.metrics.max_job_lookups if job_lookups is None else job_lookups,
        check_corrupt=uses_condition(spec.escalation, "corrupt_jobs"),
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
    before = reader.round_trips
    await reader.finish(redis)
    tallies = reader.tallies()
    second = await _second_round(redis, plan, first, tallies, _quiet_backlogs(spec, plan, first, tallies))
    round_trips = 1 + second.round_trips + reader.round_trips - before
    not_found, found_trips, found_calls = await _not_found(redis, plan, first)
    dup = await _duplicates(redis, spec, plan, not_found)
    round_trips += dup.round_trips

    observed = _queue_observations(plan, first, tallies, second, not_found, dup.queues)
    observation = Observation(at=now, queues=observed, gates=tuple(gates) if gates is not None else None)
    return observation, CollectStats(
        round_trips=round_trips + found_trips,
        commands=commands + second.commands + found_calls + dup.commands,
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
    #: Most finished jobs whose hash is read per queue (the newest): ``spec.metrics.maxJobLookups``
    #: unless the caller says otherwise.
    job_lookups: int
    #: An escalation condition ``corruptJobs`` is set: check the newest failed jobs read.
    check_corrupt: bool = False


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
    commands = len(queues) * _PER_QUEUE + reader.queue_first(pipe)
    if plan.check_stalled:
        for q in queues:
            pipe.lrange(plan.keys[q].active, -plan.stalled_scan_limit, -1)
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


def _quiet_backlogs(
    spec: QueuePolicySpec, plan: _Plan, first: _FirstRound, tallies: dict[str, EventTally]
) -> list[str]:
    """Queues whose processing may have stopped: ``stalledFor`` is set, jobs wait, and no job
    finished since the last read. Only for these are the worker connections worth listing."""
    if spec.thresholds.stalled_for is None:
        return []
    quiet = []
    for i, q in enumerate(plan.queues):
        counts = first.counts[i * _PER_QUEUE : (i + 1) * _PER_QUEUE]
        backlog = int(counts[0]) + int(counts[1]) + int(counts[6])
        if backlog and not tallies[q].completed and not tallies[q].failed:
            quiet.append(q)
    return quiet


@dataclass(frozen=True)
class _SecondRound:
    """The second round trip's findings: the oldest active jobs in detail, the worker counts."""

    #: Queue -> its oldest active jobs with lock, name and start time (stalled jobs checked).
    active_jobs: dict[str, tuple[ActiveJob, ...]]
    #: Queue -> worker connections; empty when CLIENT LIST was not read or was refused.
    workers: dict[str, int]
    #: Queue -> the jobs that finished since the last read, the newest with their hash's times.
    finished: dict[str, tuple[FinishedJob, ...]]
    round_trips: int = 0
    commands: int = 0
    #: Queue -> the failed jobs checked for corruption (only queues checked: ``check_corrupt``).
    corrupt: dict[str, tuple[CorruptCheck, ...]] = field(default_factory=dict)


async def _second_round(
    redis: Redis, plan: _Plan, first: _FirstRound, tallies: dict[str, EventTally], quiet: list[str]
) -> _SecondRound:
    """Locks, names and start times of the active ids read, the name and times of the jobs that
    finished since the last read (at most ``job_lookups`` per queue, the newest), and CLIENT LIST
    when ``quiet`` has a queue: one round trip, made only when one of these is needed (the ids
    had to be read first)."""
    lookups = [(q, jid) for q in plan.queues for jid in first.active_ids.get(q, ())]
    timed = {q: tallies[q].finished[-plan.job_lookups :] if plan.job_lookups else () for q in plan.queues}
    timings = [(q, job) for q in plan.queues for job in timed[q]]
    finished = {q: tallies[q].finished for q in plan.queues}
    if not lookups and not quiet and not timings:
        return _SecondRound({q: () for q in first.active_ids}, {}, finished)
    checked = _to_check(plan, timings)
    pipe = redis.pipeline(transaction=False)
    for q, jid in lookups:
        pipe.exists(plan.keys[q].lock(jid))
        pipe.hmget(plan.keys[q].job(jid), "name", "processedOn")
    for q, job in timings:
        pipe.hmget(plan.keys[q].job(job.id), "name", "timestamp", "processedOn", "finishedOn")
    for i in checked:
        q, job = timings[i]
        pipe.hstrlen(plan.keys[q].job(job.id), "data")
        pipe.zscore(plan.keys[q].failed, job.id)
    if quiet:
        pipe.execute_command(*CLIENT_LIST)  # as it came: only the names are read
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies[: 2 * len(lookups)]:
        if isinstance(reply, Exception):
            raise reply
    jobs: dict[str, list[ActiveJob]] = {q: [] for q in first.active_ids}
    for n, (q, jid) in enumerate(lookups):
        locked, (name, processed_on) = replies[2 * n], replies[2 * n + 1]
        jobs[q].append(
            ActiveJob(id=jid, name=_text(name), started_ms=_int_or_none(processed_on), locked=bool(locked))
        )
    start = 2 * len(lookups)
    hashes = replies[start : start + len(timings)]
    finished = _with_times(plan, tallies, timings, hashes)
    start += len(timings)
    workers: dict[str, int] = {}
    if quiet and not isinstance(replies[-1], rx.RedisError):  # refused: the counts stay unknown
        workers = count_workers(client_names(replies[-1]), plan.keys[quiet[0]].prefix, quiet)
    commands = 2 * len(lookups) + len(timings) + 2 * len(checked) + (1 if quiet else 0)
    round_trips = 1
    corrupt: dict[str, tuple[CorruptCheck, ...]] = {}
    if plan.check_corrupt:
        found, trips, calls = await _check_corrupt(
            redis, plan, timings, hashes, checked, replies[start : start + 2 * len(checked)]
        )
        corrupt, round_trips, commands = found, round_trips + trips, commands + calls
    return _SecondRound(
        {q: tuple(js) for q, js in jobs.items()}, workers, finished, round_trips, commands, corrupt
    )


def _to_check(plan: _Plan, timings: list[tuple[str, FinishedJob]]) -> list[int]:
    """Indexes into ``timings`` of the failed jobs to check for corruption: the newest
    :data:`MAX_CORRUPT_CHECKS` failed ones per queue (none unless ``check_corrupt``)."""
    if not plan.check_corrupt:
        return []
    per: dict[str, list[int]] = {}
    for i, (q, job) in enumerate(timings):
        if job.outcome == "failed":
            per.setdefault(q, []).append(i)
    return sorted(i for indexes in per.values() for i in indexes[-MAX_CORRUPT_CHECKS:])


async def _check_corrupt(
    redis: Redis,
    plan: _Plan,
    timings: list[tuple[str, FinishedJob]],
    hashes: list[Any],
    checked: list[int],
    replies: list[Any],
) -> tuple[dict[str, tuple[CorruptCheck, ...]], int, int]:
    """Judge the checked failed jobs from their ``HMGET``, ``HSTRLEN data`` and ``ZSCORE`` replies,
    reading the data of those with at most :data:`DATA_LIMIT` bytes of it in one more round trip
    (only when there are any). Returns the checks per queue, the round trips and commands spent.

    WRONGTYPE (a job id naming one of the queue's own keys) is an answer about that job; any other
    error (NOPERM, OOM...) is raised, never taken as "not corrupt"."""
    facts: list[tuple[str, FinishedJob, bool, bool, str | None, int, bool]] = []
    for n, i in enumerate(checked):
        q, job = timings[i]
        fields, length, score = hashes[i], replies[2 * n], replies[2 * n + 1]
        for reply in (fields, length, score):
            if isinstance(reply, Exception) and not _wrongtype(reply):
                raise reply
        not_a_hash = isinstance(fields, Exception) or isinstance(length, Exception)
        values = [] if not_a_hash else list(fields)
        size = 0 if not_a_hash else int(length)
        present = not not_a_hash and (any(v is not None for v in values) or size > 0)
        name = _text(values[0]) if values and values[0] is not None else None
        facts.append((q, job, not_a_hash, present, name, size, score is not None))
    wanted = [
        n
        for n, (_, _, not_hash, present, name, size, _) in enumerate(facts)
        if not not_hash and present and name and 0 < size <= DATA_LIMIT
    ]
    data: dict[int, str | None] = {}
    trips = calls = 0
    if wanted:
        pipe = redis.pipeline(transaction=False)
        for n in wanted:
            q, job = facts[n][0], facts[n][1]
            pipe.hmget(plan.keys[q].job(job.id), ["data"])
        got = await pipe.execute(raise_on_error=False)
        trips, calls = 1, len(wanted)
        for n, reply in zip(wanted, got, strict=True):
            if isinstance(reply, Exception) and not _wrongtype(reply):
                raise reply
            raw = reply[0] if isinstance(reply, list) else None
            data[n] = None if raw is None else _text(raw)
    out: dict[str, list[CorruptCheck]] = {q: [] for q in plan.queues}
    for n, (q, job, not_hash, present, name, size, listed) in enumerate(facts):
        reason = corrupt_reason(
            not_a_hash=not_hash,
            fields_present=present,
            name=name,
            data_length=size,
            # not read (over the limit), or gone between the two reads (removed meanwhile): readable
            data=data.get(n),
            in_failed_set=listed,
        )
        out[q].append(CorruptCheck(id=job.id, entry_ms=job.entry_ms, reason=reason))
    return {q: tuple(checks) for q, checks in out.items()}, trips, calls


def _wrongtype(reply: Exception) -> bool:
    return isinstance(reply, rx.ResponseError) and str(reply).startswith("WRONGTYPE")


def _with_times(
    plan: _Plan,
    tallies: dict[str, EventTally],
    timings: list[tuple[str, FinishedJob]],
    replies: list[Any],
) -> dict[str, tuple[FinishedJob, ...]]:
    """Each queue's finished jobs, the newest (the ``timings``, in queue order) with their hash's
    name and times; a hash that is gone leaves the name None (the job is counted, not timed), as
    does a key that is no hash (a job id such as ``wait`` names one of the queue's own keys:
    WRONGTYPE for that job only, not for the observation)."""
    read: dict[str, list[FinishedJob]] = {q: [] for q in plan.queues}
    for (q, job), reply in zip(timings, replies, strict=True):
        if isinstance(reply, rx.ResponseError):
            read[q].append(job)
            continue
        if isinstance(reply, Exception):
            raise reply
        name, added, processed, finished_on = reply
        if name is None and added is None:
            read[q].append(job)
            continue
        read[q].append(
            FinishedJob(
                id=job.id,
                outcome=job.outcome,
                entry_ms=job.entry_ms,
                name=_text(name),
                added_ms=_int_or_none(added),
                processed_ms=_int_or_none(processed),
                finished_ms=_int_or_none(finished_on),
            )
        )
    out: dict[str, tuple[FinishedJob, ...]] = {}
    for q in plan.queues:
        every = tallies[q].finished
        out[q] = every[: len(every) - len(read[q])] + tuple(read[q])
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(float(_text(value))) if value is not None else None
    except (ValueError, OverflowError):
        return None


async def _not_found(redis: Redis, plan: _Plan, first: _FirstRound) -> tuple[dict[str, str], int, int]:
    """Queue -> QueueNotFound message for each queue BullMQ has no key for; the round trips and
    commands that took. Only a queue whose counts are all zero can be missing: one ``EXISTS``
    each, in one round trip, and one bounded listing of the queues there when one is."""
    empty = [
        q for i, q in enumerate(plan.queues) if not any(first.counts[i * _PER_QUEUE : (i + 1) * _PER_QUEUE])
    ]
    if not empty:
        return {}, 0, 0
    pipe = redis.pipeline(transaction=False)
    for q in empty:
        pipe.exists(*existence_keys(plan.keys[q]))
    missing = [q for q, present in zip(empty, await pipe.execute(), strict=True) if not int(present)]
    if not missing:
        return {}, 1, len(empty)
    prefix = plan.keys[missing[0]].prefix
    listing = await list_queues(redis, prefix)
    location = redis_location(redis)
    found = {q: queue_not_found(q, prefix, location, listing).message for q in missing}
    return found, 1 + listing.calls, len(empty) + listing.calls


async def _duplicates(
    redis: Redis, spec: QueuePolicySpec, plan: _Plan, not_found: dict[str, str]
) -> DuplicateRead:
    """Duplicate waiting jobs of the queues that exist, when ``spec.duplicates`` asks (bounded
    reads, :mod:`requeue.queues.duplicates`), and the round trips that took."""
    wanted = spec.duplicates
    existing = {q: plan.keys[q] for q in plan.queues if q not in not_found}
    if wanted is None or not existing:
        return DuplicateRead({}, 0, 0)
    path = parse_json_path(wanted.business_key) if wanted.business_key else None
    return await find_duplicates(redis, existing, max_jobs=wanted.max_jobs, path=path)


def _queue_observations(
    plan: _Plan,
    first: _FirstRound,
    tallies: dict[str, EventTally],
    second: _SecondRound,
    not_found: dict[str, str],
    duplicates: Mapping[str, Duplicates],
) -> dict[str, QueueObservation]:
    """One :class:`QueueObservation` per queue from what was read.

    ``waiting`` adds the pre-BullMQ-5 ``paused`` list, as ``getCounts`` does;
    ``lockless_active`` and ``active_jobs`` are None when stalled jobs are not checked
    (unknown, not none); ``workers`` is None unless CLIENT LIST was read and answered.
    """
    observed: dict[str, QueueObservation] = {}
    for i, q in enumerate(plan.queues):
        wait, paused_list, active, completed, failed, delayed, prioritized, paused = first.counts[
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
            lockless_active=_lockless(second.active_jobs.get(q, ())) if plan.check_stalled else None,
            active_jobs=second.active_jobs.get(q, ()) if plan.check_stalled else None,
            workers=second.workers.get(q),
            cleanable=first.cleanable[q],
            not_found=not_found.get(q),
            finished_jobs=second.finished.get(q, ()),
            duplicates=duplicates.get(q),
            corrupt_checks=second.corrupt.get(q, ()) if plan.check_corrupt else None,
        )
    return observed


def _lockless(jobs: tuple[ActiveJob, ...]) -> frozenset[str]:
    return frozenset(j.id for j in jobs if not j.locked)
