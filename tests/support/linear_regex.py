"""Prove, without timing anything, that a Python ``re`` pattern cannot backtrack more than a constant.

A backtracking engine is linear on a pattern when it never has a choice to undo:

1. every repeat with a choice (``*``, ``+``, ``?``, ``{m,n}``) repeats something whose first
   characters cannot also start what follows it, so the greedy choice is the only one;
2. the alternatives of a ``|`` start with different characters;
3. an unbounded repeat is of one character class (no nested quantifiers) and whatever
   follows it in the pattern can match the empty string, so an attempt that got that far
   cannot fail: ``search``/``sub`` never rescan what a failed attempt read.

This is a sufficient check, not a full one: a pattern it refuses may still be linear, but one
it accepts is. Character sets are compared over the Basic Multilingual Plane.
"""

from __future__ import annotations

import re
from functools import cache
from re import _constants as C
from re import _parser as P
from typing import Any

__all__ = ["NotLinear", "assert_linear"]

_BMP = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)
_ALL = frozenset(_BMP)


class NotLinear(AssertionError):
    """The pattern has a construct a backtracking engine may have to undo."""


@cache
def _category(name: str) -> frozenset[str]:
    source = {
        "CATEGORY_DIGIT": r"\d",
        "CATEGORY_NOT_DIGIT": r"\D",
        "CATEGORY_SPACE": r"\s",
        "CATEGORY_NOT_SPACE": r"\S",
        "CATEGORY_WORD": r"\w",
        "CATEGORY_NOT_WORD": r"\W",
    }[name]
    return frozenset(re.findall(source, _BMP))


def _charset(op: Any, av: Any) -> frozenset[str] | None:
    """The characters one single-character item matches; None if it is not one."""
    if op is C.LITERAL:
        return frozenset(chr(av))
    if op is C.NOT_LITERAL:
        return _ALL - {chr(av)}
    if op is C.ANY:
        return _ALL - {"\n"}
    if op is C.IN:
        found: set[str] = set()
        negate = False
        for sub_op, sub_av in av:
            if sub_op is C.NEGATE:
                negate = True
            elif sub_op is C.LITERAL:
                found.add(chr(sub_av))
            elif sub_op is C.RANGE:
                found.update(chr(c) for c in range(sub_av[0], sub_av[1] + 1))
            elif sub_op is C.CATEGORY:
                found |= _category(str(sub_av))
            else:
                raise NotLinear(f"unsupported class item {sub_op}")
        return _ALL - found if negate else frozenset(found)
    return None


def _first(seq: list[tuple[Any, Any]]) -> tuple[frozenset[str], bool]:
    """Characters that can start a match of ``seq``, and whether it can match the empty string."""
    first: set[str] = set()
    for op, av in seq:
        chars = _charset(op, av)
        if chars is not None:
            return frozenset(first | chars), False
        if op is C.AT:
            continue
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            body_first, body_null = _first(list(av[2]))
            first |= body_first
            if av[0] > 0 and not body_null:
                return frozenset(first), False
            continue
        if op is C.SUBPATTERN:
            sub_first, sub_null = _first(list(av[3]))
            first |= sub_first
            if not sub_null:
                return frozenset(first), False
            continue
        if op is C.BRANCH:
            nullable = False
            for alt in av[1]:
                alt_first, alt_null = _first(list(alt))
                first |= alt_first
                nullable = nullable or alt_null
            if not nullable:
                return frozenset(first), False
            continue
        raise NotLinear(f"unsupported construct {op}")
    return frozenset(first), True


def _check(seq: list[tuple[Any, Any]], follow: frozenset[str], tail_nullable: bool, where: str) -> None:
    for i, (op, av) in enumerate(seq):
        rest_first, rest_null = _first(seq[i + 1 :])
        after = rest_first | (follow if rest_null else frozenset())
        after_null = rest_null and tail_nullable
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            low, high, body = av[0], av[1], list(av[2])
            body_first, _ = _first(body)
            if low != high and body_first & after:
                sample = "".join(sorted(body_first & after))[:10]
                raise NotLinear(
                    f"{where}: a repeat may give back characters that what follows "
                    f"also starts with ({sample!r})"
                )
            if high == C.MAXREPEAT:
                if len(body) != 1 or _charset(*body[0]) is None:
                    raise NotLinear(f"{where}: an unbounded repeat of more than one character class")
                if not after_null:
                    raise NotLinear(f"{where}: something that can fail follows an unbounded repeat")
            else:
                _check(body, body_first | after if high > 1 else after, after_null, where)
        elif op is C.SUBPATTERN:
            _check(list(av[3]), after, after_null, where)
        elif op is C.BRANCH:
            seen: set[str] = set()
            for alt in av[1]:
                alt_first, _ = _first(list(alt))
                if alt_first & seen:
                    raise NotLinear(f"{where}: alternatives that start with the same characters")
                seen |= alt_first
                _check(list(alt), after, after_null, where)


def assert_linear(pattern: re.Pattern[str] | str) -> None:
    """Raise :class:`NotLinear` unless ``pattern`` is deterministic as described in the module docstring."""
    source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    flags = pattern.flags if isinstance(pattern, re.Pattern) else 0
    parsed = P.parse(source, flags)
    _check(list(parsed.data if hasattr(parsed, "data") else parsed), frozenset(), True, repr(source))
