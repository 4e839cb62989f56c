"""The replay's pace: a token bucket over ``rate.jobsPerSecond``.

A replay must not flood the workers it feeds. The bucket holds at most one batch (and at
most a second's worth), so a replay that waited (gates, a throttle, a Redis outage) does
not make up for it with a burst.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from requeue.api import Rate


class TokenBucket:
    """Tokens refill at ``jobsPerSecond``; a batch takes as many as it moves.

    It lives in memory only: a restarted process starts with a full bucket, which is at
    most one batch early.
    """

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._tokens: float | None = None
        self._refilled_at: datetime | None = None

    @staticmethod
    def _capacity(rate: Rate) -> float:
        return max(1.0, min(float(rate.batch_size), rate.jobs_per_second))

    def take(self, rate: Rate, want: int, now: datetime) -> tuple[int, float]:
        """Token bucket over jobsPerSecond, burst one batch (at most a second's worth).
        Returns (jobs allowed now, seconds to wait when zero)."""
        per_second = rate.jobs_per_second
        capacity = self._capacity(rate)
        if self._tokens is None or self._refilled_at is None:
            self._tokens, self._refilled_at = capacity, now
        elapsed = max(0.0, (now - self._refilled_at).total_seconds())
        self._tokens = min(capacity, self._tokens + elapsed * per_second)
        self._refilled_at = now
        need = min(float(want), capacity)
        if self._tokens + 1e-9 < need:
            return 0, (need - self._tokens) / per_second
        n = min(want, int(self._tokens + 1e-9))
        self._tokens -= n
        return n, 0.0

    def next_delay(self, rate: Rate) -> float:
        """Seconds until the bucket holds a full batch again (counting the time the batch took)."""
        per_second = rate.jobs_per_second
        capacity = self._capacity(rate)
        tokens = self._tokens or 0.0
        if self._refilled_at is not None:
            tokens += max(0.0, (self.clock() - self._refilled_at).total_seconds()) * per_second
        return max(0.0, (capacity - tokens) / per_second)
