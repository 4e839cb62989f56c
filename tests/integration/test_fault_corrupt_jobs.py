"""10,000 real failed jobs, 5% of them damaged five ways: inspect counts and lists exactly the
corrupt ones, a replay moves every valid matching job exactly once and nothing else, and a
real BullMQ worker then processes what moved.

The damage is what production Redis has been seen to hold: data that is not JSON (a
truncated write), a hash without ``name``, a hash gone while its id stays in the failed
set (removed by hand or by an eviction), binary data (a producer that wrote msgpack), and
a 1 MB payload, which is *not* corrupt: it is valid JSON and must move whole.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import redis.asyncio as aioredis

from requeue.analysis import CORRUPT_IDS
from requeue.queues import QueueKeys
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.cli import cli, write_manifest

Q = "default"
K = QueueKeys("bull", Q)
N = 10_000
#: One job in twenty is damaged: 5%, 100 of each of the five kinds.
DAMAGED_EVERY = 20
KINDS = ("not json", "no name", "no hash", "binary", "1 MB")
BIG = 1_000_000
SELECTOR = {"jobNames": ["whatsapp.*"], "dataMatch": {"tenant": "acme"}}
FAST = {"jobsPerSecond": 1_000_000, "batchSize": 500}


def jobs() -> list[JobSpec]:
    """Two names and two tenants, spread so that every damage kind hits matching jobs and others."""
    return [
        JobSpec(
            name="email.send" if i % 3 == 0 else "whatsapp.send",
            data={"i": i, "tenant": "globex" if i % 7 == 0 else "acme"},
            reason="429 Too Many Requests",
        )
        for i in range(N)
    ]


def damage_of(i: int) -> str | None:
    """Which damage job ``i`` gets, if any."""
    return KINDS[(i // DAMAGED_EVERY) % len(KINDS)] if i % DAMAGED_EVERY == 7 else None


async def damage(r: aioredis.Redis, ids: list[str]) -> dict[str, str]:
    """Damage 5% of the jobs in place; id -> kind."""
    done: dict[str, str] = {}
    async with r.pipeline(transaction=False) as pipe:
        for i, job_id in enumerate(ids):
            kind = damage_of(i)
            if kind is None:
                continue
            done[job_id] = kind
            key = K.job(job_id)
            if kind == "not json":
                pipe.hset(key, "data", f'{{"i": {i}, "tenant": "acme"')  # cut short
            elif kind == "no name":
                pipe.hdel(key, "name")
            elif kind == "no hash":
                pipe.delete(key)
            elif kind == "binary":
                pipe.hset(key, "data", b"\x82\xa1i\xcd\x00\xff\xfe\x00binary")
            else:
                pipe.hset(
                    key,
                    "data",
                    json.dumps({"i": i, "tenant": "acme" if i % 7 else "globex", "blob": "x" * BIG}),
                )
        await pipe.execute()
    return done


async def test_corrupt_jobs_are_counted_listed_and_every_valid_match_replays_once(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    specs = jobs()
    ids = await make_failed_jobs(redis_url, Q, specs, timeout=300)
    kinds = await damage(redis_client, ids)
    assert Counter(kinds.values()) == dict.fromkeys(KINDS, N // DAMAGED_EVERY // len(KINDS))
    corrupt = {i for i, k in kinds.items() if k != "1 MB"}

    # inspect: every corrupt job counted, the first few listed by id, by problem
    res = cli("inspect", "--redis-url", redis_url, "--queue", Q, "-o", "json", timeout=300)
    assert res.code == 0, res.output
    report = json.loads(res.stdout)
    assert (report["total"], report["readable"]) == (N, N - len(corrupt))
    assert report["corrupt"]["count"] == len(corrupt)
    listed = report["corrupt"]["ids"]
    assert len(listed) == len(set(listed)) == CORRUPT_IDS, listed  # bounded, no repeats
    assert set(listed) <= corrupt
    assert report["corrupt"]["byProblem"] == {
        "job data is not JSON": 200,  # cut short and binary
        "job hash missing or has no name": 200,
    }
    assert {g["key"]: g["count"] for g in report["byName"]["groups"]} == dict(
        Counter(specs[n].name for n, job_id in enumerate(ids) if job_id not in corrupt)
    )

    # replay by name and data: a job whose data cannot be read cannot be judged, so it stays
    def matches(n: int) -> bool:
        return specs[n].name.startswith("whatsapp.") and specs[n].data["tenant"] == "acme"

    expected = {job_id for n, job_id in enumerate(ids) if matches(n) and job_id not in corrupt}
    # the name filter runs first (in Redis), so data is read, and found broken, only for whatsapp.*;
    # a hash without a name is corrupt whatever the selector
    unjudged = {
        job_id
        for n, job_id in enumerate(ids)
        if job_id in corrupt
        and (kinds[job_id] in ("no name", "no hash") or specs[n].name.startswith("whatsapp."))
    }
    manifest = write_manifest(tmp_path / "replay.yaml", {"selector": SELECTOR, "rate": FAST})
    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json", timeout=300)
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert status["phase"] == "Succeeded", status
    assert (status["matched"], status["replayed"], status["skipped"]) == (len(expected), len(expected), 0)
    assert status["corrupt"] == len(unjudged), (status["corrupt"], len(unjudged))
    assert len(status["corruptIds"]) == CORRUPT_IDS and set(status["corruptIds"]) <= unjudged

    waiting = await redis_client.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == len(expected)  # each exactly once
    assert set(waiting) == expected
    assert await redis_client.zcard(K.prioritized) == 0
    assert set(await redis_client.zrange(K.failed, 0, -1)) == set(ids) - expected  # nothing else moved
    for job_id in corrupt:  # left as they were found
        assert await redis_client.exists(K.job(job_id)) == (kinds[job_id] != "no hash")

    # a real worker processes every moved job, the 1 MB ones with their data whole
    def check(job: object) -> str | None:
        data = job.data  # type: ignore[attr-defined]
        if kinds.get(str(job.id)) == "1 MB" and len(data["blob"]) != BIG:  # type: ignore[attr-defined]
            return "blob cut"
        return None if ids[data["i"]] == str(job.id) else "data of another job"  # type: ignore[attr-defined]

    async with run_worker(redis_url, Q, fail_when=check) as run:
        await run.wait_for(len(expected), timeout=300)
    assert run.failed == []
    assert sorted(run.completed) == sorted(expected)
    assert any(kinds.get(i) == "1 MB" for i in expected)
