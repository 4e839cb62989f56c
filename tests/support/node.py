"""Drive Node.js BullMQ 5 and 6 from Python tests and benchmarks.

The Node side lives in ``tests/interop`` (``package.json`` pins ``bullmq5`` =
``npm:bullmq@5.81.5``, ``bullmq6`` = ``npm:bullmq@6.7.0`` and ``ioredis@5.11.1``,
which BullMQ 6 needs beside it). Install it with ``npm ci --prefix tests/interop``.
Each ``*.mjs`` script takes one JSON object of arguments (argv or stdin), selects
the BullMQ major from ``BULLMQ_MAJOR`` and prints JSON lines on stdout.

Wrappers (all async, all fail loudly, nothing is skipped):

* :func:`node_available` -- raises :class:`NodeInteropUnavailable` with the fix.
* :func:`run_producer` -- ``Queue.addBulk``; returns the job ids.
* :class:`NodeWorker` -- async context manager around a real ``Worker``.
* :func:`run_retry_jobs` -- BullMQ's own ``Queue.retryJobs`` (benchmark reference).
* :func:`get_counts`, :func:`pause_queue`, :func:`resume_queue`.
* :func:`reprocess_failed` -- the reference replay recipe below, in Python.

The ``reprocessJob`` recipe (Python ``bullmq`` 3.4.4, ``commands/reprocessJob-9.lua``)
=========================================================================================

Script object: ``queue.redisConnection.commands["reprocessJob"]`` (a redis-py
``AsyncScript``); ``await script(keys=..., args=..., client=pipe)`` only *queues*
an EVALSHA on ``pipe`` (and registers the script so ``pipe.execute()`` loads it
first), so one ``execute()`` carries a whole batch in one round trip. ``k`` below
is ``queue.scripts.keys`` (``{prefix}:{queue}:{name}``)::

    KEYS[1] queue.scripts.toKey(job_id)     job hash  {prefix}:{queue}:{id}
    KEYS[2] k["events"]                     events stream (XADD "waiting", prev=failed)
    KEYS[3] k["failed"]                     the set the job must be in (ZREM)
    KEYS[4] k["wait"]                       target list for priority == 0
    KEYS[5] k["meta"]                       reads "paused" and "concurrency"
    KEYS[6] k["active"]                     LLEN for the concurrency check
    KEYS[7] k["marker"]                     ZADD marker 0 "0" unless paused/maxed
    KEYS[8] k["prioritized"]                target zset for priority > 0
    KEYS[9] k["pc"]                         priority counter (INCR)
    ARGV[1] job_id
    ARGV[2] "RPUSH" if opts.lifo else "LPUSH"   (Worker pops from the right)
    ARGV[3] "failedReason"                  (field to delete; "returnvalue" for completed)
    ARGV[4] "failed"                        (previous state; used for parent deps/event)
    ARGV[5] "1" to HDEL atm (reset attemptsMade), else "0"
    ARGV[6] "1" to HDEL ats (reset attemptsStarted), else "0"

Result: ``1`` moved, ``-1`` job hash missing, ``-3`` not in ``KEYS[3]`` (already
replayed/retried/removed: this is what makes a re-sent batch harmless). It always
deletes ``finishedOn``, ``processedOn`` and ``failedReason``; it keeps ``name``,
``data``, ``opts``, ``priority``, ``timestamp``, ``delay`` and ``stacktrace``.
``Job.retry(state, opts)`` in Python calls it with the same keys and
``opts["resetAttemptsMade"]``/``opts["resetAttemptsStarted"]``; note that
``Queue.retryJobs`` (``moveJobsToWait``) resets neither counter and ignores
priority (everything goes to ``wait``).

BullMQ 5 vs 6, as observed with 5.81.5 and 6.7.0 (tests/interop/test_node_bullmq.py)
=====================================================================================

* Job hashes are the same: ``atm`` (attemptsMade, incremented on every
  finished attempt) and ``ats`` (attemptsStarted, incremented by moveToActive),
  ``opts`` JSON, ``priority`` field, ``failedReason``, ``stacktrace``,
  ``finishedOn``/``processedOn``. ``failed``/``completed`` are zsets scored by
  finish time; ``marker`` is a zset; ``prioritized`` zset scores are
  ``priority * 2**32 + (INCR pc)``. ``meta.version`` is ``bullmq:5.81.5`` /
  ``bullmq:6.7.0`` (written when a Node ``Queue`` instance connects -- not by
  ``Worker`` nor by Python bullmq 3.4.4; last writer wins): the only hint of
  which major owns a queue, and an unreliable one.
* Python bullmq 3.4.4's ``reprocessJob-9.lua`` is byte-for-byte BullMQ 6.7's
  (modulo blank lines). BullMQ 5.81.5 ships ``reprocessJob-8.lua`` (no
  ``prioritized``/``pc`` keys, a ``paused`` key instead): it pushes priority
  jobs into ``wait`` (priority lost) and, when ``meta.paused`` is set, into the
  ``paused`` *list*. The 6-style script puts priority jobs into
  ``prioritized``, which BullMQ 5 workers also consume -- so for priority it is
  the better one on both majors.
* **Pause differs, and that matters for a replay into a paused queue.**
  BullMQ 5 ``pause`` does ``RENAME wait paused`` plus ``meta.paused=1``; its
  ``addJob`` scripts push into the ``paused`` list while paused; its ``resume``
  does ``RENAME paused wait`` when the ``paused`` list exists, which
  *overwrites* ``wait``. BullMQ 6 (and Python 3.4.4's ``pause-7.lua``) only set
  ``meta.paused``; jobs stay in ``wait``; ``resume`` migrates a legacy
  ``paused`` list into ``wait`` (RPUSH, at most 7000 per call, returning how
  many remain -- Node 6 loops, Python's ``Queue.resume`` does NOT; loop
  yourself). The 6-style ``reprocessJob`` pushes to ``KEYS[4]`` (``wait``)
  even when paused. So on a BullMQ 5 queue paused while jobs were added or
  waiting, replayed ids in ``wait`` are **lost** (job hash kept, in no set)
  when a Node 5 app resumes: ``test_bullmq5_resume_clobbers_naive_replay``
  demonstrates it. Safe recipe (``paused_aware=True`` here): in one
  transaction ``WATCH meta; HEXISTS meta paused; MULTI; EVALSHA...; EXEC`` and
  pass the ``paused`` list as ``KEYS[4]`` while the queue is paused. Every
  resumer then does the right thing (5 renames it, 6/Python migrate it), and
  a concurrent pause/resume aborts the EXEC (WatchError) instead of racing;
  retry the page. Priority jobs are unaffected (they go to ``prioritized``).
* While paused neither script adds a marker; resume adds one when ``wait`` or
  ``prioritized`` is non-empty (6), or when the ``paused`` list existed or
  ``prioritized`` is non-empty (5). Otherwise BullMQ 5 workers pick the jobs
  up on their next blocking-poll timeout (``drainDelay``, 5 s default).
* BullMQ 6 needs ``ioredis`` beside it (optional peer); BullMQ 5 depends on it.
* Measured here (redis 7.0, loopback, 20k failed jobs): Node ``retryJobs``
  (count 1000) took 73 ms on 5.81.5 and 117 ms on 6.7.0 for all 20k;
  :func:`reprocess_failed` in pages of 200 took ~1.2 s (worst page ~17-19 ms
  round trip including the ``opts`` read) on either major.
* ``getJobCounts`` while paused (one waiting job, one added during the pause):
  5 reports ``paused: 2, waiting: 0`` (it counts the ``paused`` list); 6
  reports ``waiting: 2, paused: 0`` -- its ``paused`` count is only a legacy
  ``paused`` list, e.g. jobs that the paused-aware recipe put there.
* ``Queue.retryJobs`` (``moveJobsToWait``) on both majors: deletes
  ``finishedOn``/``processedOn``/``failedReason`` only (``atm`` stays, so a job
  with ``attempts: N`` gets one attempt, not N) and LPUSHes every job into
  ``wait`` (priority ignored); it cannot select a subset, only a state and an
  age (``timestamp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from support.bullmq_jobs import worker_waiting

INTEROP_DIR = Path(__file__).resolve().parents[1] / "interop"
MAJORS: tuple[int, ...] = (5, 6)
FIX = "run `npm ci --prefix tests/interop` (Node.js >= 20 and npm on PATH)"

JsonObj = dict[str, Any]

#: Longest JSON line read from a Node script: a worker echoes each job's data, and a 1 MiB
#: payload (tests/interop/test_job_kinds.py) is far past asyncio's 64 KiB default.
LINE_LIMIT = 16 * 2**20


class NodeInteropUnavailable(RuntimeError):
    """Node.js or the pinned npm packages are missing; the message has the fix."""


class NodeScriptError(RuntimeError):
    """A Node script exited non-zero, timed out, or printed something unexpected."""


def _pinned_version(spec: str) -> str:
    # "npm:bullmq@6.7.0" -> "6.7.0"; "5.11.1" -> "5.11.1"
    return spec.rsplit("@", 1)[-1]


def node_available() -> str:
    """Return the ``node`` executable, or raise :class:`NodeInteropUnavailable`.

    Checks Node >= 20 and that ``tests/interop/node_modules`` holds exactly the
    versions pinned in ``package.json`` (bullmq5, bullmq6, ioredis).
    """
    node = shutil.which("node")
    if node is None:
        raise NodeInteropUnavailable(f"`node` is not on PATH; install Node.js >= 20, then {FIX}")
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"v(\d+)\.", out.strip())
    if not match or int(match.group(1)) < 20:
        raise NodeInteropUnavailable(f"Node.js >= 20 required, found {out.strip()!r}; {FIX}")
    deps: dict[str, str] = json.loads((INTEROP_DIR / "package.json").read_text())["dependencies"]
    for name, spec in deps.items():
        manifest = INTEROP_DIR / "node_modules" / name / "package.json"
        if not manifest.is_file():
            raise NodeInteropUnavailable(f"{manifest} is missing; {FIX}")
        installed = json.loads(manifest.read_text())["version"]
        if installed != _pinned_version(spec):
            raise NodeInteropUnavailable(f"{name} {installed} installed but package.json pins {spec}; {FIX}")
    return node


def _check_major(major: int) -> None:
    if major not in MAJORS:
        raise ValueError(f"BullMQ major must be one of {MAJORS}, got {major!r}")


def _env(major: int) -> dict[str, str]:
    return {**os.environ, "BULLMQ_MAJOR": str(major)}


def _parse_lines(script: str, stdout: bytes) -> list[JsonObj]:
    lines: list[JsonObj] = []
    for raw in stdout.decode().splitlines():
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError as exc:
                raise NodeScriptError(f"{script}: non-JSON stdout line {raw!r}") from exc
    return lines


async def run_node_script(
    script: str, args: Mapping[str, Any], *, major: int, timeout_s: float = 120.0
) -> list[JsonObj]:
    """Run ``tests/interop/<script>`` with ``args`` on stdin; return its JSON lines."""
    _check_major(major)
    node = node_available()
    proc = await asyncio.create_subprocess_exec(
        node,
        str(INTEROP_DIR / script),
        "-",
        cwd=INTEROP_DIR,
        env=_env(major),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(dict(args)).encode()), timeout_s)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise NodeScriptError(f"{script} (BullMQ {major}) timed out after {timeout_s}s") from exc
    if proc.returncode != 0:
        raise NodeScriptError(
            f"{script} (BullMQ {major}) exited {proc.returncode}: {stderr.decode()[-4000:]}"
        )
    return _parse_lines(script, stdout)


def _one(script: str, lines: list[JsonObj], event: str) -> JsonObj:
    found = [line for line in lines if line.get("event") == event]
    if len(found) != 1:
        raise NodeScriptError(f"{script}: expected one {event!r} line, got {lines!r}")
    return found[0]


def _base(redis_url: str, queue: str, prefix: str) -> JsonObj:
    return {"redisUrl": redis_url, "queue": queue, "prefix": prefix}


async def run_producer(
    redis_url: str,
    queue: str,
    jobs: Sequence[Mapping[str, Any]],
    *,
    major: int,
    prefix: str = "bull",
    chunk: int = 1000,
    timeout_s: float = 120.0,
) -> list[str]:
    """Add ``jobs`` (``{"name", "data", "opts"}``) with Node ``Queue.addBulk``; return ids."""
    args = {**_base(redis_url, queue, prefix), "jobs": [dict(j) for j in jobs], "chunk": chunk}
    lines = await run_node_script("producer.mjs", args, major=major, timeout_s=timeout_s)
    ids: list[str] = _one("producer.mjs", lines, "added")["ids"]
    return ids


async def run_producer_generated(
    redis_url: str,
    queue: str,
    count: int,
    *,
    major: int,
    name: str = "job",
    data: Mapping[str, Any] | None = None,
    opts: Mapping[str, Any] | None = None,
    prefix: str = "bull",
    chunk: int = 1000,
    timeout_s: float = 300.0,
) -> int:
    """Add ``count`` jobs named ``name`` (data gets an ``i`` field) without echoing ids."""
    generate = {"count": count, "name": name, "data": dict(data or {}), "opts": dict(opts or {})}
    args = {
        **_base(redis_url, queue, prefix),
        "generate": generate,
        "chunk": chunk,
        "printIds": False,
    }
    lines = await run_node_script("producer.mjs", args, major=major, timeout_s=timeout_s)
    added: int = _one("producer.mjs", lines, "added")["count"]
    return added


@dataclass(frozen=True)
class RetryJobsResult:
    elapsed_ms: float
    before: dict[str, int]
    after: dict[str, int]


async def run_retry_jobs(
    redis_url: str,
    queue: str,
    *,
    major: int,
    prefix: str = "bull",
    state: str = "failed",
    count: int = 1000,
    timestamp: int | None = None,
    timeout_s: float = 300.0,
) -> RetryJobsResult:
    """BullMQ's own ``Queue.retryJobs({state, count, timestamp})``, timed in Node."""
    args: JsonObj = {**_base(redis_url, queue, prefix), "state": state, "count": count}
    if timestamp is not None:
        args["timestamp"] = timestamp
    lines = await run_node_script("retry_jobs.mjs", args, major=major, timeout_s=timeout_s)
    out = _one("retry_jobs.mjs", lines, "retried")
    return RetryJobsResult(float(out["elapsedMs"]), out["before"], out["after"])


