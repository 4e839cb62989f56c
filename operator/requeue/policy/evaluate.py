"""One QueuePolicy evaluation: observe -> decide -> act -> settle, behind small protocols.

The QueuePolicy daemon (``handlers/queuepolicy.py``, one per policy) only wires real
implementations::

    result = await evaluate(
        PolicyRef(namespace, name, uid, generation), spec, status,
        redis=redis,                       # requeue.queues.connect(url from the Secret)
        ops=BullQueueOps(redis, spec.prefix),
        replays=<ReplayCreator: creates the child DLQReplay with an owner reference>,
        notifier=SlackNotifier(secrets, spec.alerts.slack_webhook_secret_ref) or None,
        gates=<GateRunner results, thresholds applied>,
        memory=<result.memory of the previous evaluation, or None after a restart>,
    )
    write result.status with unset top-level fields as explicit nulls (merge-patch would
    keep a stale gatesGreenSince otherwise); emit result.events; keep result.memory

Nothing here raises for a Redis outage or a failed action: Redis errors become
``Ready=False`` (reason ``RedisUnreachable``/``AuthFailed``) and failed actions
become Warning Events and ``lastActions[].result`` (see
:func:`requeue.policy.decide.settle`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from redis import exceptions as rx
from redis.asyncio import Redis

from requeue.api.archive import ArchiveSpec
from requeue.api.common import Rate
from requeue.api.conditions import Reason
from requeue.api.gates import GateStatus
from requeue.api.policy import QueuePolicySpec, QueuePolicyStatus
from requeue.api.replay import DLQReplaySpec, ReplaySelector
from requeue.clock import utcnow
from requeue.errors import RequeueError
from requeue.metrics import ACTIONS, POLICY_EVALUATION_SECONDS
from requeue.policy.actions import Action, Alert, AutoReplay, Clean, Pause, PolicyEvent, Recover, Resume
from requeue.policy.archive import ArchivedClean, archived_clean, run_archived_clean
from requeue.policy.budget import ReplayBudget
from requeue.policy.collect import collect
from requeue.policy.decide import Decision, decide, queues_to_observe, settle
from requeue.policy.escalation import Delivery, count_deliveries, export_level, with_results
from requeue.policy.escalation_send import EscalationSender
from requeue.policy.job_series import export_finished
from requeue.policy.memory import load_memory, queue_save_memory
from requeue.policy.observe import Observation, PolicyMemory
from requeue.policy.series import export_observed, export_unobserved, forget_queues
from requeue.queues import BullQueue, map_redis_error
from requeue.queues.cluster import slot_tag
from requeue.queues.connection import forbidden_what
from requeue.queues.keys import QueueKeys
from requeue.queues.scripts import Scripts, register
from requeue.redact import redact_text
from requeue.secrets import SecretSource

__all__ = [
    "CLEAN_BATCH",
    "LABEL_AUTO_REPLAY",
    "LABEL_POLICY",
    "BullQueueOps",
    "ChildReplay",
    "EvaluationResult",
    "Notifier",
    "PolicyRef",
    "QueueOps",
    "ReplayCreator",
    "child_replay",
    "evaluate",
    "forget_metrics",
]

logger = logging.getLogger(__name__)

#: Jobs removed per BullMQ ``cleanJobsInSet`` call; a rule's ``limit`` is reached in batches of this.
CLEAN_BATCH = 500
#: Label on child DLQReplays: the QueuePolicy that created them.
LABEL_POLICY = "requeue.dev/policy"
#: Label on child DLQReplays: "true".
LABEL_AUTO_REPLAY = "requeue.dev/auto-replay"
#: Annotation on child DLQReplays: the queue (queue names are not always valid label values).
ANNOTATION_QUEUE = "requeue.dev/queue"
#: Annotation on child DLQReplays: start of the outage it replays.
ANNOTATION_OUTAGE = "requeue.dev/outage-started-at"

_REDIS_ERRORS: tuple[type[BaseException], ...] = (rx.RedisError, OSError)
_OBSERVE_ERRORS: tuple[type[BaseException], ...] = (rx.RedisError, OSError, RequeueError)


# ----------------------------------------------------------------- protocols


class QueueOps(Protocol):
    """Changes to queues; :class:`BullQueueOps` does them with BullMQ's scripts."""

    async def pause(self, queue: str) -> None: ...

    async def resume(self, queue: str) -> None: ...

    async def clean(self, queue: str, state: str, *, grace_ms: int, limit: int) -> int:
        """Remove up to ``limit`` jobs of ``state`` older than ``grace_ms``; return how many."""
        ...


