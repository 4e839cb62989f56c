"""The ledger one QueuePolicy evaluation fills: actions, Events, ``lastActions`` entries, conditions.

Every concern of :func:`requeue.policy.decide.decide` (gates, thresholds,
pause/resume, auto replay, clean) adds to the same lists (conditions through
:func:`requeue.api.base.set_condition`, the one setter), in the order the
rules apply. Passing this one object to each of them keeps that shared,
ordered state explicit, and stamps every entry with the same ``now`` and
generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from requeue.api.base import Condition
from requeue.api.conditions import Reason
from requeue.api.policy import PolicyAction
from requeue.policy.actions import Action, PolicyEvent

__all__ = ["MESSAGE_LIMIT", "Ledger", "clip"]

#: Longest condition message; longer ones end in "...".
MESSAGE_LIMIT = 1000


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text``, cut to ``limit`` characters ending in "..." when longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Ledger:
    """What an evaluation has decided so far."""

    now: datetime
    generation: int
    conditions: list[Condition]
    actions: list[Action] = field(default_factory=list)
    events: list[PolicyEvent] = field(default_factory=list)
    #: New ``lastActions`` entries, oldest first.
    records: list[PolicyAction] = field(default_factory=list)

    def act(self, action: Action, reason: str | None = None, *, dry_run: bool = False) -> None:
        """Decide ``action``; with a ``reason``, also record it for ``lastActions``."""
        self.actions.append(action)
        if reason is not None:
            self.records.append(
                PolicyAction(
                    at=self.now, action=action.kind.value, queue=action.queue, reason=reason, dry_run=dry_run
                )
            )

    def announce(self, type: Literal["Normal", "Warning"], reason: Reason, message: str) -> None:
        """Emit a Kubernetes Event on the policy."""
        self.events.append(PolicyEvent(type, reason, message))
