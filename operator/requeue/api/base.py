"""Building blocks shared by every API model: camelCase wire names, durations,
Secret references and Kubernetes-style conditions.

The pydantic models are the single source of truth: ``requeue crds`` turns
them into the CRD schemas, so a ``Field(description=...)`` here is what
``kubectl explain`` prints.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Protocol

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from requeue.api.conditions import ConditionType, Reason

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: A duration such as ``500ms``, ``30s``, ``15m``, ``2h``, ``7d`` or ``1h30m``.
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]

#: Whitespace spelled out: ``\s`` means ASCII whitespace to the API server's RE2 but
#: Unicode whitespace to pydantic's regex engine, and the two judges must agree.
_NO_SPACE = r"\t\n\v\f\r "

#: A BullMQ queue name. BullMQ refuses ``:`` in queue names (it separates key parts).
QueueName = Annotated[str, Field(min_length=1, max_length=200, pattern=rf"^[^:{_NO_SPACE}]+$")]

#: A Kubernetes object name (RFC 1123 subdomain).
ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]

#: The key prefix BullMQ was configured with (``prefix`` option, ``bull`` by default).
KeyPrefix = Annotated[str, Field(min_length=1, max_length=100, pattern=rf"^[^{_NO_SPACE}]+$")]

#: The largest integer the API server stores (int64); a bound for counts with no natural one.
INT64_MAX = 2**63 - 1

#: The largest number of seconds a duration-in-seconds field takes (int32, as a Job's
#: ``ttlSecondsAfterFinished``): about 68 years, so adding it to a date cannot overflow.
SECONDS_MAX = 2**31 - 1

#: An RFC 3339 timestamp with a time zone, as CEL's ``timestamp()`` parses it.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)


def _rfc3339_text(value: object) -> object:
    """Let only RFC 3339 text through to pydantic's (much laxer) datetime parsing.

    Pydantic alone would take ``1752656400``, ``"2025-07-16 09:00:00Z"`` or a
    lower-case ``t``; the API server refuses them, so the CLI must too.
    Datetimes built in Python pass as they are.
    """
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.fullmatch(RFC3339_PATTERN, value):
        raise ValueError(
            f"{value!r} is not an RFC 3339 timestamp with a time zone, e.g. 2025-07-16T09:00:00Z"
        )
    return value


#: An instant written as RFC 3339 text with a time zone (``2025-07-16T09:00:00Z``).
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_text),
    Field(strict=False, json_schema_extra={"pattern": RFC3339_PATTERN}),
]


def cel_rules(*rules: tuple[str, str]) -> JsonDict:
    """``json_schema_extra`` carrying CEL rules (rule, message) into the CRD schema.

    They mirror a pydantic validator of the same model, so the API server rejects
    what the model rejects (API servers without CEL still get the operator's check).
    """
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


def parse_duration(value: str) -> timedelta:
    """Turn ``"1h30m"`` into a timedelta; raises ValueError on anything else."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use e.g. 500ms, 30s, 15m, 2h, 7d")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))
    return timedelta(seconds=seconds)


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected.

    Strict, so ``batchSize: "5"`` or ``suspend: 0`` fail here exactly as the API
    server's schema fails them; the CLI and the operator must judge alike.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        use_enum_values=False,
        validate_default=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """A field set to ``null`` counts as not set, as the API server prunes such nulls.

        (Kubernetes drops nulls of non-nullable fields before validating, so
        ``verify: null`` applies fine with kubectl and must load here too.)
        """
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict Kubernetes stores (camelCase, unset optionals omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Base of status models: tolerant of fields written by newer versions."""

    model_config = ConfigDict(extra="ignore", strict=False)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's own namespace.

    There is deliberately no ``namespace`` field: a resource can only read
    Secrets of its own namespace, so RBAC in one namespace cannot be used to
    read another's credentials.
    """

    name: ObjectName = Field(description="Name of a Secret in the same namespace as this resource.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret's data whose value is used.",
    )


class ConditionStatus(StrEnum):
    """Whether a condition holds, per the Kubernetes API conventions."""

    #: The condition holds.
    TRUE = "True"
    #: The condition does not hold.
    FALSE = "False"
    #: Not known yet.
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One observation of the resource, keyed by ``type`` (Kubernetes API conventions)."""

    type: str = Field(description="CamelCase condition type, e.g. Ready, GatesPassed, Healthy.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason for the last transition.")
    message: str = Field(default="", description="Human-readable details; never contains secrets.")
    last_transition_time: datetime = Field(
        description="When the status last changed (RFC 3339).",
    )
    observed_generation: int = Field(
        default=0, description="The .metadata.generation this condition was computed from."
    )


class HasConditions(Protocol):
    """A status (or a ledger of one) that holds conditions."""

    conditions: list[Condition]


def set_condition(
    owner: HasConditions,
    type: ConditionType,
    status: bool | ConditionStatus,
    reason: Reason,
    message: str,
    generation: int,
    now: datetime,
) -> None:
    """Set condition ``type`` of ``owner``, like ``meta.SetStatusCondition``: the one setter.

    ``lastTransitionTime`` only moves when the status flips, so watchers can tell
    how long a condition has held.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    before = find_condition(owner.conditions, type)
    changed = before is None or before.status != status
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or before is None else before.last_transition_time,
        observed_generation=generation,
    )
    if before is None:
        owner.conditions = [*owner.conditions, updated]
    else:
        owner.conditions = [updated if c.type == type else c for c in owner.conditions]


def find_condition(conditions: list[Condition], type: ConditionType) -> Condition | None:
    """The condition of that type, if any."""
    return next((c for c in conditions if c.type == type), None)
