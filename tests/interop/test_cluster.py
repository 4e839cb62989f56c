"""requeue on a real Redis Cluster (3 primaries, 3 replicas) with Node BullMQ on an ioredis Cluster.

The producers and workers are what an application on a cluster runs: Node BullMQ with a
``{bull}`` prefix over ``new IORedis.Cluster(...)``. requeue gets a ``redis+cluster://`` URL
naming two seed nodes (password with every awkward character, raw) and talks only to the
primary that owns the queue's slot. Proven here with exact id sets: inspect, replay Exact
and Bulk, pause/resume/clean and ``inspect --job`` against Node workers, ``replays list|forget``
finding replays of two hash tags on two primaries, the refusal of a prefix without a hash
tag, and a failover in the middle of a replay (the slot's primary SIGKILLed, its replica
promoted): every selected job moved once. (The QueuePolicy on a cluster:
tests/e2e/test_queuepolicy_cluster.py.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.crc import key_slot

from requeue.replay.tuning import DEFAULT_TUNING
from support.bullmq_jobs import older_than
from support.cli import acli, write_manifest
from support.dlqreplay import check_exactly_once, in_redis
from support.node import FailRule, NodeWorker, get_counts, run_producer
from support.redis_cluster import RedisCluster
from support.redis_server import RedisServer

pytestmark = pytest.mark.interop

PREFIX = "{bull}"
MAJOR = 6
RATE_LIMITED = "429 Too Many Requests from provider"


@pytest.fixture
async def owner_client(cluster: RedisCluster) -> AsyncIterator[aredis.Redis]:
    """A plain client to the primary serving ``{bull}``'s slot (where every key of the test lives)."""
    node = cluster.owner_of(PREFIX)
    client = _client(cluster, node)
    yield client
    await client.aclose()


def _client(cluster: RedisCluster, node: RedisServer) -> aredis.Redis:
    return aredis.Redis(host=node.host, port=node.port, password=cluster.password, decode_responses=True)


async def _seed_failed(
    cluster: RedisCluster, queue: str, jobs: list[dict[str, Any]], *, prefix: str = PREFIX
) -> dict[str, dict[str, Any]]:
    """Node producer + a Node worker failing everything: the failed set, id -> job spec."""
    ids = await run_producer(cluster.node_js_url, queue, jobs, major=MAJOR, prefix=prefix)
    async with NodeWorker(
        cluster.node_js_url,
        queue,
        major=MAJOR,
        prefix=prefix,
        fail=[FailRule(RATE_LIMITED, data={"tenant": "acme"})],
    ) as worker:
        finals = await worker.wait_for_final(ids)
    assert {f.outcome for f in finals.values()} == {"failed"}
    return dict(zip(ids, jobs, strict=True))


def _jobs(n: int) -> list[dict[str, Any]]:
    return [
        {"name": "whatsapp.send" if i % 3 else "email.send", "data": {"i": i, "tenant": "acme"}, "opts": {}}
        for i in range(n)
    ]


def _tagged(replay_id: str) -> str:
    """The replay's id as its keys carry it on a cluster (``requeue:replay:{bull}:<id>:...``)."""
    return f"{PREFIX}:{replay_id}"


async def test_inspect_and_an_exact_replay_over_the_cluster(
    cluster: RedisCluster, owner_client: aredis.Redis, tmp_path: Path
) -> None:
    queue = "notify-exact"
    by_id = await _seed_failed(cluster, queue, _jobs(12))
    k = f"{PREFIX}:{queue}"

    res = await acli(
        "inspect", "--redis-url", cluster.url, "--queue", queue, "--prefix", PREFIX, "-o", "json"
    )
    assert res.code == 0, res.output
    report = json.loads(res.stdout)
    assert report["counts"]["failed"] == 12
    assert cluster.password not in res.output

    subset = {i for i, j in by_id.items() if j["name"] == "whatsapp.send"}
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {
            "queue": queue,
            "prefix": PREFIX,
            "selector": {"jobNames": ["whatsapp.send"]},
            "rate": {"jobsPerSecond": 1000, "batchSize": 3},
        },
    )
    res = await acli(
        "replay", "-f", str(manifest), "--redis-url", cluster.url, "--replay-id", "exact-1", "-o", "json"
    )
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", len(subset), len(subset))
    assert cluster.password not in res.output

    assert set(await owner_client.lrange(f"{k}:wait", 0, -1)) == subset
    assert set(await owner_client.zrange(f"{k}:failed", 0, -1)) == set(by_id) - subset
    seen = await in_redis(owner_client, _tagged("exact-1"), queue=queue, prefix=PREFIX)
    check_exactly_once(seen, by_id, selected=subset, what="exact replay on a cluster")
    # requeue's own keys of the replay live in the queue's slot, on the same node
    assert await owner_client.exists(f"requeue:replay:{PREFIX}:exact-1:progress") == 1

    # Node BullMQ on the cluster completes exactly the replayed jobs
    async with NodeWorker(cluster.node_js_url, queue, major=MAJOR, prefix=PREFIX) as worker:
        outcomes = await worker.wait_for_final(subset)
    assert {i for i, o in outcomes.items() if o.outcome == "completed"} == subset
    assert sorted(p.id for p in worker.processed) == sorted(subset)