@dataclass(frozen=True)
class ChildReplay:
    """A DLQReplay to create in the policy's namespace, owned by the policy."""

    name: str
    queue: str
    spec: DLQReplaySpec
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


class ReplayCreator(Protocol):
    """Creates child DLQReplays (in the operator: the Kubernetes API, owner reference to the policy)."""

    async def create(self, child: ChildReplay) -> str:
        """Create it and return its name; one that already exists (same name) counts as created."""
        ...


class Notifier(Protocol):
    """Tells people about breaches and recoveries (e.g. :class:`~requeue.policy.slack.SlackNotifier`)."""

    async def notify(self, policy: str, items: Sequence[Alert | Recover]) -> bool: ...


class BullQueueOps:
    """:class:`QueueOps` over :class:`requeue.queues.BullQueue` (scripts registered once)."""

    def __init__(self, redis: Redis, prefix: str = "bull", *, secrets: SecretSource | None = None) -> None:
        """:param secrets: where a clean's ``archive.dsnSecretRef`` is read (none: no archive)."""
        self._redis = redis
        self._prefix = prefix
        self._scripts: Scripts = register(redis)
        self._secrets = secrets

    def _queue(self, queue: str) -> BullQueue:
        return BullQueue(self._redis, queue, prefix=self._prefix, scripts=self._scripts)

    async def pause(self, queue: str) -> None:
        await self._queue(queue).pause()

    async def resume(self, queue: str) -> None:
        await self._queue(queue).resume()

    async def clean(self, queue: str, state: str, *, grace_ms: int, limit: int) -> int:
        return await self._queue(queue).clean(state, grace_ms=grace_ms, limit=limit)

    async def clean_archived(
        self, queue: str, state: str, *, grace_ms: int, limit: int, archive: ArchiveSpec
    ) -> ArchivedClean:
        """Archive each job to Postgres, then remove it (:mod:`requeue.policy.archive`)."""
        if self._secrets is None:
            raise RuntimeError("no SecretSource configured: cannot read archive.dsnSecretRef")
        cutoff_ms = round(time.time() * 1000) - grace_ms
        return await archived_clean(
            self._queue(queue),
            state,
            cutoff_ms=cutoff_ms,
            limit=limit,
            archive=archive,
            secrets=self._secrets,
        )


# ----------------------------------------------------------------- results


@dataclass(frozen=True)
class PolicyRef:
    """Which QueuePolicy this is (names children, keys its Redis state, labels metrics)."""

    namespace: str
    name: str
    uid: str
    generation: int = 0


@dataclass
class EvaluationResult:
    """What the handler writes and keeps."""

    #: Write this to ``.status``.
    status: QueuePolicyStatus
    #: Keep for the next evaluation (also stored in Redis).
    memory: PolicyMemory
    #: Emit these as Kubernetes Events on the policy.
    events: list[PolicyEvent]
    decision: Decision
    #: Redis round trips of this evaluation (observe, act, save memory).
    round_trips: int = 0
    #: Seconds this evaluation took.
    seconds: float = 0.0
    #: Actions that failed: index into ``decision.actions`` -> redacted error.
    failures: dict[int, str] = field(default_factory=dict)


