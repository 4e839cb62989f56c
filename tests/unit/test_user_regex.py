"""A user's RE2 pattern that does not compile: one line naming the field and RE2's reason as text,
nothing from RE2's C++ logging on file descriptor 2, no bytes repr."""

from __future__ import annotations

import pytest

from requeue.api import DLQReplaySpec, Selector
from requeue.api.loading import parse
from requeue.errors import SpecInvalid
from requeue.queues import FailedJob
from requeue.replay import Matcher

BAD = {
    "(unclosed": "missing ): (unclosed",
    "a**": "bad repetition operator: **",
    "x{2,1}": "invalid repetition size: {2,1}",
}


@pytest.mark.parametrize(("pattern", "reason"), BAD.items())
def test_the_model_names_the_field_and_re2s_reason_as_text(
    pattern: str, reason: str, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "redis": {"urlSecretRef": {"name": "redis", "key": "url"}},
        "queue": "default",
        "selector": {"failedReasonPattern": pattern},
    }
    with pytest.raises(SpecInvalid) as caught:
        parse(DLQReplaySpec, spec, name="ops/r1")
    assert caught.value.message == (
        "ops/r1: invalid DLQReplaySpec: selector.failedReasonPattern: "
        f"not a valid RE2 regular expression: {reason}"
    )
    out, err = capfd.readouterr()  # fd-level: what RE2's C++ would have logged
    assert (out, err) == ("", "")


def test_a_valid_pattern_still_matches(capfd: pytest.CaptureFixture[str]) -> None:
    matcher = Matcher(Selector(failed_reason_pattern="429|[Rr]ate limit"))

    def job(reason: str) -> FailedJob:
        return FailedJob(id="1", finished_on=0, name="whatsapp.send", failed_reason=reason, data="{}")

    assert matcher.matches(job("HTTP 429 Too Many Requests"))
    assert not matcher.matches(job("timeout"))
    assert capfd.readouterr() == ("", "")
