"""Mode Bulk: a time window moved with BullMQ's own ``moveJobsToWait``, as ``Queue.retryJobs`` does.

Mode Exact reads every job twice (selection, then the move) to keep ``Job.retry``'s
placement, leave corrupt jobs alone and break the selection down; on a large failed set
that is most of Redis's work. Bulk reads no job: the window's bounds are the snapshot.
Its upper bound is fixed a clock-skew margin *before* the replay starts, so a replayed
job that fails again (a newer score) can never fall back into the window, and a rerun
after a crash moves only what is still failed in it. Each chunk is one MULTI: our tally
records the ids ``moveJobsToWait`` is about to take (the same range query), advances the
cursor, then BullMQ's script moves them; a guard vetoes the EXEC unless the lease, the
cursor and the paused flag are as planned and no failed job is older than the window
(``moveJobsToWait`` takes the oldest first).
"""

from __future__ import annotations

import math
from datetime import datetime

from redis import exceptions as rx
from redis.asyncio import Redis

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayPhase
from requeue.api.conditions import Reason
from requeue.queues import BullQueue, ReplayKeys
from requeue.queues.adapter import text
from requeue.queues.keys import Progress
from requeue.queues.raw import RawTransaction, pack, raise_errors, script_text
from requeue.replay.matcher import Matcher, to_ms
from requeue.replay.state import SAMPLE_IDS, Finish, Stage, from_ms, int_field


class OlderFailedJobs(Finish):
    """A failed job older than ``failedAfter``: ``moveJobsToWait`` would take it first."""

    def __init__(self, job_id: str, score: int, lower: int) -> None:
        super().__init__(
            ReplayPhase.FAILED,
            Reason.OLDER_FAILED_JOBS,
            f"mode Bulk moves the oldest failed jobs first (BullMQ's moveJobsToWait), but job {job_id} "
            f"failed at {_iso(score)}, before failedAfter ({_iso(lower)}); drop failedAfter to replay "
            "those too, or use mode Exact; nothing more was moved",
        )


def _iso(ms: int) -> str:
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def oldest_first(redis: Redis, q: BullQueue, lower: int) -> None:
    """Bulk can replay the window only if no failed job is older than it.

    :raises OlderFailedJobs: one is.
    """
    head = await redis.zrange(q.keys.failed, 0, 0, withscores=True)
    if head and int(head[0][1]) < lower:
        raise OlderFailedJobs(text(head[0][0]) or "", int(head[0][1]), lower)