async def get_counts(
    redis_url: str, queue: str, *, major: int, prefix: str = "bull"
) -> tuple[dict[str, int], bool]:
    """Node ``Queue.getJobCounts()`` over all states, and ``Queue.isPaused()``."""
    lines = await run_node_script("counts.mjs", _base(redis_url, queue, prefix), major=major)
    out = _one("counts.mjs", lines, "counts")
    return out["counts"], bool(out["isPaused"])


async def _pause(action: str, redis_url: str, queue: str, major: int, prefix: str) -> bool:
    args = {**_base(redis_url, queue, prefix), "action": action}
    lines = await run_node_script("pause.mjs", args, major=major)
    return bool(_one("pause.mjs", lines, "paused" if action == "pause" else "resumed")["isPaused"])


async def pause_queue(redis_url: str, queue: str, *, major: int, prefix: str = "bull") -> None:
    """Node ``Queue.pause()`` (BullMQ 5: RENAME wait->paused + flag; 6: flag only)."""
    if not await _pause("pause", redis_url, queue, major, prefix):
        raise NodeScriptError(f"queue {queue!r} not paused after Queue.pause()")


async def resume_queue(redis_url: str, queue: str, *, major: int, prefix: str = "bull") -> None:
    """Node ``Queue.resume()``."""
    if await _pause("resume", redis_url, queue, major, prefix):
        raise NodeScriptError(f"queue {queue!r} still paused after Queue.resume()")


