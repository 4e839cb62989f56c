"""A Redis password holding / ? # @ : % " \\ (as ``openssl rand -base64`` passwords and pasted ones do)
connects, and never shows, whole or in pieces, in anything the CLI prints: text, ``-o json``, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from requeue.redact import encode_userinfo
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import CliResult, cli, write_manifest
from support.leaks import leaks
from support.redis_server import RedisServer

#: Distinctive, and with every character urlsplit misreads.
PASSWORD = 'Op3r/Pw+Q7"x\\k?Zr#M2@w:%9TleakXy'
WRONG = 'Wr0ng/Pw+"Zq\\9?Lk#Vb@Ns:%3Hd'
Q = "leaky"


def url_with(server: RedisServer, password: str, *, port: str | None = None) -> str:
    """The URL as a user pastes it: the password raw, not percent-encoded."""
    return f"redis://default:{password}@{server.host}:{port or server.port}/0"


@pytest.fixture
async def server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A password-protected Redis with three failed jobs in queue ``leaky``."""
    srv = redis_factory(password=PASSWORD)
    jobs = [JobSpec("send", {"n": i}, reason=f"timeout after {100 + i}ms") for i in range(3)]
    await make_failed_jobs(encode_userinfo(url_with(srv, PASSWORD)), Q, jobs)
    return srv


def assert_no_leak(res: CliResult) -> None:
    assert leaks(res.output, PASSWORD, WRONG) == [], res.output


def test_replay_dry_run_connects_and_shows_no_password(server: RedisServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "replay.yaml", {"queue": Q, "dryRun": True})
    url = url_with(server, PASSWORD)
    for args, env in [
        (["--redis-url", url], {}),
        (["--secret", f"redis/url={url}"], {}),
        ([], {"REQUEUE_SECRET_REDIS_URL": url}),
    ]:
        res = cli("replay", "-f", str(manifest), *args, "--dry-run", env=env)
        assert res.code == 0, res.output
        assert "redis://default:***@" in res.output
        assert_no_leak(res)
        res = cli("replay", "-f", str(manifest), *args, "--dry-run", "-o", "json", env=env)
        assert res.code == 0, res.output
        assert json.loads(res.stdout)["matched"] == 3
        assert_no_leak(res)


def test_inspect_connects_and_shows_no_password(server: RedisServer) -> None:
    url = url_with(server, PASSWORD)
    for output in ("text", "json"):
        res = cli("inspect", "--redis-url", url, "--queue", Q, "-o", output)
        assert res.code == 0, res.output
        assert_no_leak(res)
    assert json.loads(res.stdout)["redis"] == f"redis://default:***@{server.host}:{server.port}/0"


def test_a_wrong_password_is_named_not_shown(server: RedisServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "replay.yaml", {"queue": Q})
    url = url_with(server, WRONG)
    res = cli("replay", "-f", str(manifest), "--redis-url", url)
    assert res.code == 3, res.output
    assert "authentication failed" in res.stderr
    assert_no_leak(res)
    res = cli("inspect", "--redis-url", url, "--queue", Q, "-o", "json")
    assert res.code == 3, res.output
    assert json.loads(res.stdout)["error"]["reason"] == "AuthFailed"
    assert_no_leak(res)


def test_a_url_that_cannot_be_parsed_is_named_not_shown(server: RedisServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "replay.yaml", {"queue": Q, "dryRun": True})
    url = url_with(server, PASSWORD, port="63x79")
    shown = f"redis://default:***@{server.host}:63x79/0"
    res = cli("replay", "-f", str(manifest), "--redis-url", url, "--dry-run")  # checked by the flag
    assert res.code == 2, res.output
    assert f"{shown}: the port is not a number" in res.stderr
    assert_no_leak(res)
    res = cli("replay", "-f", str(manifest), "--secret", f"redis/url={url}", "--dry-run")  # by the driver
    assert res.code == 2, res.output
    assert f"{shown} is not a valid Redis URL" in res.stderr
    assert_no_leak(res)
