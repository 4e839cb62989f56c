"""Shared by the CLI commands: how errors are printed and with which exit code, TTY detection,
and the one place that decides about colour (:func:`make_console`).

Everything a command prints goes through :func:`redact_text` with the secret
values it knows (the Redis URL, ``--secret`` values), so a password can never
reach a terminal or a CI log, even inside a library's error message.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from redis import exceptions as rx
from redis.asyncio import Redis
from rich.console import Console

from requeue.commands.redis_env import cli_connect
from requeue.errors import (
    AuthFailed,
    Forbidden,
    RedisCertificateUntrusted,
    RedisUnreachable,
    RequeueError,
    SecretNotFound,
    SelectionChanged,
    SpecInvalid,
)
from requeue.queues import map_redis_error
from requeue.redact import redact_text, sensitive_parts

__all__ = [
    "ERROR_SCHEMA_VERSION",
    "EXIT_INTERRUPTED",
    "ConnectRetry",
    "RedactedValues",
    "color_wanted",
    "connect_retrying",
    "error_label",
    "error_object",
    "is_tty",
    "make_console",
    "print_json",
    "report_error",
    "run_on_redis",
]

T = TypeVar("T")

#: Exit status after Ctrl-C / SIGTERM: 128 + the signal number, as shells do.
EXIT_INTERRUPTED = 130
#: ``schemaVersion`` of the ``-o json`` error object (see :func:`error_object`).
ERROR_SCHEMA_VERSION = 1


class RedactedValues:
    """Values that must never be printed, collected as a command learns them (the values
    themselves, not where they come from: that is :mod:`requeue.secrets`)."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, *values: str | None) -> None:
        for value in values:
            if value and value not in self.values:
                self.values.append(value)

    def add_url(self, url: str | None) -> None:
        """A URL's password (URLs themselves are redacted wherever they appear in text)."""
        if url:
            self.add(*sensitive_parts(url))

    def redact(self, text: str) -> str:
        return redact_text(text, self.values)

    def redact_json(self, value: Any) -> Any:
        """``value`` (parsed JSON) with every string redacted: ``-o json`` stays valid JSON, and
        a secret is hidden before it is escaped, not after."""
        if isinstance(value, str):
            return self.redact(str(value))  # str(): a StrEnum (a reason) as its plain text
        if isinstance(value, list):
            return [self.redact_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.redact_json(v) for k, v in value.items()}
        return value


def error_object(
    reason: str, message: str, exit_code: int, secrets: RedactedValues, **extra: Any
) -> dict[str, Any]:
    """What ``-o json`` prints on stdout when a command fails, so a script always gets JSON:
    ``{"schemaVersion": 1, "error": {"reason", "message", "exitCode"}}`` (redacted), plus
    ``extra`` top-level fields (``replay``: the status reached before giving up)."""
    error = {"reason": str(reason), "message": message, "exitCode": exit_code}
    redacted: dict[str, Any] = secrets.redact_json(
        {"schemaVersion": ERROR_SCHEMA_VERSION, "error": error, **extra}
    )
    return redacted


def print_json(value: Any) -> None:
    """One JSON document on stdout (indented, flushed: a script reads it as the command ends)."""
    print(json.dumps(value, indent=2), flush=True)


#: The start of the error line for each kind of failure; the first class that matches wins
#: (Forbidden is an AuthFailed, so it comes first). Any other error is labelled with its reason.
ERROR_LABELS: tuple[tuple[type[RequeueError], str], ...] = (
    (Forbidden, "Forbidden by the Redis ACL"),
    (AuthFailed, "authentication failed"),
    (RedisUnreachable, "Redis unreachable"),
    (SpecInvalid, "invalid spec"),
    (SecretNotFound, "missing secret"),
    (SelectionChanged, "selection changed"),
)


def error_label(exc: RequeueError) -> str:
    """A few words saying what kind of failure it is, for the start of the error line."""
    return next((label for kind, label in ERROR_LABELS if isinstance(exc, kind)), exc.reason)


def report_error(
    exc: RequeueError, secrets: RedactedValues, *, json_output: bool = False, **extra: Any
) -> int:
    """Print ``requeue: <label>: <message>`` (redacted) on stderr and, with ``json_output``, the
    :func:`error_object` on stdout; return the exit code."""
    if json_output:
        print_json(error_object(exc.reason, exc.message, exc.exit_code, secrets, **extra))
    print(f"requeue: {error_label(exc)}: {secrets.redact(exc.message)}", file=sys.stderr, flush=True)
    return exc.exit_code


