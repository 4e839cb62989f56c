"""The one real clock: everything that reads the time takes a :data:`Clock` so tests inject theirs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utcnow"]

#: What reads the current time (timezone-aware UTC); :func:`utcnow` unless a test injects one.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
