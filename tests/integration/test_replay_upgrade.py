"""A replay started by the previous requeue resumes after an upgrade, moving each job exactly once.

The Redis state below is written with the literal field names and stage values the previous
version wrote (``git show 8ef6e83:operator/requeue/replay/engine.py``, ``selection.py``,
``verify.py``, ``queues/lua.py``), not through :mod:`requeue.queues.keys`: if a declared
name changed its stored value, these replays would no longer resume and this test fails.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from requeue.api import DLQReplaySpec, ReplayPhase
from requeue.queues import BullQueue, QueueKeys, ReplayKeys
from requeue.replay import ReplayEngine
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.replay import drive
from support.replay import replay_spec as make_spec

Q = "default"


def ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def previous_selection(spec: DLQReplaySpec) -> str:
    """The ``selection`` field as the previous version's ``_begin`` wrote it."""
    wire = spec.to_wire()
    return json.dumps(
        {k: wire.get(k) for k in ("queue", "prefix", "selector", "targetQueue", "mode")}, sort_keys=True
    )


async def test_a_replay_stopped_mid_batch_by_the_previous_version_resumes(
    redis_url: str, r: aioredis.Redis
) -> None:
    plain = await make_failed_jobs(redis_url, Q, [JobSpec("mail.send", {"i": i}, "429") for i in range(25)])
    prio = await make_failed_jobs(
        redis_url, Q, [JobSpec("mail.send", {"p": i}, "429", {"priority": 2}) for i in range(5)]
    )
    qk, k = QueueKeys("bull", Q), ReplayKeys("upgraded")
    snapshot = [str(x) for x in await r.zrange(qk.failed, 0, -1)]
    assert sorted(snapshot) == sorted(plain + prio)
    spec = make_spec()
    now = datetime.now(UTC)
    # the previous process moved the first 10 (reprocessJob, in the MULTI with its tally), then died
    done = snapshot[:10]
    assert set(done).isdisjoint(prio)
    await BullQueue(r, Q).replay(done)
    last = snapshot[-1]
    async with r.pipeline(transaction=True) as pipe:
        pipe.rpush(k.snapshot, *snapshot)
        pipe.rpush(k.replayed, *done)
        pipe.zadd(k.slow, {job_id: pos for pos, job_id in enumerate(snapshot) if job_id in prio})
        pipe.hset(k.names, "mail.send", len(snapshot))
        pipe.hset(k.reasons, "000", len(snapshot))
        pipe.hset(
            k.progress,
            mapping={
                "stage": "replaying",
                "paused_before": "0",
                "queue": Q,
                "owner": "ns/upgraded",
                "selection": previous_selection(spec),
                "slow_pos": "1",
                "upper": ms(now + timedelta(seconds=1)),
                "started_ms": ms(now - timedelta(seconds=5)),
                "sel_score": str(await r.zscore(qk.failed, last)),
                "sel_id": last,
                "matched": str(len(snapshot)),
                "scanned": str(len(snapshot)),
                "corrupt": "0",
                "lifo_count": "0",
                "prio_count": str(len(prio)),
                "cursor": "10",
                "replayed": "10",
            },
        )
        await pipe.execute()

    st = await drive(ReplayEngine(r, replay_id="upgraded", owner="ns/upgraded"), spec)

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.skipped) == (30, 30, 0)
    assert st.progress == "30/30"
    waiting = [str(x) for x in await r.lrange(qk.wait, 0, -1)]
    prioritized = [str(x) for x in await r.zrange(qk.prioritized, 0, -1)]
    assert sorted(waiting) == sorted(plain) and len(waiting) == len(set(waiting))
    assert sorted(prioritized) == sorted(prio)
    assert await r.zcard(qk.failed) == 0
    moved = [str(x) for x in await r.lrange(k.replayed, 0, -1)]
    assert sorted(moved) == sorted(snapshot)  # each recorded once: the resumed batches started at 10
    assert await r.hget(k.progress, "stage") == "done"


async def test_a_verification_pass_stopped_half_way_by_the_previous_version_resumes(
    redis_url: str, r: aioredis.Redis
) -> None:
    ids = [str(i) for i in range(1, 21)]  # replayed, then completed and removed (removeOnComplete)
    k = ReplayKeys("verifying")
    spec = make_spec(verify={"window": "10m", "minSuccessRate": 0.9})
    now = datetime.now(UTC)
    async with r.pipeline(transaction=True) as pipe:
        pipe.rpush(k.snapshot, *ids)
        pipe.rpush(k.replayed, *ids)
        pipe.hset(
            k.progress,
            mapping={
                "stage": "verifying",
                "paused_before": "0",
                "queue": Q,
                "owner": "ns/verifying",
                "selection": previous_selection(spec),
                "slow_pos": "1",
                "upper": ms(now),
                "started_ms": ms(now - timedelta(seconds=9)),
                "replayed_ms": ms(now - timedelta(seconds=4)),
                "matched": "20",
                "scanned": "20",
                "corrupt": "0",
                "lifo_count": "0",
                "prio_count": "0",
                "cursor": "20",
                "replayed": "20",
                # half a pass done: 10 checked, all completed
                "v_pos": "10",
                "p_c": "10",
                "p_f": "0",
                "p_p": "0",
            },
        )
        await pipe.execute()

    st = await drive(ReplayEngine(r, replay_id="verifying", owner="ns/verifying"), spec)

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.replayed, st.completed, st.failed_again) == (20, 20, 0)
    assert await r.hget(k.progress, "vc") == "20"
    assert await r.hget(k.progress, "outcome_reason") == "Verified"
