"""The one place where requeue's errors become kopf's (STYLE.md, kopf: "name the retry").

* :class:`~requeue.errors.TransientError` (Redis unreachable, queue locked, a
  red gate, the API server hiccuping) -> ``kopf.TemporaryError`` with the
  error's own ``delay``: kopf retries the handler later.
* :class:`~requeue.errors.PermanentError` (bad spec, missing Secret, refused
  credentials) -> ``kopf.PermanentError``: retrying will not help.
* Anything else is a bug: a ``TemporaryError`` with a long delay, so it is
  retried a bounded number of times (every handler sets ``retries``) instead
  of in a tight loop.

Messages are our errors' messages, which never contain secrets.
"""

from __future__ import annotations

import kopf

from requeue.errors import PermanentError, RequeueError, TransientError
from requeue.redact import redact_text

__all__ = ["UNEXPECTED_DELAY", "to_kopf"]

#: Seconds before kopf retries a handler that failed with an unexpected exception.
UNEXPECTED_DELAY = 30.0


def to_kopf(exc: BaseException) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf error that makes kopf retry (or not) as ``exc`` deserves."""
    if isinstance(exc, TransientError):
        return kopf.TemporaryError(f"{exc.reason}: {exc.message}", delay=exc.delay)
    if isinstance(exc, PermanentError):
        return kopf.PermanentError(f"{exc.reason}: {exc.message}")
    if isinstance(exc, RequeueError):
        return kopf.TemporaryError(f"{exc.reason}: {exc.message}", delay=UNEXPECTED_DELAY)
    detail = redact_text(str(exc))
    return kopf.TemporaryError(f"unexpected {type(exc).__name__}: {detail}", delay=UNEXPECTED_DELAY)