async def test_a_bulk_replay_over_the_cluster(
    cluster: RedisCluster, owner_client: aredis.Redis, tmp_path: Path
) -> None:
    queue = "notify-bulk"
    by_id = await _seed_failed(cluster, queue, _jobs(30))
    k = f"{PREFIX}:{queue}"
    # Bulk's window ends a clock-skew margin before the replay starts; the CLI runs on the real clock
    await older_than(owner_client, queue, DEFAULT_TUNING.clock_skew_ms, prefix=PREFIX)
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {"queue": queue, "prefix": PREFIX, "mode": "Bulk", "rate": {"jobsPerSecond": 1000, "batchSize": 7}},
    )
    res = await acli(
        "replay", "-f", str(manifest), "--redis-url", cluster.url, "--replay-id", "bulk-1", "-o", "json"
    )
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["replayed"]) == ("Succeeded", 30)
    waiting = await owner_client.lrange(f"{k}:wait", 0, -1)
    assert sorted(waiting) == sorted(by_id)  # each once: BullMQ's moveJobsToWait, in the queue's slot
    assert await owner_client.zcard(f"{k}:failed") == 0
    progress = await owner_client.hgetall(f"requeue:replay:{PREFIX}:bulk-1:progress")
    assert (progress["stage"], progress["replayed"]) == ("done", "30")


async def test_pause_resume_clean_and_one_job_over_the_cluster(
    cluster: RedisCluster, owner_client: aredis.Redis
) -> None:
    """Runbook steps on a cluster: pause (Node BullMQ sees it), look at one failed job, resume
    (a Node worker then runs what queued up meanwhile), clean what finished."""
    queue = "notify-ops"
    failed = await _seed_failed(cluster, queue, _jobs(6))
    k = f"{PREFIX}:{queue}"
    on_queue = ("--redis-url", cluster.url, "--queue", queue, "--prefix", PREFIX, "-o", "json")

    res = await acli("pause", *on_queue)
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["action"] == "paused"
    _counts, paused = await get_counts(cluster.node_js_url, queue, major=MAJOR, prefix=PREFIX)
    assert paused  # BullMQ over ioredis Cluster reads the pause requeue wrote on the slot's primary
    queued = await run_producer(
        cluster.node_js_url,
        queue,
        [{"name": "email.send", "data": {"i": i}, "opts": {}} for i in range(5)],
        major=MAJOR,
        prefix=PREFIX,
    )

    one = sorted(failed)[0]
    res = await acli(
        "inspect",
        "--redis-url",
        cluster.url,
        "--queue",
        queue,
        "--prefix",
        PREFIX,
        "--job",
        one,
        "-o",
        "json",
    )
    assert res.code == 0, res.output
    job = json.loads(res.stdout)
    assert (job["id"], job["state"], job["failedReason"]) == (one, "failed", RATE_LIMITED)
    assert job["data"] == failed[one]["data"]

    res = await acli("resume", *on_queue)
    assert res.code == 0, res.output
    resumed = json.loads(res.stdout)
    assert (resumed["action"], resumed["wasPaused"], resumed["pausedBy"]) == ("resumed", True, [])
    async with NodeWorker(cluster.node_js_url, queue, major=MAJOR, prefix=PREFIX) as worker:
        outcomes = await worker.wait_for_final(queued)
    assert {i for i, o in outcomes.items() if o.outcome == "completed"} == set(queued)

    res = await acli("clean", *on_queue, "--state", "completed", "--grace", "0s")
    assert res.code == 0, res.output
    cleaned = json.loads(res.stdout)
    assert (cleaned["removed"], set(cleaned["ids"])) == (5, set(queued))
    assert await owner_client.zcard(f"{k}:completed") == 0
    assert await owner_client.exists(*(f"{k}:{i}" for i in queued)) == 0
    res = await acli("clean", *on_queue, "--state", "failed", "--grace", "0s", "--limit", "2")
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["removed"] == 2
    assert await owner_client.zcard(f"{k}:failed") == 4
    assert cluster.password not in res.output


