"""Failure-reason normalisation: fold the variable parts of a reason so similar failures group together.

A reason is text a failing job wrote (its exception message): requeue does not
control it, and one reason is normalised per job in ``requeue inspect``, a
dry run and every replay's breakdown. So the work must be linear in the input
and bounded: the input is cut to :data:`MAX_REASON_INPUT` characters before
anything else, and every pattern is *deterministic*: a backtracking engine
never has a choice to undo (each repeat is one character class that what follows
cannot start with, and nothing after a repeat can fail), so each match costs
its own length (``tests/support/linear_regex.py`` checks that). The earlier hex
pattern (``\b[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|...``) backtracked
cubically: 69 s on one 4,000-character reason. Python's ``re`` rather than RE2:
RE2's Python binding costs about 4 µs per match, ten times the whole
normalisation of a typical reason.

The folding rules, applied in this order:

* UUIDs become ``<uuid>``;
* hex ids become ``<id>``: a whole word (letters, digits, ``_``) of 6 or more
  characters that is either ``0x`` followed by hex digits, or only hex digits
  with at least one digit and one letter ``a-f``;
* numbers (``12``, ``4.5``) become ``<n>``;
* runs of whitespace become one space; the result is cut to :data:`MAX_REASON_LENGTH`.
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAX_REASON_INPUT", "MAX_REASON_LENGTH", "PATTERNS", "normalize_reason"]

#: Longest normalised reason kept (longer ones are cut, so groups stay few).
MAX_REASON_LENGTH = 160
#: Characters of a reason looked at; the rest cannot change the (160-character) result of any real
#: reason, and bounding it first bounds the work whatever a job wrote.
MAX_REASON_INPUT = 4096

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_HEX_LETTERS = frozenset("abcdefABCDEF")

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: A whole word; whether it is a hex id is decided by :func:`_fold_word`, in one pass over it,
#: which is what makes the backtracking ``\b...\b`` pattern unnecessary.
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACES = re.compile(r"\s+")

#: Every pattern the normaliser runs on a reason (each deterministic, so linear in the input).
PATTERNS: tuple[re.Pattern[str], ...] = (_UUID, _WORD, _NUMBER, _SPACES)


def _is_hex_id(word: str) -> bool:
    """``0x`` + hex digits, or hex digits only with both a digit and a letter (``deadbeef`` is a word)."""
    if word.startswith("0x") and len(word) > 2 and all(c in _HEX_DIGITS for c in word[2:]):
        return True
    return (
        all(c in _HEX_DIGITS for c in word)
        and any(c in _DIGITS for c in word)
        and any(c in _HEX_LETTERS for c in word)
    )


def _fold_word(match: re.Match[str]) -> str:
    word = match.group(0)
    return "<id>" if len(word) >= 6 and _is_hex_id(word) else word


@functools.lru_cache(maxsize=4096)
def normalize_reason(reason: str | None) -> str:
    """Fold the variable parts of a failure reason so similar failures group together.

    ``"timeout after 5012ms"`` and ``"timeout after 4990ms"`` both become
    ``"timeout after <n>ms"``; UUIDs become ``<uuid>`` and hex ids (with both
    letters and digits, 6+ characters) ``<id>``. Only the first line counts.
    """
    if not reason:
        return "<none>"
    reason = reason[:MAX_REASON_INPUT].strip()
    first = reason.splitlines()[0] if reason else ""
    text = _UUID.sub("<uuid>", first)
    text = _WORD.sub(_fold_word, text)
    text = _NUMBER.sub("<n>", text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_REASON_LENGTH:
        text = text[: MAX_REASON_LENGTH - 1] + "…"
    return text or "<none>"
