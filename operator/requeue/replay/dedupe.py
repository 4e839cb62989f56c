"""``selector.dedupeBy``: of the matching failed jobs sharing one value at a JSON path of their
data, replay only the newest; the others stay failed and are counted.

Two passes over the failed set, both oldest-first like every selection:

1. **Index** (:func:`index_page`): for every matching job with a value at the path, ``HSET``
   value -> id into the replay's ``dedupe`` hash (:attr:`ReplayKeys.dedupe`). Pages go in
   failure order, so the last write of a value is its newest job. Each page's writes commit
   with the pass's cursor (``dd_score``/``dd_id``) in one MULTI fenced by WATCH, and the last
   page sets ``dd_done``; a page done twice writes the same values.
2. **Select** (the usual pages of :mod:`requeue.replay.selection`): a matching job is kept
   when the hash names it for its value (:func:`verdicts`); an older copy is a duplicate.

Why two passes and not one newest-first scan: the snapshot stays in failure order, so
``maxJobs`` still takes the oldest failures first (counting kept jobs only), BullMQ's
``moveJobsToWait`` fast path still applies to runs at the head of the failed set, and the
selection code (cursor, pages, budget) is the one every replay uses. The price is reading
the window twice. What is remembered lives in Redis, in the queue's slot on a cluster and
expiring with the replay's other keys, so requeue's memory stays one page whatever the
number of values; the choice is fixed once the first pass is done, so a selection killed
at any line and resumed picks exactly the same jobs.

Rules:

* a job whose data has no value at the path (or ``null`` there) is not deduplicated: it is
  replayed like any job and counted (``noDedupeKey``); corrupt data stays corrupt (never
  selected), as without dedupeBy;
* a value is compared as its JSON text, except a string, which is itself: ``"42"`` and
  ``42`` are one value; objects compare with sorted keys;
* ties on the failure time: the later in the failed set's own order (by id, as a string) wins;
* the choice is fixed once the first pass has read a value's newest job: if that job leaves
  the failed set before the second pass reaches it (retried or removed by someone else), no
  copy of that value is snapshotted and the older ones stay failed as its duplicates; if it
  leaves later, it is counted as skipped at its turn, like any snapshot id no longer failed;
* a job that failed after the first pass read its moment (within the clock-skew margin of
  the selection's upper bound) and whose value the hash does not hold is kept if it is the
  first such job of its value, and recorded in the same commit: never two per value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.api.jsonpath import JsonPath
from requeue.queues import FailedJob, FailedPage, ReplayKeys
from requeue.queues.adapter import text
from requeue.queues.keys import DUPLICATE_KEYS, Progress, Stage
from requeue.replay.matcher import Matcher

__all__ = [
    "DUPLICATE_KEYS",
    "MAX_KEY_LENGTH",
    "PageVerdicts",
    "Verdict",
    "dedupe_key",
    "duplicate_counts",
    "index_page",
    "verdicts",
]

#: A value longer than this (characters of its text) is stored as its SHA-256 instead.
MAX_KEY_LENGTH = 512


class Verdict(Enum):
    """What the second pass does with a matching job."""

    KEEP = "keep"
    DUPLICATE = "duplicate"
    #: no value at the path: replayed, not deduplicated
    NO_KEY = "no-key"


def dedupe_key(path: JsonPath, job: FailedJob) -> str | None:
    """The job's value at ``path`` as the key it is deduplicated by, or None (no value, null,
    or data that is not JSON). Linear in the data's size: one parse, one walk down the path."""
    try:
        data = json.loads(job.data or "")
    except ValueError:
        return None
    return key_of(path, data)


def key_of(path: JsonPath, data: Any) -> str | None:
    """The key of parsed ``data`` at ``path`` (see :func:`dedupe_key`)."""
    found, value = path.find(data)
    if not found or value is None:
        return None
    key = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if len(key) > MAX_KEY_LENGTH:
        return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def _candidates(page: FailedPage, matcher: Matcher, path: JsonPath) -> list[tuple[FailedJob, str | None]]:
    """The page's readable matching jobs with their keys, in failure order. The data is parsed
    once per job here (a job whose data does not parse is corrupt and left to the selection,
    which never selects it)."""
    out: list[tuple[FailedJob, str | None]] = []
    for job in page.jobs:
        if job.name is None or job.data is None:
            continue
        try:
            data = json.loads(job.data)
        except ValueError:
            continue
        if not matcher.matches(job, data):
            continue
        out.append((job, key_of(path, data)))
    return out


