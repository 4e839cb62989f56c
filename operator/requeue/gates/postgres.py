"""Postgres gate: connect and run the query (the runbook's ``psql "$DATABASE_URL" -c "SELECT 1;"``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any

import psycopg
import re2
from psycopg import errors as pg_errors
from psycopg.abc import ConnDict
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from requeue.api.base import parse_duration
from requeue.api.conditions import Reason
from requeue.api.gates import PostgresGate
from requeue.gates.destinations import DestinationDenied, DestinationPolicy, current_policy, pin_postgres
from requeue.gates.result import CheckFailed, GateResult, clip, first_line, format_ms, read_secret
from requeue.redact import encode_userinfo
from requeue.secrets import SecretSource

__all__ = ["check_postgres"]

#: Server/libpq texts (stable across PostgreSQL versions) -> what they mean for the person on call.
#: RE2: the text is the server's, so matching must stay linear whatever it holds.
_CONNECT_FAILURES: list[tuple[Any, str]] = [
    (
        re2.compile(r"password authentication failed for user \"([^\"]*)\""),
        'authentication failed for user "{0}": wrong password',
    ),
    (re2.compile(r"role \"([^\"]*)\" does not exist"), 'authentication failed: role "{0}" does not exist'),
    (
        re2.compile(r"no pg_hba\.conf entry for host"),
        "rejected by pg_hba.conf: no entry for this host, user and database (check sslmode)",
    ),
    (re2.compile(r"database \"([^\"]*)\" does not exist"), 'unknown database "{0}"'),
    (
        re2.compile(r"(?i)failed to resolve host|could not translate host name"),
        "cannot resolve host name (DNS)",
    ),
    (re2.compile(r"(?i)connection refused"), "connection refused"),
    (re2.compile(r"(?i)timeout expired|timed out"), "connection timed out"),
    (re2.compile(r"(?i)SSL|certificate"), "TLS error"),
    (
        re2.compile(r"(?i)too many connections|remaining connection slots"),
        "the server has no free connection slots",
    ),
    (
        re2.compile(r"(?i)the database system is (starting up|shutting down|in recovery mode)"),
        "the database system is {0}",
    ),
]


async def check_postgres(
    spec: PostgresGate, secrets: SecretSource, *, policy: DestinationPolicy | None = None
) -> GateResult:
    """Connect with ``connect_timeout`` and run ``spec.query`` under ``statement_timeout``.

    Both come from ``spec.timeout``, and the whole check is bounded by it too: a
    server that stops answering mid-query is reported as a timeout, while the
    server-side ``statement_timeout`` makes sure the query does not outlive us.
    """
    started = time.monotonic()
    try:
        params = await _connection_params(spec, secrets)
        target = _describe(params)
        await _allowed(params, target, policy or current_policy())
        timeout = parse_duration(spec.timeout).total_seconds()
        query_time = await _run_query(spec, _bounded_by(params, timeout), target, timeout)
    except CheckFailed as failure:
        return failure.result(started)
    return GateResult.ok(
        f"{target}: {clip(spec.query, 60)} ok in {format_ms(query_time)}", time.monotonic() - started
    )


async def _allowed(params: ConnDict, target: str, policy: DestinationPolicy) -> None:
    """The operator's gate policy lets every host through (after DNS); one TCP host is then
    connected to at its checked address."""
    try:
        await pin_postgres(policy, params)
    except DestinationDenied as exc:
        raise CheckFailed(f"{target}: {exc.message}", misconfigured=Reason.DESTINATION_DENIED) from None
    except OSError:
        pass  # not resolvable: connecting says so in its own words


async def _connection_params(spec: PostgresGate, secrets: SecretSource) -> ConnDict:
    """The DSN from ``dsnSecretRef`` (a libpq string or postgresql:// URL), parsed."""
    # a postgresql:// URL's password may hold raw / ? # @: encode it as libpq needs (split at the last @)
    dsn = encode_userinfo((await read_secret(secrets, spec.dsn_secret_ref)).strip())
    try:
        return conninfo_to_dict(dsn)
    except psycopg.Error:
        # libpq's parse error quotes the offending text, which may be the password: say nothing of it
        ref = f"{spec.dsn_secret_ref.name}/{spec.dsn_secret_ref.key}"
        raise CheckFailed(
            f"the DSN in secret {ref} is not a valid connection string or postgresql:// URL",
            misconfigured=Reason.GATE_MISCONFIGURED,
        ) from None


def _bounded_by(params: ConnDict, timeout: float) -> ConnDict:
    """``params`` with ``statement_timeout`` and ``connect_timeout`` from the gate's timeout.

    The server then cancels a query we stopped waiting for, and libpq gives up
    connecting; user-given ``options`` are kept.
    """
    params = dict(params)
    options = str(params.pop("options", "") or "")
    params["options"] = f"{options} -c statement_timeout={max(1, int(timeout * 1000))}".strip()
    params["connect_timeout"] = max(2, math.ceil(timeout))  # libpq's minimum is 2 s; asyncio bounds us anyway
    params.setdefault("application_name", "requeue-gate")
    return params


async def _run_query(spec: PostgresGate, params: ConnDict, target: str, seconds: float) -> float:
    """Connect and run ``spec.query`` under one deadline of ``seconds``; the query's own time.

    The connection is closed whatever happens; a failure names the phase it happened in.
    """
    phase = "connect"
    conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
    try:
        async with asyncio.timeout(seconds):
            conn = await psycopg.AsyncConnection.connect(make_conninfo("", **params), autocommit=True)
            phase = "query"
            t0 = time.monotonic()
            cursor = await conn.execute(spec.query.encode())  # user-given SQL, run as is
            if cursor.description is not None:
                await cursor.fetchmany(1)
            return time.monotonic() - t0
    except (psycopg.Error, OSError) as exc:
        raise CheckFailed(f"{target}: {_failure_text(exc, phase, spec.timeout)}") from exc
    finally:
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()


def _failure_text(exc: psycopg.Error | OSError, phase: str, timeout: str) -> str:
    """What went wrong in ``phase`` ("connect" or "query"), for the person on call.

    Checked in this order: our own deadline (``TimeoutError``, an ``OSError``),
    the server's ``statement_timeout`` (``QueryCanceled``), then other driver errors.
    """
    if isinstance(exc, TimeoutError):
        what = "could not connect" if phase == "connect" else "query did not finish"
        return f"{what} within {timeout} (timeout)"
    if isinstance(exc, pg_errors.QueryCanceled):
        if "statement timeout" in str(exc):
            return f"query cancelled: statement_timeout {timeout} exceeded (timeout)"
        return f"query cancelled by the server: {first_line(exc)}"
    if isinstance(exc, psycopg.Error):
        if phase == "connect":
            return _connect_failure(exc)
        code = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return f"query failed{code}: {first_line(exc)}"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


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
    return f"connection failed: {first_line(exc)}"
