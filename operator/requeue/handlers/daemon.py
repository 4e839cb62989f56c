"""What the DLQReplay and QueuePolicy daemons share: waiting, backoff, Events, failures.

Both controllers run one kopf daemon per object that loops "step, write
status, wait"; the pieces of that loop that do not depend on the resource live
here, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import kopf
from pydantic import ValidationError

from requeue.api.base import StatusModel
from requeue.api.conditions import Reason
from requeue.api.resources import GROUP, VERSION
from requeue.errors import RequeueError
from requeue.handlers.errors import to_kopf
from requeue.k8s.status import patch_status
from requeue.redact import redact_text

__all__ = [
    "RETRY_FIRST",
    "RETRY_MAX",
    "DaemonDriver",
    "EventLike",
    "ObjectState",
    "Trouble",
    "backoff",
    "describe_failure",
    "load_status",
    "name_trouble",
    "object_state",
    "post_events",
    "register_daemon",
    "run_daemon",
    "sleep",
]

#: First and longest delay (seconds) between retries after a named problem (missing Secret, ...).
RETRY_FIRST = 1.0
RETRY_MAX = 60.0

S = TypeVar("S", bound=StatusModel)
StateT = TypeVar("StateT", bound="ObjectState[Any]")
DriverT = TypeVar("DriverT", bound="DaemonDriver[Any]")

logger = logging.getLogger(__name__)


@dataclass
class ObjectState(Generic[S]):
    """What the daemon and the handlers of one object share, kept in kopf's per-object memo
    (for both kinds). In memory only: after a restart everything is rebuilt from ``.status``
    and Redis."""

    #: Held for a whole step plus its status write; the handlers take it too.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Set by the update and deletion handlers: the daemon's wait ends early.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by the deletion handler: the daemon takes no further step and writes nothing more.
    cancelled: bool = False
    #: The daemon's latest status (newer than the object's while writes lag behind).
    status: S | None = None

    def cancel(self) -> None:
        """The object is being deleted: the daemon stops waiting and takes no further step."""
        self.cancelled = True
        self.wake.set()

    def latest(self, model: type[S], raw: Mapping[str, Any] | None) -> S:
        """The daemon's latest status, else the object's ``.status`` (``raw``) as ``model``."""
        return self.status or load_status(model, raw)


def object_state(memo: Any, kind: type[StateT]) -> StateT:
    """The ``kind`` state of one object in kopf's per-object memo (created on first use)."""
    key = f"requeue.{kind.__name__}"
    state = memo.get(key)
    if not isinstance(state, kind):
        state = kind()
        memo[key] = state
    return state


def load_status(model: type[S], raw: Mapping[str, Any] | None) -> S:
    """The object's ``.status`` as ``model``; an unreadable one counts as empty (Redis has the truth)."""
    try:
        return model.model_validate(dict(raw or {}))
    except ValidationError as exc:
        logger.warning(
            "ignoring an unreadable %s (%d problems); rebuilding it", model.__name__, exc.error_count()
        )
        return model()


