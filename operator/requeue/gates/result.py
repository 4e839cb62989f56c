"""What one gate check found, and the helpers every gate uses to describe failures.

A check never raises for a broken dependency: "unreachable" is a result
(crate-operator records an unreachable cluster as status the same way). Only
programming errors escape, and the runner turns even those into a result.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from requeue.api.base import SecretKeyRef
from requeue.api.conditions import Reason
from requeue.errors import RequeueError, SecretNotFound
from requeue.redact import sensitive_parts
from requeue.secrets import SecretSource

#: Longest message stored in ``.status.gates[].message``.
MAX_MESSAGE = 512


#: Reasons that say a check could not run because of its configuration (see :class:`GateResult`).
CONFIGURATION_REASONS = frozenset(
    {Reason.SECRET_NOT_FOUND, Reason.DESTINATION_DENIED, Reason.REDIS_URL_INVALID, Reason.GATE_MISCONFIGURED}
)


@dataclass(frozen=True, slots=True)
class GateResult:
    """One check: did it pass, why (secret-free), and how long it took (seconds).

    ``misconfigured`` is set when the check could not run because of its configuration,
    something only a person can fix and no retry will: a Secret or key that does not exist
    (``SecretNotFound``), a host the operator's gate destination policy refuses
    (``DestinationDenied``), a Redis URL that does not parse (``RedisUrlInvalid``), a DSN or CA
    bundle that does not parse or a redis gate with no Redis to check (``GateMisconfigured``).
    Such a gate says nothing about the dependency: it is neither red nor green, and nothing
    (pause, resume, auto replay) is decided on it. Everything the dependency itself answers
    (refused, timeout, DNS, TLS verification, refused credentials, an HTTP status, a query
    error) is a red result as before: those are what a gate is there to notice.
    """

    healthy: bool
    message: str
    latency: float = 0.0
    misconfigured: Reason | None = None

    @classmethod
    def ok(cls, message: str, latency: float = 0.0) -> GateResult:
        return cls(True, message, latency)

    @classmethod
    def fail(cls, message: str, latency: float = 0.0) -> GateResult:
        return cls(False, message, latency)

    @classmethod
    def unusable(cls, reason: Reason, message: str, latency: float = 0.0) -> GateResult:
        """The check could not run because of its configuration (``reason``: one of
        :data:`CONFIGURATION_REASONS`)."""
        return cls(False, message, latency, reason)


class CheckFailed(Exception):
    """A step of a check found the gate red; the check returns it as a failed :class:`GateResult`.

    Lets each step return its value and leave the failure path to one ``except``
    in the check. Not a :class:`RequeueError`: it never leaves the check, since
    "unreachable" is a result. ``at`` is when the failure was found, so time spent
    closing a broken connection afterwards does not count in the latency.
    ``misconfigured``: the check could not run because of its configuration
    (see :class:`GateResult`), not because the dependency failed.
    """

    def __init__(self, message: str, *, misconfigured: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.misconfigured = misconfigured
        self.at = time.monotonic()

    def result(self, started: float) -> GateResult:
        """The failed result, with the latency from ``started`` (``time.monotonic()``) to the failure."""
        return GateResult(False, self.message, self.at - started, self.misconfigured)


async def read_secret(secrets: SecretSource, ref: SecretKeyRef) -> str:
    """The secret's value; a missing or unreadable secret fails the check.

    A missing Secret or key is a configuration error (``misconfigured``: SecretNotFound);
    the Kubernetes API failing to answer is not (the gate is red, as for any outage).
    The :class:`RequeueError` message names the Secret and key, never a value.
    """
    try:
        return await secrets.get(ref)
    except SecretNotFound as exc:
        raise CheckFailed(exc.message, misconfigured=exc.reason) from exc
    except RequeueError as exc:
        raise CheckFailed(exc.message) from exc


@dataclass(slots=True)
class RecordingSecrets:
    """A :class:`SecretSource` that remembers every value it handed out.

    The runner redacts those values from the message of the check that used
    them, whatever path the text took (a server echoing a header, a driver
    quoting a DSN), so a secret cannot leak through a message we did not foresee.
    """

    source: SecretSource
    values: list[str] = field(default_factory=list)

    async def get(self, ref: SecretKeyRef) -> str:
        value = await self.source.get(ref)
        self.values.extend(sensitive_parts(value))
        return value


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (drivers wrap the OSError that says what happened)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_network_error(exc: BaseException) -> str | None:
    """A short cause for socket-level failures (DNS, refused, reset, TLS), or None if not one."""
    for err in exception_chain(exc):
        if isinstance(err, socket.gaierror):
            return "cannot resolve host name (DNS)"
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {err.verify_message or err.reason}"
        if isinstance(err, ssl.SSLError):
            return f"TLS error: {err.reason or err.__class__.__name__}"
        if isinstance(err, ConnectionRefusedError) or (
            isinstance(err, OSError) and err.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(err, ConnectionResetError):
            return "connection reset by peer"
        if isinstance(err, OSError) and err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
    return None


def first_line(exc: BaseException) -> str:
    """The first line of a driver's error text (the rest is detail or a quoted statement)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_ms(seconds: float) -> str:
    """``0.0123`` -> ``12.3 ms``."""
    return f"{seconds * 1000:.1f} ms"


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
