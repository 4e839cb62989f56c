"""The replay engine: select -> snapshot -> replay -> verify, as a step function.

One call of :meth:`ReplayEngine.step` does one bounded piece of work (a gate
check, one page of selection, one batch of moves, one chunk of verification)
and returns the new status, the delay until the next step and the events worth
telling a person. The operator (a kopf daemon) and the CLI (:meth:`run`) drive
the same state machine; everything needed to continue lives in ``.status`` plus
Redis, so a process killed at any line resumes without losing or repeating work.

Restart safety, in short (keys in :class:`requeue.queues.ReplayKeys`):

* Selection appends matching ids to the replay's *snapshot* list one page at a
  time; the page's ids, the breakdown counters and the selection cursor are
  written in one MULTI/EXEC, fenced by WATCH on the progress hash. A pure time
  window is selected inside Redis instead (``SELECT_WINDOW``): each page is one
  script, which reads the cursor from and commits to the progress hash itself.
  (:mod:`requeue.replay.selection`)
* The whole snapshot exists before the first move (stage ``replaying``), so jobs
  failing again during the replay, whatever their new score, are never picked.
* Replay walks the snapshot with a cursor. One batch is ONE MULTI/EXEC: a
  bookkeeping script of ours that predicts BullMQ's answer for each id (hash
  exists? in the failed set?) and advances cursor and counters, followed by
  BullMQ's ``reprocessJob`` for each id. Counters and moves commit together, so
  the status rebuilt from Redis after a crash is exact. ``reprocessJob`` refuses
  a job no longer in the failed set, so even a repeated batch moves nothing twice.
  Runs of ids at the head of the failed set without priority or lifo go through
  BullMQ's ``moveJobsToWait`` instead, each chunk guarded in the same write by a
  script that aborts the chunk's own EXEC unless the head, lease, cursor and
  paused flag are still what the plan saw (see
  :meth:`requeue.replay.moves.Mover.reprocess_batch`).
* Jobs failing again later are not replayed again: only the snapshot is replayed.
* A per-queue lease (``SET PX``, fenced by the replay id and a per-process driver
  token, and checked by every batch) keeps two replays off one queue, and two
  processes off one replay (:mod:`.lease`), so the rate holds.

The pieces live in their own modules: :mod:`.gating`, :mod:`.selection`, :mod:`.moves`
(the writes that keep exactly-once), :mod:`.rate` (the pace), :mod:`.verify`, and
:mod:`.state` (what they share). This module is the state machine that drives them, with
the lease and the end of a replay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis import exceptions as rx
from redis.asyncio import Redis

from requeue.api import (
    DLQReplaySpec,
    DLQReplayStatus,
    ReplayMode,
    ReplayPhase,
    find_condition,
)
from requeue.api.base import ConditionStatus
from requeue.api.conditions import Reason, ReplayCondition, stored_reason
from requeue.clock import Clock, utcnow
from requeue.errors import (
    AuthFailed,
    QueueLocked,
    QueueNotFound,
    RedisOutOfMemory,
    RedisUnreachable,
)
from requeue.metrics import REPLAY_BATCH_SECONDS
from requeue.queues import BullQueue, ReplayKeys, map_redis_error
from requeue.queues.adapter import text
from requeue.queues.cluster import slot_tag
from requeue.queues.keys import REPLAY_RETENTION_SECONDS, Progress
from requeue.replay import ending, moves
from requeue.replay.bulk import Bulk
from requeue.replay.gating import GateRunnerLike, Gating
from requeue.replay.lease import Driver, LeaseHolder, this_process
from requeue.replay.matcher import to_ms
from requeue.replay.moves import Mover
from requeue.replay.observed import ReplaySeries
from requeue.replay.rate import TokenBucket
from requeue.replay.selection import ReplayBudgetLike, Selection, selection_upper
from requeue.replay.smoke import SmokeTesting
from requeue.replay.state import (
    SELECTION_FIELD,
    Finish,
    ReplayEvent,
    Stage,
    StepContext,
    StepResult,
    StoredProgress,
    from_ms,
    int_field,
    mark_replayed,
    selection_json,
)
from requeue.replay.tuning import DEFAULT_TUNING, EngineTuning
from requeue.replay.verify import Verification

logger = logging.getLogger(__name__)

#: Lease time to live; renewed every step (a step lasts one batch, at most
#: ~:attr:`EngineTuning.step_budget_s` more).
LEASE_TTL_MS = 60_000
#: Delay while another replay holds the queue.
LOCKED_DELAY = 5.0
#: Delay while the queue's backlog is above ``rate.maxWaiting``.
THROTTLE_DELAY = 1.0
#: Delay while suspended (the controller steps again when the spec changes).
SUSPENDED_DELAY = 60.0


#: Ready reasons of a Redis outage the engine reports (and announces the end of).
_OUTAGE_REASONS = (RedisUnreachable.reason, RedisOutOfMemory.reason)


class ReplayEngine:
    """Drives one DLQReplay over one Redis.

    :param redis: a ``redis.asyncio.Redis`` (e.g. from :func:`requeue.queues.connect`).
    :param replay_id: the resource's UID; names the snapshot and progress keys.
    :param owner: ``namespace/name``, shown to others (e.g. as the lease holder).
    :param gates: the resource's gates, or None for none.
    :param clock: the current time (tests inject theirs).
    :param redis_failure_bound: consecutive Redis errors before they are surfaced
        (condition + Warning event; :meth:`run` raises :class:`RedisUnreachable`).
    :param backoff: first retry delay after a Redis error (doubles, capped at 30 s).
    :param budget: a per-job replay budget (child DLQReplays of a QueuePolicy); jobs over it
        are left out of the snapshot and counted in the progress field ``over_budget``.
    :param driver: who this engine drives as; defaults to this process, so engines of one
        process share the lease of a replay and other processes wait for it.
    :param tuning: pace and chunk sizes (tests pass smaller ones); the defaults are production's.
    :param series: the labels the jobs it moves are counted under (an auto replay's: its policy's).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        replay_id: str,
        owner: str,
        gates: GateRunnerLike | None = None,
        clock: Clock = utcnow,
        redis_failure_bound: int = 5,
        backoff: float = 0.5,
        budget: ReplayBudgetLike | None = None,
        driver: Driver | None = None,
        tuning: EngineTuning = DEFAULT_TUNING,
        series: ReplaySeries | None = None,
    ) -> None:
        self.redis = redis
        self.driver = driver or this_process()
        self.budget = budget
        self.replay_id = replay_id
        self.owner = owner
        self.gates = gates
        self.clock = clock
        self.tuning = tuning
        self.keys = ReplayKeys(replay_id, slot_tag(redis))  # on a cluster: in the queue's slot
        self.redis_failure_bound = redis_failure_bound
        self.backoff = backoff
        self.redis_failures = 0
        self._queues: dict[tuple[str, str], BullQueue] = {}
        self._bucket = TokenBucket(clock)
        self._selection = Selection(redis, self.keys, replay_id=replay_id, budget=budget, tuning=tuning)
        self._mover = Mover(
            redis,
            self.keys,
            lease_value=self._lease_value,
            owner=owner,
            clock=clock,
            move_chunk=tuning.move_chunk,
        )
        self._bulk = Bulk(redis, self.keys, lease_value=self._lease_value, chunk=tuning.bulk_chunk)
        self._verification = Verification(redis, self.keys)
        #: ``spec.verify.smokeTest``; its ``secrets`` (and ``policy``) are set by the driver.
        self.smoke = SmokeTesting(redis, self.keys)
        self._gating = Gating(redis, self.keys)
        namespace, _, name = owner.rpartition("/")
        #: The labels of ``requeue_replay_jobs_total`` (default: a replay made by hand, named by ``owner``).
        self.series = series or ReplaySeries.of(namespace, name or owner)

    # -- public API ----------------------------------------------------------

    async def step(self, spec: DLQReplaySpec, status: DLQReplayStatus, *, generation: int = 0) -> StepResult:
        """Do one bounded piece of work and return the new status, the next delay and events."""
        st = status.model_copy(deep=True)
        st.observed_generation = generation
        if st.phase.finished:
            return StepResult(st, 0.0, [])
        ctx = StepContext(st, self.clock(), generation)
        # Read before _step: a successful step sets Ready=True itself, which hid the recovery (the
        # Warning RedisUnreachable of a mid-run outage then never got its RedisReachable). Only an
        # outage this engine reported: after a failed connect the caller posts its own "Recovered".
        was = find_condition(st.conditions, ReplayCondition.READY)
        reported_outage = self.redis_failures > 0 and was is not None and was.reason in _OUTAGE_REASONS
        try:
            delay = await self._step(spec, ctx)
        except Finish as fin:
            await self._finish(spec, ctx, fin)
            delay = 0.0
        except rx.WatchError:
            # someone else wrote this replay's progress (or the lease) meanwhile: re-read and retry
            delay = 0.0
        except (AuthFailed, QueueNotFound) as exc:
            ctx.events.append(ending.fail(st, exc.reason, exc.message, generation=generation, now=ctx.now))
            delay = 0.0
        except (rx.RedisError, OSError) as exc:
            return self._redis_failed(spec, ctx, exc)
        self.redis_failures = 0
        if reported_outage:
            ready = find_condition(st.conditions, ReplayCondition.READY)
            if ready is not None and ready.reason in _OUTAGE_REASONS:
                ctx.condition(ReplayCondition.READY, True, Reason.READY, "Redis reachable again")
            ctx.event("Normal", Reason.REDIS_REACHABLE, "Redis answers again")
        return StepResult(st, delay, ctx.events)

    async def stored_progress(self) -> StoredProgress | None:
        """This replay's progress as stored in Redis, or None when it never started."""
        p = await self._progress()
        if not p:
            return None
        return StoredProgress(
            stage=p.get(Progress.STAGE, ""),
            outcome=p.get(Progress.OUTCOME, ""),
            replayed=int_field(p, Progress.REPLAYED),
            matched=int_field(p, Progress.MATCHED),
        )

    async def cancel(self, spec: DLQReplaySpec, status: DLQReplayStatus) -> StepResult:
        """Clean up after deletion: resume the queue if this replay paused it, release the lease,
        delete the snapshot and progress. Idempotent; a finished phase is kept."""
        st = status.model_copy(deep=True)
        ctx = StepContext(st, self.clock(), st.observed_generation)
        q = self._queue(spec, spec.queue)
        await self._gating.resume_if_ours(q, ctx)
        await self._release_lease(q)
        await self.redis.delete(*self.keys.all())
        if not st.phase.finished:
            st.phase = ReplayPhase.CANCELLED
            st.completed_at = ctx.now
            st.message = "cancelled; nothing more will be moved"
            ctx.condition(ReplayCondition.PROGRESSING, False, Reason.CANCELLED, st.message)
            ctx.condition(ReplayCondition.SUCCEEDED, False, Reason.CANCELLED, st.message)
            ending.release_ready(st, ctx.generation, ctx.now)
            ctx.event("Normal", Reason.CANCELLED, st.message)
        return StepResult(st, 0.0, ctx.events)

    async def run(
        self,
        spec: DLQReplaySpec,
        status: DLQReplayStatus | None = None,
        *,
        on_step: Callable[[StepResult], Awaitable[None]] | None = None,
    ) -> DLQReplayStatus:
        """Step until the replay finishes (or is suspended); the CLI's loop.

        :raises RedisUnreachable: after ``redis_failure_bound`` consecutive Redis errors.
        """
        st = status or DLQReplayStatus()
        while True:
            result = await self.step(spec, st)
            st = result.status
            if on_step is not None:
                await on_step(result)
            if st.phase.finished or st.phase == ReplayPhase.SUSPENDED:
                return st
            if self.redis_failures >= self.redis_failure_bound:
                ready = find_condition(st.conditions, ReplayCondition.READY)
                raise RedisUnreachable(
                    ready.message if ready else "Redis unavailable", queue=spec.queue, replay=self.owner
                )
            if result.delay > 0:
                await asyncio.sleep(result.delay)

    # -- the state machine ---------------------------------------------------

    async def _step(self, spec: DLQReplaySpec, ctx: StepContext) -> float:
        st = ctx.status
        q = self._queue(spec, spec.queue)
        p = await self._progress()
        self._check_not_lost(st, p)
        self._apply_progress(st, p)

        if spec.cancel:
            return await self._cancel_requested(spec, q, ctx, p)
        if spec.suspend:
            return await self._suspend(q, ctx)
        if st.phase == ReplayPhase.SUSPENDED:
            st.phase = ReplayPhase.PENDING
            ctx.event("Normal", Reason.RESUMED, "spec.suspend is false again; continuing")

        if not spec.dry_run:
            holder = await self._acquire_lease(q)
            if holder is not None:
                return self._locked(ctx, holder)

        stage = p.get(Progress.STAGE) or ""
        if not stage:
            return await self._begin(spec, q, ctx)
        ready = find_condition(st.conditions, ReplayCondition.READY)
        if ready is None or ready.status != ConditionStatus.TRUE:
            self._ready(spec, ctx)
        return await self._stage_step(stage, spec, q, ctx, p)

    @staticmethod
    def _check_not_lost(st: DLQReplayStatus, p: dict[str, str]) -> None:
        """A replay the status says started, with nothing in Redis, must not start over."""
        started = st.phase in (ReplayPhase.REPLAYING, ReplayPhase.VERIFYING)
        if not p and (st.matched or st.replayed or started):
            raise Finish(
                ReplayPhase.FAILED,
                Reason.SNAPSHOT_LOST,
                "the replay's snapshot and progress are gone from Redis (flushed, restarted "
                "without persistence, or expired); not starting over, which could replay "
                "jobs twice",
            )

    async def _stage_step(
        self, stage: str, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float:
        """One step of the stage Redis records."""
        if stage == Stage.GATES:
            return await self._gates_stage(spec, q, ctx, p)
        if stage == Stage.SELECTING:
            ctx.status.phase = ReplayPhase.PENDING if spec.dry_run else ReplayPhase.REPLAYING
            if spec.mode == ReplayMode.BULK and not spec.dry_run:
                return await self._bulk_selected(spec, q, ctx, p)
            return await self._selection.step(spec, q, ctx, p)
        if stage == Stage.REPLAYING:
            return await self._replay(spec, q, ctx, p)
        if stage == Stage.VERIFYING:
            ctx.status.phase = ReplayPhase.VERIFYING
            smoke = self.smoke.wanted(spec)
            if smoke is not None and self.smoke.started(p):
                return await self.smoke.step(spec, smoke, ctx, p)
            watched = self._queue(spec, spec.target_queue or spec.queue)
            try:
                return await self._verification.step(spec, watched, ctx, p)
            except Finish as fin:  # verification passed: the smoke test decides
                if smoke is None or fin.phase != ReplayPhase.SUCCEEDED:
                    raise
                return await self.smoke.begin(ctx, p, fin.message)
        # Stage.DONE with a status that did not record it (crash between the two writes)
        outcome = p.get(Progress.OUTCOME) or ReplayPhase.SUCCEEDED.value
        raise Finish(
            ReplayPhase(outcome),
            stored_reason(p.get(Progress.OUTCOME_REASON), Reason.SUCCEEDED),
            p.get(Progress.OUTCOME_MESSAGE) or "finished",
        )

    async def _begin(self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext) -> float:
        """The first step: refuse a queue BullMQ has no key for (a typo would otherwise "succeed
        with 0 of 0"; nothing is recorded, so a rerun with the name fixed starts afresh), remember
        whether someone else had paused the queue (we never resume a queue we did not pause) and
        enter the first stage. ``targetQueue`` may be new: it is not checked."""
        try:
            await q.require_exists()
        except QueueNotFound:
            if not spec.dry_run:
                await self._release_lease(q)
            raise
        paused = await q.is_paused()
        await self.redis.hset(
            self.keys.progress,
            mapping={
                Progress.STAGE: Stage.SELECTING if spec.dry_run else Stage.GATES,
                Progress.PAUSED_BEFORE: "1" if paused else "0",
                Progress.QUEUE: spec.queue,
                Progress.OWNER: self.owner,
                # what the snapshot is taken of: a CLI rerun whose manifest selects otherwise is refused
                SELECTION_FIELD: selection_json(spec),
                # every selected job that needs reprocessJob gets its snapshot position in
                # ReplayKeys.slow (a replay selected by an older requeue has not: see Mover.plan)
                Progress.SLOW_POS: "1",
            },
        )
        self._ready(spec, ctx)
        ctx.condition(ReplayCondition.SUCCEEDED, ConditionStatus.UNKNOWN, Reason.IN_PROGRESS, "")
        if paused:
            ctx.condition(
                ReplayCondition.QUEUE_PAUSED,
                True,
                Reason.PAUSED_BY_OTHERS,
                "the queue was paused before this replay; it stays paused (replayed jobs "
                "wait until someone resumes it)",
            )
            ctx.event(
                "Warning",
                Reason.QUEUE_PAUSED_BY_OTHERS,
                "queue is paused by someone else; replayed jobs will wait",
            )
        return 0.0

    async def _gates_stage(
        self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float:
        """Wait for the gates; once they pass, fix the selection's upper bound and start selecting."""
        st, now = ctx.status, ctx.now
        st.phase = ReplayPhase.WAITING_FOR_GATES
        wait = await self._gating.check(self.gates, spec, q, ctx, p)
        if wait is not None:
            return wait
        upper = selection_upper(spec, now, self.tuning.clock_skew_ms)
        await self.redis.hset(
            self.keys.progress,
            mapping={
                Progress.STAGE: Stage.SELECTING,
                Progress.UPPER: str(upper),
                Progress.STARTED_MS: str(to_ms(now)),
            },
        )
        st.started_at = now
        st.phase = ReplayPhase.REPLAYING
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.SELECTING, "selecting matching failed jobs")
        ctx.event("Normal", Reason.REPLAY_STARTED, f"selecting failed jobs of queue {spec.queue}")
        return 0.0

    async def _bulk_selected(
        self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float:
        """Mode Bulk's selection: the window counted and its bounds fixed, no job read."""
        st = ctx.status
        await self._bulk.select(spec, q, st, p)
        ctx.event(
            "Normal",
            Reason.SELECTED,
            f"mode Bulk: {st.matched} failed jobs in the window, to move with "
            "BullMQ's moveJobsToWait (priority, lifo and corrupt checks skipped)",
        )
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.REPLAYING, f"replaying {st.matched} jobs")
        if st.matched == 0:
            await mark_replayed(self.redis, self.keys, ctx.now)
        return 0.0

    # -- progress ------------------------------------------------------------

    async def _progress(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.progress)
        return {text(k) or "": text(v) or "" for k, v in raw.items()}

    def _apply_progress(self, st: DLQReplayStatus, p: dict[str, str]) -> None:
        """Counters come from Redis, where they change atomically with the moves."""
        if not p:
            return
        st.matched = int_field(p, Progress.MATCHED)
        st.replayed = int_field(p, Progress.REPLAYED)
        st.skipped = int_field(p, Progress.SKIPPED) + int_field(p, Progress.MISSING)
        st.corrupt = int_field(p, Progress.CORRUPT)
        st.over_budget = int_field(p, Progress.OVER_BUDGET)
        st.not_failed = int_field(p, Progress.NOT_FAILED)
        st.duplicates = int_field(p, Progress.DUPLICATES)
        st.no_dedupe_key = int_field(p, Progress.NO_DEDUPE_KEY)
        if Progress.VERIFIED_COMPLETED in p:
            st.completed = int_field(p, Progress.VERIFIED_COMPLETED)
            st.failed_again = int_field(p, Progress.VERIFIED_FAILED)
        st.queue_paused_by_replay = p.get(Progress.WE_PAUSED) == "1"
        if p.get(Progress.STARTED_MS) and st.started_at is None:
            st.started_at = from_ms(int_field(p, Progress.STARTED_MS))
        if p.get(Progress.REPLAYED_MS) and st.replay_finished_at is None:
            st.replay_finished_at = from_ms(int_field(p, Progress.REPLAYED_MS))
        if Progress.MATCHED in p:  # before selection "0/0" would read as "nothing to replay"
            st.progress = f"{st.replayed + st.skipped}/{st.matched}"

    # -- lease ---------------------------------------------------------------

    @property
    def _lease_value(self) -> str:
        return self.driver.lease_value(self.replay_id, self.owner)

    async def _acquire_lease(self, q: BullQueue) -> LeaseHolder | None:
        """None when we hold the queue's lease now, else who does."""
        value = text(
            await q.scripts.acquire_lease(keys=[q.keys.lease], args=[self._lease_value, LEASE_TTL_MS])
        )
        if not value:
            return None
        holder = LeaseHolder.parse(value)
        if holder.replay_id != self.replay_id or not holder.died_here(self.driver):
            return holder
        # an earlier process of ours, killed on this host: take over now, not after the TTL
        value = text(
            await q.scripts.acquire_lease(
                keys=[q.keys.lease], args=[self._lease_value, LEASE_TTL_MS, holder.value]
            )
        )
        if not value:
            logger.info("replay %s: took over the lease of %s, which runs no more", self.owner, holder.where)
            return None
        return LeaseHolder.parse(value)

    async def _release_lease(self, q: BullQueue) -> None:
        await q.scripts.release_lease(keys=[q.keys.lease], args=[self._lease_value])

    def _locked(self, ctx: StepContext, holder: LeaseHolder) -> float:
        st = ctx.status
        msg = holder.describe(replay_id=self.replay_id)
        before = find_condition(st.conditions, ReplayCondition.READY)
        if before is None or before.reason != QueueLocked.reason:
            ctx.event("Warning", QueueLocked.reason, msg)
        ctx.condition(ReplayCondition.READY, False, QueueLocked.reason, msg)
        if st.phase == ReplayPhase.REPLAYING:
            st.phase = ReplayPhase.WAITING_FOR_GATES
        st.message = msg
        return LOCKED_DELAY

    async def _suspend(self, q: BullQueue, ctx: StepContext) -> float:
        st = ctx.status
        holder = await self._acquire_lease(q)
        if holder is not None and holder.replay_id == self.replay_id:
            # another process drives this replay: the queue it paused is its to resume
            st.phase = ReplayPhase.SUSPENDED
            st.message = "suspended here; " + holder.describe(replay_id=self.replay_id)
            return SUSPENDED_DELAY
        await self._gating.resume_if_ours(q, ctx)
        await self._release_lease(q)
        if st.phase != ReplayPhase.SUSPENDED:
            ctx.event("Normal", Reason.SUSPENDED, "spec.suspend is true; stopped")
        st.phase = ReplayPhase.SUSPENDED
        st.message = "suspended"
        ctx.condition(ReplayCondition.PROGRESSING, False, Reason.SUSPENDED, "spec.suspend is true")
        return SUSPENDED_DELAY

    async def _cancel_requested(
        self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float:
        """``spec.cancel``: end as Cancelled at this step boundary (a step moves whole batches), through
        the one ending every replay takes (:meth:`_finish`: the queue resumed if this replay paused it,
        the lease released, the outcome stored). Another process driving this replay reads the same
        spec and stops at its own next step: wait for it rather than end the replay under its feet."""
        st = ctx.status
        if not spec.dry_run:
            holder = await self._acquire_lease(q)
            if holder is not None and holder.replay_id == self.replay_id:
                st.message = "cancelling; " + holder.describe(replay_id=self.replay_id)
                return LOCKED_DELAY
        raise Finish(
            ReplayPhase.CANCELLED, Reason.CANCELLED, cancelled_message(st, p.get(Progress.STAGE) or "")
        )

    # -- replay --------------------------------------------------------------

    async def _replay(self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]) -> float:
        st = ctx.status
        cursor = int_field(p, Progress.CURSOR)
        remaining = st.matched - cursor
        if remaining <= 0 and not (spec.target_queue and int_field(p, Progress.COPIED_UPTO) > cursor):
            await mark_replayed(self.redis, self.keys, ctx.now)
            return await self._replayed(spec, ctx)
        held = await self._gating.held_during_replay(self.gates, spec, q, ctx, p)
        if held is not None:
            return held
        st.phase = ReplayPhase.REPLAYING
        started = time.monotonic()
        while True:
            wait = await self._batch(spec, q, ctx, p)
            if wait is not None:
                return wait
            if st.replayed + st.skipped >= st.matched:
                return await self._replayed(spec, ctx)
            delay = self._bucket.next_delay(spec.rate)
            if delay > 0 or time.monotonic() - started >= self.tuning.step_budget_s:
                return delay
            ctx = ctx.at(self.clock())

    async def _batch(
        self, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float | None:
        """One batch, as far as ``maxWaiting`` and the token bucket allow; the delay before the
        next try when they allow none, else None (``p``'s cursor follows the moves)."""
        st = ctx.status
        want = min(spec.rate.batch_size, max(st.matched - int_field(p, Progress.CURSOR), 1))
        if spec.rate.max_waiting is not None:
            backlog = await q.backlog()
            if backlog >= spec.rate.max_waiting:
                msg = f"holding: {backlog} jobs waiting, maxWaiting is {spec.rate.max_waiting}"
                ctx.condition(ReplayCondition.PROGRESSING, True, Reason.THROTTLED, msg)
                st.message = msg
                return THROTTLE_DELAY
            want = min(want, spec.rate.max_waiting - backlog)
        n, wait = self._bucket.take(spec.rate, want, ctx.now)
        if n == 0:
            return wait
        moved, skipped = await self._move(spec, q, n, p)
        p[Progress.CURSOR] = str(int_field(p, Progress.CURSOR) + moved + skipped)
        st.replayed += moved
        st.skipped += skipped
        st.progress = f"{st.replayed + st.skipped}/{st.matched}"
        st.message = f"replaying: {st.progress}"
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.REPLAYING, st.message)
        return None

    async def _move(self, spec: DLQReplaySpec, q: BullQueue, n: int, p: dict[str, str]) -> tuple[int, int]:
        """One batch of up to ``n`` jobs, timed and counted in the metrics.
        Returns (replayed, skipped: no longer failed or gone)."""
        started = time.perf_counter()
        if spec.target_queue:
            target = self._queue(spec, spec.target_queue)
            moved, skipped, missing = await self._mover.copy_batch(spec, q, target, n)
        elif spec.mode == ReplayMode.BULK:
            moved, skipped, missing = await self._bulk.move(spec, q, n, p, self.clock())
        else:
            moved, skipped, missing = await self._mover.reprocess_batch(spec, q, n, p)
        REPLAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        for outcome, count in (("replayed", moved), ("skipped", skipped + missing)):
            if count:
                self.series.count(spec.queue, outcome, count)
        return moved, skipped + missing

    async def _replayed(self, spec: DLQReplaySpec, ctx: StepContext) -> float:
        st = ctx.status
        st.replay_finished_at = st.replay_finished_at or ctx.now
        msg = f"moved {st.replayed} of {st.matched} selected jobs ({st.skipped} no longer failed)"
        ctx.event("Normal", Reason.REPLAY_FINISHED, msg)
        if spec.verify is None:
            raise Finish(ReplayPhase.SUCCEEDED, Reason.SUCCEEDED, msg)
        st.phase = ReplayPhase.VERIFYING
        st.message = f"{msg}; verifying for {spec.verify.window}"
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.VERIFYING, st.message)
        return 0.0

    # -- the end -------------------------------------------------------------

    async def _finish(self, spec: DLQReplaySpec, ctx: StepContext, fin: Finish) -> None:
        st = ctx.status
        q = self._queue(spec, spec.queue)
        await self._gating.resume_if_ours(q, ctx)
        if not spec.dry_run:
            await self._release_lease(q)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.progress,
                mapping={
                    Progress.STAGE: Stage.DONE,
                    # set by the first step already, unless a cancel came before it
                    Progress.QUEUE: spec.queue,
                    Progress.OWNER: self.owner,
                    Progress.OUTCOME: fin.phase.value,
                    Progress.OUTCOME_REASON: fin.reason,
                    Progress.OUTCOME_MESSAGE: fin.message,
                    # after the last move (``ctx.now`` is the step's start): the replay's own time span
                    Progress.FINISHED_MS: str(to_ms(self.clock())),
                },
            )
            for key in self.keys.all():
                pipe.expire(key, REPLAY_RETENTION_SECONDS)
            await pipe.execute()
        if st.breakdown is None and st.matched and spec.mode != ReplayMode.BULK:  # Bulk has none
            await self._selection.summary(st, [])
        ctx.events.append(
            ending.end(st, fin.phase, fin.reason, fin.message, generation=ctx.generation, now=ctx.now)
        )

    @staticmethod
    def _ready(spec: DLQReplaySpec, ctx: StepContext) -> None:
        """Ready=True while the replay runs; a dry run takes no lease, so it does not claim one."""
        held = "" if spec.dry_run else ", queue lease held"
        ctx.condition(ReplayCondition.READY, True, Reason.READY, f"Redis reachable{held}")

    def _redis_failed(self, spec: DLQReplaySpec, ctx: StepContext, exc: BaseException) -> StepResult:
        st = ctx.status
        err = map_redis_error(exc, queue=spec.queue, replay=self.owner)
        if isinstance(err, AuthFailed):
            ctx.events.append(
                ending.fail(st, err.reason, err.message, generation=ctx.generation, now=ctx.now)
            )
            return StepResult(st, 0.0, ctx.events)
        self.redis_failures += 1
        delay = min(30.0, self.backoff * 2 ** (self.redis_failures - 1))
        logger.info("replay %s: Redis error %d: %s", self.owner, self.redis_failures, err.message)
        if self.redis_failures >= self.redis_failure_bound:
            msg = f"{err.message}; {self.redis_failures} attempts in a row, retrying in {delay:.1f}s"
            if self.redis_failures == self.redis_failure_bound:
                ctx.event("Warning", err.reason, msg)
            ctx.condition(ReplayCondition.READY, False, err.reason, msg)
            st.message = msg
        return StepResult(st, delay, ctx.events)

    # -- helpers -------------------------------------------------------------

    def _queue(self, spec: DLQReplaySpec, name: str) -> BullQueue:
        key = (spec.prefix, name)
        if key not in self._queues:
            scripts = next(iter(self._queues.values())).scripts if self._queues else None
            self._queues[key] = BullQueue(self.redis, name, prefix=spec.prefix, scripts=scripts)
        return self._queues[key]

    #: The deterministic id of a job's copy in ``targetQueue``.
    copy_id = staticmethod(moves.copy_id)


def cancelled_message(st: DLQReplayStatus, stage: str) -> str:
    """What a cancelled replay had done, in the words of the stage it stopped in."""
    done = st.replayed + st.skipped
    if stage in ("", Stage.GATES):
        return "cancelled (spec.cancel) before selecting; nothing moved"
    if stage == Stage.SELECTING:
        return f"cancelled (spec.cancel) while selecting ({st.matched} selected so far); nothing moved"
    if stage == Stage.VERIFYING:
        return (
            f"cancelled (spec.cancel) while verifying: moved {st.replayed} of {st.matched} selected jobs "
            f"({st.skipped} no longer failed); verification stopped"
        )
    return (
        f"cancelled (spec.cancel) at {done}/{st.matched}: moved {st.replayed}, {st.skipped} no longer "
        f"failed; the other {max(st.matched - done, 0)} selected jobs stay failed"
    )


__all__ = ["GateRunnerLike", "ReplayEngine", "ReplayEvent", "StepResult", "StoredProgress"]
