"""Async BullMQ adapter: counts, pause/resume, paging the failed set, replaying ids, cleaning.

Every BullMQ state change goes through BullMQ's own scripts (:mod:`.scripts`);
every call touches a bounded number of jobs (a page or a batch), so other Redis
clients never stall for more than a few milliseconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack  # type: ignore[import-untyped]
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.queues.existence import require_queue
from requeue.queues.keys import QueueKeys
from requeue.queues.raw import bulk, pack
from requeue.queues.scripts import Scripts, register

#: Jobs per page of the failed set (one bounded Lua call each: ~1-2 ms of Redis time with data).
DEFAULT_PAGE_SIZE = 250
#: Redis time one page script may take (µs) before it ends the page early.
DEFAULT_PAGE_BUDGET_US = 1500
#: Highest score BullMQ writes (ms since epoch fit easily below this).
MAX_SCORE = 9_000_000_000_000_000
#: BullMQ's flag in a queue's ``meta`` hash: present while the queue is paused.
META_PAUSED = "paused"
#: The job hash fields a copy into another queue needs (:meth:`BullQueue.copy_command`'s ``job``).
COPY_FIELDS = ("name", "data", "opts", "priority")


class ReprocessResult(IntEnum):
    """Result codes of BullMQ's ``reprocessJob`` script."""

    #: Moved back to wait (or prioritized).
    REPLAYED = 1
    #: The job hash does not exist (removed since it was selected).
    MISSING = -1
    #: The job is no longer in the failed set (already replayed, or moved by someone else).
    NOT_IN_FAILED = -3


def queue_paused_read(pipe: Pipeline, keys: QueueKeys) -> None:
    """Queue the read of a queue's paused flag on ``pipe`` (its reply: 1 paused, 0 not), so code
    outside ``queues/`` batches it with its own reads without knowing BullMQ's field."""
    pipe.hexists(keys.meta, META_PAUSED)


def copy_source(reply: Sequence[str | None]) -> dict[str, str | None] | None:
    """The reply of :meth:`BullQueue.copy_source_command` as :meth:`BullQueue.copy_command`'s
    ``job``; None when the job hash is gone."""
    if all(f is None for f in reply):
        return None
    return dict(zip(COPY_FIELDS, reply, strict=True))


def _script_body(script: Any) -> bytes:
    """A registered script's text as bytes (redis-py keeps what it was given)."""
    body = script.script
    return body.encode() if isinstance(body, str) else bytes(body)


def text(value: Any) -> str | None:
    """Redis reply to ``str`` (clients may or may not decode responses)."""
    if value is None or value is False:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True)
class Cursor:
    """Position in the failed set: after the member ``job_id`` with score ``score`` (ms)."""

    score: str = ""
    job_id: str = ""


@dataclass(frozen=True)
class FailedJob:
    """One entry of a page of the failed set, as far as selection needs it."""

    id: str
    #: Failure time (the failed set's score), ms since epoch.
    finished_on: int
    #: None when the hash is missing or has no name (a corrupt job).
    name: str | None
    failed_reason: str | None
    #: The raw JSON text of the job's data (None when the page was read without data).
    data: str | None
    lifo: bool = False
    #: The job has a priority (> 0): BullMQ puts it into ``prioritized``, not ``wait``.
    prioritized: bool = False
    #: Whether the data is JSON, when Redis checked it (a page read without data); None: check ``data``.
    data_is_json: bool | None = None
    #: False when Redis saw no data at all in the hash (then ``data_is_json`` is False too).
    has_data: bool = True

    @property
    def corrupt_reason(self) -> str | None:
        """Why this job cannot be replayed safely, or None."""
        if self.name is None:
            return "job hash missing or has no name"
        if self.data_is_json is not None:
            if not self.has_data:
                return "job has no data"
            return None if self.data_is_json else "job data is not JSON"
        if self.data is None:
            return "job has no data"
        try:
            json.loads(self.data)
        except ValueError:
            return "job data is not JSON"
        return None


@dataclass(frozen=True)
class FailedPage:
    """One page: the candidates (name-prefiltered), how many members were scanned, where to go on."""

    jobs: list[FailedJob]
    scanned: int
    cursor: Cursor
    done: bool
    #: Ids asked for by name (``selector.jobIds``) that are not in the failed set.
    not_failed: tuple[str, ...] = ()


_LUA_MAGIC = set("^$()%.[]*+-?")


