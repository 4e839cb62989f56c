"""Globs turned into Lua patterns for the in-Redis name prefilter agree with fnmatch."""

from __future__ import annotations

import fnmatch

import lupa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from requeue.queues import glob_to_lua

NAMES = [
    "whatsapp.send",
    "whatsapp.status",
    "whatsappXsend",
    "pdf.generate",
    "email.send",
    "a%b",
    "a.b",
    "x(1)",
    "job-1",
    "job-2",
    "Job-3",
    "",
    "send",
    "sms+send",
    "q?",
    "[x]",
]
GLOBS = [
    "whatsapp.*",
    "*.send",
    "whatsapp.s?nd",
    "*",
    "job-[12]",
    "job-[!1]",
    "a%b",
    "a.b",
    "x(1)",
    "sms+send",
    "pdf.generate",
    "[Jj]ob-*",
    "*send",
    "wh?tsapp*",
]


@pytest.fixture(scope="module")
def lua_find() -> lupa.LuaRuntime:
    return lupa.LuaRuntime().eval("function(s, p) return string.find(s, p) ~= nil end")


@pytest.mark.parametrize("glob", GLOBS)
def test_lua_pattern_matches_like_fnmatch(glob: str, lua_find: lupa.LuaRuntime) -> None:
    pattern = glob_to_lua(glob)
    assert pattern is not None
    for name in NAMES:
        assert lua_find(name, pattern) == fnmatch.fnmatchcase(name, glob), (glob, name, pattern)


@pytest.mark.parametrize("glob", ["job-[", "a[%]b", "x[]", "*s*t*", "*a*a*a*b"])
def test_unsure_globs_are_not_prefiltered(glob: str) -> None:
    assert glob_to_lua(glob) is None


@given(st.text(alphabet="ab*?.[]!%-", max_size=12))
def test_a_prefilter_pattern_never_backtracks_more_than_once(glob: str) -> None:
    """Job names are data requeue does not control, and the prefilter runs inside Redis: a
    pattern with two backtracking items (``.*``) is polynomial in the name's length."""
    pattern = glob_to_lua(glob)
    if pattern is not None:
        assert pattern.count(".*") <= 1, (glob, pattern)


def test_many_stars_are_matched_in_python_on_a_long_name() -> None:
    name = "a" * 100_000
    assert glob_to_lua("*a*a*a*b") is None
    assert fnmatch.fnmatchcase(name, "*a*a*a*b") is False  # CPython's fnmatch: linear