async def index_page(
    redis: Redis,
    keys: ReplayKeys,
    page: FailedPage,
    matcher: Matcher,
    path: JsonPath,
    p: dict[str, str],
    upper: int,
) -> None:
    """Commit one page of the first pass: each value's newest job so far, the pass's cursor and
    count, and ``dd_done`` on its last page (``p`` is updated to what was committed).

    :raises redis.exceptions.WatchError: another process committed a page meanwhile.
    """
    newest: dict[str, str] = {}
    for job, key in _candidates(page, matcher, path):
        if key is not None:
            newest[key] = job.id  # failure order: the last one seen is the newest
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(keys.progress)
        dd_id = text(await pipe.hget(keys.progress, Progress.DEDUPE_ID)) or ""
        stage = text(await pipe.hget(keys.progress, Progress.STAGE))
        if dd_id != (p.get(Progress.DEDUPE_ID) or "") or stage != Stage.SELECTING:
            raise rx.WatchError("selection moved on meanwhile")
        pipe.multi()  # type: ignore[no-untyped-call]
        if newest:
            pipe.hset(keys.dedupe, mapping=newest)  # type: ignore[arg-type]
        mapping = {
            Progress.DEDUPE_SCORE: page.cursor.score,
            Progress.DEDUPE_ID: page.cursor.job_id,
            Progress.UPPER: str(upper),
        }
        if page.done:
            mapping[Progress.DEDUPE_DONE] = "1"
        pipe.hset(keys.progress, mapping=mapping)  # type: ignore[arg-type]
        pipe.hincrby(keys.progress, Progress.DEDUPE_SCANNED, page.scanned)
        await pipe.execute()
    scanned = int(p.get(Progress.DEDUPE_SCANNED) or 0) + page.scanned
    p.update({k.value: v for k, v in mapping.items()})
    p[Progress.DEDUPE_SCANNED] = str(scanned)


@dataclass
class PageVerdicts:
    """The second pass's verdict on each matching job of a page (by id), and the values first
    seen in this pass (to record with the page's commit, see the module's last rule)."""

    by_id: dict[str, Verdict] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    claimed: dict[str, str] = field(default_factory=dict)


async def verdicts(
    redis: Redis, keys: ReplayKeys, page: FailedPage, matcher: Matcher, path: JsonPath
) -> PageVerdicts:
    """Which of the page's matching jobs the hash keeps (one ``HMGET`` for the page)."""
    cands = _candidates(page, matcher, path)
    keyed = [(job, key) for job, key in cands if key is not None]
    out = PageVerdicts()
    for job, key in cands:
        if key is None:
            out.by_id[job.id] = Verdict.NO_KEY
    if not keyed:
        return out
    distinct = list(dict.fromkeys(key for _, key in keyed))
    kept = dict(zip(distinct, (text(v) for v in await redis.hmget(keys.dedupe, distinct)), strict=True))
    for job, key in keyed:
        out.keys[job.id] = key
        owner = kept.get(key)
        if owner is None:
            # failed after the first pass read its moment: the first such job of its value is kept
            kept[key] = out.claimed[key] = job.id
            owner = job.id
        out.by_id[job.id] = Verdict.KEEP if owner == job.id else Verdict.DUPLICATE
    return out


async def duplicate_counts(
    redis: Redis | Pipeline, keys: ReplayKeys, per_key: dict[str, int]
) -> dict[str, int]:
    """The part of ``per_key`` the capped ``duplicates`` hash takes: values it already counts,
    and new ones while it holds fewer than :data:`DUPLICATE_KEYS` (read before the page's MULTI,
    under its WATCH: only one page commits at a time)."""
    if not per_key:
        return {}
    names = list(per_key)
    present = await redis.hmget(keys.duplicates, names)
    room = DUPLICATE_KEYS - int(await redis.hlen(keys.duplicates))
    out: dict[str, int] = {}
    for name, have in zip(names, present, strict=True):
        if have is not None:
            out[name] = per_key[name]
        elif room > 0:
            out[name] = per_key[name]
            room -= 1
    return out
