"""GateRunner over real services: concurrency, per-gate bounds, metrics, counters across checks."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import psycopg
from prometheus_client import REGISTRY

from requeue.api import GatePolicy, GateSpec, GateStatus
from requeue.gates import GateRunner
from requeue.gates import runner as runner_module
from requeue.gates.runner import GRACE
from requeue.secrets import StaticSecrets
from support import async_wait_until
from support.gates import ControlledHttp
from support.tcp_proxy import TcpProxy

NOW = datetime(2025, 7, 16, 12, 0, tzinfo=UTC)


def http_gate(name: str, url: str, timeout: str = "5s") -> GateSpec:
    return GateSpec.model_validate({"name": name, "http": {"url": url, "timeout": timeout}})


def pg_gate(name: str, query: str, timeout: str = "5s") -> GateSpec:
    return GateSpec.model_validate(
        {
            "name": name,
            "postgres": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "query": query, "timeout": timeout},
        }
    )


async def test_gates_are_checked_concurrently(api: ControlledHttp, pg_dsn: str) -> None:
    """Three gates of 1.5 s each take about 1.5 s together, not 4.5 s."""
    runner = GateRunner(
        [
            http_gate("a", api.url("/slow?seconds=1.5")),
            http_gate("b", api.url("/slow?seconds=1.5")),
            pg_gate("c", "SELECT pg_sleep(1.5)"),
        ],
        GatePolicy(),
        StaticSecrets({("db", "dsn"): pg_dsn}),
    )
    started = time.monotonic()
    statuses = await runner.check([], NOW)
    elapsed = time.monotonic() - started
    assert [s.name for s in statuses] == ["a", "b", "c"]
    assert all(s.healthy for s in statuses), [s.message for s in statuses]
    assert runner.all_passed(statuses)
    assert 1.5 <= elapsed < 3.5  # the sum would be 4.5 s


async def test_one_slow_gate_does_not_hold_the_others(api: ControlledHttp) -> None:
    runner = GateRunner(
        [http_gate("fast", api.url("/status/200")), http_gate("slow", api.url("/slow?seconds=30"), "1s")],
        GatePolicy(),
        StaticSecrets({}),
    )
    started = time.monotonic()
    fast, slow = await runner.check([], NOW)
    assert time.monotonic() - started < 1 + GRACE + 1.0
    assert fast.healthy and fast.consecutive_successes == 1
    assert not slow.healthy and slow.consecutive_failures == 1
    assert slow.message.endswith("(timeout)")
    assert runner.any_red([fast, slow]) and not runner.all_passed([fast, slow])
    assert runner.summary([fast, slow]).startswith("fast: ok; slow: GET http://127.0.0.1:")


async def test_a_check_stuck_cancelling_is_abandoned_at_its_timeout(pg_dsn: str) -> None:
    """The network goes quiet mid-query: psycopg would spend seconds cancelling; the runner does not wait."""
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        runner = GateRunner(
            [pg_gate("db", "SELECT pg_sleep(4)", "1s")], GatePolicy(), StaticSecrets({("db", "dsn"): dsn})
        )
        started = time.monotonic()
        task = asyncio.create_task(runner.check([], NOW))

        async def query_running() -> bool:
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
                cur = await conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = 'requeue-gate'"
                    " AND query = 'SELECT pg_sleep(4)' AND state = 'active'"
                )
                return await cur.fetchone() is not None

        await async_wait_until(query_running, timeout=5, message="the gate's query to run")
        await proxy.delay(10_000)  # the answer (and psycopg's cancel request) now crawl
        (status,) = await task
        elapsed = time.monotonic() - started
        assert elapsed < 1 + GRACE + 1.0
        assert not status.healthy
        assert "(timeout)" in status.message
        # (psycopg, cancelled at 1 s, sends a cancel request through the crawling proxy and would
        # wait up to 5 s for it; the runner cancels it again at 1 s + GRACE, or abandons it)

        await proxy.stop()  # cut the crawling connections so the abandoned check ends
        await async_wait_until(
            lambda: asyncio.sleep(0, not runner_module._abandoned),
            timeout=15,
            message="the abandoned check to finish",
        )


async def test_metrics_follow_the_last_check(api: ControlledHttp) -> None:
    runner = GateRunner(
        [http_gate("cgb-api", api.url("/json"))],
        GatePolicy(),
        StaticSecrets({}),
        namespace="payments",
        owner="replay-metrics",
    )
    labels = {"namespace": "payments", "owner": "replay-metrics", "gate": "cgb-api", "type": "http"}
    count_before = (
        REGISTRY.get_sample_value("requeue_gate_check_duration_seconds_count", {"type": "http"}) or 0
    )

    statuses = await runner.check([], NOW)
    assert REGISTRY.get_sample_value("requeue_gate_healthy", labels) == 1.0

    runner.gates = [http_gate("cgb-api", api.url("/status/429"))]
    statuses = await runner.check(statuses, NOW + timedelta(seconds=10))
    assert REGISTRY.get_sample_value("requeue_gate_healthy", labels) == 0.0
    assert statuses[0].message == "HTTP 429 Too Many Requests (expected 200)"
    count_after = REGISTRY.get_sample_value("requeue_gate_check_duration_seconds_count", {"type": "http"})
    assert count_after == count_before + 2

    runner.clear_metrics()
    assert REGISTRY.get_sample_value("requeue_gate_healthy", labels) is None


async def test_counters_continue_from_the_previous_status(api: ControlledHttp) -> None:
    """200/500 flapping with thresholds 2/2: healthy after two passes, red after two failures."""
    ok, bad = http_gate("api", api.url("/status/200")), http_gate("api", api.url("/status/500"))
    runner = GateRunner([ok], GatePolicy(success_threshold=2, failure_threshold=2), StaticSecrets({}))
    seen = []
    statuses: list[GateStatus] = []
    for i, spec in enumerate([ok, ok, bad, ok, bad, bad, ok, ok]):
        runner.gates = [spec]
        statuses = await runner.check(statuses, NOW + timedelta(seconds=10 * i))
        seen.append((statuses[0].healthy, runner.all_passed(statuses), runner.any_red(statuses)))
    assert seen == [
        (False, False, False),  # 1 pass
        (True, True, False),  # 2 passes: healthy
        (True, False, False),  # 1 failure: still healthy, no longer "all passed"
        (True, False, False),  # 1 pass
        (True, False, False),  # 1 failure
        (False, False, True),  # 2 failures: red
        (False, False, False),  # 1 pass
        (True, True, False),  # 2 passes
    ]
