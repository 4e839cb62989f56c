"""The kmock API server behaves enough like Kubernetes for kubectl and kopf.

Uses a CRD of its own (``widgets.test.requeue.dev``) so that these tests do not
depend on the requeue CRDs; whatever ``crds/*.yaml`` holds is checked too.
"""

from __future__ import annotations

import base64
import json
import queue
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from support import wait_until
from support.kube import Kube, KubectlError, jsonpath, load_crds
from support.operator_proc import OperatorProcess

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROBE_OPERATOR = Path(__file__).resolve().parents[1] / "support" / "probe_operator.py"
KOPF_PROBE = (sys.executable, "-m", "kopf", "run", "--standalone", "-A", "--verbose", str(PROBE_OPERATOR))

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.requeue.dev"},
    "spec": {
        "group": "test.requeue.dev",
        "scope": "Namespaced",
        "names": {
            "kind": "Widget",
            "plural": "widgets",
            "singular": "widget",
            "shortNames": ["wdg"],
            "categories": ["requeue"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
                "additionalPrinterColumns": [
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }
        ],
    },
}
WIDGETS = "test.requeue.dev/v1/widgets"


def widget(name: str, size: int = 1, **metadata: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "test.requeue.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name, **metadata},
            "spec": {"size": size},
        }
    )


@pytest.fixture
def widgets(kube: Kube) -> Kube:
    kube.add_crd(WIDGET_CRD)
    return kube


def test_discovery_lists_builtins_our_crds_and_the_test_crd(widgets: Kube) -> None:
    out = widgets.kubectl("api-resources", "-o", "name").stdout.split()
    for name in (
        "namespaces",
        "secrets",
        "events",
        "leases.coordination.k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
        "widgets.test.requeue.dev",
    ):
        assert name in out
    for crd in load_crds():  # crds/*.yaml, generated from the API models
        assert f"{crd['spec']['names']['plural']}.{crd['spec']['group']}" in out
        short = crd["spec"]["names"].get("shortNames", [])
        for alias in short:
            assert widgets.kubectl("get", alias).returncode == 0
    crd_names = {c["metadata"]["name"] for c in widgets.kubectl.json("get", "crd")["items"]}
    assert "widgets.test.requeue.dev" in crd_names


def test_apply_then_reapply_round_trips(widgets: Kube, tmp_path: Path) -> None:
    manifest = tmp_path / "w1.yaml"
    manifest.write_text(
        "apiVersion: test.requeue.dev/v1\nkind: Widget\n"
        "metadata: {name: w1, labels: {team: a}}\nspec: {size: 3, colour: red}\n"
    )
    assert "created" in widgets.kubectl("apply", "-f", str(manifest)).stdout
    first = widgets.kubectl.json("get", "wdg", "w1")
    assert first["spec"] == {"size": 3, "colour": "red"}
    assert first["metadata"]["namespace"] == "default"
    assert first["metadata"]["generation"] == 1 and first["metadata"]["uid"]

    manifest.write_text(
        "apiVersion: test.requeue.dev/v1\nkind: Widget\n"
        "metadata: {name: w1, labels: {team: a}}\nspec: {size: 4}\n"
    )
    assert "configured" in widgets.kubectl("apply", "-f", str(manifest)).stdout
    second = widgets.kubectl.json("get", "widgets", "w1")
    assert second["spec"] == {"size": 4}  # kubectl's merge patch removed the dropped key
    assert second["metadata"]["generation"] == 2
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert "unchanged" in widgets.kubectl("apply", "-f", str(manifest)).stdout

    stored = widgets.get(WIDGETS, "w1")
    assert stored is not None and stored["spec"] == {"size": 4}
    listed = widgets.kubectl.json("get", "widgets", "-l", "team=a")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    assert widgets.kubectl.json("get", "widgets", "-l", "team=b")["items"] == []


def test_get_prints_the_crd_printer_columns(widgets: Kube) -> None:
    widgets.kubectl.apply(widget("w1", size=7))
    widgets.kubectl(
        "patch",
        "wdg",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Replaying", "conditions": [{"type": "Ready", "status": "False"}]}}),
    )
    lines = widgets.kubectl("get", "wdg").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "SIZE", "READY", "AGE"]
    assert lines[1].split()[:4] == ["w1", "Replaying", "7", "False"]
    assert widgets.kubectl("get", "requeue").returncode == 0  # the category works too


