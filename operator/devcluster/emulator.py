"""A local stand-in for a Kubernetes API server: kmock's emulator, made good enough for kubectl and kopf.

``requeue demo`` runs the operator against it on a laptop with no cluster, and
the e2e tests drive it with the real ``kubectl``. It is not a cluster: there
are no nodes, controllers or admission webhooks, only the API objects.

kmock (by kopf's author) keeps objects in memory and serves list/watch/get/
create/patch/delete. :class:`ApiServer` fills the gaps that real clients trip
on, by overriding kmock's handler methods (the hooks :data:`KMOCK_HOOKS` names;
nothing of kmock is patched):

* discovery: the core group says ``v1`` (kmock: ``/v1``, kubectl then finds no
  Secret); CRDs, namespaces, secrets, events, leases are registered with verbs
  (kopf idles silently without CRDs and namespaces in discovery);
* ``/api/v1/namespaces[/NAME]`` is the namespaces resource itself (kmock's path
  parser reads ``namespaces`` there as a namespace scope and fails): the request
  is readdressed before kmock parses it (:meth:`ApiServer.__call__`);
* lists carry ``apiVersion``/``kind: <Kind>List`` and the current
  ``resourceVersion``; label and field selectors (equality only) filter lists and watches;
* watches stream ``application/json`` events (kubectl refuses kmock's
  ``application/octet-stream``), as Table rows when kubectl asks ``as=Table``
  (``kubectl get -w``), from the ``resourceVersion`` the client lists at;
* a Secret's ``stringData`` is folded into base64 ``data``; its ``type`` defaults to Opaque;
* every write maintains ``metadata.resourceVersion`` (one global counter),
  ``uid``, ``creationTimestamp`` and ``generation`` (bumped when anything but
  metadata/status changes), supports ``generateName``, rejects a stale
  ``resourceVersion`` with 409, and applies the status-subresource rules
  (PATCH ``/status`` changes only ``.status``; the main endpoint ignores it);
  patches are applied as JSON patch or JSON merge patch (RFC 7386);
* ``DELETE`` of an object with finalizers sets ``deletionTimestamp`` and emits
  MODIFIED; the object goes once the finalizers are emptied (kmock's GC);
* creating a CustomResourceDefinition through the API registers its resource;
* typed ``kubectl create namespace|secret|configmap`` send protobuf: decoded
  (:mod:`devcluster.protobuf`) into the JSON object kmock stores;
* custom resources are validated against their CRD's schema and CEL rules
  (:mod:`devcluster.validation`), so a bad spec is refused with 422;
* ``kubectl get`` receives server-side Tables (:mod:`devcluster.rendering`).

Dependents whose owners are gone are deleted by :mod:`devcluster.gc`, which
:func:`devcluster.cluster.start_cluster` runs beside the server.

Not emulated: PUT (replace), server-side apply, dry-run, defaulting,
namespace existence, watch bookmarks, DELETED events for objects a field
selector stops matching, and events missed before a watch's
``resourceVersion`` (a watch from an old version gets the current state of what
changed since, as ADDED).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import functools
import re
import secrets
import string
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import attrs
import jsonpatch
import jsonpointer
import kmock

from devcluster.protobuf import UnsupportedProtobuf, decode_object
from devcluster.rendering import (
    AGE_COLUMN,
    BUILTIN_COLUMNS,
    NAME_COLUMN,
    Column,
    columns_for_crd_version,
    jsonpath,
    table,
)
from devcluster.validation import validate as validate_against_crd

__all__ = ["ALL_VERBS", "BUILTIN_RESOURCES", "KMOCK_HOOKS", "ApiServer", "merge_patch"]

#: kmock's protected members :class:`ApiServer` overrides or uses (kmock documents
#: ``KubernetesEmulator`` for subclassing: "inherit and implement for your cases"). They are not
#: kmock's public API, hence the pin in the ``demo`` extra and the unit test
#: (tests/unit/test_devcluster_kmock_contract.py) that fails, naming the member, if one changes.
KMOCK_HOOKS: dict[str, tuple[str, ...]] = {
    # member: the parameter names ApiServer relies on (after self)
    "__call__": ("raw_request",),
    "_handle": ("request",),
    "_render_error": ("exc",),
    "_serve_version": ("request",),
    "_serve_list": ("request",),
    "_serve_watch": ("request",),
    "_serve_fetch": ("request",),
    "_get_resources": (),
}
#: kmock attributes ApiServer reads: the store lock and the per-resource event buses.
KMOCK_ATTRIBUTES = ("_lock", "_buses", "objects", "resources", "fallback")

#: The namespace kmock is shown for requests to the namespaces resource itself (see ``__call__``):
#: not a valid namespace name, so no real request carries it.
_NAMESPACES_SCOPE = "_namespaces-resource_"

#: Columns of a resource without printer columns of its own.
DEFAULT_COLUMNS: list[Column] = [NAME_COLUMN, AGE_COLUMN]

#: The media type of a watch stream (kubectl has no decoder for kmock's application/octet-stream).
WATCH_HEADERS = {"Content-Type": "application/json"}

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

#: Built-in resources the operator, kopf and kubectl need: (resource, kind, namespaced, short names).
BUILTIN_RESOURCES: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    ("v1/namespaces", "Namespace", False, ("ns",)),
    ("v1/secrets", "Secret", True, ()),
    ("v1/events", "Event", True, ("ev",)),
    ("v1/configmaps", "ConfigMap", True, ("cm",)),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, ("crd", "crds")),
    ("coordination.k8s.io/v1/leases", "Lease", True, ()),
    ("kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", False, ()),
    ("kopf.dev/v1/kopfpeerings", "KopfPeering", True, ()),
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        # kmock serves watches from a fallback of its own, without a media type: this one is
        # ranked just above it (sub-priority 1 within the fallbacks) and says application/json.
        (self.fallback**1)[kmock.action.WATCH] << kmock.headers(WATCH_HEADERS) << self._serve_watch
        self.fallback["get /openapi/v3"] << self._serve_openapi_index
        self.fallback["get", re.compile(r"/openapi/v3/apis?/.+")] << self._serve_openapi_gv
        for ns in ("default", "kube-system"):
            self._store(
                "v1/namespaces",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns},
                    "status": {"phase": "Active"},
                },
            )

    # -- registration

    def register(
        self,
        res: str | kmock.resource,
        *,
        kind: str,
        namespaced: bool,
        shortnames: Iterable[str] = (),
        categories: Iterable[str] = (),
        subresources: Iterable[str] = (),
        singular: str | None = None,
    ) -> kmock.resource:
        """Make a resource discoverable (with all verbs), as a real API server would serve it."""
        resource = kmock.resource(res)
        self.resources[resource] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            singular=singular or kind.lower(),
            verbs=ALL_VERBS,
            shortnames=shortnames,
            categories=categories,
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
                f"{spec['group']}/{version['name']}/{names['plural']}",
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                shortnames=names.get("shortNames", ()),
                categories=names.get("categories", ()),
                subresources=version.get("subresources", {}).keys(),
                singular=names.get("singular"),
            )
            self._crds[res] = crd
            self._columns[res] = columns_for_crd_version(version)
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

    def _stamp_new(self, resource: kmock.resource, obj: dict[str, Any], *, namespace: str | None) -> None:
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
        meta.update(
            uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_rv()
        )
        for volatile in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(volatile, None)
        if resource in self._status_subresource:
            obj.pop("status", None)
        if resource == kmock.resource("v1/secrets") and not obj.get("type"):
            obj["type"] = "Opaque"  # the API server's default
        _fold_string_data(resource, obj)

    def _current(self, request: kmock.Request) -> dict[str, Any]:
        assert request.resource is not None and request.name is not None
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return copy.deepcopy(self.objects[key].raw)

    def _prepare_update(self, request: kmock.Request) -> dict[str, Any] | None:
        """Compute the patched object; return it (to be stored) or None if nothing changes."""
        current = self._current(request)
        ctype = _header(request, "Content-Type").split(";")[0].strip()
        if ctype in ("application/apply-patch+yaml", "application/apply-patch+cbor"):
            raise kmock.KubernetesError(
                415, "UnsupportedMediaType", "server-side apply is not emulated; use kubectl apply"
            )
        patch = request.data
        if ctype == "application/strategic-merge-patch+json":
            patch = _strip_directives(patch)
        if patch is None:
            patch = {}
        try:
            wanted = _apply_patch(current, patch)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            # A failed "test" op (kopf's optimistic lock on resourceVersion) is a 422, as in k8s.
            raise kmock.KubernetesError(422, "Invalid", f"the JSON patch failed: {exc}") from exc
        wanted = dict(copy.deepcopy(wanted))
        old_meta, new_meta = current.get("metadata", {}), wanted.setdefault("metadata", {})
        stale = new_meta.get("resourceVersion")
        plural = request.resource.plural if request.resource is not None else ""
        if stale and stale != old_meta.get("resourceVersion"):
            raise kmock.KubernetesError(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {plural} "
                f'"{request.name}": the object has been modified; please apply your changes '
                f"to the latest version and try again",
            )
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
        for fixed in (
            "uid",
            "name",
            "namespace",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "deletionTimestamp",
        ):
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

    async def __call__(self, raw_request: Any) -> Any:
        """Readdress requests to the namespaces resource before kmock parses them.

        kmock's path parser reads ``/api/v1/namespaces[/NAME[/SUB]]`` as a
        namespace scope (and fails on the bare list path). The request is served
        as ``/api/v1/namespaces/<scope>/namespaces[/NAME[/SUB]]``, which kmock
        parses into the right resource, name and subresource; :meth:`_handle`
        then drops the placeholder scope. ``raw_request`` is aiohttp's request.
        """
        path = raw_request.rel_url.path
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and (
            len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
        ):
            readdressed = path.replace("/namespaces", f"/namespaces/{_NAMESPACES_SCOPE}/namespaces", 1)
            raw_request = raw_request.clone(
                rel_url=raw_request.rel_url.with_path(readdressed).with_query(raw_request.rel_url.query)
            )
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> Any:
        """Serialise writes and bring each one to real-API-server shape before kmock applies it."""
        if request.namespace == _NAMESPACES_SCOPE:  # see __call__: namespaces are cluster-scoped
            # In place, not a copy: kmock's views match a request by identity in its request log.
            path = request.url.path.replace(f"/namespaces/{_NAMESPACES_SCOPE}", "", 1)
            object.__setattr__(request, "namespace", None)
            object.__setattr__(request, "url", request.url.with_path(path).with_query(request.url.query))
        action = request.action
        if request.resource is None or action not in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
            kmock.action.DELETE,
        ):
            return await super()._handle(request)
        if _header(request, "Content-Type").startswith("application/vnd.kubernetes.protobuf"):
            try:
                object.__setattr__(request, "data", decode_object(request.body or b""))
            except UnsupportedProtobuf as exc:
                raise kmock.KubernetesError(
                    415,
                    "UnsupportedMediaType",
                    f"the emulator reads protobuf only for Namespace, Secret and ConfigMap ({exc}); "
                    "send JSON, e.g. kubectl apply",
                ) from exc
        async with self._write_lock:
            if action == kmock.action.CREATE and isinstance(request.data, dict):
                self._stamp_new(
                    request.resource,
                    request.data,
                    namespace=request.namespace or request.data.get("metadata", {}).get("namespace"),
                )
                self._validate(request.resource, request.data, old=None)
            elif action == kmock.action.UPDATE and request.name is not None:
                wanted = self._prepare_update(request)
                if wanted is not None:
                    self._validate(request.resource, wanted, old=self._current(request))
                # kmock applies request.data as a patch; a JSON patch replacing the root makes
                # the stored object exactly what we computed, whatever the client's patch type.
                ops = [] if wanted is None else [{"op": "replace", "path": "", "value": wanted}]
                object.__setattr__(request, "data", ops)
            elif action == kmock.action.DELETE and request.name is not None:
                await self._prepare_delete(request)
            response = await super()._handle(request)
            if (
                action == kmock.action.CREATE
                and request.resource.plural == "customresourcedefinitions"
                and isinstance(request.data, dict)
            ):
                self.register_crd(request.data)
            return response

    def _validate(self, resource: kmock.resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Refuse a custom resource its CRD's schema or CEL rules refuse, as kube-apiserver does."""
        crd = self._crds.get(resource)
        if crd is None:
            return
        errors = validate_against_crd(crd, obj, old=old)
        if errors:
            kind = crd["spec"]["names"]["kind"]
            name = obj.get("metadata", {}).get("name", "")
            raise kmock.KubernetesError(
                422, "Invalid", f'{kind}.{crd["spec"]["group"]} "{name}" is invalid: {"; ".join(errors)}'
            )

    async def _prepare_delete(self, request: kmock.Request) -> None:
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

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
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

    async def _serve_openapi_index(self, request: kmock.Request) -> kmock.Payload:
        paths = {}
        for res in self._get_resources():
            gv = f"apis/{res.group}/{res.version}" if res.group else "api/v1"
            paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}"}
        return {"paths": paths}

    async def _serve_openapi_gv(self, request: kmock.Request) -> kmock.Payload:
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
            paths[f"/{gv}/namespaces/{{namespace}}/{res.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": patch_param,
                    "responses": {"200": {"description": "OK"}},
                }
            }
            crd = self._crds.get(res)
            if crd is not None:  # what `kubectl explain` reads: the CRD schema, keyed by GVK
                schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
                schema["x-kubernetes-group-version-kind"] = [gvk]
                schemas[f"{'.'.join(reversed(group.split('.')))}.{version}.{kind}"] = schema
        return {
            "openapi": "3.0.0",
            "info": {"title": "kmock", "version": "v0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        resource = request.resource
        if resource is None or resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        labels = request.params.get("labelSelector", "")
        fields = request.params.get("fieldSelector", "")
        async with self._lock:
            items = [
                obj.raw
                for (res, ns, _), obj in self.objects.items()
                if res == resource
                and not obj.deleted
                and (request.namespace is None or ns == request.namespace)
            ]
        items = [
            o
            for o in items
            if _selector_matches(labels, functools.partial(_label, o))
            and _selector_matches(fields, functools.partial(_field, o))
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        if _wants_table(request):
            return self._table(resource, items, request)
        api_version, kind = self._kind(resource)
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._resource_version)},
            "items": items,
        }

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        obj = await super()._serve_fetch(request)
        if _wants_table(request) and request.resource is not None and isinstance(obj, dict):
            return self._table(request.resource, [obj], request)
        return obj

    def _table(
        self, resource: kmock.resource, items: list[dict[str, Any]], request: kmock.Request
    ) -> dict[str, Any]:
        """A meta.k8s.io/v1 Table of ``items``, as kube-apiserver sends to ``kubectl get``."""
        return table(
            self.columns(resource),
            items,
            resource_version=str(self._resource_version),
            include_object=request.params.get("includeObject", "Metadata"),
        )

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        """A watch stream: the current objects, then every change, filtered like a list.

        Unlike kmock's own, it honours the namespace, name, label and field
        selectors, starts after the ``resourceVersion`` the client asks for
        (``kubectl get -w`` lists first, then watches from the list's version:
        objects unchanged since are not sent again), and sends each event's
        object as a one-row Table when the client accepts ``as=Table``. Events
        are taken from kmock's bus from a mark set under the store lock, so none
        falls between the snapshot and the stream.
        """
        resource = request.resource
        if resource is None or resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        since = _int_or_none(request.params.get("resourceVersion"))
        wanted = functools.partial(_watched, request)
        bus = self._buses[resource]
        async with self._lock:
            mark = await bus.mark()
            current = [
                copy.deepcopy(obj.raw)
                for (res, _, _), obj in self.objects.items()
                if res == resource and not obj.deleted
            ]
        try:
            yield b""  # sends the headers now: a quiet watch is still a started one (as in kmock)
            current.sort(key=lambda o: int(o.get("metadata", {}).get("resourceVersion") or 0))
            for obj in current:
                version = _int_or_none(obj.get("metadata", {}).get("resourceVersion"))
                if wanted(obj) and (not since or version is None or version > since):
                    yield self._watch_event(resource, "ADDED", obj, request)
            async for event in bus.stream(since=mark):
                obj = event.get("object") or {}
                if wanted(obj):
                    yield self._watch_event(resource, event["type"], copy.deepcopy(obj), request)
        finally:
            await bus.unmark(mark)

    def _watch_event(
        self, resource: kmock.resource, kind: str, obj: dict[str, Any], request: kmock.Request
    ) -> dict[str, Any]:
        if _wants_table(request):
            return {"type": kind, "object": self._table(resource, [obj], request)}
        return {"type": kind, "object": obj}

    def resource_of(self, api_version: str, kind: str) -> kmock.resource | None:
        """The served resource of that apiVersion and kind, or None. Call on the loop."""
        return next((res for res in self._get_resources() if self._kind(res) == (api_version, kind)), None)

    def columns(self, resource: kmock.resource) -> list[Column]:
        """The Table columns ``kubectl get`` receives for the resource."""
        return self._columns.get(resource, DEFAULT_COLUMNS)

    def list_raw(self, res: str | kmock.resource, namespace: str | None = None) -> list[dict[str, Any]]:
        """Stored objects (deep copies), sorted by namespace and name. Call on the loop."""
        resource = kmock.resource(res)
        items = [
            copy.deepcopy(obj.raw)
            for (r, ns, _), obj in self.objects.items()
            if r == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]
        return sorted(items, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    async def live_objects(self) -> list[tuple[kmock.resource, str | None, str, dict[str, Any]]]:
        """Every stored object that is not deleted, as (resource, namespace, name, object)
        (deep copies). Call on the loop."""
        async with self._lock:
            return [
                (res, ns, name, copy.deepcopy(obj.raw))
                for (res, ns, name), obj in self.objects.items()
                if not obj.deleted
            ]

    def get_raw(
        self, res: str | kmock.resource, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The stored object (a deep copy), or None if absent or deleted. Call on the loop."""
        key = (kmock.resource(res), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)


def _header(request: kmock.Request, name: str) -> str:
    """Headers are a plain dict in kmock's Request: look them up case-insensitively."""
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _watched(request: kmock.Request, obj: Mapping[str, Any]) -> bool:
    """Whether a watch (its namespace, name, label and field selectors) sees ``obj``."""
    meta = obj.get("metadata", {})
    if request.namespace is not None and meta.get("namespace") != request.namespace:
        return False
    if request.name is not None and meta.get("name") != request.name:
        return False
    item = dict(obj)
    return _selector_matches(
        request.params.get("labelSelector", ""), functools.partial(_label, item)
    ) and _selector_matches(request.params.get("fieldSelector", ""), functools.partial(_field, item))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _apply_patch(current: dict[str, Any], patch: Any) -> dict[str, Any]:
    """A JSON patch (a list of operations) or a merge patch (an object) applied to ``current``."""
    if isinstance(patch, list):
        patched = jsonpatch.apply_patch(copy.deepcopy(current), patch, in_place=False)
    elif isinstance(patch, Mapping):
        patched = merge_patch(current, patch)
    else:
        kind = type(patch).__name__
        raise kmock.KubernetesError(
            400, "BadRequest", f"a patch is a JSON object or a list of operations, not {kind}"
        )
    if not isinstance(patched, dict):
        raise kmock.KubernetesError(422, "Invalid", "the patch does not leave an object")
    return patched


def _wants_table(request: kmock.Request) -> bool:
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
