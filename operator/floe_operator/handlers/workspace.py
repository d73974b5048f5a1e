"""Workspace handlers: reconcile the notebook's objects and follow its StatefulSet into the status."""

from __future__ import annotations

import secrets

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.project import ProjectSpec
from floe_operator.api.workspace import WorkspaceSpec
from floe_operator.builders import workspace as build
from floe_operator.builders.common import APP_NAME_LABEL, owner_reference
from floe_operator.builders.project import PROJECT_LABEL
from floe_operator.builders.quota import parse_quota_error
from floe_operator.builders.repository import clone_failure
from floe_operator.catalog import UnknownName, load_catalog
from floe_operator.conditions import applied_conditions, status_conditions, status_unchanged
from floe_operator.handlers.quota import record_quota

WORKSPACES = {"group": GROUP, "version": VERSION, "plural": "workspaces"}
KIND = "Workspace"


def _project_spec(namespace: str) -> ProjectSpec | None:
    """The spec of the Project that owns ``namespace``; None outside a project."""
    labels = client.CoreV1Api().read_namespace(namespace).metadata.labels or {}
    project = labels.get(PROJECT_LABEL)
    if not project:
        return None
    body = client.CustomObjectsApi().get_cluster_custom_object(GROUP, VERSION, "projects", project)
    return ProjectSpec.model_validate(body.get("spec") or {})


def _training_secret(project: ProjectSpec | None) -> str | None:
    ref = project.snowflake.training_connection_secret_ref if project and project.snowflake else None
    return ref.name if ref else None


def _write_status(namespace: str, name: str, body: dict, updates: list[dict], fields: dict) -> None:
    status = body.get("status") or {}
    update = {**fields, "conditions": applied_conditions(status.get("conditions"), updates)}
    metrics.observe_phase(KIND, body["metadata"]["uid"], fields["phase"])
    if not status_unchanged(status, update):
        kube.apply_status(API_VERSION, KIND, name, namespace, update)


@kopf.on.resume(**WORKSPACES)
@kopf.on.create(**WORKSPACES)
@kopf.on.update(**WORKSPACES, field="spec")
@metrics.reconciled(KIND)
def reconcile_workspace(name, namespace, spec, meta, body, logger, **_):
    generation = meta.get("generation")
    ws = WorkspaceSpec.model_validate(spec)
    catalog = load_catalog()
    try:
        template = catalog.template(ws.template)
        profile = catalog.profile(ws.compute_profile)
    except UnknownName as error:
        field = "spec.template" if error.kind == "template" else "spec.computeProfile"
        message = f"{field}: {error}"
        kopf.warn(body, reason="InvalidSpec", message=message)
        _write_status(
            namespace,
            name,
            body,
            status_conditions("Failed", False, "InvalidSpec", message, generation),
            {"phase": "Failed", "observedGeneration": generation},
        )
        return
    project = _project_spec(namespace)
    inputs = build.WorkspaceInputs(
        name=name,
        namespace=namespace,
        spec=ws,
        template=template,
        profile=profile,
        owner=owner_reference(API_VERSION, "Workspace", name, meta["uid"]),
        repository=project.repository if project else None,
        # The read-only training connection: a notebook runs whatever its user writes, so never the deploy one.
        snowflake_secret=_training_secret(project),
    )
    # Created once and never rewritten: a new token would log every user out (and the operator may not read it).
    kube.create_once(build.token_secret(inputs, secrets.token_urlsafe(32)))
    kube.apply(build.token_reader_role(inputs))
    kube.apply(build.token_reader_binding(name, namespace, inputs.owner, project.members if project else []))
    try:
        kube.apply(build.home_claim(inputs))
    except ApiException as error:
        problem = parse_quota_error(str(error.body)) if error.status == 403 else None
        if problem:  # the home volume alone would exceed requests.storage; retried until it fits
            record_quota("workspaces", namespace, name, body, problem)
            raise kopf.TemporaryError(problem.message, delay=10) from error
        # A bound claim may refuse a new size (its storage class cannot expand); the rest goes on.
        if error.status not in (403, 422):
            raise
        kopf.warn(body, reason="HomeVolumeNotUpdated", message=f"spec.storage: {error.reason}")
        logger.warning("home volume of %s/%s not updated: %s", namespace, name, error.body)
    kube.apply(build.service(inputs))
    kube.apply(build.notebook_service_account(inputs))
    kube.apply(build.notebook_role_binding(inputs))
    kube.apply(build.statefulset(inputs))
    sts = client.AppsV1Api().read_namespaced_stateful_set(inputs.names.statefulset, namespace)
    _report(namespace, name, body, ws.stopped, client.ApiClient().sanitize_for_serialization(sts.status))


def _read(read, name: str, namespace: str) -> dict | None:
    try:
        return client.ApiClient().sanitize_for_serialization(read(name, namespace))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _report(namespace: str, name: str, body: dict, stopped: bool, sts_status: dict | None,
            pod: dict | None = None) -> None:
    """Writes the Workspace's status from its StatefulSet's and, while it is starting, its notebook pod's
    (read here unless the caller has it)."""
    generation = body["metadata"].get("generation")
    starting = not stopped and (sts_status or {}).get("readyReplicas", 0) < 1
    if starting and pod is None:
        pod = _read(client.CoreV1Api().read_namespaced_pod, build.WorkspaceNames(name).pod, namespace)
    state = build.workspace_state(stopped, sts_status, clone_failure([pod]) if starting and pod else None)
    _write_status(
        namespace,
        name,
        body,
        status_conditions(state.phase, state.ready, state.reason, state.message, generation),
        {
            "phase": state.phase,
            "observedGeneration": generation,
            "url": build.url(build.WorkspaceNames(name), namespace),
        },
    )


@kopf.on.event("apps", "v1", "statefulsets", labels={APP_NAME_LABEL: build.WORKSPACE_APP})
def follow_statefulset(type, body, namespace, **_):
    if type == "DELETED":
        return
    name = body["metadata"]["labels"].get("floe.dev/workspace")
    try:
        workspace = client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, namespace, "workspaces", name
        )
    except ApiException as error:
        if error.status == 404:  # the Workspace is gone; its StatefulSet follows
            return
        raise
    if (workspace.get("status") or {}).get("phase") == "Failed":
        return
    stopped = bool((workspace.get("spec") or {}).get("stopped"))
    _report(namespace, name, workspace, stopped, body.get("status"))


@kopf.on.event("", "v1", "pods", labels={APP_NAME_LABEL: build.WORKSPACE_APP})
def follow_notebook_pod(type, body, namespace, **_):
    """A notebook pod whose repository clone fails changes nothing in its StatefulSet's status: the failure is
    read from the pod."""
    if type == "DELETED" or not clone_failure([body]):
        return
    name = body["metadata"]["labels"].get("floe.dev/workspace")
    workspace = _read(lambda n, ns: client.CustomObjectsApi().get_namespaced_custom_object(
        GROUP, VERSION, ns, "workspaces", n), name, namespace)
    status = (workspace or {}).get("status") or {}
    ready = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
    if workspace is None or status.get("phase") == "Failed" or ready.get("reason") == "RepositoryCloneFailed":
        return
    sts = _read(client.AppsV1Api().read_namespaced_stateful_set, build.WorkspaceNames(name).statefulset, namespace)
    stopped = bool((workspace.get("spec") or {}).get("stopped"))
    _report(namespace, name, workspace, stopped, (sts or {}).get("status"), body)


@kopf.on.delete(**WORKSPACES, optional=True)
def forget_workspace(uid, **_):
    metrics.observe_phase(KIND, uid, None)
