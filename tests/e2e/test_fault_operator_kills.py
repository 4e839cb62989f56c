"""The operator SIGKILLed (an OOM-killed pod) at 20 seeded random points of a 20k-job replay,
and of a QueuePolicy's auto replay, restarted each time: nothing lost, nothing moved twice,
and the status counts what Redis holds (issue 14).

The kill points are drawn by a seeded RNG over the replay's progress, counted as
``selected + moved`` (so some land in the selection stage, the rest among the moves);
the test polls Redis and kills as soon as the progress passes the next point. After
every kill, before the restart, the ids themselves are checked (``check_exactly_once``):
each moved id is in ``wait`` once, the counters equal the moved list, and ``failed``
holds exactly the rest. A failure prints the seed and the kill points.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from support import async_wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.dlqreplay import (
    DLQR,
    ReplayInRedis,
    check_exactly_once,
    in_redis,
    operator_command,
    replay,
    replay_uid,
    secret,
    status,
    wait_finished,
)
from support.kube import Kube
from support.operator_proc import OperatorProcess
from support.queuepolicy import (
    apply,
    apply_until_green,
    auto_replay,
    gated_policy,
    gates,
    wait_auto_replay,
    wait_policy,
    with_a_redis_gate,
)

#: Longer than the suite's 120 s default: 20k real jobs are made first, then 20 restarts.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

SEED = 14
JOBS = 20_000
#: Failed jobs of another name: never selected, so they must stay in ``failed``.
OTHERS = 300
KILLS = 20
RATE = {"jobsPerSecond": 1000, "batchSize": 100}


def kill_points(seed: int, kills: int, jobs: int, *, margin: int) -> list[int]:
    """``kills`` distinct points of progress (``selected + moved``, 0..2*jobs), sorted; none in the
    last ``margin``, so every kill lands before the replay ends."""
    return sorted(random.Random(seed).sample(range(1, 2 * jobs - margin), kills))


def progress_of(seen: ReplayInRedis) -> int:
    return len(seen.snapshot) + seen.replayed


@dataclass
class KillLog:
    """Where each kill landed, for the assertions and the report."""

    points: list[int]
    at: list[tuple[int, str, int]] = field(default_factory=list)  # (progress, stage, moved)

    def __str__(self) -> str:
        return f"seed {SEED}, points {self.points}, kills at (progress, stage, moved) {self.at}"


async def kill_at_points(
    operator: OperatorProcess,
    client: aioredis.Redis,
    uid: Callable[[], Awaitable[str | None]],
    all_ids: set[str],
    log: KillLog,
    *,
    check_status: Callable[[ReplayInRedis], Awaitable[None]],
) -> None:
    """For each point: wait until the progress passes it, SIGKILL, check the ids, restart.

    A point the last run already passed waits for the restarted process's first progress
    (a page selected, a batch moved), so every kill lands on work of the process it kills.
    """
    for point in log.points:
        current: ReplayInRedis | None = None
        target = max(point, log.at[-1][0] + 1 if log.at else 0)

        async def passed(target: int = target) -> bool:
            nonlocal current
            replay_id = await uid()
            if replay_id is None:
                return False
            current = await in_redis(client, replay_id)
            return progress_of(current) >= target or current.done

        def explain(point: int = point) -> str:
            return f"progress {point}; {log}\n{operator.logs()[-3000:]}"

        await async_wait_until(passed, timeout=60, interval=0.01, message=explain)
        operator.kill()
        replay_id = await uid()
        assert replay_id is not None and current is not None
        after = await in_redis(client, replay_id)  # what the killed process left behind
        assert not after.done, f"the replay ended before kill {len(log.at) + 1}; {log}"
        log.at.append((progress_of(after), after.stage, after.replayed))
        check_exactly_once(after, all_ids, what=f"after kill {len(log.at)}; {log}")
        await check_status(after)
        operator.start()


async def test_sigkill_at_20_random_points_of_a_20k_replay_moves_each_job_once(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    began = time.monotonic()
    selected = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("whatsapp.send", {"to": f"+49{i}"}, reason="429 Too Many Requests") for i in range(JOBS)],
        timeout=240,
    )
    others = await make_failed_jobs(
        redis_url, "default", [JobSpec("pdf.generate", {"doc": i}, reason="disk full") for i in range(OTHERS)]
    )
    all_ids = set(selected) | set(others)
    made = time.monotonic()
    await apply(kube, secret("redis", {"url": redis_url}))
    operator = operator_factory(operator_command())
    await apply(kube, replay("big", "default", selector={"jobNames": ["whatsapp.*"]}, rate=RATE))
    uid = await asyncio.to_thread(replay_uid, kube, "big")

    async def the_uid() -> str:
        return uid

    async def status_never_ahead(seen: ReplayInRedis) -> None:
        """The stored status may lag Redis (it is written every few seconds), never lead it."""
        st = await asyncio.to_thread(status, kube, "big")
        assert st.get("replayed", 0) <= seen.replayed, (st, seen.progress)
        assert st.get("matched", 0) <= int(seen.progress.get("matched") or 0), (st, seen.progress)

    log = KillLog(kill_points(SEED, KILLS, JOBS, margin=2000))
    await kill_at_points(operator, redis_client, the_uid, all_ids, log, check_status=status_never_ahead)

    st = await wait_finished(
        kube,
        "big",
        operator=operator,
        timeout=120,
        what=f"the end of the replay; {log}",
    )
    seen = await in_redis(redis_client, uid)
    check_exactly_once(seen, all_ids, selected=selected, what=str(log))
    assert seen.done and len(seen.moved) == JOBS
    assert st["phase"] == "Succeeded", st
    assert st["matched"] == st["replayed"] == seen.replayed == JOBS, st
    assert st["skipped"] == 0 and st["progress"] == f"{JOBS}/{JOBS}", st
    assert seen.failed == set(others)  # exactly the unselected stay failed
    assert operator.starts == KILLS + 1
    stages = {stage for _, stage, _ in log.at}
    assert "replaying" in stages, log  # the kills did land among the moves
    print(
        f"\n{log}\nmade {JOBS + OTHERS} failed jobs in {made - began:.1f}s; "
        f"replay with {KILLS} kills in {time.monotonic() - made:.1f}s"
    )


AUTO_JOBS = 5000
AUTO_KILLS = KILLS


async def test_sigkill_at_random_points_of_a_policy_auto_replay_moves_each_job_once(
    kube: Kube,
    operator_factory: Any,
    redis_url: str,
    redis_client: aioredis.Redis,
    redis_factory: Any,
) -> None:
    """The same for the child DLQReplay a QueuePolicy creates after an outage: kills hit the
    policy's daemon too, and still exactly one child replays exactly the outage's failures."""
    began = time.monotonic()
    before = await make_failed_jobs(
        redis_url,
        "default",
        [JobSpec("whatsapp.send", {"old": i}, reason="429 Too Many Requests") for i in range(50)],
    )
    gate = await with_a_redis_gate(kube, redis_url, redis_factory)
    operator = operator_factory(operator_command())
    manifest = gated_policy("visapi-queues", ["default"], actions={"autoReplay": auto_replay(RATE)})
    await apply_until_green(kube, manifest, operator=operator)
    gate.kill()
    await wait_policy(
        kube, "visapi-queues", lambda s: gates(s) == "False", operator=operator, what="the outage"
    )
    during = await make_failed_jobs(
        redis_url,
        "default",
        [
            JobSpec("whatsapp.send", {"to": f"+49{i}"}, reason="ECONNREFUSED cache:6379")
            for i in range(AUTO_JOBS)
        ],
        timeout=120,
    )
    all_ids = set(before) | set(during)
    made = time.monotonic()
    gate.restart()

    child: str | None = None

    async def child_uid() -> str | None:
        """The child's UID once the policy has made it (a kill may land before that)."""
        nonlocal child
        if child is None:
            children = await asyncio.to_thread(kube.list_objects, DLQR, "default")
            if not children:
                return None
            child = children[0]["metadata"]["name"]
        return await asyncio.to_thread(replay_uid, kube, child)

    async def no_status_check(seen: ReplayInRedis) -> None:
        return None

    log = KillLog(kill_points(SEED, AUTO_KILLS, AUTO_JOBS, margin=1000))
    await kill_at_points(operator, redis_client, child_uid, all_ids, log, check_status=no_status_check)

    name = await wait_auto_replay(kube, "visapi-queues", operator=operator)
    assert name == child
    st = await wait_finished(
        kube,
        name,
        operator=operator,
        timeout=90,
        what=f"the end of the child; {log}",
    )
    uid = await asyncio.to_thread(replay_uid, kube, name)
    seen = await in_redis(redis_client, uid)
    check_exactly_once(seen, all_ids, selected=during, what=str(log))
    assert st["phase"] == "Succeeded", st
    assert st["matched"] == st["replayed"] == seen.replayed == AUTO_JOBS, st
    assert seen.failed == set(before)  # what failed before the outage is not the outage's
    children = await asyncio.to_thread(kube.list_objects, DLQR, "default")
    assert [c["metadata"]["name"] for c in children] == [name]  # one child, whatever the kills
    await wait_policy(
        kube,
        "visapi-queues",
        lambda s: any(a["action"] == "AutoReplay" for a in s.get("lastActions", [])),
        operator=operator,
    )
    assert operator.starts == AUTO_KILLS + 1
    print(
        f"\n{log}\nmade {AUTO_JOBS + 50} failed jobs in {made - began:.1f}s; "
        f"auto replay with {AUTO_KILLS} kills in {time.monotonic() - made:.1f}s"
    )
