"""Immutable spec fields: a replay keeps the values it started with for its whole life.

``redis``, ``prefix``, ``queue``, ``selector``, ``targetQueue`` and ``dryRun`` are
pinned at the first step (the operator stores them in the annotation
:data:`PIN_ANNOTATION`). The CRD's CEL rules reject edits on API servers that run
CEL; on those that do not, the pinned values stay in use and the edit is reported
(condition ``SpecIgnored``, reason ``ImmutableFieldChanged``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from requeue.api import DLQReplaySpec
from requeue.api.loading import parse
from requeue.api.resources import GROUP
from requeue.replay.state import changed_fields, spec_values

__all__ = [
    "PINNED_FIELDS",
    "PIN_ANNOTATION",
    "cleanup_spec",
    "pin_text",
    "pinned_values",
    "read_pin",
    "with_pinned",
]

#: Annotation holding the spec fields a replay keeps for its whole life (JSON).
PIN_ANNOTATION = f"{GROUP}/pinned-spec"
#: Spec fields (wire names) that never change once a replay has taken its first step.
PINNED_FIELDS = ("redis", "prefix", "queue", "selector", "targetQueue", "dryRun")


def pinned_values(spec: DLQReplaySpec) -> dict[str, Any]:
    """The pinned fields of ``spec`` (wire form; None for unset)."""
    return spec_values(spec, PINNED_FIELDS)


def pin_text(pin: Mapping[str, Any]) -> str:
    """The annotation's value for ``pin``."""
    return json.dumps(pin, sort_keys=True)


def with_pinned(spec: DLQReplaySpec, pinned: Mapping[str, Any]) -> tuple[DLQReplaySpec, list[str]]:
    """``spec`` with its pinned fields put back; also the names of the fields that had changed."""
    wire = spec.to_wire()
    changed = changed_fields(pinned, wire, PINNED_FIELDS)
    if not changed:
        return spec, []
    for key in PINNED_FIELDS:
        if pinned.get(key) is None:
            wire.pop(key, None)
        else:
            wire[key] = pinned[key]
    return DLQReplaySpec.model_validate(wire), changed


def read_pin(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pinned fields from the object's annotation, if it carries a readable one."""
    raw = (body.get("metadata", {}).get("annotations") or {}).get(PIN_ANNOTATION)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def cleanup_spec(body: Mapping[str, Any]) -> DLQReplaySpec:
    """The spec a deletion cleans up after: the live one with the pinned fields put back.

    :raises SpecInvalid: the live spec does not validate.
    """
    spec = parse(DLQReplaySpec, dict(body.get("spec") or {}))
    pin = read_pin(body)
    return with_pinned(spec, pin)[0] if pin else spec
