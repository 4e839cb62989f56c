"""The replay engine honours a QueuePolicy's per-job replay budget (``maxReplaysPerJob``).

Real failed BullMQ jobs, failed again by a real worker after each replay; the
budget is the one a child DLQReplay carries in its annotations.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayPhase
from requeue.policy import ReplayBudget
from requeue.queues import QueueKeys, ReplayKeys
from requeue.replay import ReplayEngine
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker, wait_in_set
from support.replay import replay_spec as make_spec

Q = "default"


async def drive(engine: ReplayEngine, spec: DLQReplaySpec) -> tuple[DLQReplayStatus, list[str]]:
    st, messages = DLQReplayStatus(), []
    for _ in range(1000):
        res = await engine.step(spec, st)
        st = res.status
        messages += [e.message for e in res.events]
        if st.phase.finished:
            return st, messages
    raise AssertionError(f"not finished: {st.phase} {st.message}")


async def fail_again(redis_url: str, ids: list[str]) -> None:
    """A real worker takes the replayed jobs and fails them once more."""
    async with run_worker(redis_url, Q, fail_when=lambda job: "still down"):
        await wait_in_set(redis_url, QueueKeys("bull", Q).failed, ids, timeout=30)


async def test_a_job_is_replayed_at_most_max_replays_per_job_times(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(
        redis_url, Q, [JobSpec("whatsapp.send", {"i": i}, reason="429") for i in range(6)]
    )
    budget = ReplayBudget.from_annotations(ReplayBudget.for_policy("pol-uid", 2).annotations())
    assert budget is not None
    spec = make_spec()

    for attempt in (1, 2):
        engine = ReplayEngine(r, replay_id=f"child-{attempt}", owner="ns/child", budget=budget)
        st, _ = await drive(engine, spec)
        assert st.phase == ReplayPhase.SUCCEEDED and st.matched == st.replayed == 6, st
        assert st.over_budget == 0
        await fail_again(redis_url, ids)

    # a dry run asks, and charges nothing
    dry, _ = await drive(
        ReplayEngine(r, replay_id="child-dry", owner="ns/child", budget=budget), make_spec(dryRun=True)
    )
    assert dry.matched == 0 and dry.breakdown is not None and dry.breakdown.by_name == {}
    assert dry.over_budget == 6
    assert await budget.used(r, ids) == dict.fromkeys(ids, 2)

    third = ReplayEngine(r, replay_id="child-3", owner="ns/child", budget=budget)
    st, messages = await drive(third, spec)
    assert st.phase == ReplayPhase.SUCCEEDED and st.matched == 0 and st.replayed == 0, st
    assert await r.zcard(QueueKeys("bull", Q).failed) == 6  # nothing moved a third time
    assert await r.hget(ReplayKeys("child-3").progress, "over_budget") == "6"
    assert st.over_budget == 6
    assert st.model_dump(mode="json", by_alias=True)["overBudget"] == 6  # shown in .status
    assert any("6 over their auto-replay budget" in m for m in messages), messages
    assert await budget.used(r, ids) == dict.fromkeys(ids, 2)

    # a replay a person created (no budget) is not limited
    st, _ = await drive(ReplayEngine(r, replay_id="manual", owner="ns/manual"), spec)
    assert st.matched == st.replayed == 6 and st.over_budget == 0


async def test_only_the_jobs_within_budget_are_snapshotted(redis_url: str, r: aioredis.Redis) -> None:
    ids = await make_failed_jobs(
        redis_url, Q, [JobSpec("a" if i % 2 else "b", {"i": i}, reason="boom") for i in range(8)]
    )
    budget = ReplayBudget.for_policy("pol-2", 1)
    assert await budget.take(r, "earlier-replay", ids[:3]) == ids[:3]  # these used their one replay

    engine = ReplayEngine(r, replay_id="child", owner="ns/child", budget=budget)
    st, _ = await drive(engine, make_spec())
    assert st.matched == st.replayed == 5, st
    assert st.over_budget == 3
    assert set(await r.lrange(ReplayKeys("child").snapshot, 0, -1)) == set(ids[3:])
    assert set(await r.lrange(QueueKeys("bull", Q).wait, 0, -1)) == set(ids[3:])
    assert st.breakdown is not None and sum(st.breakdown.by_name.values()) == 5
    assert sum(st.breakdown.by_reason.values()) == 5
    # a retried step of the same replay is not charged twice
    assert await budget.take(r, "child", ids[3:]) == ids[3:]
    assert await budget.used(r, ids) == dict.fromkeys(ids, 1)
