"""requeue over ``rediss+cluster://``: a Redis Cluster that speaks TLS, as managed clusters with
in-transit encryption do.

The cluster's six nodes speak TLS to each other (bus and replication) and on their TLS ports;
a client on a TLS port is told TLS ports in ``CLUSTER SLOTS`` and ``MOVED``. Each node also keeps
a plain port, which only the test side uses: Node BullMQ producers and workers (ioredis) seed and
process jobs there, so what requeue does over TLS is checked by the same workers an application
runs. requeue verifies the nodes with the CA from a Secret (``spec.redis.tls.caSecretRef``), or
with ``?ssl_ca_certs=`` in the CLI's URL; a CA that did not sign them is the named reason
``RedisCertificateUntrusted``, with the password never shown.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis

from requeue.api.gates import GateStatus, GateType
from requeue.api.policy import QueuePolicySpec
from requeue.policy.evaluate import BullQueueOps, PolicyRef, evaluate
from requeue.queues import BullQueue, QueueKeys
from requeue.redis_target import open_redis
from requeue.secrets import StaticSecrets
from support.cli import acli, write_manifest
from support.dlqreplay import check_exactly_once, in_redis
from support.gates import make_certificates
from support.node import FailRule, NodeWorker, run_producer
from support.redis_cluster import RedisCluster

pytestmark = pytest.mark.interop

PREFIX = "{tls}"
MAJOR = 6
REASON = "ECONNREFUSED from the database"
#: spec.redis: the URL and the CA from the Secret ``redis`` (the CLI's ``--secret redis/KEY=VALUE``).
REDIS_SPEC = {
    "urlSecretRef": {"name": "redis", "key": "url"},
    "tls": {"caSecretRef": {"name": "redis", "key": "ca"}},
}


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tls=tmp_path_factory.mktemp("tls-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def owner(tls_cluster: RedisCluster) -> AsyncIterator[aredis.Redis]:
    """A plain-port client to the primary serving ``{tls}``'s slot, for the test's own checks."""
    node = tls_cluster.owner_of(PREFIX)
    client = aredis.Redis(
        host=node.host, port=node.port, password=tls_cluster.password, decode_responses=True
    )
    yield client
    await client.aclose()


async def _seed_failed(cluster: RedisCluster, queue: str, n: int) -> dict[str, dict[str, Any]]:
    """Node BullMQ (plain ports) adds ``n`` jobs and a worker fails every one: id -> job spec."""
    jobs = [
        {"name": "sync.order" if i % 2 else "sync.refund", "data": {"i": i, "shop": "eu"}, "opts": {}}
        for i in range(n)
    ]
    ids = await run_producer(cluster.node_js_url, queue, jobs, major=MAJOR, prefix=PREFIX)
    async with NodeWorker(
        cluster.node_js_url, queue, major=MAJOR, prefix=PREFIX, fail=[FailRule(REASON, data={"shop": "eu"})]
    ) as worker:
        finals = await worker.wait_for_final(ids)
    assert {f.outcome for f in finals.values()} == {"failed"}
    return dict(zip(ids, jobs, strict=True))


def _secrets(cluster: RedisCluster, ca_pem: str) -> tuple[str, ...]:
    return ("--secret", f"redis/url={cluster.tls_url}", "--secret", f"redis/ca={ca_pem}")


async def test_inspect_and_replay_over_a_tls_cluster_move_each_job_once(
    tls_cluster: RedisCluster, owner: aredis.Redis, tmp_path: Path
) -> None:
    queue = "orders"
    by_id = await _seed_failed(tls_cluster, queue, 10)
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(tls_cluster.ca_pem or "")

    res = await acli(
        "inspect", "--redis-url", f"{tls_cluster.tls_url}?ssl_ca_certs={ca_file}", "--queue", queue,
        "--prefix", PREFIX, "-o", "json",
    )  # fmt: skip
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["counts"]["failed"] == 10
    assert tls_cluster.password not in res.output

    subset = {i for i, job in by_id.items() if job["name"] == "sync.order"}
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {
            "queue": queue,
            "prefix": PREFIX,
            "redis": REDIS_SPEC,
            "selector": {"jobNames": ["sync.order"]},
            "rate": {"jobsPerSecond": 1000, "batchSize": 2},
        },
    )
    secrets = _secrets(tls_cluster, tls_cluster.ca_pem or "")
    res = await acli("replay", "-f", str(manifest), *secrets, "--replay-id", "tls-1", "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["replayed"]) == ("Succeeded", len(subset))
    assert tls_cluster.password not in res.output

    k = f"{PREFIX}:{queue}"
    assert set(await owner.lrange(f"{k}:wait", 0, -1)) == subset
    seen = await in_redis(owner, f"{PREFIX}:tls-1", queue=queue, prefix=PREFIX)
    check_exactly_once(seen, by_id, selected=subset, what="exact replay on a TLS cluster")
    # the application's own worker completes what requeue moved over TLS
    async with NodeWorker(tls_cluster.node_js_url, queue, major=MAJOR, prefix=PREFIX) as worker:
        finals = await worker.wait_for_final(sorted(subset))
    assert {f.outcome for f in finals.values()} == {"completed"}


async def test_a_ca_that_did_not_sign_the_nodes_is_named_and_the_password_never_shown(
    tls_cluster: RedisCluster, owner: aredis.Redis, tmp_path: Path
) -> None:
    queue = "untrusted"
    await _seed_failed(tls_cluster, queue, 2)
    wrong_ca = make_certificates(tmp_path).ca_pem  # a throw-away CA that signed nothing here
    manifest = write_manifest(
        tmp_path / "replay.yaml", {"queue": queue, "prefix": PREFIX, "redis": REDIS_SPEC}
    )
    res = await acli("replay", "-f", str(manifest), *_secrets(tls_cluster, wrong_ca), "-o", "json")
    assert res.code == 3, res.output
    error = json.loads(res.stdout)["error"]
    assert error["reason"] == "RedisCertificateUntrusted", error
    assert tls_cluster.password not in res.output and "Traceback" not in res.output
    assert await owner.zcard(f"{PREFIX}:{queue}:failed") == 2  # nothing moved


async def test_a_policy_pauses_and_resumes_over_a_tls_cluster(
    tls_cluster: RedisCluster, owner: aredis.Redis
) -> None:
    queue = "payments"
    by_id = await _seed_failed(tls_cluster, queue, 4)
    spec = QueuePolicySpec.model_validate(
        {
            "redis": REDIS_SPEC,
            "prefix": PREFIX,
            "queues": [queue],
            "interval": "10s",
            "thresholds": {"failed": 2},
            "gates": [{"name": "db", "http": {"url": "http://127.0.0.1:1/"}}],
            "actions": {"pauseWhileGatesFail": True},
        }
    )
    ref = PolicyRef(namespace="shop", name="payments", uid="tls-policy-uid", generation=1)
    secrets = StaticSecrets(
        {("redis", "url"): tls_cluster.tls_url, ("redis", "ca"): tls_cluster.ca_pem or ""}
    )
    client, _target = await open_redis(secrets, spec.redis, queues=[QueueKeys(PREFIX, queue)])
    try:
        red = [GateStatus(name="db", type=GateType.HTTP, healthy=False, message="down")]
        result = await evaluate(ref, spec, None, redis=client, ops=BullQueueOps(client, PREFIX), gates=red)
        assert await BullQueue(client, queue, prefix=PREFIX).is_paused()
        green = [GateStatus(name="db", type=GateType.HTTP, healthy=True, message="ok")]
        result = await evaluate(
            ref, spec, result.status, redis=client, ops=BullQueueOps(client, PREFIX), gates=green
        )
        assert not await BullQueue(client, queue, prefix=PREFIX).is_paused()
    finally:
        await client.aclose()
    healthy = next(c for c in result.status.conditions if c.type == "Healthy")
    assert healthy.reason == "FailedAboveThreshold", result.status.conditions
    assert await owner.zcard(f"{PREFIX}:{queue}:failed") == len(by_id)  # no auto-replay was asked for
