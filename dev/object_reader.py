"""`kubectl get ARGS -o yaml`, answered in-process: tests poll objects several times a second while they wait,
and a kubectl process per poll costs about 0.2 s of CPU against about 3 ms for a request on a kept-alive client."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

_OPTIONS = {"-n": "namespace", "--namespace": "namespace", "-l": "selector", "--selector": "selector",
            "--field-selector": "field_selector"}


@dataclass(frozen=True)
class GetRequest:
    resource: str  # as kubectl takes it: "pods", "job", "ftj", "finetunejobs.floe.dev"
    name: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    selector: str | None = None
    field_selector: str | None = None


def parse_get(args: tuple[str, ...]) -> GetRequest | None:
    """The forms of `kubectl get` the tests use; None for any other (kubectl itself answers those)."""
    positional: list[str] = []
    options: dict[str, str | bool] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        flag, has_value, value = arg.partition("=")
        if arg in ("-A", "--all-namespaces"):
            options["all_namespaces"] = True
        elif flag in _OPTIONS:
            if not has_value:
                if not rest:
                    return None
                value = rest.pop(0)
            options[_OPTIONS[flag]] = value
        elif arg.startswith("-"):
            return None
        else:
            positional += arg.split("/", 1) if not positional else [arg]
    if not 1 <= len(positional) <= 2 or "," in positional[0]:
        return None
    return GetRequest(positional[0], positional[1] if len(positional) == 2 else None, **options)


@dataclass(frozen=True)
class Resource:
    group_version: str  # "v1", "batch/v1"
    plural: str
    kind: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None) -> str:
        root = "/api/" if self.group_version == "v1" else "/apis/"
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{root}{self.group_version}{scope}/{self.plural}" + (f"/{name}" if name else "")


class ObjectReader:
    """GETs through one kept-alive client, with kubectl's names for resources (plural, singular, kind, short
    names, each also qualified by its group) from the API server's discovery."""

    def __init__(self, api: client.ApiClient, default_namespace: str = "default"):
        self.api, self.default_namespace = api, default_namespace
        self._resources: dict[str, Resource] = {}
        self._lock = threading.Lock()

    def get(self, request: GetRequest) -> dict | None:
        resource = self.resource(request.resource)
        namespace = None if request.all_namespaces else request.namespace or self.default_namespace
        query = [(key, value) for key, value in (("labelSelector", request.selector),
                                                 ("fieldSelector", request.field_selector)) if value]
        try:
            found = json.loads(self._fetch(resource.path(namespace, request.name), query))
        except ApiException:
            return None  # as kubectl's non-zero exit: not found, forbidden, refused
        if request.name:
            return found
        items = [{"apiVersion": resource.group_version, "kind": resource.kind, **item} for item in found["items"]]
        return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}

    def resource(self, name: str) -> Resource:
        with self._lock:
            if name not in self._resources:
                self._resources = self._discover()  # once, and again for a kind installed since
            if name not in self._resources:
                raise LookupError(f"the server has no resource type {name!r}")
            return self._resources[name]

    def _fetch(self, path: str, query: list[tuple[str, str]] | None = None) -> bytes:
        request = self.api.param_serialize("GET", path, query_params=query or [], auth_settings=["BearerToken"])
        response = self.api.call_api(*request)
        data = response.read()
        if response.status != 200:
            raise ApiException(status=response.status, reason=data.decode(errors="replace"))
        return data

    def _discover(self) -> dict[str, Resource]:
        versions = ["v1"] + [g["preferredVersion"]["groupVersion"]
                             for g in json.loads(self._fetch("/apis"))["groups"]]
        names: dict[str, Resource] = {}
        for group_version in versions:
            root = "/api/" if group_version == "v1" else "/apis/"
            group = group_version.rpartition("/")[0]
            for entry in json.loads(self._fetch(root + group_version))["resources"]:
                if "/" in entry["name"]:
                    continue  # a subresource
                resource = Resource(group_version, entry["name"], entry["kind"], entry["namespaced"])
                aliases = {entry["name"], entry.get("singularName") or entry["kind"].lower(), entry["kind"].lower(),
                           *(entry.get("shortNames") or ())}
                for alias in aliases:
                    names.setdefault(alias, resource)  # the core group first, as kubectl prefers it
                    if group:
                        names.setdefault(f"{alias}.{group}", resource)
        return names
