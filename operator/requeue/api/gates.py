"""Health gates: the runbook's Step 3 ("check the database, Redis and the
provider's API") as data. A replay starts only when every gate passes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from requeue.api.base import ApiModel, Duration, SecretKeyRef, StatusModel, cel_rules

#: A gate name: short, DNS-label-like, unique within a resource.
GateName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


class GateType(StrEnum):
    """Which kind of dependency a gate checks."""

    #: A Redis server: PING latency and memory use.
    REDIS = "redis"
    #: A PostgreSQL database: a query that must succeed.
    POSTGRES = "postgres"
    #: An HTTP API: status code and optionally a JSON field.
    HTTP = "http"


class RedisGate(ApiModel):
    """Redis is healthy when PING answers within maxLatency and memory use is below the limit."""

    url_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the Redis URL to check. Unset: the resource's own Redis.",
    )
    max_latency: Duration = Field(default="50ms", description="Highest acceptable PING round trip.")
    max_memory_percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Highest acceptable used_memory as a percentage of maxmemory. Unset: not checked.",
    )
    timeout: Duration = Field(default="5s", description="Time allowed for the whole check.")


class PostgresGate(ApiModel):
    """PostgreSQL is healthy when the query runs without error within the timeout."""

    dsn_secret_ref: SecretKeyRef = Field(
        description="Secret key holding a libpq connection string or postgresql:// URL.",
    )
    query: str = Field(
        default="SELECT 1",
        min_length=1,
        max_length=4096,
        description="Query to run; any error or timeout makes the gate unhealthy.",
    )
    timeout: Duration = Field(
        default="5s", description="Bound on connecting and on the query (statement_timeout)."
    )


class HeaderValueSource(ApiModel):
    """Where a header value comes from."""

    secret_key_ref: SecretKeyRef = Field(description="Secret key holding the header value.")


class HttpHeader(ApiModel):
    """One request header; its value literal or from a Secret (never shown in status)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ("has(self.value) != has(self.valueFrom)", "set exactly one of value or valueFrom")
        )
    )

    name: str = Field(
        min_length=1,
        max_length=256,
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Header name, e.g. Authorization.",
    )
    value: str | None = Field(default=None, max_length=8192, description="Literal header value.")
    value_from: HeaderValueSource | None = Field(
        default=None, description="Take the value from a Secret instead of `value`."
    )
    prefix: str = Field(default="", max_length=64, description='Prepended to the value, e.g. "Bearer ".')

    @model_validator(mode="after")
    def _one_source(self) -> HttpHeader:
        if (self.value is None) == (self.value_from is None):
            raise ValueError("set exactly one of value or valueFrom")
        return self


class HttpGate(ApiModel):
    """An HTTP API is healthy when it answers an expected status (and JSON value) in time."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ("has(self.jsonPath) == has(self.equals)", "jsonPath and equals go together")
        )
    )

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://[^\t\n\v\f\r ]+$",
        description="URL to request (http or https).",
    )
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = Field(
        default="GET", description="HTTP method."
    )
    headers: list[HttpHeader] = Field(default_factory=list, max_length=32, description="Request headers.")
    body: str | None = Field(default=None, max_length=65536, description="Request body.")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200],
        min_length=1,
        description="Status codes that count as healthy.",
    )
    json_path: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^\$(\.[A-Za-z0-9_-]+|\[[0-9]+\])*$",
        description='Simple JSONPath into the response body, e.g. "$.status" or "$.checks[0].ok".',
    )
    equals: Any = Field(
        default=None,
        description="Value the jsonPath must equal (string, number, boolean). Required with jsonPath.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    timeout: Duration = Field(default="5s", description="Bound on the whole request.")
    ca_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a PEM CA bundle to verify the server with."
    )
    follow_redirects: bool = Field(default=False, description="Follow 3xx redirects.")

    @model_validator(mode="after")
    def _path_needs_value(self) -> HttpGate:
        if (self.json_path is None) != (self.equals is None):
            raise ValueError("jsonPath and equals go together")
        return self


class GateSpec(ApiModel):
    """A named health check; set exactly one of redis, postgres or http."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "[has(self.redis), has(self.postgres), has(self.http)].filter(x, x).size() == 1",
                "set exactly one of redis, postgres or http",
            )
        )
    )

    name: GateName = Field(description="Unique name of the gate within this resource.")
    redis: RedisGate | None = Field(default=None, description="Check a Redis server.")
    postgres: PostgresGate | None = Field(default=None, description="Check a PostgreSQL database.")
    http: HttpGate | None = Field(default=None, description="Check an HTTP API.")

    @model_validator(mode="after")
    def _exactly_one(self) -> GateSpec:
        if sum(x is not None for x in (self.redis, self.postgres, self.http)) != 1:
            raise ValueError(f"gate {self.name!r}: set exactly one of redis, postgres or http")
        return self

    @property
    def type(self) -> GateType:
        """Which of the three checks this gate is."""
        if self.redis is not None:
            return GateType.REDIS
        if self.postgres is not None:
            return GateType.POSTGRES
        return GateType.HTTP


class GatePolicy(ApiModel):
    """How often gates are checked and how many results in a row count."""

    interval: Duration = Field(default="10s", description="Time between two checks of each gate.")
    timeout: Duration = Field(
        default="30m",
        description="How long to wait for all gates to pass before failing with GatesTimedOut.",
    )
    success_threshold: int = Field(
        default=1, ge=1, le=100, description="Consecutive passes before a gate counts as healthy."
    )
    failure_threshold: int = Field(
        default=1, ge=1, le=100, description="Consecutive failures before a healthy gate counts as red."
    )
    recheck_during_replay: bool = Field(
        default=True, description="Keep checking while replaying and hold the replay while any gate is red."
    )


class GateStatus(StatusModel):
    """The last observed state of one gate."""

    name: str = Field(description="Gate name.")
    type: GateType = Field(description="redis, postgres or http.")
    healthy: bool = Field(description="Whether the gate currently counts as healthy.")
    message: str = Field(default="", description="Result of the last check, secrets redacted.")
    latency_ms: float | None = Field(default=None, description="Duration of the last check in ms.")
    last_checked_at: datetime | None = Field(default=None, description="When it was last checked.")
    consecutive_successes: int = Field(default=0, description="Passes in a row.")
    consecutive_failures: int = Field(default=0, description="Failures in a row.")
    misconfigured: str | None = Field(
        default=None,
        description="Set when the last check could not run because of the gate's configuration: "
        "the reason (SecretNotFound, DestinationDenied, RedisUrlInvalid, GateMisconfigured; the message "
        "names the Secret or host). Such a gate is neither red nor green: healthy and the counters keep "
        "their previous values, and nothing is paused, resumed or replayed because of it.",
    )
