"""``requeue seed`` and the README's CLI walk-through, run as the README shows them: seed failed
jobs with a real BullMQ worker, inspect them, dry-run and replay the examples."""

from __future__ import annotations

import json

import redis

from requeue.queues import QueueKeys
from support.bullmq_jobs import JobSpec, add_jobs
from support.cli import REPO, cli

Q = "default"
K = QueueKeys("bull", Q)
MINIMAL = str(REPO / "examples" / "replay-minimal.yaml")
GATED = str(REPO / "examples" / "replay.yaml")


def test_seed_then_the_readme_cli_commands(redis_url: str) -> None:
    seeded = cli("seed", "--redis-url", redis_url, "--queue", Q, "--jobs", "100")
    assert seeded.code == 0, seeded.output
    assert "seeded 100 failed jobs" in seeded.stdout and "60  whatsapp.send" in seeded.stdout
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        failed = [str(i) for i in client.zrange(K.failed, 0, -1)]
        assert len(failed) == 100
        whatsapp = [i for i in failed if client.hget(K.job(i), "name") == "whatsapp.send"]
        assert len(whatsapp) == 60
        job = client.hgetall(K.job(whatsapp[0]))
        assert job["failedReason"] == "429 Too Many Requests" and json.loads(job["stacktrace"]), job

        inspect = cli("inspect", "--redis-url", redis_url, "--queue", Q)
        assert inspect.code == 0 and "100 failed jobs" in inspect.stdout, inspect.output
        one = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", whatsapp[0])
        assert one.code == 0 and "name: whatsapp.send" in one.stdout, one.output

        dry = cli("replay", "-f", MINIMAL, "--redis-url", redis_url, "--dry-run")
        assert dry.code == 0 and "would replay 60 jobs" in dry.stdout, dry.output
        missing = cli("replay", "-f", GATED, "--redis-url", redis_url, "--dry-run")
        assert missing.code == 2 and "visapi-db/dsn" in missing.output and "cgb/bearer" in missing.output
        secrets = ("--secret", "visapi-db/dsn=postgresql://127.0.0.1:5432/test", "--secret", "cgb/bearer=x")
        gated = cli("replay", "-f", GATED, "--redis-url", redis_url, *secrets, "--dry-run")
        assert gated.code == 0 and "would replay 60 jobs" in gated.stdout, gated.output  # no stale window

        res = cli("replay", "-f", MINIMAL, "--redis-url", redis_url, "-o", "json")
        assert res.code == 0, res.output
        assert json.loads(res.stdout)["replayed"] == 60
        assert sorted(client.lrange(K.wait, 0, -1)) == sorted(whatsapp) and client.zcard(K.failed) == 40
    finally:
        client.close()


async def test_seed_refuses_a_queue_with_jobs_a_worker_would_take(redis_url: str) -> None:
    ids = await add_jobs(redis_url, Q, [JobSpec("real.work", {"i": i}) for i in range(3)])
    res = cli("seed", "--redis-url", redis_url, "--queue", Q, "--jobs", "5")
    assert res.code == 2 and "wait 3" in res.output and "nothing was added" in res.output, res.output
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert sorted(client.lrange(K.wait, 0, -1)) == sorted(ids) and client.zcard(K.failed) == 0
    finally:
        client.close()


def test_seed_into_an_unreachable_redis_is_exit_3() -> None:
    res = cli("seed", "--redis-url", "redis://default:seed-Secret-7@127.0.0.1:1/0", "--jobs", "5")
    assert res.code == 3, res.output
    assert "seed-Secret-7" not in res.output and "Traceback" not in res.output
