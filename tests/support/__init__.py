"""Real-service test harness: redis-server, TCP proxy, BullMQ jobs, kmock API server, operator.

Everything here runs real processes and real protocols; nothing is mocked. The
modules are imported as ``support.<module>`` (pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives in a directory without
``__init__.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundLoop", "async_wait_until", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or fail after ``timeout``.

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
    predicate: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05,  # noqa: ASYNC109
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


class BackgroundLoop:
    """An event loop in a daemon thread, for servers that must keep serving while the test blocks.

    The kmock emulator and a proxy in front of a subprocess live here: the test
    thread runs blocking ``kubectl`` calls and ``wait_until`` polls, which would
    freeze a server sharing the test's own loop.
    """

    def __init__(self, name: str = "support-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the background loop and block until it returns."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            self.run(_cancel_rest(), timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self.loop.close()
