"""DLQReplay controller: kopf wiring around :class:`requeue.replay.ReplayEngine`.

No business logic lives here (DESIGN.md, Layers): the engine decides, this
module feeds it the spec and the last status, writes what it returns and tells
people about it.

* **A daemon per object** drives the engine's state machine: parse the live
  spec (so ``rate``, ``suspend`` and ``cancel`` edits apply at the next step), ``step``,
  write ``.status`` through the status subresource (at most every
  :data:`STATUS_INTERVAL` seconds, at once on a phase change, an Event or the
  end), post the step's Events, then wait the step's delay on kopf's stop flag
  (an edit of the spec wakes it early). kopf applies a daemon's own ``patch``
  only when it returns, which is why status is written through the API here.
* **Restart safety** is the engine's: its state is ``.status`` plus Redis. The
  daemon reads ``.status`` once at start; a process killed at any line resumes.
* **Immutable fields** (:mod:`requeue.replay.pinning`) are pinned at the first
  step in the annotation ``requeue.dev/pinned-spec``; the daemon keeps using the
  pinned values and reports an edit (condition ``SpecIgnored``, reason
  ``ImmutableFieldChanged``, and a Warning Event). The check lives in the
  daemon rather than in an update handler so it also holds after a restart.
* **A finished replay never runs again**: its daemon only waits for
  ``ttlSecondsAfterFinished`` (:func:`requeue.replay.finalize.ttl_left`; then
  deletes the object) and returns; a later
  spec edit gets condition ``SpecIgnored`` (reason ``ReplayFinished``) and a
  Warning Event from :func:`replay_spec_changed`.
* **Deletion** (kopf's finalizer): :func:`replay_deleted` waits for the
  daemon's current step, then ``engine.cancel`` resumes the queue if this
  replay paused it, releases the lease and drops the snapshot; when to give up
  is :func:`requeue.replay.finalize.give_up_cleanup`.
* **Every failure has a name.** A missing Secret or key, refused credentials,
  an unreachable Redis or API server end up in condition ``Ready=False`` with
  the error's reason (``SecretNotFound``, ``AuthFailed``, ``RedisUnreachable``),
  ``.status.message`` and one Warning Event per distinct problem, retried with
  exponential backoff (:func:`requeue.handlers.daemon.backoff`) in
  the phase the replay was in: never a crash loop. An invalid spec before
  anything started ends in ``Failed`` (``SpecInvalid``, through
  :func:`requeue.replay.ending.fail`, the engine's own transition).

Errors that escape a handler are mapped to kopf's in one function,
:func:`requeue.handlers.errors.to_kopf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from requeue.api import DLQReplay, DLQReplaySpec, DLQReplayStatus, ReplayPhase, find_condition, set_condition
from requeue.api.conditions import Reason, ReplayCondition
from requeue.api.loading import parse
from requeue.api.resources import GROUP, VERSION
from requeue.clock import utcnow
from requeue.errors import AuthFailed, RedisUnreachable, RequeueError, SpecInvalid
from requeue.gates import runner_for
from requeue.handlers.daemon import (
    RETRY_MAX,
    DaemonDriver,
    ObjectState,
    describe_failure,
    object_state,
    post_events,
    register_daemon,
)
from requeue.handlers.errors import to_kopf
from requeue.k8s.objects import delete_object, patch_annotations
from requeue.k8s.secrets import KubeSecrets
from requeue.k8s.status import patch_status
from requeue.policy.budget import ReplayBudget
from requeue.policy.evaluate import LABEL_AUTO_REPLAY, LABEL_POLICY
from requeue.redis_target import RedisTarget, open_redis, replay_queues
from requeue.replay import ReplayEngine, ReplayEvent
from requeue.replay.ending import fail
from requeue.replay.finalize import cleanup_needed, give_up_cleanup, ttl_left
from requeue.replay.observed import (
    PHASES,
    ReplaySeries,
    count_jobs,
    forget_replay,
    redis_up,
    replay_finished,
)
from requeue.replay.pinning import (
    PIN_ANNOTATION,
    cleanup_spec,
    pin_text,
    pinned_values,
    read_pin,
    with_pinned,
)

__all__ = [
    "PLURAL",
    "ReplayDriver",
    "ReplayState",
    "replay_daemon",
    "replay_deleted",
    "replay_spec_changed",
]

logger = logging.getLogger(__name__)

PLURAL = DLQReplay.INFO.plural
#: Seconds between two status writes while nothing important changes.
STATUS_INTERVAL = 2.0
#: Attempts of the deletion cleanup before kopf gives up and releases the finalizer anyway.
CLEANUP_RETRIES = 20


@dataclass
class ReplayState(ObjectState[DLQReplayStatus]):
    """The per-object state of a DLQReplay (nothing beyond the shared one)."""


def status_wire(status: DLQReplayStatus) -> dict[str, Any]:
    """``.status`` for a merge patch: unset optionals as null, so stale values are removed."""
    return status.model_dump(mode="json", by_alias=True)


def replay_series(namespace: str, name: str, body: Any) -> ReplaySeries:
    """The labels of a replay's job counters: a QueuePolicy's auto replay counts under its
    policy (one series per outage would grow without bound), any other under its own name."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    policy = labels.get(LABEL_POLICY, "") if labels.get(LABEL_AUTO_REPLAY) == "true" else ""
    return ReplaySeries.of(namespace, name, policy)


