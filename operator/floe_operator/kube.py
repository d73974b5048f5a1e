"""The operator's Kubernetes client: config loading and create-or-adopt of owned objects."""

from __future__ import annotations

import functools
import json
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    BadRequestError,
    ConflictError,
    DynamicApiError,
    NotFoundError,
    UnprocessibleEntityError,
)

from floe_operator.builders.common import ServiceAccountName

MERGE_PATCH = "application/merge-patch+json"
# What the API server says of an object it will not accept as it is (invalid, undecodable): retrying the same
# object cannot help.
REFUSED = (BadRequestError, UnprocessibleEntityError)


def load_config() -> None:
    """In-cluster config inside a pod, else the current kubeconfig context."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


@functools.cache
def dynamic() -> DynamicClient:
    return DynamicClient(client.ApiClient())


def resource(api_version: str, kind: str) -> Any:
    return dynamic().resources.get(api_version=api_version, kind=kind)


def get(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    try:
        return resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None


def list_objects(api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    found = resource(api_version, kind).get(namespace=namespace, label_selector=label_selector)
    return [item.to_dict() for item in found.items]


def patch(api_version: str, kind: str, name: str, body: dict, namespace: str | None = None) -> dict[str, Any]:
    return (
        resource(api_version, kind).patch(body=body, name=name, namespace=namespace, content_type=MERGE_PATCH).to_dict()
    )


def server_message(error: DynamicApiError) -> str:
    """The API server's own words for a refused request."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return error.summary()


def delete(api_version: str, kind: str, name: str, namespace: str | None = None) -> None:
    """Delete in the background (dependents follow); gone already is fine."""
    try:
        resource(api_version, kind).delete(name=name, namespace=namespace, body={"propagationPolicy": "Background"})
    except NotFoundError:
        pass


def patch_status(
    api_version: str, kind: str, name: str, status: dict, namespace: str | None = None, resource_version: str = ""
) -> None:
    """A merge patch of status; with ``resource_version`` only if the object is still at that version (else
    ConflictError): the conditions list is replaced whole, so a writer working from an older view must not win."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    resource(api_version, kind).status.patch(body=body, name=name, namespace=namespace, content_type=MERGE_PATCH)


@functools.cache
def own_service_account() -> ServiceAccountName | None:
    """The ServiceAccount the operator runs as, as the API server authenticates it (None for any other user,
    e.g. a developer's kubeconfig)."""
    review = client.AuthenticationV1Api().create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    parts = review.status.user_info.username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return ServiceAccountName(parts[2], parts[3])
    return None


def can(verb: str, resource: str, namespace: str, group: str = "") -> bool:
    """Whether the operator may do this now (its RBAC, as the API server's authorizer sees it)."""
    review = client.AuthorizationV1Api().create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, namespace=namespace, group=group
                )
            )
        )
    )
    return bool(review.status.allowed)


def _controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((ref for ref in obj["metadata"].get("ownerReferences") or () if ref.get("controller")), None)


def ensure(desired: dict[str, Any], update: bool = True) -> dict[str, Any]:
    """Create ``desired``, or take the existing object of that name.

    An existing object without a controller is adopted (our labels and owner reference added);
    with ``update`` its content is also brought to ``desired``. An object controlled by someone
    else is left alone and the handler retries later (e.g. a Job of a deleted namesake still
    being garbage-collected).
    """
    meta = desired["metadata"]
    api = resource(desired["apiVersion"], desired["kind"])
    try:
        return api.create(body=desired, namespace=meta.get("namespace")).to_dict()
    except ConflictError:
        existing = api.get(name=meta["name"], namespace=meta.get("namespace")).to_dict()
    ours = meta["ownerReferences"][0]
    controller = _controller(existing)
    if controller is not None and controller.get("uid") != ours["uid"]:
        raise kopf.TemporaryError(
            f"{desired['kind']} {meta['name']} is controlled by {controller['kind']} {controller['name']} "
            f"(uid {controller['uid']}); waiting for it to go away",
            delay=10,
        )
    if controller is not None and not update:
        return existing
    others = [ref for ref in existing["metadata"].get("ownerReferences") or () if ref.get("uid") != ours["uid"]]
    body = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind")} if update else {}
    body["metadata"] = {"labels": meta.get("labels", {}), "ownerReferences": [*others, ours]}
    if "annotations" in meta:
        body["metadata"]["annotations"] = meta["annotations"]
    return api.patch(body=body, name=meta["name"], namespace=meta.get("namespace"), content_type=MERGE_PATCH).to_dict()
