"""The matcher: selection filters (a compiled :class:`~requeue.api.Selector`); reasons are normalised in
:mod:`requeue.replay.reasons` (re-exported here)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from requeue.api import Selector
from requeue.api.common import compile_re2
from requeue.queues import FailedJob
from requeue.replay.reasons import MAX_REASON_LENGTH, normalize_reason

__all__ = ["MAX_REASON_LENGTH", "Matcher", "is_subset", "normalize_reason", "to_ms"]


#: ``Matcher.matches``'s default: the data has not been parsed yet.
_UNPARSED: Any = object()


def is_subset(expected: Any, actual: Any) -> bool:
    """JSON subset test: every key of ``expected`` is in ``actual`` with a matching value.

    Objects compare recursively; everything else (lists included) must be equal.
    """
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(k in actual and is_subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass
class Matcher:
    """A selector compiled for fast matching of candidates from the failed set."""

    selector: Selector
    _reason: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.selector.failed_reason_pattern is not None:
            self._reason = compile_re2(self.selector.failed_reason_pattern)

    @property
    def name_globs(self) -> list[str]:
        return list(self.selector.job_names)

    @property
    def min_score(self) -> int:
        """Inclusive lower bound on the failed set's score (failure time, ms)."""
        return to_ms(self.selector.failed_after) if self.selector.failed_after else 0

    def max_score(self, upper: int) -> int:
        """Exclusive upper bound: ``failedBefore``, but never beyond ``upper``."""
        if self.selector.failed_before:
            return min(to_ms(self.selector.failed_before), upper)
        return upper

    @property
    def only_time_window(self) -> bool:
        """No filter but the time window (and maxJobs): every job in the window matches."""
        s = self.selector
        return not s.job_names and s.failed_reason_pattern is None and s.data_match is None

    def matches(self, job: FailedJob, data: Any = _UNPARSED) -> bool:
        """Whether a readable (non-corrupt) job passes every filter of the selector (``data``: the
        job's data parsed already, to spare a second parse)."""
        s = self.selector
        if s.job_names and not any(fnmatch.fnmatchcase(job.name or "", g) for g in s.job_names):
            return False
        if self._reason is not None and not self._reason.search(job.failed_reason or ""):
            return False
        if s.data_match is not None:
            if data is _UNPARSED:
                try:
                    data = json.loads(job.data or "null")
                except ValueError:
                    return False
            if not is_subset(s.data_match, data):
                return False
        return True