def _tag_on_another_primary(cluster: RedisCluster) -> str:
    """A hash tag whose slot another primary than ``{bull}``'s serves."""
    bull = cluster.owner_of(PREFIX)
    for i in range(100):
        tag = f"{{t{i}}}"
        if cluster.owner_of(tag) is not bull:
            return tag
    raise LookupError("every tag tried hashes to the primary of {bull}")


async def test_replays_list_and_forget_find_replays_on_every_primary(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """Two queues whose prefixes carry tags served by two primaries: ``replays list`` shows both
    replays (each one's keys live in its queue's slot), ``forget`` deletes one on its node."""
    other = _tag_on_another_primary(cluster)
    made: dict[str, tuple[str, str]] = {}
    for prefix, replay_id in ((PREFIX, "listed-bull"), (other, "listed-other")):
        queue = "notify-listed"
        await _seed_failed(cluster, queue, _jobs(3), prefix=prefix)
        manifest = write_manifest(tmp_path / f"{replay_id}.yaml", {"queue": queue, "prefix": prefix})
        res = await acli("replay", "-f", str(manifest), "--redis-url", cluster.url, "--replay-id", replay_id)
        assert res.code == 0, res.output
        made[replay_id] = (prefix, f"requeue:replay:{prefix}:{replay_id}:progress")
    assert key_slot(made["listed-bull"][1].encode()) != key_slot(made["listed-other"][1].encode())

    res = await acli("replays", "list", "--redis-url", cluster.url, "-o", "json")
    assert res.code == 0, res.output
    listed = {r["id"]: r for r in json.loads(res.stdout)["replays"]}
    assert {"listed-bull", "listed-other"} <= set(listed), listed
    for replay_id in made:
        assert (listed[replay_id]["phase"], listed[replay_id]["replayed"]) == ("Succeeded", 3)
    assert cluster.password not in res.output

    res = await acli("replays", "forget", "listed-other", "--redis-url", cluster.url, "-o", "json")
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["keysDeleted"] >= 3
    prefix, progress = made["listed-other"]
    node = _client(cluster, cluster.owner_of(prefix))
    try:
        assert await node.exists(progress) == 0
    finally:
        await node.aclose()
    res = await acli("replays", "list", "--redis-url", cluster.url, "-o", "json")
    ids = {r["id"] for r in json.loads(res.stdout)["replays"]}
    assert "listed-bull" in ids and "listed-other" not in ids
    res = await acli("replays", "forget", "listed-other", "--redis-url", cluster.url, "-o", "json")
    assert res.code == 2 and json.loads(res.stdout)["error"]["reason"] == "ReplayNotFound", res.output


@pytest.mark.parametrize(
    "spec",
    [
        {"queue": "plain", "prefix": "bull"},
        {"queue": "plain", "prefix": "bull}"},
        {"queue": "{a}", "prefix": "bull", "targetQueue": "{b}"},  # tags in names: two slots
    ],
    ids=["no-tag", "broken-tag", "target-in-another-slot"],
)
async def test_a_queue_without_a_shared_hash_tag_is_refused_by_name(
    cluster: RedisCluster, tmp_path: Path, spec: dict[str, str]
) -> None:
    manifest = write_manifest(tmp_path / "replay.yaml", spec)
    res = await acli("replay", "-f", str(manifest), "--redis-url", cluster.url, "-o", "json")
    assert res.code == 2, res.output
    error = json.loads(res.stdout)["error"]
    assert error["reason"] == "HashTagRequired", error
    assert "{bull}" in error["message"]
    assert cluster.password not in res.output
    if "targetQueue" not in spec:
        res = await acli(
            "inspect", "--redis-url", cluster.url, "--queue", spec["queue"], "--prefix", spec["prefix"]
        )
        assert res.code == 2 and "HashTagRequired" in res.output and "hash tag" in res.output
        assert cluster.password not in res.output


async def test_a_failover_mid_replay_moves_each_job_once(cluster: RedisCluster, tmp_path: Path) -> None:
    """SIGKILL the primary of the slot while the replay moves; its replica takes over; the
    replay resumes from what the promoted replica holds, and every selected job moved once."""
    queue = "notify-failover"
    by_id = await _seed_failed(cluster, queue, _jobs(120))
    primary = cluster.owner_of(PREFIX)
    replica = cluster.replica_of(primary)
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {"queue": queue, "prefix": PREFIX, "rate": {"jobsPerSecond": 40, "batchSize": 4}},
    )
    run = asyncio.create_task(
        acli(
            "replay",
            "-f",
            str(manifest),
            "--redis-url",
            cluster.url,
            "--replay-id",
            "failover-1",
            "-o",
            "json",
            timeout=120,
        )
    )
    watcher = _client(cluster, primary)
    progress = f"requeue:replay:{PREFIX}:failover-1:progress"
    await _until(lambda: _replayed(watcher, progress), lambda n: n >= 12, 60, "the replay moving jobs")
    # what the primary acknowledged so far has reached its replica (replication is asynchronous:
    # a batch acknowledged after this and lost with the primary is one the replay does again)
    assert await watcher.wait(1, 10_000) == 1
    await watcher.aclose()
    primary.kill()
    await asyncio.to_thread(
        cluster.wait_until, lambda: cluster.promoted(replica), 30, "the replica's promotion"
    )

    res = await run
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", 120, 120)
    assert cluster.password not in res.output
    survivor = _client(cluster, replica)
    try:
        seen = await in_redis(survivor, _tagged("failover-1"), queue=queue, prefix=PREFIX)
    finally:
        await survivor.aclose()
    check_exactly_once(seen, by_id, selected=set(by_id), what="replay across a failover")


