"""``requeue inspect --job`` and ``--name/--reason`` on jobs failed by a real BullMQ worker, run as a
subprocess."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs
from support.cli import cli

Q = "default"


async def test_job_view_shows_a_failed_job_as_bull_board_does(redis_url: str) -> None:
    [job_id] = await make_failed_jobs(
        redis_url,
        Q,
        [
            JobSpec(
                name="email.send",
                data={"to": "a@example.com", "n": 7},
                reason="SMTP 451 try later",
                opts={"attempts": 2},
            )
        ],
    )

    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", job_id, "-o", "json")
    assert res.code == 0, res.output
    view = json.loads(res.stdout)
    assert view["id"] == job_id and view["state"] == "failed" and view["problems"] == []
    assert view["name"] == "email.send" and view["data"] == {"to": "a@example.com", "n": 7}
    assert view["opts"]["attempts"] == 2 and view["attempts"] == 2 and view["attemptsMade"] == 2
    assert view["failedReason"] == "SMTP 451 try later"
    assert view["stacktrace"] and "SMTP 451 try later" in view["stacktrace"][-1]
    assert all(view["timestamps"][k] for k in ("created", "processed", "finished"))

    text = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", job_id)
    assert text.code == 0, text.output
    assert f"job {job_id} in queue {Q} (prefix bull): failed" in text.stdout
    assert '"to": "a@example.com"' in text.stdout  # pretty JSON
    assert "failed reason: SMTP 451 try later" in text.stdout


async def test_job_view_states_and_bounds(redis_url: str, redis_client: aioredis.Redis) -> None:
    [waiting] = await add_jobs(redis_url, Q, [JobSpec(name="big", data={"blob": "x" * 50_000})])
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", waiting)
    assert res.code == 0, res.output
    assert "): waiting" in res.stdout
    assert "bytes more)" in res.stdout and len(res.stdout) < 20_000
    data = json.loads(
        cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", waiting, "-o", "json").stdout
    )
    assert data["dataTruncated"] is True and data["dataBytes"] > 50_000 and len(data["data"]) <= 10 * 1024

    # a corrupt hash: data not JSON, shown raw and named
    await redis_client.hset(f"bull:{Q}:{waiting}", "data", "{not json")
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", waiting, "-o", "json")
    assert res.code == 0, res.output
    data = json.loads(res.stdout)
    assert data["problems"] == ["job data is not JSON"] and data["data"] == "{not json"

    # hash gone, id still in wait: named, not a crash
    await redis_client.delete(f"bull:{Q}:{waiting}")
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", waiting)
    assert res.code == 0, res.output
    assert "PROBLEM: job hash missing" in res.stdout


async def test_job_view_refuses_unknown_job_and_queue(redis_url: str) -> None:
    await add_jobs(redis_url, Q, [JobSpec(name="a")])
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", "nope", "-o", "json")
    assert res.code == 2
    assert json.loads(res.stdout)["error"]["reason"] == "JobNotFound"
    assert 'has no job "nope"' in res.stderr
    res = cli("inspect", "--redis-url", redis_url, "--queue", "defualt", "--job", "1")
    assert res.code == 2 and res.stdout == "" and "queues there: default" in res.stderr
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--job", "1", "--name", "a")
    assert res.code == 2 and "not both" in res.stderr


async def test_list_failed_jobs_of_a_group(redis_url: str) -> None:
    jobs = [
        JobSpec(name=("a", "b")[i % 2], data={"i": i}, reason=f"timeout after {100 + i}ms") for i in range(30)
    ]
    jobs += [JobSpec(name="a", reason="ECONNREFUSED") for _ in range(5)]
    ids = await make_failed_jobs(redis_url, Q, jobs)
    want = {i for i, j in zip(ids, jobs, strict=True) if j.name == "a" and j.reason.startswith("timeout")}

    res = cli(
        "inspect",
        "--redis-url",
        redis_url,
        "--queue",
        Q,
        "--name",
        "a",
        "--reason",
        "timeout after <n>ms",
        "--limit",
        "100",
        "-o",
        "json",
    )
    assert res.code == 0, res.output
    out = json.loads(res.stdout)
    assert {j["id"] for j in out["jobs"]} == want and out["more"] is False and out["scanned"] == 35

    limited = json.loads(
        cli(
            "inspect",
            "--redis-url",
            redis_url,
            "--queue",
            Q,
            "--reason",
            "ECONNREFUSED",
            "--limit",
            "3",
            "-o",
            "json",
        ).stdout
    )
    assert len(limited["jobs"]) == 3 and limited["more"] is True

    text = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--name", "b")
    assert text.code == 0 and "15 failed jobs shown" in text.stdout
