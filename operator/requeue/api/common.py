"""Models shared by DLQReplay and QueuePolicy: how to reach Redis and how fast to replay."""

from __future__ import annotations

from typing import Annotated, Any

import re2
from pydantic import ConfigDict, Field, field_validator, model_validator

from requeue.api.base import INT64_MAX, ApiModel, SecretKeyRef, Timestamp, cel_rules
from requeue.api.jsonpath import MAX_PATH_LENGTH, PATH_PATTERN, parse_json_path


def compile_re2(pattern: str) -> Any:
    """Compile a user's RE2 pattern (a ``re2._Regexp``); ValueError carries RE2's reason as text.

    RE2 logs a rejected pattern from C++ straight to file descriptor 2 (absl's
    ``WARNING: All log messages before absl::InitializeLog()`` and an ``re2.cc``
    line) and google-re2 raises its reason as bytes. ``log_errors`` off and the
    reason decoded, a bad pattern is one line naming the field, in the CLI, the
    status and the Event.
    """
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(f"not a valid RE2 regular expression: {text}") from None


#: A job name or a glob over job names (``*``, ``?``, ``[abc]``), e.g. ``whatsapp.*``.
JobNamePattern = Annotated[str, Field(min_length=1, max_length=256)]


class RedisTls(ApiModel):
    """TLS settings for Redis; a ``rediss://`` URL turns TLS on by itself."""

    ca_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a PEM CA bundle to verify the server with."
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server certificate. For testing only."
    )
    cert_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the client certificate (PEM), for a server that "
        "requires one (tls-auth-clients); with keySecretRef.",
    )
    key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the client certificate's private key (PEM).",
    )

    @model_validator(mode="after")
    def _cert_with_key(self) -> RedisTls:
        if (self.cert_secret_ref is None) != (self.key_secret_ref is None):
            raise ValueError("certSecretRef and keySecretRef go together: a client certificate needs its key")
        return self


class RedisConnection(ApiModel):
    """Where the BullMQ data lives. The URL (with any password) comes from a Secret."""

    url_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the Redis URL, e.g. rediss://default:PASSWORD@host:6379.",
    )
    db: int | None = Field(
        default=None, ge=0, le=1023, description="Database number; overrides the one in the URL."
    )
    tls: RedisTls | None = Field(default=None, description="TLS settings.")


#: The time window's CEL rule (rule, message), also carried by the DLQReplay's own selector.
WINDOW_RULE = (
    "!has(self.failedAfter) || !has(self.failedBefore)"
    " || timestamp(self.failedAfter) < timestamp(self.failedBefore)",
    "failedAfter must be earlier than failedBefore",
)


#: :data:`PATH_PATTERN` inside a CEL string literal (backslashes escaped).
_CEL_PATH_PATTERN = PATH_PATTERN.replace("\\", "\\\\")


class Selector(ApiModel):
    """Which failed jobs to pick. All set filters must match (AND); an empty selector picks all."""

    model_config = ConfigDict(json_schema_extra=cel_rules(WINDOW_RULE))

    job_names: list[JobNamePattern] = Field(
        default_factory=list,
        max_length=100,
        description="Job names or globs (e.g. whatsapp.*); a job matches if any entry does.",
    )
    failed_reason_pattern: str | None = Field(
        default=None,
        max_length=1024,
        description="RE2 regular expression searched in the job's failedReason, e.g. '429|rate limit'.",
        # The API server's CEL compiles the pattern (an invalid one is an evaluation error);
        # ``type(...) == bool`` keeps that error from being absorbed as ``||`` would absorb it.
        json_schema_extra=cel_rules(
            ("type(''.matches(self)) == bool", "failedReasonPattern must be a valid RE2 regular expression")
        ),
    )
    data_match: dict[str, Any] | None = Field(
        default=None,
        description="JSON object that must be a subset of the job data; nested objects compare recursively.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    failed_after: Timestamp | None = Field(
        default=None, description="Only jobs that failed at or after this time (RFC 3339)."
    )
    failed_before: Timestamp | None = Field(
        default=None, description="Only jobs that failed before this time (RFC 3339)."
    )
    max_jobs: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Replay at most this many (oldest failures first; with dedupeBy, kept jobs count).",
    )
    dedupe_by: str | None = Field(
        default=None,
        description=(
            "JSON path into the job data naming a job's logical identity, e.g. $.orderId or "
            "$.order.items[0].sku (only .name and [index] steps). Of the matching failed jobs with "
            "the same value there, only the newest (last failed) is replayed; the others stay "
            "failed and are counted in status.duplicates. Jobs whose data lacks the path (or holds "
            "null there) are not deduplicated: each is replayed and counted in status.noDedupeKey. "
            "Needs mode Exact."
        ),
        json_schema_extra={
            "maxLength": MAX_PATH_LENGTH,
            **cel_rules(
                (
                    f"self.matches('{_CEL_PATH_PATTERN}')",
                    "dedupeBy must be a JSON path made of $ and .name or [index] steps, e.g. $.orderId "
                    "or $.items[0].sku (no wildcards, filters or quotes)",
                )
            ),
        },
    )

    @field_validator("failed_reason_pattern")
    @classmethod
    def _compiles_in_re2(cls, value: str | None) -> str | None:
        if value is not None:
            compile_re2(value)
        return value

    @field_validator("dedupe_by")
    @classmethod
    def _supported_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_json_path(value)
        return value

    @model_validator(mode="after")
    def _window_in_order(self) -> Selector:
        if self.failed_after and self.failed_before and self.failed_after >= self.failed_before:
            raise ValueError("failedAfter must be earlier than failedBefore")
        return self


class Rate(ApiModel):
    """How fast jobs go back to the queue, so the replay does not flood workers or Redis."""

    jobs_per_second: float = Field(
        default=100, gt=0, le=1_000_000, description="Average replay rate (token bucket)."
    )
    batch_size: int = Field(default=200, ge=1, le=1000, description="Jobs moved per Redis round trip.")
    max_waiting: int | None = Field(
        default=None,
        ge=1,
        le=INT64_MAX,
        description="Hold the replay while the queue's waiting backlog is above this. Unset: no bound.",
    )
