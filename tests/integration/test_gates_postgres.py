"""Postgres gate against the machine's real PostgreSQL (and a private one that checks passwords)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from requeue.api import GateSpec
from requeue.gates import GateResult, run_check
from requeue.gates.runner import GRACE
from requeue.secrets import StaticSecrets
from support import async_wait_until
from support.gates import PasswordPostgres
from support.redis_server import free_port
from support.tcp_proxy import TcpProxy

PASSWORD = "pg-Secret-9f3a"


def gate(query: str = "SELECT 1", timeout: str = "5s") -> GateSpec:
    return GateSpec.model_validate(
        {
            "name": "database",
            "postgres": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "query": query, "timeout": timeout},
        }
    )


async def check(dsn: str, query: str = "SELECT 1", limit: str = "5s") -> GateResult:
    """Run the gate with ``timeout: limit`` and the DSN from a Secret."""
    return await run_check(gate(query, limit), StaticSecrets({("db", "dsn"): dsn}))


@pytest.fixture(scope="module")
def password_pg() -> Iterator[PasswordPostgres]:
    server = PasswordPostgres().start()
    try:
        yield server
    finally:
        server.stop()


def with_password(dsn: str, password: str = PASSWORD) -> str:
    return dsn.replace("postgres@", f"postgres:{password}@")


async def test_healthy(pg_dsn: str) -> None:
    result = await check(pg_dsn)
    assert result.healthy, result.message
    assert "127.0.0.1:5432/test" in result.message
    assert "SELECT 1 ok" in result.message


async def test_healthy_with_a_password_in_the_dsn_never_shows_it(pg_dsn: str) -> None:
    # trust auth ignores the password; the message must not repeat it either way
    result = await check(with_password(pg_dsn))
    assert result.healthy, result.message
    assert PASSWORD not in result.message


async def test_wrong_password(password_pg: PasswordPostgres) -> None:
    good = await check(password_pg.dsn)
    assert good.healthy, good.message

    result = await check(password_pg.dsn.replace(password_pg.password, PASSWORD))
    assert not result.healthy
    assert 'authentication failed for user "postgres": wrong password' in result.message
    assert PASSWORD not in result.message
    assert password_pg.password not in result.message


async def test_unknown_role_on_a_trusting_server(pg_dsn: str) -> None:
    """The shared server trusts 127.0.0.1, so a missing role is its only authentication failure."""
    dsn = with_password(pg_dsn).replace("postgres:", "no_such_role:")
    result = await check(dsn)
    assert not result.healthy
    assert 'authentication failed: role "no_such_role" does not exist' in result.message
    assert PASSWORD not in result.message


async def test_unknown_database(pg_dsn: str) -> None:
    result = await check(with_password(pg_dsn).replace("/test", "/no_such_db"))
    assert not result.healthy
    assert 'unknown database "no_such_db"' in result.message
    assert PASSWORD not in result.message


async def test_connection_refused() -> None:
    result = await check(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/test")
    assert not result.healthy
    assert result.message.endswith("connection refused")
    assert PASSWORD not in result.message


async def test_unresolvable_host() -> None:
    result = await check(f"postgresql://postgres:{PASSWORD}@no-such-host.invalid:5432/test")
    assert not result.healthy
    assert "cannot resolve host name (DNS)" in result.message
    assert PASSWORD not in result.message


async def test_query_error_names_the_sqlstate(pg_dsn: str) -> None:
    result = await check(pg_dsn, query="SELECT 1/0")
    assert not result.healthy
    assert "query failed [22012]: division by zero" in result.message


async def test_query_that_outlives_the_timeout_is_cut_off(pg_dsn: str) -> None:
    started = time.monotonic()
    result = await check(pg_dsn, query="SELECT pg_sleep(10)", limit="1s")
    elapsed = time.monotonic() - started
    assert not result.healthy
    assert "(timeout)" in result.message
    assert elapsed < 1 + GRACE + 1.0  # bounded by the timeout plus a margin, nowhere near 10 s

    # and the query does not keep running on the server (statement_timeout / cancel)
    async def sleeping() -> int:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'requeue-gate' AND query LIKE 'SELECT pg_sleep(10)%'"
                " AND state = 'active'"
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    async def gone() -> bool:
        return await sleeping() == 0

    await async_wait_until(gone, timeout=5, message="the cut-off query to stop on the server")


async def test_statement_timeout_is_applied_by_the_server(pg_dsn: str) -> None:
    """The server enforces the bound too: the session's statement_timeout is the gate's timeout."""
    query = "SELECT 1 / (current_setting('statement_timeout') = '3s')::int"  # division by zero otherwise
    result = await check(pg_dsn, query=query, limit="3s")
    assert result.healthy, result.message
    result = await check(pg_dsn, query=query, limit="4s")
    assert not result.healthy
    assert "division by zero" in result.message


async def test_server_that_stops_answering_is_a_timeout(pg_dsn: str) -> None:
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert (await check(dsn)).healthy

        await proxy.delay(3000)
        started = time.monotonic()
        result = await check(dsn, limit="1s")
        assert time.monotonic() - started < 1 + GRACE + 1.0
        assert not result.healthy
        assert "could not connect within 1s (timeout)" in result.message

        await proxy.drop()
        result = await check(dsn)
        assert not result.healthy
        assert "127.0.0.1" in result.message


async def test_a_dsn_that_does_not_parse_is_not_quoted() -> None:
    result = await check(f"host=127.0.0.1 password={PASSWORD} = broken")
    assert not result.healthy
    assert result.message == "the DSN in secret db/dsn is not a valid connection string or postgresql:// URL"


async def test_missing_secret_names_secret_and_key() -> None:
    result = await run_check(gate(), StaticSecrets({}, environ={}))
    assert not result.healthy
    assert "db/dsn" in result.message
