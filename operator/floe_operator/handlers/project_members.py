"""Project members → persona RoleBindings in the project namespace, and the MLOps engineers' access to
the Project itself; applied by the Project's reconcile (handlers/project.py) before it reports Ready."""

from __future__ import annotations

import logging

from floe_operator import API_VERSION, kube
from floe_operator.api.project import ProjectMember
from floe_operator.builders.common import owner_reference
from floe_operator.builders.project import namespace_name
from floe_operator.builders.project_members import (
    MEMBER_BINDINGS_SELECTOR,
    mlops_project_access,
    persona_role_bindings,
    project_editor_name,
    stale_bindings,
)
from floe_operator.builders.workspace import token_reader_binding

RBAC = "rbac.authorization.k8s.io/v1"


def sync_members(name: str, members: list[ProjectMember], owner: dict, logger: logging.Logger) -> None:
    """The members' bindings in the Project's namespace (which exists), the notebooks' token readers, and the
    MLOps engineers' access to the Project; bindings of personas no member has any more are removed."""
    _sync_project_access(name, members, owner, logger)
    namespace = namespace_name(name)
    desired = persona_role_bindings(namespace, members, owner)
    for binding in desired:
        kube.apply(binding)
    # Notebook login tokens follow the same members.
    for workspace in kube.list_objects(API_VERSION, "Workspace", namespace, ""):
        meta = workspace["metadata"]
        kube.apply(token_reader_binding(meta["name"], namespace, owner_reference(API_VERSION, "Workspace",
                                                                                 meta["name"], meta["uid"]), members))
    existing = kube.list_objects(RBAC, "RoleBinding", namespace, MEMBER_BINDINGS_SELECTOR)
    for stale in stale_bindings(desired, [binding["metadata"]["name"] for binding in existing]):
        kube.delete(RBAC, "RoleBinding", stale, namespace)
        logger.info("removed RoleBinding %s/%s: no member has that persona any more", namespace, stale)


def _sync_project_access(project: str, members: list[ProjectMember], owner: dict, logger: logging.Logger) -> None:
    """The MLOps engineers' ClusterRole and ClusterRoleBinding on the Project; removed when none is left."""
    role_and_binding = mlops_project_access(project, members, owner)
    if role_and_binding:
        for obj in role_and_binding:
            kube.apply(obj)
        return
    name = project_editor_name(project)
    for kind in ("ClusterRoleBinding", "ClusterRole"):
        if kube.delete(RBAC, kind, name):
            logger.info("removed %s %s: the project has no MLOps engineer any more", kind, name)
