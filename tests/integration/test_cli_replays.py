"""``requeue replays list`` and ``requeue replays forget`` on the state a real ``requeue replay`` left."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import redis
import redis.asyncio as aioredis

from requeue.queues.keys import Progress, QueueKeys, ReplayKeys, Stage
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import cli, interrupt_cli, keyspace, write_manifest
from support.redis_server import free_port

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


async def test_forget_refuses_a_replay_its_queue_lease_names(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    # as a replay running elsewhere has it: stage replaying, snapshot, progress and the lease
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
    await redis_client.set(
        QueueKeys("bull", Q).lease, "cli-ops-crashed ops/crashed token elsewhere:1", px=60_000
    )
    before = keyspace(redis_url)

    res = cli("replays", "list", "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    listed = json.loads(res.stdout)["replays"]
    assert [(r["id"], r["phase"], r["finished"], r["running"]) for r in listed] == [
        ("cli-ops-crashed", "Running", False, True)
    ]

    res = cli("replays", "forget", "cli-ops-crashed", "--redis-url", redis_url, "-o", "json")
    assert res.code == 2
    assert json.loads(res.stdout)["error"]["reason"] == "ReplayRunning"
    assert "is running (stage replaying; its queue's lease names it)" in res.stderr
    assert keyspace(redis_url) == before


def _waiting_for_gates(s: redis.Redis) -> bool:
    return any(s.hget(k, Progress.STAGE) == Stage.GATES for k in s.scan_iter(ReplayKeys("*").progress))


async def test_a_replay_stopped_while_waiting_for_gates_is_abandoned_and_can_be_forgotten(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await make_failed_jobs(redis_url, Q, [JobSpec(name="a", reason="boom") for _ in range(3)])
    dead = f"http://127.0.0.1:{free_port()}/health"  # nothing listens: the gate stays red
    gated = write_manifest(
        tmp_path / "replay.yaml",
        {
            "rate": FAST,
            "gates": [{"name": "provider", "http": {"url": dead, "timeout": "1s"}}],
            "gatePolicy": {"interval": "1s"},
        },
    )
    code = interrupt_cli(
        *("replay", "-f", str(gated), "--redis-url", redis_url),
        log=tmp_path / "run.log",
        redis_url=redis_url,
        ready=_waiting_for_gates,
        ready_timeout=30,
        waiting_for="the replay waiting for its red gate",
        stop=signal.SIGINT,
        exit_timeout=30,
    )
    assert code == 130, (tmp_path / "run.log").read_text()
    assert await redis_client.get(QueueKeys("bull", Q).lease) is None

    res = cli("replays", "list", "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    [replay] = json.loads(res.stdout)["replays"]
    assert (replay["phase"], replay["stage"], replay["finished"], replay["running"]) == (
        "Abandoned",
        Stage.GATES,
        False,
        False,
    )
    assert replay["ageSeconds"] is not None and replay["ageSeconds"] >= 0
    text = cli("replays", "list", "--redis-url", redis_url)
    assert "Abandoned" in text.stdout and "never (abandoned: forget it)" in text.stdout, text.output
    assert "Running" not in text.stdout

    keys = ReplayKeys(replay["id"])
    res = cli("replays", "forget", replay["id"], "--redis-url", redis_url)
    assert res.code == 0, res.output
    assert "was not finished; nothing drives it (no lease)" in res.stdout
    assert await redis_client.exists(*keys.all(), keys.legacy_copied) == 0
    assert await redis_client.zcard(f"bull:{Q}:failed") == 3  # the queue itself untouched
