"""QueuePolicy auto replay: once per outage, replay what failed during it (rule 4 of :mod:`.decide`).

Its own module because it is the one rule that spans evaluations by outage
rather than by queue: it needs the outage's start and recovery, the marks of
the last replay (``lastReplayedOutage``, ``lastAutoReplayAt``) and the
deterministic child names that make a retried evaluation harmless.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from requeue.api.base import parse_duration
from requeue.api.common import Selector
from requeue.api.conditions import Reason
from requeue.api.policy import AutoReplaySpec, QueuePolicySpec, QueuePolicyStatus
from requeue.policy.actions import AutoReplay
from requeue.policy.ledger import Ledger
from requeue.policy.observe import Observation

__all__ = ["Outage", "ReplayMarks", "child_replay_name", "outage_pending", "plan"]


def child_replay_name(policy: str, queue: str, outage_started_at: datetime) -> str:
    """``{policy}-{queue}-{hash}``: a valid, deterministic DLQReplay name (at most 63 characters).

    Deterministic so that a retried evaluation creates the same child (the API
    server answers 409 the second time) instead of a second replay.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{policy}-{queue}".lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(f"{policy}/{queue}/{outage_started_at.isoformat()}".encode()).hexdigest()
    return f"{slug or 'replay'}-{digest[:10]}"


def outage_pending(spec: QueuePolicySpec, prev: QueuePolicyStatus) -> bool:
    """The last outage still awaits its auto replay: a new one extends it rather than replacing it."""
    return (
        spec.actions.auto_replay is not None
        and prev.outage_started_at is not None
        and prev.last_replayed_outage != prev.outage_started_at
    )


@dataclass(frozen=True)
class Outage:
    """An outage that is over: gates red from ``started``, green again since ``recovered``."""

    started: datetime
    recovered: datetime


@dataclass(frozen=True)
class ReplayMarks:
    """``lastAutoReplayAt`` and ``lastReplayedOutage`` after this evaluation."""

    last_auto_replay_at: datetime | None
    last_replayed_outage: datetime | None


def _due(auto: AutoReplaySpec, prev: QueuePolicyStatus, outage: Outage, now: datetime) -> bool:
    """Not replayed yet, gates green for ``stableFor``, the last auto replay ``cooldown`` ago."""
    last = prev.last_auto_replay_at
    return (
        prev.last_replayed_outage != outage.started
        and now - outage.recovered >= parse_duration(auto.stable_for)
        and (last is None or now - last >= parse_duration(auto.cooldown))
    )


def plan(
    spec: QueuePolicySpec,
    prev: QueuePolicyStatus,
    observation: Observation,
    outage: Outage | None,
    *,
    policy_name: str,
    ledger: Ledger,
) -> ReplayMarks:
    """One :class:`AutoReplay` per listed queue with failed jobs, once the outage is due for it."""
    marks = ReplayMarks(prev.last_auto_replay_at, prev.last_replayed_outage)
    auto = spec.actions.auto_replay
    if auto is None or outage is None or not _due(auto, prev, outage, ledger.now):
        return marks
    created = 0
    for name in spec.queues:
        if _replay_queue(spec, auto, name, observation, outage, policy_name, ledger):
            created += 1
    return ReplayMarks(ledger.now if created else marks.last_auto_replay_at, outage.started)


def _replay_queue(
    spec: QueuePolicySpec,
    auto: AutoReplaySpec,
    name: str,
    observation: Observation,
    outage: Outage,
    policy_name: str,
    ledger: Ledger,
) -> bool:
    """Decide the child replay of one queue; False when it has nothing that failed in the outage."""
    obs = observation.queues.get(name)
    if obs is None or obs.failed == 0:
        return False
    selector = _intersect(auto.selector, outage.started, outage.recovered)
    if selector is None:
        return False
    child = child_replay_name(policy_name, name, outage.started)
    reason = (
        f"outage {outage.started.isoformat()} - {outage.recovered.isoformat()} over, "
        f"gates green for {auto.stable_for}"
    )
    ledger.act(
        AutoReplay(
            queue=name,
            name=child,
            selector=selector,
            rate=auto.rate,
            verify=auto.verify,
            max_replays_per_job=auto.max_replays_per_job,
            outage_started_at=outage.started,
            recovered_at=outage.recovered,
            reason=reason,
        ),
        reason,
        dry_run=spec.dry_run,
    )
    verb = "[dry run] would create" if spec.dry_run else "creating"
    ledger.announce("Normal", Reason.AUTO_REPLAY, f"{verb} DLQReplay {child} for {name}: {reason}")
    return True


def _intersect(selector: Selector, after: datetime, before: datetime) -> Selector | None:
    lo = max(after, selector.failed_after) if selector.failed_after else after
    hi = min(before, selector.failed_before) if selector.failed_before else before
    if lo >= hi:
        return None
    return selector.model_copy(update={"failed_after": lo, "failed_before": hi})
