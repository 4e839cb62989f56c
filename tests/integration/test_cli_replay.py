"""``requeue replay -f FILE`` against real failed BullMQ jobs: exactly the matching set moves, exactly
once, across SIGKILL and Ctrl-C; dry runs change nothing; every failure has its exit code."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from click.testing import CliRunner

from requeue.api import DLQReplayStatus
from requeue.cli import main
from requeue.queues import QueueKeys
from requeue.redact import redact_url
from support import wait_until
from support.bullmq_jobs import JobSpec, add_jobs, make_failed_jobs, run_worker
from support.cli import acli, cli, interrupt_cli, invoke, keyspace, popen_cli, write_manifest
from support.redis_server import RedisServer, free_port

Q = "default"
K = QueueKeys("bull", Q)
RATE_LIMITED = "429 Too Many Requests"
FAST = {"jobsPerSecond": 100_000, "batchSize": 50}
#: name + reason + dataMatch: only whatsapp.send, 429, tenant acme
SELECTOR = {
    "jobNames": ["whatsapp.*"],
    "failedReasonPattern": "429|[Rr]ate limit",
    "dataMatch": {"tenant": "acme"},
}


def mixed_jobs(n: int) -> list[JobSpec]:
    out = []
    for i in range(n):
        name = ("whatsapp.send", "email.send")[i % 2]
        reason = RATE_LIMITED if i % 3 else f"timeout after {5000 + i}ms"
        tenant = "acme" if i % 5 else "globex"
        out.append(
            JobSpec(
                name=name,
                data={"i": i, "tenant": tenant, "to": f"+49{i:09d}"},
                reason=reason,
                opts={"priority": 3} if i % 7 == 0 else {},
            )
        )
    return out


def matching(ids: list[str], jobs: list[JobSpec]) -> list[str]:
    return [
        i
        for i, j in zip(ids, jobs, strict=True)
        if j.name.startswith("whatsapp.")
        and ("429" in j.reason or "ate limit" in j.reason)
        and j.data["tenant"] == "acme"
    ]


async def failed_order(r: aioredis.Redis, ids: list[str]) -> list[str]:
    """``ids`` in the failed set's order (failure time, then id as BullMQ's zset sorts ties)."""
    wanted = set(ids)
    return [i for i in await r.zrange(K.failed, 0, -1) if i in wanted]


async def replayed_ids(r: aioredis.Redis) -> list[str]:
    """Everything a worker would pick up: wait (plain) and prioritized."""
    return [*await r.lrange(K.wait, 0, -1), *await r.zrange(K.prioritized, 0, -1)]


async def test_replay_moves_exactly_the_matching_set_and_prints_the_status(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    jobs = mixed_jobs(90)
    ids = await make_failed_jobs(redis_url, Q, jobs)
    expected = matching(ids, jobs)
    assert 0 < len(expected) < len(ids)
    in_failed_order = await failed_order(redis_client, expected)
    manifest = write_manifest(tmp_path / "replay.yaml", {"selector": SELECTOR, "rate": FAST})

    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)  # stdout is exactly the status object, nothing else
    assert status == DLQReplayStatus.model_validate(status).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert status["phase"] == "Succeeded"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("Finished", "finished; holds no queue lease")
    assert await redis_client.get(K.lease) is None
    assert (status["matched"], status["replayed"], status["skipped"], status["corrupt"]) == (
        len(expected),
        len(expected),
        0,
        0,
    )
    assert status["breakdown"] == {
        "byName": {"whatsapp.send": len(expected)},
        "byReason": {"<n> Too Many Requests": len(expected)},
    }
    assert status["sampleIds"] == in_failed_order[:10]

    moved = await replayed_ids(redis_client)
    assert sorted(moved) == sorted(expected)  # exactly the set, no duplicates
    assert set(await redis_client.zrange(K.failed, 0, -1)) == set(ids) - set(expected)
    for i in expected:
        job = await redis_client.hgetall(K.job(i))
        assert "atm" not in job and "failedReason" not in job  # resetAttempts defaults to true

    # the same command again: the replay finished, nothing moves twice
    again = cli("replay", "-f", str(manifest), "--redis-url", redis_url)
    assert again.code == 0, again.output
    assert "already finished" in again.stderr
    assert sorted(await replayed_ids(redis_client)) == sorted(expected)
    assert again.stdout.startswith("Succeeded: moved")


async def test_dry_run_changes_nothing_and_shows_what_would_move(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    jobs = mixed_jobs(60)
    ids = await make_failed_jobs(redis_url, Q, jobs)
    expected = await failed_order(redis_client, matching(ids, jobs))
    manifest = write_manifest(tmp_path / "replay.yaml", {"selector": SELECTOR, "rate": FAST})
    before = keyspace(redis_url)

    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "--dry-run")
    assert res.code == 0, res.output
    assert keyspace(redis_url) == before  # not even requeue's own keys are left behind
    assert f"would replay {len(expected)} jobs" in res.stdout
    assert re.search(rf"^\s+whatsapp\.send\s+{len(expected)}$", res.stdout, re.M), res.stdout
    assert f"first ids: {', '.join(expected[:10])}" in res.stdout

    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "--dry-run", "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", len(expected), 0)
    assert status["sampleIds"] == expected[:10]
    assert keyspace(redis_url) == before

    # spec.dryRun in the manifest is a dry run too, and does not use up the real replay's id
    dry = write_manifest(tmp_path / "dry.yaml", {"selector": SELECTOR, "rate": FAST, "dryRun": True})
    assert cli("replay", "-f", str(dry), "--redis-url", redis_url).code == 0
    assert keyspace(redis_url) == before
    real = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    assert real.code == 0 and json.loads(real.stdout)["replayed"] == len(expected), real.output


async def test_corrupt_jobs_are_counted_and_skipped_not_fatal(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    jobs = [JobSpec(name="whatsapp.send", data={"i": i}, reason=RATE_LIMITED) for i in range(20)]
    ids = await make_failed_jobs(redis_url, Q, jobs)
    await redis_client.hset(K.job(ids[3]), "data", "{not json")
    await redis_client.hdel(K.job(ids[4]), "name")
    manifest = write_manifest(tmp_path / "replay.yaml", {"rate": FAST})

    res = cli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["corrupt"], status["replayed"]) == ("Succeeded", 2, 18)
    assert set(status["corruptIds"]) == {ids[3], ids[4]}
    assert set(await redis_client.zrange(K.failed, 0, -1)) == {ids[3], ids[4]}


async def test_sigkill_mid_replay_then_rerun_replays_each_job_exactly_once(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    jobs = mixed_jobs(240)
    ids = await make_failed_jobs(redis_url, Q, jobs)
    expected = matching(ids, jobs)
    # slow enough that the kill lands mid-run: 20 jobs/s in batches of 4
    manifest = write_manifest(
        tmp_path / "replay.yaml", {"selector": SELECTOR, "rate": {"jobsPerSecond": 20, "batchSize": 4}}
    )
    args = ("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}")
    interrupt_cli(
        *args,
        log=tmp_path / "first.log",
        redis_url=redis_url,
        ready=lambda s: s.llen(K.wait) + s.zcard(K.prioritized) >= 12,
        stop=signal.SIGKILL,
        exit_timeout=10,
    )
    moved_before = await replayed_ids(redis_client)
    assert 12 <= len(moved_before) < len(expected), "the kill must land mid-replay"

    res = cli(*args, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == (
        "Succeeded",
        len(expected),
        len(expected),
    )
    moved = await replayed_ids(redis_client)
    assert len(moved) == len(set(moved)) == len(expected)  # no duplicates
    assert set(moved) == set(expected)
    assert set(await redis_client.zrange(K.failed, 0, -1)) == set(ids) - set(expected)  # none left
    assert await redis_client.get(K.lease) is None


async def test_ctrl_c_stops_cleanly_resumes_the_queue_it_paused_and_says_how_to_continue(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    jobs = mixed_jobs(60)
    ids = await make_failed_jobs(redis_url, Q, jobs)
    expected = matching(ids, jobs)
    dead = f"http://127.0.0.1:{free_port()}/health"  # nothing listens: the gate stays red
    gated = write_manifest(
        tmp_path / "replay.yaml",
        {
            "selector": SELECTOR,
            "rate": FAST,
            "pauseQueue": True,
            "gates": [{"name": "provider", "http": {"url": dead, "timeout": "1s"}}],
            "gatePolicy": {"interval": "1s"},
        },
    )
    code = interrupt_cli(
        "replay",
        "-f",
        str(gated),
        "--redis-url",
        redis_url,
        log=tmp_path / "run.log",
        redis_url=redis_url,
        ready=lambda s: s.hexists(K.meta, "paused"),
        ready_timeout=30,
        waiting_for="the replay pausing the queue",
        stop=signal.SIGINT,
        exit_timeout=30,
    )
    log = (tmp_path / "run.log").read_text()
    assert code == 130, log
    assert not await redis_client.hexists(K.meta, "paused"), "the queue this replay paused is resumed"
    assert await redis_client.get(K.lease) is None, "the lease is released"
    assert "SIGINT: stopped in phase WaitingForGates" in log
    assert await replayed_ids(redis_client) == []
    replay_id = re.search(r"--replay-id (\S+)\)", log)
    assert replay_id, log

    # resume under another name with the printed --replay-id; gates dropped (the provider is back)
    renamed = write_manifest(
        tmp_path / "renamed.yaml", {"selector": SELECTOR, "rate": FAST}, name="other-name"
    )
    res = cli(
        "replay",
        "-f",
        str(renamed),
        "--redis-url",
        redis_url,
        "--replay-id",
        replay_id.group(1),
        "-o",
        "json",
    )
    assert res.code == 0, res.output
    assert "resuming" in res.stderr
    assert sorted(await replayed_ids(redis_client)) == sorted(expected)


async def test_sigterm_mid_replay_stops_after_a_batch_and_rerun_completes(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    jobs = mixed_jobs(180)
    ids = await make_failed_jobs(redis_url, Q, jobs)
    expected = matching(ids, jobs)
    manifest = write_manifest(
        tmp_path / "replay.yaml", {"selector": SELECTOR, "rate": {"jobsPerSecond": 10, "batchSize": 2}}
    )
    args = ("replay", "-f", str(manifest), "--redis-url", redis_url)
    code = interrupt_cli(
        *args,
        log=tmp_path / "run.log",
        redis_url=redis_url,
        ready=lambda s: s.llen(K.wait) + s.zcard(K.prioritized) >= 4,
        stop=signal.SIGTERM,
        exit_timeout=30,
    )
    log = (tmp_path / "run.log").read_text()
    assert code == 130, log
    assert "Interrupted (SIGTERM) in phase Replaying" in log
    stopped_at = re.search(r"at (\d+)/(\d+) \(replayed (\d+)", log)
    assert stopped_at, log
    moved = await replayed_ids(redis_client)
    assert len(moved) == int(stopped_at.group(3)) < len(expected)  # what it says is what it did

    res = cli(*args, "--quiet")
    assert res.code == 0, res.output
    assert res.stderr == "" and res.stdout.startswith("Succeeded")
    moved = await replayed_ids(redis_client)
    assert len(moved) == len(set(moved)) and set(moved) == set(expected)


# ---------------------------------------------------------------- failures and their exit codes


def _manifest_text(spec: str, metadata: str = "  name: r1\n") -> str:
    return (
        f"apiVersion: requeue.dev/v1alpha1\nkind: DLQReplay\nmetadata:\n{metadata}spec:\n"
        f"  redis: {{urlSecretRef: {{name: redis, key: url}}}}\n  queue: default\n{spec}"
    )


def test_invalid_spec_exits_2_naming_the_field(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = {
        "  rate: {jobsPerSecond: 0}\n": "spec.rate.jobsPerSecond",
        "  selector: {failedReasonPattern: '(a'}\n": "spec.selector.failedReasonPattern",
        "  selectr: {}\n": "spec.selectr",
        "  gates: [{name: x}]\n": "spec.gates[0]",
    }
    for spec, field in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(_manifest_text(spec))
        res = runner.invoke(main, ["replay", "-f", str(path), "--redis-url", "redis://127.0.0.1:1/0"])
        assert res.exit_code == 2, (spec, res.output)
        assert "invalid spec" in res.output and field in res.output, (spec, res.output)
    path.write_text(_manifest_text("", metadata="  namespace: ops\n"))
    res = runner.invoke(main, ["replay", "-f", str(path), "--redis-url", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 2 and "metadata.name" in res.output, res.output
    path.write_text("kind: [unclosed\n")
    res = runner.invoke(main, ["replay", "-f", str(path)])
    assert res.exit_code == 2 and "not valid YAML" in res.output, res.output
    res = runner.invoke(main, ["replay", "-f", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "cannot read" in res.output, res.output


def test_manifest_from_stdin_and_beside_other_documents(redis_url: str, tmp_path: Path) -> None:
    asyncio.run(add_jobs(redis_url, Q, [JobSpec(name="waits")]))  # the queue exists, nothing failed
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: redis}\nstringData: {url: x}\n"
    text = secret + "---\n" + _manifest_text("  dryRun: true\n")
    res = invoke("replay", "-f", "-", "--redis-url", redis_url, "-o", "json", input=text)
    assert res.code == 0, res.output
    assert json.loads(res.stdout)["phase"] == "Succeeded"


def test_redis_url_from_secret_flag_or_env_and_missing(redis_url: str, tmp_path: Path) -> None:
    asyncio.run(add_jobs(redis_url, Q, [JobSpec(name="waits")]))
    manifest = write_manifest(tmp_path / "r.yaml", {"dryRun": True})
    res = cli("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}")
    assert res.code == 0, res.output
    res = cli("replay", "-f", str(manifest), env={"REQUEUE_SECRET_REDIS_URL": redis_url})
    assert res.code == 0, res.output
    res = cli("replay", "-f", str(manifest), env={"REQUEUE_REDIS_URL": redis_url})
    assert res.code == 0, res.output
    res = cli("replay", "-f", str(manifest))
    assert res.code == 2, res.output
    for hint in ("missing secret", "--redis-url", "REQUEUE_REDIS_URL", "REQUEUE_SECRET_REDIS_URL"):
        assert hint in res.stderr, res.stderr
    res = cli("replay", "-f", str(manifest), "--secret", "no-slash=1")
    assert res.code == 2 and "NAME/KEY=VALUE" in res.stderr, res.output


def test_unreachable_redis_exits_3_and_never_prints_the_password(tmp_path: Path) -> None:
    port = free_port()
    url = f"rediss://ops:pa55-w0rd@127.0.0.1:{port}/0"
    manifest = write_manifest(tmp_path / "r.yaml", {})
    for how in (["--redis-url", url], ["--secret", f"redis/url={url}"]):
        res = cli("replay", "-f", str(manifest), *how)
        assert res.code == 3, res.output
        assert "Redis unreachable" in res.stderr
        assert f"rediss://ops:***@127.0.0.1:{port}/0" in res.stderr
        assert "pa55-w0rd" not in res.output


def test_wrong_password_exits_3_authentication_failed(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    admin = redis.Redis(host=server.host, port=server.port)
    admin.config_set("requirepass", "the-right-one")
    admin.close()
    manifest = write_manifest(tmp_path / "r.yaml", {})
    url = f"redis://default:not-the-right-one@{server.host}:{server.port}/0"
    res = cli("replay", "-f", str(manifest), "--redis-url", url, "-o", "json")
    assert res.code == 3, res.output
    assert "authentication failed" in res.stderr
    assert "not-the-right-one" not in res.output and "the-right-one" not in res.output
    assert json.loads(res.stdout)["error"] == {
        "reason": "AuthFailed",
        "exitCode": 3,
        "message": json.loads(res.stdout)["error"]["message"],
    }


async def test_a_queue_with_no_bullmq_keys_exits_2_naming_the_queues_there(
    redis_url: str, tmp_path: Path
) -> None:
    """A typo (``queue: defualt``) is QueueNotFound, never "Succeeded with 0 of 0"; nothing is recorded,
    so the same manifest with the name fixed runs; an existing queue with no failures still succeeds."""
    await make_failed_jobs(redis_url, Q, [JobSpec(name="whatsapp.send", reason=RATE_LIMITED)])
    await add_jobs(redis_url, "emails", [JobSpec(name="email.send")])
    manifest = write_manifest(tmp_path / "r.yaml", {"queue": "defualt", "rate": FAST})
    before = keyspace(redis_url)
    shown = redact_url(redis_url)  # the password never shows
    expected = (
        f'queue "defualt" has no BullMQ keys under prefix "bull" in {shown}; did you mean "default"? '
        "queues there: default, emails"
    )
    for extra in ([], ["--dry-run"]):
        res = await acli("replay", "-f", str(manifest), "--redis-url", redis_url, *extra)
        assert res.code == 2, res.output
        assert res.stdout.splitlines()[0] == f"Failed: {expected}", res.stdout
        assert "Succeeded" not in res.output
        assert keyspace(redis_url) == before  # no progress kept, the lease released

    res = await acli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    assert res.code == 2, res.output
    status = json.loads(res.stdout)
    assert status["phase"] == "Failed" and status["message"] == expected
    reasons = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert reasons["Ready"] == reasons["Succeeded"] == ("False", "QueueNotFound")

    empty = write_manifest(tmp_path / "empty.yaml", {"queue": "emails"}, name="empty")
    res = await acli("replay", "-f", str(empty), "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    assert (json.loads(res.stdout)["phase"], json.loads(res.stdout)["matched"]) == ("Succeeded", 0)

    write_manifest(tmp_path / "r.yaml", {"queue": Q, "rate": FAST})  # the typo fixed, same name
    res = await acli("replay", "-f", str(manifest), "--redis-url", redis_url)
    assert res.code == 0, res.output
    assert res.stdout.startswith("Succeeded: moved 1 of 1"), res.stdout


def test_status_json_is_the_operator_status_shape() -> None:
    """-o json is DLQReplayStatus with the operator's field names; pinned so scripts can rely on it."""
    from requeue.commands.replay_cmd import status_json

    wire: dict[str, Any] = status_json(DLQReplayStatus())
    assert {
        "phase",
        "conditions",
        "observedGeneration",
        "matched",
        "replayed",
        "skipped",
        "corrupt",
        "notFailed",
        "overBudget",
        "duplicates",
        "noDedupeKey",
        "failedAgain",
        "completed",
        "progress",
        "gates",
        "queuePausedByReplay",
        "sampleIds",
        "corruptIds",
        "notFailedIds",
        "message",
    } == set(wire)


