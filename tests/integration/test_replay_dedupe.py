"""``selector.dedupeBy`` with real failed BullMQ jobs: exactly the newest failed job per value moves,
with the other filters and maxJobs; the choice survives processes killed mid-selection (SIGKILL of
the CLI in either pass, and steps whose status is lost); values the data lacks, corrupt data, late
failures and refusals behave as documented."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pydantic
import pytest
import redis.asyncio as aioredis
from bullmq import Job, Queue

from requeue.api import DLQReplayStatus, ReplayPhase
from requeue.queues import QueueKeys, ReplayKeys
from requeue.queues.keys import DUPLICATE_KEYS
from requeue.replay import EngineTuning, ReplayEngine
from support import async_wait_until
from support.bullmq_jobs import JobSpec, make_failed_jobs, run_worker
from support.cli import cli, popen_cli, write_manifest
from support.replay import drive, drive_losing_status, replay_spec
from support.tcp_proxy import TcpProxy

Q = "default"
K = QueueKeys("bull", Q)
SMALL_STEPS = EngineTuning(select_step_members=40, step_budget_s=0.0)


def order_jobs(n: int, keys: int, *, every_nth_without: int = 0) -> list[JobSpec]:
    """``n`` failed charges of ``keys`` orders (copies interleaved as a retrying producer sends them);
    with ``every_nth_without``, every such job has no orderId."""
    out = []
    for i in range(n):
        data: dict[str, Any] = {"i": i, "tenant": "acme"}
        if not (every_nth_without and i % every_nth_without == 0):
            data["orderId"] = f"o-{i % keys}"
        out.append(JobSpec(name="order.charge", data=data, reason="502 Bad Gateway"))
    return out


async def failed_ids(r: aioredis.Redis) -> list[str]:
    """The failed set's members in its own order (failure time, then id)."""
    return [str(i) for i in await r.zrange(K.failed, 0, -1)]


async def expected_choice(
    r: aioredis.Redis, key_of: Callable[[dict[str, Any]], Any], matches: Callable[[str, dict[str, Any]], bool]
) -> tuple[list[str], list[str]]:
    """(kept in failure order, duplicates) by the definition, from the failed set's own order."""
    newest: dict[str, str] = {}
    order: list[str] = []
    no_key: set[str] = set()
    for job_id in await failed_ids(r):
        name = str(await r.hget(K.job(job_id), "name") or "")
        data = json.loads(await r.hget(K.job(job_id), "data") or "null")
        if not matches(name, data):
            continue
        order.append(job_id)
        key = key_of(data)
        if key is None:
            no_key.add(job_id)
        else:
            newest[json.dumps(key) if not isinstance(key, str) else key] = job_id
    keep = set(newest.values()) | no_key
    return [i for i in order if i in keep], [i for i in order if i not in keep]


def order_id(data: dict[str, Any]) -> Any:
    return data.get("orderId")


def every(name: str, data: dict[str, Any]) -> bool:
    return True


async def moved_ids(r: aioredis.Redis) -> list[str]:
    return [*await r.lrange(K.wait, 0, -1), *await r.zrange(K.prioritized, 0, -1)]


async def test_steps_that_lose_their_status_keep_the_same_choice_and_move_each_once(
    redis_url: str, r: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, Q, order_jobs(300, 70, every_nth_without=25))
    kept, duplicates = await expected_choice(r, order_id, every)
    spec = replay_spec(selector={"dedupeBy": "$.orderId"}, rate={"jobsPerSecond": 100_000, "batchSize": 9})

    st = await drive_losing_status(r, spec, replay_id="dd-1", tuning=SMALL_STEPS)

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.duplicates, st.no_dedupe_key) == (
        len(kept),
        len(kept),
        len(duplicates),
        12,
    )
    assert await r.lrange(ReplayKeys("dd-1").snapshot, 0, -1) == kept  # failure order, each once
    assert sorted(await moved_ids(r)) == sorted(kept)
    assert sorted(await r.zrange(K.failed, 0, -1)) == sorted(duplicates)
    async with run_worker(redis_url, Q) as worker:
        await worker.wait_for(len(kept))
    assert sorted(worker.processed_ids) == sorted(kept)


