"""One replay, one driver: the queue lease is fenced by a per-process token, so a second process
for the same replay id waits (naming the holder) instead of moving jobs at twice the rate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis
import redis.asyncio as aioredis

from requeue.api import DLQReplayStatus, ReplayCondition, ReplayPhase, find_condition
from requeue.queues import QueueKeys, ReplayKeys
from requeue.replay import ReplayEngine
from requeue.replay.lease import Driver, this_process
from support import wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs
from support.cli import REPO, CliResult, cli_command, cli_env, write_manifest
from support.replay import drive
from support.replay import replay_spec as make_spec

Q = "default"
K = QueueKeys("bull", Q)


def jobs(n: int) -> list[JobSpec]:
    return [JobSpec("whatsapp.send", {"i": i}, "429 Too Many Requests") for i in range(n)]


def other_process(pid: int) -> Driver:
    """A driver as a process on another host (another pod) would make it."""
    return Driver(token=f"other-{pid}", host=f"elsewhere-{pid}", pid=pid)


async def test_a_second_process_on_the_same_replay_waits_naming_the_holder(
    redis_url: str, r: aioredis.Redis
) -> None:
    ids = await make_failed_jobs(redis_url, Q, jobs(30))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 10})
    first = ReplayEngine(r, replay_id="same", owner="ops/same", driver=other_process(4242))
    second = ReplayEngine(r, replay_id="same", owner="ops/same", driver=other_process(5353))
    st1 = DLQReplayStatus()
    slow = spec.model_copy(update={"rate": make_spec(rate={"jobsPerSecond": 10, "batchSize": 10}).rate})
    while st1.replayed == 0:  # at 10 jobs/s one step moves one batch
        st1 = (await first.step(slow, st1)).status
    moved = st1.replayed
    assert moved == 10

    res = await second.step(spec, DLQReplayStatus())
    ready = find_condition(res.status.conditions, ReplayCondition.READY)
    assert ready is not None and ready.reason == "QueueLocked"
    assert "replay id same" in ready.message and "pid 4242 on elsewhere-4242" in ready.message
    assert [e.reason for e in res.events] == ["QueueLocked"]
    assert (await r.hget(ReplayKeys("same").progress, "replayed")) == str(moved)  # moved nothing

    # its Ctrl-C (a suspend) leaves the holder's lease alone
    stopped = await second.step(spec.model_copy(update={"suspend": True}), res.status)
    assert stopped.status.phase == ReplayPhase.SUSPENDED and "pid 4242" in stopped.status.message
    assert "4242" in (await r.get(K.lease) or "")

    # the holder dies; once its lease expires (the TTL, shortened here) the second takes over
    await r.pexpire(K.lease, 1)
    sync = redis.Redis.from_url(redis_url)
    try:
        wait_until(lambda: not sync.exists(K.lease), timeout=10)
    finally:
        sync.close()
    st2 = await drive(second, spec, res.status)
    assert st2.phase == ReplayPhase.SUCCEEDED and (st2.matched, st2.replayed) == (30, 30)
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(ids)


async def test_a_restarted_engine_in_the_same_process_takes_its_lease_back_at_once(
    redis_url: str, r: aioredis.Redis
) -> None:
    """A kopf daemon restarted inside the operator process must not wait out its own lease."""
    ids = await make_failed_jobs(redis_url, Q, jobs(20))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 5})
    slow = spec.model_copy(update={"rate": make_spec(rate={"jobsPerSecond": 5, "batchSize": 5}).rate})
    before = ReplayEngine(r, replay_id="rs", owner="ops/rs")
    st = DLQReplayStatus()
    while st.replayed == 0:  # one batch, then the daemon is restarted
        st = (await before.step(slow, st)).status
    assert this_process().token in (await r.get(K.lease) or "")
    after = ReplayEngine(r, replay_id="rs", owner="ops/rs")  # the daemon's new engine
    res = await after.step(spec, st)
    ready = find_condition(res.status.conditions, ReplayCondition.READY)
    assert ready is not None and ready.reason != "QueueLocked"
    st = await drive(after, spec, res.status)
    assert (st.matched, st.replayed) == (20, 20)
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(ids)


async def _run_cli(*args: str) -> tuple[int, CliResult]:
    proc = await asyncio.create_subprocess_exec(
        *cli_command(*args),
        env=cli_env(),
        cwd=REPO,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.pid, CliResult(proc.returncode, out.decode(), err.decode())


async def test_two_cli_runs_of_one_manifest_keep_the_rate(
    redis_url: str, r: aioredis.Redis, tmp_path: Path
) -> None:
    """Two ``requeue replay -f same.yaml`` at once: one drives, the other names it and waits; every
    job moves once and the replay's own recorded time span fits the rate (plus the one batch the
    token bucket starts with), which two drivers at once would have doubled."""
    n, rate, batch = 300, 100, 10
    ids = await make_failed_jobs(redis_url, Q, jobs(n))
    manifest = write_manifest(
        tmp_path / "same.yaml", {"rate": {"jobsPerSecond": rate, "batchSize": batch}}, name="same"
    )
    args = ("replay", "-f", str(manifest), "--redis-url", redis_url, "-o", "json")
    (pid_a, a), (pid_b, b) = await asyncio.gather(_run_cli(*args), _run_cli(*args))
    assert a.code == 0 and b.code == 0, a.output + b.output
    waited = [(res, holder) for res, holder in ((a, pid_b), (b, pid_a)) if "being driven by" in res.stderr]
    assert len(waited) == 1, a.stderr + b.stderr
    waiter, holder_pid = waited[0]
    assert f"being driven by pid {holder_pid} on " in waiter.stderr, waiter.stderr
    for res in (a, b):
        status = json.loads(res.stdout)
        assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", n, n)

    waiting = await r.lrange(K.wait, 0, -1)
    assert len(waiting) == len(set(waiting)) == n and set(waiting) == set(ids)
    progress = await r.hgetall(ReplayKeys(_replay_id(a, b)).progress)
    span_s = (int(progress["finished_ms"]) - int(progress["started_ms"])) / 1000
    assert int(progress["replayed"]) == n
    assert n <= rate * span_s + batch, f"{n} jobs in {span_s:.2f}s at {rate}/s"


def _replay_id(*results: CliResult) -> str:
    for res in results:
        for line in res.stderr.splitlines():
            if "(replay id " in line:
                return line.split("(replay id ", 1)[1].split(")", 1)[0]
    raise AssertionError("no replay id printed")


async def test_a_rerun_after_the_holder_was_killed_on_this_host_resumes_at_once(
    redis_url: str, r: aioredis.Redis
) -> None:
    """SIGKILL leaves the lease behind; its pid on this host runs no more, so the rerun need not
    wait out the TTL. A live holder elsewhere is still waited for (the first test)."""
    ids = await make_failed_jobs(redis_url, Q, jobs(20))
    spec = make_spec(rate={"jobsPerSecond": 100_000, "batchSize": 5})
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    killed = Driver(token="killed", host=this_process().host, pid=gone.pid)
    slow = spec.model_copy(update={"rate": make_spec(rate={"jobsPerSecond": 5, "batchSize": 5}).rate})
    st = DLQReplayStatus()
    before = ReplayEngine(r, replay_id="k", owner="ops/k", driver=killed)
    while st.replayed == 0:
        st = (await before.step(slow, st)).status
    rerun = ReplayEngine(r, replay_id="k", owner="ops/k")
    res = await rerun.step(slow, st)  # one slow batch: the replay is not over, so the lease is held
    ready = find_condition(res.status.conditions, ReplayCondition.READY)
    assert ready is not None and ready.reason != "QueueLocked", ready
    assert this_process().token in (await r.get(K.lease) or "")
    st = await drive(rerun, spec, res.status)
    assert (st.matched, st.replayed) == (20, 20)
    assert sorted(await r.lrange(K.wait, 0, -1)) == sorted(ids)
