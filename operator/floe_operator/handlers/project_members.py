"""Project members → persona RoleBindings in the project namespace, and the MLOps engineers' access to
the Project itself, kept in sync as members change."""

from __future__ import annotations

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from floe_operator import API_VERSION, GROUP, VERSION, kube
from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import owner_reference
from floe_operator.builders.project import namespace_name
from floe_operator.builders.project_members import (
    MEMBER_BINDINGS_SELECTOR,
    mlops_project_access,
    persona_role_bindings,
    project_editor_name,
    project_owner,
    stale_bindings,
)
from floe_operator.builders.workspace import token_reader_binding

PROJECTS = {"group": GROUP, "version": VERSION, "plural": "projects"}
APPLY = {"field_manager": "floe-operator", "force": True, "_content_type": "application/apply-patch+yaml"}


@kopf.on.resume(**PROJECTS)
@kopf.on.create(**PROJECTS)
@kopf.on.update(**PROJECTS, field="spec.members")
def sync_members(name, spec, body, logger, **_):
    members = ProjectSpec.model_validate(spec).members
    rbac = client.RbacAuthorizationV1Api()
    _sync_project_access(rbac, name, members, project_owner(body), logger)
    namespace = namespace_name(name)
    try:
        client.CoreV1Api().read_namespace(namespace)
    except ApiException as error:
        if error.status == 404:  # the project handler has not created it yet
            raise kopf.TemporaryError(f"namespace {namespace} does not exist yet", delay=2) from error
        raise
    desired = persona_role_bindings(namespace, members, project_owner(body))
    for binding in desired:
        rbac.patch_namespaced_role_binding(binding["metadata"]["name"], namespace, binding, **APPLY)
    # Notebook login tokens follow the same members.
    for workspace in kube.list_objects(API_VERSION, "Workspace", namespace, ""):
        meta = workspace["metadata"]
        owner = owner_reference(API_VERSION, "Workspace", meta["name"], meta["uid"])
        binding = token_reader_binding(meta["name"], namespace, owner, members)
        rbac.patch_namespaced_role_binding(binding["metadata"]["name"], namespace, binding, **APPLY)
    existing = rbac.list_namespaced_role_binding(namespace, label_selector=MEMBER_BINDINGS_SELECTOR).items
    for stale in stale_bindings(desired, [b.metadata.name for b in existing]):
        rbac.delete_namespaced_role_binding(stale, namespace)
        logger.info("removed RoleBinding %s/%s: no member has that persona any more", namespace, stale)


def _sync_project_access(rbac, project, members, owner, logger):
    """The MLOps engineers' ClusterRole and ClusterRoleBinding on the Project; removed when none is left."""
    role_and_binding = mlops_project_access(project, members, owner)
    if role_and_binding:
        role, binding = role_and_binding
        rbac.patch_cluster_role(role["metadata"]["name"], role, **APPLY)
        rbac.patch_cluster_role_binding(binding["metadata"]["name"], binding, **APPLY)
        return
    name = project_editor_name(project)
    for kind, delete in (
        ("ClusterRoleBinding", rbac.delete_cluster_role_binding),
        ("ClusterRole", rbac.delete_cluster_role),
    ):
        try:
            delete(name)
            logger.info("removed %s %s: the project has no MLOps engineer any more", kind, name)
        except ApiException as error:
            if error.status != 404:
                raise
