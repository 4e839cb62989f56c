"""A tiny world for QueuePolicy decision tests: queues that can be paused, gates, a clock.

``PolicySim.step`` observes the world, calls the pure ``decide`` and applies the
decided actions to the world the way the real executor would (Pause pauses,
Resume resumes), carrying status and memory to the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from requeue.api.gates import GateStatus, GateType
from requeue.api.policy import QueuePolicySpec, QueuePolicyStatus
from requeue.policy.actions import Action, Pause, Resume
from requeue.policy.decide import Decision, decide, settle
from requeue.policy.escalation import Delivery, with_results
from requeue.policy.job_failures import CorruptCheck
from requeue.policy.latency import FinishedJob
from requeue.policy.observe import EventTally, Observation, PolicyMemory, QueueObservation

T0 = datetime(2025, 7, 16, 12, 0, tzinfo=UTC)


def make_spec(**overrides: Any) -> QueuePolicySpec:
    """A QueuePolicySpec from camelCase overrides on a minimal valid policy."""
    body: dict[str, Any] = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queues": ["default"],
    }
    body.update(overrides)
    return QueuePolicySpec.model_validate(body)


def gate(name: str, healthy: bool, message: str = "") -> GateStatus:
    return GateStatus(
        name=name,
        type=GateType.HTTP,
        healthy=healthy,
        message=message or ("ok" if healthy else "connection refused"),
    )


HTTP_GATE = {"name": "db", "http": {"url": "http://127.0.0.1:1/health"}}


@dataclass
class QueueWorld:
    waiting: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    delayed: int = 0
    prioritized: int = 0
    paused: bool = False
    #: who paused it: "policy", "other" or "" (for the never-resume-others property)
    paused_by: str = ""
    #: events since the last step: unix second -> (completed, failed)
    events: dict[int, tuple[int, int]] = field(default_factory=dict)
    lockless: frozenset[str] | None = None
    #: jobs that finished since the last step, with names (as the hash read gives them)
    finished: list[FinishedJob] = field(default_factory=list)
    #: failed jobs checked for corruption since the last step (None: not checked)
    corrupt_checks: list[CorruptCheck] | None = None


@dataclass
class PolicySim:
    spec: QueuePolicySpec
    now: datetime = T0
    status: QueuePolicyStatus | None = None
    memory: PolicyMemory | None = None
    queues: dict[str, QueueWorld] = field(default_factory=dict)
    gates: tuple[GateStatus, ...] | None = None
    cursor: int = 0
    history: list[tuple[datetime, Decision]] = field(default_factory=list)
    #: Channels whose webhook fails (escalation messages to them are retried by later steps).
    failing_channels: set[str] = field(default_factory=set)
    #: Every escalation message attempt, in order: (channel, text, first due, delivered).
    sent: list[tuple[str, str, datetime | None, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in self.spec.queues:
            self.queues.setdefault(name, QueueWorld())

    def q(self, name: str = "default") -> QueueWorld:
        return self.queues.setdefault(name, QueueWorld())

    def observe(self, names: list[str] | None = None) -> Observation:
        names = names if names is not None else list(self.queues)
        seen = {}
        for name in names:
            w = self.queues[name]
            self.cursor += 1
            seen[name] = QueueObservation(
                name=name,
                waiting=w.waiting,
                active=w.active,
                completed=w.completed,
                failed=w.failed,
                delayed=w.delayed,
                prioritized=w.prioritized,
                paused=w.paused,
                events=EventTally(cursor=f"{self.cursor}-0", per_second=dict(w.events)),
                lockless_active=w.lockless,
                finished_jobs=tuple(w.finished),
                corrupt_checks=None if w.corrupt_checks is None else tuple(w.corrupt_checks),
            )
            w.events = {}
            w.finished = []
            if w.corrupt_checks is not None:
                w.corrupt_checks = []
        return Observation(at=self.now, queues=seen, gates=self.gates)

    def step(
        self,
        advance: timedelta = timedelta(seconds=30),
        *,
        execute: bool = True,
        observation: Observation | None = None,
    ) -> Decision:
        self.now += advance
        obs = observation or self.observe()
        decision = decide(
            self.spec, self.status, obs, self.memory, now=self.now, generation=1, policy_name="visapi"
        )
        self.status, self.memory = decision.status, decision.memory
        self.history.append((self.now, decision))
        self.finish(decision, execute=execute)
        return decision

    def finish(self, decision: Decision, *, execute: bool = True) -> None:
        """Carry out the decision; with ``execute=False`` Pause and Resume fail (the way evaluate settles)."""
        failures: dict[int, str] = {}
        for index, action in enumerate(decision.actions):
            if action not in decision.to_execute:
                continue
            if execute or not isinstance(action, (Pause, Resume)):
                self.apply(action)
            else:
                failures[index] = "connection reset"
        if failures:
            self.status = settle(decision, now=self.now, failures=failures)
        self.deliver(decision)

    def deliver(self, decision: Decision) -> None:
        """Send the escalation messages as the evaluator does: in order, a channel's rest skipped
        after its first failure; the outcomes recorded with ``with_results``."""
        if decision.escalation is None or self.status is None:
            return
        delivered: list[Delivery] = []
        down: set[str] = set()
        for notice in decision.escalation.notices:
            name = notice.channel.name
            if name in down:
                continue
            ok = name not in self.failing_channels
            self.sent.append((name, notice.text, notice.since, ok))
            if not ok:
                down.add(name)
            delivered.append(Delivery(notice, None if ok else "escalation webhook answered 503"))
        self.status.escalation, _ = with_results(
            self.status.escalation, now=self.now, delivered=delivered, sample=None
        )

    def apply(self, action: Action) -> None:
        if isinstance(action, Pause):
            w = self.q(action.queue)
            assert not w.paused, f"policy paused {action.queue}, which was already paused"
            w.paused, w.paused_by = True, "policy"
        elif isinstance(action, Resume):
            w = self.q(action.queue)
            w.paused, w.paused_by = False, ""

    def external_pause(self, name: str = "default") -> None:
        w = self.q(name)
        if not w.paused:
            w.paused, w.paused_by = True, "other"

    def external_resume(self, name: str = "default") -> None:
        w = self.q(name)
        w.paused, w.paused_by = False, ""

    def set_gates(self, *healthy: bool) -> None:
        self.gates = tuple(gate(f"g{i}", h) for i, h in enumerate(healthy))


def kinds(decision: Decision) -> list[str]:
    return [a.kind.value for a in decision.actions]
