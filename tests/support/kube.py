"""The e2e tests' Kubernetes API server: the ``devcluster`` package's emulator, serving ``crds/*.yaml``.

The emulator itself (kmock's ``KubernetesEmulator`` with the fixes kubectl and
kopf need, CRD validation, server-side Tables, kubeconfig writing) lives in
``operator/devcluster/``, because ``requeue demo`` runs on it too; see
``devcluster.emulator``'s docstring for what it emulates and what not. This module keeps the names the
tests use: ``Kube`` (a running emulator), ``start_kube()`` (registering the
CRD files from the repository, the ones users install), ``load_crds()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devcluster import (
    ApiServer,
    Kubectl,
    KubectlError,
    KubectlNotFoundError,
    find_kubectl,
    human_age,
    jsonpath,
    kubeconfig,
    start_cluster,
)
from devcluster import Cluster as Kube
from devcluster import load_crds as _load_crds

__all__ = [
    "ApiServer",
    "Kube",
    "Kubectl",
    "KubectlError",
    "KubectlNotFoundError",
    "find_kubectl",
    "human_age",
    "jsonpath",
    "kubeconfig",
    "load_crds",
    "start_kube",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO_ROOT / "crds"


def load_crds(directory: Path = CRDS_DIR) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``directory/*.yaml`` (default: the repo's crds/)."""
    return _load_crds(directory)


def start_kube(crds: Iterable[Mapping[str, Any]] | None = None) -> Kube:
    """Start an emulator on a free port in its own thread; register ``crds`` (default: crds/*.yaml)."""
    return start_cluster(load_crds() if crds is None else crds)