def child_replay(
    policy: PolicyRef, spec: QueuePolicySpec, action: AutoReplay, *, tag: str = ""
) -> ChildReplay:
    """The child DLQReplay an :class:`AutoReplay` decision stands for.

    It re-checks the policy's gates before replaying, carries the per-job
    budget (:class:`~requeue.policy.budget.ReplayBudget`) as annotations, and
    selects only what failed during the outage. ``tag``: the queues' hash tag on a Redis
    Cluster (the budget key carries it, so the child's budget script stays in the queue's slot).
    """
    budget = ReplayBudget.for_policy(policy.uid, action.max_replays_per_job, slot_tag=tag)
    replay_spec = DLQReplaySpec(
        redis=spec.redis,
        prefix=spec.prefix,
        queue=action.queue,
        selector=ReplaySelector.model_validate(action.selector.model_dump()),
        rate=Rate.model_validate(action.rate.model_dump()),
        gates=list(spec.gates),
        gate_policy=spec.gate_policy,
        verify=action.verify,
    )
    return ChildReplay(
        name=action.name,
        queue=action.queue,
        spec=replay_spec,
        labels={LABEL_POLICY: policy.name, LABEL_AUTO_REPLAY: "true"},
        annotations={
            **budget.annotations(),
            ANNOTATION_QUEUE: action.queue,
            ANNOTATION_OUTAGE: action.outage_started_at.isoformat(),
        },
    )


async def _mark_paused(redis: Redis, policy: PolicyRef, memory: PolicyMemory, queue: str) -> None:
    """Record in Redis that this policy is about to pause ``queue``, before pausing it.

    ``pausedByPolicy`` reaches ``.status`` only after the pause; an operator killed in between
    would come back to a paused queue it takes for someone else's and never resume it. The mark
    in the memory hash (:func:`~requeue.policy.memory.load_memory` after a restart) closes that
    gap; a mark whose pause never happened is dropped by the next evaluation (queue not paused).
    """
    mark = replace(memory.get(queue), paused_by_policy=True)
    pipe = redis.pipeline(transaction=False)
    queue_save_memory(pipe, policy.uid, PolicyMemory({queue: mark}), slot_tag=slot_tag(redis))
    await pipe.execute()


def _with_pause_marks(memory: PolicyMemory, status: QueuePolicyStatus) -> PolicyMemory:
    """``memory`` with each queue's pause mark set to the settled ``pausedByPolicy``."""
    ours = {q.name for q in status.queues if q.paused_by_policy}
    return PolicyMemory(
        {name: replace(mem, paused_by_policy=name in ours) for name, mem in memory.queues.items()}
    )


def _error_text(exc: BaseException) -> str:
    if forbidden_what(exc) is not None:  # an ACL refusal inside an action names what to grant
        exc = map_redis_error(exc)
    if isinstance(exc, RequeueError):
        return redact_text(exc.message)
    return redact_text(f"{type(exc).__name__}: {exc}")


# ----------------------------------------------------------------- evaluate


