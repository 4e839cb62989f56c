"""``requeue inspect`` against failed jobs made by real failing BullMQ workers, run as a subprocess."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import redis
import redis.asyncio as aioredis

from requeue.analysis import INSPECT_SCHEMA_VERSION
from requeue.redact import redact_url
from requeue.replay import normalize_reason
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs
from support.cli import cli, invoke
from support.redis_server import RedisServer, free_port

Q = "default"


def _jobs(n: int) -> list[JobSpec]:
    """n jobs over three names; reasons vary in numbers and ids only, so they fold into 3 groups."""
    out = []
    for i in range(n):
        name = ("whatsapp.send", "pdf.generate", "email.send")[i % 3]
        if i % 4 == 0:
            reason = f"timeout after {4990 + i % 40}ms"
        elif i % 4 == 1:
            reason = f"429 Too Many Requests (request 0x{i:06x}ab)"
        else:
            reason = f"connect ECONNREFUSED 10.0.0.{i % 7}:5432"
        out.append(JobSpec(name=name, data={"i": i, "tenant": "acme" if i % 2 else "globex"}, reason=reason))
    return out


def _hour(score: float) -> str:
    ms = int(score)
    return datetime.fromtimestamp(ms // 3_600_000 * 3600, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_inspect_groups_real_failures_by_name_reason_and_hour_json(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    jobs = _jobs(1100)  # more than two pages of the failed set
    ids = await make_failed_jobs(redis_url, Q, jobs)
    by_id = dict(zip(ids, jobs, strict=True))
    # corrupt three: data not JSON, name missing, hash gone (the id stays in the failed set)
    bad_data, no_name, gone = ids[5], ids[6], ids[7]
    await redis_client.hset(f"bull:{Q}:{bad_data}", "data", "{not json")
    await redis_client.hdel(f"bull:{Q}:{no_name}", "name")
    await redis_client.delete(f"bull:{Q}:{gone}")
    corrupt = {bad_data, no_name, gone}
    readable = [i for i in ids if i not in corrupt]

    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "-o", "json", "--sample", "2")
    assert res.code == 0, res.output
    report = json.loads(res.stdout)

    assert set(report) == {
        "schemaVersion",
        "queue",
        "prefix",
        "redis",
        "scannedAt",
        "elapsedSeconds",
        "paused",
        "counts",
        "total",
        "readable",
        "oldestFailure",
        "newestFailure",
        "corrupt",
        "byName",
        "byReason",
        "byHour",
    }
    assert report["schemaVersion"] == INSPECT_SCHEMA_VERSION
    assert (report["queue"], report["prefix"], report["paused"]) == (Q, "bull", False)
    assert report["counts"]["failed"] == report["total"] == len(ids)
    assert report["readable"] == len(readable)
    assert report["corrupt"]["count"] == 3
    assert set(report["corrupt"]["ids"]) == corrupt
    assert report["corrupt"]["byProblem"] == {"job data is not JSON": 1, "job hash missing or has no name": 2}

    names = Counter(by_id[i].name for i in readable)
    assert {g["key"]: g["count"] for g in report["byName"]["groups"]} == dict(names)
    for g in report["byName"]["groups"]:
        assert len(g["sampleIds"]) == 2
        assert all(by_id[s].name == g["key"] for s in g["sampleIds"])

    reasons = {g["key"]: g for g in report["byReason"]["groups"]}
    assert len(reasons) == 3, reasons
    expected_reasons = Counter(normalize_reason(by_id[i].reason) for i in readable)
    assert {k: g["count"] for k, g in reasons.items()} == dict(expected_reasons)
    timeouts = [i for i in readable if by_id[i].reason.startswith("timeout after")]
    assert reasons["timeout after <n>ms"]["count"] == len(timeouts)
    assert len({by_id[i].reason for i in timeouts}) == 10  # 10 distinct texts (4990ms..5026ms), one group
    assert all(s in timeouts for s in reasons["timeout after <n>ms"]["sampleIds"])
    assert sum(g["count"] for g in reasons.values()) == len(readable)

    scores = dict(
        cast(list[tuple[str, float]], await redis_client.zrange(f"bull:{Q}:failed", 0, -1, withscores=True))
    )
    hours = Counter(_hour(scores[i]) for i in readable)
    assert {g["key"]: g["count"] for g in report["byHour"]["groups"]} == dict(hours)
    keys = [g["key"] for g in report["byHour"]["groups"]]
    assert keys == sorted(keys)
    assert report["oldestFailure"] <= report["newestFailure"]
    for b in ("byName", "byReason", "byHour"):
        assert (report[b]["otherGroups"], report[b]["otherJobs"], report[b]["capped"]) == (0, 0, False)

    # read-only: the failed set and the jobs are as they were
    assert await redis_client.zcard(f"bull:{Q}:failed") == len(ids)


async def test_inspect_top_limits_groups_and_counts_the_rest(redis_url: str) -> None:
    jobs = [JobSpec(name=f"job.{i % 5}", reason="boom") for i in range(50)]
    await make_failed_jobs(redis_url, Q, jobs)
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "-o", "json", "--top", "2", "--sample", "0")
    assert res.code == 0, res.output
    by_name = json.loads(res.stdout)["byName"]
    assert [g["count"] for g in by_name["groups"]] == [10, 10]
    assert all(g["sampleIds"] == [] for g in by_name["groups"])
    assert (by_name["otherGroups"], by_name["otherJobs"]) == (3, 30)


async def test_inspect_plain_text_when_not_a_terminal(redis_url: str) -> None:
    await make_failed_jobs(redis_url, Q, _jobs(30))
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q)
    assert res.code == 0, res.output
    out = res.stdout
    assert "\x1b[" not in out and "━" not in out and "┃" not in out  # no colours, no box drawing
    assert "30 failed jobs, 0 corrupt" in out
    assert re.search(r"^whatsapp\.send\s+10\s+33\.3%\s+\d+", out, re.M), out
    assert re.search(r"^timeout after <n>ms\s+8\s", out, re.M), out
    for title in ("JOB NAME", "FAILURE REASON (normalised)", "HOUR (UTC)"):
        assert title in out


def test_inspect_table_and_empty_queue_via_click(redis_url: str) -> None:
    """-o table renders rich tables even off a terminal; an empty failed set is not an error."""
    asyncio.run(add_jobs(redis_url, "nothing-here", [JobSpec(name="waits")]))  # exists, none failed
    res = invoke("inspect", "--redis-url", redis_url, "--queue", "nothing-here", "-o", "table")
    assert res.code == 0, res.output
    assert "0 failed jobs" in res.output and "by job name" in res.output
    res = invoke("inspect", "--redis-url", redis_url, "--queue", "nothing-here", "-o", "json")
    report = json.loads(res.stdout)
    assert report["total"] == 0 and report["byName"]["groups"] == [] and report["oldestFailure"] is None


async def test_inspect_of_a_queue_with_no_keys_exits_2_naming_the_queues_there(redis_url: str) -> None:
    """A typo is not "0 failed jobs": QueueNotFound, exit 2, one line listing the queues that exist."""
    await make_failed_jobs(redis_url, Q, _jobs(3))
    await add_jobs(redis_url, "emails", [JobSpec(name="email.send")])
    shown = redact_url(redis_url)  # the password never shows
    res = cli("inspect", "--redis-url", redis_url, "--queue", "defualt")
    assert res.code == 2, res.output
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f'requeue: QueueNotFound: queue "defualt" has no BullMQ keys under prefix "bull" in {shown}; '
        'did you mean "default"? queues there: default, emails'
    ], res.stderr

    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "--prefix", "bul", "-o", "json")
    assert res.code == 2, res.output
    error = json.loads(res.stdout)["error"]
    assert error["reason"] == "QueueNotFound"
    assert 'under prefix "bul"' in error["message"], error
    assert "no queue exists under that prefix" in error["message"], error


def test_inspect_unreachable_redis_exits_3_with_redacted_url() -> None:
    url = f"redis://ops:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    res = cli("inspect", "--redis-url", url, "--queue", Q)
    assert res.code == 3, res.output
    assert "Redis unreachable" in res.stderr
    assert f"redis://ops:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in res.stderr
    assert "s3cr3t-pw" not in res.output


def test_inspect_wrong_password_exits_3_authentication_failed(
    redis_factory: Callable[[], RedisServer],
) -> None:
    server = redis_factory()
    admin = redis.Redis(host=server.host, port=server.port)
    admin.config_set("requirepass", "right-password")
    admin.close()
    url = f"redis://default:wrong-password@{server.host}:{server.port}/0"
    res = cli("inspect", "--redis-url", url, "--queue", Q)
    assert res.code == 3, res.output
    assert "authentication failed" in res.stderr
    assert "wrong-password" not in res.output and "right-password" not in res.output
    # no password at all: NOAUTH is an authentication failure too
    res = cli("inspect", "--queue", Q, env={"REQUEUE_REDIS_URL": server.url})
    assert res.code == 3 and "authentication failed" in res.stderr, res.output


def test_inspect_needs_a_redis_url() -> None:
    res = cli("inspect", "--queue", Q)
    assert res.code == 2 and "--redis-url" in res.stderr


async def test_inspect_during_concurrent_removal_is_not_confused(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Jobs leaving the failed set mid-scan (a replay, a clean) never fail the scan."""
    ids = await make_failed_jobs(redis_url, Q, _jobs(1200))

    async def remove() -> None:
        for i in ids[::3]:
            await redis_client.zrem(f"bull:{Q}:failed", i)

    remover = asyncio.create_task(remove())
    res = await asyncio.to_thread(cli, "inspect", "--redis-url", redis_url, "--queue", Q, "-o", "json")
    await remover
    assert res.code == 0, res.output
    report = json.loads(res.stdout)
    assert len(ids) - len(ids[::3]) <= report["total"] <= len(ids)
    assert report["corrupt"]["count"] == 0
