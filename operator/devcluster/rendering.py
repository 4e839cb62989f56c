"""What ``kubectl get`` shows: the JSONPath subset of CRD printer columns, and server-side Tables.

kube-apiserver answers ``kubectl get`` (``Accept: application/json;as=Table;...``)
with a ``meta.k8s.io/v1`` Table whose columns come from the CRD's
``additionalPrinterColumns`` (or built-in ones for core kinds); kubectl only
prints it. The emulator does the same with the functions here, and
:func:`text_table` lays the same columns out as kubectl's plain printer does,
for callers without kubectl. No kmock here: plain dicts in, plain dicts out.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "AGE_COLUMN",
    "BUILTIN_COLUMNS",
    "NAME_COLUMN",
    "Column",
    "columns_for_crd_version",
    "human_age",
    "jsonpath",
    "table",
    "text_table",
]

#: A Table column: its definition (as sent to kubectl) and how to compute a cell from an object.
Column = tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]

_JSONPATH_TOKEN = re.compile(
    r"""\.(?P<key>[^.\[]+)|\[(?P<idx>\d+)\]|\[\*\]|\[\?\(@\.(?P<fkey>[\w.-]+)\s*==\s*["'](?P<fval>[^"']*)["']\)\]"""
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset CRD printer columns use; return all matches.

    ``.a.b``, ``[0]``, ``[*]`` and ``[?(@.type=="Ready")]``; anything else is a ValueError
    naming the position, so an unsupported column fails at registration, not silently.
    """
    values, pos = [obj], 0
    for m in _JSONPATH_TOKEN.finditer(path):
        if m.start() != pos:
            raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
        pos = m.end()
        found: list[Any] = []
        for v in values:
            if m["key"] is not None and isinstance(v, dict) and m["key"] in v:
                found.append(v[m["key"]])
            elif m["idx"] is not None and isinstance(v, list) and int(m["idx"]) < len(v):
                found.append(v[int(m["idx"])])
            elif m["fkey"] is not None and isinstance(v, list):
                found += [x for x in v if isinstance(x, dict) and str(x.get(m["fkey"])) == m["fval"]]
            elif m["key"] is None and m["idx"] is None and m["fkey"] is None and isinstance(v, list):
                found += v
        values = found
    if pos != len(path):
        raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
    return values


def human_age(timestamp: str) -> str:
    """Like apimachinery's HumanDuration (roughly): ``42s``, ``5m``, ``3h``, ``2d``."""
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    secs = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    for unit, size, limit in (("s", 1, 120), ("m", 60, 3 * 3600), ("h", 3600, 48 * 3600)):
        if secs < limit:
            return f"{secs // size}{unit}"
    return f"{secs // 86400}d"


def _column(
    name: str, type_: str, getter: Callable[[dict[str, Any]], Any], description: str = "", priority: int = 0
) -> Column:
    definition = {
        "name": name,
        "type": type_,
        "format": "name" if name == "Name" else "",
        "description": description,
        "priority": priority,
    }
    return definition, getter


def _path_column(spec: Mapping[str, Any]) -> Column:
    path, type_ = spec["jsonPath"], spec.get("type", "string")

    def getter(obj: dict[str, Any]) -> Any:
        found = jsonpath(obj, path)
        if not found:
            return None
        if type_ == "date" and isinstance(found[0], str):
            return human_age(found[0])
        value = found[0]  # kube-apiserver also takes the first result only
        if type_ == "string" and not isinstance(value, str):
            return json.dumps(value, separators=(",", ":"))  # as its JSONPath printer does
        return value

    return _column(spec["name"], type_, getter, spec.get("description", ""), int(spec.get("priority", 0)))


def _created(obj: dict[str, Any]) -> Any:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    return human_age(ts) if ts else None


NAME_COLUMN = _column("Name", "string", lambda o: o.get("metadata", {}).get("name"))
AGE_COLUMN = _column("Age", "date", _created)

#: Columns of the core kinds ``kubectl get`` is used on here (resource -> columns); others: Name, Age.
BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "v1/events": [
        _column(
            "Last Seen", "string", lambda o: human_age(o["lastTimestamp"]) if o.get("lastTimestamp") else None
        ),
        _column("Type", "string", lambda o: o.get("type")),
        _column("Reason", "string", lambda o: o.get("reason")),
        _column(
            "Object",
            "string",
            lambda o: "{}/{}".format(
                str(o.get("involvedObject", {}).get("kind", "")).lower(),
                o.get("involvedObject", {}).get("name"),
            ),
        ),
        _column("Message", "string", lambda o: o.get("message")),
    ],
    "v1/namespaces": [
        NAME_COLUMN,
        _column("Status", "string", lambda o: o.get("status", {}).get("phase")),
        AGE_COLUMN,
    ],
    "v1/secrets": [
        NAME_COLUMN,
        _column("Type", "string", lambda o: o.get("type")),
        _column("Data", "integer", lambda o: len(o.get("data") or {})),
        AGE_COLUMN,
    ],
}


def columns_for_crd_version(version: Mapping[str, Any]) -> list[Column]:
    """A CRD version's columns: Name plus its ``additionalPrinterColumns``, else Name and Age."""
    printer = version.get("additionalPrinterColumns")
    return [NAME_COLUMN, *map(_path_column, printer)] if printer else [NAME_COLUMN, AGE_COLUMN]


def table(
    columns: list[Column],
    items: Iterable[dict[str, Any]],
    *,
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table, as kube-apiserver sends to ``kubectl get``.

    ``include_object`` is the request's ``includeObject``: ``Object`` embeds each whole
    object, anything else its metadata only (kubectl's default, enough for its printer).
    """
    rows = []
    for obj in items:
        if include_object == "Object":
            embedded = obj
        else:
            embedded = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            }
        rows.append({"cells": [getter(obj) for _, getter in columns], "object": embedded})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [definition for definition, _ in columns],
        "rows": rows,
    }


def text_table(columns: list[Column], items: list[dict[str, Any]], namespace: str | None) -> str:
    """What ``kubectl get`` prints for these columns (those of priority 0) and objects."""
    shown = [c for c in columns if not c[0].get("priority")]
    if not items:
        return f"No resources found in {namespace} namespace.\n" if namespace else "No resources found\n"
    headers = [c["name"].upper() for c, _ in shown]
    cells = [
        headers,
        *[["<none>" if v is None else str(v) for v in (getter(obj) for _, getter in shown)] for obj in items],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "".join(
        "   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells
    )