async def test_max_jobs_counts_kept_jobs_and_the_other_filters_apply_first(
    redis_url: str, r: aioredis.Redis
) -> None:
    jobs = [
        *order_jobs(40, 8),
        *[
            JobSpec(name="order.refund", data={"orderId": f"o-{i}"}, reason="502 Bad Gateway")
            for i in range(8)
        ],
        *[JobSpec(name="order.charge", data={"orderId": f"o-{i}"}, reason="card declined") for i in range(8)],
    ]
    await make_failed_jobs(redis_url, Q, jobs)

    def charge_502(name: str, data: dict[str, Any]) -> bool:
        return name == "order.charge" and data.get("tenant") == "acme"

    kept, duplicates = await expected_choice(r, order_id, charge_502)
    assert len(kept) == 8 and len(duplicates) == 32
    order = [i for i in await r.zrange(K.failed, 0, -1) if i in {*kept, *duplicates}]
    # selection stops at the first kept job past maxJobs: the duplicates before it are counted
    counted = len([i for i in order[: order.index(kept[3])] if i in set(duplicates)])
    selector = {
        "dedupeBy": "$.orderId",
        "jobNames": ["order.charge"],
        "failedReasonPattern": "502",
        "dataMatch": {"tenant": "acme"},
        "maxJobs": 3,
    }
    engine = ReplayEngine(r, replay_id="dd-2", owner="ns/dd-2")

    st = await drive(engine, replay_spec(selector=selector))

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    # the three oldest kept jobs, whatever number of duplicates come before them
    assert (st.matched, st.replayed) == (3, 3)
    assert sorted(await moved_ids(r)) == sorted(kept[:3])
    assert st.duplicates == counted and st.breakdown is not None
    assert sum((st.breakdown.duplicates_by_key or {}).values()) == st.duplicates


async def test_values_compare_as_json_missing_and_null_values_are_not_deduplicated_corrupt_data_stays(
    redis_url: str, r: aioredis.Redis
) -> None:
    datas: list[dict[str, Any]] = [
        {"order": {"items": [{"sku": 42}]}},
        {"order": {"items": [{"sku": "42"}]}},  # the same value: "42" and 42 are one
        {"order": {"items": [{"sku": {"b": 1, "a": 2}}]}},
        {"order": {"items": [{"sku": {"a": 2, "b": 1}}]}},  # objects compare with sorted keys
        {"order": {"items": []}},  # no value: replayed, counted
        {"order": {"items": [{"sku": None}]}},  # null: likewise
        {"order": "not an object"},  # likewise
        {"order": {"items": [{"sku": 42}]}, "corrupt": True},
    ]
    ids = await make_failed_jobs(redis_url, Q, [JobSpec(name="ship", data=d) for d in datas])
    await r.hset(K.job(ids[7]), "data", '{"order": {"items": [{"sku": 42')  # truncated
    order = await failed_ids(r)  # failure order: of two copies, the later is newer
    older = [min(pair, key=order.index) for pair in ((ids[0], ids[1]), (ids[2], ids[3]))]
    engine = ReplayEngine(r, replay_id="dd-3", owner="ns/dd-3")
    spec = replay_spec(selector={"dedupeBy": "$.order.items[0].sku"})

    st = await drive(engine, spec)

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.replayed, st.duplicates, st.no_dedupe_key) == (5, 5, 2, 3)
    assert (st.corrupt, st.corrupt_ids) == (1, [ids[7]])
    assert set(await r.zrange(K.failed, 0, -1)) == {*older, ids[7]}
    assert sorted(await moved_ids(r)) == sorted(set(ids) - {*older, ids[7]})
    assert st.breakdown is not None
    assert st.breakdown.duplicates_by_key == {"42": 1, '{"a":2,"b":1}': 1}


