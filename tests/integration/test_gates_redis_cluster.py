"""Redis gate on a real Redis Cluster (``redis+cluster://``): the whole cluster is checked.

``cluster_state:ok`` from the first seed that answers, then every primary PINGed (and its
``INFO memory`` read): a replay or policy may use any slot, so any primary in trouble is a
red gate.
"""

from __future__ import annotations

from typing import Any

from requeue.api import GateSpec
from requeue.gates import GateResult, run_check
from requeue.secrets import StaticSecrets
from support.redis_cluster import RedisCluster
from support.redis_server import free_port


async def check(url: str, **redis_spec: Any) -> GateResult:
    """The gate with the URL from a Secret (``urlSecretRef``)."""
    spec = GateSpec.model_validate(
        {
            "name": "cluster",
            "redis": {"urlSecretRef": {"name": "r", "key": "url"}, "maxLatency": "2s", **redis_spec},
        }
    )
    return await run_check(spec, StaticSecrets({("r", "url"): url}))


def _primaries(cluster: RedisCluster) -> list[Any]:
    out = []
    for node in cluster.nodes:
        if node.running:
            with cluster.client(node) as c:
                if c.info("replication")["role"] == "master":
                    out.append(node)
    return out


async def test_every_primary_is_pinged_once_the_cluster_says_ok(cluster: RedisCluster) -> None:
    result = await check(cluster.url, maxMemoryPercent=95)
    assert result.healthy, result.message
    assert result.message.startswith("cluster_state:ok, 3 primaries (slowest PING): PING "), result.message
    assert "maxmemory not set" in result.message
    assert cluster.password not in result.message


async def test_a_dead_first_seed_is_passed_over(cluster: RedisCluster) -> None:
    alive = next(n for n in cluster.nodes if n.running)  # the failover test may have killed one
    seeds = f"127.0.0.1:{free_port()},127.0.0.1:{alive.port}"
    result = await check(f"redis+cluster://:{cluster.password}@{seeds}")
    assert result.healthy, result.message


async def test_the_fullest_primary_turns_the_gate_red(cluster: RedisCluster) -> None:
    full = _primaries(cluster)[-1]
    with cluster.client(full) as c:
        c.config_set("maxmemory", str(64 * 1024 * 1024))
        used = int(c.info("memory")["used_memory"])
    try:
        percent = 100 * used / (64 * 1024 * 1024) / 2  # half of what that primary uses: above it
        result = await check(cluster.url, maxMemoryPercent=round(percent, 3))
    finally:
        with cluster.client(full) as c:
            c.config_set("maxmemory", "0")
    assert not result.healthy, result.message
    assert "above maxMemoryPercent" in result.message and "64.0 MiB" in result.message, result.message


async def test_a_wrong_password_is_named_and_never_shown(cluster: RedisCluster) -> None:
    alive = next(n for n in cluster.nodes if n.running)
    url = f"redis+cluster://:not-the-password@127.0.0.1:{alive.port}"
    result = await check(url)
    assert not result.healthy
    assert "authentication failed" in result.message, result.message
    assert "not-the-password" not in result.message and cluster.password not in result.message
