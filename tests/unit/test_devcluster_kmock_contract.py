"""devcluster's emulator subclasses kmock's KubernetesEmulator: the parts of kmock it relies on.

kmock documents the emulator for subclassing, but the handler methods
:class:`devcluster.ApiServer` overrides (``_handle``, ``_serve_watch`` ...) and the
attributes it reads (``_lock``, ``_buses``) are protected, not public API. The
``demo`` extra pins kmock to the release these tests pass with; when a kmock
upgrade renames or reshapes one of them, a test here fails naming it, instead of
the emulator misbehaving under kubectl somewhere in the e2e suite.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
import pytest_asyncio

# kmock's package imports these without re-exporting them (not in its __all__): take them
# from the modules that define them, so they stay typed.
from kmock._internal.aiobus import Bus as KmockBus
from kmock._version import __version__ as kmock_version
from packaging.requirements import Requirement

from devcluster.emulator import KMOCK_ATTRIBUTES, KMOCK_HOOKS, ApiServer, merge_patch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(KMOCK_HOOKS))
def test_kmock_still_has_each_overridden_method(name: str) -> None:
    method = getattr(kmock.KubernetesEmulator, name, None)
    assert callable(method), f"kmock.KubernetesEmulator.{name} is gone: ApiServer overrides it"
    params = list(inspect.signature(method).parameters)[1:]  # after self
    assert tuple(params) == KMOCK_HOOKS[name], (
        f"kmock.KubernetesEmulator.{name}{tuple(params)} changed; ApiServer expects {KMOCK_HOOKS[name]}"
    )


async def test_kmock_still_has_the_attributes_the_emulator_reads() -> None:
    emulator = kmock.KubernetesEmulator()
    missing = [name for name in KMOCK_ATTRIBUTES if not hasattr(emulator, name)]
    assert missing == [], f"kmock.KubernetesEmulator lost {missing}"
    assert isinstance(emulator._lock, asyncio.Lock)
    assert isinstance(emulator._buses[kmock.resource("v1/secrets")], KmockBus)


def test_the_installed_kmock_is_in_the_range_the_demo_extra_pins() -> None:
    demo = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["demo"]
    spec = next(Requirement(r).specifier for r in demo if Requirement(r).name == "kmock")
    assert spec.filter([kmock_version]), f"kmock {kmock_version} is outside the demo extra's {spec}"
    assert any(s.operator == "<" for s in spec), "kmock needs an upper bound: ApiServer uses its internals"


@pytest_asyncio.fixture
async def served() -> AsyncIterator[kmock.Server]:
    async with ApiServer() as server, kmock.Server(server) as http:
        yield http


async def test_the_namespaces_resource_is_served_without_patching_kmocks_parser(
    served: kmock.Server,
) -> None:
    """kmock reads /api/v1/namespaces as a namespace scope; ApiServer readdresses the request."""
    async with served.client.get("/api/v1/namespaces") as response:
        assert response.status == 200, await response.text()
        names = [ns["metadata"]["name"] for ns in (await response.json())["items"]]
    assert names == ["default", "kube-system"]
    async with served.client.get("/api/v1/namespaces/default") as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["kind"] == "Namespace"


async def test_a_watch_is_a_json_stream(served: kmock.Server) -> None:
    """kubectl decodes watch streams by media type; kmock's own says application/octet-stream."""
    async with served.client.get("/api/v1/namespaces", params={"watch": "true"}) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        event = json.loads(await asyncio.wait_for(response.content.readline(), timeout=10))
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Namespace"


def test_merge_patch_is_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"}
    patched = merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "s": {"now": "a dict"}})
    assert patched == {"a": {"c": 2, "d": 3}, "l": [3], "s": {"now": "a dict"}}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"}  # not modified
