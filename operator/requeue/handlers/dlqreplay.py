"""DLQReplay controller: kopf wiring around :class:`requeue.replay.ReplayEngine`.

No business logic lives here (DESIGN.md, Layers): the engine decides, this
module feeds it the spec and the last status, writes what it returns and tells
people about it.

* **A daemon per object** drives the engine's state machine: parse the live
  spec (so ``rate`` and ``suspend`` edits apply at the next step), ``step``,
  write ``.status`` through the status subresource (at most every
  :data:`STATUS_INTERVAL` seconds, at once on a phase change, an Event or the
  end), post the step's Events, then wait the step's delay on kopf's stop flag
  (an edit of the spec wakes it early). kopf applies a daemon's own ``patch``
  only when it returns, which is why status is written through the API here.
* **Restart safety** is the engine's: its state is ``.status`` plus Redis. The
  daemon reads ``.status`` once at start; a process killed at any line resumes.
* **Immutable fields.** ``redis``, ``prefix``, ``queue``, ``selector``,
  ``targetQueue`` and ``dryRun`` are pinned at the first step in the
  annotation ``requeue.dev/pinned-spec``; the CRD's CEL rules reject edits on
  API servers that run CEL, and on those that do not the daemon keeps using
  the pinned values and reports the edit (condition ``SpecIgnored``, reason
  ``ImmutableFieldChanged``, and a Warning Event). The check lives in the
  daemon rather than in an update handler so it also holds after a restart.
* **A finished replay never runs again**: its daemon only waits for
  ``ttlSecondsAfterFinished`` (then deletes the object) and returns; a later
  spec edit gets condition ``SpecIgnored`` (reason ``ReplayFinished``) and a
  Warning Event from :func:`replay_spec_changed`.
* **Deletion** (kopf's finalizer): :func:`replay_deleted` waits for the
  daemon's current step, then ``engine.cancel`` resumes the queue if this
  replay paused it, releases the lease and drops the snapshot.
* **Every failure has a name.** A missing Secret or key, refused credentials,
  an unreachable Redis or API server end up in condition ``Ready=False`` with
  the error's reason (``SecretNotFound``, ``AuthFailed``, ``RedisUnreachable``),
  ``.status.message`` and one Warning Event per distinct problem, retried with
  exponential backoff (:func:`requeue.handlers.daemon.backoff`) in
  the phase the replay was in: never a crash loop. An invalid spec before
  anything started ends in ``Failed`` (``SpecInvalid``).

Errors that escape a handler are mapped to kopf's in one function,
:func:`requeue.handlers.errors.to_kopf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import kopf
from pydantic import ValidationError

from requeue.api import DLQReplay, DLQReplaySpec, DLQReplayStatus, ReplayPhase, find_condition, set_condition
from requeue.api.loading import parse
from requeue.api.resources import GROUP, VERSION
from requeue.errors import (
    AuthFailed,
    PermanentError,
    RedisUnavailable,
    RedisUrlInvalid,
    RequeueError,
    SecretNotFound,
    SpecInvalid,
)
from requeue.gates import GateRunner
from requeue.handlers.daemon import (
    RETRY_MAX,
    Trouble,
    describe_failure,
    post_events,
    run_daemon,
    sleep,
)
from requeue.handlers.errors import to_kopf
from requeue.k8s.objects import delete_object, patch_annotations
from requeue.k8s.secrets import KubeSecrets
from requeue.k8s.status import patch_status
from requeue.metrics import REDIS_UP, REPLAY_JOBS, REPLAYS
from requeue.policy.budget import ReplayBudget
from requeue.redis_target import RedisTarget, open_redis
from requeue.replay import ReplayEngine, ReplayEvent, utcnow
from requeue.replay.state import changed_fields, spec_values

__all__ = [
    "PINNED_FIELDS",
    "PIN_ANNOTATION",
    "PLURAL",
    "ReplayDriver",
    "replay_daemon",
    "replay_deleted",
    "replay_spec_changed",
]

logger = logging.getLogger(__name__)

PLURAL = DLQReplay.INFO.plural
#: Annotation holding the spec fields a replay keeps for its whole life (JSON).
PIN_ANNOTATION = f"{GROUP}/pinned-spec"
#: Spec fields (wire names) that never change once a replay has taken its first step.
PINNED_FIELDS = ("redis", "prefix", "queue", "selector", "targetQueue", "dryRun")
#: Seconds between two status writes while nothing important changes.
STATUS_INTERVAL = 2.0
#: Attempts of the deletion cleanup before kopf gives up and releases the finalizer anyway.
CLEANUP_RETRIES = 20
#: Key of :class:`ObjectState` in kopf's per-object memo.
_MEMO_KEY = "requeue.dlqreplay"
#: Job counters of the status, exported as requeue_replay_jobs_total{outcome=...} from their deltas.
#: (``replayed`` and ``skipped`` are counted by the engine as it moves jobs.)
_COUNTED = {"corrupt": "corrupt", "failed_again": "failed_again", "completed": "completed"}


# ---------------------------------------------------------------- per-object state


@dataclass
class ObjectState:
    """What the daemon and the handlers of one object share, in kopf's per-object memo.

    In memory only: after a restart everything is rebuilt from ``.status`` and Redis.
    """

    #: Held for a whole engine step plus its status write; the handlers take it too.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set by the update handler: the daemon's wait ends early and it re-reads the spec.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by the deletion handler: the daemon takes no further step.
    cancelled: bool = False
    #: The daemon's latest status (newer than the object's while writes are throttled).
    status: DLQReplayStatus | None = None


def _object_state(memo: Any) -> ObjectState:
    state = memo.get(_MEMO_KEY)
    if not isinstance(state, ObjectState):
        state = ObjectState()
        memo[_MEMO_KEY] = state
    return state


# ---------------------------------------------------------------- status and spec helpers


def load_status(raw: Mapping[str, Any] | None) -> DLQReplayStatus:
    """The object's ``.status`` as the model; an unreadable one counts as empty (Redis has the truth)."""
    try:
        return DLQReplayStatus.model_validate(dict(raw or {}))
    except ValidationError as exc:
        logger.warning("ignoring an unreadable .status (%d problems); rebuilding it from Redis",
                       exc.error_count())
        return DLQReplayStatus()


