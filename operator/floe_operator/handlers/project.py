"""Project -> Namespace, ResourceQuota, LimitRange, trainer ServiceAccount (all owned by the Project), and the
members' bindings (handlers/project_members.py); Ready once all of them are in place."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import ServiceAccountName, owner_reference
from floe_operator.builders.project import ADOPT_ANNOTATION, PROJECT_LABEL, namespace_name, project_objects
from floe_operator.builders.project_members import project_owner
from floe_operator.conditions import READY, applied_conditions, condition, status_conditions, status_unchanged
from floe_operator.handlers.project_members import sync_members
from floe_operator.settings import OperatorSettings

KIND = "Project"


@kopf.on.resume(GROUP, VERSION, "projects")
@kopf.on.create(GROUP, VERSION, "projects")
@kopf.on.update(GROUP, VERSION, "projects")
@metrics.reconciled(KIND)
def reconcile_project(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    uid: str,
    meta: kopf.Meta,
    status: kopf.Status,
    logger: logging.Logger,
    **_: Any,
) -> None:
    generation = meta.get("generation")
    try:
        parsed = ProjectSpec.model_validate(dict(spec))
    except ValidationError as error:
        _set_status(body, status, "Failed", condition(READY, False, "InvalidSpec", str(error), generation))
        raise kopf.PermanentError(f"invalid Project spec: {error}") from error
    owner = owner_reference(API_VERSION, KIND, name, uid)
    operator = kube.own_service_account()
    if refusal := _adoption_refusal(name, operator):
        refused = condition(READY, False, "NamespaceNotAdoptable", refusal, generation)
        _set_status(body, status, "Failed", refused)
        raise kopf.TemporaryError(refusal, delay=60)
    deploy_image = OperatorSettings.from_env().trainer_image
    for obj in project_objects(name, parsed, owner, operator, deploy_image):
        kube.apply(obj)
        if obj["kind"] == "RoleBinding" and not kube.can("create", "resourcequotas", namespace_name(name)):
            raise kopf.TemporaryError("waiting for the operator's RoleBinding to take effect", delay=1)
    sync_members(name, parsed.members, project_owner(body), logger)
    message = f"namespace {namespace_name(name)} is ready"
    _set_status(body, status, "Ready", condition(READY, True, "NamespaceReady", message, generation))


def _adoption_refusal(name: str, operator: ServiceAccountName | None) -> str | None:
    """Why the Project may not take the namespace of its name, if it may not: one that floe did not create
    is taken only when an admin marked it floe.dev/adopt: "true" (deleting the Project deletes it), and the
    operator's own never."""
    namespace = namespace_name(name)
    if operator is not None and namespace == operator.namespace:
        return f"namespace {namespace} is the floe operator's own; a Project cannot use it"
    existing = kube.get("v1", "Namespace", namespace)
    if existing is None:
        return None
    meta = existing["metadata"]
    if (meta.get("labels") or {}).get(PROJECT_LABEL) == name:
        return None
    if (meta.get("annotations") or {}).get(ADOPT_ANNOTATION) == "true":
        return None
    return (
        f"namespace {namespace} exists and was not created by floe; an admin may let this Project adopt it (and "
        f"delete it with the Project) by annotating it {ADOPT_ANNOTATION}=true"
    )


def _set_status(body: kopf.Body, status: kopf.Status, phase: str, ready: dict) -> None:
    meta = body["metadata"]
    verdict = status_conditions(phase, ready["status"] == "True", ready["reason"], ready["message"],
                                ready.get("observedGeneration"))
    update = {
        "phase": phase,
        "observedGeneration": ready.get("observedGeneration"),
        "conditions": applied_conditions(status.get("conditions"), verdict),
    }
    # the namespace stays named once it was made (an invalid update of the spec does not remove it)
    if phase == "Ready" or status.get("namespace"):
        update["namespace"] = namespace_name(meta["name"])
    if not status_unchanged(status, update):
        kube.apply_status(API_VERSION, KIND, meta["name"], None, update)
    metrics.observe_phase(KIND, meta["uid"], phase)
    if status.get("phase") != phase:
        kopf.event(body, type="Normal" if phase == "Ready" else "Warning", reason=phase, message=ready["message"])


@kopf.on.delete(GROUP, VERSION, "projects")
def release_project(name: str, uid: str, meta: kopf.Meta, status: kopf.Status, **_: Any) -> None:
    """The finalizer: the namespace goes with the Project (garbage collection), so its SnowflakeDeployments
    are deleted first, while their drop Jobs can still run there."""
    namespace = namespace_name(name)
    deployments = kube.list_objects(API_VERSION, "SnowflakeDeployment", namespace, "")
    if not deployments:
        metrics.observe_phase(KIND, uid, None)
        return
    for sfd in deployments:
        if not sfd["metadata"].get("deletionTimestamp"):
            kube.delete(API_VERSION, "SnowflakeDeployment", sfd["metadata"]["name"], namespace)
    names = ", ".join(sorted(sfd["metadata"]["name"] for sfd in deployments))
    message = f"waiting for SnowflakeDeployments {names} to drop their functions before the namespace goes"
    deleting = status_conditions("Deleting", False, "Deleting", message, meta.get("generation"))
    update = {"conditions": applied_conditions(status.get("conditions"), deleting)}
    kube.apply_status(API_VERSION, KIND, name, None, update, field_manager=kube.FINALIZER_MANAGER)
    raise kopf.TemporaryError(message, delay=5)
