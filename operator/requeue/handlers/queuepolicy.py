"""QueuePolicy controller: kopf wiring around :func:`requeue.policy.evaluate`.

No business logic lives here (DESIGN.md, Layers): ``policy/`` observes,
decides and acts; this module feeds it the live spec, the last status, the
gate results and the in-process memory, then writes what it returns.

* **A daemon per policy** loops on ``spec.interval`` (read from the live spec
  at every turn, so edits of the interval or thresholds apply at the next
  evaluation; a spec edit also wakes the daemon at once): check the gates when
  due (:class:`~requeue.gates.GateRunner`, counters carried in
  ``.status.gates``), :func:`~requeue.policy.evaluate`, write ``.status``
  through the status subresource (unset optionals as explicit ``null``, so a
  merge patch removes e.g. a stale ``gatesGreenSince``), post the result's
  Events, and wait on kopf's stop flag.
* **In-process state per policy** (in kopf's per-object memo, as for
  DLQReplays: :class:`PolicyState`): the
  evaluation memory (events cursor, failure-rate buckets; None after a restart,
  then :func:`~requeue.policy.evaluate` loads it from Redis) and one
  :class:`~requeue.policy.SlackNotifier`, whose rate limit and queued lines
  live in memory. Everything else is in ``.status`` and Redis, so a restarted
  operator continues where the last one stopped.
* **Auto replays** are child DLQReplays created by :class:`KubeReplayCreator`
  with an owner reference to the policy (``controller: true``,
  ``blockOwnerDeletion: true``) and deterministic names; one that already
  exists counts as created, so a repeated evaluation never makes two. The
  child's annotations carry the per-job replay budget that its own controller
  hands to the replay engine.
* **Every failure has a name.** An invalid spec, a missing Secret, refused
  credentials or an unreachable Redis end in ``Ready=False`` with the error's
  reason and one Warning Event per distinct problem, retried with backoff;
  failed actions are Warning Events and ``lastActions[].result`` (evaluate
  never raises for them).
* **Deletion** (kopf's finalizer): :func:`policy_deleted` waits for the
  current evaluation, then :mod:`requeue.policy.finalize` resumes exactly the
  queues this policy paused (queues someone else paused stay paused) and drops
  the policy's memory from Redis; the handler drops its metric series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf
from redis.asyncio import Redis

from requeue.api import (
    DLQReplay,
    QueuePolicy,
    QueuePolicySpec,
    QueuePolicyStatus,
    SecretKeyRef,
    find_condition,
    parse_duration,
)
from requeue.api.base import ConditionStatus
from requeue.api.conditions import PolicyCondition, Reason
from requeue.api.loading import parse
from requeue.api.resources import GROUP, VERSION
from requeue.clock import utcnow
from requeue.errors import AuthFailed, RedisUnreachable, RequeueError, SentinelMasterUnknown, SpecInvalid
from requeue.gates import runner_for
from requeue.handlers.daemon import (
    RETRY_FIRST,
    DaemonDriver,
    ObjectState,
    describe_failure,
    object_state,
    post_events,
    register_daemon,
)
from requeue.handlers.errors import to_kopf
from requeue.k8s.owned import Owner, create_owned
from requeue.k8s.secrets import KubeSecrets
from requeue.k8s.status import patch_status
from requeue.policy import (
    BullQueueOps,
    ChildReplay,
    PolicyEvent,
    PolicyMemory,
    PolicyRef,
    SlackNotifier,
    evaluate,
    forget_metrics,
)
from requeue.policy import finalize as finalizing
from requeue.policy.decide import observation_failed, spec_rejected
from requeue.policy.escalation import forget_level
from requeue.policy.escalation_send import WebhookSender
from requeue.policy.series import export_unobserved, forget_policy
from requeue.redis_target import RedisTarget, open_redis, policy_queues

__all__ = [
    "PLURAL",
    "KubeReplayCreator",
    "PolicyDriver",
    "PolicyState",
    "policy_daemon",
    "policy_deleted",
    "policy_spec_changed",
]

logger = logging.getLogger(__name__)

PLURAL = QueuePolicy.INFO.plural
#: Shortest time between two evaluations, whatever ``spec.interval`` says (seconds).
MIN_INTERVAL = 0.5
#: Delay before an invalid spec is looked at again (an edit wakes the daemon earlier).
SPEC_RETRY = 60.0
#: Attempts of the deletion cleanup before kopf gives up and releases the finalizer anyway.
CLEANUP_RETRIES = 10
#: Ready reasons after which the daemon reconnects (re-reading the Secret: it may have been fixed).
_RECONNECT_REASONS = (RedisUnreachable.reason, AuthFailed.reason, SentinelMasterUnknown.reason)


# ---------------------------------------------------------------- per-policy state


@dataclass
class PolicyState(ObjectState[QueuePolicyStatus]):
    """The per-object state of a QueuePolicy: the shared one, plus what evaluations carry over."""

    #: The last evaluation's memory; None after a restart (evaluate then loads it from Redis).
    memory: PolicyMemory | None = None
    #: One notifier per policy: its rate limit and pending lines live here.
    notifier: SlackNotifier | None = None
    notifier_ref: SecretKeyRef | None = None
    #: Queues whose metric series this process exported for the policy.
    exported: set[str] = field(default_factory=set)


def status_wire(status: QueuePolicyStatus) -> dict[str, Any]:
    """``.status`` for a merge patch: unset top-level optionals as explicit null, so a merge patch
    removes a stale value (e.g. ``gatesGreenSince`` once a gate turns red).

    Lists (``queues``, ``gates``, ...) replace the stored ones whole, nulls and all, so their items
    leave unset optionals out: the schema does not allow null there.
    """
    full = status.model_dump(mode="json", by_alias=True)
    compact = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: compact.get(key) for key in full}


# ---------------------------------------------------------------- child replays


class KubeReplayCreator:
    """:class:`~requeue.policy.ReplayCreator` over the Kubernetes API: DLQReplays owned by the policy."""

    def __init__(self, namespace: str, policy_name: str, policy_uid: str) -> None:
        self.namespace = namespace
        self.owner = Owner(kind=QueuePolicy.INFO.kind, name=policy_name, uid=policy_uid)

    async def create(self, child: ChildReplay) -> str:
        created = await create_owned(
            DLQReplay.INFO.plural,
            DLQReplay.INFO.kind,
            self.namespace,
            child.name,
            self.owner,
            spec=child.spec.to_wire(),
            labels=child.labels,
            annotations=child.annotations,
        )
        if not created:
            logger.info(
                "policy %s/%s: DLQReplay %s already exists", self.namespace, self.owner.name, child.name
            )
        return child.name


# ---------------------------------------------------------------- the daemon


class PolicyDriver(DaemonDriver[QueuePolicyStatus]):
    """One daemon run for one QueuePolicy: evaluate every ``spec.interval`` until stopped."""

    plural = PLURAL
    noun = "policy"
    state_class = PolicyState
    log = logger
    status_model = QueuePolicyStatus

    def __init__(
        self, *, body: Any, namespace: str, name: str, uid: str, state: PolicyState, stopped: Any
    ) -> None:
        super().__init__(body=body, namespace=namespace, name=name, uid=uid, state=state, stopped=stopped)
        self.policy = state
        self.secrets = KubeSecrets(namespace)
        self.replays = KubeReplayCreator(namespace, name, uid)
        self.redis: Redis | None = None
        self.redis_target: RedisTarget | None = None
        self.connected_with: dict[str, Any] | None = None
        self.reported_invalid: int | None = None

    async def step_once(self) -> float:
        """One evaluation and its status write; returns the seconds to wait before the next."""
        async with self.state.lock:
            if self.stopping():
                return 0.0
            now = utcnow()
            spec = self.current_spec(now)
            if spec is None:
                await self.write()
                return SPEC_RETRY
            interval = max(MIN_INTERVAL, parse_duration(spec.interval).total_seconds())
            try:
                redis, target = await self.connection(spec)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.on_trouble(exc, now)
                await self.write()
                return min(delay, max(interval, RETRY_FIRST))
            gates = None
            runner = runner_for(spec, self.secrets, target=target, namespace=self.namespace, owner=self.name)
            if runner is not None:
                gates = self.status.gates
                if runner.due(gates, now):
                    gates = await runner.check(gates, now)
            result = await evaluate(
                PolicyRef(self.namespace, self.name, self.uid, self.generation),
                spec,
                self.status,
                redis=redis,
                ops=BullQueueOps(redis, spec.prefix, secrets=self.secrets),
                replays=self.replays,
                notifier=self.notifier(spec),
                gates=gates,
                memory=self.policy.memory,
                now=now,
                channels=WebhookSender(self.secrets) if spec.escalation is not None else None,
            )
            events = list(result.events)
            ready = find_condition(result.status.conditions, PolicyCondition.READY)
            unreachable = (
                ready is not None
                and ready.status == ConditionStatus.FALSE
                and ready.reason in _RECONNECT_REASONS
            )
            if unreachable:
                await self.close()  # reconnect next time, re-reading the Secret
                if self.policy.memory is not None:
                    self.policy.memory = result.memory
            else:
                self.policy.memory = result.memory
                cleared = self.trouble.clear()
                if cleared is not None:
                    events.append(PolicyEvent("Normal", Reason.RESOLVED, f"{cleared} resolved"))
            self.status = result.status
            self.state.status = self.status
            post_events(self.body, events)
            self.forget_removed_queues()
            await self.write()
            return interval

    # -- spec

    def current_spec(self, now: datetime) -> QueuePolicySpec | None:
        """The live spec; an invalid one is reported (Ready=False, one Event per generation)."""
        try:
            return parse(
                QueuePolicySpec, dict(self.body.get("spec") or {}), name=f"{self.namespace}/{self.name}"
            )
        except SpecInvalid as exc:
            gen = self.generation
            spec_rejected(self.status, exc.reason, exc.message, generation=gen, now=now)
            export_unobserved(self.namespace, self.name, exc.reason)
            if self.reported_invalid != gen:
                self.reported_invalid = gen
                post_events(self.body, [PolicyEvent("Warning", exc.reason, exc.message)])
                logger.warning("policy %s/%s: %s", self.namespace, self.name, exc.message)
            return None

    def notifier(self, spec: QueuePolicySpec) -> SlackNotifier | None:
        """The policy's Slack notifier (kept across evaluations for its rate limit), if configured."""
        ref = spec.alerts.slack_webhook_secret_ref
        if ref is None:
            self.policy.notifier = self.policy.notifier_ref = None
            return None
        if self.policy.notifier is None or self.policy.notifier_ref != ref:
            self.policy.notifier = SlackNotifier(self.secrets, ref)
            self.policy.notifier_ref = ref
        return self.policy.notifier

    # -- Redis

    async def connection(self, spec: QueuePolicySpec) -> tuple[Redis, RedisTarget]:
        """The Redis client, connected on first use and again when ``spec.redis`` changes."""
        # on a Redis Cluster the queues choose the node: another prefix or queue list may mean another
        wanted = {**spec.redis.to_wire(), "queues": [q.base for q in policy_queues(spec)]}
        if self.redis is not None and self.connected_with != wanted:
            await self.close()
        if self.redis is None:
            self.redis, self.redis_target = await open_redis(
                self.secrets, spec.redis, queues=policy_queues(spec)
            )
            self.connected_with = wanted
        assert self.redis_target is not None
        return self.redis, self.redis_target

    async def close(self) -> None:
        redis, self.redis = self.redis, None
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()

    def on_trouble(self, exc: BaseException, now: datetime) -> float:
        """A problem before evaluating: ``Ready=False`` with its reason, one Warning Event, a backoff."""
        reason, message = self.trouble.report(self.body, exc, logger)
        export_unobserved(self.namespace, self.name, reason)
        delay = self.trouble.retry_delay()
        observation_failed(self.status, reason, message, generation=self.generation, now=now)
        return delay

    # -- status and metrics

    async def write(self) -> None:
        await self.patch_status(status_wire(self.status))

    def forget_removed_queues(self) -> None:
        """Drop the metric series of queues no longer observed (removed from the spec)."""
        current = {q.name for q in self.status.queues}
        removed = self.policy.exported - current
        if removed:
            forget_metrics(PolicyRef(self.namespace, self.name, self.uid), sorted(removed))
        self.policy.exported = current


