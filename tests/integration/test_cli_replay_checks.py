"""``requeue replay`` tells a first-time user what is wrong before and after it runs: a Secret the
manifest refers to but the command line does not give fails at once (exit 2) instead of a gate
waiting out gatePolicy.timeout; a failed dry run shows no count; Ctrl-C is reported as such, not as
spec.suspend; a time window that leaves every failed job out says so."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import redis.asyncio as aioredis

from requeue.queues import QueueKeys
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs
from support.cli import cli, interrupt_cli, keyspace, write_manifest
from support.redis_server import free_port

Q = "default"
K = QueueKeys("bull", Q)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "replay.yaml"


def failed_jobs(n: int) -> list[JobSpec]:
    return [JobSpec(name="whatsapp.send", data={"i": i}, reason="429 Too Many Requests") for i in range(n)]


async def test_a_secret_not_given_exits_2_at_once_naming_each_and_how_to_pass_it(
    redis_url: str, tmp_path: Path
) -> None:
    await add_jobs(redis_url, Q, [JobSpec(name="waits")])
    before = keyspace(redis_url)
    for dry in ((), ("--dry-run",)):
        res = cli("replay", "-f", str(EXAMPLE), "--redis-url", redis_url, *dry)
        assert res.code == 2, res.output
        for hint in (
            "--secret visapi-db/dsn=VALUE",
            "REQUEUE_SECRET_VISAPI_DB_DSN",
            "spec.gates[0].postgres.dsnSecretRef",
            "--secret cgb/bearer=VALUE",
            "REQUEUE_SECRET_CGB_BEARER",
        ):
            assert hint in res.stderr, res.stderr
        assert "visapi-redis/url" not in res.stderr  # --redis-url stands in for it
        assert "GatesRed" not in res.output
        assert keyspace(redis_url) == before  # nothing started
    # without --redis-url the Redis URL's Secret is named too, with the flag that replaces it
    res = cli("replay", "-f", str(EXAMPLE), "--dry-run", "--secret", "cgb/bearer=t0ken")
    assert res.code == 2, res.output
    assert "visapi-redis/url" in res.stderr and "--redis-url" in res.stderr, res.stderr
    assert "visapi-db/dsn" in res.stderr and "cgb/bearer" not in res.stderr, res.stderr
    assert "t0ken" not in res.output


async def test_a_gate_whose_host_is_denied_exits_2_at_once_and_moves_nothing(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """REQUEUE_GATE_DENY refuses the gate's host: configuration, like a missing Secret, so exit 2
    with the reason, not a red gate waited on until gatePolicy.timeout and not exit 1."""
    await make_failed_jobs(redis_url, Q, failed_jobs(5))
    health = f"http://127.0.0.1:{free_port()}/health"
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {
            "pauseQueue": True,
            "gates": [{"name": "provider", "http": {"url": health, "timeout": "1s"}}],
            "gatePolicy": {"interval": "1s", "timeout": "10m"},
        },
    )
    res = cli(
        "replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json",
        env={"REQUEUE_GATE_DENY": "127.0.0.0/8"},
    )  # fmt: skip
    assert res.code == 2, res.output
    status = json.loads(res.stdout)
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "DestinationDenied", status
    assert "REQUEUE_GATE_DENY" in status["message"], status
    assert await redis_client.zcard(K.failed) == 5  # nothing moved
    assert not await redis_client.hexists(K.meta, "paused")  # and the queue is not left paused


async def test_the_examples_window_once_uncommented_is_named_when_it_selects_nothing(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The example's window is commented out; a user who uncomments it without setting it to
    their outage selects nothing, and is told why (not "Succeeded, 0 jobs")."""
    await make_failed_jobs(redis_url, Q, failed_jobs(60))
    text = EXAMPLE.read_text()
    assert '    # failedAfter: "2025-07-16T09:00:00Z"' in text, "the example's window moved"
    manifest = tmp_path / "replay.yaml"
    manifest.write_text(
        text.replace("# failedAfter:", "failedAfter:").replace("# failedBefore:", "failedBefore:")
    )
    given = ["--secret", "visapi-db/dsn=postgres://u:p@127.0.0.1:1/db", "--secret", "cgb/bearer=t0ken"]
    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "--dry-run", *given)
    assert res.code == 0, res.output
    assert "would replay 0 jobs" in res.stdout, res.stdout
    window = "2025-07-16T09:00:00Z..2025-07-16T11:00:00Z"
    assert f"0 of 60 failed jobs fall in the window {window}" in res.stdout, res.stdout
    assert "edit the window" in res.stdout

    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "--dry-run", "-o", "json", *given)
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["matched"] == 0  # stdout stays exactly the status object
    assert f"0 of 60 failed jobs fall in the window {window}" in res.stderr, res.stderr
    assert await redis_client.zcard(K.failed) == 60


async def test_a_failed_dry_run_shows_no_would_replay_count(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await make_failed_jobs(redis_url, Q, failed_jobs(5))
    # an inspect-only user: may read everything, may not write a hash
    await redis_client.acl_setuser(
        "inspector",
        enabled=True,
        passwords=["+insp3ct"],
        keys=["~*"],
        channels=["*"],
        commands=["+@all", "-hset"],
    )
    user_url = "redis://inspector:insp3ct@" + redis_url.rsplit("@", 1)[-1].removeprefix("redis://")
    manifest = write_manifest(tmp_path / "r.yaml", {})
    try:  # the session's redis-server outlives this test: FLUSHALL does not remove users
        res = cli("replay", "-f", str(manifest), "--redis-url", user_url, "--dry-run")
    finally:
        await redis_client.acl_deluser("inspector")
    assert res.code != 0, res.output
    assert "HSET" in res.output.upper(), res.output
    assert "would replay" not in res.output, res.output
    assert "dry run failed: nothing was decided" in res.stdout, res.stdout
    assert "insp3ct" not in res.output


async def test_ctrl_c_with_json_output_says_interrupted_not_spec_suspend(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    await make_failed_jobs(redis_url, Q, failed_jobs(10))
    dead = f"http://127.0.0.1:{free_port()}/health"  # nothing listens: the gate stays red
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {
            "pauseQueue": True,
            "gates": [{"name": "provider", "http": {"url": dead, "timeout": "1s"}}],
            "gatePolicy": {"interval": "1s"},
        },
    )
    out = tmp_path / "run.log"
    code = interrupt_cli(
        "replay",
        "-f",
        str(manifest),
        "--redis-url",
        redis_url,
        "-o",
        "json",
        log=out,
        redis_url=redis_url,
        ready=lambda s: s.hexists(K.meta, "paused"),
        ready_timeout=30,
        waiting_for="the replay pausing the queue",
        stop=signal.SIGINT,
        exit_timeout=30,
    )
    log = out.read_text()
    assert code == 130, log
    assert "spec.suspend" not in log, log
    start = log.index("{\n")
    status, _ = json.JSONDecoder().raw_decode(log[start:])
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "Interrupted", status
    assert "interrupted (Ctrl-C / SIGINT)" in progressing["message"], status
    assert "rerun the same command to resume" in status["message"], status
    assert not await redis_client.hexists(K.meta, "paused")  # the queue it paused is resumed
