"""``requeue export``: every field of 10k jobs failed by a Node BullMQ worker, plus corrupt jobs
written by hand, restored byte for byte from the JSON lines and compared with ``HGETALL``."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis.asyncio as aioredis

from requeue.queues.export import restore_fields
from support import async_wait_until
from support.cli import acli
from support.node import FailRule, NodeWorker, run_producer, run_producer_generated

pytestmark = pytest.mark.interop

MAJOR = 6
JOBS = int(os.environ.get("EXPORT_TEST_JOBS", "10000"))


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def _hgetall_raw(url: str, key: str) -> dict[bytes, bytes]:
    raw = aioredis.Redis.from_url(url)  # undecoded: the bytes as stored
    try:
        got = await raw.hgetall(key)
        return {_b(k): _b(v) for k, v in got.items()}
    finally:
        await raw.aclose()


@pytest.mark.timeout(420)
async def test_export_round_trips_every_field_of_10k_node_jobs_and_corrupt_ones(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    q = "exp"
    k = f"bull:{q}"
    added = await run_producer_generated(
        redis_url,
        q,
        JOBS,
        major=MAJOR,
        name="whatsapp.send",
        data={"to": "+4915", "text": 'héllo \u2028 "quoted" \\ back', "n": 1.5, "big": 12345678901234},
        opts={"attempts": 1},
    )
    assert added == JOBS
    rule = FailRule("429 Too Many Requests", name="whatsapp.send")
    async with NodeWorker(redis_url, q, major=MAJOR, fail=[rule], concurrency=100):
        await async_wait_until(
            lambda: _failed_is(redis_client, k, JOBS), timeout=300, message="the jobs failed by Node"
        )
    # a waiting job whose data is a megabyte (added after the worker left): a line is never cut
    [big] = await run_producer(
        redis_url, q, [{"name": "pdf.generate", "data": {"blob": "x" * 1_000_000}, "opts": {}}], major=MAJOR
    )
    # corrupt jobs, written by hand: data not JSON, no name, bytes that are not UTF-8, a hash gone,
    # a job key that is not a hash, data JSON that JSON.stringify would write otherwise
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.hset(f"{k}:c1", mapping={"name": "x", "data": "{not json", "timestamp": "1"})
        await raw.hset(f"{k}:c2", mapping={"data": "{}", "timestamp": "2"})
        await raw.hset(f"{k}:c3", mapping={"name": "bin", "data": b'{"a":"\xff\x00"}', b"\xfe": b"\x00\x01"})
        await raw.set(f"{k}:c5", b"\x00not a hash")
        await raw.hset(
            f"{k}:c6", mapping={"name": "spaced", "data": '{ "a" : 1 }', "opts": '{"attempts":1.0}'}
        )
        await raw.zadd(f"{k}:failed", {"c1": 1, "c2": 2, "c3": 3, "c4": 4, "c5": 5, "c6": 6})
    finally:
        await raw.aclose()

    res = await acli("export", "--redis-url", redis_url, "--queue", q, "--state", "failed", timeout=300)
    assert res.code == 0, res.stderr
    lines = _lines(res.stdout)
    assert len(lines) == JOBS + 6
    assert f"exported {JOBS + 6} failed jobs of queue {q} (prefix bull): 5 corrupt" in res.stderr
    ids = [line["id"] for line in lines]
    in_set = [m for m in await redis_client.zrange(f"{k}:failed", 0, -1)]
    assert ids == in_set  # every member once, in the set's order
    for line in lines:  # every field, byte for byte
        if line["id"] == "c5":
            continue  # not a hash: its value is below
        assert restore_fields(line) == await _hgetall_raw(redis_url, f"{k}:{line['id']}"), line["id"]
        assert line["state"] == "failed" and line["queue"] == q and line["prefix"] == "bull"
    by_id = {line["id"]: line for line in lines}
    sample = by_id["1"]
    assert sample["corrupt"] is None and sample["name"] == "whatsapp.send"
    assert (
        sample["data"]["text"] == 'héllo \u2028 "quoted" \\ back' and sample["data"]["big"] == 12345678901234
    )
    assert sample["fields"]["failedReason"] == "429 Too Many Requests"
    assert len(sample["stacktrace"]) == 1 and "429 Too Many Requests" in sample["stacktrace"][0]
    assert "data" not in sample["fields"]  # the parsed data stands for the exact text
    assert {i: by_id[i]["corrupt"] for i in ("c1", "c2", "c3", "c4", "c5")} == {
        "c1": "job data is not JSON",
        "c2": "job has no name",
        "c3": "job data is not UTF-8 text",
        "c4": "job hash missing (its id is still in a BullMQ set)",
        "c5": "job key is a string, not a hash",
    }
    assert by_id["c5"]["rawValue"] == "AG5vdCBhIGhhc2g="
    assert by_id["c6"]["corrupt"] is None and by_id["c6"]["fields"]["data"] == '{ "a" : 1 }'

    res = await acli("export", "--redis-url", redis_url, "--queue", q, "--state", "wait")
    assert res.code == 0, res.stderr
    [waiting] = _lines(res.stdout)
    assert waiting["id"] == big and waiting["state"] == "wait" and len(waiting["data"]["blob"]) == 1_000_000
    assert restore_fields(waiting) == await _hgetall_raw(redis_url, f"{k}:{big}")

    # filters as inspect lists a group; --limit
    res = await acli(
        "export", "--redis-url", redis_url, "--queue", q, "--state", "failed", "--name", "spaced"
    )
    assert res.code == 0, res.stderr
    assert [line["id"] for line in _lines(res.stdout)] == ["c6"]
    res = await acli(
        "export",
        "--redis-url",
        redis_url,
        "--queue",
        q,
        "--state",
        "failed",
        "--reason",
        "429 Too Many Requests",
    )
    assert len(_lines(res.stdout)) == JOBS
    res = await acli("export", "--redis-url", redis_url, "--queue", q, "--state", "failed", "--limit", "3")
    assert res.code == 0 and len(_lines(res.stdout)) == 3 and "--limit 3 reached" in res.stderr


async def _failed_is(client: aioredis.Redis, k: str, n: int) -> bool:
    return int(await client.zcard(f"{k}:failed")) >= n
