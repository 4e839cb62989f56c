"""The post-replay smoke test: the runbook's "Recovery Verification, step 3: test workflow trigger".

Replayed jobs completing proves the old jobs went through; it does not prove a new request
still makes it through the whole path (API -> queue -> worker). ``spec.verify.smokeTest``
sends one HTTP request after verification passed (the HTTP gate's model: method, URL,
headers and body, values from Secrets, the same destination policy) and can wait for the
job it triggers to complete in a named queue. The replay succeeds only if it passes.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from requeue.api.base import ApiModel, Duration, QueueName, StatusModel, cel_rules
from requeue.api.gates import HeaderValueSource, HttpGate

__all__ = [
    "MAX_SMOKE_RETRIES",
    "MAX_SMOKE_TIMEOUT",
    "SmokeTest",
    "SmokeTestResult",
    "SmokeTestStatus",
    "WaitForJob",
]

#: Most retries a smoke test may ask for: a smoke test that needs more is not passing.
MAX_SMOKE_RETRIES = 10
#: Longest a smoke request may take (seconds); a longer ``timeout`` is cut to this.
MAX_SMOKE_TIMEOUT = 30.0


class WaitForJob(ApiModel):
    """The job the smoke request triggers: added to ``queue`` after the request was sent."""

    queue: QueueName = Field(description="Queue (same Redis and prefix) the triggered job is added to.")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Job name to wait for. Unset: any job added after the request was sent.",
    )
    timeout: Duration = Field(
        default="5m",
        description="How long after the request such a job may take to complete; a failed one fails "
        "the smoke test at once. Jobs removed on completion (removeOnComplete) cannot be seen.",
    )


class SmokeTest(HttpGate):
    """One HTTP request after verification passed, expected to answer a status (and JSON value),
    optionally followed by the job it triggers completing. Sent through the operator's gate
    destination policy (gates.allowedDestinations, gates.deniedDestinations)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ("has(self.jsonPath) == has(self.equals)", "jsonPath and equals go together"),
            ("!(has(self.body) && has(self.bodyFrom))", "set at most one of body or bodyFrom"),
        )
    )

    timeout: Duration = Field(
        default="10s",
        description="Bound on the whole request; at most 30s is used (the replay's queue lease is "
        "renewed between steps, not during one).",
    )
    body_from: HeaderValueSource | None = Field(
        default=None, description="Take the request body from a Secret instead of `body` (never shown)."
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=MAX_SMOKE_RETRIES,
        description="Requests sent again after a failed one (a wrong status, JSON value or no "
        "answer), each after retryDelay. A denied destination is not retried.",
    )
    retry_delay: Duration = Field(default="5s", description="Wait between two requests.")
    wait_for_job: WaitForJob | None = Field(
        default=None, description="After the request passed, wait for the job it triggers to complete."
    )

    @model_validator(mode="after")
    def _one_body(self) -> SmokeTest:
        if self.body is not None and self.body_from is not None:
            raise ValueError("set at most one of body or bodyFrom")
        return self


class SmokeTestResult(StrEnum):
    """Where a replay's smoke test is."""

    #: Sending the request (or waiting retryDelay to send it again).
    SENDING = "Sending"
    #: The request passed; waiting for the job it triggered.
    WAITING_FOR_JOB = "WaitingForJob"
    #: The request (and the job) passed.
    PASSED = "Passed"
    #: It did not pass; the replay Failed with reason SmokeTestFailed (or DestinationDenied).
    FAILED = "Failed"


class SmokeTestStatus(StatusModel):
    """What the smoke test found; recorded in Redis, so a resumed replay does not send it again
    once it passed."""

    result: SmokeTestResult = Field(description="Sending, WaitingForJob, Passed or Failed.")
    attempts: int = Field(default=0, description="Requests sent so far.")
    message: str = Field(
        default="", description="The last answer: status and a short excerpt of the body, secrets redacted."
    )
    job_id: str | None = Field(default=None, description="The triggered job that completed (or failed).")
