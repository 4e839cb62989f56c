"""Reason normalisation, the JSON subset test and the selector matcher."""

from __future__ import annotations

import pytest

from requeue.api import Selector
from requeue.queues import FailedJob
from requeue.replay import Matcher, is_subset, normalize_reason


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("timeout after 5012ms", "timeout after 4990ms"),
        (
            "job 3f2a9c1e-1234-4abc-8def-0123456789ab failed",
            "job 00000000-1111-4222-8333-444444444444 failed",
        ),
        ("order deadbeef12 not found", "order 0a1b2c3d4e not found"),
        ("Request failed with status code 429", "Request failed with status code 503"),
    ],
)
def test_similar_reasons_group_together(a: str, b: str) -> None:
    assert normalize_reason(a) == normalize_reason(b)


def test_different_reasons_stay_apart_and_are_bounded() -> None:
    assert normalize_reason("ECONNRESET") != normalize_reason("ETIMEDOUT")
    assert normalize_reason(None) == "<none>"
    assert normalize_reason("boom\n    at stack line 12") == "boom"
    assert len(normalize_reason("x" * 10_000)) <= 160


def test_subset() -> None:
    data = {"tenant": "acme", "order": {"region": "eu", "n": 1}, "tags": [1, 2], "flag": True}
    assert is_subset({}, data)
    assert is_subset({"order": {"region": "eu"}}, data)
    assert is_subset({"tags": [1, 2]}, data)
    assert not is_subset({"tags": [1]}, data)
    assert not is_subset({"order": {"region": "us"}}, data)
    assert not is_subset({"missing": None}, data)
    assert not is_subset({"flag": 1}, data)  # true is not 1 in JSON
    assert not is_subset({"order": {"n": 1}}, {"order": "n"})


def job(name: str = "a", reason: str = "r", data: str = "{}") -> FailedJob:
    return FailedJob(id="1", finished_on=0, name=name, failed_reason=reason, data=data)


def test_matcher_and_corruption() -> None:
    m = Matcher(Selector(job_names=["wa.*"], failed_reason_pattern="429", data_match={"t": 1}))
    assert m.matches(job("wa.send", "HTTP 429", '{"t": 1, "u": 2}'))
    assert not m.matches(job("sms.send", "HTTP 429", '{"t": 1}'))
    assert not m.matches(job("wa.send", "HTTP 500", '{"t": 1}'))
    assert not m.matches(job("wa.send", "HTTP 429", '{"t": 2}'))
    assert not Matcher(Selector(job_names=["x"])).only_time_window
    assert Matcher(Selector()).only_time_window
    assert job(data="{oops").corrupt_reason == "job data is not JSON"
    assert FailedJob(id="1", finished_on=0, name=None, failed_reason=None, data=None).corrupt_reason
    assert job().corrupt_reason is None
