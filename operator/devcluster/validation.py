"""Validate an object the way a Kubernetes API server validates a custom resource.

Three layers, like kube-apiserver: the CRD's OpenAPI v3 schema (JSON Schema
draft 4 semantics: boolean ``exclusiveMinimum``), strict field validation
(unknown fields are errors, as with ``kubectl apply --validate=strict``,
except under ``x-kubernetes-preserve-unknown-fields``), and the CRD's CEL
rules (``x-kubernetes-validations``) evaluated with cel-python. Transition
rules (those using ``oldSelf``) run only when an old object is given.

Used by the API-server emulator (so ``kubectl apply`` of a bad spec is
refused with a message naming the field, in ``requeue demo`` and the e2e
tests) and by the model/schema agreement tests.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import re2
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

__all__ = ["as_decoded", "crds_by_kind", "schema_of", "validate"]


def crds_by_kind(directory: Path) -> dict[str, dict[str, Any]]:
    """Kind -> CRD document for every ``*.yaml`` file in ``directory``."""
    crds = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def schema_of(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of the (single) served version."""
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """``pattern`` as kube-apiserver (Go, RE2) reads it: ``$`` is the end of the text
    (Python's ``re`` also matches before a final newline) and ``\\s`` is ASCII only."""
    if validator.is_type(instance, "string") and not re2.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _re2_pattern})

_INT64 = range(-(2**63), 2**63)


def as_decoded(schema: dict[str, Any], obj: Any) -> Any:
    """``obj`` as kube-apiserver sees it after decoding the request body.

    Two things happen there before any validation: an integer outside int64
    becomes a float (so an integer field then fails its type check), and a
    ``null`` in a field that is not ``nullable`` is pruned (so ``verify: null``
    means the same as leaving ``verify`` out).
    """
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj if obj in _INT64 else float(obj)
    if isinstance(obj, list):
        return [as_decoded(schema.get("items", {}), item) for item in obj]
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        return {
            key: as_decoded(props.get(key, {}), value)
            for key, value in obj.items()
            if value is not None or key not in props or props[key].get("nullable")
        }
    return obj


def _schema_errors(schema: dict[str, Any], obj: Any) -> Iterator[str]:
    validator = _Validator(schema, format_checker=jsonschema.FormatChecker())
    for err in validator.iter_errors(obj):
        at = list(err.absolute_path)
        if err.validator == "required":  # kube-apiserver names the missing field itself
            missing = err.message.split("'")[1]
            yield f"{_path([*at, missing])}: Required value"
        else:
            yield f"{_path(at)}: {err.message}"


def _unknown_fields(schema: dict[str, Any], obj: Any, at: list[str | int]) -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key not in schema["properties"]:
                yield f'{_path([*at, key])}: unknown field "{key}"'
            else:
                yield from _unknown_fields(schema["properties"][key], value, [*at, key])
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in obj.items():
            yield from _unknown_fields(schema["additionalProperties"], value, [*at, key])
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            yield from _unknown_fields(schema["items"], item, [*at, i])


_CEL = celpy.Environment()


def _matches(text: str, pattern: str) -> Any:
    """CEL's ``matches()`` as kube-apiserver's cel-go runs it: a pattern RE2 refuses is an
    evaluation error whose text is RE2's reason, a plain line. cel-python's own hands RE2's reason
    on as bytes (shown as ``match error``) and lets RE2 log it from C++ to file descriptor 2,
    which is the terminal of ``requeue demo`` and the e2e tests' process (the server is in it)."""
    options = re2.Options()
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        return CELEvalError(f"error parsing regexp: {text}")
    return celpy.celtypes.BoolType(compiled.search(text) is not None)


@functools.lru_cache(maxsize=256)
def _program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule), functions={"matches": _matches})


def _cel_errors(schema: dict[str, Any], obj: Any, old: Any, at: list[str | int]) -> Iterator[str]:
    for rule in schema.get("x-kubernetes-validations", []):
        uses_old = "oldSelf" in rule["rule"]
        if uses_old and old is None:
            continue
        program = _program(rule["rule"])
        activation = {"self": json_to_cel(obj)}
        if uses_old:
            activation["oldSelf"] = json_to_cel(old)
        try:
            result = program.evaluate(activation)
        except CELEvalError as exc:
            yield f"{_path(at) or '<root>'}: Invalid value: rule evaluation error: {exc.args[0]}"
            continue
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and result):
            yield f"{_path(at) or '<root>'}: Invalid value: {rule['message']}"
    if isinstance(obj, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key in obj:
                old_value = old.get(key) if isinstance(old, dict) else None
                yield from _cel_errors(sub, obj[key], old_value, [*at, key])
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            yield from _cel_errors(schema["items"], item, None, [*at, i])


def validate(crd: Mapping[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Every error the API server would report, as ``field.path: message`` lines."""
    schema = schema_of(crd)
    obj = as_decoded(schema, obj)
    old = None if old is None else as_decoded(schema, old)
    errors = list(_schema_errors(schema, obj))
    errors += _unknown_fields(schema, obj, [])
    if not errors:  # CEL runs on schema-valid objects only, as in kube-apiserver
        errors += _cel_errors(schema, obj, old, [])
    return errors