async def open_engine(
    namespace: str,
    name: str,
    uid: str,
    spec: DLQReplaySpec,
    *,
    budget: ReplayBudget | None = None,
    series: ReplaySeries | None = None,
) -> tuple[ReplayEngine, RedisTarget]:
    """Resolve the Redis URL (and TLS CA) from the namespace's Secrets, connect, and build the engine.

    :param budget: the per-job replay budget a QueuePolicy's child replay carries in its annotations.
    :param series: the labels its job counters take (:func:`replay_series`).

    :raises SecretNotFound: the Secret or key does not exist.
    :raises AuthFailed: Redis refused the credentials.
    :raises RedisUnreachable: Redis cannot be reached.
    """
    redis, target = await open_redis(KubeSecrets(namespace), spec.redis, queues=replay_queues(spec))
    engine = ReplayEngine(redis, replay_id=uid, owner=f"{namespace}/{name}", budget=budget, series=series)
    return engine, target


# ---------------------------------------------------------------- the daemon


class ReplayDriver(DaemonDriver[DLQReplayStatus]):
    """One daemon run for one DLQReplay: step the engine until the replay finishes or must stop."""

    plural = PLURAL
    noun = "replay"
    state_class = ReplayState
    log = logger
    status_model = DLQReplayStatus

    def __init__(
        self, *, body: Any, namespace: str, name: str, uid: str, state: ReplayState, stopped: Any
    ) -> None:
        super().__init__(body=body, namespace=namespace, name=name, uid=uid, state=state, stopped=stopped)
        self.engine: ReplayEngine | None = None
        self.redis_target: RedisTarget | None = None
        self.secrets: KubeSecrets | None = None
        self.spec: DLQReplaySpec | None = None  # the last valid spec (pinned fields applied)
        self.pin: dict[str, Any] | None = read_pin(body)
        self.pin_written = self.pin is not None
        self.reported_generation: dict[str, int] = {}
        self.written: dict[str, Any] | None = None
        self.written_at = -math.inf
        self.counted = self.status.model_copy(deep=True)
        self.series = replay_series(namespace, name, body)

    # -- the loop

    def done(self) -> bool:
        return self.status.phase.finished

    async def run(self) -> None:
        PHASES.observe(self.namespace, self.name, self.status.phase)
        await self.loop()
        if self.gone:
            return
        if self.status.phase.finished:
            await self.expire()
            return
        # Stopped mid-run (shutdown, deletion): leave the latest status behind, unless the
        # deletion handler has taken over (its Cancelled status must not be overwritten).
        async with self.state.lock:
            if not self.state.cancelled:
                await self.write(force=True)

    async def step_once(self) -> float:
        """One engine step and its status write; returns the seconds to wait before the next."""
        async with self.state.lock:
            if self.stopping():
                return 0.0
            before = self.status
            spec = await self.current_spec()
            if spec is None:  # invalid: already reported (Failed, or waiting for a fix)
                delay = self.trouble.retry_delay()
            else:
                try:
                    engine = await self.connect(spec)
                    result = await engine.step(spec, self.status, generation=self.generation)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = await self.on_trouble(exc)
                else:
                    delay = float(result.delay)
                    self.status = result.status
                    events = list(result.events)
                    cleared = self.trouble.clear()
                    if cleared is not None:
                        events.append(ReplayEvent("Normal", Reason.RECOVERED, f"{cleared} resolved"))
                    redis_up(self.namespace, self.name, not engine.redis_failures)
                    post_events(self.body, events)
                    self.state.status = self.status
                    await self.write(force=bool(events) or before.phase != self.status.phase, delay=delay)
                    return delay
            self.state.status = self.status
            await self.write(force=before.phase != self.status.phase, delay=delay)
            return delay

    # -- spec

    async def current_spec(self) -> DLQReplaySpec | None:
        """The live spec with the pinned fields applied; reports invalid or immutable-field edits."""
        now = utcnow()
        gen = self.generation
        try:
            live = parse(
                DLQReplaySpec, dict(self.body.get("spec") or {}), name=f"{self.namespace}/{self.name}"
            )
        except SpecInvalid as exc:
            if self.spec is None and self.status.phase == ReplayPhase.PENDING and self.pin is None:
                self.status.observed_generation = gen
                event = fail(self.status, exc.reason, exc.message, generation=gen, now=now)
                post_events(self.body, [event])
                return None
            message = f"{exc.message}; keeping the last valid spec" if self.spec else exc.message
            self._note_ignored(gen, exc.reason, message, now)
            return self.spec
        if self.pin is None:
            self.pin = pinned_values(live)
        if not self.pin_written:
            with contextlib.suppress(RequeueError):
                await patch_annotations(
                    PLURAL, self.namespace, self.name, {PIN_ANNOTATION: pin_text(self.pin)}
                )
                self.pin_written = True
        try:
            spec, changed = with_pinned(live, self.pin)
        except ValidationError:  # an unreadable pin (edited by hand): trust the live spec
            spec, changed = live, []
        if changed:
            fields = ", ".join(f"spec.{key}" for key in changed)
            self._note_ignored(
                gen,
                Reason.IMMUTABLE_FIELD_CHANGED,
                f"{fields} cannot change once a replay has started; still using the "
                "values it started with (create a new DLQReplay instead)",
                now,
            )
        else:
            ignored = find_condition(self.status.conditions, ReplayCondition.SPEC_IGNORED)
            if ignored is not None and ignored.status == "True":
                set_condition(
                    self.status,
                    ReplayCondition.SPEC_IGNORED,
                    False,
                    Reason.SPEC_ACCEPTED,
                    "the spec is valid and consistent",
                    gen,
                    now,
                )
        self.spec = spec
        return spec

    def _note_ignored(self, gen: int, reason: Reason, message: str, now: datetime) -> None:
        set_condition(self.status, ReplayCondition.SPEC_IGNORED, True, reason, message, gen, now)
        if self.reported_generation.get(reason) != gen:
            self.reported_generation[reason] = gen
            post_events(self.body, [ReplayEvent("Warning", Reason.SPEC_IGNORED, message)])

    # -- Redis

    async def connect(self, spec: DLQReplaySpec) -> ReplayEngine:
        """The engine, connected on first use; its gates follow the live spec."""
        if self.engine is None:
            budget = ReplayBudget.from_annotations(self.body.get("metadata", {}).get("annotations"))
            self.engine, self.redis_target = await open_engine(
                self.namespace, self.name, self.uid, spec, budget=budget, series=self.series
            )
            self.secrets = KubeSecrets(self.namespace)
            self.engine.smoke.secrets = self.secrets
        assert self.secrets is not None and self.redis_target is not None
        self.engine.gates = runner_for(
            spec, self.secrets, target=self.redis_target, namespace=self.namespace, owner=self.name
        )
        return self.engine

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.redis.aclose()

    async def on_trouble(self, exc: BaseException) -> float:
        """A named problem becomes ``Ready=False`` with its reason, one Warning Event, and a backoff."""
        reason, message = self.trouble.report(self.body, exc, logger)
        if isinstance(exc, RedisUnreachable | AuthFailed):
            redis_up(self.namespace, self.name, False)
        await self.close()  # reconnect (and re-read the Secret) next time
        delay = self.trouble.retry_delay()
        text = f"{message} (retrying in {delay:g}s)"
        self.status.message = text
        set_condition(self.status, ReplayCondition.READY, False, reason, text, self.generation, utcnow())
        return delay

    # -- status

    async def write(self, *, force: bool = False, delay: float = 0.0) -> None:
        """Write ``.status`` if forced, if the last write is :data:`STATUS_INTERVAL` old, or before a
        long wait; never the same status twice."""
        wire = status_wire(self.status)
        if wire == self.written:
            return
        elapsed = time.monotonic() - self.written_at
        if not (
            force or self.status.phase.finished or elapsed >= STATUS_INTERVAL or delay >= STATUS_INTERVAL
        ):
            return
        if not await self.patch_status(wire):
            return
        self.written, self.written_at = wire, time.monotonic()
        PHASES.observe(self.namespace, self.name, self.status.phase)
        queue = self.spec.queue if self.spec else str(self.body.get("spec", {}).get("queue", ""))
        count_jobs(queue, self.series, self.counted, self.status)
        self.counted = self.status.model_copy(deep=True)

    async def flush(self) -> None:
        """Write the final status, retrying while the API server is unavailable."""
        for attempt in range(10):
            await self.write(force=True)
            if self.gone or self.written == status_wire(self.status):
                return
            await self.sleep(min(RETRY_MAX, 2.0**attempt))

    # -- the end

    async def expire(self) -> None:
        """After the end: write the final status, clear gate and Redis metrics, honour
        ttlSecondsAfterFinished."""
        await self.flush()
        replay_finished(self.namespace, self.name)
        if self.spec is not None:
            secrets = KubeSecrets(self.namespace)
            gates = runner_for(self.spec, secrets, namespace=self.namespace, owner=self.name)
            if gates is not None:
                gates.clear_metrics()
        while not self.stopping():
            ttl = (self.body.get("spec") or {}).get("ttlSecondsAfterFinished")
            left = ttl_left(ttl, self.status, utcnow())
            if left is None:
                return
            if left > 0:
                await self.sleep(left)
                continue
            try:
                await delete_object(PLURAL, self.namespace, self.name, uid=self.uid)
            except RequeueError as exc:
                logger.warning(
                    "replay %s/%s: ttl deletion failed: %s", self.namespace, self.name, exc.message
                )
                await self.sleep(5.0)
                continue
            logger.info("replay %s/%s: deleted %ss after it finished", self.namespace, self.name, ttl)
            return


