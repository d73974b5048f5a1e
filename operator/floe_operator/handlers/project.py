"""Project -> Namespace, ResourceQuota, LimitRange, trainer ServiceAccount (all owned by the Project)."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import owner_reference
from floe_operator.builders.project import namespace_name, project_objects
from floe_operator.conditions import READY, condition, set_condition

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
    patch: kopf.Patch,
    **_: Any,
) -> None:
    generation = meta.get("generation")
    try:
        parsed = ProjectSpec.model_validate(dict(spec))
    except ValidationError as error:
        _set_status(body, status, patch, "Failed", condition(READY, False, "InvalidSpec", str(error), generation))
        raise kopf.PermanentError(f"invalid Project spec: {error}") from error
    owner = owner_reference(API_VERSION, KIND, name, uid)
    for obj in project_objects(name, parsed, owner):
        kube.ensure(obj)
    message = f"namespace {namespace_name(name)} is ready"
    patch.status["namespace"] = namespace_name(name)
    _set_status(body, status, patch, "Ready", condition(READY, True, "NamespaceReady", message, generation))


def _set_status(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, phase: str, ready: dict) -> None:
    patch.status["phase"] = phase
    patch.status["observedGeneration"] = ready.get("observedGeneration")
    patch.status["conditions"] = set_condition(status.get("conditions"), ready)
    metrics.observe_phase(KIND, body["metadata"]["uid"], phase)
    if status.get("phase") != phase:
        kopf.event(body, type="Normal" if phase == "Ready" else "Warning", reason=phase, message=ready["message"])


@kopf.on.delete(GROUP, VERSION, "projects", optional=True)
def forget_project(uid: str, **_: Any) -> None:
    metrics.observe_phase(KIND, uid, None)