@dataclass(frozen=True)
class FailRule:
    """Fail a job when its name equals ``name`` and/or every ``data`` field matches."""

    message: str
    name: str | None = None
    data: Mapping[str, Any] | None = None
    #: Lines the worker writes with ``job.log()`` before it throws.
    logs: Sequence[str] = ()
    #: Then this many lines ``line <k> of <id>``.
    log_lines: int = 0

    def to_json(self) -> JsonObj:
        if self.name is None and self.data is None:
            raise ValueError("a FailRule needs a name or data criterion")
        out: JsonObj = {"message": self.message}
        if self.name is not None:
            out["name"] = self.name
        if self.data is not None:
            out["data"] = dict(self.data)
        if self.logs:
            out["logs"] = list(self.logs)
        if self.log_lines:
            out["logLines"] = self.log_lines
        return out


@dataclass(frozen=True)
class ProcessedJob:
    """One processed attempt, as reported by the Node worker's completed/failed events."""

    id: str
    name: str
    data: Any
    opts: dict[str, Any]
    attempts_made: int  # after this attempt (``atm``)
    attempts_made_before: int | None  # ``job.attemptsMade`` seen by the processor
    attempts_started: int | None
    outcome: str  # "completed" | "failed"
    failed_reason: str | None
    final: bool  # completed, or failed with no attempts left
    raw: JsonObj = field(repr=False, compare=False)

    @classmethod
    def from_line(cls, line: JsonObj) -> ProcessedJob:
        return cls(
            id=str(line["id"]),
            name=line["name"],
            data=line["data"],
            opts=line.get("opts") or {},
            attempts_made=int(line["attemptsMade"]),
            attempts_made_before=line.get("attemptsMadeBefore"),
            attempts_started=line.get("attemptsStarted"),
            outcome=line["outcome"],
            failed_reason=line.get("failedReason"),
            final=bool(line["final"]),
            raw=line,
        )


