"""Real-service test harness: redis-server, TCP proxy, BullMQ jobs, kmock API server, operator.

Everything here runs real processes and real protocols; nothing is mocked. The
modules are imported as ``support.<module>`` (pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives in a directory without
``__init__.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

# Lives in the devcluster package (``requeue demo`` runs the emulator on it too); re-exported here.
from devcluster.loop import BackgroundLoop

__all__ = ["BackgroundLoop", "async_wait_until", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or fail after ``timeout``.

    ``predicate`` may return None for "not yet": the result is then typed without it.

    Bounded waits instead of sleeps: tests stay fast on a quick machine and still
    pass on a slow one. The failure names what was awaited (``message`` may be a
    callable, evaluated only on failure, e.g. to include operator logs).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """The asyncio twin of :func:`wait_until` for async predicates.

    ``timeout`` is a parameter (ruff's ASYNC109 prefers ``asyncio.timeout``) so
    that the failure names what was awaited instead of a bare TimeoutError.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        await asyncio.sleep(interval)
