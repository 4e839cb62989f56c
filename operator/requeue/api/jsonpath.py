"""The JSON path subset ``selector.dedupeBy`` takes: ``$.a.b``, ``$.items[0].sku``, nothing more.

A small, safe subset on purpose: a root ``$`` followed by member names (``.name``) and list
indexes (``[0]``). No wildcards, filters, slices, recursive descent or scripts, so a path
names at most one value and evaluating it is one walk down the parsed data: linear in the
data's size (parsing it) plus the path's length, whatever the data holds. A path outside the
subset is refused when the spec is validated, with a named :class:`PathProblem`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: Longest path accepted (characters).
MAX_PATH_LENGTH = 256
#: Most segments (``.name`` or ``[n]``) a path may have.
MAX_SEGMENTS = 16
#: Largest list index accepted.
MAX_INDEX = 999_999

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_SEGMENT = re.compile(rf"\.({_NAME})|\[(0|[1-9][0-9]{{0,5}})\]")
#: The whole grammar as one regular expression (the CRD's ``pattern``; no backtracking blow-up:
#: each alternative starts with a distinct character).
PATH_PATTERN = rf"^\$(\.{_NAME}|\[(0|[1-9][0-9]{{0,5}})\]){{1,{MAX_SEGMENTS}}}$"


class PathProblem(StrEnum):
    """Why a ``dedupeBy`` path is refused (named in the validation message)."""

    #: The path does not start with ``$``.
    NOT_ROOTED = "NotRooted"
    #: The path is ``$`` alone: the whole data is no key.
    NO_SEGMENT = "NoSegment"
    #: Something other than ``.name`` or ``[index]`` (wildcards, filters, quotes, spaces ...).
    UNSUPPORTED_SEGMENT = "UnsupportedSegment"
    #: Longer than :data:`MAX_PATH_LENGTH` characters or :data:`MAX_SEGMENTS` segments.
    TOO_LONG = "TooLong"


class JsonPathError(ValueError):
    """A path outside the subset; ``problem`` names why."""

    def __init__(self, path: str, problem: PathProblem, detail: str) -> None:
        super().__init__(
            f"{path!r} is not a supported JSON path ({problem.value}): {detail}; "
            "use $.name, $.a.b or $.items[0].sku"
        )
        self.problem = problem


#: One step: a member name (str) or a list index (int).
Segment = str | int


@dataclass(frozen=True)
class JsonPath:
    """A parsed path: its segments, and :meth:`find` to evaluate it."""

    text: str
    segments: tuple[Segment, ...]

    def find(self, data: Any) -> tuple[bool, Any]:
        """``(True, value)`` when the path leads to a value in ``data`` (parsed JSON), else ``(False, None)``.

        An index on an object or a name on a list finds nothing (no coercion)."""
        node = data
        for seg in self.segments:
            if isinstance(seg, int):
                if not isinstance(node, list) or seg >= len(node):
                    return False, None
                node = node[seg]
            else:
                if not isinstance(node, Mapping) or seg not in node:
                    return False, None
                node = node[seg]
        return True, node


def parse_json_path(path: str) -> JsonPath:
    """Parse ``path``; raises :class:`JsonPathError` naming the :class:`PathProblem`."""
    if len(path) > MAX_PATH_LENGTH:
        raise JsonPathError(
            path[:40] + "...", PathProblem.TOO_LONG, f"longer than {MAX_PATH_LENGTH} characters"
        )
    if not path.startswith("$"):
        raise JsonPathError(path, PathProblem.NOT_ROOTED, "a path starts with $ (the job's data)")
    if path == "$":
        raise JsonPathError(path, PathProblem.NO_SEGMENT, "name a field of the data, not the data itself")
    segments: list[Segment] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise JsonPathError(
                path,
                PathProblem.UNSUPPORTED_SEGMENT,
                f"at character {pos + 1} ({path[pos : pos + 12]!r}) only .name or [index] may follow",
            )
        segments.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if len(segments) > MAX_SEGMENTS:
        raise JsonPathError(path, PathProblem.TOO_LONG, f"more than {MAX_SEGMENTS} segments")
    return JsonPath(path, tuple(segments))
