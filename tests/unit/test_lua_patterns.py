"""requeue's own Lua applies no Lua pattern to job data that could backtrack.

Those scripts run inside Redis: a superlinear match on a long job name, reason or data
string holds every other client of that Redis. Lua patterns backtrack at ``*``, ``-``
and ``+`` items; a pattern with two of them (or a lazy ``.-`` followed by another
repetition) is polynomial in the subject's length. Every pattern-applying call in the
scripts is listed here, with why it is linear: a new one fails this test until it is
reviewed and added.
"""

from __future__ import annotations

import re

from requeue.queues import by_id, lua

REVIEWED = {
    # a glob from spec.selector.jobNames, via queues.glob_to_lua: at most one ".*" (O(n*m))
    "string.find(name, ARGV[p])",
    # a plain find (4th argument true): no pattern at all
    "string.find(f[4], '\"lifo\":true', 1, true)",
    # one character class, no repetition: one pass
    'string.gsub(k, "%d", "0")',
}

CALL = re.compile(r"string\.(?:find|match|gmatch|gsub)\([^()\n]*(?:\([^()\n]*\)[^()\n]*)*\)")


def scripts() -> dict[str, str]:
    return {
        name: value
        for module in (lua, by_id)
        for name, value in vars(module).items()
        if isinstance(value, str) and ("redis.call" in value or "rcall(" in value)
    }


def test_every_pattern_applied_in_redis_is_reviewed() -> None:
    found = {call for text in scripts().values() for call in CALL.findall(_code(text))}
    assert found == REVIEWED


def test_the_json_shape_check_trims_by_bytes_not_by_pattern() -> None:
    assert "json_ok" in scripts()["SELECT_WINDOW"]
    assert ".-" not in _code(scripts()["SELECT_WINDOW"])


def _code(text: str) -> str:
    """The script without its ``--`` comments."""
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())
