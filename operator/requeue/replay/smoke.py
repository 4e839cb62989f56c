"""The smoke test after verification: one request through the whole path, then (optionally) its job.

Runs in the verifying stage once verification passed (:meth:`SmokeTesting.begin` takes over
the Succeeded that verification would have ended with). Its state is in the progress hash
(``Progress.SMOKE*``), so a resumed replay goes on where it was:

* ``sending``: each attempt is counted *before* it is sent, so a process killed mid-request
  still spends one of the ``1 + retries`` attempts (bounded even when it crashes every time).
  A request that passed is recorded (``waiting`` or ``passed``) before anything else; only a
  crash between the answer and that write sends it again.
* ``waiting``: looks for a job added to ``waitForJob.queue`` after the passing request was sent
  (its ``timestamp`` at or after ``smoke_sent_ms``; our clock against the producer's) that
  reached ``completed`` (pass) or ``failed`` (fail), scanning each set from a cursor a bounded
  page per step, until ``waitForJob.timeout``.
* ``passed``: never sent again; the replay ends Succeeded.

A denied destination (the gate destination policy) ends the replay at once with reason
``DestinationDenied``: retrying cannot change the operator's policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

from redis.asyncio import Redis

from requeue.api import DLQReplaySpec, ReplayPhase, parse_duration
from requeue.api.conditions import Reason, ReplayCondition
from requeue.api.smoke import MAX_SMOKE_TIMEOUT, SmokeTest, SmokeTestResult, SmokeTestStatus
from requeue.errors import SecretNotFound, SmokeTestFailed
from requeue.gates.destinations import DestinationDenied, DestinationPolicy, current_policy, host_port
from requeue.gates.http import HttpAnswer, exchange, judge
from requeue.gates.result import CheckFailed, RecordingSecrets, clip, read_secret
from requeue.queues import BullQueue, ReplayKeys
from requeue.queues.adapter import text
from requeue.queues.keys import Progress
from requeue.redact import redact_text, redact_url, sensitive_parts, split_url
from requeue.replay.matcher import to_ms
from requeue.replay.state import Finish, StepContext, int_field
from requeue.secrets import SecretSource

__all__ = ["BODY_EXCERPT", "JOB_PAGE", "SmokeTesting"]

#: Characters of the response body shown in a failed smoke test's message.
BODY_EXCERPT = 200
#: Completed/failed set members read per step while waiting for the triggered job.
JOB_PAGE = 500
#: Delay between two looks for the triggered job.
JOB_POLL = 1.0
#: Seconds a request may overrun its timeout (reading a Secret, closing the connection).
GRACE = 1.0
#: Longest wait between two steps while retryDelay runs (the lease is renewed by each step).
RETRY_POLL = 10.0

_SENDING, _WAITING, _PASSED = "sending", "waiting", "passed"


class _NoSecrets:
    """The secrets of an engine given none: every reference is missing (named, never guessed)."""

    async def get(self, ref: object) -> str:
        raise SecretNotFound(f"secret {getattr(ref, 'name', '?')}/{getattr(ref, 'key', '?')} not available")


class SmokeTesting:
    """Runs one replay's ``spec.verify.smokeTest``, a bounded piece per step."""

    def __init__(self, redis: Redis, keys: ReplayKeys) -> None:
        self.redis = redis
        self.keys = keys
        #: Where header and body values come from (the operator's Kubernetes Secrets, the CLI's flags).
        self.secrets: SecretSource = _NoSecrets()
        #: Where the request may go; None: the process's (``requeue run --gate-allow/--gate-deny``).
        self.policy: DestinationPolicy | None = None

    @staticmethod
    def wanted(spec: DLQReplaySpec) -> SmokeTest | None:
        """The smoke test of ``spec``, if it has one."""
        return spec.verify.smoke_test if spec.verify is not None else None

    @staticmethod
    def started(p: dict[str, str]) -> bool:
        """Whether verification passed and the smoke test took over."""
        return bool(p.get(Progress.SMOKE))

    async def begin(self, ctx: StepContext, p: dict[str, str], verified: str) -> float:
        """Verification passed with ``verified`` as its summary: the smoke test starts."""
        await self.redis.hset(
            self.keys.progress, mapping={Progress.SMOKE: _SENDING, Progress.SMOKE_VERIFIED: verified}
        )
        p[Progress.SMOKE] = _SENDING
        p[Progress.SMOKE_VERIFIED] = verified
        ctx.status.smoke_test = SmokeTestStatus(result=SmokeTestResult.SENDING)
        ctx.status.message = f"verified: {verified}; running the smoke test"
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.SMOKE_TESTING, ctx.status.message)
        return 0.0

    async def step(self, spec: DLQReplaySpec, smoke: SmokeTest, ctx: StepContext, p: dict[str, str]) -> float:
        """One attempt, one look for the job, or the end."""
        state = p.get(Progress.SMOKE)
        if state == _PASSED or (state == _WAITING and smoke.wait_for_job is None):
            raise self._passed(p, ctx)  # the request passed: never sent again (waitForJob dropped since)
        if state == _WAITING:
            return await self._look_for_job(spec, smoke, ctx, p)
        return await self._attempt(smoke, ctx, p)

    # -- the request

    async def _attempt(self, smoke: SmokeTest, ctx: StepContext, p: dict[str, str]) -> float:
        allowed = 1 + smoke.retries
        done = int_field(p, Progress.SMOKE_ATTEMPTS)
        if done >= allowed:  # the last attempt was cut off by a restart: it counted
            raise self._failed(ctx, done, p.get(Progress.SMOKE_ANSWER) or "no answer recorded")
        wait = (int_field(p, Progress.SMOKE_NEXT_MS) - to_ms(ctx.now)) / 1000
        if wait > 0:  # retryDelay, kept across restarts; stepped in short waits so the lease is renewed
            return min(wait, RETRY_POLL)
        attempt = await self.redis.hincrby(self.keys.progress, Progress.SMOKE_ATTEMPTS, 1)
        p[Progress.SMOKE_ATTEMPTS] = str(attempt)
        sent_ms = to_ms(ctx.now)
        try:
            passed, answer = await self._send(smoke)
        except DestinationDenied as exc:
            shown = f"{smoke.method} {redact_url(smoke.url)}"
            self._status(ctx, SmokeTestResult.FAILED, attempt, f"{shown}: {exc.message}")
            raise Finish(
                ReplayPhase.FAILED, DestinationDenied.reason, f"smoke test not sent: {shown}: {exc.message}"
            ) from None
        if passed:
            nxt = _WAITING if smoke.wait_for_job is not None else _PASSED
            recorded = {
                Progress.SMOKE.value: nxt,
                Progress.SMOKE_ANSWER.value: answer,
                Progress.SMOKE_SENT_MS.value: str(sent_ms),
                Progress.SMOKE_COMPLETED_FROM.value: str(sent_ms),
                Progress.SMOKE_FAILED_FROM.value: str(sent_ms),
            }
            await self.redis.hset(self.keys.progress, mapping=cast(dict[Any, Any], recorded))
            p.update(recorded)
            if nxt == _PASSED:
                raise self._passed(p, ctx)
            job = smoke.wait_for_job
            assert job is not None
            wanted = f"job {job.name!r}" if job.name else "a job"
            self._status(ctx, SmokeTestResult.WAITING_FOR_JOB, attempt, answer)
            ctx.status.message = (
                f"smoke test: {answer}; waiting up to {job.timeout} for {wanted} "
                f"in queue {job.queue} to complete"
            )
            ctx.condition(ReplayCondition.PROGRESSING, True, Reason.SMOKE_TESTING, ctx.status.message)
            return 0.0
        if attempt >= allowed:
            await self.redis.hset(self.keys.progress, Progress.SMOKE_ANSWER, answer)
            raise self._failed(ctx, attempt, answer)
        delay = parse_duration(smoke.retry_delay).total_seconds()
        next_ms = to_ms(ctx.now) + int(delay * 1000)
        await self.redis.hset(
            self.keys.progress, mapping={Progress.SMOKE_ANSWER: answer, Progress.SMOKE_NEXT_MS: next_ms}
        )
        p[Progress.SMOKE_NEXT_MS] = str(next_ms)
        self._status(ctx, SmokeTestResult.SENDING, attempt, answer)
        ctx.status.message = (
            f"smoke test attempt {attempt} of {allowed} failed: {answer}; again in {smoke.retry_delay}"
        )
        ctx.condition(ReplayCondition.PROGRESSING, True, Reason.SMOKE_TESTING, ctx.status.message)
        return min(delay, RETRY_POLL)

    async def _send(self, smoke: SmokeTest) -> tuple[bool, str]:
        """Whether the answer passed, and the answer in words (secrets redacted, body excerpt bounded).

        :raises DestinationDenied: the URL's host is refused before anything is sent.
        """
        policy = self.policy or current_policy()
        parts = split_url(smoke.url)
        if parts is not None and parts.hostport:
            host, port = host_port(parts.hostport, 443 if parts.scheme.lower() == "https" else 80)
            with contextlib.suppress(OSError):  # not resolvable: the request says so in its own words
                await policy.resolve(host, port)
        recording = RecordingSecrets(self.secrets)
        shown = f"{smoke.method} {redact_url(smoke.url)}"
        started = time.monotonic()
        spec = smoke
        if parse_duration(smoke.timeout).total_seconds() > MAX_SMOKE_TIMEOUT:
            spec = smoke.model_copy(update={"timeout": f"{MAX_SMOKE_TIMEOUT:g}s"})
        timeout = parse_duration(spec.timeout).total_seconds() + GRACE
        try:
            if smoke.body_from is not None:
                body = await read_secret(recording, smoke.body_from.secret_key_ref)
                spec = spec.model_copy(update={"body": body})
            async with asyncio.timeout(timeout):
                answer = await exchange(spec, recording, policy, started=started)
        except CheckFailed as failure:
            return False, self._redacted(failure.message, recording, smoke)
        except TimeoutError:
            return False, f"{shown}: no complete answer within {spec.timeout} (timeout)"
        result = judge(spec, answer, self._hidden(recording, smoke))
        hidden = self._hidden(recording, smoke)
        said = f"{shown}: {result.message}"
        if not result.healthy:
            said += _excerpt(answer, hidden)
        return result.healthy, self._redacted(said, recording, smoke)

    @staticmethod
    def _hidden(recording: RecordingSecrets, smoke: SmokeTest) -> list[str]:
        return [*recording.values, *sensitive_parts(smoke.url)]

    def _redacted(self, message: str, recording: RecordingSecrets, smoke: SmokeTest) -> str:
        return clip(redact_text(message, self._hidden(recording, smoke)))

    # -- the triggered job

    async def _look_for_job(
        self, spec: DLQReplaySpec, smoke: SmokeTest, ctx: StepContext, p: dict[str, str]
    ) -> float:
        job = smoke.wait_for_job
        assert job is not None
        q = BullQueue(self.redis, job.queue, prefix=spec.prefix)
        sent_ms = int_field(p, Progress.SMOKE_SENT_MS)
        failed = await self._scan(q, q.keys.failed, Progress.SMOKE_FAILED_FROM, sent_ms, job.name, p)
        attempts = int_field(p, Progress.SMOKE_ATTEMPTS)
        if failed is not None:
            job_id, reason = failed
            shown = clip(redact_text(reason, sensitive_parts(smoke.url)), BODY_EXCERPT)
            message = f"job {job_id} in queue {job.queue}, added after the request, failed: {shown}"
            self._status(ctx, SmokeTestResult.FAILED, attempts, message, job_id)
            raise Finish(
                ReplayPhase.FAILED, SmokeTestFailed.reason, self._final(p, f"smoke test failed: {message}")
            )
        done = await self._scan(q, q.keys.completed, Progress.SMOKE_COMPLETED_FROM, sent_ms, job.name, p)
        if done is not None:
            job_id = done[0]
            await self.redis.hset(self.keys.progress, Progress.SMOKE, _PASSED)
            answer = p.get(Progress.SMOKE_ANSWER, "")
            self._status(ctx, SmokeTestResult.PASSED, attempts, answer, job_id)
            ctx.event(
                "Normal", Reason.SMOKE_TEST_PASSED, f"{answer}; job {job_id} completed in queue {job.queue}"
            )
            raise Finish(
                ReplayPhase.SUCCEEDED,
                Reason.VERIFIED,
                self._final(p, f"smoke test passed: {answer}; job {job_id} completed in queue {job.queue}"),
            )
        deadline = sent_ms / 1000 + parse_duration(job.timeout).total_seconds()
        left = deadline - ctx.now.timestamp()
        if left <= 0:
            wanted = f"job named {job.name!r}" if job.name else "job"
            message = (
                f"no {wanted} added to queue {job.queue} after the request completed within {job.timeout}"
            )
            self._status(ctx, SmokeTestResult.FAILED, attempts, message)
            raise Finish(
                ReplayPhase.FAILED, SmokeTestFailed.reason, self._final(p, f"smoke test failed: {message}")
            )
        return max(0.05, min(JOB_POLL, left))

    async def _scan(
        self, q: BullQueue, zset: str, cursor_field: str, sent_ms: int, name: str | None, p: dict[str, str]
    ) -> tuple[str, str] | None:
        """The first job in ``zset`` (finished at or after the cursor) added at or after ``sent_ms``
        with the wanted name: its id and failure reason. Reads at most :data:`JOB_PAGE` members and
        moves the cursor on (inclusive: members finished in the same millisecond are read again)."""
        lowest = int_field(p, cursor_field) or sent_ms
        reply = await self.redis.zrangebyscore(zset, lowest, "+inf", start=0, num=JOB_PAGE, withscores=True)
        raw = cast(list[tuple[Any, float]], reply)
        if not raw:
            return None
        ids = [text(member) or "" for member, _ in raw]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(q.keys.job(job_id), ["timestamp", "name", "failedReason"])
            fields = await pipe.execute()
        for job_id, (stamp, job_name, reason) in zip(ids, fields, strict=True):
            try:
                added = int(float(text(stamp) or "0"))
            except ValueError:
                continue
            if added >= sent_ms and (name is None or text(job_name) == name):
                return job_id, text(reason) or "no failedReason"
        last = int(raw[-1][1])
        # a full page within one millisecond would be read again for ever: step past it
        nxt = last + 1 if len(raw) == JOB_PAGE and last == int(raw[0][1]) else last
        await self.redis.hset(self.keys.progress, cursor_field, nxt)
        p[cursor_field] = str(nxt)
        return None

    # -- the end

    def _passed(self, p: dict[str, str], ctx: StepContext) -> Finish:
        answer = p.get(Progress.SMOKE_ANSWER, "")
        attempts = int_field(p, Progress.SMOKE_ATTEMPTS)
        self._status(
            ctx,
            SmokeTestResult.PASSED,
            attempts,
            answer,
            ctx.status.smoke_test.job_id if ctx.status.smoke_test else None,
        )
        ctx.event("Normal", Reason.SMOKE_TEST_PASSED, answer)
        return Finish(ReplayPhase.SUCCEEDED, Reason.VERIFIED, self._final(p, f"smoke test passed: {answer}"))

    def _failed(self, ctx: StepContext, attempts: int, answer: str) -> Finish:
        self._status(ctx, SmokeTestResult.FAILED, attempts, answer)
        tries = "attempt" if attempts == 1 else "attempts"
        return Finish(
            ReplayPhase.FAILED,
            SmokeTestFailed.reason,
            f"smoke test failed after {attempts} {tries}: {answer}",
        )

    @staticmethod
    def _final(p: dict[str, str], smoke: str) -> str:
        verified = p.get(Progress.SMOKE_VERIFIED, "")
        return f"{verified}; {smoke}" if verified else smoke

    @staticmethod
    def _status(
        ctx: StepContext, result: SmokeTestResult, attempts: int, message: str, job_id: str | None = None
    ) -> None:
        ctx.status.smoke_test = SmokeTestStatus(
            result=result, attempts=attempts, message=message, job_id=job_id
        )


def _excerpt(answer: HttpAnswer, hidden: list[str]) -> str:
    """``; body: ...`` with the start of the body, secrets redacted before it is cut (a secret cut
    in half would no longer match whole), or nothing for an empty body."""
    shown = answer.body[: BODY_EXCERPT * 4].decode("utf-8", "replace")
    shown = " ".join(redact_text(shown, hidden).split())
    if not shown:
        return ""
    more = "…" if len(shown) > BODY_EXCERPT or answer.truncated or len(answer.body) > BODY_EXCERPT * 4 else ""
    return f"; body: {shown[:BODY_EXCERPT]}{more}"