class Bulk:
    """Selects and moves one Bulk replay. Holds the queue's paused flag between chunks."""

    def __init__(self, redis: Redis, keys: ReplayKeys, *, lease_value: str, chunk: int) -> None:
        self.redis = redis
        self.keys = keys
        self.lease_value = lease_value
        #: Jobs per ``moveJobsToWait`` call at most (:attr:`EngineTuning.bulk_chunk`).
        self.chunk = chunk
        self._paused: bool | None = None

    async def select(self, spec: DLQReplaySpec, q: BullQueue, st: DLQReplayStatus, p: dict[str, str]) -> None:
        """Count the window (a range count and a sample of ids, no job read) and fix its bounds
        in the progress.

        :raises redis.exceptions.WatchError: another process selected meanwhile (the step reads again).
        :raises OlderFailedJobs: see there.
        """
        matcher = Matcher(spec.selector)
        lower, below = matcher.min_score, matcher.max_score(int_field(p, Progress.UPPER))
        await oldest_first(self.redis, q, lower)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(q.keys.failed, lower, f"({below}")
            pipe.zrangebyscore(q.keys.failed, lower, f"({below}", start=0, num=SAMPLE_IDS)
            count, sample = await pipe.execute()
        matched = min(int(count), spec.selector.max_jobs or int(count))
        async with self.redis.pipeline(transaction=True) as tx:
            await tx.watch(self.keys.progress)
            if text(await tx.hget(self.keys.progress, Progress.STAGE)) != Stage.SELECTING:
                raise rx.WatchError("another process selected meanwhile")  # the step reads again
            tx.multi()  # type: ignore[no-untyped-call]
            tx.hset(
                self.keys.progress,
                mapping={
                    Progress.MATCHED: matched,
                    Progress.SCANNED: int(count),
                    Progress.BULK_MIN: lower,
                    Progress.BULK_MAX: below - 1,
                    Progress.STAGE: Stage.REPLAYING if matched else Stage.VERIFYING,
                },
            )
            await tx.execute()
        st.matched = matched
        st.sample_ids = [text(x) or "" for x in sample]

    async def move(
        self, spec: DLQReplaySpec, q: BullQueue, n: int, p: dict[str, str], now: datetime
    ) -> tuple[int, int, int]:
        """Up to ``n`` jobs, in equal chunks of at most :attr:`chunk`; (moved, skipped, missing)."""
        cursor, matched = int_field(p, Progress.CURSOR), int_field(p, Progress.MATCHED)
        left = min(n, matched - cursor)
        if left <= 0:
            return 0, 0, 0
        if self._paused is None:
            self._paused = await q.is_paused()
        size = math.ceil(left / math.ceil(left / self.chunk))  # equal chunks, none over self.chunk
        moved = skipped = 0
        async with RawTransaction(self.redis) as tx:
            while left > 0:
                count = min(left, size)
                first, result = await tx.guarded_exec(*self._chunk(spec, q, p, cursor, count, now))
                raise_errors(first)
                if result is None:
                    self._vetoed(text(first[1]) or "a watched key changed", int_field(p, Progress.BULK_MIN))
                    continue  # the paused flag changed: the same chunk again, to the right list
                raise_errors(result)
                did, gone, finished = (int(x) for x in result[0])
                moved, skipped, cursor, left = moved + did, skipped + gone, cursor + did + gone, left - count
                if finished:
                    break
        return moved, skipped, 0

    def _chunk(
        self, spec: DLQReplaySpec, q: BullQueue, p: dict[str, str], cursor: int, count: int, now: datetime
    ) -> tuple[list[bytes], list[bytes]]:
        """One chunk: (WATCH and the guard, the MULTI's body: our tally, then ``moveJobsToWait``)."""
        k, qk, sc = self.keys, q.keys, q.scripts
        paused = bool(self._paused)
        guard = pack(
            "EVAL",
            script_text(sc.bulk_guard),
            4,
            k.progress,
            qk.lease,
            qk.meta,
            qk.failed,
            self.lease_value,
            cursor,
            "1" if paused else "0",
            int_field(p, Progress.BULK_MIN),
        )
        top = int_field(p, Progress.BULK_MAX)
        body = [
            pack(
                "EVAL",
                script_text(sc.bulk_tally),
                3,
                qk.failed,
                k.progress,
                k.replayed,
                count,
                top,
                "1" if spec.reset_attempts else "0",
                qk.base,
                to_ms(now),
            ),
            q.move_to_wait_command(count=count, max_timestamp=top, paused=paused, inline=True),
        ]
        return [pack("WATCH", k.progress, qk.lease, qk.meta, qk.failed), guard], body

    def _vetoed(self, why: str, lower: int) -> None:
        """What a vetoed chunk means: a changed paused flag is taken for the next chunks; a
        failed job older than the window ends the replay; anything else ends the step.

        :raises OlderFailedJobs: see there.
        :raises redis.exceptions.WatchError: the lease or the cursor changed (the step reads again).
        """
        if why == "paused":
            self._paused = not self._paused
            return
        if why.startswith("older "):
            _, job_id, score = why.split(" ", 2)
            raise OlderFailedJobs(job_id, int(float(score)), lower)
        raise rx.WatchError(f"bulk chunk not applied: {why or 'a watched key changed'}")
