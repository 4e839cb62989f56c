"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk).

Every toggle is rendered; the manifests are validated against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict: unknown fields fail); the alert
and dashboard queries are parsed by a PromQL parser and checked against the
metrics that ``requeue.metrics`` really defines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from requeue import metrics
from requeue.api import ReplayPhase

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "requeue"
RELEASE = "requeue"
NAMESPACE = "requeue-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas here.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version() + ".0")
# Kinds of prometheus-operator: no schema ships offline; checked field by field below.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}

API_SERVER = {"cidrs": ["172.18.0.2/32"]}
NETWORK_POLICY: dict[str, Any] = {
    "enabled": True,
    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    "egress": {
        "apiServer": API_SERVER,
        "redis": [{"cidr": "10.20.0.0/24", "ports": [6379, 26379]}],
        "postgres": [{"cidr": "10.30.0.5/32", "ports": [5432]}],
        "http": [{"cidr": "0.0.0.0/0", "ports": [443]}, {"cidr": "::/0", "ports": [443]}],
    },
    "extraEgress": [{"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}], "ports": [{"port": 6379}]}],
}
GATES = {
    "allowedDestinations": ["10.0.0.0/8", "status.example.com"],
    "deniedDestinations": ["169.254.0.0/16"],
}
ALL_ON = {
    "networkPolicy": NETWORK_POLICY,
    "gates": GATES,
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboard": {"enabled": True},
}
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "serviceMonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}}},
    "prometheusRule": {"prometheusRule": {"enabled": True, "alertLabels": {"team": "payments"}}},
    "dashboard": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "Queues"}}},
    "watchNamespaces": {"watchNamespaces": ["visapi", "payments"]},
    "crdsManagedElsewhere": {"crds": {"enabled": False}},
    "secretNamespaces": {"rbac": {"secrets": "namespaces", "secretNamespaces": ["visapi", "payments"]}},
    "networkPolicy": {"networkPolicy": NETWORK_POLICY},
    "networkPolicyMinimal": {"networkPolicy": {"enabled": True, "egress": {"apiServer": API_SERVER}}},
    "gates": {"gates": GATES},
    "everything": {**ALL_ON, "watchNamespaces": ["visapi"], "image": {"digest": "sha256:" + "a" * 64}},
}