class NodeWorker:
    """A real Node BullMQ ``Worker`` in a subprocess, collecting processed attempts.

    ``async with NodeWorker(url, "q", major=6, fail=[FailRule("429", name="x")]) as w:``
    enters once the worker is connected and running; ``await w.wait_for_final(ids)``
    waits for final outcomes. Leaving the block sends SIGTERM (active jobs finish)
    and waits for the summary. ``max_jobs``/``idle_ms`` make the worker stop by
    itself (``await w.wait_exit()``). A paused queue is simply not consumed.
    """

    def __init__(
        self,
        redis_url: str,
        queue: str,
        *,
        major: int,
        prefix: str = "bull",
        fail: Iterable[FailRule] = (),
        concurrency: int = 1,
        process_ms: int = 0,
        max_jobs: int | None = None,
        idle_ms: int | None = None,
        timeout_ms: int = 120_000,
        ready_timeout: float = 30.0,
        lock_duration_ms: int | None = None,
    ) -> None:
        _check_major(major)
        self.major = major
        self.queue = queue
        self.args: JsonObj = {
            **_base(redis_url, queue, prefix),
            "fail": [rule.to_json() for rule in fail],
            "concurrency": concurrency,
            "processMs": process_ms,
            "timeoutMs": timeout_ms,
        }
        if max_jobs is not None:
            self.args["maxJobs"] = max_jobs
        if idle_ms is not None:
            self.args["idleMs"] = idle_ms
        if lock_duration_ms is not None:
            self.args["lockDurationMs"] = lock_duration_ms
        self.ready_timeout = ready_timeout
        self.processed: list[ProcessedJob] = []
        self.summary: JsonObj | None = None
        self.errors: list[JsonObj] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr = bytearray()
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._eof = False

    async def __aenter__(self) -> NodeWorker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop(raise_on_error=exc is None)

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    async def start(self) -> None:
        node = node_available()
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(INTEROP_DIR / "worker.mjs"),
            json.dumps(self.args),
            cwd=INTEROP_DIR,
            env=_env(self.major),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self._ready.is_set() or self._eof),
                    self.ready_timeout,
                )
            except TimeoutError:
                await self.stop(raise_on_error=False)
                raise NodeScriptError(
                    f"worker.mjs (BullMQ {self.major}) not ready after {self.ready_timeout}s: "
                    f"{self.stderr[-4000:]}"
                ) from None
        if not self._ready.is_set():
            await self.stop(raise_on_error=False)
            raise NodeScriptError(
                f"worker.mjs (BullMQ {self.major}) exited before ready: {self.stderr[-4000:]}"
            )

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async for raw in self._proc.stdout:
                if not raw.strip():
                    continue
                line = json.loads(raw)
                event = line.get("event")
                async with self._changed:
                    if event == "processed":
                        self.processed.append(ProcessedJob.from_line(line))
                    elif event == "ready":
                        self._ready.set()
                    elif event == "summary":
                        self.summary = line
                    elif event == "error":
                        self.errors.append(line)
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._eof = True
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while chunk := await self._proc.stderr.read(65536):
            self._stderr += chunk

    async def _wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate() or self._eof), timeout_s)
            except TimeoutError:
                raise NodeScriptError(
                    f"timed out after {timeout_s}s waiting for {what}; processed so far: "
                    f"{[(p.id, p.outcome) for p in self.processed]}; stderr: {self.stderr[-2000:]}"
                ) from None
            if not predicate():
                raise NodeScriptError(
                    f"worker exited while waiting for {what}; summary {self.summary}; "
                    f"stderr: {self.stderr[-4000:]}"
                )

    async def wait_for(self, count: int, *, timeout_s: float = 30.0) -> list[ProcessedJob]:
        """Wait until at least ``count`` attempts have been reported."""
        await self._wait(lambda: len(self.processed) >= count, timeout_s, f"{count} attempts")
        return list(self.processed)

    def final_outcomes(self) -> dict[str, ProcessedJob]:
        """The last final attempt of each job id, in report order."""
        return {p.id: p for p in self.processed if p.final}

    async def wait_for_final(self, ids: Iterable[str], *, timeout_s: float = 30.0) -> dict[str, ProcessedJob]:
        """Wait until each of ``ids`` has a final outcome; return those outcomes."""
        wanted = set(ids)
        await self._wait(
            lambda: wanted <= self.final_outcomes().keys(), timeout_s, f"final outcomes of {wanted}"
        )
        finals = self.final_outcomes()
        return {i: finals[i] for i in wanted}

    async def wait_exit(self, *, timeout_s: float = 60.0) -> JsonObj:
        """Wait for a self-stopping worker (``max_jobs``/``idle_ms``) to exit; return summary."""
        assert self._proc is not None
        try:
            await asyncio.wait_for(self._proc.wait(), timeout_s)
        except TimeoutError:
            raise NodeScriptError(f"worker did not exit within {timeout_s}s") from None
        return await self.stop()

    async def kill(self) -> None:
        """SIGKILL the worker: it dies holding its active jobs, their locks left to expire
        (what an OOM-killed or evicted pod does). Its connections close with the process."""
        proc = self._proc
        if proc is None:
            raise NodeScriptError("worker was never started")
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, *, timeout_s: float = 30.0, raise_on_error: bool = True) -> JsonObj:
        """SIGTERM the worker (graceful close), wait, and return the summary line."""
        proc = self._proc
        if proc is None:
            raise NodeScriptError("worker was never started")
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if raise_on_error and (proc.returncode != 0 or self.summary is None or self.errors):
            raise NodeScriptError(
                f"worker.mjs (BullMQ {self.major}) exited {proc.returncode}, summary "
                f"{self.summary}, errors {self.errors}: {self.stderr[-4000:]}"
            )
        return self.summary or {}


