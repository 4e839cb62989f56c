"""Start-up: an emulator on a free loopback port, in its own thread, with a kubeconfig.

:func:`start_cluster` runs the :class:`~devcluster.emulator.ApiServer` and its
garbage collector on a :class:`~devcluster.loop.BackgroundLoop` thread, so the
caller may run blocking ``kubectl`` while an operator subprocess keeps talking
to it. :class:`Cluster` is what a caller holds: the URL, the kubeconfig, the
real kubectl on it, and direct reads and writes that take a client's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import kmock
import yaml

from devcluster.emulator import ApiServer
from devcluster.errors import KubectlError
from devcluster.gc import collect_garbage
from devcluster.kubectl import Kubectl
from devcluster.loop import BackgroundLoop
from devcluster.paths import resource_path
from devcluster.rendering import jsonpath, text_table

__all__ = ["Cluster", "kubeconfig", "load_crds", "start_cluster"]


class Cluster:
    """A running :class:`ApiServer` plus what a client needs to reach it.

    ``url`` and ``kubeconfig`` for clients (the operator subprocess gets
    ``KUBECONFIG``), ``kubectl(...)`` for the user's view (needs kubectl on
    PATH), ``get(...)``/``create(...)`` to use the API without kubectl,
    ``server`` for kmock's own API (requests log, objects with history) —
    touch ``server`` only via ``run()``. ``close()`` stops the server and
    removes ``workdir`` (where the kubeconfig lives).
    """

    def __init__(
        self,
        loop: BackgroundLoop,
        server: ApiServer,
        http: kmock.Server,
        workdir: Path,
        gc_task: asyncio.Task[None] | None = None,
    ) -> None:
        self.loop = loop
        self._gc_task = gc_task
        self.server = server
        self._http = http
        self.workdir = workdir
        self.url = str(http.url).rstrip("/")
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(self.url)))
        self._kubectl: Kubectl | None = None

    @property
    def kubectl(self) -> Kubectl:
        """The real kubectl on this cluster (its own discovery cache); KubectlNotFoundError if not on PATH."""
        if self._kubectl is None:
            self._kubectl = Kubectl(self.kubeconfig, self.workdir / "kubectl-cache")
        return self._kubectl

    def run(self, fn: Callable[[ApiServer], Any]) -> Any:
        """Call ``fn(server)`` on the server's loop (kmock state is not thread-safe)."""

        async def call() -> Any:
            return fn(self.server)

        return self.loop.run(call())

    def get(self, res: str, name: str, namespace: str | None = "default") -> dict[str, Any] | None:
        """Read a stored object directly, e.g. ``kube.get("requeue.dev/v1alpha1/dlqreplays", "r1")``."""
        return self.run(lambda server: server.get_raw(res, name, namespace))  # type: ignore[no-any-return]

    def add_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Store and serve a CustomResourceDefinition, as ``kubectl apply`` of it would."""
        return self.loop.run(self.server.add_crd(crd))

    def list_objects(self, res: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects of a resource (deep copies), by namespace and name; all namespaces if None."""
        return self.run(lambda server: server.list_raw(res, namespace))  # type: ignore[no-any-return]

    def table(self, res: str, namespace: str | None = None, *, sort_by: str | None = None) -> str:
        """What ``kubectl get [--sort-by=JSONPATH]`` prints, from the same server-side Table columns."""
        columns = self.run(lambda server: server.columns(kmock.resource(res)))
        items = self.list_objects(res, namespace)
        if sort_by is not None:
            items.sort(key=lambda obj: str(next(iter(jsonpath(obj, sort_by)), "")))
        return text_table(columns, items, namespace)

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``obj`` over HTTP, as a client would; return the stored object, or raise KubectlError.

        For callers without kubectl: the write takes kubectl's path (stamping,
        validation, watch events), not a shortcut into the store.
        """
        api_version, kind = str(obj["apiVersion"]), str(obj["kind"])
        resource = self.run(lambda server: server.resource_of(api_version, kind))
        if resource is None:
            raise KubectlError(f"the server serves no {kind} in {api_version}")
        url = f"{self.url}/{resource_path(resource, obj.get('metadata', {}).get('namespace'))}"
        request = urllib.request.Request(
            url, data=json.dumps(obj).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                created: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise KubectlError(f"POST {url}: {exc.code} {exc.read().decode(errors='replace')}") from None
        return created

    def close(self) -> None:
        """Stop the collector and the server, end the loop thread, remove ``workdir``."""

        async def stop() -> None:
            if self._gc_task is not None:
                self._gc_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._gc_task
            await self._http.__aexit__(None, None, None)
            await self.server.__aexit__(None, None, None)

        try:
            self.loop.run(stop())
        finally:
            self.loop.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


def kubeconfig(url: str) -> dict[str, Any]:
    """A kubeconfig for the emulator at ``url``: plain HTTP, a token user, namespace ``default``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": "default"}}
        ],
    }


def load_crds(directory: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``directory/*.yaml`` (sorted by file name)."""
    crds: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def start_cluster(crds: Iterable[Mapping[str, Any]] = (), *, workdir: Path | None = None) -> Cluster:
    """Start an emulator on a free loopback port in its own thread, with ``crds`` registered.

    :param crds: CustomResourceDefinitions to serve (e.g. :func:`load_crds` of a directory).
    :param workdir: where the kubeconfig goes (created; removed by ``close()``); default: a temp dir.
    """
    loop = BackgroundLoop("kmock-apiserver")

    async def start() -> tuple[ApiServer, kmock.Server, asyncio.Task[None]]:
        server = ApiServer()
        await server.__aenter__()
        http = kmock.Server(server)
        await http.__aenter__()
        for crd in crds:
            await server.add_crd(crd)
        gc_task = asyncio.create_task(collect_garbage(server, str(http.url).rstrip("/")), name="kmock-gc")
        return server, http, gc_task

    try:
        server, http, gc_task = loop.run(start())
    except BaseException:
        loop.close()
        raise
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="devcluster-"))
    else:
        workdir.mkdir(parents=True, exist_ok=True)
    return Cluster(loop, server, http, workdir, gc_task)
