"""``requeue replay --job ID``: exactly the named failed jobs move, once, even when the command is run
again; named ids that are not failed are listed, not dropped. And ``inspect --job``'s attempts line
says what BullMQ allows. Jobs are failed and completed by real BullMQ workers; the CLI runs as a
subprocess."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from requeue.queues import QueueKeys
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs, run_worker
from support.cli import cli

Q = "default"
K = QueueKeys("bull", Q)


async def test_named_jobs_move_once_and_the_rest_are_named(redis_url: str, r: aioredis.Redis) -> None:
    failed = await make_failed_jobs(redis_url, Q, [JobSpec(name="pay", data={"i": i}) for i in range(6)])
    [waiting] = await add_jobs(redis_url, Q, [JobSpec(name="later", data={})])
    args = ("replay", "--redis-url", redis_url, "--queue", Q)
    jobs = ("--job", failed[4], "--job", waiting, "--job", "typo-42", "--job", failed[1], "--job", failed[4])

    res = cli(*args, *jobs, "-o", "json")

    assert res.code == 0, res.output
    st = json.loads(res.stdout)
    assert st["phase"] == "Succeeded"
    assert (st["matched"], st["replayed"], st["notFailed"]) == (2, 2, 2)
    assert st["notFailedIds"] == [waiting, "typo-42"]
    assert "JobsNotFailed" in res.stderr  # the Warning, as the operator would post it
    assert set(await r.zrange(K.failed, 0, -1)) == set(failed) - {failed[4], failed[1]}
    assert await r.lrange(K.wait, 0, -1) in ([failed[4], failed[1], waiting], [failed[1], failed[4], waiting])

    # the same command again: the replay finished, nothing moves twice
    again = cli(*args, *jobs)
    assert again.code == 0, again.output
    assert "already finished" in again.stderr
    assert "not in the failed set, left alone: 2: " + f"{waiting}, typo-42" in again.stdout
    assert await r.llen(K.wait) == 3

    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(3)
    assert sorted(worker.processed_ids) == sorted([failed[4], failed[1], waiting])


async def test_dry_run_and_usage(redis_url: str, r: aioredis.Redis) -> None:
    [job] = await make_failed_jobs(redis_url, Q, [JobSpec(name="a", data={})])
    res = cli("replay", "--redis-url", redis_url, "--queue", Q, "--job", job, "--job", "nope", "--dry-run")
    assert res.code == 0, res.output
    assert "would replay 1 jobs" in res.stdout
    assert "not in the failed set, left alone: 1: nope" in res.stdout
    assert await r.zscore(K.failed, job) is not None

    assert cli("replay", "--redis-url", redis_url, "--job", job).code == 2  # no --queue
    both = cli("replay", "-f", "x.yaml", "--job", job, "--queue", Q, "--redis-url", redis_url)
    assert both.code == 2 and "not both" in both.stderr
    assert "say what to replay" in cli("replay", "--redis-url", redis_url).stderr
    many = [a for i in range(1001) for a in ("--job", str(i))]
    too_many = cli("replay", "--redis-url", redis_url, "--queue", Q, *many)
    assert too_many.code == 2 and "jobIds" in too_many.stderr


async def test_inspect_job_attempts_say_what_bullmq_allows(redis_url: str) -> None:
    [once, thrice] = await make_failed_jobs(
        redis_url,
        Q,
        [JobSpec(name="once", data={}), JobSpec(name="thrice", data={}, opts={"attempts": 3})],
    )
    [fresh] = await add_jobs(redis_url, Q, [JobSpec(name="fresh", data={})])
    base = ("inspect", "--redis-url", redis_url, "--queue", Q, "--job")

    text = cli(*base, once).stdout
    assert "attempts: made 1, started 1, allowed 1 (no retries)" in text  # opts say "attempts":0
    assert "attempts: made 3, started 3, allowed 3 (2 retries)" in cli(*base, thrice).stdout
    assert "attempts: made 0, started 0, allowed 1 (no retries)" in cli(*base, fresh).stdout
    view = json.loads(cli(*base, once, "-o", "json").stdout)
    assert view["opts"]["attempts"] == 0 and view["attempts"] == 1 and view["attemptsMade"] == 1
