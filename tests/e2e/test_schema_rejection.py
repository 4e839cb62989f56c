"""A wrong spec is refused by the API server's schema, naming the field (issue 2).

The emulator validates custom resources against the CRDs in ``crds/`` the way
kube-apiserver does (schema, strict fields, CEL), so these are what a user sees
from ``kubectl apply``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from support.kube import Kube

ROOT = Path(__file__).resolve().parents[2]


def _manifest(**spec_changes: object) -> str:
    doc = yaml.safe_load((ROOT / "examples" / "replay.yaml").read_text())
    doc["metadata"]["namespace"] = "default"
    doc["spec"].update(spec_changes)
    return yaml.safe_dump(doc)


def test_apply_of_the_example_is_accepted_and_round_trips(kube: Kube) -> None:
    kube.kubectl("apply", "-f", "-", input=_manifest())
    obj = kube.kubectl.json("get", "dlqr", "whatsapp-after-cgb-outage", "-o", "json")
    expected = yaml.safe_load(_manifest())
    assert obj["spec"] == expected["spec"]
    assert obj["kind"] == "DLQReplay"


def test_apply_with_a_bad_rate_is_refused_naming_the_field(kube: Kube) -> None:
    result = kube.kubectl("apply", "-f", "-", input=_manifest(rate={"jobsPerSecond": 0}), check=False)
    assert result.returncode != 0
    assert "spec.rate.jobsPerSecond" in result.stderr
    assert kube.get("requeue.dev/v1alpha1/dlqreplays", "whatsapp-after-cgb-outage") is None


def test_unknown_field_and_cel_rule_are_refused(kube: Kube) -> None:
    result = kube.kubectl("apply", "-f", "-", input=_manifest(rat={"jobsPerSecond": 5}), check=False)
    assert result.returncode != 0
    assert "spec.rat" in result.stderr
    result = kube.kubectl(
        "apply",
        "-f",
        "-",
        input=_manifest(gates=[{"name": "db", "redis": {}, "http": {"url": "http://x"}}]),
        check=False,
    )
    assert "set exactly one of redis, postgres or http" in result.stderr


def test_selector_cannot_change_after_creation(kube: Kube) -> None:
    kube.kubectl("apply", "-f", "-", input=_manifest())
    result = kube.kubectl(
        "patch",
        "dlqr",
        "whatsapp-after-cgb-outage",
        "--type",
        "merge",
        "-p",
        '{"spec": {"selector": {"jobNames": ["*"]}}}',
        check=False,
    )
    assert result.returncode != 0
    assert "selector is immutable" in result.stderr
    result = kube.kubectl(
        "patch",
        "dlqr",
        "whatsapp-after-cgb-outage",
        "--type",
        "merge",
        "-p",
        '{"spec": {"rate": {"jobsPerSecond": 10}}}',
    )
    assert (
        kube.kubectl.json("get", "dlqr", "whatsapp-after-cgb-outage", "-o", "json")["spec"]["rate"][
            "jobsPerSecond"
        ]
        == 10
    )


def test_kubectl_explain_shows_field_docs(kube: Kube) -> None:
    out = kube.kubectl("explain", "dlqreplay.spec.selector").stdout
    assert "failedReasonPattern" in out
    assert "RE2 regular expression" in out
    out = kube.kubectl("explain", "dlqr.spec.rate.jobsPerSecond").stdout
    assert "token bucket" in out


def test_mode_bulk_takes_only_a_time_window_and_is_explained(kube: Kube) -> None:
    result = kube.kubectl("apply", "-f", "-", input=_manifest(mode="Bulk"), check=False)
    assert result.returncode != 0  # the example filters by name and reason
    assert "mode Bulk takes only a time window" in result.stderr
    window = {"failedAfter": "2025-07-16T09:00:00Z", "failedBefore": "2025-07-16T11:00:00Z"}
    kube.kubectl("apply", "-f", "-", input=_manifest(mode="Bulk", selector=window))
    obj = kube.kubectl.json("get", "dlqr", "whatsapp-after-cgb-outage", "-o", "json")
    assert obj["spec"]["mode"] == "Bulk"
    result = kube.kubectl(
        "patch",
        "dlqr",
        "whatsapp-after-cgb-outage",
        "--type",
        "merge",
        "-p",
        '{"spec": {"mode": "Exact"}}',
        check=False,
    )
    assert result.returncode != 0 and "mode is immutable" in result.stderr
    out = kube.kubectl("explain", "dlqr.spec.mode").stdout
    assert "moveJobsToWait" in out and "Queue.retryJobs" in out
