"""Run the ``requeue`` CLI as users do: a subprocess ``python -m requeue ...``; plus manifest and
Redis-snapshot helpers for the CLI tests.

The subprocess gets a clean environment for the variables the CLI reads
(``REQUEUE_*``), so a developer's shell cannot change a test's outcome (see :func:`cli_env`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from support import wait_until
from support.leaks import assert_no_session_leak

__all__ = [
    "CliResult",
    "acli",
    "cli",
    "cli_command",
    "cli_env",
    "interrupt_cli",
    "invoke",
    "keyspace",
    "popen_cli",
    "write_manifest",
]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "requeue", *args]


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI run: none of the developer's ``REQUEUE_*``; one connection
    attempt at the start (``REQUEUE_CONNECT_TIMEOUT=0``) unless a test asks for retries, so an
    unreachable Redis fails at once (tests/integration/test_cli_failures.py covers the retries)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REQUEUE_")}
    base.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200", "REQUEUE_CONNECT_TIMEOUT": "0"})
    base.update(env or {})
    return base


def cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> CliResult:
    """Run the CLI to completion (blocking)."""
    proc = subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return shown(CliResult(proc.returncode, proc.stdout, proc.stderr))


async def acli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> CliResult:
    """Run the CLI to completion without blocking the test's event loop (Node workers keep reading)."""
    proc = await asyncio.create_subprocess_exec(
        *cli_command(*args),
        env=cli_env(env),
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return shown(CliResult(proc.returncode, out.decode(), err.decode()))


def invoke(*args: str, input: str | None = None) -> CliResult:
    """Run the CLI in this process with click's runner (for stdin input or speed), 200 columns wide
    and without colour as :func:`cli` runs it; checked for the session password as well."""
    from click.testing import CliRunner

    from requeue.cli import main

    res = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"}).invoke(main, list(args), input=input)
    return shown(CliResult(res.exit_code, res.stdout, res.stderr))


def shown(result: CliResult) -> CliResult:
    """``result``, once checked for the session Redis password: every CLI test is a leak test."""
    assert_no_session_leak(result.output, "the CLI's output")
    return result


def popen_cli(*args: str, env: Mapping[str, str] | None = None, log: Path) -> subprocess.Popen[bytes]:
    """Start the CLI in the background, stdout and stderr into ``log`` (for kill/interrupt tests)."""
    handle = log.open("wb")
    try:
        return subprocess.Popen(
            cli_command(*args),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=cli_env(env),
            cwd=REPO,
        )
    finally:
        handle.close()


def interrupt_cli(
    *args: str,
    log: Path,
    redis_url: str,
    ready: Callable[[redis.Redis], object],
    stop: signal.Signals | Callable[[], object],
    exit_timeout: float,
    ready_timeout: float = 60.0,
    waiting_for: str = "first replays",
) -> int:
    """Start the CLI in the background, wait until ``ready`` holds on the Redis at ``redis_url``,
    then ``stop`` it (a signal to the CLI, or a callable that e.g. kills Redis); its exit code.

    The CLI never outlives the call. A timeout names ``waiting_for`` and quotes the CLI's ``log``.
    """
    proc = popen_cli(*args, log=log)
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_until(
            lambda: ready(sync),
            timeout=ready_timeout,
            message=lambda: f"{waiting_for}; log: {log.read_text()}",
        )
        if isinstance(stop, signal.Signals):
            proc.send_signal(stop)
        else:
            stop()
        return proc.wait(timeout=exit_timeout)
    finally:
        sync.close()
        if proc.poll() is None:
            proc.kill()


def write_manifest(
    path: Path,
    spec: Mapping[str, Any],
    *,
    name: str = "replay-1",
    namespace: str | None = "ops",
    **metadata: Any,
) -> Path:
    """A DLQReplay manifest file as a user writes it (Redis URL from Secret ``redis``/``url``)."""
    meta: dict[str, Any] = {"name": name, **metadata}
    if namespace is not None:
        meta["namespace"] = namespace
    body: dict[str, Any] = {"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}, "queue": "default"}
    body.update(spec)
    path.write_text(
        yaml.safe_dump(
            {"apiVersion": "requeue.dev/v1alpha1", "kind": "DLQReplay", "metadata": meta, "spec": body},
            sort_keys=False,
        )
    )
    return path


def keyspace(url: str, *, exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Every key of the Redis at ``url`` with its type, value and whether it expires (comparable)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    out: dict[str, Any] = {}
    try:
        for key in sorted(client.scan_iter(count=1000)):
            if any(key.startswith(p) for p in exclude):
                continue
            kind = client.type(key)
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(client.smembers(key))
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "stream":
                value = client.xrange(key)
            else:
                value = None
            out[key] = (kind, value, client.ttl(key) >= 0)
    finally:
        client.close()
    return out
