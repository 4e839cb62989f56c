"""The wrong scheme for a port (``rediss://`` to plain Redis, ``redis://`` to a TLS port) is named
as such, exit 2 and one attempt, not "Redis unreachable" retried for the whole connect timeout;
a port nothing listens on is still "unreachable"."""

from __future__ import annotations

from pathlib import Path

from support.cli import cli
from support.redis_server import free_port
from support.tls_redis import tls_redis_server

PASSWORD = "mismatch-Secret-5c1"
#: The CLI's retry budget, as a user has it by default: the mismatch must not wait it out.
RETRYING = {"REQUEUE_CONNECT_TIMEOUT": "30"}


def test_rediss_to_a_plain_port_says_use_redis(redis_url: str) -> None:
    wrong = redis_url.replace("redis://", "rediss://", 1)
    res = cli("inspect", "--redis-url", wrong, "--queue", "default", env=RETRYING)
    assert res.code == 2, res.output
    assert (
        "RedisUrlInvalid" in res.stderr
        and "answers Redis without TLS, but the URL is rediss://" in res.stderr
    )
    assert "use redis:// for this port" in res.stderr
    assert "retrying" not in res.stderr, res.stderr  # one attempt, then the reason


def test_redis_to_a_tls_port_says_use_rediss(tmp_path: Path) -> None:
    with tls_redis_server(tmp_path, password=PASSWORD) as (port, _ca):
        url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
        res = cli("inspect", "--redis-url", url, "--queue", "default", env=RETRYING)
    assert res.code == 2, res.output
    assert f"127.0.0.1:{port} speaks TLS, but the URL is redis://: use rediss://" in res.stderr, res.stderr
    assert PASSWORD not in res.output and "retrying" not in res.stderr


def test_a_port_nothing_listens_on_is_still_unreachable() -> None:
    for scheme in ("redis", "rediss"):
        res = cli("inspect", "--redis-url", f"{scheme}://127.0.0.1:{free_port()}/0", "--queue", "default")
        assert res.code == 3, res.output
        assert "RedisUnreachable" in res.stderr or "Redis unreachable" in res.stderr, res.stderr
        assert "TLS" not in res.stderr
