"""The CRDs generated now are a compatible change from the last release's.

A cluster that ran the last release holds DLQReplays and QueuePolicies stored
under its CRDs, and clients (GitOps repositories, scripts) written against
them. ``helm upgrade`` replaces the CRDs (they are templates), so whatever the
new schema drops or narrows breaks those objects. tests/data/released-crds/
<version>/ holds the CRDs exactly as each release shipped them; at each
release the new version's crds/*.yaml is copied there (charts/requeue/README.md).

The walk reports, with a path: a removed field, a changed type, a removed enum
value (or an enum where any value was allowed), a new required field without
a default, unknown fields no longer preserved, a removed kind, and a version
that was served (in particular the stored one) and no longer is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RELEASED = ROOT / "tests" / "data" / "released-crds"

Schema = dict[str, Any]


def version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def last_release() -> Path:
    """The newest directory under tests/data/released-crds/ (named by version, e.g. 0.1.0)."""
    releases = sorted((p for p in RELEASED.iterdir() if p.is_dir()), key=lambda p: version_key(p.name))
    assert releases, f"no released CRDs under {RELEASED}"
    return releases[-1]


def load(directory: Path) -> dict[str, dict[str, Any]]:
    """CRD name -> CRD, for every *.yaml in ``directory``."""
    crds = [yaml.safe_load(p.read_text()) for p in sorted(directory.glob("*.yaml"))]
    return {c["metadata"]["name"]: c for c in crds}


# -- the walk --------------------------------------------------------------------------------------


def schema_breaks(old: Schema, new: Schema, path: str) -> list[str]:
    """What in ``new`` rejects or loses data that ``old`` accepted, at ``path`` and below."""
    problems: list[str] = []
    if "type" in old and new.get("type") != old["type"]:
        problems.append(f"{path}: type changed from {old['type']} to {new.get('type')}")
        return problems
    if "enum" in new and "enum" not in old:
        problems.append(f"{path}: any value was allowed, now only {new['enum']}")
    elif "enum" in new:
        removed = [v for v in old["enum"] if v not in new["enum"]]
        if removed:
            problems.append(f"{path}: enum values removed: {removed}")
    preserve = "x-kubernetes-preserve-unknown-fields"
    if old.get(preserve) and not new.get(preserve):
        problems.append(f"{path}: unknown fields are no longer preserved (the API server would prune them)")
    old_props: dict[str, Schema] = old.get("properties", {})
    new_props: dict[str, Schema] = new.get("properties", {})
    for name, child in old_props.items():
        if name not in new_props:
            problems.append(f"{path}.{name}: field removed")
        else:
            problems += schema_breaks(child, new_props[name], f"{path}.{name}")
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        if "default" not in new_props.get(name, {}):
            problems.append(f"{path}.{name}: newly required without a default")
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        problems += schema_breaks(old["items"], new["items"], f"{path}[]")
    if isinstance(old.get("additionalProperties"), dict):
        new_values = new.get("additionalProperties")
        if isinstance(new_values, dict):
            problems += schema_breaks(old["additionalProperties"], new_values, f"{path}{{}}")
        elif not new.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: map values are no longer accepted")
    return problems


def crd_breaks(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What in ``new`` breaks objects stored under, or clients written against, ``old``."""
    name = old["metadata"]["name"]
    problems: list[str] = []
    for key in ("group", "scope"):
        if old["spec"][key] != new["spec"][key]:
            problems.append(f"{name}: spec.{key} changed")
    for key in ("kind", "plural", "singular", "listKind"):
        if old["spec"]["names"].get(key) != new["spec"]["names"].get(key):
            problems.append(f"{name}: spec.names.{key} changed")
    new_versions = {v["name"]: v for v in new["spec"]["versions"]}
    for version in old["spec"]["versions"]:
        if not version["served"]:
            continue
        label = f"{name} {version['name']}"
        now = new_versions.get(version["name"])
        if now is None or not now["served"]:
            stored = " (the stored version)" if version["storage"] else ""
            problems.append(f"{label}{stored}: no longer served")
            continue
        problems += schema_breaks(
            version["schema"]["openAPIV3Schema"], now["schema"]["openAPIV3Schema"], label
        )
    return problems


