"""The gates: a replay waits until every gate passes, with the queue paused while one is red.

A replay into a system that is still failing only fails the jobs again. The gates (HTTP,
Prometheus, ... checks in :mod:`requeue.gates`) hold a replay before it starts and, with
``recheckDuringReplay``, while it runs. With ``pauseQueue`` the queue is paused while a
gate is red, and resumed only by the replay that paused it (``we_paused`` in the
progress hash): a queue someone else paused stays paused.

A gate whose check cannot run because of its configuration (``misconfigured`` in its
status: a missing Secret or key, a destination the operator's policy denies, a URL, DSN
or CA bundle that does not parse) ends the replay Failed at once with that reason
(``SecretNotFound``...), as the CLI refuses to start without the Secrets a manifest names
(exit 2). Waiting would hold the queue's lease for the whole ``gatePolicy.timeout`` to end
in ``GatesTimedOut`` anyway unless someone notices; a failed replay that never passed its
gates has moved nothing, and one fixed Secret plus a re-applied DLQReplay starts afresh.
The queue is left as found: a pause this replay made for a real red gate is undone by
the end of the replay, like any other failure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from redis.asyncio import Redis

from requeue.api import (
    DLQReplaySpec,
    DLQReplayStatus,
    GatePolicy,
    GateStatus,
    ReplayPhase,
    find_condition,
    parse_duration,
)
from requeue.api.base import ConditionStatus
from requeue.api.conditions import Reason, ReplayCondition, stored_reason
from requeue.errors import GatesTimedOut
from requeue.queues import BullQueue, ReplayKeys
from requeue.queues.keys import Progress
from requeue.replay.state import Finish, StepContext

#: How the message a replay holding on its gates writes to ``.status.message`` begins.
WAITING_FOR_GATES = "waiting for gates"


def current_message(phase: str, message: str) -> str:
    """``.status.message`` as a progress line should show it: the gates' "waiting for gates (...)"
    stays in the status until the next step writes its own message, so once the replay has left
    ``WaitingForGates`` (or ``Pending``) that text is stale and shown as nothing."""
    if message.startswith(WAITING_FOR_GATES) and phase not in (
        ReplayPhase.WAITING_FOR_GATES.value,
        ReplayPhase.PENDING.value,
    ):
        return ""
    return message


class GateRunnerLike(Protocol):
    """What the engine needs from the gates (``requeue.gates.GateRunner`` is one)."""

    policy: GatePolicy

    async def check(self, previous: list[GateStatus], now: datetime) -> list[GateStatus]: ...

    def all_passed(self, statuses: list[GateStatus]) -> bool: ...

    def any_red(self, statuses: list[GateStatus]) -> bool: ...

    def due(self, statuses: list[GateStatus], now: datetime) -> bool: ...


def fail_if_misconfigured(statuses: list[GateStatus]) -> None:
    """End the replay Failed when a gate cannot be checked because of its configuration,
    with the first such gate's reason (``SecretNotFound``...) and every such gate named."""
    unusable = [g for g in statuses if g.misconfigured]
    if not unusable:
        return
    reason = stored_reason(unusable[0].misconfigured, Reason.GATE_MISCONFIGURED)
    raise Finish(
        ReplayPhase.FAILED,
        reason,
        "; ".join(f"gate {g.name} cannot be checked: {g.message}" for g in unusable)
        + " (fix the gate's configuration and apply the replay again)",
    )


