"""Evaluate a resource's gates: concurrently, each bounded by its timeout, with Argo-style thresholds.

Semantics (modelled on Argo Rollouts' analysis runs):

* every ``gatePolicy.interval`` all gates are checked at once; a check never
  takes longer than its gate's ``timeout`` plus :data:`GRACE` (a check that
  will not stop is abandoned and reported as timed out);
* a pass adds one to ``consecutiveSuccesses`` and zeroes ``consecutiveFailures``,
  a failure the other way round;
* a gate becomes healthy after ``successThreshold`` passes in a row and turns
  red after ``failureThreshold`` failures in a row; in between it keeps its
  previous ``healthy`` value, so one blip does not flap a running replay;
* a replay may start when :meth:`GateRunner.all_passed` and must hold while
  :meth:`GateRunner.any_red`.

The runner keeps no state of its own: the counters live in ``.status.gates``
and come back through ``previous``, so a restarted operator continues where
the last one stopped (DESIGN.md, principle 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from requeue.api.base import parse_duration
from requeue.api.gates import GatePolicy, GateSpec, GateStatus, GateType
from requeue.gates.http import check_http
from requeue.gates.postgres import check_postgres
from requeue.gates.redis import check_redis
from requeue.gates.result import GateResult, RecordingSecrets, clip
from requeue.metrics import GATE_CHECK_SECONDS, GATE_HEALTHY
from requeue.queues.connection import TlsOptions
from requeue.redact import redact_text, sensitive_parts
from requeue.secrets import SecretSource

if TYPE_CHECKING:
    from requeue.redis_target import RedisTarget

__all__ = ["GRACE", "GateRunner", "GatedSpec", "fold", "run_check", "runner_for"]

logger = logging.getLogger(__name__)

#: Seconds a check may overrun its timeout while it is being cancelled, before it is abandoned.
GRACE = 0.5

#: Checks abandoned after their timeout that have not finished cancelling yet (kept referenced).
_abandoned: set[asyncio.Task[GateResult]] = set()


async def run_check(
    gate: GateSpec,
    secrets: SecretSource,
    *,
    default_redis_url: str | None = None,
    default_redis_tls: TlsOptions | None = None,
) -> GateResult:
    """Check one gate: never raises (except on cancellation), never exceeds its timeout + :data:`GRACE`.

    A redis gate without ``urlSecretRef`` checks ``default_redis_url`` with ``default_redis_tls``.

    The message is redacted: no URL password and no value read from a Secret
    during this check can appear in it.
    """
    started = time.monotonic()
    recording = RecordingSecrets(secrets)
    check: Callable[[], Awaitable[GateResult]]
    if gate.redis is not None:
        redis_spec = gate.redis
        timeout = parse_duration(redis_spec.timeout).total_seconds()

        def check() -> Awaitable[GateResult]:
            return check_redis(
                redis_spec, recording, default_url=default_redis_url, default_tls=default_redis_tls
            )

    elif gate.postgres is not None:
        pg_spec = gate.postgres
        timeout = parse_duration(pg_spec.timeout).total_seconds()

        def check() -> Awaitable[GateResult]:
            return check_postgres(pg_spec, recording)

    else:
        assert gate.http is not None
        http_spec = gate.http
        timeout = parse_duration(http_spec.timeout).total_seconds()

        def check() -> Awaitable[GateResult]:
            return check_http(http_spec, recording)

    result = await _bounded(gate, check, timeout)
    secrets_seen = list(recording.values)
    if default_redis_url:
        secrets_seen.extend(sensitive_parts(default_redis_url))
    message = clip(redact_text(result.message, secrets_seen))
    return GateResult(result.healthy, message, time.monotonic() - started, result.misconfigured)


async def _bounded(gate: GateSpec, check: Callable[[], Awaitable[GateResult]], limit: float) -> GateResult:
    """Run ``check`` as a task; after ``limit`` + GRACE give up on it and report a timeout.

    Not ``asyncio.timeout``: that waits for the cancelled check to finish, and a
    driver may take its time cancelling (psycopg cancels the query on the server).
    """
    started = time.monotonic()

    async def guarded() -> GateResult:
        try:
            return await check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, not a broken dependency: still a result, never a crash
            logger.exception("gate %s: check raised", gate.name)
            return GateResult.fail(f"check failed unexpectedly: {type(exc).__name__}: {exc}")

    task = asyncio.ensure_future(guarded())
    try:
        done, _ = await asyncio.wait({task}, timeout=limit + GRACE)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    # The check ignored its own deadline (e.g. a driver cancelling a query on the server).
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.05)
    if not done:
        _abandoned.add(task)
        task.add_done_callback(_forget)
    logger.warning("gate %s: check overran its timeout of %.3gs and was abandoned", gate.name, limit)
    return GateResult.fail(f"no result within {limit:g}s (timeout)", time.monotonic() - started)


def _forget(task: asyncio.Task[GateResult]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


def fold(
    gate: GateSpec, previous: GateStatus | None, result: GateResult, policy: GatePolicy, now: datetime
) -> GateStatus:
    """The gate's new status: counters continued from ``previous``, ``healthy`` with hysteresis.

    ``healthy`` turns true after ``successThreshold`` passes in a row and false
    after ``failureThreshold`` failures in a row; otherwise it keeps its value.
    A ``previous`` of another type (the gate was redefined) is ignored.

    A result that says the check could not run (``misconfigured``: a missing Secret, a denied
    destination...) is no evidence about the dependency: ``healthy`` and the counters stay
    as they were (a new gate: not healthy, no passes, no failures) and ``misconfigured`` names
    the reason, so a red gate stays red and a green one green until a real check says otherwise.
    """
    if previous is not None and previous.type != gate.type:
        previous = None
    if result.misconfigured is not None:
        return GateStatus(
            name=gate.name,
            type=gate.type,
            healthy=previous.healthy if previous else False,
            message=result.message,
            latency_ms=round(result.latency * 1000, 3),
            last_checked_at=now,
            consecutive_successes=previous.consecutive_successes if previous else 0,
            consecutive_failures=previous.consecutive_failures if previous else 0,
            misconfigured=result.misconfigured.value,
        )
    successes = previous.consecutive_successes if previous else 0
    failures = previous.consecutive_failures if previous else 0
    was_healthy = previous.healthy if previous else False
    if result.healthy:
        successes, failures = successes + 1, 0
        healthy = was_healthy or successes >= policy.success_threshold
    else:
        successes, failures = 0, failures + 1
        healthy = was_healthy and failures < policy.failure_threshold
    return GateStatus(
        name=gate.name,
        type=gate.type,
        healthy=healthy,
        message=result.message,
        latency_ms=round(result.latency * 1000, 3),
        last_checked_at=now,
        consecutive_successes=successes,
        consecutive_failures=failures,
    )


class GateRunner:
    """Checks a resource's gates and folds the results into ``.status.gates``.

    Usage::

        runner = GateRunner(spec.gates, spec.gate_policy, secrets, default_redis_url=target.url,
                            default_redis_tls=target.tls, namespace=ns, owner=name)
        if runner.due(status.gates, now):
            status.gates = await runner.check(status.gates, now)
        if not runner.all_passed(status.gates): ...   # wait (until gatePolicy.timeout)

    :param default_redis_url: the resource's own Redis, for redis gates without ``urlSecretRef``.
    :param default_redis_tls: how to verify that Redis over TLS (``spec.redis.tls``: CA bundle,
        insecureSkipVerify); without it a ``rediss://`` server must have a publicly trusted certificate.
    :param namespace: and ``owner`` label the ``requeue_gate_healthy`` metric.
    """

    def __init__(
        self,
        gates: list[GateSpec],
        policy: GatePolicy,
        secrets: SecretSource,
        *,
        default_redis_url: str | None = None,
        default_redis_tls: TlsOptions | None = None,
        namespace: str = "",
        owner: str = "",
    ) -> None:
        self.gates = list(gates)
        self.policy = policy
        self.secrets = secrets
        self.default_redis_url = default_redis_url
        self.default_redis_tls = default_redis_tls
        self.namespace = namespace
        self.owner = owner

    @property
    def interval(self) -> timedelta:
        """``gatePolicy.interval``."""
        return parse_duration(self.policy.interval)

    async def check(self, previous: list[GateStatus], now: datetime) -> list[GateStatus]:
        """Check every gate concurrently and return their new statuses, in spec order.

        Counters continue from ``previous`` (matched by name; a gate whose type
        changed starts over). Takes about as long as the slowest gate, never
        more than its timeout + :data:`GRACE`. Sets the gate metrics.
        """
        results = await asyncio.gather(
            *(
                run_check(
                    g,
                    self.secrets,
                    default_redis_url=self.default_redis_url,
                    default_redis_tls=self.default_redis_tls,
                )
                for g in self.gates
            )
        )
        before = {s.name: s for s in previous}
        statuses = []
        for gate, result in zip(self.gates, results, strict=True):
            status = fold(gate, before.get(gate.name), result, self.policy, now)
            statuses.append(status)
            GATE_HEALTHY.labels(self.namespace, self.owner, gate.name, gate.type.value).set(
                1 if result.healthy else 0
            )
            GATE_CHECK_SECONDS.labels(gate.type.value).observe(result.latency)
            if result.misconfigured is not None:
                logger.warning(
                    "gate %s (%s) cannot be checked (%s): %s",
                    gate.name,
                    gate.type.value,
                    result.misconfigured.value,
                    result.message,
                )
            elif not result.healthy:
                logger.info("gate %s (%s) failed: %s", gate.name, gate.type.value, result.message)
        return statuses

    def all_passed(self, statuses: list[GateStatus]) -> bool:
        """Every gate has passed ``successThreshold`` times in a row (True when there are no gates);
        a gate whose check cannot run (``misconfigured``) has not."""
        by_name = self._current(statuses)
        return all(
            (s := by_name.get(g.name)) is not None
            and s.misconfigured is None
            and s.consecutive_successes >= self.policy.success_threshold
            for g in self.gates
        )

    def any_red(self, statuses: list[GateStatus]) -> bool:
        """Some gate has failed ``failureThreshold`` times in a row (a ``misconfigured`` one is not red)."""
        by_name = self._current(statuses)
        return any(
            (s := by_name.get(g.name)) is not None
            and s.misconfigured is None
            and s.consecutive_failures >= self.policy.failure_threshold
            for g in self.gates
        )

    def misconfigured(self, statuses: list[GateStatus]) -> list[GateStatus]:
        """Statuses of the gates whose last check could not run because of their configuration."""
        by_name = self._current(statuses)
        return [s for g in self.gates if (s := by_name.get(g.name)) is not None and s.misconfigured]

    def due(self, statuses: list[GateStatus], now: datetime) -> bool:
        """A check is due: some gate was never checked, or ``interval`` has passed since the oldest check.

        False when there are no gates (nothing to check).
        """
        wait = self.next_check_in(statuses, now)
        return wait is not None and wait <= 0

    def next_check_in(self, statuses: list[GateStatus], now: datetime) -> float | None:
        """Seconds until the next check is due (<= 0: now); None without gates. For ``RequeueAfter``."""
        if not self.gates:
            return None
        by_name = self._current(statuses)
        checked = [by_name[g.name].last_checked_at if g.name in by_name else None for g in self.gates]
        if any(c is None for c in checked):
            return 0.0
        oldest = min(_aware(c) for c in checked if c is not None)
        return (oldest + self.interval - _aware(now)).total_seconds()

    def failing(self, statuses: list[GateStatus]) -> list[GateStatus]:
        """Statuses of the gates whose last check failed, for condition messages."""
        by_name = self._current(statuses)
        return [
            s for g in self.gates if (s := by_name.get(g.name)) is not None and s.consecutive_failures > 0
        ]

    def summary(self, statuses: list[GateStatus]) -> str:
        """One line for a condition or Event, e.g. ``database: connection refused; redis: ok``."""
        by_name = self._current(statuses)
        parts = []
        for g in self.gates:
            s = by_name.get(g.name)
            if s is None or s.last_checked_at is None:
                parts.append(f"{g.name}: not checked yet")
            elif s.misconfigured:
                parts.append(f"{g.name}: cannot be checked ({s.misconfigured}): {s.message}")
            elif s.consecutive_failures:
                parts.append(f"{g.name}: {s.message}")
            else:
                parts.append(f"{g.name}: ok")
        return clip("; ".join(parts), 1024)

    def clear_metrics(self) -> None:
        """Remove this owner's gate series (when the resource is deleted or finished)."""
        for g in self.gates:
            with contextlib.suppress(KeyError):
                GATE_HEALTHY.remove(self.namespace, self.owner, g.name, g.type.value)

    def _current(self, statuses: list[GateStatus]) -> dict[str, GateStatus]:
        """Statuses of configured gates (a status of a renamed/retyped gate does not count)."""
        types: dict[str, GateType] = {g.name: g.type for g in self.gates}
        return {s.name: s for s in statuses if types.get(s.name) == s.type}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class GatedSpec(Protocol):
    """A spec with health gates: a DLQReplay's or a QueuePolicy's."""

    @property
    def gates(self) -> list[GateSpec]: ...

    @property
    def gate_policy(self) -> GatePolicy: ...


def runner_for(
    spec: GatedSpec,
    secrets: SecretSource,
    *,
    target: RedisTarget | None = None,
    namespace: str = "",
    owner: str = "",
) -> GateRunner | None:
    """The runner of ``spec``'s gates, or None if it has none. ``target`` is the resource's own
    Redis (URL and TLS), which a redis gate without ``urlSecretRef`` checks; it is not needed
    to only clear the gate metrics."""
    if not spec.gates:
        return None
    return GateRunner(
        spec.gates,
        spec.gate_policy,
        secrets,
        default_redis_url=target.url if target is not None else None,
        default_redis_tls=target.tls if target is not None else None,
        namespace=namespace,
        owner=owner,
    )
