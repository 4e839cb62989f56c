"""``requeue pause``, ``resume`` and ``clean`` as a subprocess, against real BullMQ queues and workers."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from bullmq import Queue

from requeue.queues.keys import PolicyKeys, Progress, ReplayKeys
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs, run_worker, worker_waiting
from support.cli import acli, cli, keyspace

Q = "default"


async def test_paused_queue_is_not_processed_until_resumed(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await add_jobs(redis_url, Q, [JobSpec(name="warmup")])
    res = await acli("pause", "--redis-url", redis_url, "--queue", Q)
    assert res.code == 0, res.output
    assert "is now paused" in res.stdout
    assert await redis_client.hexists(f"bull:{Q}:meta", "paused")
    again = await acli("pause", "--redis-url", redis_url, "--queue", Q, "-o", "json")
    assert json.loads(again.stdout)["action"] == "alreadyPaused"
    again = await acli("pause", "--redis-url", redis_url, "--queue", Q)
    assert again.code == 0, again.output
    # `requeue pause` leaves no trace: never claim requeue did not pause it
    assert "was already paused (not by a requeue replay or QueuePolicy: by an app, a person or " in (
        again.stdout
    )
    assert "`requeue pause`); nothing done" in again.stdout and "did not" not in again.stdout

    ids = await add_jobs(redis_url, Q, [JobSpec(name="work", data={"i": i}) for i in range(10)])
    async with run_worker(redis_url, Q) as run:
        # the worker looked, found the queue paused and waits: nothing was processed
        await worker_waiting(redis_client, Q, timeout=30)
        assert run.processed == []

        res = await acli("resume", "--redis-url", redis_url, "--queue", Q, "-o", "json")
        assert res.code == 0, res.output
        out = json.loads(res.stdout)
        assert out["action"] == "resumed" and out["wasPaused"] is True and out["pausedBy"] == []
        await run.wait_for(11)
    assert set(ids) <= set(run.completed)
    res = await acli("resume", "--redis-url", redis_url, "--queue", Q)
    assert res.code == 0 and "is not paused; nothing done" in res.stdout


async def test_resume_names_who_paused(redis_url: str, redis_client: aioredis.Redis) -> None:
    await add_jobs(redis_url, Q, [JobSpec(name="a")])
    assert (await acli("pause", "--redis-url", redis_url, "--queue", Q)).code == 0
    res = await acli("resume", "--redis-url", redis_url, "--queue", Q, "--dry-run")
    assert res.code == 0 and "would be resumed" in res.stdout
    assert "it had been paused not by a requeue replay or QueuePolicy: by an app, a person or " in res.stdout
    assert await redis_client.hexists(f"bull:{Q}:meta", "paused")  # dry run: still paused

    # a replay holding it for a red gate, and a QueuePolicy that paused it (as they record it)
    await redis_client.hset(
        ReplayKeys("cli-ops-r1").progress,
        mapping={
            Progress.QUEUE: Q,
            Progress.WE_PAUSED: "1",
            Progress.OWNER: "ops/r1",
            Progress.STAGE: "gates",
        },
    )
    await redis_client.hset(
        ReplayKeys("other").progress, mapping={Progress.QUEUE: "emails", Progress.WE_PAUSED: "1"}
    )
    await redis_client.hset(PolicyKeys("uid-1").memory, Q, json.dumps({"c": "", "b": [], "l": {}, "p": 1}))
    res = await acli("resume", "--redis-url", redis_url, "--queue", Q, "-o", "json")
    out = json.loads(res.stdout)
    assert out["pausedBy"] == ["replay cli-ops-r1 (ops/r1)", "QueuePolicy uid-1"]
    assert not await redis_client.hexists(f"bull:{Q}:meta", "paused")


def test_pause_refuses_unknown_queue(redis_url: str) -> None:
    for command in ("pause", "resume"):
        res = cli(command, "--redis-url", redis_url, "--queue", "nope", "-o", "json")
        assert res.code == 2
        assert json.loads(res.stdout)["error"]["reason"] == "QueueNotFound"
    res = cli("clean", "--redis-url", redis_url, "--queue", "nope", "--state", "failed")
    assert res.code == 2 and 'queue "nope" has no BullMQ keys' in res.stderr


async def _twin(r: aioredis.Redis, src: str, dst: str) -> None:
    """Make queue ``dst`` an exact copy of ``src`` (every key copied), so both clean alike."""
    async for key in r.scan_iter(match=f"bull:{src}:*"):
        await r.copy(key, f"bull:{dst}:" + key[len(f"bull:{src}:") :])


def _strip(space: dict[str, object], queue: str) -> dict[str, object]:
    """A queue's keys without the queue name, and without the events stream (its ids are times)."""
    head = f"bull:{queue}:"
    return {k[len(head) :]: v for k, v in space.items() if k.startswith(head) and not k.endswith(":events")}


async def test_clean_removes_exactly_what_bullmq_clean_removes(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, "a", [JobSpec(name=f"j{i % 3}", data={"i": i}) for i in range(40)])
    await _twin(redis_client, "a", "b")
    before = keyspace(redis_url)

    dry = cli(
        "clean",
        "--redis-url",
        redis_url,
        "--queue",
        "a",
        "--state",
        "failed",
        "--grace",
        "1ms",
        "--limit",
        "15",
        "--dry-run",
        "-o",
        "json",
    )
    assert dry.code == 0, dry.output
    would = json.loads(dry.stdout)
    assert would["removed"] == 15 and would["dryRun"] is True
    assert keyspace(redis_url) == before  # dry run: nothing changed

    kept = cli("clean", "--redis-url", redis_url, "--queue", "a", "--state", "failed", "--grace", "1h")
    assert kept.code == 0 and "removed 0 failed jobs" in kept.stdout  # all failed just now

    res = cli(
        "clean",
        "--redis-url",
        redis_url,
        "--queue",
        "a",
        "--state",
        "failed",
        "--grace",
        "1ms",
        "--limit",
        "15",
        "-o",
        "json",
    )
    assert res.code == 0, res.output
    done = json.loads(res.stdout)
    assert done["removed"] == 15 and done["ids"] == would["ids"]

    q = Queue("b", {"connection": redis_url})
    try:
        removed_b = await q.clean(1, 15, "failed")
    finally:
        await q.close()
    assert sorted(removed_b) == sorted(done["ids"])
    after = keyspace(redis_url)
    assert _strip(after, "a") == _strip(after, "b")
    assert await redis_client.zcard("bull:a:failed") == 25


async def test_clean_completed(redis_url: str) -> None:
    await add_jobs(redis_url, Q, [JobSpec(name="ok") for _ in range(5)])
    async with run_worker(redis_url, Q) as run:
        await run.wait_for(5)
    res = cli("clean", "--redis-url", redis_url, "--queue", Q, "--state", "completed", "--grace", "1ms")
    assert res.code == 0 and "removed 5 completed jobs" in res.stdout
    bad = cli("clean", "--redis-url", redis_url, "--queue", Q, "--state", "active")
    assert bad.code == 2
    bad = cli(
        "clean", "--redis-url", redis_url, "--queue", Q, "--state", "failed", "--grace", "soon", "-o", "json"
    )
    assert bad.code == 2 and json.loads(bad.stdout)["error"]["reason"] == "UsageError"