async def evaluate(
    policy: PolicyRef,
    spec: QueuePolicySpec,
    status: QueuePolicyStatus | None,
    *,
    redis: Redis,
    ops: QueueOps,
    replays: ReplayCreator | None = None,
    notifier: Notifier | None = None,
    gates: Sequence[GateStatus] | None = None,
    memory: PolicyMemory | None = None,
    now: datetime | None = None,
    clean_batch: int = CLEAN_BATCH,
    channels: EscalationSender | None = None,
) -> EvaluationResult:
    """Observe every queue, decide, carry out what was decided, and return the settled status.

    :param memory: the previous result's memory; None loads it from Redis (one round trip).
    :param now: the evaluation time (tests pass their own); default: the current UTC time.
    :param clean_batch: jobs removed per ``cleanJobsInSet`` call (tests pass a small one).
    :param channels: sends escalation messages (``spec.escalation`` levels' ``notify``).
    """
    started = time.perf_counter()
    now = now or utcnow()
    names = queues_to_observe(spec, status)
    observation, memory, observe_trips = await _observe(
        redis, policy, spec, names, memory, now=now, gates=gates
    )
    decision = decide(
        spec, status, observation, memory, now=now, generation=policy.generation, policy_name=policy.name
    )
    acting = _Acting(policy, spec, redis, ops, replays, events=list(decision.events), clean_batch=clean_batch)
    await _carry_out(acting, decision)
    if notifier is not None and (acting.notify_items or observation.error is None):
        await _notify(acting, notifier)
    delivered, sample = await _escalation_effects(acting, decision, channels)
    settled = settle(decision, now=now, results=acting.results, failures=acting.failures)
    if decision.escalation is not None:
        settled.escalation, told = with_results(
            settled.escalation, now=now, delivered=delivered, sample=sample
        )
        acting.events.extend(told)
        count_deliveries(policy.namespace, policy.name, delivered)
    export_level(policy.namespace, policy.name, settled.escalation)
    new_memory = _with_pause_marks(decision.memory, settled)
    save_trips = 0
    if observation.error is None:
        save_trips = await _save_memory(redis, policy, new_memory, memory)
    if observation.error is None:
        export_observed(policy.namespace, policy.name, settled, list(observation.queues))
        export_finished(policy.namespace, policy.name, observation.queues, spec.metrics.max_job_names)
    else:
        export_unobserved(policy.namespace, policy.name, observation.error_reason)
    seconds = time.perf_counter() - started
    POLICY_EVALUATION_SECONDS.observe(seconds)
    return EvaluationResult(
        status=settled,
        memory=new_memory,
        events=acting.events,
        decision=decision,
        round_trips=observe_trips + acting.round_trips + save_trips,
        seconds=seconds,
        failures=acting.failures,
    )


async def _observe(
    redis: Redis,
    policy: PolicyRef,
    spec: QueuePolicySpec,
    names: Sequence[str],
    memory: PolicyMemory | None,
    *,
    now: datetime,
    gates: Sequence[GateStatus] | None,
) -> tuple[Observation, PolicyMemory, int]:
    """The observation, the memory it started from, and the Redis round trips that took.

    An unreachable Redis (or a refused password) is not an exception here but an
    observation with an ``error``: :func:`decide` turns it into ``Ready=False``
    and keeps the rest of the status as it was.
    """
    round_trips = 0
    try:
        if memory is None:
            memory = await load_memory(redis, policy.uid)
            round_trips += 1
        observation, stats = await collect(redis, spec, names, memory, now=now, gates=gates)
    except _OBSERVE_ERRORS as exc:
        err = exc if isinstance(exc, RequeueError) else map_redis_error(exc)
        observation = Observation(
            at=now,
            gates=tuple(gates) if gates is not None else None,
            error=_error_text(err),
            error_reason=err.reason,
        )
        return observation, memory or PolicyMemory(), round_trips
    return observation, memory, round_trips + stats.round_trips


@dataclass
class _Acting:
    """What carrying out one decision acts through, and what it has gathered so far.

    The actions run one after another and each adds to the same Events, results
    and failures (keyed by the action's index in ``decision.actions``, which
    :func:`settle` reads); one object handed to each step keeps that shared,
    ordered state explicit.
    """

    policy: PolicyRef
    spec: QueuePolicySpec
    redis: Redis
    ops: QueueOps
    replays: ReplayCreator | None
    #: The decision's Events, then a Warning for each failed action or notification.
    events: list[PolicyEvent]
    #: Index into ``decision.actions`` -> text for ``lastActions[].result``.
    results: dict[int, str] = field(default_factory=dict)
    #: Index into ``decision.actions`` -> redacted error.
    failures: dict[int, str] = field(default_factory=dict)
    #: Alerts and recoveries, sent in one notification after the remediations.
    notify_items: list[Alert | Recover] = field(default_factory=list)
    #: Redis round trips the actions made.
    round_trips: int = 0
    #: Jobs removed per ``cleanJobsInSet`` call.
    clean_batch: int = CLEAN_BATCH