class Gating:
    """Checks one replay's gates and pauses or resumes its queue for them."""

    def __init__(self, redis: Redis, keys: ReplayKeys) -> None:
        self.redis = redis
        self.keys = keys

    async def check(
        self,
        runner: GateRunnerLike | None,
        spec: DLQReplaySpec,
        q: BullQueue,
        ctx: StepContext,
        p: dict[str, str],
    ) -> float | None:
        """None when every gate passes (queue resumed if we paused it), else the delay to wait."""
        st = ctx.status
        if runner is None or not spec.gates:
            if find_condition(st.conditions, ReplayCondition.GATES_PASSED) is None:
                ctx.condition(ReplayCondition.GATES_PASSED, True, Reason.NO_GATES, "no gates configured")
            await self.resume_if_ours(q, ctx)
            return None
        if runner.due(st.gates, ctx.now):
            st.gates = await runner.check(st.gates, ctx.now)
        fail_if_misconfigured(st.gates)
        if runner.all_passed(st.gates):
            before = find_condition(st.conditions, ReplayCondition.GATES_PASSED)
            if before is None or before.status != ConditionStatus.TRUE:
                ctx.event("Normal", Reason.GATES_PASSED, "all gates pass")
            ctx.condition(ReplayCondition.GATES_PASSED, True, Reason.ALL_GATES_PASSED, "all gates pass")
            await self.resume_if_ours(q, ctx)
            return None
        return await self._hold(runner, spec, q, ctx, p)

    async def _hold(
        self, runner: GateRunnerLike, spec: DLQReplaySpec, q: BullQueue, ctx: StepContext, p: dict[str, str]
    ) -> float:
        """A gate is not green: say which, pause the queue on red (``pauseQueue``), and give up
        once the gates stayed shut for ``timeout``. Returns the delay until the next check."""
        st, now = ctx.status, ctx.now
        red = runner.any_red(st.gates)
        names = ", ".join(f"{g.name}: {g.message}" for g in st.gates if not g.healthy) or "not checked yet"
        msg = f"{WAITING_FOR_GATES} ({names})"
        before = find_condition(st.conditions, ReplayCondition.GATES_PASSED)
        if red and (
            before is None or before.status != ConditionStatus.FALSE or before.reason != Reason.GATES_RED
        ):
            ctx.event("Warning", Reason.GATES_RED, msg)
        ctx.condition(
            ReplayCondition.GATES_PASSED, False, Reason.GATES_RED if red else Reason.GATES_PENDING, msg
        )
        st.message = msg
        if red and spec.pause_queue:
            await self.pause_if_needed(q, ctx, p)
        since = find_condition(st.conditions, ReplayCondition.GATES_PASSED)
        assert since is not None
        timeout = parse_duration(runner.policy.timeout)
        if now - since.last_transition_time >= timeout:
            raise Finish(
                ReplayPhase.FAILED,
                GatesTimedOut.reason,
                f"gates did not pass within {runner.policy.timeout}: {names}",
            )
        return self._wait(runner, st, now, since.last_transition_time + timeout)

    @staticmethod
    def _wait(runner: GateRunnerLike, st: DLQReplayStatus, now: datetime, deadline: datetime) -> float:
        """Until the runner's next check is due (``next_check_in`` when it has one), at most
        until the deadline."""
        interval = parse_duration(runner.policy.interval).total_seconds()
        next_in = getattr(runner, "next_check_in", None)
        if callable(next_in):
            value = next_in(st.gates, now)
            if isinstance(value, int | float):
                interval = max(0.0, float(value))
        remaining = (deadline - now).total_seconds()
        return max(0.05, min(interval, remaining))

    async def pause_if_needed(self, q: BullQueue, ctx: StepContext, p: dict[str, str]) -> None:
        """Pause the queue while a gate is red, unless it is paused already (then it is not ours
        to resume). The pause and ``we_paused`` commit together."""
        if p.get(Progress.WE_PAUSED) == "1":
            return
        if await q.is_paused():
            ctx.condition(
                ReplayCondition.QUEUE_PAUSED,
                True,
                Reason.PAUSED_BY_OTHERS,
                "queue was already paused by someone else; requeue leaves it paused",
            )
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            await q.queue_pause(pipe, True)
            pipe.hset(self.keys.progress, Progress.WE_PAUSED, "1")
            await pipe.execute()
        p[Progress.WE_PAUSED] = "1"
        ctx.status.queue_paused_by_replay = True
        ctx.condition(
            ReplayCondition.QUEUE_PAUSED,
            True,
            Reason.PAUSED_BY_REPLAY,
            "paused by this replay while gates are red",
        )
        ctx.event("Normal", Reason.QUEUE_PAUSED, "paused the queue while gates are red")

    async def resume_if_ours(self, q: BullQueue, ctx: StepContext) -> None:
        """Resume the queue only if this replay paused it."""
        if await self.redis.hget(self.keys.progress, Progress.WE_PAUSED) not in ("1", b"1"):
            ctx.status.queue_paused_by_replay = False
            return
        await q.resume()
        await self.redis.hdel(self.keys.progress, Progress.WE_PAUSED)
        ctx.status.queue_paused_by_replay = False
        ctx.condition(
            ReplayCondition.QUEUE_PAUSED,
            False,
            Reason.RESUMED_BY_REPLAY,
            "resumed the queue this replay paused",
        )
        ctx.event("Normal", Reason.QUEUE_RESUMED, "resumed the queue this replay had paused")

    async def held_during_replay(
        self,
        runner: GateRunnerLike | None,
        spec: DLQReplaySpec,
        q: BullQueue,
        ctx: StepContext,
        p: dict[str, str],
    ) -> float | None:
        """recheckDuringReplay: a running replay is held only once a gate is red (failureThreshold
        failures in a row), so a single blip does not stop it; a held one goes on only when
        every gate passes again (successThreshold), like the start. None when not held."""
        if runner is None or not spec.gates or not spec.gate_policy.recheck_during_replay:
            return None
        st = ctx.status
        gates_ok = find_condition(st.conditions, ReplayCondition.GATES_PASSED)
        held = gates_ok is not None and gates_ok.status != ConditionStatus.TRUE
        if not held and runner.due(st.gates, ctx.now):
            st.gates = await runner.check(st.gates, ctx.now)
            fail_if_misconfigured(st.gates)
            held = runner.any_red(st.gates)
        if not held:
            return None
        wait = await self.check(runner, spec, q, ctx, p)
        if wait is not None:
            st.phase = ReplayPhase.WAITING_FOR_GATES
            ctx.condition(ReplayCondition.PROGRESSING, False, Reason.HELD_BY_GATES, st.message)
        return wait