def status_wire(status: DLQReplayStatus) -> dict[str, Any]:
    """``.status`` for a merge patch: unset optionals as null, so stale values are removed."""
    return status.model_dump(mode="json", by_alias=True)


def pinned_values(spec: DLQReplaySpec) -> dict[str, Any]:
    """The pinned fields of ``spec`` (wire form; None for unset)."""
    return spec_values(spec, PINNED_FIELDS)


def with_pinned(spec: DLQReplaySpec, pinned: Mapping[str, Any]) -> tuple[DLQReplaySpec, list[str]]:
    """``spec`` with its pinned fields put back; also the names of the fields that had changed."""
    wire = spec.to_wire()
    changed = changed_fields(pinned, wire, PINNED_FIELDS)
    if not changed:
        return spec, []
    for key in PINNED_FIELDS:
        if pinned.get(key) is None:
            wire.pop(key, None)
        else:
            wire[key] = pinned[key]
    return DLQReplaySpec.model_validate(wire), changed


def read_pin(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pinned fields from the object's annotation, if it carries a readable one."""
    raw = (body.get("metadata", {}).get("annotations") or {}).get(PIN_ANNOTATION)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def cleanup_spec(body: Mapping[str, Any]) -> DLQReplaySpec:
    """The spec a deletion cleans up after: the live one with the pinned fields put back."""
    spec = parse(DLQReplaySpec, dict(body.get("spec") or {}))
    pin = read_pin(body)
    return with_pinned(spec, pin)[0] if pin else spec


def never_touched_redis(status: DLQReplayStatus) -> bool:
    """Nothing of this replay can be in Redis: it never took a step there."""
    ready = find_condition(status.conditions, "Ready")
    return (
        status.phase == ReplayPhase.PENDING
        and status.started_at is None
        and status.matched == 0
        and not status.queue_paused_by_replay
        and (ready is None or ready.reason in (SecretNotFound.reason, AuthFailed.reason,
                                               RedisUnavailable.reason, RedisUrlInvalid.reason,
                                               SpecInvalid.reason))
    )


async def open_engine(namespace: str, name: str, uid: str, spec: DLQReplaySpec, *,
                      budget: ReplayBudget | None = None) -> tuple[ReplayEngine, RedisTarget]:
    """Resolve the Redis URL (and TLS CA) from the namespace's Secrets, connect, and build the engine.

    :param budget: the per-job replay budget a QueuePolicy's child replay carries in its annotations.

    :raises SecretNotFound: the Secret or key does not exist.
    :raises AuthFailed: Redis refused the credentials.
    :raises RedisUnavailable: Redis cannot be reached.
    """
    redis, target = await open_redis(KubeSecrets(namespace), spec.redis)
    engine = ReplayEngine(redis, replay_id=uid, owner=f"{namespace}/{name}", budget=budget)
    return engine, target


# ---------------------------------------------------------------- metrics


_phases: dict[tuple[str, str], str] = {}
_namespaces: set[str] = set()


def observe_phase(namespace: str, name: str, phase: ReplayPhase | None) -> None:
    """Record (or, with None, forget) the phase of one replay and republish ``requeue_replays``."""
    if phase is None:
        _phases.pop((namespace, name), None)
    else:
        _phases[(namespace, name)] = phase.value
    _namespaces.add(namespace)
    for ns in _namespaces:
        for p in ReplayPhase:
            count = sum(1 for (n, _), v in _phases.items() if n == ns and v == p.value)
            REPLAYS.labels(ns, p.value).set(count)


def forget_replay(namespace: str, name: str) -> None:
    """A deleted replay: drop it from ``requeue_replays`` and remove its ``requeue_redis_up`` series,
    so dashboards and the RequeueRedisUnreachable alert do not keep a stale value."""
    observe_phase(namespace, name, None)
    with contextlib.suppress(KeyError):
        REDIS_UP.remove(namespace, name)


def count_jobs(namespace: str, name: str, queue: str, before: DLQReplayStatus,
               after: DLQReplayStatus) -> None:
    """Add what the status counters grew by to ``requeue_replay_jobs_total``."""
    for attr, outcome in _COUNTED.items():
        grown = getattr(after, attr) - getattr(before, attr)
        if grown > 0:
            REPLAY_JOBS.labels(namespace, name, queue, outcome).inc(grown)


# ---------------------------------------------------------------- the daemon


class ReplayDriver:
    """One daemon run for one DLQReplay: step the engine until the replay finishes or must stop."""

    def __init__(self, *, body: Any, namespace: str, name: str, uid: str, state: ObjectState,
                 stopped: Any) -> None:
        self.body = body
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.state = state
        self.stopped = stopped
        self.status = state.status or load_status(body.get("status"))
        self.engine: ReplayEngine | None = None
        self.redis_target: RedisTarget | None = None
        self.secrets: KubeSecrets | None = None
        self.spec: DLQReplaySpec | None = None  # the last valid spec (pinned fields applied)
        self.pin: dict[str, Any] | None = read_pin(body)
        self.pin_written = self.pin is not None
        self.trouble = Trouble(f"replay {namespace}/{name}")
        self.reported_generation: dict[str, int] = {}
        self.written: dict[str, Any] | None = None
        self.written_at = -math.inf
        self.counted = self.status.model_copy(deep=True)
        self.gone = False

    # -- the loop

    async def run(self) -> None:
        observe_phase(self.namespace, self.name, self.status.phase)
        try:
            while not self.status.phase.finished and not self._stopping():
                delay = await self.step_once()
                if self.gone or self.status.phase.finished:
                    break
                await self.sleep(delay)
        finally:
            await self.close()
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

    def _stopping(self) -> bool:
        return bool(self.stopped) or self.state.cancelled

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation") or 0)

    async def step_once(self) -> float:
        """One engine step and its status write; returns the seconds to wait before the next."""
        async with self.state.lock:
            if self._stopping():
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
                        events.append(ReplayEvent("Normal", "Recovered", f"{cleared} resolved"))
                    REDIS_UP.labels(self.namespace, self.name).set(0 if engine.redis_failures else 1)
                    post_events(self.body, events)
                    self.state.status = self.status
                    await self.write(force=bool(events) or before.phase != self.status.phase, delay=delay)
                    return delay
            self.state.status = self.status
            await self.write(force=before.phase != self.status.phase, delay=delay)
            return delay

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, less if the daemon is stopped or the spec changes."""
        await sleep(0.0 if self._stopping() else delay, self.stopped, self.state.wake)

    # -- spec

    async def current_spec(self) -> DLQReplaySpec | None:
        """The live spec with the pinned fields applied; reports invalid or immutable-field edits."""
        now = utcnow()
        gen = self.generation
        try:
            live = parse(DLQReplaySpec, dict(self.body.get("spec") or {}),
                         name=f"{self.namespace}/{self.name}")
        except SpecInvalid as exc:
            if self.spec is None and self.status.phase == ReplayPhase.PENDING and self.pin is None:
                self._fail(exc.reason, exc.message, now)
                return None
            message = f"{exc.message}; keeping the last valid spec" if self.spec else exc.message
            self._note_ignored(gen, exc.reason, message, now)
            return self.spec
        if self.pin is None:
            self.pin = pinned_values(live)
        if not self.pin_written:
            with contextlib.suppress(RequeueError):
                await patch_annotations(PLURAL, self.namespace, self.name,
                                        {PIN_ANNOTATION: json.dumps(self.pin, sort_keys=True)})
                self.pin_written = True
        try:
            spec, changed = with_pinned(live, self.pin)
        except ValidationError:  # an unreadable pin (edited by hand): trust the live spec
            spec, changed = live, []
        if changed:
            fields = ", ".join(f"spec.{key}" for key in changed)
            self._note_ignored(gen, "ImmutableFieldChanged",
                               f"{fields} cannot change once a replay has started; still using the "
                               "values it started with (create a new DLQReplay instead)", now)
        else:
            ignored = find_condition(self.status.conditions, "SpecIgnored")
            if ignored is not None and ignored.status == "True":
                self._set("SpecIgnored", False, "SpecAccepted", "the spec is valid and consistent", now)
        self.spec = spec
        return spec

    def _note_ignored(self, gen: int, reason: str, message: str, now: datetime) -> None:
        self._set("SpecIgnored", True, reason, message, now)
        if self.reported_generation.get(reason) != gen:
            self.reported_generation[reason] = gen
            kopf.event(self.body, type="Warning", reason="SpecIgnored", message=message)

    def _fail(self, reason: str, message: str, now: datetime) -> None:
        st = self.status
        st.phase = ReplayPhase.FAILED
        st.completed_at = now
        st.message = message
        st.observed_generation = self.generation
        self._set("Ready", False, reason, message, now)
        self._set("Progressing", False, "Finished", message, now)
        self._set("Succeeded", False, reason, message, now)
        kopf.event(self.body, type="Warning", reason=reason, message=message)

    def _set(self, type: str, status: bool, reason: str, message: str, now: datetime) -> None:
        self.status.conditions = set_condition(self.status.conditions, type=type, status=status,
                                               reason=reason, message=message,
                                               generation=self.generation, now=now)

    # -- Redis

    async def connect(self, spec: DLQReplaySpec) -> ReplayEngine:
        """The engine, connected on first use; its gates follow the live spec."""
        if self.engine is None:
            budget = ReplayBudget.from_annotations(self.body.get("metadata", {}).get("annotations"))
            self.engine, self.redis_target = await open_engine(self.namespace, self.name, self.uid, spec,
                                                            budget=budget)
            self.secrets = KubeSecrets(self.namespace)
        assert self.secrets is not None and self.redis_target is not None
        target = self.redis_target
        self.engine.gates = GateRunner(spec.gates, spec.gate_policy, self.secrets,
                                       default_redis_url=target.url, default_redis_tls=target.tls,
                                       namespace=self.namespace, owner=self.name) if spec.gates else None
        return self.engine

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            with contextlib.suppress(Exception):
                await engine.redis.aclose()

    async def on_trouble(self, exc: BaseException) -> float:
        """A named problem becomes ``Ready=False`` with its reason, one Warning Event, and a backoff."""
        reason, message = self.trouble.report(self.body, exc, logger)
        if isinstance(exc, RedisUnavailable | AuthFailed):
            REDIS_UP.labels(self.namespace, self.name).set(0)
        await self.close()  # reconnect (and re-read the Secret) next time
        delay = self.trouble.retry_delay()
        text = f"{message} (retrying in {delay:g}s)"
        self.status.message = text
        self._set("Ready", False, reason, text, utcnow())
        return delay

    # -- status

    async def write(self, *, force: bool = False, delay: float = 0.0) -> None:
        """Write ``.status`` if forced, if the last write is :data:`STATUS_INTERVAL` old, or before a
        long wait; never the same status twice."""
        wire = status_wire(self.status)
        if wire == self.written:
            return
        elapsed = time.monotonic() - self.written_at
        if not (force or self.status.phase.finished or elapsed >= STATUS_INTERVAL
                or delay >= STATUS_INTERVAL):
            return
        try:
            ok = await patch_status(PLURAL, self.namespace, self.name, wire)
        except RequeueError as exc:
            logger.warning("replay %s/%s: status not written: %s", self.namespace, self.name, exc.message)
            return
        if not ok:
            self.gone = True
            return
        self.written, self.written_at = wire, time.monotonic()
        observe_phase(self.namespace, self.name, self.status.phase)
        queue = self.spec.queue if self.spec else str(self.body.get("spec", {}).get("queue", ""))
        count_jobs(self.namespace, self.name, queue, self.counted, self.status)
        self.counted = self.status.model_copy(deep=True)

    async def flush(self) -> None:
        """Write the final status, retrying while the API server is unavailable."""
        for attempt in range(10):
            await self.write(force=True)
            if self.gone or self.written == status_wire(self.status):
                return
            await self.sleep(min(RETRY_MAX, 2.0 ** attempt))

    # -- the end

    async def expire(self) -> None:
        """After the end: write the final status, clear gate metrics, honour ttlSecondsAfterFinished."""
        await self.flush()
        if self.spec is not None and self.spec.gates:
            GateRunner(self.spec.gates, self.spec.gate_policy, KubeSecrets(self.namespace),
                       namespace=self.namespace, owner=self.name).clear_metrics()
        while not self._stopping():
            ttl = (self.body.get("spec") or {}).get("ttlSecondsAfterFinished")
            if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
                return
            finished = self.status.completed_at or utcnow()
            left = (finished + timedelta(seconds=ttl) - utcnow()).total_seconds()
            if left > 0:
                await self.sleep(left)
                continue
            try:
                await delete_object(PLURAL, self.namespace, self.name, uid=self.uid)
            except RequeueError as exc:
                logger.warning("replay %s/%s: ttl deletion failed: %s", self.namespace, self.name,
                               exc.message)
                await self.sleep(5.0)
                continue
            logger.info("replay %s/%s: deleted %ss after it finished", self.namespace, self.name, ttl)
            return


# ---------------------------------------------------------------- kopf handlers


@kopf.daemon(
    GROUP, VERSION, PLURAL, id="replay",
    # Our loop turns every failure into status and backoff; these bound what escapes it (bugs).
    errors=kopf.ErrorsMode.TEMPORARY, backoff=30, retries=20,
    # No `timeout`: a replay may legitimately run for hours; kopf's timeout counts from the first try.
    cancellation_backoff=5.0, cancellation_timeout=25.0,
)
async def replay_daemon(body: kopf.Body, namespace: str | None, name: str | None, uid: str | None,
                        memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Drive one DLQReplay until it finishes (then honour its ttl) or the daemon is stopped."""
    assert namespace and name and uid
    driver = ReplayDriver(body=body, namespace=namespace, name=name, uid=uid,
                          state=_object_state(memo), stopped=stopped)
    await run_daemon(driver.run(), logger, f"replay {namespace}/{name}")


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="spec-changed",
                retries=10, backoff=5, timeout=300)
