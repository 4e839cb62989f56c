"""The verification stage: did the replayed jobs complete, or fail again?

A replay that moved every job can still have fixed nothing. Verification watches the
replayed ids (or their copies in ``targetQueue``) for ``verify.window`` and ends the replay
Failed when too many fail again. It walks the replayed list a chunk per step, keeping the
pass's partial counts in the progress hash, so a restart mid-pass resumes it.
"""

from __future__ import annotations

from redis.asyncio import Redis

from requeue.api import DLQReplaySpec, ReplayPhase, Verify, parse_duration
from requeue.api.conditions import Reason, ReplayCondition
from requeue.errors import VerificationFailed
from requeue.queues import BullQueue, ReplayKeys
from requeue.queues.adapter import text
from requeue.queues.keys import Progress
from requeue.replay.moves import copy_id
from requeue.replay.state import Finish, StepContext, int_field

#: Replayed ids checked per verification step.
VERIFY_CHUNK = 500
#: Delay between two verification passes (also bounded by the window's end).
VERIFY_POLL = 2.0


class Verification:
    """Checks the replayed jobs of one replay, a chunk per step."""

    def __init__(self, redis: Redis, keys: ReplayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def step(
        self, spec: DLQReplaySpec, watched: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float:
        """Check the next chunk; at the end of a pass, judge the replay (or wait for the next)."""
        st = ctx.status
        if spec.verify is None:
            raise Finish(
                ReplayPhase.SUCCEEDED, Reason.SUCCEEDED, f"moved {st.replayed} of {st.matched} selected jobs"
            )
        pos = int_field(p, Progress.V_POS)
        raw = await self.redis.lrange(self.keys.replayed, pos, pos + VERIFY_CHUNK - 1)
        ids = [text(x) or "" for x in raw]
        if spec.target_queue:
            ids = [copy_id(spec, i) for i in ids]
        completed, failed, pending = await self._states(watched, ids)
        new_pos = pos + len(ids)
        pass_done = new_pos >= st.replayed
        await self._record(p, pass_done, new_pos, completed, failed, pending)
        if not pass_done:
            return 0.0
        return self._judge(
            spec.verify,
            ctx,
            int_field(p, Progress.PASS_COMPLETED) + completed,
            int_field(p, Progress.PASS_FAILED) + failed,
        )

    async def _states(self, watched: BullQueue, ids: list[str]) -> tuple[int, int, int]:
        """How many of ``ids`` completed (or were removed), failed again, are still pending."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(watched.keys.job(job_id))
            if ids:
                pipe.zmscore(watched.keys.completed, ids)
                pipe.zmscore(watched.keys.failed, ids)
            res = await pipe.execute()
        completed = failed = pending = 0
        if ids:
            exists, in_completed, in_failed = res[: len(ids)], res[len(ids)], res[len(ids) + 1]
            for e, c, f in zip(exists, in_completed, in_failed, strict=True):
                if f is not None:
                    failed += 1
                elif c is not None or not e:
                    completed += 1
                else:
                    pending += 1
        return completed, failed, pending

    async def _record(
        self, p: dict[str, str], pass_done: bool, new_pos: int, completed: int, failed: int, pending: int
    ) -> None:
        """Add the chunk to the pass's partial counts, or publish the pass and start the next."""
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            if pass_done:
                pipe.hset(
                    k.progress,
                    mapping={
                        Progress.VERIFIED_COMPLETED: int_field(p, Progress.PASS_COMPLETED) + completed,
                        Progress.VERIFIED_FAILED: int_field(p, Progress.PASS_FAILED) + failed,
                        Progress.VERIFIED_PENDING: int_field(p, Progress.PASS_PENDING) + pending,
                        Progress.V_POS: 0,
                        Progress.PASS_COMPLETED: 0,
                        Progress.PASS_FAILED: 0,
                        Progress.PASS_PENDING: 0,
                    },
                )
            else:
                pipe.hset(k.progress, mapping={Progress.V_POS: new_pos})
                pipe.hincrby(k.progress, Progress.PASS_COMPLETED, completed)
                pipe.hincrby(k.progress, Progress.PASS_FAILED, failed)
                pipe.hincrby(k.progress, Progress.PASS_PENDING, pending)
            await pipe.execute()

    @staticmethod
    def _judge(verify: Verify, ctx: StepContext, c_total: int, f_total: int) -> float:
        """End the replay once the pass decides it; else the delay until the next pass."""
        st, now = ctx.status, ctx.now
        st.completed = c_total
        st.failed_again = f_total
        pending_total = st.replayed - c_total - f_total
        total = st.replayed
        rate = c_total / total if total else 1.0
        finished_at = st.replay_finished_at or now
        window_end = finished_at + parse_duration(verify.window)
        summary = (
            f"{c_total} of {total} replayed jobs completed ({rate:.1%}), {f_total} failed again, "
            f"{pending_total} pending"
        )
        st.message = f"verifying: {summary}"
        too_many = verify.max_failed_again is not None and f_total > verify.max_failed_again
        hopeless = total > 0 and (total - f_total) / total < verify.min_success_rate
        if too_many or hopeless:
            raise Finish(ReplayPhase.FAILED, VerificationFailed.reason, summary)
        if pending_total == 0 or now >= window_end:
            if rate >= verify.min_success_rate:
                raise Finish(ReplayPhase.SUCCEEDED, Reason.VERIFIED, summary)
            raise Finish(ReplayPhase.FAILED, VerificationFailed.reason, summary)
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.VERIFYING, st.message)
        return max(0.05, min(VERIFY_POLL, (window_end - now).total_seconds()))
