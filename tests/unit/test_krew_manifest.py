"""The krew manifest is honest: its sha256 is the archive build_archive.py makes, its version is
pyproject's, and the archive's launcher, on PATH, is what kubectl runs for ``kubectl requeue``."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import yaml

from support.kube import find_kubectl

REPO = Path(__file__).resolve().parents[2]
KREW = REPO / "plugins" / "krew"


def build_archive() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_archive", KREW / "build_archive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_manifest_names_the_archive_and_the_version() -> None:
    manifest = yaml.safe_load((KREW / "requeue.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    data = build_archive().build()
    assert data == build_archive().build()  # the same bytes every time
    [platform] = manifest["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["spec"]["version"] == f"v{version}"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == sorted(f["from"] for f in platform["files"])
        assert platform["bin"] in tar.getnames()


def test_kubectl_runs_the_launcher_from_the_archive(tmp_path: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(build_archive().build())) as tar:
        tar.extractall(tmp_path, filter="data")
    base = {"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}
    with_requeue = {
        **base,
        "REQUEUE_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]),
    }
    ok = subprocess.run(
        [find_kubectl(), "requeue", "--help"], capture_output=True, text=True, env=with_requeue, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "Usage: kubectl requeue" in ok.stdout and "inspect" in ok.stdout

    without = subprocess.run(
        [find_kubectl(), "requeue", "--help"], capture_output=True, text=True, env=base, check=False
    )
    assert without.returncode != 0
    assert "no python with the requeue package found: pip install requeue" in without.stderr
