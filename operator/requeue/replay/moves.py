"""The replay's writes: snapshot ids moved back to wait (or copied to ``targetQueue``), chunk by chunk.

This is where exactly-once is kept. Every chunk is ONE MULTI/EXEC that moves its jobs and
advances the snapshot cursor and counters together, WATCHing what the chunk relied on, so
a crash, an abort or a lost reply loses and repeats nothing:

* A "fast" chunk is BullMQ's ``moveJobsToWait``, used only where it does exactly what
  ``reprocessJob`` would: the ids are the head of the failed set and none has a priority
  or lifo. A guard script vetoes the chunk's own EXEC unless that still holds.
* A "slow" chunk is BullMQ's ``reprocessJob`` per job, after a bookkeeping script of ours
  that predicts its answer for each id; ``reprocessJob`` refuses a job no longer failed.
* A targetQueue chunk adds a copy and removes the original in the same MULTI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from requeue.api import DLQReplaySpec
from requeue.queues import BullQueue, ReplayKeys
from requeue.queues.adapter import copy_source
from requeue.queues.keys import Progress
from requeue.queues.raw import RawTransaction, pack, raise_errors, script_text
from requeue.replay.matcher import to_ms
from requeue.replay.state import Stage, int_field

# The engine's log, as before these writes had a module of their own.
logger = logging.getLogger("requeue.replay.engine")

#: Jobs per sub-transaction of a replay batch with BullMQ's ``reprocessJob`` (~20 µs of Redis
#: time each: a MULTI stays around 2 ms); ``moveJobsToWait``'s is :attr:`EngineTuning.move_chunk`.
REPROCESS_CHUNK = 64
#: Jobs per sub-transaction of a targetQueue batch (an add and a remove script each).
COPY_CHUNK = 50

#: What a chunk did: (snapshot ids handled, (moved, skipped, missing), snapshot finished),
#: or None when a WATCHed key changed (the next step tries again).
ChunkResult = tuple[int, tuple[int, int, int], bool] | None


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


def copy_id(spec: DLQReplaySpec, job_id: str) -> str:
    """The deterministic id of a job's copy in ``targetQueue``."""
    return f"requeue-{spec.queue}-{job_id}"


def _parse_plan(reply: list[Any]) -> _Plan:
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


