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
  paused flag are still what the plan saw (see :meth:`ReplayEngine._reprocess_batch`).
* Jobs failing again later are not replayed again: only the snapshot is replayed.
* A per-queue lease (``SET PX``, fenced by the replay id and WATCHed by every
  batch) keeps two replays off one queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from requeue.api import (
    Breakdown,
    DLQReplaySpec,
    DLQReplayStatus,
    GatePolicy,
    GateStatus,
    ReplayPhase,
    find_condition,
    parse_duration,
    set_condition,
)
from requeue.api.base import ConditionStatus
from requeue.errors import AuthFailed, RedisUnavailable
from requeue.metrics import REPLAY_BATCH_SECONDS, REPLAY_JOBS
from requeue.queues import BullQueue, Cursor, ReplayKeys, map_redis_error
from requeue.queues.adapter import text
from requeue.queues.keys import REPLAY_RETENTION_SECONDS
from requeue.queues.raw import RawTransaction, pack
from requeue.replay.select import Matcher, normalize_reason, to_ms

logger = logging.getLogger(__name__)

#: Redis time a selection page script may take (µs); it ends the page early after that.
SELECT_BUDGET_US = 1200
#: Failed-set members per selection page (one read-only Lua call each, ~3 µs of Redis time per
#: member it returns: a page stays around a millisecond, so other clients never wait long).
SELECT_PAGE_SIZE = 250
#: Page size when names are prefiltered in Redis (non-matching members cost ~0.5 µs each).
SELECT_PAGE_SIZE_NAMES = 1000
#: Failed-set members scanned per selection step at most (several pages, each committed alone).
SELECT_STEP_MEMBERS = 20_000
#: Failed-set members per call of the in-Redis selection of a pure time window
#: (``SELECT_WINDOW``: ~3-4 µs of Redis time each, so a call stays under ~1.5 ms).
SELECT_WINDOW_PAGE = 500
#: The window selection's corrupt-data check: True parses every job's data as JSON in
#: Redis (cjson, ~2.5 µs per job), False checks it only looks like JSON (first and last
#: character: catches truncated and non-JSON values; ~0.3 µs).
WINDOW_EXACT_JSON = False
#: Distinct (digit-folded) failure reasons the window selection counts; the rest are
#: grouped as "<other>" in the breakdown.
REASON_KEYS = 2000
#: Jobs per sub-transaction of a replay batch with BullMQ's ``reprocessJob`` (~20 µs of Redis
#: time each: a MULTI stays around 2 ms) and with ``moveJobsToWait`` (~6-7 µs each with the
#: bookkeeping and the attempts reset).
REPROCESS_CHUNK = 64
MOVE_CHUNK = 200
#: Jobs per sub-transaction of a targetQueue batch (an add and a remove script each).
COPY_CHUNK = 50
#: Replayed ids checked per verification step.
VERIFY_CHUNK = 500
#: How many sample / corrupt ids the status lists.
SAMPLE_IDS = 10
CORRUPT_IDS = 20
#: Groups shown per breakdown.
BREAKDOWN_TOP = 20
#: Lease time to live; renewed every step.
LEASE_TTL_MS = 60_000
#: Delay while another replay holds the queue.
LOCKED_DELAY = 5.0
#: Delay while the queue's backlog is above ``rate.maxWaiting``.
THROTTLE_DELAY = 1.0
#: Delay between two verification passes (also bounded by the window's end).
VERIFY_POLL = 2.0
#: Delay while suspended (the controller steps again when the spec changes).
SUSPENDED_DELAY = 60.0
#: Tolerated clock skew between requeue and the workers (ms) when fixing the selection's upper bound.
CLOCK_SKEW_MS = 1000


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class ReplayEvent:
    """Something worth an Event on the resource (``kubectl describe``)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class StepResult:
    """The outcome of one step: the new status, seconds until the next step, events."""

    status: DLQReplayStatus
    delay: float
    events: list[ReplayEvent] = field(default_factory=list)


@dataclass(frozen=True)
class StoredProgress:
    """What Redis remembers of a replay before any step runs ("resuming", "already finished")."""

    stage: str
    outcome: str
    replayed: int
    matched: int

    @property
    def finished(self) -> bool:
        """The replay reached its end (Succeeded or Failed) and will move nothing more."""
        return self.stage == Stage.DONE


class GateRunnerLike(Protocol):
    """What the engine needs from the gates (``requeue.gates.GateRunner`` is one)."""

    policy: GatePolicy

    async def check(self, previous: list[GateStatus], now: datetime) -> list[GateStatus]: ...

    def all_passed(self, statuses: list[GateStatus]) -> bool: ...

    def any_red(self, statuses: list[GateStatus]) -> bool: ...

    def due(self, statuses: list[GateStatus], now: datetime) -> bool: ...


class ReplayBudgetLike(Protocol):
    """A per-job replay budget (``requeue.policy.ReplayBudget``: a QueuePolicy's auto replays).

    Selection charges each page's picked ids with :meth:`take` and snapshots only those
    allowed; a dry run asks :meth:`over_budget` and charges nothing.
    """

    async def take(self, redis: Redis, replay_uid: str, ids: Sequence[str]) -> list[str]: ...

    async def over_budget(self, redis: Redis, ids: Sequence[str]) -> set[str]: ...


class Stage:
    """The engine's stage as stored in Redis (``progress.stage``); the phase follows from it."""

    GATES = "gates"
    SELECTING = "selecting"
    REPLAYING = "replaying"
    VERIFYING = "verifying"
    DONE = "done"


@dataclass
class _Head:
    """The next ids of the snapshot and what the batch needs to know, read under WATCH."""

    cursor: int
    matched: int
    paused: bool
    head_ok: bool
    last_score: str
    copied_upto: int
    ids: list[str]
    lifo: set[str]


@dataclass
class _Plan:
    """How to move the next ids (``PLAN_MOVES``): chunks of ("f", count, last score) for
    ``moveJobsToWait`` and ("s", count, "") for ``reprocessJob`` per job."""

    cursor: int
    matched: int
    paused: bool
    chunks: list[tuple[str, int, str]]


class _Finish(Exception):
    """Internal: end the replay with this outcome."""

    def __init__(self, phase: ReplayPhase, reason: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase
        self.reason = reason
        self.message = message


def _int(p: dict[str, str], key: str) -> int:
    try:
        return int(p.get(key) or 0)
    except ValueError:
        return 0


def _script_text(script: AsyncScript) -> str | bytes:
    body = script.script
    return body if isinstance(body, str | bytes) else bytes(body)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class ReplayEngine:
    """Drives one DLQReplay over one Redis.

    :param redis: a ``redis.asyncio.Redis`` (e.g. from :func:`requeue.queues.connect`).
    :param replay_id: the resource's UID; names the snapshot and progress keys.
    :param owner: ``namespace/name``, shown to others (e.g. as the lease holder).
    :param gates: the resource's gates, or None for none.
    :param clock: the current time (tests inject theirs).
    :param redis_failure_bound: consecutive Redis errors before they are surfaced
        (condition + Warning event; :meth:`run` raises :class:`RedisUnavailable`).
    :param backoff: first retry delay after a Redis error (doubles, capped at 30 s).
    :param budget: a per-job replay budget (child DLQReplays of a QueuePolicy); jobs over it
        are left out of the snapshot and counted in the progress field ``over_budget``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        replay_id: str,
        owner: str,
        gates: GateRunnerLike | None = None,
        clock: Callable[[], datetime] = utcnow,
        redis_failure_bound: int = 5,
        backoff: float = 0.5,
        budget: ReplayBudgetLike | None = None,
    ) -> None:
        self.redis = redis
        self.budget = budget
        self.replay_id = replay_id
        self.owner = owner
        self.gates = gates
        self.clock = clock
        self.keys = ReplayKeys(replay_id)
        self.redis_failure_bound = redis_failure_bound
        self.backoff = backoff
        self.redis_failures = 0
        self._queues: dict[tuple[str, str], BullQueue] = {}
        self._tokens: float | None = None
        self._fast_aborts = 0
        self._refilled_at: datetime | None = None
        namespace, _, name = owner.rpartition("/")
        self._metric_labels = (namespace, name or owner)

    # -- public API ----------------------------------------------------------

    async def step(self, spec: DLQReplaySpec, status: DLQReplayStatus, *, generation: int = 0) -> StepResult:
        """Do one bounded piece of work and return the new status, the next delay and events."""
        st = status.model_copy(deep=True)
        st.observed_generation = generation
        events: list[ReplayEvent] = []
        if st.phase.finished:
            return StepResult(st, 0.0, events)
        now = self.clock()
        # Read before _step: a successful step sets Ready=True itself, which hid the recovery (the
        # Warning RedisUnreachable of a mid-run outage then never got its RedisReachable). Only an
        # outage this engine reported: after a failed connect the caller posts its own "Recovered".
        was = find_condition(st.conditions, "Ready")
        reported_outage = (self.redis_failures > 0 and was is not None
                           and was.reason == RedisUnavailable.reason)
        try:
            delay = await self._step(spec, st, now, events, generation)
        except _Finish as fin:
            await self._finish(spec, st, now, events, generation, fin)
            delay = 0.0
        except rx.WatchError:
            # someone else wrote this replay's progress (or the lease) meanwhile: re-read and retry
            delay = 0.0
        except AuthFailed as exc:
            await self._finish_quietly(spec, st, now, events, generation, exc.reason, exc.message)
            delay = 0.0
        except (rx.RedisError, OSError) as exc:
            return self._redis_failed(spec, st, now, events, generation, exc)
        self.redis_failures = 0
        if reported_outage:
            ready = find_condition(st.conditions, "Ready")
            if ready is not None and ready.reason == RedisUnavailable.reason:
                self._cond(st, "Ready", True, "Ready", "Redis reachable again", generation, now)
            events.append(ReplayEvent("Normal", "RedisReachable", "Redis answers again"))
        return StepResult(st, delay, events)

    async def stored_progress(self) -> StoredProgress | None:
        """This replay's progress as stored in Redis, or None when it never started."""
        p = await self._progress()
        if not p:
            return None
        return StoredProgress(stage=p.get("stage", ""), outcome=p.get("outcome", ""),
                              replayed=_int(p, "replayed"), matched=_int(p, "matched"))

    async def cancel(self, spec: DLQReplaySpec, status: DLQReplayStatus) -> StepResult:
        """Clean up after deletion: resume the queue if this replay paused it, release the lease,
        delete the snapshot and progress. Idempotent; a finished phase is kept."""
        st = status.model_copy(deep=True)
        now = self.clock()
        events: list[ReplayEvent] = []
        q = self._queue(spec, spec.queue)
        await self._resume_if_ours(q, st, now, events, st.observed_generation)
        await self._release_lease(q)
        await self.redis.delete(*self.keys.all())
        if not st.phase.finished:
            st.phase = ReplayPhase.CANCELLED
            st.completed_at = now
            st.message = "cancelled; nothing more will be moved"
            self._cond(st, "Progressing", False, "Cancelled", st.message, st.observed_generation, now)
            self._cond(st, "Succeeded", False, "Cancelled", st.message, st.observed_generation, now)
            events.append(ReplayEvent("Normal", "Cancelled", st.message))
        return StepResult(st, 0.0, events)

    async def run(
        self,
        spec: DLQReplaySpec,
        status: DLQReplayStatus | None = None,
        *,
        on_step: Callable[[StepResult], Awaitable[None]] | None = None,
    ) -> DLQReplayStatus:
        """Step until the replay finishes (or is suspended); the CLI's loop.

        :raises RedisUnavailable: after ``redis_failure_bound`` consecutive Redis errors.
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
                ready = find_condition(st.conditions, "Ready")
                raise RedisUnavailable(ready.message if ready else "Redis unavailable",
                                       queue=spec.queue, replay=self.owner)
            if result.delay > 0:
                await asyncio.sleep(result.delay)

    # -- the state machine ---------------------------------------------------

    async def _step(self, spec: DLQReplaySpec, st: DLQReplayStatus, now: datetime,
                    events: list[ReplayEvent], gen: int) -> float:
        q = self._queue(spec, spec.queue)
        p = await self._progress()
        started = st.phase in (ReplayPhase.REPLAYING, ReplayPhase.VERIFYING)
        if not p and (st.matched or st.replayed or started):
            raise _Finish(ReplayPhase.FAILED, "SnapshotLost",
                          "the replay's snapshot and progress are gone from Redis (flushed, restarted "
                          "without persistence, or expired); not starting over, which could replay "
                          "jobs twice")
        self._apply_progress(st, p)

        if spec.suspend:
            return await self._suspend(q, st, now, events, gen)
        if st.phase == ReplayPhase.SUSPENDED:
            st.phase = ReplayPhase.PENDING
            events.append(ReplayEvent("Normal", "Resumed", "spec.suspend is false again; continuing"))

        if not spec.dry_run:
            holder = await self._acquire_lease(q)
            if holder is not None:
                return self._locked(st, now, events, gen, holder)

        stage = p.get("stage") or ""
        if not stage:
            paused = await q.is_paused()
            await self.redis.hset(self.keys.progress, mapping={
                "stage": Stage.SELECTING if spec.dry_run else Stage.GATES,
                "paused_before": "1" if paused else "0",
                "queue": spec.queue, "owner": self.owner,
                # every selected job that needs reprocessJob gets its snapshot position in
                # ReplayKeys.slow (a replay selected by an older requeue has not: see _plan)
                "slow_pos": "1",
            })
            self._cond(st, "Ready", True, "Ready", "Redis reachable, queue lease held", gen, now)
            self._cond(st, "Succeeded", ConditionStatus.UNKNOWN, "InProgress", "", gen, now)
            if paused:
                self._cond(st, "QueuePaused", True, "PausedByOthers",
                           "the queue was paused before this replay; it stays paused (replayed jobs "
                           "wait until someone resumes it)", gen, now)
                events.append(ReplayEvent("Warning", "QueuePausedByOthers",
                                          "queue is paused by someone else; replayed jobs will wait"))
            return 0.0
        ready = find_condition(st.conditions, "Ready")
        if ready is None or ready.status != ConditionStatus.TRUE:
            self._cond(st, "Ready", True, "Ready", "Redis reachable, queue lease held", gen, now)

        if stage == Stage.GATES:
            st.phase = ReplayPhase.WAITING_FOR_GATES
            wait = await self._gates(spec, q, st, now, events, gen, p)
            if wait is not None:
                return wait
            upper = to_ms(now) + CLOCK_SKEW_MS
            await self.redis.hset(self.keys.progress, mapping={
                "stage": Stage.SELECTING, "upper": str(upper), "started_ms": str(to_ms(now)),
            })
            st.started_at = now
            st.phase = ReplayPhase.REPLAYING
            self._cond(st, "Progressing", True, "Selecting", "selecting matching failed jobs", gen, now)
            events.append(ReplayEvent("Normal", "ReplayStarted",
                                      f"selecting failed jobs of queue {spec.queue}"))
            return 0.0
        if stage == Stage.SELECTING:
            st.phase = ReplayPhase.PENDING if spec.dry_run else ReplayPhase.REPLAYING
            return await self._select(spec, q, st, now, events, gen, p)
        if stage == Stage.REPLAYING:
            return await self._replay(spec, q, st, now, events, gen, p)
        if stage == Stage.VERIFYING:
            st.phase = ReplayPhase.VERIFYING
            return await self._verify(spec, st, now, events, gen, p)
        # Stage.DONE with a status that did not record it (crash between the two writes)
        outcome = p.get("outcome") or ReplayPhase.SUCCEEDED.value
        raise _Finish(ReplayPhase(outcome), p.get("outcome_reason") or "Succeeded",
                      p.get("outcome_message") or "finished")

    # -- progress ------------------------------------------------------------

    async def _progress(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.progress)
        return {text(k) or "": text(v) or "" for k, v in raw.items()}

    def _apply_progress(self, st: DLQReplayStatus, p: dict[str, str]) -> None:
        """Counters come from Redis, where they change atomically with the moves."""
        if not p:
            return
        st.matched = _int(p, "matched")
        st.replayed = _int(p, "replayed")
        st.skipped = _int(p, "skipped") + _int(p, "missing")
        st.corrupt = _int(p, "corrupt")
        st.over_budget = _int(p, "over_budget")
        if "vc" in p:
            st.completed = _int(p, "vc")
            st.failed_again = _int(p, "vf")
        st.queue_paused_by_replay = p.get("we_paused") == "1"
        if p.get("started_ms") and st.started_at is None:
            st.started_at = _from_ms(_int(p, "started_ms"))
        if p.get("replayed_ms") and st.replay_finished_at is None:
            st.replay_finished_at = _from_ms(_int(p, "replayed_ms"))
        if "matched" in p:  # before selection "0/0" would read as "nothing to replay"
            st.progress = f"{st.replayed + st.skipped}/{st.matched}"

    # -- lease ---------------------------------------------------------------

    @property
    def _lease_value(self) -> str:
        return f"{self.replay_id} {self.owner}"

    async def _acquire_lease(self, q: BullQueue) -> str | None:
        """None when we hold the queue's lease now, else the holder's owner name."""
        holder = text(await q.scripts.acquire_lease(keys=[q.keys.lease], args=[self._lease_value,
                                                                                LEASE_TTL_MS]))
        if not holder:
            return None
        return holder.partition(" ")[2] or holder

    async def _release_lease(self, q: BullQueue) -> None:
        await q.scripts.release_lease(keys=[q.keys.lease], args=[self._lease_value])

    def _locked(self, st: DLQReplayStatus, now: datetime, events: list[ReplayEvent], gen: int,
                holder: str) -> float:
        msg = f"queue is locked by replay {holder}; waiting for it to finish"
        before = find_condition(st.conditions, "Ready")
        if before is None or before.reason != "QueueLocked":
            events.append(ReplayEvent("Warning", "QueueLocked", msg))
        self._cond(st, "Ready", False, "QueueLocked", msg, gen, now)
        if st.phase == ReplayPhase.REPLAYING:
            st.phase = ReplayPhase.WAITING_FOR_GATES
        st.message = msg
        return LOCKED_DELAY

    # -- gates and pausing ---------------------------------------------------

    async def _gates(self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, now: datetime,
                     events: list[ReplayEvent], gen: int, p: dict[str, str]) -> float | None:
        """None when every gate passes (queue resumed if we paused it), else the delay to wait."""
        runner = self.gates
        if runner is None or not spec.gates:
            if find_condition(st.conditions, "GatesPassed") is None:
                self._cond(st, "GatesPassed", True, "NoGates", "no gates configured", gen, now)
            await self._resume_if_ours(q, st, now, events, gen)
            return None
        if runner.due(st.gates, now):
            st.gates = await runner.check(st.gates, now)
        if runner.all_passed(st.gates):
            before = find_condition(st.conditions, "GatesPassed")
            if before is None or before.status != ConditionStatus.TRUE:
                events.append(ReplayEvent("Normal", "GatesPassed", "all gates pass"))
            self._cond(st, "GatesPassed", True, "AllGatesPassed", "all gates pass", gen, now)
            await self._resume_if_ours(q, st, now, events, gen)
            return None
        red = runner.any_red(st.gates)
        names = ", ".join(f"{g.name}: {g.message}" for g in st.gates if not g.healthy) or "not checked yet"
        msg = f"waiting for gates ({names})"
        before = find_condition(st.conditions, "GatesPassed")
        if red and (before is None or before.status != ConditionStatus.FALSE or before.reason != "GatesRed"):
            events.append(ReplayEvent("Warning", "GatesRed", msg))
        self._cond(st, "GatesPassed", False, "GatesRed" if red else "GatesPending", msg, gen, now)
        st.message = msg
        if red and spec.pause_queue:
            await self._pause_if_needed(q, st, now, events, gen, p)
        since = find_condition(st.conditions, "GatesPassed")
        assert since is not None
        timeout = parse_duration(runner.policy.timeout)
        if now - since.last_transition_time >= timeout:
            raise _Finish(ReplayPhase.FAILED, "GatesTimedOut",
                          f"gates did not pass within {runner.policy.timeout}: {names}")
        interval = parse_duration(runner.policy.interval).total_seconds()
        next_in = getattr(runner, "next_check_in", None)
        if callable(next_in):
            value = next_in(st.gates, now)
            if isinstance(value, int | float):
                interval = max(0.0, float(value))
        remaining = (since.last_transition_time + timeout - now).total_seconds()
        return max(0.05, min(interval, remaining))

    async def _pause_if_needed(self, q: BullQueue, st: DLQReplayStatus, now: datetime,
                               events: list[ReplayEvent], gen: int, p: dict[str, str]) -> None:
        if p.get("we_paused") == "1":
            return
        if await q.is_paused():
            self._cond(st, "QueuePaused", True, "PausedByOthers",
                       "queue was already paused by someone else; requeue leaves it paused", gen, now)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            await q.queue_pause(pipe, True)
            pipe.hset(self.keys.progress, "we_paused", "1")
            await pipe.execute()
        p["we_paused"] = "1"
        st.queue_paused_by_replay = True
        self._cond(st, "QueuePaused", True, "PausedByReplay", "paused by this replay while gates are red",
                   gen, now)
        events.append(ReplayEvent("Normal", "QueuePaused", "paused the queue while gates are red"))

    async def _resume_if_ours(self, q: BullQueue, st: DLQReplayStatus, now: datetime,
                              events: list[ReplayEvent], gen: int) -> None:
        if await self.redis.hget(self.keys.progress, "we_paused") not in ("1", b"1"):
            st.queue_paused_by_replay = False
            return
        await q.resume()
        await self.redis.hdel(self.keys.progress, "we_paused")
        st.queue_paused_by_replay = False
        self._cond(st, "QueuePaused", False, "ResumedByReplay", "resumed the queue this replay paused",
                   gen, now)
        events.append(ReplayEvent("Normal", "QueueResumed", "resumed the queue this replay had paused"))

    async def _suspend(self, q: BullQueue, st: DLQReplayStatus, now: datetime,
                       events: list[ReplayEvent], gen: int) -> float:
        await self._resume_if_ours(q, st, now, events, gen)
        await self._release_lease(q)
        if st.phase != ReplayPhase.SUSPENDED:
            events.append(ReplayEvent("Normal", "Suspended", "spec.suspend is true; stopped"))
        st.phase = ReplayPhase.SUSPENDED
        st.message = "suspended"
        self._cond(st, "Progressing", False, "Suspended", "spec.suspend is true", gen, now)
        return SUSPENDED_DELAY

    # -- selection -----------------------------------------------------------

    async def _select(self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, now: datetime,
                      events: list[ReplayEvent], gen: int, p: dict[str, str]) -> float:
        """Select pages into the snapshot until the selection ends or this step has scanned
        :data:`SELECT_STEP_MEMBERS`. Each page commits on its own (snapshot ids, counters and
        cursor in one MULTI fenced by WATCH), so a crash between pages loses nothing."""
        matcher = Matcher(spec.selector)
        upper = _int(p, "upper") or (to_ms(now) + CLOCK_SKEW_MS)
        page_size = SELECT_PAGE_SIZE_NAMES if matcher.name_globs else SELECT_PAGE_SIZE
        with_data = spec.selector.data_match is not None
        # A pure time window needs nothing from the client per job: it is selected inside
        # Redis (the breakdown and corrupt checks included). A replay budget must see ids.
        in_redis = matcher.only_time_window and self.budget is None
        scanned_now = 0
        done = False
        while not done and scanned_now < SELECT_STEP_MEMBERS:
            if in_redis:
                done, scanned = await self._select_window(spec, q, st, p, matcher, upper)
            else:
                done, scanned = await self._select_page(spec, q, st, p, matcher, upper, page_size,
                                                        with_data)
            scanned_now += scanned
        st.progress = f"{st.replayed + st.skipped}/{st.matched}"
        scanned_total = _int(p, "scanned")
        st.message = f"selecting: scanned {scanned_total}, matched {st.matched}"
        if not done:
            return 0.0
        await self._selection_summary(st, events)
        if spec.dry_run:
            st.replay_finished_at = now
            raise _Finish(ReplayPhase.SUCCEEDED, "DryRun",
                          f"dry run: {st.matched} jobs would be replayed (scanned {scanned_total}, "
                          f"{st.corrupt} corrupt); nothing moved")
        over = f", {_int(p, 'over_budget')} over their auto-replay budget" if _int(p, "over_budget") else ""
        events.append(ReplayEvent("Normal", "Selected",
                                  f"selected {st.matched} failed jobs (scanned {scanned_total}, "
                                  f"{st.corrupt} corrupt{over})"))
        self._cond(st, "Progressing", True, "Replaying", f"replaying {st.matched} jobs", gen, now)
        if st.matched == 0:
            await self._mark_replayed(now)
        return 0.0

    async def _select_window(self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus,
                             p: dict[str, str], matcher: Matcher, upper: int) -> tuple[bool, int]:
        """One page of a pure time-window selection, selected and committed inside Redis
        (``SELECT_WINDOW``: the script itself is the transaction). Returns (done, scanned)."""
        k = self.keys
        raw = await q.scripts.select_window(
            keys=[q.keys.failed, k.progress, k.snapshot, k.names, k.reasons, k.corrupt, k.lifo, k.slow],
            args=[q.keys.base, matcher.min_score, matcher.max_score(upper), SELECT_WINDOW_PAGE,
                  spec.selector.max_jobs or 0, upper, CORRUPT_IDS, REASON_KEYS,
                  "1" if WINDOW_EXACT_JSON else "0", SELECT_BUDGET_US],
        )
        scanned, picked, corrupt, done = (int(x) for x in raw)
        if scanned < 0:
            raise rx.WatchError("selection moved on meanwhile")
        st.matched += picked
        st.corrupt += corrupt
        p.update(scanned=str(_int(p, "scanned") + scanned), upper=str(upper))
        return done == 1, scanned

    async def _select_page(self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, p: dict[str, str],
                           matcher: Matcher, upper: int, page_size: int, with_data: bool) -> tuple[bool, int]:
        """One page into the snapshot; ``p`` is updated to what was committed. Returns (done, scanned)."""
        cursor = Cursor(p.get("sel_score", ""), p.get("sel_id", ""))
        page = await q.select_page(cursor, min_score=matcher.min_score, max_score=matcher.max_score(upper),
                                   name_globs=matcher.name_globs, count=page_size, with_data=with_data,
                                   budget_us=SELECT_BUDGET_US)
        room = (spec.selector.max_jobs - st.matched) if spec.selector.max_jobs else None
        picked: list[str] = []
        lifo: list[str] = []
        corrupt: list[str] = []
        names: dict[str, int] = {}
        reasons: dict[str, int] = {}
        prioritized = 0
        done = page.done
        cursor = page.cursor
        everything = matcher.only_time_window
        for job in page.jobs:
            if job.corrupt_reason is not None:
                corrupt.append(job.id)
                continue
            if not everything and not matcher.matches(job):
                continue
            if room is not None and len(picked) >= room:
                # the page overshoots maxJobs: stop right after the last picked job
                done = True
                break
            picked.append(job.id)
            if job.lifo:
                lifo.append(job.id)
            if job.prioritized:
                prioritized += 1
            name = job.name or ""
            names[name] = names.get(name, 0) + 1
            reason = normalize_reason(job.failed_reason)
            reasons[reason] = reasons.get(reason, 0) + 1
        if room is not None and len(picked) >= room:
            done = True
        over = 0
        if self.budget is not None and picked:
            if spec.dry_run:
                refused = await self.budget.over_budget(self.redis, picked)
            else:
                refused = set(picked) - set(await self.budget.take(self.redis, self.replay_id, picked))
            if refused:  # not snapshotted: take them back out of the tallies
                over = len(refused)
                for job in page.jobs:
                    if job.id in refused:
                        prioritized -= 1 if job.prioritized else 0
                        reason = normalize_reason(job.failed_reason)
                        for tally, key in ((names, job.name or ""), (reasons, reason)):
                            tally[key] -= 1
                            if not tally[key]:
                                del tally[key]
                picked = [i for i in picked if i not in refused]
                lifo = [i for i in lifo if i not in refused]
        slow_ids = set(lifo) | {job.id for job in page.jobs if job.prioritized}
        slow = [(st.matched + i, job_id) for i, job_id in enumerate(picked) if job_id in slow_ids]
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(k.progress)
            if (text(await pipe.hget(k.progress, "sel_id")) or "") != (p.get("sel_id") or "") or \
                    text(await pipe.hget(k.progress, "stage")) != Stage.SELECTING:
                raise rx.WatchError("selection moved on meanwhile")
            pipe.multi()  # type: ignore[no-untyped-call]
            if picked:
                pipe.rpush(k.snapshot, *picked)
            if lifo:
                pipe.sadd(k.lifo, *lifo)
            if slow:
                pipe.zadd(k.slow, {job_id: pos for pos, job_id in slow})
            for name, n in names.items():
                pipe.hincrby(k.names, name, n)
            for reason, n in reasons.items():
                pipe.hincrby(k.reasons, reason, n)
            if corrupt:
                pipe.rpush(k.corrupt, *corrupt)
                pipe.ltrim(k.corrupt, 0, CORRUPT_IDS - 1)
                pipe.hincrby(k.progress, "corrupt", len(corrupt))
            pipe.hincrby(k.progress, "matched", len(picked))
            if over:
                pipe.hincrby(k.progress, "over_budget", over)
            pipe.hincrby(k.progress, "scanned", page.scanned)
            pipe.hincrby(k.progress, "lifo_count", len(lifo))
            # a replay selected before this field existed has none: the batch then never
            # takes the moveJobsToWait fast path (it needs to know no job has a priority)
            pipe.hincrby(k.progress, "prio_count", prioritized)
            pipe.hset(k.progress, mapping={"sel_score": cursor.score, "sel_id": cursor.job_id,
                                           "upper": str(upper)})
            if done:
                pipe.hset(k.progress, "stage", Stage.REPLAYING)
            await pipe.execute()
        st.matched += len(picked)
        st.corrupt += len(corrupt)
        st.over_budget += over
        p.update(sel_score=cursor.score, sel_id=cursor.job_id, upper=str(upper),
                 scanned=str(_int(p, "scanned") + page.scanned),
                 lifo_count=str(_int(p, "lifo_count") + len(lifo)),
                 prio_count=str(_int(p, "prio_count") + prioritized),
                 over_budget=str(_int(p, "over_budget") + over))
        return done, page.scanned

    async def _selection_summary(self, st: DLQReplayStatus, events: list[ReplayEvent]) -> None:
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.names)
            pipe.hgetall(k.reasons)
            pipe.lrange(k.snapshot, 0, SAMPLE_IDS - 1)
            pipe.lrange(k.corrupt, 0, CORRUPT_IDS - 1)
            names, reasons, sample, corrupt = await pipe.execute()

        def top(d: dict[Any, Any]) -> dict[str, int]:
            items = sorted(((text(a) or "", int(b)) for a, b in d.items()), key=lambda kv: (-kv[1], kv[0]))
            return dict(items[:BREAKDOWN_TOP])

        # The window selection counts reasons with digits folded in Redis; normalising is
        # idempotent and treats every digit alike, so normalising again here gives the
        # same groups either way.
        by_reason: dict[str, int] = {}
        for raw_reason, n in reasons.items():
            reason = text(raw_reason) or ""
            group = "<other>" if reason == "\0other" else normalize_reason(reason)
            by_reason[group] = by_reason.get(group, 0) + int(n)
        st.breakdown = Breakdown(by_name=top(names), by_reason=top(by_reason))
        st.sample_ids = [text(x) or "" for x in sample]
        st.corrupt_ids = [text(x) or "" for x in corrupt]
        if st.corrupt:
            events.append(ReplayEvent("Warning", "CorruptJobs",
                                      f"{st.corrupt} failed jobs are unreadable and will not be replayed "
                                      f"(first: {', '.join(st.corrupt_ids[:5])})"))

    async def _mark_replayed(self, now: datetime) -> None:
        await self.redis.hset(self.keys.progress, mapping={"stage": Stage.VERIFYING,
                                                           "replayed_ms": str(to_ms(now))})

    # -- replay --------------------------------------------------------------

    def _take_tokens(self, spec: DLQReplaySpec, want: int, now: datetime) -> tuple[int, float]:
        """Token bucket over jobsPerSecond, burst one batch (at most a second's worth).
        Returns (jobs allowed now, seconds to wait when zero)."""
        rate = spec.rate.jobs_per_second
        capacity = max(1.0, min(float(spec.rate.batch_size), rate))
        if self._tokens is None or self._refilled_at is None:
            self._tokens, self._refilled_at = capacity, now
        elapsed = max(0.0, (now - self._refilled_at).total_seconds())
        self._tokens = min(capacity, self._tokens + elapsed * rate)
        self._refilled_at = now
        need = min(float(want), capacity)
        if self._tokens + 1e-9 < need:
            return 0, (need - self._tokens) / rate
        n = min(want, int(self._tokens + 1e-9))
        self._tokens -= n
        return n, 0.0

    def _next_delay(self, spec: DLQReplaySpec) -> float:
        """Seconds until the bucket holds a full batch again (counting the time the batch took)."""
        rate = spec.rate.jobs_per_second
        capacity = max(1.0, min(float(spec.rate.batch_size), rate))
        tokens = self._tokens or 0.0
        if self._refilled_at is not None:
            tokens += max(0.0, (self.clock() - self._refilled_at).total_seconds()) * rate
        return max(0.0, (capacity - tokens) / rate)

    async def _replay(self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, now: datetime,
                      events: list[ReplayEvent], gen: int, p: dict[str, str]) -> float:
        cursor = _int(p, "cursor")
        remaining = st.matched - cursor
        if remaining <= 0 and not (spec.target_queue and _int(p, "copied_upto") > cursor):
            await self._mark_replayed(now)
            return await self._replayed(spec, st, now, events, gen)
        # recheckDuringReplay: a running replay is held only once a gate is red (failureThreshold
        # failures in a row), so a single blip does not stop it; a held one goes on only when
        # every gate passes again (successThreshold), like the start.
        if self.gates is not None and spec.gates and spec.gate_policy.recheck_during_replay:
            gates_ok = find_condition(st.conditions, "GatesPassed")
            held = gates_ok is not None and gates_ok.status != ConditionStatus.TRUE
            if not held and self.gates.due(st.gates, now):
                st.gates = await self.gates.check(st.gates, now)
                held = self.gates.any_red(st.gates)
            if held:
                wait = await self._gates(spec, q, st, now, events, gen, p)
                if wait is not None:
                    st.phase = ReplayPhase.WAITING_FOR_GATES
                    self._cond(st, "Progressing", False, "HeldByGates", st.message, gen, now)
                    return wait
        st.phase = ReplayPhase.REPLAYING
        want = min(spec.rate.batch_size, max(remaining, 1))
        if spec.rate.max_waiting is not None:
            backlog = await q.backlog()
            if backlog >= spec.rate.max_waiting:
                msg = f"holding: {backlog} jobs waiting, maxWaiting is {spec.rate.max_waiting}"
                self._cond(st, "Progressing", True, "Throttled", msg, gen, now)
                st.message = msg
                return THROTTLE_DELAY
            want = min(want, spec.rate.max_waiting - backlog)
        n, wait = self._take_tokens(spec, want, now)
        if n == 0:
            return wait
        started = time.perf_counter()
        if spec.target_queue:
            moved, skipped, missing = await self._copy_batch(spec, q, n, p)
        else:
            moved, skipped, missing = await self._reprocess_batch(spec, q, n, p)
        REPLAY_BATCH_SECONDS.observe(time.perf_counter() - started)
        ns, name = self._metric_labels
        for outcome, count in (("replayed", moved), ("skipped", skipped + missing)):
            if count:
                REPLAY_JOBS.labels(ns, name, spec.queue, outcome).inc(count)
        st.replayed += moved
        st.skipped += skipped + missing
        st.progress = f"{st.replayed + st.skipped}/{st.matched}"
        st.message = f"replaying: {st.progress}"
        self._cond(st, "Progressing", True, "Replaying", st.message, gen, now)
        if st.replayed + st.skipped >= st.matched:
            return await self._replayed(spec, st, now, events, gen)
        return self._next_delay(spec)

    async def _reprocess_batch(self, spec: DLQReplaySpec, q: BullQueue, n: int,
                               p: dict[str, str] | None = None) -> tuple[int, int, int]:
        """Up to ``n`` jobs in place, in sub-transactions that each stay a few ms of Redis time.

        One read (``PLAN_MOVES``) splits the next ids into chunks. A "fast" chunk is BullMQ's
        ``moveJobsToWait``, used only where it does exactly what ``reprocessJob`` would: the
        ids are the head of the failed set and none has a priority or lifo. It is ONE write
        and one round trip: WATCH, a guard script that vetoes the EXEC unless that still holds
        (so the plan is only a prediction), and the MULTI with the move and its bookkeeping.
        A "slow" chunk is ``reprocessJob`` per job. Every sub-transaction advances cursor and
        counters atomically with its moves, so a crash or an abort loses and repeats nothing.
        """
        mode = "off"
        if p is not None and not self._fast_aborts:
            if p.get("slow_pos") == "1":
                mode = "pos"
            elif p.get("prio_count") == "0" and _int(p, "lifo_count") == 0:
                mode = "none"  # selected by an older requeue: only when no job needs reprocessJob
        plan = await self._plan(q, n, mode)
        moved = skipped = missing = 0
        cursor = plan.cursor
        for kind, count, last_score in plan.chunks:
            if kind == "f":
                done = await self._fast_chunk(spec, q, cursor, count, last_score, plan.paused, plan.matched)
                if done is None:
                    self._fast_aborts += 1  # the next chunk goes job by job, then fast again
                    break
                moved, cursor = moved + done, cursor + done
                continue
            chunk = await self._reprocess_chunk(spec, q, count)
            if chunk is None:
                break
            did, (m, s, x), finished = chunk
            self._fast_aborts = 0
            moved, skipped, missing, cursor = moved + m, skipped + s, missing + x, cursor + did
            if finished or did == 0 or did < count:
                break
        return moved, skipped, missing

    async def _plan(self, q: BullQueue, n: int, mode: str) -> _Plan:
        k = self.keys
        raw = await q.scripts.plan_moves(
            keys=[k.progress, q.keys.lease, q.keys.meta, k.snapshot, q.keys.failed, k.slow],
            args=[self._lease_value, n, MOVE_CHUNK, REPROCESS_CHUNK, mode])
        reply = json.loads(raw)
        if not reply[0]:
            raise rx.WatchError("lease lost")
        chunks: list[tuple[str, int, str]] = []
        i = 5
        while i < len(reply):
            if reply[i] == "f":
                chunks.append(("f", int(reply[i + 1]), str(reply[i + 2])))
                i += 3
            else:
                chunks.append(("s", int(reply[i + 1]), ""))
                i += 2
        return _Plan(cursor=int(reply[1]), matched=int(reply[2]), paused=bool(reply[3]), chunks=chunks)

    async def _fast_chunk(self, spec: DLQReplaySpec, q: BullQueue, cursor: int, count: int,
                          last_score: str, paused: bool, matched: int) -> int | None:
        """``count`` snapshot ids from ``cursor`` with ``moveJobsToWait``, guarded (see
        :meth:`_reprocess_batch`); the number moved, or None when the guard vetoed it.

        The scripts go as ``EVAL`` with their text: a script missing from Redis's cache (a
        restart, SCRIPT FLUSH) would otherwise fail inside the MULTI after the others ran."""
        k, qk = self.keys, q.keys
        sc = q.scripts
        guard = pack("EVAL", _script_text(sc.fast_guard), 5, k.progress, qk.lease, qk.meta, k.snapshot,
                     qk.failed, self._lease_value, cursor, count, last_score, "1" if paused else "0")
        body = [
            pack("EVAL", _script_text(sc.fast_tally), 3, k.progress, k.snapshot, k.replayed,
                 cursor, count, "1" if spec.reset_attempts else "0", qk.base),
            q.move_to_wait_command(count=count, max_timestamp=last_score, paused=paused, inline=True),
            *self._done_cmds(cursor + count, matched),
        ]
        async with RawTransaction(self.redis) as tx:
            first, result = await tx.guarded_exec(
                [pack("WATCH", k.progress, qk.lease, qk.meta, qk.failed), guard], body)
        for reply in first:
            if isinstance(reply, Exception):
                raise reply
        if result is None:
            return None
        for reply in result:
            if isinstance(reply, Exception):
                raise reply
        return int(result[0])

    def _batch_scripts(self, q: BullQueue) -> tuple[AsyncScript, ...]:
        sc = q.scripts
        return (sc.batch_head, sc.tally_batch, sc.reprocess_job, sc.remove_job, sc.add_standard_job,
                sc.add_prioritized_job)

    async def _batch_head(self, tx: RawTransaction, q: BullQueue, size: int,
                          watch: Sequence[str] = ()) -> _Head:
        """WATCH ``watch``, make sure the batch's scripts are loaded, read the head: one round
        trip (two when a script had to be loaded)."""
        k = self.keys
        scripts = self._batch_scripts(q)
        head = pack("EVALSHA", q.scripts.batch_head.sha, 6, k.progress, q.keys.lease, q.keys.meta,
                    k.snapshot, k.lifo, q.keys.failed, self._lease_value, size, q.keys.base, "0")
        pre = [pack("WATCH", *watch)] if watch else []
        replies = await tx.call([*pre, pack("SCRIPT", "EXISTS", *(sc.sha for sc in scripts)), head])
        exists, raw = replies[-2], replies[-1]
        if isinstance(exists, Exception):
            raise exists
        missing = [sc for sc, ok in zip(scripts, exists, strict=True) if not int(ok)]
        if missing:
            await tx.call([pack("SCRIPT", "LOAD", _script_text(sc)) for sc in missing])
            raw = (await tx.call([head]))[0]
        if isinstance(raw, Exception):
            raise raw
        reply = json.loads(raw)
        if not reply[0]:
            raise rx.WatchError("lease lost")
        ids = [str(x) for x in reply[7:7 + (len(reply) - 7) // 2]]
        flags = reply[7 + len(ids):]
        return _Head(cursor=int(reply[1]), matched=int(reply[2]), paused=bool(reply[3]),
                     head_ok=bool(reply[4]), last_score=str(reply[5]), copied_upto=int(reply[6]),
                     ids=ids, lifo={i for i, f in zip(ids, flags, strict=True) if f == "1"})

    def _done_cmds(self, end: int, matched: int) -> list[bytes]:
        if end < matched:
            return []
        return [pack("HSET", self.keys.progress, "stage", Stage.VERIFYING,
                     "replayed_ms", to_ms(self.clock()))]

    async def _reprocess_chunk(self, spec: DLQReplaySpec, q: BullQueue,
                               limit: int) -> tuple[int, tuple[int, int, int], bool] | None:
        """One sub-transaction of ``reprocessJob`` per job: two round trips (WATCH and the head,
        then the MULTI). None when a WATCHed key changed (the next step tries again)."""
        size = min(limit, REPROCESS_CHUNK)
        k = self.keys
        async with RawTransaction(self.redis) as tx:
            head = await self._batch_head(tx, q, size, [k.progress, q.keys.lease, q.keys.meta])
            ids = head.ids
            end = head.cursor + len(ids)
            cmds = [pack("EVALSHA", q.scripts.tally_batch.sha, 3, k.progress, q.keys.failed, k.replayed,
                         q.keys.base, end, 0, "failed", *ids)]
            cmds += q.reprocess_commands(ids, paused=head.paused, lifo=head.lifo,
                                         reset_attempts=spec.reset_attempts)
            cmds += self._done_cmds(end, head.matched)
            result = await tx.exec(cmds)
        if result is None:
            return None
        for reply in result:
            if isinstance(reply, Exception):
                raise reply
        moved, skipped, missing = (int(x) for x in result[0])
        did = [int(c) for c in result[1:1 + len(ids)]].count(1)
        if did != moved:  # pragma: no cover - would mean BullMQ's script changed
            logger.warning("replay %s: tally predicted %d moves, BullMQ did %d", self.owner, moved, did)
        return len(ids), (moved, skipped, missing), end >= head.matched

    async def _copy_batch(self, spec: DLQReplaySpec, q: BullQueue, n: int,
                          p: dict[str, str]) -> tuple[int, int, int]:
        """targetQueue: copy up to ``n`` jobs into the target queue and remove the originals.

        Copy and removal of a job happen in ONE MULTI/EXEC, which WATCHes the source job
        hashes: a source job that leaves the failed set meanwhile (retried, made active,
        removed) aborts the transaction, and one that left before is neither copied nor
        removed and counts as skipped. There is no moment with the copy made and the source
        still in place, so a crash can neither duplicate nor lose a job. The copy's id is
        derived from the source's, so BullMQ's duplicate-id rule keeps even a replay of a
        batch from adding a second copy.
        """
        assert spec.target_queue is not None
        target = self._queue(spec, spec.target_queue)
        moved = skipped = missing = 0
        left = n
        while left > 0:
            chunk = await self._copy_chunk(spec, q, target, min(left, COPY_CHUNK))
            if chunk is None:
                break
            count, (m, s, x), finished = chunk
            moved, skipped, missing, left = moved + m, skipped + s, missing + x, left - count
            if finished or count == 0:
                break
        return moved, skipped, missing

    async def _copy_chunk(self, spec: DLQReplaySpec, q: BullQueue, target: BullQueue,
                          size: int) -> tuple[int, tuple[int, int, int], bool] | None:
        k = self.keys
        legacy_pending = k.progress + ":copied"  # written by requeue <= 0.1's two-step copy
        async with RawTransaction(self.redis) as tx:
            head = await self._batch_head(tx, q, size, [k.progress, q.keys.lease, target.keys.meta])
            ids = head.ids
            if not ids:
                return 0, (0, 0, 0), True
            end = head.cursor + len(ids)
            replies = await tx.call([
                pack("WATCH", *(q.keys.job(i) for i in ids)),
                pack("ZMSCORE", q.keys.failed, *ids),
                pack("HEXISTS", target.keys.meta, "paused"),
                pack("LRANGE", legacy_pending, 0, -1) if head.copied_upto > head.cursor else pack("PING"),
                *(pack("HMGET", q.keys.job(i), "name", "data", "opts", "priority") for i in ids),
            ])
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            scores, target_paused = replies[1], bool(replies[2])
            copied_before = set(replies[3]) if isinstance(replies[3], list) else set()
            fields = replies[4:]
            now_ms = to_ms(self.clock())
            moving: list[str] = []
            cmds: list[bytes] = []
            for job_id, score, job in zip(ids, scores, fields, strict=True):
                if score is None or all(f is None for f in job):
                    continue  # no longer failed (or gone): not ours to move any more
                moving.append(job_id)
                if job_id not in copied_before:
                    cmds.append(target.copy_command(
                        {"name": job[0], "data": job[1], "opts": job[2], "priority": job[3]},
                        new_id=self.copy_id(spec, job_id), timestamp_ms=now_ms, paused=target_paused))
                cmds.append(q.remove_command(job_id))
            tally = pack("EVALSHA", q.scripts.tally_batch.sha, 3, k.progress, q.keys.failed, k.replayed,
                         q.keys.base, end, 0, "failed", *ids)
            tail = [pack("DEL", legacy_pending)] if copied_before else []
            result = await tx.exec([tally, *cmds, *tail, *self._done_cmds(end, head.matched)])
        if result is None:
            return None
        for reply in result:
            if isinstance(reply, Exception):
                raise reply
        moved, skipped, missing = (int(x) for x in result[0])
        if moved != len(moving):  # pragma: no cover - the WATCH makes the prediction exact
            logger.warning("replay %s: tally predicted %d moves, %d copied", self.owner, moved, len(moving))
        return len(ids), (moved, skipped, missing), end >= head.matched

    @staticmethod
    def copy_id(spec: DLQReplaySpec, job_id: str) -> str:
        """The deterministic id of a job's copy in ``targetQueue``."""
        return f"requeue-{spec.queue}-{job_id}"

    async def _replayed(self, spec: DLQReplaySpec, st: DLQReplayStatus, now: datetime,
                        events: list[ReplayEvent], gen: int) -> float:
        st.replay_finished_at = st.replay_finished_at or now
        msg = f"moved {st.replayed} of {st.matched} selected jobs ({st.skipped} no longer failed)"
        events.append(ReplayEvent("Normal", "ReplayFinished", msg))
        if spec.verify is None:
            raise _Finish(ReplayPhase.SUCCEEDED, "Succeeded", msg)
        st.phase = ReplayPhase.VERIFYING
        st.message = f"{msg}; verifying for {spec.verify.window}"
        self._cond(st, "Progressing", True, "Verifying", st.message, gen, now)
        return 0.0

    # -- verify --------------------------------------------------------------

    async def _verify(self, spec: DLQReplaySpec, st: DLQReplayStatus, now: datetime,
                      events: list[ReplayEvent], gen: int, p: dict[str, str]) -> float:
        if spec.verify is None:
            raise _Finish(ReplayPhase.SUCCEEDED, "Succeeded",
                          f"moved {st.replayed} of {st.matched} selected jobs")
        verify = spec.verify
        watched = self._queue(spec, spec.target_queue or spec.queue)
        k = self.keys
        pos = _int(p, "v_pos")
        raw = await self.redis.lrange(k.replayed, pos, pos + VERIFY_CHUNK - 1)
        ids = [text(x) or "" for x in raw]
        if spec.target_queue:
            ids = [self.copy_id(spec, i) for i in ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(watched.keys.job(job_id))
            if ids:
                pipe.zmscore(watched.keys.completed, ids)
                pipe.zmscore(watched.keys.failed, ids)
            res = await pipe.execute()
        completed = failed = pending = 0
        if ids:
            exists, in_completed, in_failed = res[:len(ids)], res[len(ids)], res[len(ids) + 1]
            for e, c, f in zip(exists, in_completed, in_failed, strict=True):
                if f is not None:
                    failed += 1
                elif c is not None or not e:
                    completed += 1
                else:
                    pending += 1
        new_pos = pos + len(ids)
        pass_done = new_pos >= st.replayed
        async with self.redis.pipeline(transaction=True) as pipe:
            if pass_done:
                c_total = _int(p, "p_c") + completed
                f_total = _int(p, "p_f") + failed
                pipe.hset(k.progress, mapping={"vc": c_total, "vf": f_total,
                                               "vp": _int(p, "p_p") + pending,
                                               "v_pos": 0, "p_c": 0, "p_f": 0, "p_p": 0})
            else:
                pipe.hset(k.progress, mapping={"v_pos": new_pos})
                pipe.hincrby(k.progress, "p_c", completed)
                pipe.hincrby(k.progress, "p_f", failed)
                pipe.hincrby(k.progress, "p_p", pending)
            await pipe.execute()
        if not pass_done:
            return 0.0
        st.completed = c_total
        st.failed_again = f_total
        pending_total = st.replayed - c_total - f_total
        total = st.replayed
        rate = c_total / total if total else 1.0
        finished_at = st.replay_finished_at or now
        window_end = finished_at + parse_duration(verify.window)
        summary = (f"{c_total} of {total} replayed jobs completed ({rate:.1%}), {f_total} failed again, "
                   f"{pending_total} pending")
        st.message = f"verifying: {summary}"
        too_many = verify.max_failed_again is not None and f_total > verify.max_failed_again
        hopeless = total > 0 and (total - f_total) / total < verify.min_success_rate
        if too_many or hopeless:
            raise _Finish(ReplayPhase.FAILED, "VerificationFailed", summary)
        if pending_total == 0 or now >= window_end:
            if rate >= verify.min_success_rate:
                raise _Finish(ReplayPhase.SUCCEEDED, "Verified", summary)
            raise _Finish(ReplayPhase.FAILED, "VerificationFailed", summary)
        self._cond(st, "Progressing", True, "Verifying", st.message, gen, now)
        return max(0.05, min(VERIFY_POLL, (window_end - now).total_seconds()))

    # -- the end -------------------------------------------------------------

    async def _finish(self, spec: DLQReplaySpec, st: DLQReplayStatus, now: datetime,
                      events: list[ReplayEvent], gen: int, fin: _Finish) -> None:
        q = self._queue(spec, spec.queue)
        await self._resume_if_ours(q, st, now, events, gen)
        if not spec.dry_run:
            await self._release_lease(q)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.progress, mapping={
                "stage": Stage.DONE, "outcome": fin.phase.value, "outcome_reason": fin.reason,
                "outcome_message": fin.message,
            })
            for key in self.keys.all():
                pipe.expire(key, REPLAY_RETENTION_SECONDS)
            await pipe.execute()
        if st.breakdown is None and st.matched:
            await self._selection_summary(st, [])
        self._end(st, now, events, gen, fin.phase, fin.reason, fin.message)

    async def _finish_quietly(self, spec: DLQReplaySpec, st: DLQReplayStatus, now: datetime,
                              events: list[ReplayEvent], gen: int, reason: str, message: str) -> None:
        self._cond(st, "Ready", False, reason, message, gen, now)
        self._end(st, now, events, gen, ReplayPhase.FAILED, reason, message)

    def _end(self, st: DLQReplayStatus, now: datetime, events: list[ReplayEvent], gen: int,
             phase: ReplayPhase, reason: str, message: str) -> None:
        st.phase = phase
        st.completed_at = now
        st.message = message
        ok = phase == ReplayPhase.SUCCEEDED
        self._cond(st, "Progressing", False, "Finished", message, gen, now)
        self._cond(st, "Succeeded", ok, reason, message, gen, now)
        if reason == "GatesTimedOut":
            self._cond(st, "GatesPassed", False, "GatesTimedOut", message, gen, now)
        events.append(ReplayEvent("Normal" if ok else "Warning", reason, message))

    def _redis_failed(self, spec: DLQReplaySpec, st: DLQReplayStatus, now: datetime,
                      events: list[ReplayEvent], gen: int, exc: BaseException) -> StepResult:
        err = map_redis_error(exc, queue=spec.queue, replay=self.owner)
        if isinstance(err, AuthFailed):
            self._cond(st, "Ready", False, err.reason, err.message, gen, now)
            self._end(st, now, events, gen, ReplayPhase.FAILED, err.reason, err.message)
            return StepResult(st, 0.0, events)
        self.redis_failures += 1
        delay = min(30.0, self.backoff * 2 ** (self.redis_failures - 1))
        logger.info("replay %s: Redis error %d: %s", self.owner, self.redis_failures, err.message)
        if self.redis_failures >= self.redis_failure_bound:
            msg = f"{err.message}; {self.redis_failures} attempts in a row, retrying in {delay:.1f}s"
            if self.redis_failures == self.redis_failure_bound:
                events.append(ReplayEvent("Warning", err.reason, msg))
            self._cond(st, "Ready", False, err.reason, msg, gen, now)
            st.message = msg
        return StepResult(st, delay, events)

    # -- helpers -------------------------------------------------------------

    def _queue(self, spec: DLQReplaySpec, name: str) -> BullQueue:
        key = (spec.prefix, name)
        if key not in self._queues:
            scripts = next(iter(self._queues.values())).scripts if self._queues else None
            self._queues[key] = BullQueue(self.redis, name, prefix=spec.prefix, scripts=scripts)
        return self._queues[key]

    @staticmethod
    def _cond(st: DLQReplayStatus, type: str, status: bool | ConditionStatus, reason: str, message: str,
              gen: int, now: datetime) -> None:
        st.conditions = set_condition(st.conditions, type=type, status=status, reason=reason,
                                      message=message, generation=gen, now=now)


__all__ = ["GateRunnerLike", "ReplayEngine", "ReplayEvent", "StepResult", "utcnow"]
