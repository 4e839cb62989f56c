"""Postgres gate: connect and run the query (the runbook's ``psql "$DATABASE_URL" -c "SELECT 1;"``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Mapping

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from requeue.api.base import parse_duration
from requeue.api.gates import PostgresGate
from requeue.errors import RequeueError
from requeue.gates.result import GateResult, clip, format_ms
from requeue.secrets import SecretSource

__all__ = ["check_postgres"]

#: Server/libpq texts (stable across PostgreSQL versions) -> what they mean for the person on call.
_CONNECT_FAILURES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"password authentication failed for user \"([^\"]*)\""),
        'authentication failed for user "{0}": wrong password',
    ),
    (re.compile(r"role \"([^\"]*)\" does not exist"), 'authentication failed: role "{0}" does not exist'),
    (
        re.compile(r"no pg_hba\.conf entry for host"),
        "rejected by pg_hba.conf: no entry for this host, user and database (check sslmode)",
    ),
    (re.compile(r"database \"([^\"]*)\" does not exist"), 'unknown database "{0}"'),
    (
        re.compile(r"failed to resolve host|could not translate host name", re.I),
        "cannot resolve host name (DNS)",
    ),
    (re.compile(r"connection refused", re.I), "connection refused"),
    (re.compile(r"timeout expired|timed out", re.I), "connection timed out"),
    (re.compile(r"SSL|certificate", re.I), "TLS error"),
    (
        re.compile(r"too many connections|remaining connection slots", re.I),
        "the server has no free connection slots",
    ),
    (
        re.compile(r"the database system is (starting up|shutting down|in recovery mode)", re.I),
        "the database system is {0}",
    ),
]


async def check_postgres(spec: PostgresGate, secrets: SecretSource) -> GateResult:
    """Connect with ``connect_timeout`` and run ``spec.query`` under ``statement_timeout``.

    Both come from ``spec.timeout``, and the whole check is bounded by it too: a
    server that stops answering mid-query is reported as a timeout, while the
    server-side ``statement_timeout`` makes sure the query does not outlive us.
    """
    started = time.monotonic()
    try:
        dsn = (await secrets.get(spec.dsn_secret_ref)).strip()
    except RequeueError as exc:  # secret missing or unreadable: secret-free message
        return GateResult.fail(exc.message, time.monotonic() - started)
    ref = f"{spec.dsn_secret_ref.name}/{spec.dsn_secret_ref.key}"
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's parse error quotes the offending text, which may be the password: say nothing of it
        return GateResult.fail(
            f"the DSN in secret {ref} is not a valid connection string or postgresql:// URL",
            time.monotonic() - started,
        )
    target = _describe(params)
    timeout = parse_duration(spec.timeout).total_seconds()
    options = str(params.pop("options", "") or "")
    params["options"] = f"{options} -c statement_timeout={max(1, int(timeout * 1000))}".strip()
    params["connect_timeout"] = max(2, math.ceil(timeout))  # libpq's minimum is 2 s; asyncio bounds us anyway
    params.setdefault("application_name", "requeue-gate")

    phase = "connect"
    conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
    try:
        async with asyncio.timeout(timeout):
            conn = await psycopg.AsyncConnection.connect(make_conninfo("", **params), autocommit=True)
            phase = "query"
            t0 = time.monotonic()
            cursor = await conn.execute(spec.query.encode())  # user-given SQL, run as is
            if cursor.description is not None:
                await cursor.fetchmany(1)
            query_time = time.monotonic() - t0
    except TimeoutError:
        what = "could not connect" if phase == "connect" else "query did not finish"
        return GateResult.fail(
            f"{target}: {what} within {spec.timeout} (timeout)", time.monotonic() - started
        )
    except pg_errors.QueryCanceled as exc:
        if "statement timeout" in str(exc):
            text = f"query cancelled: statement_timeout {spec.timeout} exceeded (timeout)"
        else:
            text = f"query cancelled by the server: {_first_line(exc)}"
        return GateResult.fail(f"{target}: {text}", time.monotonic() - started)
    except psycopg.Error as exc:
        if phase == "connect":
            text = _connect_failure(exc)
        else:
            code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
            text = f"query failed{code}: {_first_line(exc)}"
        return GateResult.fail(f"{target}: {text}", time.monotonic() - started)
    except OSError as exc:
        return GateResult.fail(
            f"{target}: {type(exc).__name__}: {exc.strerror or exc}", time.monotonic() - started
        )
    finally:
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()
    return GateResult.ok(
        f"{target}: {clip(spec.query, 60)} ok in {format_ms(query_time)}", time.monotonic() - started
    )


def _describe(params: Mapping[str, object]) -> str:
    """``postgres 127.0.0.1:5432/test as app`` — where we connected, never with the password."""
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = params.get("dbname") or params.get("user") or ""
    user = params.get("user")
    return f"postgres {host}:{port}/{dbname}" + (f" as {user}" if user else "")


def _connect_failure(exc: psycopg.Error) -> str:
    text = str(exc)
    for pattern, message in _CONNECT_FAILURES:
        found = pattern.search(text)
        if found:
            return message.format(*found.groups())
    return f"connection failed: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
