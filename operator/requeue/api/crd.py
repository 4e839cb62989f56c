"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic models.

The Helm chart gets the same CRDs as templates (``templates/crds/``), not as
files in its ``crds/`` directory: Helm never upgrades what sits there, so a new
requeue would silently run against old schemas.

Pydantic emits JSON Schema 2020-12 with ``$ref``s; Kubernetes wants a
*structural* OpenAPI v3 schema: everything inlined, a type on every node,
no ``anyOf`` for optionals, boolean ``exclusiveMinimum``, and no
``additionalProperties: false`` beside ``properties``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from requeue.api.resources import CATEGORY, GROUP, KINDS, VERSION, KindInfo

_DROP = {"title", "$defs"}
_RULES = "x-kubernetes-validations"


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline refs and rewrite a pydantic JSON schema into a structural one."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = walk({k: v for k, v in node.items() if k != "$ref"})
            return _merge(target, extra)
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express union in a structural schema: {node}")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return _merge(walk(options[0]), walk(rest))
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or (key == "default" and value is None):
                continue
            if key == "properties":
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key == "items":
                out[key] = walk(value)
            elif key == "additionalProperties":
                if isinstance(value, dict) and value:
                    out[key] = walk(value)
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            else:
                out[key] = value
        if "properties" in out:
            out.setdefault("type", "object")
        if out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out.pop("additionalProperties", None)
        if "default" in out and isinstance(out["default"], (dict, list)):
            out.pop("default")
        return out

    return walk(schema)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A field's own keys over its type's; CEL rules of both are kept."""
    merged = {**base, **extra}
    rules = base.get(_RULES, []) + extra.get(_RULES, [])
    if rules:
        merged[_RULES] = rules
    return merged


def schema_for(model: type[Any]) -> dict[str, Any]:
    """The structural schema of one pydantic model (validation mode, camelCase)."""
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def crd_for(info: KindInfo) -> dict[str, Any]:
    """The full apiextensions.k8s.io/v1 CustomResourceDefinition of one kind."""
    status = schema_for(info.status)
    # kopf keeps handler progress under .status.kopf; keep what we do not know.
    status["x-kubernetes-preserve-unknown-fields"] = True
    root = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": schema_for(info.spec),
            "status": status,
        },
    }
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in info.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full: anchors confuse readers and some tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by `requeue crds` from operator/requeue/api; do not edit by hand.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text for every kind."""
    return {
        f"{GROUP}_{cls.INFO.plural}.yaml": HEADER
        + yaml.dump(crd_for(cls.INFO), Dumper=_NoAliasDumper, sort_keys=False, width=100)
        for cls in KINDS
    }


_CHART_HEAD = """\
{{{{- /* Generated by `requeue crds` from operator/requeue/api; do not edit by hand. */ -}}}}
{{{{- if .Values.crds.enabled }}}}
apiVersion: {api_version}
kind: {kind}
metadata:
  name: {name}
  labels:
    {{{{- include "requeue.labels" . | nindent 4 }}}}
  {{{{- if .Values.crds.keep }}}}
  annotations:
    # Kept on `helm uninstall`: deleting a CRD deletes every DLQReplay and QueuePolicy.
    helm.sh/resource-policy: keep
  {{{{- end }}}}
"""


def chart_template(crd: dict[str, Any]) -> str:
    """One CRD as a Helm template: behind ``crds.enabled``, kept on uninstall with ``crds.keep``.

    Everything but the metadata is the generated YAML verbatim (with ``{{``
    escaped for Go templates), so the chart renders exactly ``crds/``.
    """
    if set(crd["metadata"]) != {"name"}:
        raise ValueError(f"the chart template sets only the CRD's name, not {sorted(crd['metadata'])}")
    head = _CHART_HEAD.format(api_version=crd["apiVersion"], kind=crd["kind"], name=crd["metadata"]["name"])
    body = yaml.dump({"spec": crd["spec"]}, Dumper=_NoAliasDumper, sort_keys=False, width=100)
    return head + body.replace("{{", '{{ "{{" }}') + "{{- end }}\n"


def render_chart_templates() -> dict[str, str]:
    """File name -> Helm template (for the chart's ``templates/crds/``) for every kind."""
    return {f"{GROUP}_{cls.INFO.plural}.yaml": chart_template(crd_for(cls.INFO)) for cls in KINDS}


def write_crds(directory: Path, *, check: bool = False) -> list[str]:
    """Write (or with ``check``, compare) the CRD files; returns the stale file names."""
    return _write(directory, render_all(), check=check)


def write_chart_crds(directory: Path, *, check: bool = False) -> list[str]:
    """Write (or with ``check``, compare) the chart's CRD templates; returns the stale file names."""
    return _write(directory, render_chart_templates(), check=check)


def _write(directory: Path, files: dict[str, str], *, check: bool) -> list[str]:
    stale = []
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if not check:
                directory.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return stale