def release_breaks(released: dict[str, dict[str, Any]], generated: dict[str, dict[str, Any]]) -> list[str]:
    """Every break from the released CRDs to the generated ones, a removed CRD included."""
    problems = [f"{name}: CRD removed" for name in sorted(released.keys() - generated.keys())]
    for name in sorted(released.keys() & generated.keys()):
        problems += crd_breaks(released[name], generated[name])
    return problems


# -- the release gate ------------------------------------------------------------------------------


def test_generated_crds_are_compatible_with_the_last_release() -> None:
    released = load(last_release())
    assert released, f"{last_release()} is empty"
    problems = release_breaks(released, load(ROOT / "crds"))
    assert problems == [], f"incompatible with release {last_release().name}:\n" + "\n".join(problems)


def test_the_last_release_is_not_newer_than_the_chart() -> None:
    chart = yaml.safe_load((ROOT / "charts" / "requeue" / "Chart.yaml").read_text())
    assert version_key(last_release().name) <= version_key(chart["version"])


# -- the walk catches each kind of break -----------------------------------------------------------

DLQREPLAYS = "dlqreplays.requeue.dev"


def spec_schema(crd: dict[str, Any]) -> Schema:
    schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def drop_field(crd: dict[str, Any]) -> None:
    del spec_schema(crd)["properties"]["prefix"]


def change_type(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["ttlSecondsAfterFinished"]["type"] = "string"


def drop_enum_value(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["mode"]["enum"].remove("Bulk")


def add_enum(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["prefix"]["enum"] = ["bull"]


def require_without_default(crd: dict[str, Any]) -> None:
    spec_schema(crd)["required"].append("targetQueue")


def require_new_field(crd: dict[str, Any]) -> None:
    spec = spec_schema(crd)
    spec["properties"]["owner"] = {"type": "string"}
    spec["required"].append("owner")


def stop_serving(crd: dict[str, Any]) -> None:
    crd["spec"]["versions"][0]["served"] = False


def rename_version(crd: dict[str, Any]) -> None:
    crd["spec"]["versions"][0]["name"] = "v1"


def stop_preserving_status(crd: dict[str, Any]) -> None:
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    del status["x-kubernetes-preserve-unknown-fields"]


def change_item_type(crd: dict[str, Any]) -> None:
    spec_schema(crd)["properties"]["gates"]["items"]["type"] = "string"


BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "field removed": (drop_field, "spec.prefix: field removed"),
    "type changed": (change_type, "spec.ttlSecondsAfterFinished: type changed from integer to string"),
    "enum value removed": (drop_enum_value, "spec.mode: enum values removed: ['Bulk']"),
    "enum added": (add_enum, "spec.prefix: any value was allowed, now only ['bull']"),
    "required without default": (
        require_without_default,
        "spec.targetQueue: newly required without a default",
    ),
    "new required field": (require_new_field, "spec.owner: newly required without a default"),
    "stored version not served": (stop_serving, "v1alpha1 (the stored version): no longer served"),
    "stored version gone": (rename_version, "v1alpha1 (the stored version): no longer served"),
    "unknown fields pruned": (
        stop_preserving_status,
        "status: unknown fields are no longer preserved (the API server would prune them)",
    ),
    "item type changed": (change_item_type, "spec.gates[]: type changed from object to string"),
}


@pytest.mark.parametrize("case", BREAKS)
def test_the_walk_reports_a_break(case: str) -> None:
    mutate, expected = BREAKS[case]
    old = load(last_release())[DLQREPLAYS]
    new = copy.deepcopy(old)
    mutate(new)
    problems = crd_breaks(old, new)
    assert len(problems) == 1, problems
    assert problems[0].endswith(expected), problems


def test_the_walk_allows_additions() -> None:
    old = load(last_release())[DLQREPLAYS]
    new = copy.deepcopy(old)
    spec = spec_schema(new)
    spec["properties"]["owner"] = {"type": "string", "default": "team"}
    spec["required"].append("owner")
    spec["properties"]["note"] = {"type": "string"}
    spec["properties"]["mode"]["enum"].append("Turbo")
    new["spec"]["versions"].append({**copy.deepcopy(new["spec"]["versions"][0]), "name": "v1beta1"})
    assert crd_breaks(old, new) == []


def test_a_removed_crd_is_reported() -> None:
    released = load(last_release())
    generated = {name: crd for name, crd in released.items() if name != DLQREPLAYS}
    assert release_breaks(released, generated) == [f"{DLQREPLAYS}: CRD removed"]
