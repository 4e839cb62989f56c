"""The selection stage: matching failed jobs appended to the replay's snapshot, a page at a time.

The whole snapshot exists before the first move, so jobs failing again during the replay,
whatever their new score, are never picked. Each page commits on its own: the page's ids,
the breakdown counters and the selection cursor go in one MULTI/EXEC fenced by WATCH on
the progress hash, so a crash between pages loses nothing and two processes stepping one
replay share the pages instead of snapshotting them twice. A pure time window is selected
inside Redis instead (``SELECT_WINDOW``): each page is one script, which reads the cursor
from and commits to the progress hash itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from requeue.api import Breakdown, DLQReplaySpec, DLQReplayStatus, ReplayMode, ReplayPhase
from requeue.api.conditions import Reason, ReplayCondition
from requeue.api.jsonpath import JsonPath, parse_json_path
from requeue.queues import BullQueue, Cursor, FailedJob, FailedPage, ReplayKeys
from requeue.queues.adapter import text
from requeue.queues.keys import REASONS_OTHER, Progress
from requeue.replay import by_id, dedupe
from requeue.replay.bulk import oldest_first
from requeue.replay.matcher import Matcher, normalize_reason, to_ms
from requeue.replay.state import (
    SAMPLE_IDS,
    Finish,
    ReplayEvent,
    Stage,
    StepContext,
    int_field,
    mark_replayed,
)
from requeue.replay.tuning import EngineTuning

#: Redis time a selection page script may take (µs); it ends the page early after that.
SELECT_BUDGET_US = 1200
#: Failed-set members per selection page (one read-only Lua call each, ~3 µs of Redis time per
#: member it returns: a page stays around a millisecond, so other clients never wait long).
SELECT_PAGE_SIZE = 250
#: Page size when names are prefiltered in Redis (non-matching members cost ~0.5 µs each).
SELECT_PAGE_SIZE_NAMES = 1000
#: The window selection's corrupt-data check: True parses every job's data as JSON in
#: Redis (cjson, ~2.5 µs per job), False checks it only looks like JSON (first and last
#: character: catches truncated and non-JSON values; ~0.3 µs).
WINDOW_EXACT_JSON = False
#: Distinct (digit-folded) failure reasons the window selection counts; the rest are
#: grouped as "<other>" in the breakdown.
REASON_KEYS = 2000
#: How many corrupt ids the status lists.
CORRUPT_IDS = 20
#: Groups shown per breakdown.
BREAKDOWN_TOP = 20


def selection_upper(spec: DLQReplaySpec, now: datetime, clock_skew_ms: int) -> int:
    """The selection's upper bound (ms, exclusive), fixed when selection starts.

    Exact reaches a clock-skew margin past now (a worker whose clock runs ahead still
    counts as failed before the start); its snapshot keeps a job that fails again out.
    Bulk has no snapshot, only the window, so it stops a margin before now: a replayed
    job failing again, even on a worker whose clock runs behind, lands above it.
    """
    margin = -clock_skew_ms if spec.mode == ReplayMode.BULK else clock_skew_ms
    return to_ms(now) + margin


class ReplayBudgetLike(Protocol):
    """A per-job replay budget (``requeue.policy.ReplayBudget``: a QueuePolicy's auto replays).

    Selection charges each page's picked ids with :meth:`take` and snapshots only those
    allowed; a dry run asks :meth:`over_budget` and charges nothing.
    """

    async def take(self, redis: Redis, replay_uid: str, ids: Sequence[str]) -> list[str]: ...

    async def over_budget(self, redis: Redis, ids: Sequence[str]) -> set[str]: ...


def _bump(tally: dict[str, int], key: str, n: int) -> None:
    """Add ``n`` to a breakdown group, dropping a group that falls to zero."""
    tally[key] = tally.get(key, 0) + n
    if not tally[key]:
        del tally[key]


@dataclass
class _PageTally:
    """What one page adds to the snapshot and its breakdown, before it is committed."""

    done: bool
    picked: list[str] = field(default_factory=list)
    lifo: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    prioritized: int = 0
    over: int = 0
    #: dedupeBy: matching jobs left failed (a newer one has their value), per value
    duplicates: int = 0
    dup_keys: dict[str, int] = field(default_factory=dict)
    #: dedupeBy: picked jobs without a value at the path
    no_key: list[str] = field(default_factory=list)
    #: dedupeBy: values first seen in this pass, to record with the page (value -> id)
    claimed: dict[str, str] = field(default_factory=dict)

    def count(self, job: FailedJob, n: int) -> None:
        """Count a picked job in (``n`` = 1) or back out (``n`` = -1) of the breakdown."""
        self.prioritized += n if job.prioritized else 0
        _bump(self.names, job.name or "", n)
        _bump(self.reasons, normalize_reason(job.failed_reason), n)

    def pick(self, job: FailedJob) -> None:
        self.picked.append(job.id)
        if job.lifo:
            self.lifo.append(job.id)
        self.count(job, 1)

    def refuse(self, jobs: list[FailedJob], refused: set[str]) -> None:
        """Jobs over the replay budget are not snapshotted: take them back out of the tallies."""
        self.over = len(refused)
        for job in jobs:
            if job.id in refused:
                self.count(job, -1)
        self.picked = [i for i in self.picked if i not in refused]
        self.lifo = [i for i in self.lifo if i not in refused]
        self.no_key = [i for i in self.no_key if i not in refused]


def _pick(
    page: FailedPage, matcher: Matcher, room: int | None, verdicts: dedupe.PageVerdicts | None = None
) -> _PageTally:
    """The page's matching jobs, up to ``room`` (what is left of ``maxJobs``), and its corrupt ones;
    with ``verdicts`` (dedupeBy) only the kept ones, the others counted as duplicates."""
    t = _PageTally(done=page.done)
    everything = matcher.only_time_window and verdicts is None
    for job in page.jobs:
        if job.corrupt_reason is not None:
            t.corrupt.append(job.id)
            continue
        if not everything and not matcher.matches(job):
            continue
        verdict = verdicts.by_id.get(job.id) if verdicts is not None else None
        if verdict is dedupe.Verdict.DUPLICATE and verdicts is not None:
            t.duplicates += 1
            _bump(t.dup_keys, verdicts.keys[job.id], 1)
            continue
        if room is not None and len(t.picked) >= room:
            # the page overshoots maxJobs: stop right after the last picked job
            t.done = True
            break
        if verdict is dedupe.Verdict.NO_KEY:
            t.no_key.append(job.id)
        elif verdicts is not None and verdict is dedupe.Verdict.KEEP:
            key = verdicts.keys[job.id]
            if key in verdicts.claimed:
                t.claimed[key] = job.id
        t.pick(job)
    if room is not None and len(t.picked) >= room:
        t.done = True
    return t


def duplicates_note(spec: DLQReplaySpec, st: DLQReplayStatus) -> str:
    """``", 3 duplicates left failed (dedupeBy $.orderId), 1 without a value"``; "" without dedupeBy."""
    if not spec.selector.dedupe_by:
        return ""
    missing = f", {st.no_dedupe_key} without a value there" if st.no_dedupe_key else ""
    return f", {st.duplicates} duplicates left failed (dedupeBy {spec.selector.dedupe_by}){missing}"


def _top(d: dict[Any, Any]) -> dict[str, int]:
    items = sorted(((text(a) or "", int(b)) for a, b in d.items()), key=lambda kv: (-kv[1], kv[0]))
    return dict(items[:BREAKDOWN_TOP])


class Selection:
    """Selects the failed jobs of one replay into its snapshot.

    :param budget: a per-job replay budget; jobs over it are left out of the snapshot.
    """

    def __init__(
        self,
        redis: Redis,
        keys: ReplayKeys,
        *,
        replay_id: str,
        budget: ReplayBudgetLike | None,
        tuning: EngineTuning,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.replay_id = replay_id
        self.budget = budget
        self.tuning = tuning

    async def step(self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]) -> float:
        """Select pages into the snapshot until the selection ends or this step has scanned
        :attr:`EngineTuning.select_step_members`. Each page commits on its own (snapshot ids, counters and
        cursor in one MULTI fenced by WATCH), so a crash between pages loses nothing."""
        st, now = ctx.status, ctx.now
        if spec.mode == ReplayMode.BULK:
            await oldest_first(self.redis, q, Matcher(spec.selector).min_score)
        done = await self._scan(spec, q, st, p, now)
        st.progress = f"{st.replayed + st.skipped}/{st.matched}"
        scanned_total = int_field(p, Progress.SCANNED)
        st.message = f"selecting: scanned {scanned_total}, matched {st.matched}"
        if spec.selector.dedupe_by and p.get(Progress.DEDUPE_DONE) != "1":
            st.message = (
                f"selecting: finding the newest job per {spec.selector.dedupe_by}, "
                f"scanned {int_field(p, Progress.DEDUPE_SCANNED)}"
            )
        elif spec.selector.dedupe_by:
            st.message += f", {st.duplicates} duplicates left failed"
        if not done:
            return 0.0
        await self.summary(st, ctx.events)
        by_id.report(ctx)
        if spec.dry_run:
            st.replay_finished_at = now
            message = await self._dry_run_message(spec, q, st, p) + by_id.not_failed_note(st)
            raise Finish(ReplayPhase.SUCCEEDED, Reason.DRY_RUN, message)
        over_budget = int_field(p, Progress.OVER_BUDGET)
        over = f", {over_budget} over their auto-replay budget" if over_budget else ""
        ctx.event(
            "Normal",
            Reason.SELECTED,
            f"selected {st.matched} failed jobs (scanned {scanned_total}, {st.corrupt} corrupt{over}"
            f"{duplicates_note(spec, st)})",
        )
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.REPLAYING, f"replaying {st.matched} jobs")
        if st.matched == 0:
            await mark_replayed(self.redis, self.keys, now)
        return 0.0

    async def _dry_run_message(
        self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, p: dict[str, str]
    ) -> str:
        """What a dry run found; in mode Bulk, also what Bulk would do unlike Exact."""
        scanned = int_field(p, Progress.SCANNED)
        if spec.mode != ReplayMode.BULK:
            return (
                f"dry run: {st.matched} jobs would be replayed (scanned {scanned}, "
                f"{st.corrupt} corrupt{duplicates_note(spec, st)}); nothing moved"
            )
        prio, lifo = (
            int(x or 0)
            for x in await self.redis.hmget(self.keys.progress, Progress.PRIO_COUNT, Progress.LIFO_COUNT)
        )
        return (
            f"dry run (mode Bulk): {st.matched + st.corrupt} jobs would move to {q.name}'s wait "
            f"with BullMQ's moveJobsToWait (scanned {scanned}); {prio} with a priority and {lifo} "
            f"lifo would be queued as plain jobs and {st.corrupt} corrupt ones moved too "
            "(mode Exact keeps priority and lifo and leaves corrupt jobs failed); nothing moved"
        )

    async def _scan(
        self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, p: dict[str, str], now: datetime
    ) -> bool:
        """Pages until the selection ends (True) or this step scanned enough (False)."""
        matcher = Matcher(spec.selector)
        upper = int_field(p, Progress.UPPER) or selection_upper(spec, now, self.tuning.clock_skew_ms)
        page_size = SELECT_PAGE_SIZE_NAMES if matcher.name_globs else SELECT_PAGE_SIZE
        path = parse_json_path(spec.selector.dedupe_by) if spec.selector.dedupe_by else None
        with_data = spec.selector.data_match is not None or path is not None
        # A pure time window needs nothing from the client per job: it is selected inside
        # Redis (the breakdown and corrupt checks included). A replay budget must see ids.
        in_redis = (
            matcher.only_time_window
            and self.budget is None
            and spec.selector.job_ids is None
            and path is None
        )
        scanned_now = 0
        done = False
        while not done and scanned_now < self.tuning.select_step_members:
            if path is not None and p.get(Progress.DEDUPE_DONE) != "1":
                scanned_now += await self._index_page(q, p, matcher, path, upper, page_size)
                continue
            if in_redis:
                done, scanned = await self._window_page(spec, q, st, p, matcher, upper)
            else:
                done, scanned = await self._page(spec, q, st, p, matcher, upper, page_size, with_data, path)
            scanned_now += scanned
        return done

    async def _index_page(
        self, q: BullQueue, p: dict[str, str], matcher: Matcher, path: JsonPath, upper: int, page_size: int
    ) -> int:
        """One page of dedupeBy's first pass (:func:`requeue.replay.dedupe.index_page`); returns scanned."""
        page = await _scan_page(
            q,
            Cursor(p.get(Progress.DEDUPE_SCORE, ""), p.get(Progress.DEDUPE_ID, "")),
            matcher,
            upper,
            page_size,
            True,
        )
        await dedupe.index_page(self.redis, self.keys, page, matcher, path, p, upper)
        return page.scanned

    async def _window_page(
        self,
        spec: DLQReplaySpec,
        q: BullQueue,
        st: DLQReplayStatus,
        p: dict[str, str],
        matcher: Matcher,
        upper: int,
    ) -> tuple[bool, int]:
        """One page of a pure time-window selection, selected and committed inside Redis
        (``SELECT_WINDOW``: the script itself is the transaction). Returns (done, scanned)."""
        k = self.keys
        raw = await q.scripts.select_window(
            keys=[q.keys.failed, k.progress, k.snapshot, k.names, k.reasons, k.corrupt, k.lifo, k.slow],
            args=[
                q.keys.base,
                matcher.min_score,
                matcher.max_score(upper),
                self.tuning.select_window_page,
                spec.selector.max_jobs or 0,
                upper,
                CORRUPT_IDS,
                REASON_KEYS,
                "1" if WINDOW_EXACT_JSON else "0",
                SELECT_BUDGET_US,
            ],
        )
        scanned, picked, corrupt, done = (int(x) for x in raw)
        if scanned < 0:
            raise rx.WatchError("selection moved on meanwhile")
        st.matched += picked
        st.corrupt += corrupt
        p.update(
            {Progress.SCANNED: str(int_field(p, Progress.SCANNED) + scanned), Progress.UPPER: str(upper)}
        )
        return done == 1, scanned

    async def _page(
        self,
        spec: DLQReplaySpec,
        q: BullQueue,
        st: DLQReplayStatus,
        p: dict[str, str],
        matcher: Matcher,
        upper: int,
        page_size: int,
        with_data: bool,
        path: JsonPath | None = None,
    ) -> tuple[bool, int]:
        """One page into the snapshot; ``p`` is updated to what was committed. Returns (done, scanned)."""
        cursor = Cursor(p.get(Progress.SEL_SCORE, ""), p.get(Progress.SEL_ID, ""))
        if spec.selector.job_ids is not None:
            page = await by_id.id_page(q, spec.selector.job_ids, cursor)
        else:
            page = await _scan_page(q, cursor, matcher, upper, page_size, with_data)
        room = (spec.selector.max_jobs - st.matched) if spec.selector.max_jobs else None
        verdicts = await dedupe.verdicts(self.redis, self.keys, page, matcher, path) if path else None
        t = _pick(page, matcher, room, verdicts)
        if self.budget is not None and t.picked:
            await self._charge_budget(spec, page, t)
        await self._commit_page(st, p, page, t, upper)
        st.matched += len(t.picked)
        st.corrupt += len(t.corrupt)
        st.over_budget += t.over
        st.not_failed += len(page.not_failed)
        st.duplicates += t.duplicates
        st.no_dedupe_key += len(t.no_key)
        p.update(
            {
                Progress.SEL_SCORE: page.cursor.score,
                Progress.SEL_ID: page.cursor.job_id,
                Progress.UPPER: str(upper),
                Progress.SCANNED: str(int_field(p, Progress.SCANNED) + page.scanned),
                Progress.LIFO_COUNT: str(int_field(p, Progress.LIFO_COUNT) + len(t.lifo)),
                Progress.PRIO_COUNT: str(int_field(p, Progress.PRIO_COUNT) + t.prioritized),
                Progress.OVER_BUDGET: str(int_field(p, Progress.OVER_BUDGET) + t.over),
                Progress.NOT_FAILED: str(int_field(p, Progress.NOT_FAILED) + len(page.not_failed)),
                Progress.DUPLICATES: str(int_field(p, Progress.DUPLICATES) + t.duplicates),
                Progress.NO_DEDUPE_KEY: str(int_field(p, Progress.NO_DEDUPE_KEY) + len(t.no_key)),
            }
        )
        return t.done, page.scanned

    async def _charge_budget(self, spec: DLQReplaySpec, page: FailedPage, t: _PageTally) -> None:
        """Charge the picked ids to the replay budget (a dry run only asks, charging nothing)."""
        assert self.budget is not None
        if spec.dry_run:
            refused = await self.budget.over_budget(self.redis, t.picked)
        else:
            refused = set(t.picked) - set(await self.budget.take(self.redis, self.replay_id, t.picked))
        if refused:
            t.refuse(page.jobs, refused)

    async def _commit_page(
        self, st: DLQReplayStatus, p: dict[str, str], page: FailedPage, t: _PageTally, upper: int
    ) -> None:
        """The page's ids, counters and cursor in one MULTI, WATCHing the progress hash: a page
        someone else committed meanwhile aborts this one (the step reads again)."""
        slow_ids = set(t.lifo) | {job.id for job in page.jobs if job.prioritized}
        slow = [(st.matched + i, job_id) for i, job_id in enumerate(t.picked) if job_id in slow_ids]
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(k.progress)
            sel_id, stage = await pipe.hmget(k.progress, [Progress.SEL_ID, Progress.STAGE])
            if (text(sel_id) or "") != (p.get(Progress.SEL_ID) or "") or text(stage) != Stage.SELECTING:
                raise rx.WatchError("selection moved on meanwhile")
            dup_keys = await dedupe.duplicate_counts(pipe, k, t.dup_keys)
            pipe.multi()  # type: ignore[no-untyped-call]
            self._snapshot_writes(pipe, t, slow)
            self._dedupe_writes(pipe, t, dup_keys)
            self._progress_writes(pipe, page, t, upper)
            by_id.not_failed_writes(pipe, k, page)
            await pipe.execute()

    def _snapshot_writes(self, pipe: Pipeline, t: _PageTally, slow: list[tuple[int, str]]) -> None:
        k = self.keys
        if t.picked:
            pipe.rpush(k.snapshot, *t.picked)
        if t.lifo:
            pipe.sadd(k.lifo, *t.lifo)
        if slow:
            pipe.zadd(k.slow, {job_id: pos for pos, job_id in slow})
        for name, n in t.names.items():
            pipe.hincrby(k.names, name, n)
        for reason, n in t.reasons.items():
            pipe.hincrby(k.reasons, reason, n)
        if t.corrupt:
            pipe.rpush(k.corrupt, *t.corrupt)
            pipe.ltrim(k.corrupt, 0, CORRUPT_IDS - 1)
            pipe.hincrby(k.progress, Progress.CORRUPT, len(t.corrupt))

    def _dedupe_writes(self, pipe: Pipeline, t: _PageTally, dup_keys: dict[str, int]) -> None:
        """dedupeBy's part of a page: values kept for the first time in this pass, duplicates counted."""
        k = self.keys
        if t.claimed:
            pipe.hset(k.dedupe, mapping=t.claimed)  # type: ignore[arg-type]
        if t.duplicates:
            pipe.hincrby(k.progress, Progress.DUPLICATES, t.duplicates)
        for key, n in dup_keys.items():
            pipe.hincrby(k.duplicates, key, n)
        if t.no_key:
            pipe.hincrby(k.progress, Progress.NO_DEDUPE_KEY, len(t.no_key))

    def _progress_writes(self, pipe: Pipeline, page: FailedPage, t: _PageTally, upper: int) -> None:
        k = self.keys
        pipe.hincrby(k.progress, Progress.MATCHED, len(t.picked))
        if t.over:
            pipe.hincrby(k.progress, Progress.OVER_BUDGET, t.over)
        pipe.hincrby(k.progress, Progress.SCANNED, page.scanned)
        pipe.hincrby(k.progress, Progress.LIFO_COUNT, len(t.lifo))
        # a replay selected before this field existed has none: the batch then never
        # takes the moveJobsToWait fast path (it needs to know no job has a priority)
        pipe.hincrby(k.progress, Progress.PRIO_COUNT, t.prioritized)
        pipe.hset(
            k.progress,
            mapping={
                Progress.SEL_SCORE: page.cursor.score,
                Progress.SEL_ID: page.cursor.job_id,
                Progress.UPPER: str(upper),
            },
        )
        if t.done:
            pipe.hset(k.progress, Progress.STAGE, Stage.REPLAYING)

    async def summary(self, st: DLQReplayStatus, events: list[ReplayEvent]) -> None:
        """The status's breakdown, sample and corrupt ids, read back from what selection counted."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.names)
            pipe.hgetall(k.reasons)
            pipe.lrange(k.snapshot, 0, SAMPLE_IDS - 1)
            pipe.lrange(k.corrupt, 0, CORRUPT_IDS - 1)
            pipe.hgetall(k.duplicates)
            names, reasons, sample, corrupt, duplicates = await pipe.execute()
        # The window selection counts reasons with digits folded in Redis; normalising is
        # idempotent and treats every digit alike, so normalising again here gives the
        # same groups either way.
        by_reason: dict[str, int] = {}
        for raw_reason, n in reasons.items():
            reason = text(raw_reason) or ""
            group = "<other>" if reason == REASONS_OTHER else normalize_reason(reason)
            by_reason[group] = by_reason.get(group, 0) + int(n)
        st.breakdown = Breakdown(
            by_name=_top(names), by_reason=_top(by_reason), duplicates_by_key=_top(duplicates) or None
        )
        st.sample_ids = [text(x) or "" for x in sample]
        st.corrupt_ids = [text(x) or "" for x in corrupt]
        await by_id.read_not_failed(self.redis, k, st)
        if st.corrupt:
            events.append(
                ReplayEvent(
                    "Warning",
                    Reason.CORRUPT_JOBS,
                    f"{st.corrupt} failed jobs are unreadable and will not be replayed "
                    f"(first: {', '.join(st.corrupt_ids[:5])})",
                )
            )


async def _scan_page(
    q: BullQueue, cursor: Cursor, matcher: Matcher, upper: int, count: int, with_data: bool
) -> FailedPage:
    """One bounded page of the failed set after ``cursor`` in the selector's window, pre-filtered
    by job name inside Redis: what both dedupeBy's first pass and the selection read."""
    return await q.select_page(
        cursor,
        min_score=matcher.min_score,
        max_score=matcher.max_score(upper),
        name_globs=matcher.name_globs,
        count=count,
        with_data=with_data,
        budget_us=SELECT_BUDGET_US,
    )