def test_status_subresource_rules(widgets: Kube) -> None:
    widgets.kubectl.apply(widget("w1", size=1))
    widgets.kubectl(
        "patch",
        "wdg",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Done"}, "spec": {"size": 99}}',
    )
    obj = widgets.get(WIDGETS, "w1")
    assert obj is not None
    assert obj["status"] == {"phase": "Done"} and obj["spec"]["size"] == 1
    assert obj["metadata"]["generation"] == 1  # status changes never bump generation

    widgets.kubectl(
        "patch", "wdg", "w1", "--type=merge", "-p", '{"status": {"phase": "Hacked"}, "spec": {"size": 2}}'
    )
    obj = widgets.get(WIDGETS, "w1")
    assert obj is not None
    assert obj["status"] == {"phase": "Done"} and obj["spec"]["size"] == 2
    assert obj["metadata"]["generation"] == 2


def test_stale_resource_version_is_a_conflict(widgets: Kube) -> None:
    widgets.kubectl.apply(widget("w1"))
    with pytest.raises(KubectlError, match="the object has been modified"):
        widgets.kubectl(
            "patch",
            "wdg",
            "w1",
            "--type=merge",
            "-p",
            '{"metadata": {"resourceVersion": "1"}, "spec": {"size": 5}}',
        )


def test_delete_waits_for_finalizers(widgets: Kube) -> None:
    widgets.kubectl.apply(widget("w1", finalizers=["test.requeue.dev/hold"]))
    widgets.kubectl("delete", "wdg", "w1", "--wait=false")
    held = widgets.kubectl.json("get", "wdg", "w1")
    assert held["metadata"]["deletionTimestamp"]

    widgets.kubectl("patch", "wdg", "w1", "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
    gone = widgets.kubectl("get", "wdg", "w1", check=False)
    assert gone.returncode != 0 and "(NotFound)" in gone.stderr
    assert widgets.get(WIDGETS, "w1") is None
    widgets.kubectl.apply(widget("w1"))  # the name is free again
    assert widgets.kubectl("delete", "wdg", "w1").returncode == 0  # no finalizers: gone at once


def test_dependents_go_with_their_owner_and_keep_their_finalizers(widgets: Kube) -> None:
    widgets.kubectl.apply(widget("parent"))
    widgets.kubectl.apply(widget("other"))
    owner, other = widgets.kubectl.json("get", "wdg", "parent"), widgets.kubectl.json("get", "wdg", "other")

    def ref(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "test.requeue.dev/v1",
            "kind": "Widget",
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
            "controller": False,
        }

    widgets.kubectl.apply(widget("child", ownerReferences=[ref(owner)]))
    widgets.kubectl.apply(widget("held", ownerReferences=[ref(owner)], finalizers=["test.requeue.dev/hold"]))
    widgets.kubectl.apply(widget("shared", ownerReferences=[ref(owner), ref(other)]))
    widgets.kubectl.apply(widget("loner"))

    widgets.kubectl("delete", "wdg", "parent")
    # the collector deletes through the API: a dependent with a finalizer is only marked
    wait_until(lambda: widgets.get(WIDGETS, "child") is None, message="child collected")

    def marked() -> Any:
        return (widgets.get(WIDGETS, "held") or {}).get("metadata", {}).get("deletionTimestamp")

    assert wait_until(marked, message="held marked for deletion")
    names = {o["metadata"]["name"] for o in widgets.kubectl.json("get", "wdg")["items"]}
    assert names == {"other", "held", "shared", "loner"}  # one owner left, or never owned

    widgets.kubectl("patch", "wdg", "held", "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
    widgets.kubectl("delete", "wdg", "other")
    wait_until(lambda: widgets.get(WIDGETS, "shared") is None, message="shared collected with its last owner")
    assert widgets.get(WIDGETS, "held") is None
    assert [o["metadata"]["name"] for o in widgets.kubectl.json("get", "wdg")["items"]] == ["loner"]


def test_secrets_events_and_describe(widgets: Kube) -> None:
    password = base64.b64encode(b"s3cret").decode()
    widgets.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": "redis"},
            "data": {"password": password},
        }
    )
    secret = widgets.kubectl.json("get", "secret", "redis")
    assert base64.b64decode(secret["data"]["password"]) == b"s3cret"
    assert widgets.kubectl("get", "secrets").stdout.split()[4:7] == ["redis", "Opaque", "1"]

    widgets.kubectl.apply(widget("w1"))
    uid = widgets.kubectl.json("get", "wdg", "w1")["metadata"]["uid"]
    widgets.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": "w1-"},
                "type": "Warning",
                "reason": "GateFailed",
                "message": "postgres unreachable",
                "lastTimestamp": "2026-01-01T00:00:00Z",
                "involvedObject": {
                    "apiVersion": "test.requeue.dev/v1",
                    "kind": "Widget",
                    "name": "w1",
                    "namespace": "default",
                    "uid": uid,
                },
            }
        ),
    )
    events = widgets.kubectl.json("get", "events", "--field-selector", "involvedObject.name=w1,type=Warning")[
        "items"
    ]
    assert [e["reason"] for e in events] == ["GateFailed"]
    assert events[0]["metadata"]["name"].startswith("w1-")
    assert "GateFailed" in widgets.kubectl("get", "events").stdout
    assert (
        widgets.kubectl.json("get", "events", "--field-selector", "involvedObject.name=other")["items"] == []
    )
    described = widgets.kubectl("describe", "wdg", "w1").stdout
    assert "Name:" in described and "w1" in described and "GateFailed" in described


