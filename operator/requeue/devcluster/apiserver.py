"""A local stand-in for a Kubernetes API server: kmock's emulator, made good enough for kubectl and kopf.

``requeue demo`` runs the operator against it on a laptop with no cluster, and
the e2e tests drive it with the real ``kubectl``. It is not a cluster: there
are no nodes, controllers or admission webhooks, only the API objects.

kmock (by kopf's author) keeps objects in memory and serves list/watch/get/
create/patch/delete. :class:`ApiServer` fills the gaps that real clients trip
on, in the emulator rather than in the operator (DESIGN.md, Tests):

* discovery: the core group says ``v1`` (kmock: ``/v1``, kubectl then finds no
  Secret); CRDs, namespaces, secrets, events, leases are registered with verbs
  (kopf idles silently without CRDs and namespaces in discovery);
* lists carry ``apiVersion``/``kind: <Kind>List`` and the current
  ``resourceVersion``; label and field selectors (equality only) filter them;
* a Secret's ``stringData`` is folded into base64 ``data``; its ``type`` defaults to Opaque;
* every write maintains ``metadata.resourceVersion`` (one global counter),
  ``uid``, ``creationTimestamp`` and ``generation`` (bumped when anything but
  metadata/status changes), supports ``generateName``, rejects a stale
  ``resourceVersion`` with 409, and applies the status-subresource rules
  (PATCH ``/status`` changes only ``.status``; the main endpoint ignores it);
* ``DELETE`` of an object with finalizers sets ``deletionTimestamp`` and emits
  MODIFIED; the object goes once the finalizers are emptied (kmock's GC);
* creating a CustomResourceDefinition through the API registers its resource;
* dependents whose owners are all gone are deleted (:mod:`requeue.devcluster.gc`);
* typed ``kubectl create namespace|secret|configmap`` send protobuf: decoded
  (:mod:`requeue.devcluster.protobuf`) into the JSON object kmock stores;
* custom resources are validated against their CRD's schema and CEL rules
  (:mod:`requeue.devcluster.validation`), so a bad spec is refused with 422;
* ``kubectl get`` receives server-side Tables built from the CRD's
  ``additionalPrinterColumns`` (simple JSONPath: ``.a.b``, ``[0]``, ``[*]``,
  ``[?(@.type=="Ready")]``), with built-in columns for events and secrets.

Not emulated: PUT (replace), server-side apply, dry-run, defaulting,
namespace existence, watch bookmarks, ``resourceVersion`` on watch
(a new watch first replays every existing object as ADDED — kopf copes).

:func:`start_cluster` runs the server on a :class:`BackgroundLoop` thread, so
the caller may run blocking ``kubectl`` while the operator subprocess keeps
talking to it. Importing this module patches kmock's path parser process-wide
(see :func:`_parse_path`): import it only in processes that serve the emulator.

Needs the ``demo`` extra (``pip install 'requeue[demo]'``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import functools
import json
import re
import secrets
import shutil
import string
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml
from kmock._internal import dicts as kmock_dicts  # merge/JSON patch, as kmock applies them
from kmock._internal import enums as kmock_enums
from kmock._internal import parsing as kmock_parsing
from kmock._internal.rendering import Payload, Request

from requeue.devcluster.gc import collect_garbage
from requeue.devcluster.loop import BackgroundLoop
from requeue.devcluster.paths import resource_path
from requeue.devcluster.protobuf import UnsupportedProtobuf, decode_object
from requeue.devcluster.validation import validate as validate_against_crd

__all__ = [
    "ApiServer",
    "Cluster",
    "Kubectl",
    "KubectlError",
    "crds_from_models",
    "find_kubectl",
    "human_age",
    "jsonpath",
    "kubeconfig",
    "load_crds",
    "start_cluster",
]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

#: Built-in resources the operator, kopf and kubectl need: (resource, kind, namespaced, short names).
BUILTIN_RESOURCES: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    ("v1/namespaces", "Namespace", False, ("ns",)),
    ("v1/secrets", "Secret", True, ()),
    ("v1/events", "Event", True, ("ev",)),
    ("v1/configmaps", "ConfigMap", True, ("cm",)),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False,
     ("crd", "crds")),
    ("coordination.k8s.io/v1/leases", "Lease", True, ()),
    ("kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", False, ()),
    ("kopf.dev/v1/kopfpeerings", "KopfPeering", True, ()),
)

Column = tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- JSONPath & Table cells


_JSONPATH_TOKEN = re.compile(
    r"""\.(?P<key>[^.\[]+)|\[(?P<idx>\d+)\]|\[\*\]|\[\?\(@\.(?P<fkey>[\w.-]+)\s*==\s*["'](?P<fval>[^"']*)["']\)\]"""
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset CRD printer columns use; return all matches."""
    values, pos = [obj], 0
    for m in _JSONPATH_TOKEN.finditer(path):
        if m.start() != pos:
            raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
        pos = m.end()
        found: list[Any] = []
        for v in values:
            if m["key"] is not None and isinstance(v, dict) and m["key"] in v:
                found.append(v[m["key"]])
            elif m["idx"] is not None and isinstance(v, list) and int(m["idx"]) < len(v):
                found.append(v[int(m["idx"])])
            elif m["fkey"] is not None and isinstance(v, list):
                found += [x for x in v if isinstance(x, dict) and str(x.get(m["fkey"])) == m["fval"]]
            elif m["key"] is None and m["idx"] is None and m["fkey"] is None and isinstance(v, list):
                found += v
        values = found
    if pos != len(path):
        raise ValueError(f"unsupported JSONPath {path!r} at {pos}")
    return values


def human_age(timestamp: str) -> str:
    """Like apimachinery's HumanDuration (roughly): ``42s``, ``5m``, ``3h``, ``2d``."""
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    secs = max(0, int((datetime.datetime.now(datetime.UTC) - then).total_seconds()))
    for unit, size, limit in (("s", 1, 120), ("m", 60, 3 * 3600), ("h", 3600, 48 * 3600)):
        if secs < limit:
            return f"{secs // size}{unit}"
    return f"{secs // 86400}d"


def _column(name: str, type_: str, getter: Callable[[dict[str, Any]], Any],
            description: str = "", priority: int = 0) -> Column:
    definition = {"name": name, "type": type_, "format": "name" if name == "Name" else "",
                  "description": description, "priority": priority}
    return definition, getter


def _path_column(spec: Mapping[str, Any]) -> Column:
    path, type_ = spec["jsonPath"], spec.get("type", "string")

    def getter(obj: dict[str, Any]) -> Any:
        found = jsonpath(obj, path)
        if not found:
            return None
        if type_ == "date" and isinstance(found[0], str):
            return human_age(found[0])
        value = found[0]  # kube-apiserver also takes the first result only
        if type_ == "string" and not isinstance(value, str):
            return json.dumps(value, separators=(",", ":"))  # as its JSONPath printer does
        return value

    return _column(spec["name"], type_, getter, spec.get("description", ""),
                   int(spec.get("priority", 0)))


def _created(obj: dict[str, Any]) -> Any:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    return human_age(ts) if ts else None


NAME_COLUMN = _column("Name", "string", lambda o: o.get("metadata", {}).get("name"))
AGE_COLUMN = _column("Age", "date", _created)
BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "v1/events": [
        _column("Last Seen", "string", lambda o: human_age(o["lastTimestamp"])
                if o.get("lastTimestamp") else None),
        _column("Type", "string", lambda o: o.get("type")),
        _column("Reason", "string", lambda o: o.get("reason")),
        _column("Object", "string", lambda o: "{}/{}".format(
            str(o.get("involvedObject", {}).get("kind", "")).lower(),
            o.get("involvedObject", {}).get("name"))),
        _column("Message", "string", lambda o: o.get("message")),
    ],
    "v1/namespaces": [NAME_COLUMN, _column("Status", "string",
                                           lambda o: o.get("status", {}).get("phase")), AGE_COLUMN],
    "v1/secrets": [NAME_COLUMN, _column("Type", "string", lambda o: o.get("type")),
                   _column("Data", "integer", lambda o: len(o.get("data") or {})), AGE_COLUMN],
}


