"""Duplicate jobs in a queue (the runbook's troubleshooting "Duplicate jobs in queue").

Two kinds, both among the jobs still to run (``wait``, the pre-BullMQ-5 ``paused`` list, and
``prioritized``):

* **id**: one job id listed more than once, in one list or in two of them. BullMQ never does
  this; a hand-made ``LPUSH`` or a broken script does, and a worker then runs the job twice.
* **business key**: two different jobs whose data hold the same value at a JSON path the
  user names (``$.orderId``, the subset of :mod:`requeue.api.jsonpath`): a producer added the
  same order twice.

Bounded reads: at most ``max_jobs`` ids per list (the newest of ``wait`` and ``paused``: BullMQ
pushes a new job at their head; the next to run of ``prioritized``), in one pipelined round
trip for any number of queues, then, only when a business key is named, one ``HGET data`` per
distinct id read, in a second round trip. Counting is one pass over what was read (dicts), and the
samples are picked with a bounded heap: ``O(n log sample)`` in the ``n <= 3 * max_jobs`` ids
read per queue, whatever the queue holds. Jobs beyond the bound are not
looked at; ``scanned`` says how many ids were.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from requeue.api.jsonpath import JsonPath
from requeue.queues.keys import QueueKeys

__all__ = [
    "DEFAULT_MAX_JOBS",
    "SAMPLE_SIZE",
    "DuplicateRead",
    "Duplicates",
    "count_duplicates",
    "find_duplicates",
    "key_text",
]

#: Ids read per list and queue when the caller does not say.
DEFAULT_MAX_JOBS = 1000
#: Most duplicate ids and keys kept as a sample (status, Events, CLI text).
SAMPLE_SIZE = 10
#: Longest business key kept in a sample (characters); longer ones are cut.
MAX_KEY_CHARS = 200
#: The lists read, in this order.
LISTS = ("wait", "paused", "prioritized")


@dataclass(frozen=True)
class Duplicates:
    """What one bounded read of a queue found."""

    #: Ids read (all lists together, repeats included).
    scanned: int = 0
    #: Job ids listed more than once (each counted once, however many times it repeats).
    ids: int = 0
    #: Business-key values held by more than one distinct waiting job.
    business_keys: int = 0
    #: Extra copies: for ids, listings beyond the first; for keys, jobs beyond the first.
    extra_ids: int = 0
    extra_jobs: int = 0
    #: Up to :data:`SAMPLE_SIZE` duplicate ids, most repeated first, then by id.
    sample_ids: tuple[str, ...] = ()
    #: Up to :data:`SAMPLE_SIZE` duplicate keys (as JSON text), most jobs first: the key, how many
    #: jobs hold it, and up to :data:`SAMPLE_SIZE` of their ids.
    sample_keys: tuple[tuple[str, int, tuple[str, ...]], ...] = ()
    #: Per sampled duplicate id: how often it is listed, and the lists it is in.
    where: Mapping[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.ids or self.business_keys)


def key_text(value: Any) -> str | None:
    """The business key as compact JSON text, so ``"1"`` (a string) and ``1`` (a number) stay
    different keys; None for ``null``, objects and lists (no key worth comparing)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def count_duplicates(
    lists: Mapping[str, Sequence[str]],
    data: Mapping[str, str | None] | None = None,
    path: JsonPath | None = None,
    *,
    sample: int = SAMPLE_SIZE,
) -> Duplicates:
    """Count both kinds from the ids read per list and (for keys) each id's raw ``data``.

    Pure and linear: one pass over the ids, one JSON parse per distinct id. Data that is not
    JSON, or has no value at ``path``, holds no key (it cannot be a duplicate by key)."""
    seen: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    for name in LISTS:
        for jid in lists.get(name, ()):
            seen[jid] += 1
            places = where.setdefault(jid, [])
            if name not in places:
                places.append(name)
    repeated = [j for j, n in seen.items() if n > 1]
    top_ids = heapq.nsmallest(sample, repeated, key=lambda j: (-seen[j], j))
    holders: dict[str, list[str]] = {}
    if path is not None and data is not None:
        for jid in seen:  # distinct ids: a repeated id is one job, not a duplicate by key
            raw = data.get(jid)
            if raw is None:
                continue
            try:
                found, value = path.find(json.loads(raw))
            except (ValueError, RecursionError):
                continue
            text = key_text(value) if found else None
            if text is not None:
                holders.setdefault(text, []).append(jid)
    keys = [k for k, js in holders.items() if len(js) > 1]
    top_keys = heapq.nsmallest(sample, keys, key=lambda k: (-len(holders[k]), k))
    return Duplicates(
        scanned=sum(seen.values()),
        ids=len(repeated),
        business_keys=len(keys),
        extra_ids=sum(seen[j] - 1 for j in repeated),
        extra_jobs=sum(len(holders[k]) - 1 for k in keys),
        sample_ids=tuple(top_ids),
        sample_keys=tuple((k[:MAX_KEY_CHARS], len(holders[k]), tuple(holders[k][:sample])) for k in top_keys),
        where={j: (seen[j], tuple(where[j])) for j in top_ids},
    )