def test_lists_carry_kind_and_resource_version(widgets: Kube) -> None:
    widgets.kubectl.apply(widget("w1"))
    url = f"{widgets.url}/apis/test.requeue.dev/v1/namespaces/default/widgets"
    with urllib.request.urlopen(url, timeout=10) as response:
        listed = json.load(response)
    assert listed["kind"] == "WidgetList" and listed["apiVersion"] == "test.requeue.dev/v1"
    assert listed["metadata"]["resourceVersion"] == listed["items"][0]["metadata"]["resourceVersion"]


def test_secret_string_data_becomes_data(widgets: Kube) -> None:
    widgets.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "stringData": {"dsn": "postgresql://u:p@h/db"},
        }
    )
    widgets.kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "stringData": {"dsn": "postgresql://u:p@h/db2"},
        }
    )
    secret = widgets.kubectl.json("get", "secret", "db")
    assert "stringData" not in secret
    assert base64.b64decode(secret["data"]["dsn"]) == b"postgresql://u:p@h/db2"


def test_typed_kubectl_create_sends_protobuf_and_works(widgets: Kube) -> None:
    """``kubectl create namespace|secret|configmap`` encode protobuf; the emulator decodes it."""
    widgets.kubectl("create", "namespace", "visapi")
    assert "visapi" in widgets.kubectl("get", "namespaces", "-o", "name").stdout
    widgets.kubectl(
        "-n",
        "visapi",
        "create",
        "secret",
        "generic",
        "redis",
        "--from-literal=url=redis://127.0.0.1:6379/0",
        "--from-literal=empty=",
    )
    secret = widgets.kubectl.json("-n", "visapi", "get", "secret", "redis")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["url"]).decode() == "redis://127.0.0.1:6379/0"
    assert secret["data"]["empty"] == ""
    widgets.kubectl("-n", "visapi", "create", "configmap", "settings", "--from-literal=rate=50")
    assert widgets.kubectl.json("-n", "visapi", "get", "cm", "settings")["data"] == {"rate": "50"}
    widgets.kubectl("label", "namespace", "visapi", "team=payments")
    assert widgets.kubectl.json("get", "ns", "visapi")["metadata"]["labels"] == {"team": "payments"}
    with pytest.raises(KubectlError, match="AlreadyExists"):
        widgets.kubectl("create", "namespace", "visapi")
    widgets.kubectl("delete", "namespace", "visapi")
    assert "visapi" not in widgets.kubectl("get", "namespaces", "-o", "name").stdout


def test_repo_examples_apply_and_print_with_the_crd_columns(kube: Kube) -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    kinds = {
        doc["kind"]
        for path in examples
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and "kind" in doc
    }
    for path in examples:
        kube.kubectl("apply", "-f", str(path))
    for crd in load_crds():
        names = crd["spec"]["names"]
        if names["kind"] not in kinds:
            continue
        columns = crd["spec"]["versions"][0].get("additionalPrinterColumns", [])
        header = kube.kubectl("get", names["shortNames"][0], "-A").stdout.splitlines()[0]
        for column in columns:
            if not column.get("priority"):
                assert column["name"].upper() in header


class Background:
    """A kubectl that keeps running (``get -w``, ``wait``, ``delete`` holding for a finalizer).

    Its stdout is read line by line on a thread, so :meth:`line` waits a bounded time for the
    next one; ``stop()`` terminates it (if still running) and returns (exit code, stdout, stderr).
    """

    def __init__(self, kube: Kube, *args: str) -> None:
        self.proc = subprocess.Popen(
            kube.kubectl.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def line(self, timeout: float = 30.0) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"kubectl printed no line within {timeout}s after {self._seen}") from None
        self._seen.append(line)
        return line

    def stop(self, *, terminate: bool) -> tuple[int, str, str]:
        if terminate:
            self.proc.terminate()
        self.proc.wait(timeout=60)
        assert self.proc.stderr is not None
        rest: list[str] = []
        while not self._lines.empty():
            rest.append(self._lines.get())
        return self.proc.returncode, "".join(self._seen + rest), self.proc.stderr.read()


@pytest.fixture
def background(widgets: Kube) -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(*args: str) -> Background:
        started.append(Background(widgets, *args))
        return started[-1]

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