# ---------------------------------------------------------------- selectors


def _selector_matches(selector: str, lookup: Callable[[str], str | None]) -> bool:
    """Equality-based label/field selectors: ``a=b,c==d,e!=f``, plus bare ``key`` / ``!key``."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if lookup(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = re.split("==?", term, maxsplit=1)
            if lookup(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if lookup(term[1:]) is not None:
                return False
        elif lookup(term) is None:
            return False
    return True


def _label(obj: dict[str, Any], key: str) -> str | None:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get(key)


def _field(obj: dict[str, Any], path: str) -> str | None:
    found = jsonpath(obj, "." + path)
    return None if not found or found[0] is None else str(found[0])


# ---------------------------------------------------------------- the emulator


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's ``KubernetesEmulator`` with the fixes listed in the module docstring."""

    _resource_version: int = attrs.field(default=0, init=False)
    _write_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _columns: dict[kmock.resource, list[Column]] = attrs.field(factory=dict, init=False)
    _crds: dict[kmock.resource, Mapping[str, Any]] = attrs.field(factory=dict, init=False)
    _status_subresource: set[kmock.resource] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for res, kind, namespaced, short in BUILTIN_RESOURCES:
            self.register(res, kind=kind, namespaced=namespaced, shortnames=short)
        for res, columns in BUILTIN_COLUMNS.items():
            self._columns[kmock.resource(res)] = columns
        self.fallback["get /openapi/v3"] << self._serve_openapi_index
        self.fallback["get", re.compile(r"/openapi/v3/apis?/.+")] << self._serve_openapi_gv
        for ns in ("default", "kube-system"):
            self._store("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": ns}, "status": {"phase": "Active"}})

    # -- registration

    def register(self, res: str | kmock.resource, *, kind: str, namespaced: bool,
                 shortnames: Iterable[str] = (), categories: Iterable[str] = (),
                 subresources: Iterable[str] = (), singular: str | None = None) -> kmock.resource:
        """Make a resource discoverable (with all verbs), as a real API server would serve it."""
        resource = kmock.resource(res)
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=singular or kind.lower(),
            verbs=ALL_VERBS, shortnames=shortnames, categories=categories,
            subresources=subresources,
        )
        if "status" in subresources:
            self._status_subresource.add(resource)
        return resource

    def register_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Serve every version of a CustomResourceDefinition (discovery, Tables, status rules)."""
        spec, names = crd["spec"], crd["spec"]["names"]
        registered = []
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            res = self.register(
                f"{spec['group']}/{version['name']}/{names['plural']}", kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                shortnames=names.get("shortNames", ()), categories=names.get("categories", ()),
                subresources=version.get("subresources", {}).keys(), singular=names.get("singular"),
            )
            printer = version.get("additionalPrinterColumns")
            self._crds[res] = crd
            self._columns[res] = ([NAME_COLUMN, *map(_path_column, printer)] if printer
                                  else [NAME_COLUMN, AGE_COLUMN])
            registered.append(res)
        return registered

    async def add_crd(self, crd: Mapping[str, Any]) -> list[kmock.resource]:
        """Store the CRD object (visible to ``kubectl get crd`` and kopf) and register it."""
        async with self._write_lock, self._lock:
            self._store("apiextensions.k8s.io/v1/customresourcedefinitions", copy.deepcopy(dict(crd)))
        return self.register_crd(crd)

    def _store(self, res: str, obj: dict[str, Any]) -> None:
        self._stamp_new(kmock.resource(res), obj, namespace=obj["metadata"].get("namespace"))
        meta = obj["metadata"]
        self.objects[res, meta.get("namespace"), meta["name"]] = obj

    # -- bookkeeping shared by all writes

    def _next_rv(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        if resource not in self.resources:  # kmock's __getitem__ would add an empty entry
            return None
        return self.resources[resource]

    def _kind(self, resource: kmock.resource) -> tuple[str, str]:
        info = self._info(resource)
        kind = info.kind if info is not None and info.kind else str(resource.plural).capitalize()
        api_version = f"{resource.group}/{resource.version}" if resource.group else "v1"
        return api_version, kind

    def _stamp_new(self, resource: kmock.resource, obj: dict[str, Any], *,
                   namespace: str | None) -> None:
        api_version, kind = self._kind(resource)
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        if not meta.get("name"):
            raise kmock.KubernetesError(422, "Invalid", "metadata.name: Required value")
        info = self._info(resource)
        if namespace and (info is None or info.namespaced is not False):
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1,
                    resourceVersion=self._next_rv())
        for volatile in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(volatile, None)
        if resource in self._status_subresource:
            obj.pop("status", None)
        if resource == kmock.resource("v1/secrets") and not obj.get("type"):
            obj["type"] = "Opaque"  # the API server's default
        _fold_string_data(resource, obj)

    def _current(self, request: Request) -> dict[str, Any]:
        assert request.resource is not None and request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return copy.deepcopy(self.objects[key].raw)

    def _prepare_update(self, request: Request) -> dict[str, Any] | None:
        """Compute the patched object; return it (to be stored) or None if nothing changes."""
        current = self._current(request)
        ctype = _header(request, "Content-Type").split(";")[0].strip()
        if ctype in ("application/apply-patch+yaml", "application/apply-patch+cbor"):
            raise kmock.KubernetesError(415, "UnsupportedMediaType",
                                        "server-side apply is not emulated; use kubectl apply")
        patch = request.data
        if ctype == "application/strategic-merge-patch+json":
            patch = _strip_directives(patch)
        if patch is None:
            patch = {}
        try:
            wanted = kmock_dicts.patch_dict(copy.deepcopy(current), patch)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            # A failed "test" op (kopf's optimistic lock on resourceVersion) is a 422, as in k8s.
            raise kmock.KubernetesError(422, "Invalid", f"the JSON patch failed: {exc}") from exc
        wanted = dict(copy.deepcopy(wanted))
        old_meta, new_meta = current.get("metadata", {}), wanted.setdefault("metadata", {})
        stale = new_meta.get("resourceVersion")
        plural = request.resource.plural if request.resource is not None else ""
        if stale and stale != old_meta.get("resourceVersion"):
            raise kmock.KubernetesError(
                409, "Conflict", f'Operation cannot be fulfilled on {plural} '
                f'"{request.name}": the object has been modified; please apply your changes '
                f"to the latest version and try again")
        if request.resource in self._status_subresource:
            if request.subresource == "status":  # only .status may change here
                wanted = {**current, "status": wanted.get("status")}
                if wanted["status"] is None:
                    del wanted["status"]
            elif request.subresource is None:  # .status only changes via the subresource
                wanted.pop("status", None)
                if "status" in current:
                    wanted["status"] = current["status"]
        _fold_string_data(request.resource, wanted)
        new_meta = wanted.setdefault("metadata", {})
        for fixed in ("uid", "name", "namespace", "creationTimestamp", "generation",
                      "resourceVersion", "deletionTimestamp"):
            if fixed in old_meta:
                new_meta[fixed] = old_meta[fixed]
            else:
                new_meta.pop(fixed, None)
        if wanted == current:
            return None
        if _without_meta_status(wanted) != _without_meta_status(current):
            new_meta["generation"] = int(old_meta.get("generation", 1)) + 1
        new_meta["resourceVersion"] = self._next_rv()
        return wanted

    async def _handle(self, request: Request) -> Any:
        """Serialise writes and bring each one to real-API-server shape before kmock applies it."""
        action = request.action
        if request.resource is None or action not in (
            kmock_enums.action.CREATE, kmock_enums.action.UPDATE, kmock_enums.action.DELETE
        ):
            return await super()._handle(request)
        if _header(request, "Content-Type").startswith("application/vnd.kubernetes.protobuf"):
            try:
                object.__setattr__(request, "data", decode_object(request.body or b""))
            except UnsupportedProtobuf as exc:
                raise kmock.KubernetesError(
                    415, "UnsupportedMediaType",
                    f"the emulator reads protobuf only for Namespace, Secret and ConfigMap ({exc}); "
                    "send JSON, e.g. kubectl apply") from exc
        async with self._write_lock:
            if action == kmock_enums.action.CREATE and isinstance(request.data, dict):
                self._stamp_new(request.resource, request.data, namespace=request.namespace
                                or request.data.get("metadata", {}).get("namespace"))
                self._validate(request.resource, request.data, old=None)
            elif action == kmock_enums.action.UPDATE and request.name is not None:
                wanted = self._prepare_update(request)
                if wanted is not None:
                    self._validate(request.resource, wanted, old=self._current(request))
                # kmock applies request.data as a patch; a JSON patch replacing the root makes
                # the stored object exactly what we computed, whatever the client's patch type.
                ops = [] if wanted is None else [{"op": "replace", "path": "", "value": wanted}]
                object.__setattr__(request, "data", ops)
            elif action == kmock_enums.action.DELETE and request.name is not None:
                await self._prepare_delete(request)
            response = await super()._handle(request)
            if (action == kmock_enums.action.CREATE and request.resource.plural
                    == "customresourcedefinitions" and isinstance(request.data, dict)):
                self.register_crd(request.data)
            return response

    def _validate(self, resource: kmock.resource, obj: dict[str, Any],
                  old: dict[str, Any] | None) -> None:
        """Refuse a custom resource its CRD's schema or CEL rules refuse, as kube-apiserver does."""
        crd = self._crds.get(resource)
        if crd is None:
            return
        errors = validate_against_crd(crd, obj, old=old)
        if errors:
            kind = crd["spec"]["names"]["kind"]
            name = obj.get("metadata", {}).get("name", "")
            raise kmock.KubernetesError(
                422, "Invalid",
                f'{kind}.{crd["spec"]["group"]} "{name}" is invalid: {"; ".join(errors)}')

    async def _prepare_delete(self, request: Request) -> None:
        current = self._current(request)
        meta = current.get("metadata", {})
        if meta.get("deletionTimestamp"):
            return  # kmock: already marked, nothing to do
        assert request.resource is not None and request.name is not None
        key = (request.resource, request.namespace, request.name)
        changes: dict[str, Any] = {"resourceVersion": self._next_rv()}
        if meta.get("finalizers"):
            changes.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
        async with self._lock:
            self.objects[key].patch({"metadata": changes})
            if meta.get("finalizers"):  # kmock now sees the mark and emits nothing itself
                raw = self.objects[key].raw
                await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})

    # -- reads

    async def _serve_version(self, request: Request) -> Payload:
        payload = await super()._serve_version(request)
        if isinstance(payload, dict):
            if str(payload.get("groupVersion", "")).startswith("/"):
                payload["groupVersion"] = payload["groupVersion"][1:]  # kmock says "/v1"
            for entry in payload.get("resources", []):
                if "/" in entry["name"]:  # "x/status": kubectl warns on ambiguous short names
                    entry.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
        return payload

    async def _render_error(self, exc: Exception) -> Any:
        """Use the API's CamelCase reasons (kmock says "Object Not Found"): clients match on them."""
        if isinstance(exc, kmock.KubernetesError) and exc.reason and " " in exc.reason:
            reason = {404: "NotFound", 409: "AlreadyExists"}.get(exc.status, exc.reason)
            exc = attrs.evolve(exc, reason=reason.replace(" ", ""))
        return await super()._render_error(exc)

    # kubectl apply/create validate with --validate=strict: the server must show, in its
    # OpenAPI v3 document, that PATCH takes ``fieldValidation`` (it then leaves validation to
    # the server, which the emulator skips); otherwise kubectl wants protobuf OpenAPI v2.

    async def _serve_openapi_index(self, request: Request) -> Payload:
        paths = {}
        for res in self._get_resources():
            gv = f"apis/{res.group}/{res.version}" if res.group else "api/v1"
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}"}
        return {"paths": paths}

    async def _serve_openapi_gv(self, request: Request) -> Payload:
        gv = request.url.path.removeprefix("/openapi/v3/")
        group_version = gv.removeprefix("apis/").removeprefix("api/")
        group, _, version = group_version.rpartition("/")
        patch_param = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}]
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        for res in self._get_resources():
            if (res.group, res.version) != (group, version):
                continue
            _, kind = self._kind(res)
            gvk = {"group": group, "version": version, "kind": kind}
            paths[f"/{gv}/namespaces/{{namespace}}/{res.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": gvk, "parameters": patch_param,
                "responses": {"200": {"description": "OK"}}}}
            crd = self._crds.get(res)
            if crd is not None:  # what `kubectl explain` reads: the CRD schema, keyed by GVK
                schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
                schema["x-kubernetes-group-version-kind"] = [gvk]
                schemas[f"{'.'.join(reversed(group.split('.')))}.{version}.{kind}"] = schema
        return {"openapi": "3.0.0", "info": {"title": "kmock", "version": "v0"}, "paths": paths,
                "components": {"schemas": schemas}}

    async def _serve_list(self, request: Request) -> Payload:
        resource = request.resource
        if resource is None or resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        async with self._lock:
            items = [
                obj.raw for (res, ns, _), obj in self.objects.items()
                if res == resource and not obj.deleted
                and (request.namespace is None or ns == request.namespace)
            ]
        items = [o for o in items if _selector_matches(labels, functools.partial(_label, o))
                 and _selector_matches(fields, functools.partial(_field, o))]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        if _wants_table(request):
            return self._table(resource, items, request)
        api_version, kind = self._kind(resource)
        return {"apiVersion": api_version, "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self._resource_version)}, "items": items}

    async def _serve_fetch(self, request: Request) -> Payload:
        obj = await super()._serve_fetch(request)
        if _wants_table(request) and request.resource is not None and isinstance(obj, dict):
            return self._table(request.resource, [obj], request)
        return obj

    def _table(self, resource: kmock.resource, items: list[dict[str, Any]],
               request: Request) -> dict[str, Any]:
        """A meta.k8s.io/v1 Table, as kube-apiserver sends to ``kubectl get``."""
        columns = self.columns(resource)
        include = request.params.get("includeObject", "Metadata")
        rows = []
        for obj in items:
            if include == "Object":
                embedded = obj
            else:
                embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj.get("metadata", {})}
            rows.append({"cells": [getter(obj) for _, getter in columns], "object": embedded})
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(self._resource_version)},
                "columnDefinitions": [definition for definition, _ in columns], "rows": rows}

    def resource_of(self, api_version: str, kind: str) -> kmock.resource | None:
        """The served resource of that apiVersion and kind, or None. Call on the loop."""
        return next((res for res in self._get_resources() if self._kind(res) == (api_version, kind)),
                    None)

    def columns(self, resource: kmock.resource) -> list[Column]:
        """The Table columns ``kubectl get`` receives for the resource."""
        return self._columns.get(resource, [NAME_COLUMN, AGE_COLUMN])

    def list_raw(self, res: str | kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects (deep copies), sorted by namespace and name. Call on the loop."""
        resource = kmock.resource(res)
        items = [copy.deepcopy(obj.raw) for (r, ns, _), obj in self.objects.items()
                 if r == resource and not obj.deleted and (namespace is None or ns == namespace)]
        return sorted(items, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    async def live_objects(self) -> list[tuple[kmock.resource, str | None, str, dict[str, Any]]]:
        """Every stored object that is not deleted, as (resource, namespace, name, object)
        (deep copies). Call on the loop."""
        async with self._lock:
            return [(res, ns, name, copy.deepcopy(obj.raw))
                    for (res, ns, name), obj in self.objects.items() if not obj.deleted]

    def get_raw(self, res: str | kmock.resource, name: str,
                namespace: str | None = None) -> dict[str, Any] | None:
        """The stored object (a deep copy), or None if absent or deleted. Call on the loop."""
        key = (kmock.resource(res), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)


_original_parse_path = kmock_parsing.parse_path


def _parse_path(path: str) -> kmock_parsing.ParsedPath:
    """kmock reads ``/api/v1/namespaces[/NAME]`` as a namespace prefix and crashes on it.

    The namespaces resource itself is the one place where the ``namespaces``
    segment is the plural, not the scope: patched process-wide (only processes
    that serve the emulator import this module) because kmock parses requests
    before any handler is involved.
    """
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        return kmock_parsing.ParsedPath(
            group="", version="v1", plural="namespaces", namespace=None,
            name=parts[3] if len(parts) >= 4 else None,
            subresource=parts[4] if len(parts) == 5 else None,
        )
    return _original_parse_path(path)


kmock_parsing.parse_path = _parse_path


def _header(request: Request, name: str) -> str:
    """Headers are a plain dict in kmock's Request: look them up case-insensitively."""
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _wants_table(request: Request) -> bool:
    return "as=Table" in _header(request, "Accept")


def _without_meta_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _fold_string_data(resource: kmock.resource | None, obj: dict[str, Any]) -> None:
    """A Secret's write-only ``stringData`` is merged into base64 ``data``, as the API server does."""
    if resource != kmock.resource("v1/secrets") or "stringData" not in obj:
        return
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    obj["data"] = data


def _strip_directives(value: Any) -> Any:
    """Strategic-merge-patch ``$``-directives (``$setElementOrder`` …) mean nothing to a merge."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def load_crds(directory: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in ``directory/*.yaml`` (sorted by file name)."""
    crds: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def crds_from_models() -> list[dict[str, Any]]:
    """requeue's CustomResourceDefinitions, generated in memory from the API models (no files)."""
    from requeue.api.crd import crd_for
    from requeue.api.resources import KINDS

    return [crd_for(cls.INFO) for cls in KINDS]


# ---------------------------------------------------------------- kubectl


def find_kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl is not on PATH: apt-get install -y kubernetes-client")
    return found


class KubectlError(AssertionError):
    """kubectl exited non-zero where the caller expected success; carries its output.

    An AssertionError so that a test calling kubectl fails (not errors) on it.
    """


class Kubectl:
    """Runs the real kubectl against one kubeconfig, with its own discovery cache directory.

    The private cache matters: each emulator has a fresh port and may gain CRDs
    at run time, and kubectl would otherwise trust a stale ``~/.kube/cache``.
    """

    def __init__(self, kubeconfig: Path, cache_dir: Path, binary: str | None = None) -> None:
        self.binary = binary or find_kubectl()
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}",
               *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        """``kubectl <args> -o json``, parsed."""
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, manifest: Mapping[str, Any] | str) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` with a dict (sent as JSON) or YAML/JSON text."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", input=text)


# ---------------------------------------------------------------- a running emulator


class Cluster:
    """A running :class:`ApiServer` plus what a client needs to reach it.

    ``url`` and ``kubeconfig`` for clients (the operator subprocess gets
    ``KUBECONFIG``), ``kubectl(...)`` for the user's view (needs kubectl on
    PATH), ``get(...)``/``create(...)`` to use the API without kubectl,
    ``server`` for kmock's own API (requests log, objects with history) —
    touch ``server`` only via ``run()``. ``close()`` stops the server and
    removes ``workdir`` (where the kubeconfig lives).
    """

    def __init__(self, loop: BackgroundLoop, server: ApiServer, http: kmock.Server,
                 workdir: Path, gc_task: asyncio.Task[None] | None = None) -> None:
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
        """The real kubectl on this cluster (its own discovery cache); RuntimeError if not on PATH."""
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
        return self.loop.run(self.server.add_crd(crd))

    def list_objects(self, res: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects of a resource (deep copies), by namespace and name; all namespaces if None."""
        return self.run(lambda server: server.list_raw(res, namespace))  # type: ignore[no-any-return]

    def table(self, res: str, namespace: str | None = None, *, sort_by: str | None = None) -> str:
        """What ``kubectl get [--sort-by=JSONPATH]`` prints, from the same server-side Table columns."""
        def build(server: ApiServer) -> tuple[list[str], list[list[Any]]]:
            columns = [c for c in server.columns(kmock.resource(res)) if not c[0].get("priority")]
            items = server.list_raw(res, namespace)
            if sort_by is not None:
                items.sort(key=lambda obj: str(next(iter(jsonpath(obj, sort_by)), "")))
            return ([c["name"].upper() for c, _ in columns],
                    [[getter(obj) for _, getter in columns] for obj in items])

        headers, rows = self.run(build)
        if not rows:
            return f"No resources found in {namespace} namespace.\n" if namespace else "No resources found\n"
        cells = [headers, *[["<none>" if v is None else str(v) for v in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        return "".join("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
                       for row in cells)

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
        request = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                created: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise KubectlError(f"POST {url}: {exc.code} {exc.read().decode(errors='replace')}") from None
        return created

    def close(self) -> None:
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
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": url}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester",
                                                   "namespace": "default"}}],
    }


def start_cluster(crds: Iterable[Mapping[str, Any]] | None = None, *,
                  workdir: Path | None = None) -> Cluster:
    """Start an emulator on a free loopback port in its own thread, with ``crds`` registered.

    :param crds: CustomResourceDefinitions to serve; default: requeue's, from the models.
    :param workdir: where the kubeconfig goes (created; removed by ``close()``); default: a temp dir.
    """
    loop = BackgroundLoop("kmock-apiserver")

    async def start() -> tuple[ApiServer, kmock.Server]:
        server = ApiServer()
        await server.__aenter__()
        http = kmock.Server(server)
        await http.__aenter__()
        for crd in crds_from_models() if crds is None else crds:
            await server.add_crd(crd)
        return server, http

    try:
        server, http = loop.run(start())
    except BaseException:
        loop.close()
        raise

    async def start_gc() -> asyncio.Task[None]:
        return asyncio.create_task(collect_garbage(server, str(http.url).rstrip("/")), name="kmock-gc")

    gc_task = loop.run(start_gc())
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="requeue-kube-"))
    else:
        workdir.mkdir(parents=True, exist_ok=True)
    return Cluster(loop, server, http, workdir, gc_task)
