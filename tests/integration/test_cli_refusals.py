"""Mistakes a user can make on the command line are refused with a named reason and exit 2, never
carried out and never reported as Succeeded; what is printed is one clean line, no secret in it."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import redis.asyncio as aioredis

from requeue.queues import QueueKeys
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import cli, interrupt_cli, write_manifest
from support.redis_server import free_port

K = QueueKeys("bull", "default")
FAST = {"jobsPerSecond": 100_000, "batchSize": 50}


def test_an_invalid_regex_is_one_clean_line_naming_the_field(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "r.yaml", {"selector": {"failedReasonPattern": "(unclosed"}})
    res = cli("replay", "-f", str(manifest), "--redis-url", "redis://127.0.0.1:1/0")
    assert res.code == 2, res.output
    assert res.stderr == (
        f"requeue: invalid spec: {manifest}: invalid DLQReplay: "
        "spec.selector.failedReasonPattern: not a valid RE2 regular expression: "
        "missing ): (unclosed\n"
    )
    assert res.stdout == ""


# ---------------------------------------------------------------- --redis-url


#: A password holding every character that splits a URL, as users paste them.
PASSWORD = 'Zq9/x?y#k@v:w%"\\tail'


def _no_password(text: str) -> bool:
    return not any(piece in text for piece in ("Zq9", "x?y", "k@v", "w%", "tail"))


def test_a_redis_url_that_is_not_one_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "r.yaml", {"dryRun": True})
    commands = {"replay": ("replay", "-f", str(manifest)), "inspect": ("inspect", "--queue", "default")}
    cases = {
        "notaurl": "not a URL (expected redis://",
        f"http://ops:{PASSWORD}@127.0.0.1:6379/0": "scheme 'http' is not one of redis, rediss, unix",
        f"redis://ops:{PASSWORD}@127.0.0.1:63x9/0": "the port is not a number",
    }
    for name, args in commands.items():
        for url, problem in cases.items():
            ways: list[tuple[tuple[str, ...], dict[str, str]]] = [
                (("--redis-url", url), {}),
                ((), {"REQUEUE_REDIS_URL": url}),
            ]
            for how, env in ways:
                res = cli(*args, *how, env=env)
                assert res.code == 2, (name, url, res.output)
                assert "Invalid value for '--redis-url'" in res.stderr, res.stderr
                assert problem in res.stderr, (name, url, res.stderr)
                assert "Redis unreachable" not in res.output
                assert _no_password(res.output), res.output
    # a URL that is one passes the check, whatever its password holds: then it is Redis that fails
    url = f"redis://ops:{PASSWORD}@127.0.0.1:{free_port()}/0"
    for args in commands.values():
        res = cli(*args, "--redis-url", url)
        assert res.code == 3 and "Redis unreachable" in res.stderr, res.output
        assert _no_password(res.output), res.output


# ---------------------------------------------------------------- the selection of a resumed replay


async def test_a_rerun_whose_selection_changed_is_refused_naming_the_fields_and_both_ways_out(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    names = ("whatsapp.send", "email.send")
    jobs = [JobSpec(name=names[i % 3 == 0], data={"i": i}, reason="429") for i in range(90)]
    ids = await make_failed_jobs(redis_url, "default", jobs)
    by_name = {n: {i for i, j in zip(ids, jobs, strict=True) if j.name == n} for n in names}
    slow = {"jobsPerSecond": 20, "batchSize": 4}
    path = tmp_path / "replay.yaml"
    write_manifest(path, {"selector": {"jobNames": ["whatsapp.send"]}, "rate": slow})
    args = ("replay", "-f", str(path), "--redis-url", redis_url)
    code = interrupt_cli(
        *args,
        log=tmp_path / "first.log",
        redis_url=redis_url,
        ready=lambda s: s.llen(K.wait) >= 8,
        stop=signal.SIGINT,
        exit_timeout=30,
    )
    assert code == 130, (tmp_path / "first.log").read_text()
    moved = set(await redis_client.lrange(K.wait, 0, -1))
    assert moved < by_name["whatsapp.send"], "interrupted mid-replay"

    # the same file, now selecting email.send (and faster): refused, nothing moves
    write_manifest(path, {"selector": {"jobNames": ["email.send"]}, "rate": FAST})
    res = cli(*args)
    assert res.code == 2, res.output
    assert res.stdout == ""
    error = res.stderr.splitlines()[-1]
    assert error.startswith(
        f"requeue: selection changed: {path}: the selection changed since replay ops/replay-1"
    ), res.stderr
    assert 'spec.selector was {"jobNames": ["whatsapp.send"]}, now {"jobNames": ["email.send"]}' in error
    assert "restore the file" in error and "--replay-id NEW" in error, error
    assert "spec.rate" not in error  # rate may change; only the selection is pinned
    assert set(await redis_client.lrange(K.wait, 0, -1)) == moved
    assert await redis_client.get(K.lease) is None

    # way out 1: the new selection as a new replay
    res = cli(*args, "--replay-id", "email-only", "-o", "json")
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["replayed"] == len(by_name["email.send"])
    assert set(await redis_client.lrange(K.wait, 0, -1)) == moved | by_name["email.send"]

    # way out 2: the file restored resumes the first replay, which moves the rest of whatsapp.send
    write_manifest(path, {"selector": {"jobNames": ["whatsapp.send"]}, "rate": FAST})
    res = cli(*args, "-o", "json")
    assert res.code == 0, res.output
    assert "resuming" in res.stderr
    assert json.loads(res.stdout)["replayed"] == len(by_name["whatsapp.send"])
    assert set(await redis_client.lrange(K.wait, 0, -1)) == set(ids)

    # a finished replay whose file changed is refused too: never "Succeeded" for another selection
    write_manifest(path, {"selector": {"jobNames": ["email.send"]}, "rate": FAST})
    res = cli(*args)
    assert res.code == 2 and "selection changed" in res.stderr, res.output