@dataclass(frozen=True)
class DuplicateRead:
    """What :func:`find_duplicates` found per queue, and what the read cost."""

    queues: Mapping[str, Duplicates]
    round_trips: int
    commands: int


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


#: Bytes of ``data`` read per job to find its business key; bigger payloads are not read.
DATA_LIMIT = 64 * 1024


async def find_duplicates(
    redis: Redis,
    keys: Mapping[str, QueueKeys],
    *,
    max_jobs: int = DEFAULT_MAX_JOBS,
    path: JsonPath | None = None,
    sample: int = SAMPLE_SIZE,
) -> DuplicateRead:
    """:class:`Duplicates` for every queue of ``keys``, and the round trips (one; with ``path``
    and ids read, two more: each job's data size, then the data of those at most
    :data:`DATA_LIMIT`) and commands spent. Redis errors propagate."""
    queues = list(keys)
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        k = keys[q]
        pipe.lrange(k.wait, 0, max_jobs - 1)
        pipe.lrange(k.paused, 0, max_jobs - 1)
        pipe.zrange(k.prioritized, 0, max_jobs - 1)
    replies = await pipe.execute()
    lists: dict[str, dict[str, list[str]]] = {}
    for i, q in enumerate(queues):
        per = replies[i * len(LISTS) : (i + 1) * len(LISTS)]
        lists[q] = {name: [_text(j) for j in ids] for name, ids in zip(LISTS, per, strict=True)}
    data: dict[str, dict[str, str | None]] = {q: {} for q in queues}
    trips, commands = 1, len(queues) * len(LISTS)
    if path is not None:
        distinct = {q: dict.fromkeys(j for ids in lists[q].values() for j in ids) for q in queues}
        lookups = [(q, jid) for q in queues for jid in distinct[q]]
        if lookups:
            small = await _small_data(redis, [keys[q].job(jid) for q, jid in lookups])
            trips += 1
            commands += len(lookups)
            wanted = [(q, jid) for (q, jid), ok in zip(lookups, small, strict=True) if ok]
            if wanted:
                pipe = redis.pipeline(transaction=False)
                for q, jid in wanted:
                    pipe.hmget(keys[q].job(jid), ["data"])
                got = await pipe.execute(raise_on_error=False)
                trips += 1
                commands += len(wanted)
                for (q, jid), reply in zip(wanted, got, strict=True):
                    _raise_unless_wrongtype(reply)
                    raw = reply[0] if isinstance(reply, list) else None
                    if isinstance(raw, (bytes, str)):
                        data[q][jid] = _text(raw)
    found = {q: count_duplicates(lists[q], data[q], path, sample=sample) for q in queues}
    return DuplicateRead(found, trips, commands)


async def _small_data(redis: Redis, job_keys: list[str]) -> list[bool]:
    """For each job hash, whether its ``data`` is at most :data:`DATA_LIMIT` bytes: a producer's
    1 MiB payloads are never read to find a business key (they hold none for this check)."""
    pipe = redis.pipeline(transaction=False)
    for key in job_keys:
        pipe.hstrlen(key, "data")
    sizes = await pipe.execute(raise_on_error=False)
    for reply in sizes:
        _raise_unless_wrongtype(reply)
    return [isinstance(n, int) and 0 < n <= DATA_LIMIT for n in sizes]


def _raise_unless_wrongtype(reply: object) -> None:
    """A job id naming one of the queue's own keys (WRONGTYPE) holds no key; any other error
    (NOPERM for a user without the command, OOM, ...) is raised, never counted as "no duplicates"."""
    if isinstance(reply, ResponseError) and not str(reply).startswith("WRONGTYPE"):
        raise reply