async def test_the_per_value_counts_are_a_bounded_sample_and_the_total_is_exact(
    redis_url: str, r: aioredis.Redis
) -> None:
    values = DUPLICATE_KEYS + 5
    # o-0 .. o-4 three copies each, every other value two: more values with duplicates than are counted
    jobs = order_jobs(2 * values, values) + order_jobs(5, values)
    await make_failed_jobs(redis_url, Q, jobs, timeout=180)
    engine = ReplayEngine(r, replay_id="dd-5", owner="ns/dd-5")

    st = await drive(engine, replay_spec(selector={"dedupeBy": "$.orderId"}, dryRun=True))

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    assert (st.matched, st.duplicates) == (values, values + 5)
    assert await r.hlen(ReplayKeys("dd-5").duplicates) == DUPLICATE_KEYS
    assert st.breakdown is not None and st.breakdown.duplicates_by_key is not None
    shown = st.breakdown.duplicates_by_key
    assert len(shown) == 20  # the most duplicated values first
    assert {f"o-{i}": 2 for i in range(5)}.items() <= shown.items()
    assert await r.zcard(K.failed) == len(jobs)  # a dry run moves nothing


async def test_after_the_first_pass_late_failures_never_make_two_per_value_and_the_choice_holds(
    redis_url: str, r: aioredis.Redis
) -> None:
    await make_failed_jobs(redis_url, Q, order_jobs(20, 5))
    # a generous clock-skew margin: jobs failing right after the first pass still fall in the window
    tuning = EngineTuning(select_step_members=10, clock_skew_ms=600_000)
    engine = ReplayEngine(r, replay_id="dd-4", owner="ns/dd-4", tuning=tuning)
    spec = replay_spec(selector={"dedupeBy": "$.orderId"})
    keys = ReplayKeys("dd-4")
    st = DLQReplayStatus()
    while not await r.hget(keys.progress, "dd_done"):  # step until the first pass is complete
        st = (await engine.step(spec, st)).status
    assert int(await r.hget(keys.progress, "scanned") or 0) == 0  # the second pass has not begun
    late = [
        JobSpec(name="order.charge", data={"orderId": "late"}, reason="502 Bad Gateway"),
        JobSpec(name="order.charge", data={"orderId": "late"}, reason="502 Bad Gateway"),
        JobSpec(name="order.charge", data={"orderId": "o-1"}, reason="502 Bad Gateway"),
    ]
    late_ids = await make_failed_jobs(redis_url, Q, late)
    # and someone retries o-2's newest copy by hand before the second pass reaches it
    chosen_o2 = str(await r.hget(keys.dedupe, "o-2"))
    queue = Queue(Q, {"connection": redis_url})
    try:
        await (await Job.fromId(queue, chosen_o2)).retry("failed")
    finally:
        await queue.close()

    st = await drive(engine, spec, st)

    assert st.phase == ReplayPhase.SUCCEEDED, st.message
    moved = await moved_ids(r)
    late_moved = [i for i in moved if i in late_ids[:2]]
    assert len(late_moved) == 1  # one per value, the first late one seen
    assert late_ids[2] not in moved  # o-1 already had its newest recorded
    # o-2: its chosen copy left the failed set (retried by hand, in wait once); the older ones stay
    assert moved.count(chosen_o2) == 1 and st.replayed == st.matched
    o2_failed = [i for i in await failed_ids(r) if '"o-2"' in str(await r.hget(K.job(i), "data"))]
    assert len(o2_failed) == 3
    assert (st.matched, st.duplicates) == (5, 20 - 5 + 2)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("orderId", "NotRooted"),
        ("$", "NoSegment"),
        ("$..orderId", "UnsupportedSegment"),
        ("$.items[*]", "UnsupportedSegment"),
        ("$['orderId']", "UnsupportedSegment"),
        ("$" + ".a" * 17, "TooLong"),
        ("$.a" + "b" * 300, "TooLong"),
    ],
)
def test_a_path_outside_the_subset_is_refused_with_its_named_reason(path: str, problem: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"not a supported JSON path \\({problem}\\)"):
        replay_spec(selector={"dedupeBy": path})


