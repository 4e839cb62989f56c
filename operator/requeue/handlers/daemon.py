"""What the DLQReplay and QueuePolicy daemons share: waiting, backoff, Events, failures.

Both controllers run one kopf daemon per object that loops "step, write
status, wait"; the pieces of that loop that do not depend on the resource live
here, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from requeue.errors import RequeueError
from requeue.handlers.errors import to_kopf
from requeue.redact import redact_text

__all__ = [
    "RETRY_FIRST",
    "RETRY_MAX",
    "EventLike",
    "Trouble",
    "backoff",
    "describe_failure",
    "name_trouble",
    "post_events",
    "run_daemon",
    "sleep",
]

#: First and longest delay (seconds) between retries after a named problem (missing Secret, ...).
RETRY_FIRST = 1.0
RETRY_MAX = 60.0


class EventLike(Protocol):
    """An Event the core asks for: :class:`~requeue.replay.ReplayEvent` or
    :class:`~requeue.policy.PolicyEvent`."""

    @property
    def type(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def message(self) -> str: ...


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` named problems in a row: :data:`RETRY_FIRST` doubling
    up to :data:`RETRY_MAX`."""
    return float(min(RETRY_MAX, RETRY_FIRST * 2.0 ** (failures - 1)))


async def sleep(delay: float, stopped: Any, wake: asyncio.Event) -> None:
    """Wait ``delay`` seconds, less if kopf's ``stopped`` flag or ``wake`` (a spec edit) is set;
    then clear ``wake``."""
    if delay > 0:

        async def stopped_wait() -> None:
            await stopped.wait()

        waiters = [asyncio.ensure_future(stopped_wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
    wake.clear()


def post_events(body: Any, events: Iterable[EventLike]) -> None:
    """Every event of the core as a Kubernetes Event on the object (kopf posts them in the background)."""
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=redact_text(event.message))


def name_trouble(exc: BaseException, log: logging.Logger, what: str) -> tuple[str, str]:
    """Reason and message for a problem inside a daemon's step; an unexpected one is logged with
    its traceback (``what`` names the object, e.g. ``replay ns/name``) and becomes ``InternalError``."""
    if isinstance(exc, RequeueError):
        return exc.reason, exc.message
    log.exception("%s: unexpected error", what)
    return "InternalError", redact_text(f"unexpected {type(exc).__name__}: {exc}")


@dataclass
class Trouble:
    """The named problem a daemon is waiting out (missing Secret, Redis down, ...).

    On-call reads Events: one Warning (and one log line) per distinct problem, not one per
    retry; the retries back off while the problem lasts; the first good step says what
    cleared. ``what`` names the object in logs, e.g. ``replay ns/name``.
    """

    what: str
    failures: int = 0
    current: tuple[str, str] | None = None

    def retry_delay(self) -> float:
        """Count one more failure in a row; the seconds to wait before the next try."""
        self.failures += 1
        return backoff(self.failures)

    def report(self, body: Any, exc: BaseException, log: logging.Logger) -> tuple[str, str]:
        """Name ``exc`` (reason, message); warn only if it is not the problem already reported."""
        reason, message = name_trouble(exc, log, self.what)
        if self.current != (reason, message):
            kopf.event(body, type="Warning", reason=reason, message=message)
            log.warning("%s: %s: %s", self.what, reason, message)
        self.current = (reason, message)
        return reason, message

    def clear(self) -> str | None:
        """A step went well: reset the backoff; return the reason of the problem it ends, if any."""
        cleared = self.current[0] if self.current is not None else None
        self.current, self.failures = None, 0
        return cleared


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """Reason and message of a failed cleanup, for the Event that gives up on it."""
    if isinstance(exc, RequeueError):
        return exc.reason, exc.message
    return type(exc).__name__, redact_text(str(exc))


async def run_daemon(run: Awaitable[None], log: logging.Logger, what: str) -> None:
    """Await a driver's ``run()``; whatever escapes it (a bug) is logged and mapped to kopf's errors."""
    try:
        await run
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("%s: daemon failed", what)
        raise to_kopf(exc) from None