async def replay_spec_changed(body: kopf.Body, status: kopf.Status, namespace: str | None,
                              name: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A spec edit: wake the daemon (rate/suspend apply now); after the end, report it as ignored."""
    assert namespace and name
    state = _object_state(memo)
    state.wake.set()
    async with state.lock:
        current = state.status or load_status(status)
        if not current.phase.finished:
            return  # the daemon applies it at its next step (and reports immutable-field edits)
        gen = int(body.get("metadata", {}).get("generation") or 0)
        ignored = find_condition(current.conditions, "SpecIgnored")
        if ignored is not None and ignored.observed_generation == gen and ignored.status == "True":
            return
        message = (f"spec changed (generation {gen}) after the replay ended as {current.phase.value}; "
                   "a finished DLQReplay never runs again: create a new one to replay more")
        current = current.model_copy(deep=True)
        current.conditions = set_condition(current.conditions, type="SpecIgnored", status=True,
                                           reason="ReplayFinished", message=message, generation=gen,
                                           now=utcnow())
        try:
            await patch_status(PLURAL, namespace, name, {"conditions": status_wire(current)["conditions"]})
        except RequeueError as exc:
            raise to_kopf(exc) from None
        state.status = current
        kopf.event(body, type="Warning", reason="SpecIgnored", message=message)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup",
                retries=CLEANUP_RETRIES, backoff=5, timeout=900)
async def replay_deleted(body: kopf.Body, status: kopf.Status, namespace: str | None, name: str | None,
                         uid: str | None, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Leave the queue as the replay found it: resume it if this replay paused it, release the lease,
    drop the snapshot. Waits for the daemon's current step first."""
    assert namespace and name and uid
    state = _object_state(memo)
    state.cancelled = True
    state.wake.set()
    async with state.lock:
        current = state.status or load_status(status)
        if current.phase.finished and not current.queue_paused_by_replay:
            forget_replay(namespace, name)
            return
        try:
            spec = cleanup_spec(body)
            engine, _target = await open_engine(namespace, name, uid, spec)
            try:
                result = await engine.cancel(spec, current)
            finally:
                await engine.redis.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, PermanentError) and never_touched_redis(current):
                forget_replay(namespace, name)
                return  # it never got as far as Redis: nothing to clean up
            # Only a transient error (Redis down, the lease held) may pass by itself: a URL that
            # cannot be parsed, refused credentials or a missing Secret would hold the object forever.
            if isinstance(exc, PermanentError) or retry + 1 >= CLEANUP_RETRIES:
                reason, message = describe_failure(exc)
                why = ("retrying cannot help" if isinstance(exc, PermanentError)
                       else f"{retry + 1} attempts failed")
                kopf.event(body, type="Warning", reason="CleanupFailed",
                           message=f"giving up cleaning up, {why} ({reason}: {message});"
                                   " the queue lease expires by itself within a minute; resume the queue "
                                   "by hand if this replay had paused it")
                logger.warning("replay %s/%s: giving up cleaning up, %s (%s: %s)", namespace, name, why,
                               reason, message)
                forget_replay(namespace, name)
                return
            raise to_kopf(exc) from None
        post_events(body, result.events)
        state.status = result.status
        with contextlib.suppress(RequeueError):
            await patch_status(PLURAL, namespace, name, status_wire(result.status))
        forget_replay(namespace, name)