def glob_to_lua(glob: str) -> str | None:
    """An anchored Lua pattern matching the same names as the glob, or None if unsure.

    Supports ``*``, ``?`` and ``[...]`` classes (``[!...]`` negated); anything
    else is matched literally. None means "do not prefilter in Redis".

    At most one ``*``: Lua's matcher backtracks at every ``.*``, so ``*a*a*a*b``
    against a long job name (data requeue does not control) is O(n^4) *inside Redis*
    (an 800-character name took 90 s in Lua 5.4). With one ``.*`` the match is
    O(n·m). Globs with more stars are matched in Python only (``fnmatch``, linear).
    """
    if glob.count("*") > 1:
        return None
    out = ["^"]
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 2)
            if end < 0:
                return None
            body = glob[i + 1 : end]
            neg = body.startswith("!")
            if neg:
                body = body[1:]
            if not body or "%" in body or "[" in body or "^" in body:
                return None
            out.append("[" + ("^" if neg else "") + body + "]")
            i = end
        elif c in _LUA_MAGIC:
            out.append("%" + c)
        elif c == "\0":
            return None
        else:
            out.append(c)
        i += 1
    out.append("$")
    return "".join(out)


class BullQueue:
    """One BullMQ queue on one Redis.

    :param redis: a ``redis.asyncio.Redis`` (see :func:`requeue.queues.connect`).
    """

    def __init__(
        self, redis: Redis, queue: str, *, prefix: str = "bull", scripts: Scripts | None = None
    ) -> None:
        self.redis = redis
        self.name = queue
        self.prefix = prefix
        self.keys = QueueKeys(prefix, queue)
        self.scripts = scripts or register(redis)

    # -- observation ---------------------------------------------------------

    async def counts(self, *states: str) -> dict[str, int]:
        """Job counts per state via BullMQ's ``getCounts`` (``waiting`` is ``wait``)."""
        states = states or ("wait", "paused", "active", "prioritized", "delayed", "completed", "failed")
        args = ["wait" if s == "waiting" else s for s in states]
        result = await self.scripts.get_counts(keys=[self.keys.base], args=args)
        return {s: int(n) for s, n in zip(states, result, strict=True)}

    async def backlog(self) -> int:
        """Jobs waiting to be picked up: wait + paused (legacy) + prioritized."""
        counts = await self.counts("wait", "paused", "prioritized")
        return sum(counts.values())

    async def require_exists(self) -> None:
        """Return when BullMQ has any key for this queue; else raise
        :class:`~requeue.errors.QueueNotFound` naming the queues under the prefix."""
        await require_queue(self.redis, self.keys)

    async def is_paused(self) -> bool:
        """Whether BullMQ's ``meta`` hash carries the ``paused`` flag."""
        return bool(await self.redis.hexists(self.keys.meta, META_PAUSED))

    def paused_command(self) -> bytes:
        """The read of the paused flag, packed for a hand-built transaction (reply 1/0)."""
        return pack("HEXISTS", self.keys.meta, META_PAUSED)

    def copy_source_command(self, job_id: str) -> bytes:
        """The read of what a copy of the job needs, packed; :func:`copy_source` reads the reply."""
        return pack("HMGET", self.keys.job(job_id), *COPY_FIELDS)

    async def job_hash(self, job_id: str) -> dict[str, str] | None:
        """Every field of the job's hash as text (``HGETALL``); None when there is no hash."""
        raw = await self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        return {text(k) or "": text(v) or "" for k, v in raw.items()}

    async def job_state(self, job_id: str) -> str:
        """Which of BullMQ's sets holds the job, by BullMQ's ``getStateV2`` (``completed``,
        ``failed``, ``delayed``, ``prioritized``, ``active``, ``waiting``, ``waiting-children``
        or ``unknown``: in none of them)."""
        k = self.keys
        state = await self.scripts.get_state(
            keys=[
                k.completed,
                k.failed,
                k.delayed,
                k.active,
                k.wait,
                k.paused,
                k.key("waiting-children"),
                k.prioritized,
            ],
            args=[job_id, k.job(job_id)],
        )
        return text(state) or "unknown"

    # -- pause / resume ------------------------------------------------------

    def _pause_keys(self, pause: bool) -> list[str]:
        src, dst = (self.keys.wait, self.keys.paused) if pause else (self.keys.paused, self.keys.wait)
        return [
            src,
            dst,
            self.keys.meta,
            self.keys.prioritized,
            self.keys.events,
            self.keys.delayed,
            self.keys.marker,
        ]

    async def queue_pause(self, pipe: Pipeline, pause: bool) -> None:
        """Queue BullMQ's ``pause`` script (pause or resume) on a pipeline."""
        await self.scripts.pause(
            keys=self._pause_keys(pause), args=["paused" if pause else "resumed"], client=pipe
        )

    async def pause(self) -> None:
        """Pause the queue globally (BullMQ's ``pause`` script)."""
        await self.scripts.pause(keys=self._pause_keys(True), args=["paused"])

    async def resume(self) -> None:
        """Resume the queue (BullMQ's ``pause`` script with ``resumed``)."""
        while int(await self.scripts.pause(keys=self._pause_keys(False), args=["resumed"]) or 0) > 0:
            pass  # legacy paused list longer than 7000: BullMQ moves 7000 per call

    # -- the failed set ------------------------------------------------------

    async def select_page(
        self,
        cursor: Cursor = Cursor(),
        *,
        min_score: int = 0,
        max_score: int = MAX_SCORE,
        name_globs: Sequence[str] = (),
        count: int = DEFAULT_PAGE_SIZE,
        with_data: bool = True,
        budget_us: int = DEFAULT_PAGE_BUDGET_US,
    ) -> FailedPage:
        """One page of the failed set in score order after ``cursor``.

        ``min_score`` is inclusive, ``max_score`` exclusive (ms). When every glob
        converts to a Lua pattern, non-matching names are dropped inside Redis
        (then only their ids are scanned, not transferred); the caller must still
        apply its exact filters. Jobs with a missing hash or name are returned
        with ``name=None`` whatever the globs. ``with_data=False`` leaves
        ``data`` out (Redis checks that it is JSON instead): several times less
        to transfer and parse when no filter looks at the data. ``budget_us`` ends the page
        early (not done; the cursor says where) once the script has run that long, so a page
        never stalls other clients much longer whatever the cache or machine (0 = no limit).
        """
        reply = await self._select_page_reply(
            cursor, min_score, max_score, name_globs, count, with_data=with_data, budget_us=budget_us
        )
        return _page_from_reply(reply)

    async def iter_pages(
        self,
        *,
        max_score: int = MAX_SCORE,
        count: int = DEFAULT_PAGE_SIZE,
        with_data: bool = True,
        budget_us: int = DEFAULT_PAGE_BUDGET_US,
    ) -> AsyncGenerator[FailedPage, None]:
        """Every page of the failed set below ``max_score``, in score order (as :meth:`select_page`
        from the start), until a page is done or empty (the set shrank meanwhile).

        One call at a time. Sending the next page's call before parsing this one was tried and
        measured: no gain on 20k jobs (93-94k scanned jobs/s either way; Redis's own ~8 µs per
        scanned job is most of the time), so it is not done.
        """
        cursor = Cursor()
        while True:
            reply = await self._select_page_reply(
                cursor, 0, max_score, (), count, with_data=with_data, budget_us=budget_us
            )
            scanned, cursor, done = _page_head(reply)
            yield _page_from_reply(reply)
            if done or not scanned:
                return

    async def _select_page_reply(
        self,
        cursor: Cursor,
        min_score: int,
        max_score: int,
        name_globs: Sequence[str],
        count: int,
        *,
        with_data: bool,
        budget_us: int,
    ) -> list[Any]:
        """SELECT_PAGE's reply, decoded (see :func:`_page_head`, :func:`_page_from_reply`)."""
        patterns: list[str] = []
        if name_globs:
            converted = [glob_to_lua(g) for g in name_globs]
            if all(p is not None for p in converted):
                patterns = [p for p in converted if p is not None]
        raw = await self.scripts.select_page(
            keys=[self.keys.failed],
            args=[
                self.keys.base,
                min_score,
                max_score,
                cursor.score,
                cursor.job_id,
                count,
                "1" if with_data else "0",
                budget_us,
                *patterns,
            ],
        )
        reply: list[Any] = json.loads(raw)
        return reply

    async def fetch(
        self,
        ids: Sequence[str],
        fields: Sequence[str] = (
            "name",
            "data",
            "failedReason",
            "finishedOn",
            "opts",
            "atm",
            "ats",
            "priority",
        ),
    ) -> list[dict[str, str | None] | None]:
        """The fields of each job (pipelined HMGET; one round trip); None where the hash is missing."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(self.keys.job(job_id))
                pipe.hmget(self.keys.job(job_id), list(fields))
            raw = await pipe.execute()
        out: list[dict[str, str | None] | None] = []
        for i in range(0, len(raw), 2):
            if not raw[i]:
                out.append(None)
            else:
                out.append({f: text(v) for f, v in zip(fields, raw[i + 1], strict=True)})
        return out

    async def failed_count(self, min_score: int = 0, max_score: int = MAX_SCORE) -> int:
        """Members of the failed set with min_score <= score < max_score."""
        return int(await self.redis.zcount(self.keys.failed, min_score, f"({max_score}"))

    async def failed_scores(self, ids: Sequence[str]) -> list[float | None]:
        """Failed-set score of each id, None where absent."""
        if not ids:
            return []
        return list(await self.redis.zmscore(self.keys.failed, list(ids)))

    # -- replay --------------------------------------------------------------

    async def queue_reprocess(
        self, pipe: Pipeline, job_id: str, *, lifo: bool = False, reset_attempts: bool = True
    ) -> None:
        """Queue BullMQ's ``reprocessJob`` (failed -> wait/prioritized) for one job on a pipeline."""
        k = self.keys
        reset = "1" if reset_attempts else "0"
        await self.scripts.reprocess_job(
            keys=[
                k.job(job_id),
                k.events,
                k.failed,
                k.wait,
                k.meta,
                k.active,
                k.marker,
                k.prioritized,
                k.priority_counter,
            ],
            args=[job_id, "RPUSH" if lifo else "LPUSH", "failedReason", "failed", reset, reset],
            client=pipe,
        )

    async def replay(
        self, ids: Sequence[str], *, lifo: Iterable[str] = (), reset_attempts: bool = True
    ) -> list[ReprocessResult]:
        """Move failed jobs back to wait in one pipeline; a result code per id.

        Harmless to repeat: a job no longer in the failed set answers ``NOT_IN_FAILED``.
        """
        lifo_ids = set(lifo)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                await self.queue_reprocess(
                    pipe, job_id, lifo=job_id in lifo_ids, reset_attempts=reset_attempts
                )
            raw = await pipe.execute()
        return [ReprocessResult(int(r)) for r in raw]

    # -- replay, packed by hand (the engine's hot path; see :mod:`requeue.queues.raw`) ------

    def target_list(self, paused: bool) -> str:
        """Where a replayed job without priority goes: ``wait``, or the legacy ``paused`` list
        while the queue is paused (a BullMQ 5 app resumes by ``RENAME paused wait``, which
        would overwrite ``wait``; BullMQ 6 and Python migrate the ``paused`` list on resume)."""
        return self.keys.paused if paused else self.keys.wait

    def reprocess_commands(
        self, ids: Sequence[str], *, paused: bool, lifo: Iterable[str] = (), reset_attempts: bool = True
    ) -> list[bytes]:
        """``EVALSHA reprocessJob`` for each id, packed (same keys and args as :meth:`queue_reprocess`)."""
        k = self.keys
        sha = self.scripts.reprocess_job.sha
        head = b"*18\r\n" + bulk("EVALSHA") + bulk(sha) + bulk("9")
        middle = b"".join(
            bulk(x)
            for x in (
                k.events,
                k.failed,
                self.target_list(paused),
                k.meta,
                k.active,
                k.marker,
                k.prioritized,
                k.priority_counter,
            )
        )
        reset = "1" if reset_attempts else "0"
        tail = bulk("failedReason") + bulk("failed") + bulk(reset) + bulk(reset)
        lpush, rpush = bulk("LPUSH"), bulk("RPUSH")
        lifo_ids = set(lifo)
        base = k.base
        return [
            head
            + bulk(base + job_id)
            + middle
            + bulk(job_id)
            + (rpush if job_id in lifo_ids else lpush)
            + tail
            for job_id in ids
        ]

    def move_to_wait_command(
        self, *, count: int, max_timestamp: int | str, paused: bool, inline: bool = False
    ) -> bytes:
        """``EVALSHA moveJobsToWait`` for the failed set, packed; paused-aware like
        :meth:`reprocess_commands`. Moves the first ``count`` members with a score <=
        ``max_timestamp``; keeps attempts and ignores priority and lifo (see
        :meth:`move_failed_to_wait`).

        ``inline``: ``EVAL`` with BullMQ's script text instead (a few kB more per call, a
        SHA1 of it in Redis): inside a MULTI it can never fail with NOSCRIPT after the
        commands around it ran (Redis checks a script's presence only at EXEC)."""
        k = self.keys
        script = self.scripts.move_jobs_to_wait
        head = ("EVAL", _script_body(script)) if inline else ("EVALSHA", script.sha)
        return pack(
            *head,
            8,
            k.base,
            k.events,
            k.failed,
            self.target_list(paused),
            k.paused,
            k.meta,
            k.active,
            k.marker,
            count,
            max_timestamp,
            "failed",
        )

    def reset_attempts_commands(self, ids: Sequence[str]) -> list[bytes]:
        """``HDEL atm ats`` per job: what ``reprocessJob`` does with its reset flags, for jobs that
        ``moveJobsToWait`` moved in the same MULTI."""
        base = self.keys.base
        cmd, fields = b"*4\r\n" + bulk("HDEL"), bulk("atm") + bulk("ats")
        return [cmd + bulk(base + job_id) + fields for job_id in ids]

    async def move_failed_to_wait(self, *, count: int, max_timestamp: int) -> bool:
        """BullMQ's ``moveJobsToWait`` (what ``Queue.retryJobs`` uses): up to ``count`` failed jobs
        with a score <= ``max_timestamp`` go back to wait. Returns True while more may remain.

        Fast, but BullMQ's script pushes prioritized jobs to ``wait`` and keeps the
        attempt counters; callers use it only when that is what the user asked for.
        """
        k = self.keys
        reply = await self.scripts.move_jobs_to_wait(
            keys=[k.base, k.events, k.failed, k.wait, k.paused, k.meta, k.active, k.marker],
            args=[count, max_timestamp, "failed"],
        )
        return int(reply) == 1

    def _copy_args(
        self, job: dict[str, str | None], *, new_id: str, timestamp_ms: int
    ) -> tuple[int, list[Any]]:
        """The priority of a copy of ``job`` and the arguments of BullMQ's add-job scripts for it:
        opts without delay, repeat, dedup or parent, and ``new_id`` as the job id."""
        opts: dict[str, Any] = json.loads(job.get("opts") or "{}")
        for drop in (
            "delay",
            "jobId",
            "repeat",
            "rjk",
            "de",
            "deduplication",
            "debounce",
            "parent",
            "prevMillis",
        ):
            opts.pop(drop, None)
        opts["jobId"] = new_id
        priority = int(job.get("priority") or opts.get("priority") or 0)
        packed_args = msgpack.packb(
            [self.keys.base, new_id, job.get("name") or "", timestamp_ms, None, None, None, None, None],
            use_bin_type=True,
        )
        return priority, [packed_args, job.get("data") or "{}", msgpack.packb(opts), timestamp_ms]

    async def queue_copy(
        self,
        pipe: Pipeline,
        job: dict[str, str | None],
        *,
        new_id: str,
        timestamp_ms: int,
        reset_attempts: bool = True,
    ) -> None:
        """Queue BullMQ's add-job script creating a copy of ``job`` (an HMGET dict) in this queue.

        The copy keeps name, data, opts and priority; ``new_id`` makes it idempotent:
        BullMQ adds nothing when a job with that id exists. Delay is dropped (a
        replayed job is due now). With ``reset_attempts=False`` the attempts made are
        not carried over (BullMQ has no way to add a job with attempts made).
        """
        priority, args = self._copy_args(job, new_id=new_id, timestamp_ms=timestamp_ms)
        script = self.scripts.add_prioritized_job if priority else self.scripts.add_standard_job
        await script(keys=self._add_job_keys(bool(priority), wait=self.keys.wait), args=args, client=pipe)

    def _add_job_keys(self, priority: bool, *, wait: str) -> list[str]:
        """KEYS of BullMQ's ``addPrioritizedJob`` / ``addStandardJob`` (as BullMQ 5/6 pass them)."""
        k = self.keys
        if priority:
            return [
                k.marker,
                k.meta,
                k.key("id"),
                k.prioritized,
                k.delayed,
                k.completed,
                k.active,
                k.events,
                k.priority_counter,
            ]
        return [wait, k.paused, k.meta, k.key("id"), k.completed, k.delayed, k.active, k.events, k.marker]

    def copy_command(
        self, job: dict[str, str | None], *, new_id: str, timestamp_ms: int, paused: bool = False
    ) -> bytes:
        """BullMQ's add-job script creating a copy of ``job`` here, packed (see :meth:`queue_copy`).

        ``paused``: this queue is paused, so a job without priority goes to the legacy
        ``paused`` list, where every BullMQ major finds it on resume (see :meth:`target_list`).
        """
        priority, args = self._copy_args(job, new_id=new_id, timestamp_ms=timestamp_ms)
        script = self.scripts.add_prioritized_job if priority else self.scripts.add_standard_job
        keys = self._add_job_keys(bool(priority), wait=self.target_list(paused))
        return pack("EVALSHA", script.sha, len(keys), *keys, *args)

    def remove_command(self, job_id: str) -> bytes:
        """BullMQ's ``removeJob`` (children kept), packed."""
        return pack(
            "EVALSHA",
            self.scripts.remove_job.sha,
            2,
            self.keys.job(job_id),
            self.keys.repeat,
            job_id,
            "0",
            self.keys.base,
        )

    async def queue_remove(self, pipe: Pipeline, job_id: str) -> None:
        """Queue BullMQ's ``removeJob`` (children kept) on a pipeline."""
        await self.scripts.remove_job(
            keys=[self.keys.job(job_id), self.keys.repeat], args=[job_id, "0", self.keys.base], client=pipe
        )

    # -- clean ---------------------------------------------------------------

    async def clean(self, state: str = "failed", *, grace_ms: int = 0, limit: int = 500) -> int:
        """Remove up to ``limit`` jobs older than ``grace_ms`` from ``state`` (``cleanJobsInSet``)."""
        k = self.keys
        removed = await self.scripts.clean_jobs_in_set(
            keys=[k.key(state), k.events, k.repeat],
            args=[k.base, round(time.time() * 1000) - grace_ms, limit, state],
        )
        return len(removed or [])

    async def clean_finished(self, state: str, *, cutoff_ms: int, limit: int) -> list[str]:
        """BullMQ's ``cleanJobsInSet`` on ``completed`` or ``failed``, as ``Queue.clean`` calls it
        with ``grace = now - cutoff_ms``: removes up to ``limit`` jobs finished at or before
        ``cutoff_ms``, oldest first; their ids."""
        if state not in ("completed", "failed"):
            raise ValueError(f"clean_finished cleans completed or failed, not {state!r}")
        k = self.keys
        removed = await self.scripts.clean_jobs_in_set(
            keys=[k.key(state), k.events, k.repeat], args=[k.base, cutoff_ms, limit, state]
        )
        return [text(i) or "" for i in removed or []]

    async def clean_finished_preview(self, state: str, *, cutoff_ms: int, limit: int) -> list[str]:
        """The ids :meth:`clean_finished` would remove now (the same ``ZRANGEBYSCORE`` BullMQ's
        script starts from), touching nothing."""
        if state not in ("completed", "failed"):
            raise ValueError(f"clean_finished_preview reads completed or failed, not {state!r}")
        ids = await self.redis.zrangebyscore(self.keys.key(state), 0, cutoff_ms, start=0, num=limit)
        return [text(i) or "" for i in ids]