async def _carry_out(acting: _Acting, decision: Decision) -> None:
    """Run what ``decision`` lets run (all of it, or in a dry run only alerts), in its order.

    Alerts and recoveries are only collected here, so that one notification
    carries them all rather than one webhook call each.
    """
    executable = set(map(id, decision.to_execute))
    for index, action in enumerate(decision.actions):
        if id(action) not in executable:
            continue
        if isinstance(action, Alert | Recover):
            acting.notify_items.append(action)
            _count_action(acting.policy, action.kind.value.lower(), action.queue)
            continue
        await _remediate(acting, index, action, decision.memory)


async def _remediate(acting: _Acting, index: int, action: Action, memory: PolicyMemory) -> None:
    """Carry out one remediation; a failure is reported and stops none of the others.

    A pause is marked in Redis first (:func:`_mark_paused`), so a restart between
    the two still knows the pause is this policy's to undo.
    """
    policy = acting.policy
    try:
        if isinstance(action, Pause):
            await _mark_paused(acting.redis, policy, memory, action.queue)
            acting.round_trips += 1
        text, calls = await _execute(
            policy,
            acting.spec,
            action,
            acting.ops,
            acting.replays,
            tag=slot_tag(acting.redis),
            clean_batch=acting.clean_batch,
        )
        acting.round_trips += calls
    except Exception as exc:  # every failure is reported, none stops the others
        message = _error_text(exc)
        acting.failures[index] = message
        logger.warning(
            "policy %s/%s: %s %s failed: %s",
            policy.namespace,
            policy.name,
            action.kind.value,
            action.queue,
            message,
        )
        acting.events.append(
            PolicyEvent(
                "Warning", Reason.ACTION_FAILED, f"{action.kind.value} {action.queue} failed: {message}"
            )
        )
        return
    if text is not None:
        acting.results[index] = text
    metric = "auto_replay" if isinstance(action, AutoReplay) else action.kind.value.lower()
    _count_action(policy, metric, action.queue)


async def _notify(acting: _Acting, notifier: Notifier) -> None:
    """Hand the alerts and recoveries to ``notifier``; a failure becomes a Warning Event.

    Called with an empty list too after a clean observation: that lets a
    rate-limited notifier send what it held back earlier.
    """
    policy = acting.policy
    try:
        await notifier.notify(policy.name, acting.notify_items)
    except Exception as exc:
        message = _error_text(exc)
        logger.warning("policy %s/%s: notification failed: %s", policy.namespace, policy.name, message)
        acting.events.append(PolicyEvent("Warning", Reason.NOTIFY_FAILED, message))