# --------------------------------------------------------------------------
# Reference replay: the recipe documented above, for tests and benchmarks.
# The operator has its own implementation in requeue.queues; this one exists
# so that the interop tests prove the recipe against real Node workers.
# --------------------------------------------------------------------------


async def pause_with_live_traffic(redis_url: str, queue: str, *, major: int) -> list[str]:
    """The app pauses its queue (BullMQ 5: ``RENAME wait paused``) and a live job arrives
    after the pause; returns the live job's ids."""
    await pause_queue(redis_url, queue, major=major)
    return await run_producer(
        redis_url, queue, [{"name": "email.send", "data": {"live": True}, "opts": {}}], major=major
    )


async def resume_then_run_each_once(
    redis_url: str, queue: str, *, major: int, ids: Sequence[str]
) -> dict[str, ProcessedJob]:
    """A Node worker on a paused queue runs nothing; after Node resumes the queue, each of
    ``ids`` runs exactly once. Both checks wait for the worker to block for new work (it
    looked and found nothing it may take), not for a guessed quiet time. Returns each id's
    final outcome."""
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with NodeWorker(redis_url, queue, major=major) as worker:
            await worker_waiting(redis, queue)
            assert worker.processed == []  # paused: nothing runs, replayed or live
            await resume_queue(redis_url, queue, major=major)
            outcomes = await worker.wait_for_final(list(ids), timeout_s=60)
            await worker_waiting(redis, queue)  # nothing left it could run a second time
    finally:
        await redis.aclose()
    runs = Counter(p.id for p in worker.processed)
    assert {i: runs[i] for i in ids} == dict.fromkeys(ids, 1)
    return outcomes


