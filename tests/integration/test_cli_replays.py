"""``requeue replays list`` and ``requeue replays forget`` on the state a real ``requeue replay`` left."""

from __future__ import annotations

import json
from pathlib import Path

import redis.asyncio as aioredis

from requeue.queues.keys import Progress, ReplayKeys, Stage
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import cli, keyspace, write_manifest

Q = "default"
FAST = {"jobsPerSecond": 100_000, "batchSize": 50}


async def test_list_and_forget_a_finished_cli_replay(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="a", reason="boom") for _ in range(12)])
    manifest = write_manifest(tmp_path / "replay.yaml", {"rate": FAST})
    done = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    assert done.code == 0, done.output

    res = cli("replays", "list", "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    [replay] = json.loads(res.stdout)["replays"]
    assert replay["id"].startswith("cli-") and replay["queue"] == Q and replay["owner"] == "ops/replay-1"
    assert (replay["phase"], replay["finished"], replay["matched"], replay["replayed"]) == (
        "Succeeded",
        True,
        12,
        12,
    )
    assert 0 < replay["expiresInSeconds"] <= 3 * 24 * 3600 and replay["ageSeconds"] >= 0
    text = cli("replays", "list", "--redis-url", redis_url)
    assert replay["id"] in text.stdout and "Succeeded" in text.stdout

    keys = ReplayKeys(replay["id"])
    assert await redis_client.exists(*keys.all()) > 0
    res = cli("replays", "forget", replay["id"], "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["keysDeleted"] > 0
    assert await redis_client.exists(*keys.all(), keys.legacy_copied) == 0
    assert await redis_client.llen(f"bull:{Q}:wait") == 12  # the queue itself untouched
    assert json.loads(cli("replays", "list", "--redis-url", redis_url, "-o", "json").stdout)["replays"] == []

    again = cli("replays", "forget", replay["id"], "--redis-url", redis_url, "-o", "json")
    assert again.code == 2 and json.loads(again.stdout)["error"]["reason"] == "ReplayNotFound"


async def test_forget_refuses_a_replay_that_has_not_finished(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    # as a replay whose process died mid-way leaves it: stage replaying, snapshot and progress kept
    keys = ReplayKeys("cli-ops-crashed")
    await redis_client.hset(
        keys.progress,
        mapping={
            Progress.STAGE: Stage.REPLAYING,
            Progress.QUEUE: Q,
            Progress.OWNER: "ops/crashed",
            Progress.MATCHED: "3",
        },
    )
    await redis_client.rpush(keys.snapshot, "1", "2", "3")
    before = keyspace(redis_url)

    res = cli("replays", "list", "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    listed = json.loads(res.stdout)["replays"]
    assert [(r["id"], r["phase"], r["finished"]) for r in listed] == [("cli-ops-crashed", "Running", False)]

    res = cli("replays", "forget", "cli-ops-crashed", "--redis-url", redis_url, "-o", "json")
    assert res.code == 2
    assert json.loads(res.stdout)["error"]["reason"] == "ReplayRunning"
    assert "has not finished (stage replaying)" in res.stderr
    assert keyspace(redis_url) == before