async def _replayed(client: aredis.Redis, progress: str) -> int:
    return int(await client.hget(progress, "replayed") or 0)


async def _until(read: Any, check: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if check(await read()):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


async def test_a_dedupe_by_replay_over_the_cluster_keeps_its_keys_in_the_queues_slot(
    cluster: RedisCluster, owner_client: aredis.Redis, tmp_path: Path
) -> None:
    queue = "orders-dedupe"
    jobs = [
        {"name": "order.charge", "data": {"orderId": f"o-{i % 4}", "tenant": "acme", "i": i}, "opts": {}}
        for i in range(14)
    ]
    by_id = await _seed_failed(cluster, queue, jobs)
    k = f"{PREFIX}:{queue}"
    newest: dict[str, str] = {}
    for job_id in [str(i) for i in await owner_client.zrange(f"{k}:failed", 0, -1)]:
        newest[by_id[job_id]["data"]["orderId"]] = job_id
    kept = set(newest.values())
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {"queue": queue, "prefix": PREFIX, "selector": {"dedupeBy": "$.orderId"}},
    )
    res = await acli(
        "replay", "-f", str(manifest), "--redis-url", cluster.url, "--replay-id", "dedupe-1", "-o", "json"
    )
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"], status["duplicates"]) == (
        "Succeeded",
        4,
        4,
        10,
    )
    assert set(await owner_client.lrange(f"{k}:wait", 0, -1)) == kept
    assert set(await owner_client.zrange(f"{k}:failed", 0, -1)) == set(by_id) - kept
    # the value -> newest-job hash and the duplicate counts live in the queue's slot, on its node
    assert await owner_client.hlen(f"requeue:replay:{PREFIX}:dedupe-1:dedupe") == 4
    assert await owner_client.hgetall(f"requeue:replay:{PREFIX}:dedupe-1:duplicates") == {
        "o-0": "3",
        "o-1": "3",
        "o-2": "2",
        "o-3": "2",
    }