# ---------------------------------------------------------------- kopf handlers


#: Drive one DLQReplay until it finishes (then honour its ttl) or the daemon is stopped.
replay_daemon = register_daemon(ReplayDriver, id="replay", cancellation_timeout=25.0)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="spec-changed", retries=10, backoff=5, timeout=300)
async def replay_spec_changed(
    body: kopf.Body, status: kopf.Status, namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A spec edit: wake the daemon (rate/suspend apply now); after the end, report it as ignored."""
    assert namespace and name
    state = object_state(memo, ReplayState)
    state.wake.set()
    async with state.lock:
        current = state.latest(DLQReplayStatus, status)
        if not current.phase.finished:
            return  # the daemon applies it at its next step (and reports immutable-field edits)
        gen = int(body.get("metadata", {}).get("generation") or 0)
        ignored = find_condition(current.conditions, ReplayCondition.SPEC_IGNORED)
        if ignored is not None and ignored.observed_generation == gen and ignored.status == "True":
            return
        message = (
            f"spec changed (generation {gen}) after the replay ended as {current.phase.value}; "
            "a finished DLQReplay never runs again: create a new one to replay more"
        )
        current = current.model_copy(deep=True)
        set_condition(
            current, ReplayCondition.SPEC_IGNORED, True, Reason.REPLAY_FINISHED, message, gen, utcnow()
        )
        try:
            await patch_status(PLURAL, namespace, name, {"conditions": status_wire(current)["conditions"]})
        except RequeueError as exc:
            raise to_kopf(exc) from None
        state.status = current
        post_events(body, [ReplayEvent("Warning", Reason.SPEC_IGNORED, message)])


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", retries=CLEANUP_RETRIES, backoff=5, timeout=900)
async def replay_deleted(
    body: kopf.Body,
    status: kopf.Status,
    namespace: str | None,
    name: str | None,
    uid: str | None,
    memo: kopf.Memo,
    retry: int,
    **_: Any,
) -> None:
    """Leave the queue as the replay found it: resume it if this replay paused it, release the lease,
    drop the snapshot. Waits for the daemon's current step first."""
    assert namespace and name and uid
    state = object_state(memo, ReplayState)
    state.cancel()
    async with state.lock:
        current = state.latest(DLQReplayStatus, status)
        if not cleanup_needed(current):
            forget_replay(namespace, name)
            return
        try:
            spec = cleanup_spec(body)
            engine, _target = await open_engine(
                namespace, name, uid, spec, series=replay_series(namespace, name, body)
            )
            try:
                result = await engine.cancel(spec, current)
            finally:
                await engine.redis.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = give_up_cleanup(exc, current, attempt=retry + 1, attempts=CLEANUP_RETRIES)
            if verdict is None:
                raise to_kopf(exc) from None
            if verdict.why:
                reason, message = describe_failure(exc)
                post_events(
                    body,
                    [
                        ReplayEvent(
                            "Warning",
                            Reason.CLEANUP_FAILED,
                            f"giving up cleaning up, {verdict.why} ({reason}: {message}); "
                            "the queue lease expires by itself within a minute; "
                            "resume the queue by hand if this replay had paused it",
                        )
                    ],
                )
                logger.warning(
                    "replay %s/%s: giving up cleaning up, %s (%s: %s)",
                    namespace,
                    name,
                    verdict.why,
                    reason,
                    message,
                )
            forget_replay(namespace, name)
            return
        post_events(body, result.events)
        state.status = result.status
        with contextlib.suppress(RequeueError):
            await patch_status(PLURAL, namespace, name, status_wire(result.status))
        forget_replay(namespace, name)
