"""The API models and the generated CRDs agree, and both name the bad field.

A user meets the schema twice: the API server rejects a bad ``kubectl apply``
using the CRD, and ``requeue replay -f`` rejects the same file using the
models. These tests keep the two judges in agreement.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from requeue.api import DLQReplay, QueuePolicy
from requeue.api.loading import parse
from requeue.errors import SpecInvalid
from support.crd_validate import load_crds, validate

ROOT = Path(__file__).resolve().parents[2]
CRDS = load_crds()


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return doc


def test_crds_are_generated_from_the_current_models() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "requeue", "crds", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("file", "model"), [("replay.yaml", DLQReplay), ("policy.yaml", QueuePolicy)])
def test_examples_are_valid_for_models_and_schema(file: str, model: type[DLQReplay | QueuePolicy]) -> None:
    doc = example(file)
    parse(model, doc)
    assert validate(CRDS[doc["kind"]], doc) == []


def test_crd_carries_names_columns_and_status_subresource() -> None:
    crd = CRDS["DLQReplay"]
    names = crd["spec"]["names"]
    assert (names["plural"], names["shortNames"], names["categories"]) == (
        "dlqreplays",
        ["dlqr"],
        ["requeue"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Queue", "Phase", "Progress", "Age"]
    policy = CRDS["QueuePolicy"]["spec"]
    assert policy["names"]["shortNames"] == ["qpol"]
    assert [c["name"] for c in policy["versions"][0]["additionalPrinterColumns"]] == [
        "Queues",
        "Healthy",
        "Escalation",
        "Age",
    ]


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    missing = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    for kind, crd in CRDS.items():
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        walk(spec, f"{kind}.spec")
    assert missing == []


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is _DELETE:
        node.pop(last, None)
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()

# (path to change, new value, field the error must name)
INVALID_REPLAYS = [
    ("spec.queue", "bad:queue", "spec.queue"),
    ("spec.queue", "", "spec.queue"),
    ("spec.prefix", "has space", "spec.prefix"),
    ("spec.rate.jobsPerSecond", 0, "spec.rate.jobsPerSecond"),
    ("spec.rate.batchSize", 5000, "spec.rate.batchSize"),
    ("spec.rate.maxWaiting", 0, "spec.rate.maxWaiting"),
    ("spec.selector.maxJobs", 0, "spec.selector.maxJobs"),
    ("spec.selector.failedAfter", "yesterday", "spec.selector.failedAfter"),
    ("spec.selector.failedAfter", "2025-07-16T09:00:00", "spec.selector.failedAfter"),
    (  # a window that ends before it starts (the example leaves its window commented out)
        "spec.selector",
        {
            "jobNames": ["whatsapp.send"],
            "failedAfter": "2025-07-16T09:00:00Z",
            "failedBefore": "2025-07-16T08:00:00Z",
        },
        "spec.selector",
    ),
    ("spec.gatePolicy.interval", "10 seconds", "spec.gatePolicy.interval"),
    ("spec.gatePolicy.successThreshold", 0, "spec.gatePolicy.successThreshold"),
    ("spec.verify.minSuccessRate", 1.5, "spec.verify.minSuccessRate"),
    ("spec.gates.0.name", "Database_1", "spec.gates[0].name"),
    ("spec.gates.0.redis", {}, "spec.gates[0]"),
    ("spec.gates.2.http.url", "ftp://cgb.example.com", "spec.gates[2].http.url"),
    ("spec.gates.2.http.expectStatus", [700], "spec.gates[2].http.expectStatus[0]"),
    ("spec.gates.2.http.method", "DELETE", "spec.gates[2].http.method"),
    ("spec.gates.2.http.headers.0.value", "literal", "spec.gates[2].http.headers[0]"),
    ("spec.redis.urlSecretRef.name", "Not_A_Name", "spec.redis.urlSecretRef.name"),
    ("spec.redis.urlSecretRef.namespace", "other", "spec.redis.urlSecretRef.namespace"),
    ("spec.redis.urlSecretRef", _DELETE, "spec.redis.urlSecretRef"),
    ("spec.ttlSecondsAfterFinished", -1, "spec.ttlSecondsAfterFinished"),
    ("spec.rate.burst", 10, "spec.rate.burst"),
    ("spec.gates.2.http.jsonPath", "status", "spec.gates[2].http.jsonPath"),
]


@pytest.mark.parametrize(("path", "value", "field"), INVALID_REPLAYS, ids=[i[0] for i in INVALID_REPLAYS])
def test_invalid_replay_is_rejected_by_model_and_schema_naming_the_field(
    path: str, value: Any, field: str
) -> None:
    doc = _set(example("replay.yaml"), path, value)
    with pytest.raises(SpecInvalid) as caught:
        parse(DLQReplay, doc)
    assert field in str(caught.value)
    errors = validate(CRDS["DLQReplay"], doc)
    assert errors, f"schema accepted {path}={value!r}"
    assert any(e.startswith(field) for e in errors), errors


def test_invalid_regex_is_rejected_by_the_model_with_re2s_reason() -> None:
    doc = _set(example("replay.yaml"), "spec.selector.failedReasonPattern", "(unclosed")
    with pytest.raises(SpecInvalid, match=r"spec\.selector\.failedReasonPattern: not a valid RE2"):
        parse(DLQReplay, doc)


def test_backreferences_are_refused_since_re2_guarantees_linear_time() -> None:
    doc = _set(example("replay.yaml"), "spec.selector.failedReasonPattern", r"(a)\1")
    with pytest.raises(SpecInvalid, match="failedReasonPattern"):
        parse(DLQReplay, doc)


INVALID_POLICIES = [
    ("spec.queues", [], "spec.queues"),
    ("spec.interval", "soon", "spec.interval"),
    ("spec.thresholds.failureRatePercent", 150, "spec.thresholds.failureRatePercent"),
    ("spec.actions.autoReplay.maxReplaysPerJob", 0, "spec.actions.autoReplay.maxReplaysPerJob"),
    ("spec.actions.clean.failed.limit", 0, "spec.actions.clean.failed.limit"),
]


@pytest.mark.parametrize(("path", "value", "field"), INVALID_POLICIES, ids=[i[0] for i in INVALID_POLICIES])
def test_invalid_policy_is_rejected_by_model_and_schema(path: str, value: Any, field: str) -> None:
    doc = _set(example("policy.yaml"), path, value)
    with pytest.raises(SpecInvalid, match=field.replace(".", r"\.")):
        parse(QueuePolicy, doc)
    assert any(e.startswith(field) for e in validate(CRDS["QueuePolicy"], doc))


def test_selector_is_immutable_but_rate_may_change() -> None:
    old = example("replay.yaml")
    faster = _set(old, "spec.rate.jobsPerSecond", 200)
    assert validate(CRDS["DLQReplay"], faster, old=old) == []
    widened = _set(old, "spec.selector.jobNames", ["*"])
    assert "spec.selector: Invalid value: selector is immutable" in validate(
        CRDS["DLQReplay"], widened, old=old
    )


# -- model-valid <=> schema-valid, over generated specs -----------------------

_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126) | st.sampled_from(" \t:"))
_durations = st.one_of(st.sampled_from(["1s", "500ms", "1h30m", "7d", "2.5m"]), _text.filter(bool))
_numbers = st.one_of(st.integers(-5, 2_000_000), st.floats(-2, 200_000, allow_nan=False))


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_DELETE), strategy)


_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "spec.queue": st.one_of(st.sampled_from(["default", "whatsapp"]), _text),
    "spec.prefix": _optional(st.one_of(st.just("bull"), _text)),
    "spec.rate.jobsPerSecond": _optional(_numbers),
    "spec.rate.batchSize": _optional(st.integers(-5, 2000)),
    "spec.rate.maxWaiting": _optional(st.integers(-5, 10)),
    "spec.selector.maxJobs": _optional(st.integers(-5, 20_000_000)),
    "spec.selector.jobNames": _optional(st.lists(st.sampled_from(["a", "", "b*"]), max_size=3)),
    "spec.gatePolicy.interval": _optional(_durations),
    "spec.gatePolicy.timeout": _optional(_durations),
    "spec.gatePolicy.successThreshold": _optional(st.integers(-2, 105)),
    "spec.gatePolicy.failureThreshold": _optional(st.integers(-2, 105)),
    "spec.verify.window": _optional(_durations),
    "spec.verify.minSuccessRate": _optional(st.floats(-0.5, 1.5, allow_nan=False)),
    "spec.verify.maxFailedAgain": _optional(st.integers(-3, 3)),
    "spec.gates.0.name": st.one_of(st.sampled_from(["database", "db-1"]), _text),
    "spec.gates.2.http.expectStatus": st.lists(st.integers(0, 800), max_size=3),
    "spec.gates.2.http.timeout": _optional(_durations),
    "spec.ttlSecondsAfterFinished": _optional(st.integers(-3, 3)),
    "spec.resetAttempts": _optional(st.one_of(st.booleans(), st.sampled_from([0, "yes"]))),
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=_FIELDS))
def test_model_and_schema_agree_on_generated_specs(changes: dict[str, Any]) -> None:
    doc = example("replay.yaml")
    for path, value in changes.items():
        doc = _set(doc, path, value)
    try:
        parse(DLQReplay, doc)
        model_ok = True
    except SpecInvalid:
        model_ok = False
    schema_errors = validate(CRDS["DLQReplay"], doc)
    assert model_ok == (not schema_errors), (changes, schema_errors)
