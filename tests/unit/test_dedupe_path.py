"""``selector.dedupeBy``'s JSON path subset and how a job's value becomes the key it is deduplicated by."""

from __future__ import annotations

import json
from typing import Any

import pytest

from requeue.api.jsonpath import MAX_SEGMENTS, JsonPathError, PathProblem, parse_json_path
from requeue.queues import FailedJob
from requeue.replay.dedupe import MAX_KEY_LENGTH, dedupe_key


def job(data: Any, *, raw: str | None = None) -> FailedJob:
    return FailedJob(
        id="1", finished_on=0, name="n", failed_reason="r", data=raw if raw is not None else json.dumps(data)
    )


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("$.orderId", ("orderId",)),
        ("$.order.items[0].sku", ("order", "items", 0, "sku")),
        ("$[2]", (2,)),
        ("$._x-y.a1", ("_x-y", "a1")),
        ("$" + ".a" * MAX_SEGMENTS, ("a",) * MAX_SEGMENTS),
    ],
)
def test_the_subset_parses(path: str, segments: tuple[Any, ...]) -> None:
    assert parse_json_path(path).segments == segments


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("orderId", PathProblem.NOT_ROOTED),
        ("", PathProblem.NOT_ROOTED),
        ("$", PathProblem.NO_SEGMENT),
        ("$..a", PathProblem.UNSUPPORTED_SEGMENT),
        ("$.a[*]", PathProblem.UNSUPPORTED_SEGMENT),
        ("$.a[?(@.b)]", PathProblem.UNSUPPORTED_SEGMENT),
        ("$['a']", PathProblem.UNSUPPORTED_SEGMENT),
        ("$.a[-1]", PathProblem.UNSUPPORTED_SEGMENT),
        ("$.a[1:2]", PathProblem.UNSUPPORTED_SEGMENT),
        ("$.a\n", PathProblem.UNSUPPORTED_SEGMENT),
        ("$.é", PathProblem.UNSUPPORTED_SEGMENT),
        ("$" + ".a" * (MAX_SEGMENTS + 1), PathProblem.TOO_LONG),
        ("$." + "a" * 300, PathProblem.TOO_LONG),
    ],
)
def test_outside_the_subset_is_refused_naming_why(path: str, problem: PathProblem) -> None:
    with pytest.raises(JsonPathError) as exc:
        parse_json_path(path)
    assert exc.value.problem == problem
    assert f"({problem.value})" in str(exc.value)


def test_a_path_finds_one_value_without_coercion() -> None:
    path = parse_json_path("$.order.items[1].sku")
    assert path.find({"order": {"items": [{"sku": 1}, {"sku": "b"}]}}) == (True, "b")
    assert path.find({"order": {"items": [{"sku": 1}]}}) == (False, None)  # index past the end
    assert path.find({"order": {"items": {"1": {"sku": "b"}}}}) == (False, None)  # an index needs a list
    assert path.find({"order": [{"items": []}]}) == (False, None)  # a name needs an object
    assert path.find("not an object") == (False, None)


def test_keys_compare_as_json_and_missing_or_null_values_have_none() -> None:
    path = parse_json_path("$.k")
    assert dedupe_key(path, job({"k": "42"})) == dedupe_key(path, job({"k": 42})) == "42"
    assert dedupe_key(path, job({"k": {"b": 1, "a": [1, 2]}})) == '{"a":[1,2],"b":1}'
    assert dedupe_key(path, job({"k": {"a": [1, 2], "b": 1}})) == '{"a":[1,2],"b":1}'
    assert dedupe_key(path, job({"k": True})) == "true"
    assert dedupe_key(path, job({"k": None})) is None
    assert dedupe_key(path, job({"other": 1})) is None
    assert dedupe_key(path, job(None, raw='{"k": "trunc')) is None


def test_a_long_value_is_keyed_by_its_hash() -> None:
    path = parse_json_path("$.k")
    long_value = "x" * (MAX_KEY_LENGTH + 1)
    key = dedupe_key(path, job({"k": long_value}))
    assert key is not None and key.startswith("sha256:") and len(key) == len("sha256:") + 64
    assert key != dedupe_key(path, job({"k": long_value + "y"}))
    assert dedupe_key(path, job({"k": "x" * MAX_KEY_LENGTH})) == "x" * MAX_KEY_LENGTH


def test_hostile_data_costs_one_parse_and_one_walk() -> None:
    # deeply nested data beside the path and a huge value elsewhere: the walk reads only the path
    nested: Any = "leaf"
    for _ in range(500):
        nested = {"n": nested}
    data = {"k": "v", "deep": nested, "big": "x" * 2_000_000, "list": list(range(100_000))}
    assert dedupe_key(parse_json_path("$.k"), job(data)) == "v"
    assert dedupe_key(parse_json_path("$.list[99999]"), job(data)) == "99999"