def _parse_head(reply: list[Any]) -> _Head:
    ids = [str(x) for x in reply[7 : 7 + (len(reply) - 7) // 2]]
    flags = reply[7 + len(ids) :]
    return _Head(
        cursor=int(reply[1]),
        matched=int(reply[2]),
        paused=bool(reply[3]),
        head_ok=bool(reply[4]),
        last_score=str(reply[5]),
        copied_upto=int(reply[6]),
        ids=ids,
        lifo={i for i, f in zip(ids, flags, strict=True) if f == "1"},
    )


class Mover:
    """Moves the snapshot of one replay, fenced by its queue lease.

    :param lease_value: what the replay's lease holds; every chunk checks it is still ours.
    :param owner: ``namespace/name``, for the log.
    """

    def __init__(
        self,
        redis: Redis,
        keys: ReplayKeys,
        *,
        lease_value: str,
        owner: str,
        clock: Callable[[], datetime],
        move_chunk: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.lease_value = lease_value
        self.owner = owner
        self.clock = clock
        self.move_chunk = move_chunk
        self._fast_aborts = 0

    # -- in place: moveJobsToWait and reprocessJob ----------------------------

    async def reprocess_batch(
        self, spec: DLQReplaySpec, q: BullQueue, n: int, p: dict[str, str] | None = None
    ) -> tuple[int, int, int]:
        """Up to ``n`` jobs in place, in sub-transactions that each stay a few ms of Redis time.

        One read (``PLAN_MOVES``) splits the next ids into chunks. A "fast" chunk is BullMQ's
        ``moveJobsToWait``, used only where it does exactly what ``reprocessJob`` would: the
        ids are the head of the failed set and none has a priority or lifo. It is ONE write
        and one round trip: WATCH, a guard script that vetoes the EXEC unless that still holds
        (so the plan is only a prediction), and the MULTI with the move and its bookkeeping.
        A "slow" chunk is ``reprocessJob`` per job. Every sub-transaction advances cursor and
        counters atomically with its moves, so a crash or an abort loses and repeats nothing.
        """
        plan = await self.plan(q, n, self._plan_mode(p))
        moved = skipped = missing = 0
        cursor = plan.cursor
        for kind, count, last_score in plan.chunks:
            if kind == "f":
                done = await self.fast_chunk(spec, q, cursor, count, last_score, plan.paused, plan.matched)
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

    def _plan_mode(self, p: dict[str, str] | None) -> str:
        """How ``PLAN_MOVES`` may tell the jobs ``moveJobsToWait`` can move ("off": it may not)."""
        if p is not None and not self._fast_aborts:
            if p.get(Progress.SLOW_POS) == "1":
                return "pos"
            if p.get(Progress.PRIO_COUNT) == "0" and int_field(p, Progress.LIFO_COUNT) == 0:
                return "none"  # selected by an older requeue: only when no job needs reprocessJob
        return "off"

    async def plan(self, q: BullQueue, n: int, mode: str) -> _Plan:
        """Split the next ``n`` snapshot ids into fast and slow chunks (a read, so a prediction)."""
        k = self.keys
        raw = await q.scripts.plan_moves(
            keys=[k.progress, q.keys.lease, q.keys.meta, k.snapshot, q.keys.failed, k.slow],
            args=[self.lease_value, n, self.move_chunk, REPROCESS_CHUNK, mode],
        )
        reply = json.loads(raw)
        if not reply[0]:
            raise rx.WatchError("lease lost")
        return _parse_plan(reply)

    async def fast_chunk(
        self,
        spec: DLQReplaySpec,
        q: BullQueue,
        cursor: int,
        count: int,
        last_score: str,
        paused: bool,
        matched: int,
    ) -> int | None:
        """``count`` snapshot ids from ``cursor`` with ``moveJobsToWait``, guarded (see
        :meth:`reprocess_batch`); the number moved, or None when the guard vetoed it.

        The scripts go as ``EVAL`` with their text: a script missing from Redis's cache (a
        restart, SCRIPT FLUSH) would otherwise fail inside the MULTI after the others ran."""
        k, qk = self.keys, q.keys
        sc = q.scripts
        guard = pack(
            "EVAL",
            script_text(sc.fast_guard),
            5,
            k.progress,
            qk.lease,
            qk.meta,
            k.snapshot,
            qk.failed,
            self.lease_value,
            cursor,
            count,
            last_score,
            "1" if paused else "0",
        )
        body = [
            pack(
                "EVAL",
                script_text(sc.fast_tally),
                3,
                k.progress,
                k.snapshot,
                k.replayed,
                cursor,
                count,
                "1" if spec.reset_attempts else "0",
                qk.base,
            ),
            q.move_to_wait_command(count=count, max_timestamp=last_score, paused=paused, inline=True),
            *self._done_cmds(cursor + count, matched),
        ]
        async with RawTransaction(self.redis) as tx:
            first, result = await tx.guarded_exec(
                [pack("WATCH", k.progress, qk.lease, qk.meta, qk.failed), guard], body
            )
        raise_errors(first)
        if result is None:
            return None
        raise_errors(result)
        return int(result[0])

    async def _reprocess_chunk(self, spec: DLQReplaySpec, q: BullQueue, limit: int) -> ChunkResult:
        """One sub-transaction of ``reprocessJob`` per job: two round trips (WATCH and the head,
        then the MULTI). None when a WATCHed key changed (the next step tries again)."""
        size = min(limit, REPROCESS_CHUNK)
        k = self.keys
        async with RawTransaction(self.redis) as tx:
            head = await self._batch_head(tx, q, size, [k.progress, q.keys.lease, q.keys.meta])
            ids = head.ids
            end = head.cursor + len(ids)
            cmds = [self._tally_cmd(q, end, ids)]
            cmds += q.reprocess_commands(
                ids, paused=head.paused, lifo=head.lifo, reset_attempts=spec.reset_attempts
            )
            cmds += self._done_cmds(end, head.matched)
            result = await tx.exec(cmds)
        if result is None:
            return None
        raise_errors(result)
        moved, skipped, missing = (int(x) for x in result[0])
        did = [int(c) for c in result[1 : 1 + len(ids)]].count(1)
        if did != moved:  # pragma: no cover - would mean BullMQ's script changed
            logger.warning("replay %s: tally predicted %d moves, BullMQ did %d", self.owner, moved, did)
        return len(ids), (moved, skipped, missing), end >= head.matched

    # -- what every chunk shares ---------------------------------------------

    def _batch_scripts(self, q: BullQueue) -> tuple[AsyncScript, ...]:
        sc = q.scripts
        return (
            sc.batch_head,
            sc.tally_batch,
            sc.reprocess_job,
            sc.remove_job,
            sc.add_standard_job,
            sc.add_prioritized_job,
        )

    async def _batch_head(
        self, tx: RawTransaction, q: BullQueue, size: int, watch: Sequence[str] = ()
    ) -> _Head:
        """WATCH ``watch``, make sure the batch's scripts are loaded, read the head: one round
        trip (two when a script had to be loaded)."""
        k = self.keys
        scripts = self._batch_scripts(q)
        head = pack(
            "EVALSHA",
            q.scripts.batch_head.sha,
            6,
            k.progress,
            q.keys.lease,
            q.keys.meta,
            k.snapshot,
            k.lifo,
            q.keys.failed,
            self.lease_value,
            size,
            q.keys.base,
            "0",
        )
        pre = [pack("WATCH", *watch)] if watch else []
        replies = await tx.call([*pre, pack("SCRIPT", "EXISTS", *(sc.sha for sc in scripts)), head])
        exists, raw = replies[-2], replies[-1]
        if isinstance(exists, Exception):
            raise exists
        missing = [sc for sc, ok in zip(scripts, exists, strict=True) if not int(ok)]
        if missing:
            await tx.call([pack("SCRIPT", "LOAD", script_text(sc)) for sc in missing])
            raw = (await tx.call([head]))[0]
        if isinstance(raw, Exception):
            raise raw
        reply = json.loads(raw)
        if not reply[0]:
            raise rx.WatchError("lease lost")
        return _parse_head(reply)

    def _tally_cmd(self, q: BullQueue, end: int, ids: list[str]) -> bytes:
        """The bookkeeping script that predicts each id's fate and advances cursor and counters."""
        k = self.keys
        return pack(
            "EVALSHA",
            q.scripts.tally_batch.sha,
            3,
            k.progress,
            q.keys.failed,
            k.replayed,
            q.keys.base,
            end,
            0,
            "failed",
            *ids,
        )

    def _done_cmds(self, end: int, matched: int) -> list[bytes]:
        """The chunk that handles the last snapshot id ends the stage in its own MULTI."""
        if end < matched:
            return []
        return [
            pack(
                "HSET",
                self.keys.progress,
                Progress.STAGE,
                Stage.VERIFYING,
                Progress.REPLAYED_MS,
                to_ms(self.clock()),
            )
        ]

    # -- targetQueue: copy, then remove the original, in one MULTI ------------

    async def copy_batch(
        self, spec: DLQReplaySpec, q: BullQueue, target: BullQueue, n: int
    ) -> tuple[int, int, int]:
        """targetQueue: copy up to ``n`` jobs into the target queue and remove the originals.

        Copy and removal of a job happen in ONE MULTI/EXEC, which WATCHes the source job
        hashes: a source job that leaves the failed set meanwhile (retried, made active,
        removed) aborts the transaction, and one that left before is neither copied nor
        removed and counts as skipped. There is no moment with the copy made and the source
        still in place, so a crash can neither duplicate nor lose a job. The copy's id is
        derived from the source's, so BullMQ's duplicate-id rule keeps even a replay of a
        batch from adding a second copy.
        """
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

    async def _copy_chunk(
        self, spec: DLQReplaySpec, q: BullQueue, target: BullQueue, size: int
    ) -> ChunkResult:
        k = self.keys
        legacy_pending = k.legacy_copied  # written by requeue <= 0.1's two-step copy
        async with RawTransaction(self.redis) as tx:
            head = await self._batch_head(tx, q, size, [k.progress, q.keys.lease, target.keys.meta])
            ids = head.ids
            if not ids:
                return 0, (0, 0, 0), True
            end = head.cursor + len(ids)
            moving, cmds, copied_before = await self._copy_commands(tx, spec, q, target, head, legacy_pending)
            tail = [pack("DEL", legacy_pending)] if copied_before else []
            result = await tx.exec(
                [self._tally_cmd(q, end, ids), *cmds, *tail, *self._done_cmds(end, head.matched)]
            )
        if result is None:
            return None
        raise_errors(result)
        moved, skipped, missing = (int(x) for x in result[0])
        if moved != moving:  # pragma: no cover - the WATCH makes the prediction exact
            logger.warning("replay %s: tally predicted %d moves, %d copied", self.owner, moved, moving)
        return len(ids), (moved, skipped, missing), end >= head.matched

    async def _copy_commands(
        self,
        tx: RawTransaction,
        spec: DLQReplaySpec,
        q: BullQueue,
        target: BullQueue,
        head: _Head,
        legacy_pending: str,
    ) -> tuple[int, list[bytes], bool]:
        """WATCH the head's source jobs and read them; the copy and remove commands of those
        still failed. Returns (jobs to move, commands, whether an old two-step copy left some)."""
        ids = head.ids
        replies = await tx.call(
            [
                pack("WATCH", *(q.keys.job(i) for i in ids)),
                pack("ZMSCORE", q.keys.failed, *ids),
                target.paused_command(),
                pack("LRANGE", legacy_pending, 0, -1) if head.copied_upto > head.cursor else pack("PING"),
                *(q.copy_source_command(i) for i in ids),
            ]
        )
        raise_errors(replies)
        scores, target_paused = replies[1], bool(replies[2])
        copied_before = set(replies[3]) if isinstance(replies[3], list) else set()
        fields = replies[4:]
        now_ms = to_ms(self.clock())
        moving = 0
        cmds: list[bytes] = []
        for job_id, score, reply in zip(ids, scores, fields, strict=True):
            job = copy_source(reply)
            if score is None or job is None:
                continue  # no longer failed (or gone): not ours to move any more
            moving += 1
            if job_id not in copied_before:
                cmds.append(
                    target.copy_command(
                        job, new_id=copy_id(spec, job_id), timestamp_ms=now_ms, paused=target_paused
                    )
                )
            cmds.append(q.remove_command(job_id))
        return moving, cmds, bool(copied_before)
