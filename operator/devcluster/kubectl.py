"""The real ``kubectl`` against one kubeconfig: what ``requeue demo`` shows and the e2e tests drive."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devcluster.errors import KubectlError, KubectlNotFoundError

__all__ = ["Kubectl", "find_kubectl"]


def find_kubectl() -> str:
    """The ``kubectl`` on PATH; KubectlNotFoundError (saying how to install it) if there is none."""
    found = shutil.which("kubectl")
    if not found:
        raise KubectlNotFoundError(
            "kubectl is not on PATH: install it (e.g. apt-get install -y kubernetes-client, "
            "or https://kubernetes.io/docs/tasks/tools/)"
        )
    return found


class Kubectl:
    """Runs the real kubectl against one kubeconfig, with its own discovery cache directory.

    The private cache matters: each emulator has a fresh port and may gain CRDs
    at run time, and kubectl would otherwise trust a stale ``~/.kube/cache``.
    """

    def __init__(self, kubeconfig: Path, cache_dir: Path, binary: str | None = None) -> None:
        self.binary = binary or find_kubectl()
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    def command(self, *args: str) -> list[str]:
        """The argv that runs ``kubectl <args>`` on this cluster (for a long-running Popen, e.g. -w)."""
        return [self.binary, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl <args>``; with ``check``, a non-zero exit raises KubectlError with its output."""
        proc = subprocess.run(
            self.command(*args), input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        """``kubectl <args> -o json``, parsed."""
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, manifest: Mapping[str, Any] | str) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` with a dict (sent as JSON) or YAML/JSON text."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", input=text)