async def test_redis_lost_mid_replay_exits_3_without_printing_the_password(
    redis_factory: Callable[[], RedisServer], tmp_path: Path
) -> None:
    server = redis_factory()
    admin = redis.Redis(host=server.host, port=server.port)
    admin.config_set("requirepass", "k1ll-me-pw")
    admin.close()
    url = f"redis://default:k1ll-me-pw@{server.host}:{server.port}/0"
    await make_failed_jobs(
        url, Q, [JobSpec(name="whatsapp.send", data={"i": i}, reason=RATE_LIMITED) for i in range(100)]
    )
    manifest = write_manifest(tmp_path / "r.yaml", {"rate": {"jobsPerSecond": 20, "batchSize": 2}})
    # exit_timeout: the engine's bounded retries with backoff, then a named failure
    code = interrupt_cli(
        "replay",
        "-f",
        str(manifest),
        "--redis-url",
        url,
        log=tmp_path / "run.log",
        redis_url=url,
        ready=lambda s: s.llen(K.wait) >= 4,
        stop=server.kill,
        exit_timeout=90,
    )
    log = (tmp_path / "run.log").read_text()
    assert code == 3, log
    assert "requeue: Redis unreachable" in log and "Rerun the same command to resume" in log
    assert "k1ll-me-pw" not in log


