"""`requeue crds` writes the chart's CRD templates and `--check` catches a stale one.

The chart renders the CRDs from templates/crds/ (Helm never upgrades a chart's
crds/ directory); these templates must be exactly the generated CRDs, with
Go-template syntax in a schema (``{{`` in a description) escaped.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import helm_python
import yaml
from click.testing import CliRunner

from requeue.api.crd import chart_template, crd_for, render_chart_templates
from requeue.api.resources import KINDS
from requeue.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "requeue"


def project(tmp_path: Path) -> Path:
    """A directory shaped like the repository: crds/, charts/requeue/ (a copy) and docs/."""
    shutil.copytree(CHART, tmp_path / "charts" / "requeue")
    shutil.rmtree(tmp_path / "charts" / "requeue" / "templates" / "crds")
    return tmp_path


def test_crds_writes_the_chart_templates_and_check_names_a_stale_one(tmp_path: Path) -> None:
    root = project(tmp_path)
    runner = CliRunner()
    written = runner.invoke(main, ["crds", "--dir", str(root / "crds")])
    assert written.exit_code == 0, written.output
    templates = root / "charts" / "requeue" / "templates" / "crds"
    assert {p.name: p.read_text() for p in templates.glob("*.yaml")} == render_chart_templates()
    assert runner.invoke(main, ["crds", "--check", "--dir", str(root / "crds")]).exit_code == 0

    stale = templates / f"requeue.dev_{KINDS[0].INFO.plural}.yaml"
    stale.write_text(stale.read_text().replace("resource-policy: keep", "resource-policy: none"))
    checked = runner.invoke(main, ["crds", "--check", "--dir", str(root / "crds")])
    assert checked.exit_code == 1
    assert str(stale) in checked.output
    assert "run `requeue crds`" in checked.output


def test_template_syntax_in_a_schema_renders_literally(tmp_path: Path) -> None:
    root = project(tmp_path)
    crd: dict[str, Any] = copy.deepcopy(crd_for(KINDS[0].INFO))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["description"] = 'A BullMQ job name such as {{ .Values.x }} or {{"{{"}}, kept as written.'
    template = root / "charts" / "requeue" / "templates" / "crds" / "crd.yaml"
    template.parent.mkdir()
    template.write_text(chart_template(crd))
    with helm_python.Chart.load(root / "charts" / "requeue") as chart:
        files = chart.render({}, name="requeue", namespace="requeue-system", is_install=True)
    rendered = yaml.safe_load(files["requeue/templates/crds/crd.yaml"])
    rendered["metadata"] = {"name": rendered["metadata"]["name"]}
    assert rendered == crd