# Exactly what the operator needs (DESIGN: least privilege). (apiGroup, resource) -> verbs.
NAMESPACED_PERMISSIONS: dict[tuple[str, str], set[str]] = {
    ("requeue.dev", "dlqreplays"): {"get", "list", "watch", "patch", "create", "delete"},
    ("requeue.dev", "queuepolicies"): {"get", "list", "watch", "patch"},
    ("requeue.dev", "dlqreplays/status"): {"patch"},
    ("requeue.dev", "queuepolicies/status"): {"patch"},
    ("requeue.dev", "queuepolicies/finalizers"): {"update"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
DISCOVERY_PERMISSIONS: dict[tuple[str, str], set[str]] = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
}


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render_files(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(chart: helm_python.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders with these values (NOTES.txt excluded)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_files(chart, values).items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def permissions(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def sample_names() -> dict[str, set[str]]:
    """Every series name requeue exports, mapped to its label names."""
    names: dict[str, set[str]] = {}
    for base, kind, labelnames, _ in metrics.described():
        labels = set(labelnames)
        if kind == "counter":
            names[f"{base}_total"] = labels
        elif kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            assert kind == "gauge"
            names[base] = labels
    return names


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Parse with a PromQL parser (a syntax error raises) and return the vector selectors."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


#: Series Prometheus itself makes for every target, with the labels a ServiceMonitor gives them.
PROMETHEUS_SERIES = {"up": {"job", "namespace", "instance", "service", "pod", "container", "endpoint"}}


def check_query(expr: str) -> set[str]:
    """Assert every selector names a requeue series (or Prometheus' own ``up``) and only matches
    labels it has; return the names."""
    known = sample_names() | PROMETHEUS_SERIES
    used: set[str] = set()
    for selector in selectors(expr):
        assert selector.name in known, f"{selector.name} is not defined in requeue.metrics ({expr})"
        for matcher in selector.matchers.matchers:
            assert matcher.name in known[selector.name], f"{selector.name} has no label {matcher.name}"
        used.add(selector.name)
    assert used, f"no metric in {expr}"
    return used


# -- lint and schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lint_reports_nothing(case: str) -> None:
    report = helm_python.lint(CHART, CASES[case], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert report["messages"] == []


@pytest.mark.parametrize("case", CASES)
def test_rendered_objects_validate_against_kubernetes_schemas(chart: helm_python.Chart, case: str) -> None:
    objects = render(chart, CASES[case])
    for obj in objects:
        if obj["kind"] in MONITORING_KINDS:
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names)), "two objects with the same kind, namespace and name"


def generated_crds() -> dict[str, dict[str, Any]]:
    """CRD name -> the CRD as `requeue crds` writes it to crds/ (the canonical files)."""
    crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert crds, "crds/ is empty"
    return {c["metadata"]["name"]: c for c in crds}


def rendered_crds(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in of_kind(render(chart, values), "CustomResourceDefinition")}


def test_the_chart_has_no_crds_directory(chart: helm_python.Chart) -> None:
    """Helm installs crds/ once and never upgrades it; the CRDs must be templates."""
    assert chart.crds == []
    assert not (CHART / "crds").exists()


def test_crds_render_as_the_generated_ones_kept_on_uninstall(chart: helm_python.Chart) -> None:
    rendered = rendered_crds(chart, {})
    generated = generated_crds()
    assert rendered.keys() == generated.keys()
    for name, crd in rendered.items():
        metadata = crd.pop("metadata")
        assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert {**crd, "metadata": {"name": metadata["name"]}} == generated[name]
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(generated[name], version, strict=True)


def test_crds_keep_false_lets_uninstall_delete_them(chart: helm_python.Chart) -> None:
    for crd in rendered_crds(chart, {"crds": {"keep": False}}).values():
        assert "annotations" not in crd["metadata"]


def test_crds_enabled_false_renders_none(chart: helm_python.Chart) -> None:
    assert rendered_crds(chart, {"crds": {"enabled": False}}) == {}


def test_chart_crd_templates_are_what_requeue_crds_writes() -> None:
    """`requeue crds --check` fails on a stale chart copy; so does this test, with the files named."""
    from requeue.api.crd import render_chart_templates

    templates = CHART / "templates" / "crds"
    assert {p.name: p.read_text() for p in templates.glob("*.yaml")} == render_chart_templates(), (
        "charts/requeue/templates/crds is stale: run `requeue crds`"
    )


def test_values_schema_is_strict(chart: helm_python.Chart) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    chart.validate_schema(defaults)

    def objects_are_closed(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in node["properties"].items():
                objects_are_closed(child, f"{path}.{key}")

    objects_are_closed(schema, "values")


@pytest.mark.parametrize(
    "values",
    [
        {"imag": {"tag": "x"}},
        {"image": {"tagg": "x"}},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"watchNamespaces": "visapi"},
        {"operator": {"logFormat": "xml"}},
        {"prometheusRule": {"failureRatioThreshold": 5}},
        {"prometheusRule": {"queuePausedFor": "half an hour"}},
        {"prometheusRule": {"operatorUpSelector": '{job="requeue"}'}},
        {"serviceMonitor": {"enabled": "yes"}},
        {"image": {"digest": "latest"}},
        {"crds": {"enabled": "yes"}},
        {"crds": {"keepp": True}},
        {"rbac": {"secrets": "none"}},
        {"rbac": {"secretNamespaces": ["Not_A_Namespace"]}},
        {"networkPolicy": {"egress": {"redis": [{"cidr": "redis.example.com", "ports": [6379]}]}}},
        {"networkPolicy": {"egress": {"redis": [{"cidr": "10.0.0.0/8", "ports": []}]}}},
        {"networkPolicy": {"egress": {"postgres": [{"cidr": "10.0.0.0/8", "ports": [0]}]}}},
        {"networkPolicy": {"egress": {"http": [{"cidr": "10.0.0.0/8"}]}}},
        {"networkPolicy": {"egress": {"apiServer": {"cidrs": ["kubernetes.default"]}}}},
        {"networkPolicy": {"egres": {}}},
        {"gates": {"allowedDestinations": ["10.0.0.0/8,192.168.0.0/16"]}},
        {"gates": {"deniedDestinations": "169.254.169.254"}},
    ],
    ids=repr,
)
def test_values_schema_rejects(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        render_files(chart, values)


# -- what gets rendered ----------------------------------------------------------------------------


def test_default_renders_the_core_objects_only(chart: helm_python.Chart) -> None:
    kinds = sorted(o["kind"] for o in render(chart, {}))
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]


@pytest.mark.parametrize(
    ("toggle", "kind"),
    [("serviceMonitor", "ServiceMonitor"), ("prometheusRule", "PrometheusRule"), ("dashboard", "ConfigMap")],
)
def test_each_toggle_adds_its_object(chart: helm_python.Chart, toggle: str, kind: str) -> None:
    assert of_kind(render(chart, {}), kind) == []
    assert len(of_kind(render(chart, {toggle: {"enabled": True}}), kind)) == 1


def notes(chart: helm_python.Chart, values: dict[str, Any]) -> str:
    return render_files(chart, values)[f"{RELEASE}/templates/NOTES.txt"]


def test_notes_name_the_namespaces(chart: helm_python.Chart) -> None:
    watched = notes(chart, {"watchNamespaces": ["visapi", "payments"]})
    assert "in: visapi, payments." in watched
    assert "Secrets only in those namespaces" in watched
    assert "all namespaces" in notes(chart, {})


def test_notes_say_where_secrets_are_readable(chart: helm_python.Chart) -> None:
    assert "Secrets in every namespace" in notes(chart, {})
    assert "Secrets only in: visapi, payments." in notes(chart, CASES["secretNamespaces"])
    assert "Secrets" not in notes(chart, {"rbac": {"create": False}})


# -- the Deployment --------------------------------------------------------------------------------


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_deployment_is_hardened(chart: helm_python.Chart) -> None:
    deployment = one(render(chart, {}), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert "memory" in c["resources"]["limits"]
    # A writable /tmp on the read-only root filesystem.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["REQUEUE_LOG_FORMAT"] == "json"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_deployment_runs_the_operator_with_health_and_metrics(chart: helm_python.Chart) -> None:
    c = container(render(chart, {}))
    assert c["image"] == f"ghcr.io/requeue-dev/requeue:{chart.metadata['appVersion']}"
    assert c["args"] == [
        "run",
        "--standalone",
        "--all-namespaces",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
        "--metrics-port",
        "9090",
    ]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http-metrics": 9090, "http-health": 8080}
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080


def test_namespaced_mode_passes_each_namespace(chart: helm_python.Chart) -> None:
    c = container(
        render(chart, {"watchNamespaces": ["visapi", "payments"], "operator": {"extraArgs": ["-v"]}})
    )
    assert "--all-namespaces" not in c["args"]
    assert c["args"][:6] == ["run", "--standalone", "--namespace", "visapi", "--namespace", "payments"]
    assert c["args"][-1] == "-v"


def test_image_digest_wins_over_tag(chart: helm_python.Chart) -> None:
    digest = "sha256:" + "0" * 64
    c = container(render(chart, {"image": {"tag": "9.9.9", "digest": digest}}))
    assert c["image"] == f"ghcr.io/requeue-dev/requeue@{digest}"


def test_existing_service_account(chart: helm_python.Chart) -> None:
    objects = render(chart, {"serviceAccount": {"create": False, "name": "ops"}})
    assert of_kind(objects, "ServiceAccount") == []
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "ops"
    with pytest.raises(helm_python.HelmRenderError, match=r"serviceAccount\.name is required"):
        render_files(chart, {"serviceAccount": {"create": False}})


def test_metrics_service_selects_the_operator_pod(chart: helm_python.Chart) -> None:
    objects = render(chart, {})
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http-metrics"
    assert port["port"] == 9090
    assert port["targetPort"] in {p["name"] for p in container(objects)["ports"]}


def test_gate_destinations_are_absent_by_default(chart: helm_python.Chart) -> None:
    """Absent, not empty: an empty REQUEUE_GATE_DENY must not replace the built-in denials."""
    names = {e["name"] for e in container(render(chart, {}))["env"]}
    assert names.isdisjoint({"REQUEUE_GATE_ALLOW", "REQUEUE_GATE_DENY"})


def test_gate_destinations_reach_the_operator_comma_separated(chart: helm_python.Chart) -> None:
    env = {e["name"]: e.get("value") for e in container(render(chart, CASES["gates"]))["env"]}
    assert env["REQUEUE_GATE_ALLOW"] == "10.0.0.0/8,status.example.com"
    assert env["REQUEUE_GATE_DENY"] == "169.254.0.0/16"
    only_deny = container(render(chart, {"gates": {"deniedDestinations": ["a.example", "10.1.0.0/16"]}}))
    env = {e["name"]: e.get("value") for e in only_deny["env"]}
    assert "REQUEUE_GATE_ALLOW" not in env
    assert env["REQUEUE_GATE_DENY"] == "a.example,10.1.0.0/16"


# -- NetworkPolicy ---------------------------------------------------------------------------------


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


DNS_EGRESS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
API_SERVER_EGRESS = {"to": [{"ipBlock": {"cidr": "172.18.0.2/32"}}], "ports": tcp(443, 6443)}


def test_network_policy_is_off_by_default(chart: helm_python.Chart) -> None:
    assert of_kind(render(chart, {}), "NetworkPolicy") == []


def test_network_policy_selects_the_operator_pod(chart: helm_python.Chart) -> None:
    objects = render(chart, CASES["networkPolicy"])
    policy = one(objects, "NetworkPolicy")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_network_policy_minimal_allows_dns_and_the_api_server_only(chart: helm_python.Chart) -> None:
    spec = one(render(chart, CASES["networkPolicyMinimal"]), "NetworkPolicy")["spec"]
    assert spec["ingress"] == [{"ports": tcp(9090)}, {"ports": tcp(8080)}]
    assert spec["egress"] == [DNS_EGRESS, API_SERVER_EGRESS]


def test_network_policy_allows_exactly_the_listed_destinations(chart: helm_python.Chart) -> None:
    spec = one(render(chart, CASES["networkPolicy"]), "NetworkPolicy")["spec"]
    assert spec["ingress"] == [
        {"ports": tcp(9090), "from": NETWORK_POLICY["metricsFrom"]},
        {"ports": tcp(8080)},
    ]
    assert spec["egress"] == [
        DNS_EGRESS,
        API_SERVER_EGRESS,
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}], "ports": tcp(6379, 26379)},
        {"to": [{"ipBlock": {"cidr": "10.30.0.5/32"}}], "ports": tcp(5432)},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": tcp(443)},
        {"to": [{"ipBlock": {"cidr": "::/0"}}], "ports": tcp(443)},
        *NETWORK_POLICY["extraEgress"],
    ]


def test_network_policy_follows_the_operator_ports(chart: helm_python.Chart) -> None:
    values = {**CASES["networkPolicyMinimal"], "operator": {"metricsPort": 9100, "healthPort": 8081}}
    objects = render(chart, values)
    ingress = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert ingress == [{"ports": tcp(9100)}, {"ports": tcp(8081)}]
    assert {p["containerPort"] for p in container(objects)["ports"]} == {9100, 8081}


def test_notes_mention_the_network_policy(chart: helm_python.Chart) -> None:
    assert "NetworkPolicy" not in notes(chart, {})
    assert "networkPolicy.egress" in notes(chart, CASES["networkPolicyMinimal"])


def test_network_policy_needs_the_api_server_addresses(chart: helm_python.Chart) -> None:
    needs = r"networkPolicy\.egress\.apiServer\.cidrs.*kubectl get"
    with pytest.raises(helm_python.HelmRenderError, match=needs):
        render_files(chart, {"networkPolicy": {"enabled": True}})


# -- RBAC ------------------------------------------------------------------------------------------


def assert_no_wildcards(role: dict[str, Any]) -> None:
    for rule in role["rules"]:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"wildcard in {role['kind']} {role['metadata']['name']}: {rule}"
            assert not any("*" in item for item in rule[key])
        assert "resourceNames" not in rule


def bound_subjects(objects: list[dict[str, Any]], binding_kind: str, role: dict[str, Any]) -> list[Any]:
    bindings = [
        b
        for b in of_kind(objects, binding_kind)
        if b["roleRef"]
        == {"apiGroup": "rbac.authorization.k8s.io", "kind": role["kind"], "name": role["metadata"]["name"]}
        and b["metadata"].get("namespace") == role["metadata"].get("namespace")
    ]
    assert len(bindings) == 1
    return list(bindings[0]["subjects"])


SERVICE_ACCOUNT = [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_cluster_wide_rbac_is_exactly_what_the_operator_needs(chart: helm_python.Chart) -> None:
    objects = render(chart, {})
    assert of_kind(objects, "Role") == [] and of_kind(objects, "RoleBinding") == []
    role = one(objects, "ClusterRole")
    assert_no_wildcards(role)
    assert permissions(role) == {**NAMESPACED_PERMISSIONS, **DISCOVERY_PERMISSIONS}
    assert bound_subjects(objects, "ClusterRoleBinding", role) == SERVICE_ACCOUNT
    assert one(objects, "ServiceAccount")["metadata"]["name"] == RELEASE


def test_namespaced_rbac_keeps_secrets_in_the_watched_namespaces(chart: helm_python.Chart) -> None:
    watched = ["visapi", "payments"]
    objects = render(chart, {"watchNamespaces": watched})
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    for role in roles:
        assert_no_wildcards(role)
        assert permissions(role) == NAMESPACED_PERMISSIONS
        assert bound_subjects(objects, "RoleBinding", role) == SERVICE_ACCOUNT
    cluster_role = one(objects, "ClusterRole")
    assert_no_wildcards(cluster_role)
    assert permissions(cluster_role) == DISCOVERY_PERMISSIONS
    assert ("", "secrets") not in permissions(cluster_role)
    assert bound_subjects(objects, "ClusterRoleBinding", cluster_role) == SERVICE_ACCOUNT


SECRETS = {("", "secrets"): {"get"}}
RESOURCE_PERMISSIONS = {k: v for k, v in NAMESPACED_PERMISSIONS.items() if k not in SECRETS}


def test_cluster_wide_rbac_can_read_secrets_only_in_listed_namespaces(chart: helm_python.Chart) -> None:
    objects = render(chart, CASES["secretNamespaces"])
    cluster_role = one(objects, "ClusterRole")
    assert permissions(cluster_role) == {**RESOURCE_PERMISSIONS, **DISCOVERY_PERMISSIONS}
    assert bound_subjects(objects, "ClusterRoleBinding", cluster_role) == SERVICE_ACCOUNT
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["payments", "visapi"]
    for role in roles:
        assert role["metadata"]["name"] == f"{RELEASE}-secrets"
        assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
        assert bound_subjects(objects, "RoleBinding", role) == SERVICE_ACCOUNT
    assert len(of_kind(objects, "RoleBinding")) == 2


def test_no_cluster_role_grants_secrets_when_namespaces_are_watched(chart: helm_python.Chart) -> None:
    objects = render(chart, {"watchNamespaces": ["visapi"], "rbac": {"secrets": "namespaces"}})
    assert all(("", "secrets") not in permissions(r) for r in of_kind(objects, "ClusterRole"))
    assert permissions(one(objects, "Role"))[("", "secrets")] == {"get"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rbac": {"secrets": "namespaces"}}, r"rbac\.secretNamespaces is empty"),
        ({"rbac": {"secretNamespaces": ["visapi"]}}, r"set rbac\.secrets=namespaces"),
        (
            {"watchNamespaces": ["visapi"], "rbac": {"secretNamespaces": ["visapi"]}},
            r"exactly in the watched namespaces",
        ),
    ],
    ids=["no namespaces", "list without namespaces mode", "list with watchNamespaces"],
)
def test_secret_scope_refuses_what_would_grant_nothing_or_be_ignored(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render_files(chart, values)


def test_rbac_can_be_left_to_the_cluster_admin(chart: helm_python.Chart) -> None:
    kinds = {o["kind"] for o in render(chart, {"rbac": {"create": False}})}
    assert kinds.isdisjoint({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


# -- observability ---------------------------------------------------------------------------------


def test_service_monitor_scrapes_the_metrics_service(chart: helm_python.Chart) -> None:
    objects = render(chart, CASES["serviceMonitor"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    # The metrics carry the namespace of the watched resource; keep it as `namespace`.
    assert endpoint["honorLabels"] is True
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels"}


RUNBOOK_ALERTS = {
    # alert -> (expression start, `for`, severity)
    "BullMQQueueBacklogHigh": ('bullmq_queue_jobs{state="waiting"} > 1000', "10m", "warning"),
    "BullMQQueueFailureRatioHigh": ("bullmq_queue_failure_ratio > 0.05", "5m", "warning"),
    "BullMQQueuePausedTooLong": ("bullmq_queue_paused == 1", "30m", "warning"),
    "BullMQJobLatencyHigh": (
        "histogram_quantile(0.95, sum by (namespace, policy, queue, le) "
        "(rate(bullmq_job_latency_seconds_bucket[5m]))) > 30",
        "5m",
        "warning",
    ),
    "BullMQDuplicateJobs": ("bullmq_queue_duplicate_jobs > 0", "5m", "warning"),
    "RequeueReplayFailed": ('requeue_replays{phase="Failed"} > 0', None, "warning"),
    "RequeueRedisUnreachable": ("requeue_redis_up == 0", "2m", "critical"),
    "RequeueEscalationMessageUndelivered": ("requeue_escalation_messages_pending > 0", "5m", "critical"),
    "RequeueOperatorDown": (
        f'absent(up{{job="{RELEASE}-metrics", namespace="{NAMESPACE}"}} == 1)',
        "5m",
        "critical",
    ),
}


def alerts(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    found: dict[str, dict[str, Any]] = {}
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"}
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}
            assert r["alert"] not in found
            found[r["alert"]] = r
    return found


def test_prometheus_rule_has_the_runbook_alerts(chart: helm_python.Chart) -> None:
    found = alerts(render(chart, CASES["prometheusRule"]))
    assert set(found) == set(RUNBOOK_ALERTS)
    known = sample_names() | PROMETHEUS_SERIES
    for name, (expr, duration, severity) in RUNBOOK_ALERTS.items():
        alert = found[name]
        assert alert["expr"] == expr
        assert alert.get("for") == duration
        assert alert["labels"] == {"severity": severity, "team": "payments"}
        (metric,) = check_query(alert["expr"])
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        assert annotations["runbook_url"] == f"https://github.com/requeue-dev/requeue#{name.lower()}"
        # Templated labels must exist on the alerting series.
        for text in (annotations["summary"], annotations["description"]):
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in known[metric], f"{name} refers to missing label {label}"
    assert found["RequeueReplayFailed"]["expr"].endswith(f'{{phase="{ReplayPhase.FAILED.value}"}} > 0')
    # absent() of an expression has no labels: the operator-down alert templates none
    assert "$labels" not in json.dumps(found["RequeueOperatorDown"]["annotations"])


def test_every_alert_links_to_a_troubleshooting_section_of_the_readme(chart: helm_python.Chart) -> None:
    readme = (ROOT / "README.md").read_text()
    troubleshooting = readme[readme.index("\n## Troubleshooting\n") :]
    troubleshooting = troubleshooting[: troubleshooting.index("\n## ", 1)]
    # GitHub's anchor of a heading made of one word: the word in lower case
    anchors = {h.lower() for h in re.findall(r"^### (\w+)$", troubleshooting, re.MULTILINE)}
    for name, alert in alerts(render(chart, CASES["prometheusRule"])).items():
        anchor = alert["annotations"]["runbook_url"].rpartition("#")[2]
        assert anchor in anchors, f"{name}: README.md has no troubleshooting section #{anchor}"


def operator_up_selector(alert: dict[str, Any]) -> dict[str, str]:
    """The equality matchers of the ``up`` selector inside RequeueOperatorDown."""
    (selector,) = selectors(alert["expr"])
    assert selector.name == "up"
    return {m.name: m.value for m in selector.matchers.matchers}


def test_operator_down_watches_the_target_the_service_monitor_scrapes(chart: helm_python.Chart) -> None:
    objects = render(chart, {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}})
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    # prometheus-operator names a ServiceMonitor's job after the Service (no jobLabel set),
    # and its targets' namespace label after the Service's namespace.
    assert "jobLabel" not in monitor["spec"]
    matchers = operator_up_selector(alerts(objects)["RequeueOperatorDown"])
    assert matchers == {"job": service["metadata"]["name"], "namespace": service["metadata"]["namespace"]}


def test_operator_down_selector_can_be_set(chart: helm_python.Chart) -> None:
    values = {"prometheusRule": {"enabled": True, "operatorUpSelector": 'job="requeue", cluster="eu-1"'}}
    alert = alerts(render(chart, values))["RequeueOperatorDown"]
    assert operator_up_selector(alert) == {"job": "requeue", "cluster": "eu-1"}
    assert 'up{job="requeue", cluster="eu-1"}' in alert["annotations"]["description"]


def test_alert_thresholds_come_from_values(chart: helm_python.Chart) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "queueBacklogThreshold": 5000,
            "failureRatioThreshold": 0.2,
            "failureRatioFor": "15m",
            "queuePausedFor": "2h",
            "operatorDownFor": "10m",
            "jobLatencyP95Threshold": 12.5,
            "jobLatencyFor": "20m",
            "jobLatencyWindow": "10m",
            "runbookBaseUrl": "https://wiki.example.com/queues#",
        }
    }
    found = alerts(render(chart, values))
    assert found["BullMQQueueBacklogHigh"]["expr"].endswith("> 5000")
    assert found["BullMQQueueFailureRatioHigh"]["expr"].endswith("> 0.2")
    assert found["BullMQQueueFailureRatioHigh"]["for"] == "15m"
    assert "20%" in found["BullMQQueueFailureRatioHigh"]["annotations"]["description"]
    assert found["BullMQQueuePausedTooLong"]["for"] == "2h"
    assert found["RequeueOperatorDown"]["for"] == "10m"
    latency = found["BullMQJobLatencyHigh"]
    assert latency["expr"].endswith("(rate(bullmq_job_latency_seconds_bucket[10m]))) > 12.5")
    assert latency["for"] == "20m"
    assert "above 12.5s for 20m" in latency["annotations"]["description"]
    assert found["RequeueRedisUnreachable"]["annotations"]["runbook_url"] == (
        "https://wiki.example.com/queues#requeueredisunreachable"
    )


def dashboard(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config_map = one(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    board: dict[str, Any] = json.loads(text)
    assert board == json.loads((CHART / "dashboards" / "requeue-overview.json").read_text())
    return board


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables so a PromQL parser can read the query."""
    return expr.replace("$__rate_interval", "5m").replace("${datasource}", "prometheus")


def test_dashboard_panels_query_real_metrics(chart: helm_python.Chart) -> None:
    board = dashboard(render(chart, CASES["dashboard"]))
    assert board["uid"] == "requeue-overview"
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    by_title: dict[str, list[str]] = {}
    for panel in panels:
        assert panel["description"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        exprs = [t["expr"] for t in panel["targets"]]
        by_title[panel["title"]] = exprs
        for expr in exprs:
            used |= check_query(grafana_to_promql(expr))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            inner = variable["query"]["query"]
            assert inner.startswith("label_values(")
            check_query(inner[len("label_values(") : inner.rindex(",")])
    # The four views the runbook asks for.
    assert any("by (namespace, queue, state)" in e for e in by_title["Queue depth by state"])
    assert "bullmq_queue_failure_ratio" in by_title["Failure ratio"][0]
    assert "rate(requeue_replay_jobs_total" in by_title["Replay progress (jobs/s)"][0]
    assert "requeue_gate_healthy" in by_title["Gate health"][0]
    assert "histogram_quantile(0.95" in by_title["Job latency p95 (added to finished)"][0]
    assert "bullmq_job_latency_seconds_bucket" in by_title["Job latency p95 (added to finished)"][0]
    # Every requeue metric is on the dashboard, except the runbook-compatible legacy gauge.
    exported = {n for n in sample_names() if not n.endswith(("_sum", "_count"))} - {"queue_depth_total"}
    assert exported <= used, f"not on the dashboard: {sorted(exported - used)}"


def test_dashboard_panels_do_not_overlap(chart: helm_python.Chart) -> None:
    board = dashboard(render(chart, CASES["dashboard"]))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        area = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area


def test_dashboard_namespace_can_differ(chart: helm_python.Chart) -> None:
    objects = render(chart, {"dashboard": {"enabled": True, "namespace": "monitoring"}})
    assert one(objects, "ConfigMap")["metadata"]["namespace"] == "monitoring"


@pytest.mark.parametrize("case", ["default", "watchNamespaces"])
def test_the_deployment_args_are_ones_requeue_run_accepts(chart: helm_python.Chart, case: str) -> None:
    """The chart and the CLI must agree, or the pod crash-loops on a usage error."""
    from requeue.cli import main

    container = one(render(chart, CASES[case]), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = list(container.get("command", [])[1:]) + list(container["args"])
    assert args[0] == "run"
    run = main.commands["run"]
    ctx = run.make_context("run", args[1:])  # raises click.UsageError on an unknown flag
    assert ctx.params["standalone"] is True
    if case == "watchNamespaces":
        assert list(ctx.params["namespaces"]) == ["visapi", "payments"]
    else:
        assert ctx.params["clusterwide"] is True
