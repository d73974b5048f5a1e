"""Project members → persona RoleBindings in the project namespace, kept in sync as members change."""

from __future__ import annotations

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from floe_operator import GROUP, VERSION
from floe_operator.api.project import ProjectSpec
from floe_operator.builders.project import namespace_name
from floe_operator.builders.project_members import (
    MEMBER_BINDINGS_SELECTOR,
    persona_role_bindings,
    project_owner,
    stale_bindings,
)

PROJECTS = {"group": GROUP, "version": VERSION, "plural": "projects"}


@kopf.on.resume(**PROJECTS)
@kopf.on.create(**PROJECTS)
@kopf.on.update(**PROJECTS, field="spec.members")
def sync_members(name, spec, body, logger, **_):
    namespace = namespace_name(name)
    rbac = client.RbacAuthorizationV1Api()
    try:
        client.CoreV1Api().read_namespace(namespace)
    except ApiException as error:
        if error.status == 404:  # the project handler has not created it yet
            raise kopf.TemporaryError(f"namespace {namespace} does not exist yet", delay=2) from error
        raise
    members = ProjectSpec.model_validate(spec).members
    desired = persona_role_bindings(namespace, members, project_owner(body))
    for binding in desired:
        rbac.patch_namespaced_role_binding(
            binding["metadata"]["name"],
            namespace,
            binding,
            field_manager="floe-operator",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    existing = rbac.list_namespaced_role_binding(namespace, label_selector=MEMBER_BINDINGS_SELECTOR).items
    for stale in stale_bindings(desired, [b.metadata.name for b in existing]):
        rbac.delete_namespaced_role_binding(stale, namespace)
        logger.info("removed RoleBinding %s/%s: no member has that persona any more", namespace, stale)