def watch_requests(kube: Kube, resource: str) -> int:
    """How many watch requests the emulator has received for ``resource`` (from kmock's request log)."""
    res = kmock.resource(resource)
    return int(
        kube.run(
            lambda server: sum(1 for r in server if r.action == kmock.action.WATCH and r.resource == res)
        )
    )


def assert_no_watch_errors(stderr: str) -> None:
    for symptom in ("Failed to watch", "Unhandled Error", "no stream serializers"):
        assert symptom not in stderr, stderr


def test_get_watch_prints_each_change_as_a_table_row(
    widgets: Kube, background: Callable[..., Background]
) -> None:
    widgets.kubectl.apply(widget("w1"))
    watch = background("get", "wdg", "-w")
    assert watch.line().split() == ["NAME", "PHASE", "SIZE", "READY", "AGE"]
    assert watch.line().split()[:1] == ["w1"]  # the list, before the watch
    widgets.kubectl.apply(widget("w2", size=2))
    assert watch.line().split()[:2] == ["w2", "2"]  # no phase yet: an empty cell
    widgets.kubectl("patch", "wdg", "w1", "--type=merge", "-p", '{"spec": {"size": 5}}')
    assert watch.line().split()[:2] == ["w1", "5"]
    widgets.kubectl("delete", "wdg", "w2")
    assert watch.line().split()[:1] == ["w2"]  # kubectl prints the deleted object's row
    _, _, stderr = watch.stop(terminate=True)
    assert_no_watch_errors(stderr)


def test_delete_and_wait_for_delete_watch_without_errors(
    widgets: Kube, background: Callable[..., Background]
) -> None:
    """Both watch the held object until its finalizer goes (kubectl's watch path, not a poll)."""
    widgets.kubectl.apply(widget("held", finalizers=["test.requeue.dev/hold"]))
    waiter = background("wait", "--for=delete", "wdg/held", "--timeout=60s")
    deleter = background("delete", "wdg", "held", "--timeout=60s")
    wait_until(
        lambda: watch_requests(widgets, WIDGETS) >= 2,
        timeout=30,
        message="kubectl delete and kubectl wait watching the widget",
    )
    widgets.kubectl("patch", "wdg", "held", "--type=merge", "-p", '{"metadata": {"finalizers": null}}')

    code, out, err = deleter.stop(terminate=False)
    assert code == 0 and 'widget.test.requeue.dev "held" deleted' in out, out + err
    assert_no_watch_errors(err)
    code, out, err = waiter.stop(terminate=False)
    assert code == 0 and "condition met" in out, out + err
    assert_no_watch_errors(err)
    assert widgets.get(WIDGETS, "held") is None


def test_jsonpath_subset() -> None:
    obj = {"status": {"conditions": [{"type": "A", "status": "x"}, {"type": "B", "status": "y"}]}}
    assert jsonpath(obj, '.status.conditions[?(@.type=="B")].status') == ["y"]
    assert jsonpath(obj, ".status.conditions[*].type") == ["A", "B"]
    assert jsonpath(obj, ".status.conditions[0].status") == ["x"]
    assert jsonpath(obj, ".status.missing") == []


def test_kopf_operator_sets_status_and_releases_finalizers(widgets: Kube, operator_factory: Any) -> None:
    operator: OperatorProcess = operator_factory(KOPF_PROBE)
    operator.wait_for_log(r"Starting the watch-stream for widgets")

    widgets.kubectl.apply(widget("w1", size=3))

    def phase(name: str) -> str | None:
        obj = widgets.kubectl.json("get", "wdg", name)
        return obj.get("status", {}).get("phase")  # type: ignore[no-any-return]

    wait_until(
        lambda: phase("w1") == "Ready",
        timeout=30,
        message=lambda: f"status.phase=Ready; operator log:\n{operator.logs()[-3000:]}",
    )
    assert "Ready" in widgets.kubectl("get", "wdg", "w1").stdout
    obj = widgets.kubectl.json("get", "wdg", "w1")
    assert obj["metadata"]["finalizers"] == ["probe.test.requeue.dev/finalizer"]
    wait_until(
        lambda: "Probed" in widgets.kubectl("get", "events").stdout,
        timeout=15,
        message="the operator's event",
    )

    operator.restart()  # SIGKILL and start again: the next object is still handled
    operator.wait_for_log(r"Starting the watch-stream for widgets")
    widgets.kubectl.apply(widget("w2", size=5))
    wait_until(
        lambda: phase("w2") == "Ready",
        timeout=30,
        message=lambda: f"w2 Ready after restart; log:\n{operator.logs()[-3000:]}",
    )

    widgets.kubectl("delete", "wdg", "w1", "--timeout=30s")  # waits until kopf drops the finalizer
    assert widgets.get(WIDGETS, "w1") is None
