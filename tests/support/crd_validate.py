"""Validate an object the way a Kubernetes API server validates a custom resource.

The validator lives in :mod:`devcluster.validation` (the API-server
emulator of ``requeue demo`` and the e2e tests uses it); this module keeps
the tests' names, with ``load_crds()`` reading the repository's ``crds/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devcluster.validation import crds_by_kind, schema_of, validate

__all__ = ["load_crds", "schema_of", "validate"]

ROOT = Path(__file__).resolve().parents[2]


def load_crds(directory: Path = ROOT / "crds") -> dict[str, dict[str, Any]]:
    """Kind -> CRD document for every file in ``crds/``."""
    return crds_by_kind(directory)