def test_bulk_refuses_dedupe_by_in_the_model_and_the_cli(redis_url: str, tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="dedupeBy needs mode Exact"):
        replay_spec(mode="Bulk", selector={"dedupeBy": "$.orderId"})
    manifest = write_manifest(tmp_path / "r.yaml", {"mode": "Bulk", "selector": {"dedupeBy": "$.orderId"}})
    res = cli("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}")
    assert res.code == 2, res.output
    assert "selector.dedupeBy needs mode Exact" in res.output


async def _kill_when(
    args: Sequence[str], log: Path, redis_url: str, ready: Callable[[dict[str, str]], bool]
) -> dict[str, str]:
    """Start the CLI, SIGKILL it once its replay's progress hash satisfies ``ready``; the progress then."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    proc = popen_cli(*args, log=log)
    try:

        async def progress() -> dict[str, str] | None:
            found = await client.keys("requeue:replay:*:progress")
            p = cast(dict[str, str], await client.hgetall(found[0]) if found else {})
            return p if p and ready(p) else None

        await async_wait_until(progress, timeout=60, interval=0.01, message=lambda: log.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        found = await client.keys("requeue:replay:*:progress")
        return cast(dict[str, str], await client.hgetall(found[0]))
    finally:
        if proc.poll() is None:
            proc.kill()
        await client.aclose()


async def test_sigkill_in_either_selection_pass_then_rerun_makes_the_same_choice(
    redis_url: str, redis_server: Any, r: aioredis.Redis, tmp_path: Path
) -> None:
    await make_failed_jobs(redis_url, Q, order_jobs(3000, 700, every_nth_without=100), timeout=180)
    kept, duplicates = await expected_choice(r, order_id, every)
    manifest = write_manifest(
        tmp_path / "replay.yaml",
        {"selector": {"dedupeBy": "$.orderId"}, "rate": {"jobsPerSecond": 100_000, "batchSize": 100}},
    )
    async with TcpProxy("127.0.0.1", redis_server.port) as proxy:
        await proxy.delay(4)  # every round trip ~8 ms: selection pages take long enough to kill one
        slow_url = redis_url.replace(f":{redis_server.port}", f":{proxy.port}")
        args = ("replay", "-f", str(manifest), "--secret", f"redis/url={slow_url}")
        p = await _kill_when(
            args, tmp_path / "1.log", redis_url, lambda p: int(p.get("dd_scanned", 0)) >= 500
        )
        assert p["stage"] == "selecting" and "dd_done" not in p, "the first kill must land in the first pass"
        p = await _kill_when(
            args,
            tmp_path / "2.log",
            redis_url,
            lambda p: p.get("dd_done") == "1" and int(p.get("scanned", 0)) >= 500,
        )
        assert p["stage"] == "selecting", "the second kill must land in the second pass"
        assert int(p["scanned"]) < 3000
    res = cli("replay", "-f", str(manifest), "--secret", f"redis/url={redis_url}", "-o", "json")
    assert res.code == 0, res.output
    status = json.loads(res.stdout)
    assert (status["phase"], status["matched"], status["replayed"]) == ("Succeeded", len(kept), len(kept))
    assert status["duplicates"] == len(duplicates) and status["noDedupeKey"] == 30
    [snapshot_key] = await r.keys("requeue:replay:*:snapshot")
    assert await r.lrange(snapshot_key, 0, -1) == kept  # the same choice, each once, in failure order
    assert sorted(await moved_ids(r)) == sorted(kept)
    assert sorted(await r.zrange(K.failed, 0, -1)) == sorted(duplicates)