def data_flag(flags: str) -> bool | None:
    """The third character of a selection script's flags as :attr:`FailedJob.data_is_json`
    ("?": the data itself was returned, not checked)."""
    return None if flags[2] == "?" else flags[2] == "1"


def _page_head(reply: Sequence[Any]) -> tuple[int, Cursor, bool]:
    """(members scanned, the cursor after them, done) of a SELECT_PAGE reply."""
    return int(reply[0]), Cursor(text(reply[1]) or "", text(reply[2]) or ""), int(reply[3]) == 1


def _page_from_reply(reply: Sequence[Any]) -> FailedPage:
    """A SELECT_PAGE reply as a :class:`FailedPage` (six entries per job after the head)."""
    scanned, cursor, done = _page_head(reply)
    jobs: list[FailedJob] = []
    for i in range(4, len(reply), 6):
        flags = reply[i + 5]
        data = reply[i + 4]
        jobs.append(
            FailedJob(
                id=str(reply[i]),
                finished_on=int(float(reply[i + 1] or 0)),
                name=reply[i + 2] or None,
                failed_reason=reply[i + 3] or None,
                data=data or None,
                lifo=flags[0] == "1",
                prioritized=flags[1] == "1",
                data_is_json=data_flag(flags),
                has_data=flags[2] != "-",
            )
        )
    return FailedPage(jobs=jobs, scanned=scanned, cursor=cursor, done=done)