async def _escalation_effects(
    acting: _Acting, decision: Decision, channels: EscalationSender | None
) -> tuple[list[Delivery], dict[str, list[str]] | None]:
    """Send the escalation messages that are due and read the snapshot's failed-id sample.

    Returns each attempt's outcome (:func:`~requeue.policy.escalation.with_results` keeps the
    failed ones for a later evaluation) and the sample per queue (None when no snapshot was asked
    for). Each channel's messages go in order: after a failure the rest of that channel waits
    (untried); the other channels are still told. A failed snapshot read is a Warning Event.
    """
    outcome = decision.escalation
    delivered: list[Delivery] = []
    if outcome is None:
        return delivered, None
    policy = acting.policy
    down: set[str] = set()
    for notice in outcome.notices:
        name = notice.channel.name
        if name in down:
            continue
        try:
            if channels is None:
                raise RuntimeError("no sender configured")
            await channels.send(notice.channel.webhook_secret_ref, notice.text)
        except Exception as exc:  # reported; the other channels are still told
            message = _error_text(exc)
            down.add(name)
            delivered.append(Delivery(notice, message))
            logger.warning(
                "policy %s/%s: escalation message to %s failed (attempt %d): %s",
                policy.namespace,
                policy.name,
                name,
                notice.attempts + 1,
                message,
            )
            continue
        delivered.append(Delivery(notice))
    request = outcome.snapshot
    if request is None or not request.queues:
        return delivered, None
    keys = [QueueKeys(acting.spec.prefix, q).failed for q in request.queues]
    try:
        pipe = acting.redis.pipeline(transaction=False)
        for key in keys:
            # ZRANGE ... REV (6.2+), not redis-py's ZREVRANGE: the policy user has ZRANGE only
            pipe.execute_command("ZRANGE", key, 0, request.sample_size - 1, "REV")
        replies = await pipe.execute()
        acting.round_trips += 1
    except _REDIS_ERRORS as exc:
        message = _error_text(exc)
        acting.events.append(PolicyEvent("Warning", Reason.ACTION_FAILED, f"escalation snapshot: {message}"))
        return delivered, None
    sample = {
        q: [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        for q, ids in zip(request.queues, replies, strict=True)
    }
    return delivered, sample


async def _save_memory(redis: Redis, policy: PolicyRef, memory: PolicyMemory, previous: PolicyMemory) -> int:
    """Store ``memory`` (dropping queues only ``previous`` had); return the round trips made.

    A failure is only logged: the status is settled already, and the handler
    passes the kept ``result.memory`` to the next evaluation; Redis matters
    only after a restart.
    """
    try:
        pipe = redis.pipeline(transaction=False)
        queue_save_memory(pipe, policy.uid, memory, previous, slot_tag=slot_tag(redis))
        await pipe.execute()
    except _REDIS_ERRORS as exc:
        logger.warning(
            "policy %s/%s: could not store its memory: %s", policy.namespace, policy.name, _error_text(exc)
        )
        return 0
    return 1


async def _execute(
    policy: PolicyRef,
    spec: QueuePolicySpec,
    action: Action,
    ops: QueueOps,
    replays: ReplayCreator | None,
    *,
    tag: str = "",
    clean_batch: int = CLEAN_BATCH,
) -> tuple[str | None, int]:
    """Carry out one remediation (``tag``: the queues' hash tag on a Redis Cluster).

    Returns the text for ``lastActions[].result`` (None: no entry) and the
    number of Redis calls it made.
    """
    if isinstance(action, Pause):
        await ops.pause(action.queue)
        return "paused", 1
    if isinstance(action, Resume):
        await ops.resume(action.queue)
        return "resumed", 1
    if isinstance(action, AutoReplay):
        if replays is None:
            raise RuntimeError("no ReplayCreator configured: cannot create child DLQReplays")
        return await replays.create(child_replay(policy, spec, action, tag=tag)), 0
    if isinstance(action, Clean):
        grace_ms = int(action.grace.total_seconds() * 1000)
        if action.archive is not None:
            return await run_archived_clean(
                ops, action.queue, action.state, grace_ms=grace_ms, limit=action.limit, archive=action.archive
            )
        removed = calls = 0
        while removed < action.limit:
            batch = min(clean_batch, action.limit - removed)
            n = await ops.clean(action.queue, action.state, grace_ms=grace_ms, limit=batch)
            calls += 1
            removed += n
            if n < batch:
                break
        return (f"removed {removed}" if removed else None), calls
    return None, 0


def _count_action(policy: PolicyRef, action: str, queue: str) -> None:
    ACTIONS.labels(namespace=policy.namespace, policy=policy.name, action=action, queue=queue).inc()


def forget_metrics(policy: PolicyRef, queues: Sequence[str]) -> None:
    """Drop the series of queues the policy no longer watches (a deleted policy: see
    :func:`requeue.policy.series.forget_policy`)."""
    forget_queues(policy.namespace, policy.name, queues)