async def test_verify_outcome_decides_the_exit_code(redis_url: str, tmp_path: Path) -> None:
    """verify: completed by a real worker -> 0 with the counts in .status; nobody works -> 1."""
    jobs = [JobSpec(name="whatsapp.send", data={"i": i}, reason=RATE_LIMITED) for i in range(12)]
    await make_failed_jobs(redis_url, Q, jobs)
    verify = {"window": "30s", "minSuccessRate": 1.0}
    manifest = write_manifest(tmp_path / "ok.yaml", {"rate": FAST, "verify": verify}, name="verified")
    async with run_worker(redis_url, Q) as worker:
        res = await acli("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["completed"], status["failedAgain"]) == ("Succeeded", 12, 0)
    assert len(worker.completed) == 12

    await make_failed_jobs(redis_url, Q, jobs)
    unverified = write_manifest(
        tmp_path / "ko.yaml", {"rate": FAST, "verify": {"window": "1s"}}, name="nobody-works"
    )
    res = await acli("replay", "-f", str(unverified), "--redis-url", redis_url)
    assert res.code == 1, res.output
    assert res.stdout.startswith("Failed: 0 of 12 replayed jobs completed"), res.stdout


async def test_second_replay_on_a_queue_waits_naming_the_holder(redis_url: str, tmp_path: Path) -> None:
    jobs = [JobSpec(name="whatsapp.send", data={"i": i}, reason=RATE_LIMITED) for i in range(200)]
    await make_failed_jobs(redis_url, Q, jobs)
    slow = {"jobsPerSecond": 10, "batchSize": 2}
    first = popen_cli(
        "replay",
        "-f",
        str(write_manifest(tmp_path / "a.yaml", {"rate": slow}, name="first")),
        "--redis-url",
        redis_url,
        log=tmp_path / "a.log",
    )
    second = None
    sync = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        wait_until(lambda: sync.llen(K.wait) >= 2, timeout=60)
        second = popen_cli(
            "replay",
            "-f",
            str(write_manifest(tmp_path / "b.yaml", {"rate": slow}, name="second")),
            "--redis-url",
            redis_url,
            log=tmp_path / "b.log",
        )
        wait_until(
            lambda: "locked by replay ops/first" in (tmp_path / "b.log").read_text(),
            timeout=30,
            message=lambda: (tmp_path / "b.log").read_text(),
        )
        for proc in (second, first):
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
    finally:
        sync.close()
        for started in (first, second):
            if started is not None and started.poll() is None:
                started.kill()
    log = (tmp_path / "b.log").read_text()
    assert "Interrupted (SIGINT) in phase Pending" in log and f"at {redact_url(redis_url)}" in log, log
