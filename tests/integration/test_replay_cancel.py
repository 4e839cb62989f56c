"""``spec.cancel``: a running replay stops at the next step boundary and ends ``Cancelled`` with counts
that match Redis, the queue left as found (resumed if the replay paused it, still paused if someone
else had), its lease released. Real failed BullMQ jobs, a real redis-server, a real HTTP gate.
The CLI's way to cancel with a record (the manifest with ``cancel: true``) runs as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis
import yaml

from requeue.api import DLQReplaySpec, DLQReplayStatus, ReplayCondition, ReplayPhase, find_condition
from requeue.api.conditions import Reason
from requeue.gates import GateRunner
from requeue.queues import BullQueue, QueueKeys
from requeue.replay import ReplayEngine, ReplayEvent
from requeue.secrets import StaticSecrets
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.cli import cli
from support.gates import ControlledHttp
from support.replay import ONE_BATCH_PER_STEP, replay_spec

Q = "default"
K = QueueKeys("bull", Q)
N = 40


def cancelled(spec: DLQReplaySpec) -> DLQReplaySpec:
    return spec.model_copy(update={"cancel": True})


async def step_until(
    engine: ReplayEngine, spec: DLQReplaySpec, st: DLQReplayStatus, done: object, events: list[ReplayEvent]
) -> DLQReplayStatus:
    for _ in range(500):
        if callable(done) and done(st):
            return st
        res = await engine.step(spec, st)
        events.extend(res.events)
        st = res.status
    raise AssertionError(f"condition not reached: {st.phase} {st.message}")


async def test_cancel_mid_replay_keeps_true_counts_and_releases_the_lease(
    redis_url: str, r: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(N)])
    spec = replay_spec(rate={"jobsPerSecond": 100_000, "batchSize": 4})
    engine = ReplayEngine(r, replay_id="cancel-1", owner="ns/cancel-1", tuning=ONE_BATCH_PER_STEP)
    events: list[ReplayEvent] = []
    st = await step_until(engine, spec, DLQReplayStatus(), lambda s: s.replayed >= 12, events)
    assert st.phase == ReplayPhase.REPLAYING and await r.exists(K.lease)

    events.clear()
    res = await engine.step(cancelled(spec), st)
    st = res.status

    assert st.phase == ReplayPhase.CANCELLED and st.completed_at is not None
    moved = await r.llen(K.wait)
    assert st.replayed == moved and moved >= 12 and st.matched == N
    assert await r.zcard(K.failed) == N - moved  # the rest stay failed
    assert st.message == f"cancelled (spec.cancel) at {moved}/{N}: moved {moved}, 0 no longer failed; " + (
        f"the other {N - moved} selected jobs stay failed"
    )
    assert [(e.type, e.reason) for e in res.events] == [("Normal", Reason.CANCELLED)]
    succeeded = find_condition(st.conditions, ReplayCondition.SUCCEEDED)
    progressing = find_condition(st.conditions, ReplayCondition.PROGRESSING)
    assert succeeded is not None and (succeeded.status, succeeded.reason) == ("False", Reason.CANCELLED)
    assert progressing is not None and (progressing.status, progressing.reason) == ("False", Reason.CANCELLED)
    assert not await r.exists(K.lease)
    assert not await BullQueue(r, Q).is_paused()
    stored = await engine.stored_progress()
    assert stored is not None and stored.finished and stored.outcome == "Cancelled"

    # nothing more moves: later steps (cancel or not) keep the record as it is
    for again in (spec, cancelled(spec)):
        res = await engine.step(again, st)
        assert res.status == st and not res.events
    assert await r.llen(K.wait) == moved
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(moved)
    assert set(worker.processed_ids) <= set(ids) and len(worker.processed_ids) == moved


async def test_cancel_while_gates_hold_the_queue_resumes_it(
    redis_url: str, r: aioredis.Redis, api: ControlledHttp
) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(5)])
    api.health_status = 503
    spec = replay_spec(
        {"gates": [{"name": "api", "http": {"url": api.url("/health")}}], "pauseQueue": True},
    )
    runner = GateRunner(spec.gates, spec.gate_policy, StaticSecrets({}), default_redis_url=redis_url)
    engine = ReplayEngine(r, replay_id="cancel-2", owner="ns/cancel-2", gates=runner)
    events: list[ReplayEvent] = []
    st = await step_until(engine, spec, DLQReplayStatus(), lambda s: s.queue_paused_by_replay, events)
    assert await BullQueue(r, Q).is_paused()

    res = await engine.step(cancelled(spec), st)

    assert res.status.phase == ReplayPhase.CANCELLED
    assert res.status.message == "cancelled (spec.cancel) before selecting; nothing moved"
    assert not await BullQueue(r, Q).is_paused()  # the replay had paused it: resumed
    assert not res.status.queue_paused_by_replay
    assert [e.reason for e in res.events].count(Reason.CANCELLED) == 1
    assert await r.zcard(K.failed) == 5 and await r.llen(K.wait) == 0


async def test_cancel_leaves_a_queue_paused_by_someone_else_paused(redis_url: str, r: aioredis.Redis) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(10)])
    await BullQueue(r, Q).pause()
    spec = replay_spec(rate={"jobsPerSecond": 100_000, "batchSize": 3})
    engine = ReplayEngine(r, replay_id="cancel-3", owner="ns/cancel-3", tuning=ONE_BATCH_PER_STEP)
    st = await step_until(engine, spec, DLQReplayStatus(), lambda s: s.replayed >= 3, [])

    st = (await engine.step(cancelled(spec), st)).status

    assert st.phase == ReplayPhase.CANCELLED
    assert await BullQueue(r, Q).is_paused()  # not ours to resume
    assert st.replayed + await r.zcard(K.failed) == 10


async def test_cli_cancels_with_a_record_by_the_manifest(redis_url: str, tmp_path: Path) -> None:
    """The CLI's cancel: stop the command (Ctrl-C), then run the manifest with ``cancel: true``: the
    replay's record in Redis ends Cancelled (``replays list``), and rerunning never resumes it."""
    await make_failed_jobs(redis_url, Q, [JobSpec(name="send", data={"i": i}) for i in range(3)])
    manifest: dict[str, object] = {
        "apiVersion": "requeue.dev/v1alpha1",
        "kind": "DLQReplay",
        "metadata": {"name": "stop-me", "namespace": "ops"},
        "spec": {"redis": {"urlSecretRef": {"name": "r", "key": "url"}}, "queue": Q, "cancel": True},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(manifest))

    res = cli("replay", "-f", str(path), "--redis-url", redis_url, "-o", "json")

    assert res.code == 0, res.output
    st = json.loads(res.stdout)
    assert (st["phase"], st["replayed"]) == ("Cancelled", 0)
    listed = json.loads(cli("replays", "list", "--redis-url", redis_url, "-o", "json").stdout)
    [mine] = [x for x in listed["replays"] if x["owner"] == "ops/stop-me"]
    assert mine["phase"] == "Cancelled" and mine["finished"]
    manifest["spec"] = {**manifest["spec"], "cancel": False}  # type: ignore[dict-item]
    path.write_text(yaml.safe_dump(manifest))
    again = cli("replay", "-f", str(path), "--redis-url", redis_url)
    assert again.code == 0 and "already finished (Cancelled)" in again.stderr
    assert again.stdout.startswith("Cancelled: cancelled (spec.cancel)"), again.stdout