# ---------------------------------------------------------------- kopf handlers


#: Evaluate one QueuePolicy every ``spec.interval`` until the daemon is stopped.
policy_daemon = register_daemon(PolicyDriver, id="evaluate", cancellation_timeout=30.0)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="spec-changed", retries=3, backoff=1, timeout=60)
async def policy_spec_changed(memo: kopf.Memo, **_: Any) -> None:
    """A spec edit: wake the daemon, so a new interval or threshold applies now, not after the old one."""
    object_state(memo, PolicyState).wake.set()


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup", retries=CLEANUP_RETRIES, backoff=5, timeout=600)
async def policy_deleted(
    body: kopf.Body,
    status: kopf.Status,
    namespace: str | None,
    name: str | None,
    uid: str | None,
    memo: kopf.Memo,
    retry: int,
    **_: Any,
) -> None:
    """Leave the queues as the policy found them: resume those it paused; drop its memory and metrics.

    Waits for the daemon's current evaluation first. Without any queue to
    resume, an unreachable Redis does not hold the deletion up (the memory
    expires by itself).
    """
    assert namespace and name and uid
    state = object_state(memo, PolicyState)
    state.cancel()
    async with state.lock:
        current = state.latest(QueuePolicyStatus, status)
        decision = finalizing.plan(current, utcnow())
        try:
            spec = parse(QueuePolicySpec, dict(body.get("spec") or {}), name=f"{namespace}/{name}")
            redis, _target = await open_redis(KubeSecrets(namespace), spec.redis, queues=policy_queues(spec))
            try:
                await finalizing.finalize(redis, spec, decision, uid)
            finally:
                await redis.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason, message = describe_failure(exc)
            if not finalizing.give_up(exc, decision, attempt=retry + 1, attempts=CLEANUP_RETRIES):
                raise to_kopf(exc) from None
            resumes = finalizing.resumes(decision)
            if resumes:
                queues = ", ".join(a.queue for a in resumes)
                post_events(
                    body,
                    [
                        PolicyEvent(
                            "Warning",
                            Reason.CLEANUP_FAILED,
                            f"giving up after {retry + 1} attempts ({reason}: {message}); "
                            f"resume these queues by hand: {queues}",
                        )
                    ],
                )
            else:
                logger.info(
                    "policy %s/%s: memory not dropped (%s); it expires by itself", namespace, name, reason
                )
        else:
            post_events(body, list(decision.events))
            with contextlib.suppress(RequeueError):
                await patch_status(PLURAL, namespace, name, status_wire(decision.status))
        with contextlib.suppress(SpecInvalid):
            spec = parse(QueuePolicySpec, dict(body.get("spec") or {}))
            runner = runner_for(spec, KubeSecrets(namespace), namespace=namespace, owner=name)
            if runner is not None:
                runner.clear_metrics()
        forget_policy(namespace, name)
        forget_level(namespace, name)
