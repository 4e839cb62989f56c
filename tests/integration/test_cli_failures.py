"""How `requeue replay` and `requeue inspect` fail: a Redis URL option redis-py cannot take is a
usage error naming it (exit 2, never a traceback); an unreachable Redis is retried at the start
for --connect-timeout, one line per retry, then exit 3; a Redis that comes up meanwhile is used;
with -o json every failure is one JSON error object on stdout; nothing printed shows a secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from support import wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import CliResult, cli, interrupt_cli, popen_cli, write_manifest
from support.redis_server import RedisServer, free_port

PASSWORD = "Zq9/x?y#k@v:w-tail-0ff"
Q = "default"


def _commands(tmp_path: Path) -> dict[str, tuple[str, ...]]:
    manifest = write_manifest(tmp_path / "r.yaml", {"dryRun": True})
    return {"replay": ("replay", "-f", str(manifest)), "inspect": ("inspect", "--queue", Q)}


def _clean(res: CliResult, password: str = PASSWORD) -> None:
    """No traceback, no 8 characters of the password in a row."""
    assert "Traceback" not in res.output, res.output
    assert not any(password[i : i + 8] in res.output for i in range(len(password) - 7)), res.output


def _error(res: CliResult) -> dict[str, Any]:
    """The -o json error object: the only thing on stdout."""
    body: dict[str, Any] = json.loads(res.stdout)
    assert set(body) <= {"schemaVersion", "error", "status"} and body["schemaVersion"] == 1, body
    assert set(body["error"]) == {"reason", "message", "exitCode"}, body
    assert body["error"]["exitCode"] == res.code, (body, res.code)
    return body


# ---------------------------------------------------------------- URL options


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("ssl_cert_reqs=none", "the option 'ssl_cert_reqs' is for TLS, and this URL is redis://"),
        ("socket_timeout=soon", "the option 'socket_timeout' has a value redis-py cannot use"),
        ("db=0&no_such_option=1", "redis-py takes no option 'no_such_option'"),
    ],
)
def test_a_url_option_redis_py_cannot_take_is_a_usage_error_naming_it(
    tmp_path: Path, query: str, problem: str
) -> None:
    url = f"redis://ops:{PASSWORD}@127.0.0.1:{free_port()}/0?{query}"
    for name, args in _commands(tmp_path).items():
        ways: list[tuple[tuple[str, ...], dict[str, str]]] = [
            (("--redis-url", url), {}),
            (("--secret", f"redis/url={url}"), {}),
            ((), {"REQUEUE_REDIS_URL": url}),
        ]
        for how, env in ways:
            if name == "inspect" and how[:1] == ("--secret",):
                continue  # inspect takes the URL only from --redis-url / REQUEUE_REDIS_URL
            res = cli(*args, *how, env=env)
            assert res.code == 2, (name, res.output)
            assert res.stderr.startswith("requeue: RedisUrlInvalid: redis://ops:***@127.0.0.1:"), res.stderr
            assert problem in res.stderr and res.stderr.count("\n") == 1, res.stderr
            assert "Redis unreachable" not in res.output
            _clean(res)
            as_json = cli(*args, *how, "-o", "json", env=env)
            assert _error(as_json)["error"]["reason"] == "RedisUrlInvalid", as_json.output
            assert problem in _error(as_json)["error"]["message"]
            _clean(as_json)


def test_rediss_takes_ssl_cert_reqs_but_not_a_bad_value(tmp_path: Path) -> None:
    """On rediss:// the option is redis-py's own: "none" is accepted (then the server is just
    unreachable), a value it does not know is named."""
    port = free_port()
    args = _commands(tmp_path)["inspect"]
    res = cli(*args, "--redis-url", f"rediss://ops:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=none")
    assert res.code == 3 and "Redis unreachable" in res.stderr, res.output
    res = cli(*args, "--redis-url", f"rediss://ops:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=maybe")
    assert res.code == 2, res.output
    assert "the option 'ssl_cert_reqs' has a value redis-py cannot use" in res.stderr
    _clean(res)


# ---------------------------------------------------------------- connecting at the start


def test_an_unreachable_redis_is_retried_for_the_connect_timeout_then_exit_3(tmp_path: Path) -> None:
    url = f"redis://ops:{PASSWORD}@127.0.0.1:{free_port()}/0"
    for name, args in _commands(tmp_path).items():
        # 1.5 s holds the waits 0.5 + 1: three attempts, the third not followed by "retrying"
        res = cli(*args, "--redis-url", url, "--connect-timeout", "1.5")
        assert res.code == 3, (name, res.output)
        lines = res.stderr.splitlines()
        assert [line.split(": Redis at")[0] for line in lines[:2]] == [
            "requeue: Redis unreachable, retrying in 0.5s (attempt 1 of 3)",
            "requeue: Redis unreachable, retrying in 1s (attempt 2 of 3)",
        ], res.stderr
        assert len(lines) == 3 and lines[2].startswith(
            "requeue: Redis unreachable: Redis at redis://ops:***@"
        )
        assert "; gave up after 3 attempts in " in lines[2] and lines[2].endswith("(--connect-timeout 1.5)")
        _clean(res)
        once = cli(*args, "--redis-url", url, "--connect-timeout", "0", "-o", "json")
        assert once.code == 3 and "retrying" not in once.stderr, once.output
        assert "; tried once (--connect-timeout 0)" in once.stderr
        assert _error(once)["error"]["reason"] == "RedisUnreachable"
        _clean(once)


async def test_a_redis_that_comes_up_during_the_retries_is_used(tmp_path: Path) -> None:
    port = free_port()
    server = RedisServer(port=port, directory=tmp_path / "redis", args=("--appendonly", "yes")).start()
    try:
        await make_failed_jobs(
            server.url, Q, [JobSpec(name="email.send", data={"i": i}, reason="429") for i in range(3)]
        )
        redis.Redis.from_url(server.url).shutdown()  # fsyncs the append-only file, which the next start loads
    finally:
        server.kill()  # reaps it; the directory stays
    log = tmp_path / "inspect.log"
    proc = popen_cli(
        "inspect", "--queue", Q, "--redis-url", server.url, "--connect-timeout", "60", "-o", "json", log=log
    )
    try:
        wait_until(
            lambda: "retrying in 0.5s (attempt 1 of" in log.read_text(),
            timeout=30,
            message=lambda: f"the first retry; log: {log.read_text()}",
        )
        server.start()
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    text = log.read_text()
    report = json.loads(text[text.index("{") :])
    assert report["total"] == 3 and report["byName"]["groups"][0]["key"] == "email.send", text


async def test_redis_lost_mid_replay_gives_up_without_announcing_a_retry(tmp_path: Path) -> None:
    """The engine retries 5 times with waits of 0.5, 1, 2, 4 s; each retry is one line, and the
    fifth failure ends the command: no "retrying in 8.0s" just before "gave up"."""
    server = RedisServer(directory=tmp_path / "redis").start()
    try:
        url = server.url
        await make_failed_jobs(
            url, Q, [JobSpec(name="whatsapp.send", data={"i": i}, reason="429") for i in range(100)]
        )
        manifest = write_manifest(tmp_path / "r.yaml", {"rate": {"jobsPerSecond": 20, "batchSize": 2}})
        log = tmp_path / "run.log"
        code = interrupt_cli(
            "replay",
            "-f",
            str(manifest),
            "--redis-url",
            url,
            "-o",
            "json",
            log=log,
            redis_url=url,
            ready=lambda s: s.llen(f"bull:{Q}:wait") >= 4,
            stop=server.kill,
            exit_timeout=90,
        )
    finally:
        server.stop()
    text = log.read_text()
    assert code == 3, text
    retries = [line for line in text.splitlines() if "retrying" in line]
    assert retries == [
        f"Redis unavailable, retrying in {d}s (attempt {n} of 5)"
        for n, d in ((1, "0.5"), (2, "1"), (3, "2"), (4, "4"))
    ], text
    body = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert body["error"]["reason"] == "RedisUnreachable" and body["error"]["exitCode"] == 3, body
    assert "gave up after 5 attempts in a row" in body["error"]["message"], body
    assert body["status"]["phase"] == "Replaying" and "retrying" not in json.dumps(body["status"]), body


# ---------------------------------------------------------------- -o json on every failure


def test_every_failure_prints_one_json_error_object_with_o_json(tmp_path: Path) -> None:
    commands = _commands(tmp_path)
    url = f"redis://ops:{PASSWORD}@127.0.0.1:{free_port()}/0"
    bad = write_manifest(tmp_path / "bad.yaml", {"rate": {"jobsPerSecond": -1}})
    cases: list[tuple[tuple[str, ...], str, int]] = [
        (("replay", "-f", str(bad), "--redis-url", url, "-o", "json"), "SpecInvalid", 2),
        (("replay", "-f", str(tmp_path / "missing.yaml"), "-o", "json"), "SpecInvalid", 2),
        ((*commands["replay"], "-o", "json"), "SecretNotFound", 2),
        ((*commands["replay"], "--secret", "no-slash", "-o", "json"), "SpecInvalid", 2),
        ((*commands["replay"], "--redis-url", "notaurl", "-o", "json"), "UsageError", 2),
        ((*commands["inspect"], "--redis-url", f"http://ops:{PASSWORD}@h/0", "-ojson"), "UsageError", 2),
        (("inspect", "--redis-url", url, "--output=json"), "UsageError", 2),
        ((*commands["inspect"], "--redis-url", url, "--top", "0", "--output", "json"), "UsageError", 2),
        ((*commands["inspect"], "--redis-url", url, "-o", "json"), "RedisUnreachable", 3),
    ]
    for args, reason, code in cases:
        res = cli(*args)
        assert res.code == code, (args, res.output)
        assert _error(res)["error"]["reason"] == reason, (args, res.stdout)
        _clean(res)
    # and without -o json, nothing on stdout
    res = cli(*commands["inspect"], "--redis-url", url)
    assert res.code == 3 and res.stdout == "", res.output


async def test_inspect_tables_are_redacted(redis_factory: Callable[..., RedisServer]) -> None:
    """The rich tables (a terminal's output) hide a secret quoted in a failure reason, as the text
    and JSON outputs do: the password of --redis-url, whole and in pieces."""
    password = "Tbl-Secret-PwLetters-X"  # no digits: the reason normaliser leaves it as it is
    server = redis_factory(password=password)
    reason = f"login to {server.url} failed; password {password[3:14]} rejected"
    await make_failed_jobs(
        server.url, Q, [JobSpec(name="email.send", data={"i": i}, reason=reason) for i in range(3)]
    )
    res = cli("inspect", "--queue", Q, "--redis-url", server.url, "-o", "table", env={"COLUMNS": "400"})
    assert res.code == 0, res.output
    assert "email.send" in res.stdout and "login to redis://***@" in res.stdout, res.stdout
    assert "password *** rejected" in res.stdout, res.stdout
    _clean(res, password)