@dataclass(frozen=True)
class ConnectRetry:
    """How long a command keeps trying to connect at its start (``--connect-timeout``): waits of
    0.5 s, doubling, as the replay engine backs off, as many as fit in ``budget_s`` seconds (10 s:
    0.5 + 1 + 2 + 4, five attempts, the engine's bound). 0 means one attempt."""

    budget_s: float = 10.0
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0

    def delays(self) -> list[float]:
        """The waits between attempts: one fewer than the attempts."""
        out: list[float] = []
        delay = self.first_delay_s
        while sum(out) + delay <= self.budget_s:
            out.append(delay)
            delay = min(self.max_delay_s, delay * 2)
        return out


async def connect_retrying(
    attempt: Callable[[], Awaitable[T]], retry: ConnectRetry, note: Callable[[str], None]
) -> T:
    """``await attempt()`` until it does not raise :class:`RedisUnreachable` (an unreachable
    Redis may be starting, failing over, or a port-forward away), noting each retry; credentials
    refused, a bad URL, an untrusted certificate or a missing secret are not retried (waiting
    cannot help).

    :raises RedisUnreachable: every attempt failed; the message says how many, over how long.
    """
    delays = retry.delays()
    attempts = len(delays) + 1
    started = time.monotonic()
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except RedisCertificateUntrusted:
            raise  # waiting cannot make the certificate verify
        except RedisUnreachable as exc:
            if number == attempts:
                tried = (
                    f"gave up after {attempts} attempts in {time.monotonic() - started:.1f}s"
                    if attempts > 1
                    else "tried once"
                )
                raise type(exc)(
                    f"{exc.message}; {tried} (--connect-timeout {retry.budget_s:g})",
                    queue=exc.queue,
                    replay=exc.replay,
                ) from None
            delay = delays[number - 1]
            note(f"Redis unreachable, retrying in {delay:g}s (attempt {number} of {attempts}): {exc.message}")
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def run_on_redis(
    redis_url: str,
    json_output: bool,
    connect_timeout: float,
    work: Callable[[list[Redis]], Awaitable[T]],
    *,
    opener: Callable[[], Awaitable[list[Redis]]] | None = None,
    queue: str | None = None,
) -> tuple[T, RedactedValues] | int:
    """Connect as ``inspect`` does (``--connect-timeout`` retries, each noted on stderr), ``await
    work(clients)``, close; its result and the secrets to redact output with, or the exit code after
    printing the named error (``-o json``: the error object too). ``opener`` gives the clients (one
    per primary of a cluster, or the one serving a queue's slot); by default one client of the URL.
    ``queue`` is named in a Redis error."""
    secrets = RedactedValues()
    secrets.add_url(redis_url)

    def note(text: str) -> None:
        print(f"requeue: {secrets.redact(text)}", file=sys.stderr, flush=True)

    async def one() -> list[Redis]:
        return [await cli_connect(redis_url)]

    async def go() -> T:
        clients = await connect_retrying(opener or one, ConnectRetry(connect_timeout), note)
        try:
            return await work(clients)
        except (rx.RedisError, OSError) as exc:
            raise map_redis_error(exc, url=redis_url, queue=queue) from None
        finally:
            for client in clients:
                await client.aclose()

    try:
        return asyncio.run(go()), secrets
    except RequeueError as exc:
        return report_error(exc, secrets, json_output=json_output)


def color_wanted(no_color: bool = False) -> bool:
    """Whether output may be coloured: not with ``--no-color``, not when ``NO_COLOR`` holds any
    non-empty value (https://no-color.org; an empty ``NO_COLOR`` counts as unset)."""
    return not no_color and not os.environ.get("NO_COLOR")


def make_console(*, no_color: bool = False, stderr: bool = False, **kwargs: Any) -> Console:
    """The rich Console every command prints through.

    Without colour there are no styles at all (``color_system=None``): rich's own
    ``no_color`` drops colours but still writes bold and dim as ANSI escapes. Whether
    the stream is a terminal stays rich's to decide (``force_terminal``, ``FORCE_COLOR``).
    """
    if not color_wanted(no_color):
        kwargs.update(color_system=None, no_color=True, highlight=False)
    return Console(stderr=stderr, **kwargs)


def is_tty(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