def reprocess_keys(queue: Any, job_id: str, *, target: str = "wait") -> list[str]:
    """KEYS for ``reprocessJob`` of a failed job (``target`` "wait" or "paused")."""
    k = queue.scripts.keys
    return [
        queue.scripts.toKey(job_id),
        k["events"],
        k["failed"],
        k[target],
        k["meta"],
        k["active"],
        k["marker"],
        k["prioritized"],
        k["pc"],
    ]


def reprocess_args(job_id: str, *, lifo: bool = False, reset_attempts: bool = True) -> list[str]:
    """ARGV for ``reprocessJob`` of a failed job."""
    reset = "1" if reset_attempts else "0"
    return [job_id, "RPUSH" if lifo else "LPUSH", "failedReason", "failed", reset, reset]


async def reprocess_failed(
    queue: Any,
    job_ids: Sequence[str],
    *,
    reset_attempts: bool = True,
    paused_aware: bool = False,
) -> list[int]:
    """Move failed ``job_ids`` back to wait/prioritized with Python bullmq's ``reprocessJob``.

    ``queue`` is a Python ``bullmq.Queue``. One pipeline for the batch (plus one
    for reading ``opts.lifo``). With ``paused_aware`` the batch runs in a
    ``WATCH meta`` transaction and, while the queue is paused, targets the
    ``paused`` list (safe with BullMQ 5's RENAME-on-resume); a concurrent
    pause/resume raises ``redis.exceptions.WatchError`` (nothing was moved).
    Returns one result code per id: 1 moved, -1 no such job, -3 not failed.
    """
    script = queue.redisConnection.commands["reprocessJob"]
    conn = queue.redisConnection.conn
    async with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(queue.scripts.toKey(job_id), "opts")
        raw_opts = await pipe.execute()
    lifo = [bool(json.loads(o).get("lifo")) if o else False for o in raw_opts]

    async with conn.pipeline(transaction=paused_aware) as pipe:
        target = "wait"
        if paused_aware:
            meta = queue.scripts.keys["meta"]
            await pipe.watch(meta)
            if await pipe.hexists(meta, "paused"):
                target = "paused"
            pipe.multi()
        for job_id, is_lifo in zip(job_ids, lifo, strict=True):
            await script(
                keys=reprocess_keys(queue, job_id, target=target),
                args=reprocess_args(job_id, lifo=is_lifo, reset_attempts=reset_attempts),
                client=pipe,
            )
        results = await pipe.execute()
    return [int(r) for r in results]