class DaemonDriver(Generic[S]):
    """The loop both kinds' daemons share: step, write status, wait; until stopped or done.

    A subclass says which kind it drives (the class attributes), what a step is
    (:meth:`step_once`, returning the seconds to wait) and when it is done (:meth:`done`);
    waiting, stopping, status writes and the per-object state are here.
    """

    #: The kind's plural (``dlqreplays``), for status writes.
    plural: ClassVar[str]
    #: The word that names an object in logs and messages: ``replay`` gives ``replay ns/name``.
    noun: ClassVar[str]
    #: The kind's per-object state in kopf's memo.
    state_class: ClassVar[type[ObjectState[Any]]]
    #: The kind module's logger (so log lines keep their logger name).
    log: ClassVar[logging.Logger]
    #: The kind's ``.status`` model.
    status_model: type[S]

    def __init__(
        self, *, body: Any, namespace: str, name: str, uid: str, state: ObjectState[S], stopped: Any
    ) -> None:
        self.body = body
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.state = state
        self.stopped = stopped
        self.status: S = state.latest(self.status_model, body.get("status"))
        self.trouble = Trouble(f"{self.noun} {namespace}/{name}")
        self.gone = False

    @property
    def generation(self) -> int:
        return int(self.body.get("metadata", {}).get("generation") or 0)

    def stopping(self) -> bool:
        """kopf stopped the daemon, the object is being deleted, or it is gone."""
        return bool(self.stopped) or self.state.cancelled or self.gone

    def done(self) -> bool:
        """No further step is needed (a finished replay)."""
        return False

    async def step_once(self) -> float:
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections (the next step reconnects)."""

    async def run(self) -> None:
        """The whole daemon run: the loop; a kind may add what comes after it."""
        await self.loop()

    async def patch_status(self, wire: dict[str, Any]) -> bool:
        """Write ``wire`` as ``.status``; False if it was not written (a failure is logged; an
        object that is gone sets :attr:`gone`)."""
        try:
            ok = await patch_status(self.plural, self.namespace, self.name, wire)
        except RequeueError as exc:
            self.log.warning("%s: status not written: %s", self.trouble.what, exc.message)
            return False
        if not ok:
            self.gone = True
        return ok

    async def loop(self) -> None:
        """Step until stopped or done, waiting what each step asks; always close at the end."""
        try:
            while not self.done() and not self.stopping():
                delay = await self.step_once()
                if self.gone or self.done():
                    break
                await self.sleep(delay)
        finally:
            await self.close()

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds, less if the daemon is stopped or the spec changes."""
        await sleep(0.0 if self.stopping() else delay, self.stopped, self.state.wake)


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


def name_trouble(exc: BaseException, log: logging.Logger, what: str) -> tuple[Reason, str]:
    """Reason and message for a problem inside a daemon's step; an unexpected one is logged with
    its traceback (``what`` names the object, e.g. ``replay ns/name``) and becomes ``InternalError``."""
    if isinstance(exc, RequeueError):
        return exc.reason, exc.message
    log.exception("%s: unexpected error", what)
    return Reason.INTERNAL_ERROR, redact_text(f"unexpected {type(exc).__name__}: {exc}")


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

    def report(self, body: Any, exc: BaseException, log: logging.Logger) -> tuple[Reason, str]:
        """Name ``exc`` (reason, message); warn only if it is not the problem already reported."""
        reason, message = name_trouble(exc, log, self.what)
        if self.current != (reason, message):
            kopf.event(body, type="Warning", reason=reason, message=message)
            log.warning("%s: %s: %s", self.what, reason, message)
        else:  # the same problem again: only a debug line, so a retry can be seen without noise
            log.debug("%s: still %s (try %d)", self.what, reason, self.failures + 1)
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


def register_daemon(
    driver: type[DriverT], *, id: str, cancellation_timeout: float
) -> Callable[..., Awaitable[None]]:
    """Register with kopf the daemon of ``driver``'s kind (one per object) and return it.

    The same kopf options for both kinds: our loop turns every failure into status and
    backoff, so ``errors``/``backoff``/``retries`` only bound what escapes it (bugs). No
    ``timeout``: a replay may legitimately run for hours, and kopf's counts from the first try.
    ``cancellation_timeout`` is how long a step may take to end after a stop request.
    """

    async def daemon(
        body: kopf.Body,
        namespace: str | None,
        name: str | None,
        uid: str | None,
        memo: kopf.Memo,
        stopped: kopf.DaemonStopped,
        **_: Any,
    ) -> None:
        assert namespace and name and uid
        state = object_state(memo, driver.state_class)
        one = driver(body=body, namespace=namespace, name=name, uid=uid, state=state, stopped=stopped)
        await run_daemon(one.run(), driver.log, one.trouble.what)

    daemon.__name__ = daemon.__qualname__ = f"{driver.noun}_daemon"
    daemon.__doc__ = f"Run a {driver.__name__} for one object until it is done or the daemon is stopped."
    kopf.daemon(
        GROUP,
        VERSION,
        driver.plural,
        id=id,
        errors=kopf.ErrorsMode.TEMPORARY,
        backoff=30,
        retries=20,
        cancellation_backoff=5.0,
        cancellation_timeout=cancellation_timeout,
    )(daemon)
    return daemon
