"""How fast can a time-window replay be, given what it must do per job? A floor, measured.

Issue 7 asks a time-window replay for >= 0.8x the jobs/s of BullMQ's ``Queue.retryJobs``
with no stall over 5 ms. ``retryJobs`` is BullMQ's ``moveJobsToWait`` with 1000 jobs per
Lua call and nothing else. requeue must also, per job (issue 7's own contract):

* send a job with a priority to ``prioritized`` and a ``lifo`` job to the right end of
  ``wait`` (where BullMQ's ``Job.retry`` puts them): read ``priority`` and ``opts``;
* leave corrupt jobs alone (no hash, no name, data not JSON): read ``name`` and ``data``;
* reset the attempt counters (``resetAttempts``, default true): ``HDEL atm ats``;
* know which jobs it moved (verification, crash resume): record the ids.

This script strips requeue down to those steps and nothing else (no snapshot pass, no
breakdown, no lease, no WATCH guard) and adds them one by one on top of BullMQ's own
``moveJobsToWait``, at chunk sizes that keep a call under the 5 ms stall bound. Each
line runs on a fresh copy of the same seeded data (the Dataset of ``bench/replay.py``).
The checks are read-only Lua issued right before the move in the same pipeline, so the
job hashes are as warm as they can be for the move; the writes are one MULTI with the
move. It is the best any design with these guarantees can do on this Redis, so the
ratio on the last line is the ceiling for the target.

    .venv/bin/python bench/window_floor.py --cache /tmp/rqcache     # reuses bench/replay.py's seed
    .venv/bin/python bench/window_floor.py --jobs 20000 --chunks 200,500

Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.replay

from bench.replay import PREFIX, QUEUE, Dataset, Pinger, Run, fmt, measure_retry_jobs

#: Read-only: the head of the failed set (what moveJobsToWait will take) and the fields a
#: check needs, per job. ARGV[1] count, [2] max score, [3] job key prefix, [4] which
#: checks: "p" priority, "l" lifo (opts), "c" corrupt (name, data shaped like JSON).
#: Returns how many jobs would need BullMQ's reprocessJob or be left alone (0 here: the
#: seeded jobs are all plain; the point is the cost of looking).
CHECK = r"""
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], 0, ARGV[2], "LIMIT", 0, tonumber(ARGV[1]))
local want = ARGV[4]
local fields = {}
if string.find(want, "p", 1, true) then fields[#fields + 1] = "priority" end
if string.find(want, "l", 1, true) then fields[#fields + 1] = "opts" end
if string.find(want, "c", 1, true) then fields[#fields + 1] = "name"; fields[#fields + 1] = "data" end
local special = 0
for _, id in ipairs(ids) do
  local f = redis.call("HMGET", ARGV[3] .. id, unpack(fields))
  for i, name in ipairs(fields) do
    local v = f[i]
    if name == "priority" and v ~= "0" then special = special + 1 end
    if name == "opts" and v and string.find(v, '"lifo":true', 1, true) then special = special + 1 end
    if name == "name" and not v then special = special + 1 end
    if name == "data" and (not v or string.byte(v, 1) ~= 123) then special = special + 1 end
  end
end
return special
"""

#: The writes next to the move, in its MULTI: attempts reset ("r") and the moved ids
#: recorded with a cursor ("b"). ARGV as CHECK, [4] "r" and/or "b"; KEYS[2] ids list,
#: KEYS[3] progress hash.
TALLY = r"""
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], 0, ARGV[2], "LIMIT", 0, tonumber(ARGV[1]))
if string.find(ARGV[4], "r", 1, true) then
  for _, id in ipairs(ids) do redis.call("HDEL", ARGV[3] .. id, "atm", "ats") end
end
if string.find(ARGV[4], "b", 1, true) and #ids > 0 then
  redis.call("RPUSH", KEYS[2], unpack(ids))
  redis.call("HINCRBY", KEYS[3], "cursor", #ids)
end
return #ids
"""

#: (label, checks before the move, writes with the move)
STEPS = (
    ("moveJobsToWait alone", "", ""),
    ("+ priority check", "p", ""),
    ("+ lifo check", "pl", ""),
    ("+ corrupt check (name, data shape)", "plc", ""),
    ("+ attempts reset (HDEL atm ats)", "plc", "r"),
    ("+ moved ids recorded (all of the contract)", "plc", "rb"),
)


async def _run_step(url: str, chunk: int, checks: str, writes: str) -> tuple[float, int]:
    """Move the whole failed set in ``chunk``-sized calls; (seconds, jobs moved)."""
    from requeue.queues import BullQueue, connect

    redis = await connect(url)
    try:
        q = BullQueue(redis, QUEUE, prefix=PREFIX)
        k = q.keys
        check = redis.register_script(CHECK)
        tally = redis.register_script(TALLY)
        move = q.scripts.move_jobs_to_wait
        for script in (check, tally, move):
            await redis.script_load(script.script)
        before = int(await redis.zcard(k.failed))
        top = "+inf"
        started = time.perf_counter()
        while True:
            pipe = redis.pipeline(transaction=bool(writes))
            if checks:  # read-only, so it may sit in the MULTI without changing what it proves
                pipe.evalsha(check.sha, 1, k.failed, chunk, top, k.base, checks)
            if writes:
                pipe.evalsha(
                    tally.sha, 3, k.failed, "floor:ids", "floor:progress", chunk, top, k.base, writes
                )
            pipe.evalsha(
                move.sha,
                8,
                k.base,
                k.events,
                k.failed,
                k.wait,
                k.paused,
                k.meta,
                k.active,
                k.marker,
                chunk,
                top,
                "failed",
            )
            replies = await pipe.execute()
            if int(replies[-1]) == 0:
                break
        elapsed = time.perf_counter() - started
        moved = before - int(await redis.zcard(k.failed))
        return elapsed, moved
    finally:
        await redis.aclose()


def measure(ds: Dataset, chunk: int, checks: str, writes: str) -> Run:
    ds.restore()
    with Pinger(ds.server.host, ds.server.port) as ping:
        elapsed, moved = asyncio.run(_run_step(ds.server.url, chunk, checks, writes))
    return Run(moved / elapsed, elapsed, moved, ping.max_ms, ping.p99_ms, ping.busy_ms)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunks", default="200,500", help="jobs per call to compare (default 200,500)")
    parser.add_argument("--major", type=int, default=6, choices=(5, 6))
    parser.add_argument("--cache", type=Path, default=None, help="as in bench/replay.py")
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]

    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"requeue-floor-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    ds = Dataset(args.jobs, args.major, workdir)
    try:
        ds.build(args.cache)
        retry = [measure_retry_jobs(ds) for _ in range(args.runs)]
        ref = statistics.median(r.jobs_per_s for r in retry)
        rows = [("BullMQ Queue.retryJobs (Node, count 1000)", retry)]
        for chunk in chunks:
            for label, checks, writes in STEPS:
                runs = [measure(ds, chunk, checks, writes) for _ in range(args.runs)]
                rows.append((f"chunk {chunk}: {label}", runs))
                print(
                    f"  {rows[-1][0]}: {statistics.median(r.jobs_per_s for r in runs):.0f} jobs/s",
                    file=sys.stderr,
                )
    finally:
        ds.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\ntime-window replay floor: {args.jobs} failed jobs seeded by Node BullMQ {args.major}; "
        f"medians of {args.runs} runs; ratio = jobs/s over retryJobs's\n"
    )
    head = f"{'measurement':58} {'jobs/s':>9} {'ratio':>6} {'us/job':>7} {'PING max':>9} {'Redis busy':>10}"
    print(head)
    print("-" * len(head))
    for label, runs in rows:
        rate = statistics.median(r.jobs_per_s for r in runs)
        print(
            f"{label:58} {rate:9.0f} {rate / ref:6.2f} {1e6 / rate:7.2f} "
            f"{fmt(statistics.median(r.max_ms for r in runs), '7.2f')}ms "
            f"{fmt(statistics.median(r.busy_ms for r in runs), '8.2f')}ms"
        )


if __name__ == "__main__":
    main()
