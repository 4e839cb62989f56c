"""Helpers for tests that run :class:`requeue.replay.ReplayEngine` directly: specs and a step loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from requeue.api import DLQReplaySpec, DLQReplayStatus
from requeue.replay import ReplayEngine

__all__ = ["drive", "replay_spec"]


class Ticking(Protocol):
    """A test clock the step loop moves on by each step's delay."""

    def tick(self, seconds: float) -> None: ...


def replay_spec(base: Mapping[str, Any] | None = None, /, **fields: Any) -> DLQReplaySpec:
    """A DLQReplay spec for queue ``default`` (Redis URL from Secret ``redis``/``url``), fast rate.

    :param base: a test file's own defaults (wire names), applied before ``fields``.
    :param fields: spec fields (wire names) that replace the defaults.
    """
    body: dict[str, Any] = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queue": "default",
        "rate": {"jobsPerSecond": 100_000, "batchSize": 50},
    }
    body.update(base or {})
    body.update(fields)
    return DLQReplaySpec.model_validate(body)


async def drive(engine: ReplayEngine, spec: DLQReplaySpec, status: DLQReplayStatus | None = None,
                *, max_steps: int = 5000, clock: Ticking | None = None) -> DLQReplayStatus:
    """Step until the replay finishes, without sleeping; a test ``clock`` is moved on by each step's
    delay. Fails after ``max_steps`` steps."""
    st = status or DLQReplayStatus()
    for _ in range(max_steps):
        res = await engine.step(spec, st)
        st = res.status
        if clock is not None:
            clock.tick(res.delay)
        if st.phase.finished:
            return st
    raise AssertionError(f"not finished after {max_steps} steps: {st.phase} {st.message}")
