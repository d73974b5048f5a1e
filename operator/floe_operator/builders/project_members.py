"""Project members → RoleBindings of the persona ClusterRoles in the project namespace.

One RoleBinding per persona (named after its ClusterRole) lists every member with that persona, so a
member who changes persona moves between bindings and a persona nobody has loses its binding. The
persona ClusterRoles themselves ship with the chart (helm/floe/files/personas.yaml).

MLOps engineers also manage the project's quota, which lives on the cluster-scoped Project where a
namespaced RoleBinding cannot reach: they get a ClusterRole and ClusterRoleBinding of their own for
that one Project. An admission policy in personas.yaml keeps them to spec.quota.
"""

from __future__ import annotations

from collections.abc import Iterable

from floe_operator.api.project import ProjectMember
from floe_operator.builders.common import MANAGED_BY
from floe_operator.builders.project import PROJECT_LABEL

RBAC_GROUP = "rbac.authorization.k8s.io"
PERSONA_LABEL = "floe.dev/persona"

PERSONA_ROLES = {
    "DataScientist": "floe-data-scientist",
    "MLEngineer": "floe-ml-engineer",
    "ModelQualityController": "floe-model-quality-controller",
    "MLOpsEngineer": "floe-mlops-engineer",
    "GovernanceOfficer": "floe-governance-officer",
}

MLOPS_PERSONA = "MLOpsEngineer"
# `update` is left out: kubectl apply, edit and patch all send PATCH, and the operator can only grant
# what it holds itself (it holds get and patch on Projects, not update).
PROJECT_EDITOR_VERBS = ["get", "patch"]

# Selects the RoleBindings this module owns, so members removed from the spec lose their binding.
MEMBER_BINDINGS_SELECTOR = f"{PERSONA_LABEL},app.kubernetes.io/managed-by={MANAGED_BY['app.kubernetes.io/managed-by']}"


def persona_role_bindings(namespace: str, members: Iterable[ProjectMember], owner: dict | None = None) -> list[dict]:
    """The RoleBindings the project's namespace should hold, one per persona that has members."""
    subjects_by_persona: dict[str, set[tuple[str, str]]] = {}
    for member in members:
        subjects_by_persona.setdefault(member.persona, set()).add((member.kind, member.name))
    bindings = []
    for persona, subjects in sorted(subjects_by_persona.items()):
        role = PERSONA_ROLES[persona]
        metadata: dict = {
            "name": role,
            "namespace": namespace,
            "labels": {**MANAGED_BY, PERSONA_LABEL: persona},
        }
        if owner:
            metadata["ownerReferences"] = [owner]
        bindings.append(
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "RoleBinding",
                "metadata": metadata,
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": kind, "name": name} for kind, name in sorted(subjects)],
            }
        )
    return bindings


def project_editor_name(project: str) -> str:
    """Name of the ClusterRole and ClusterRoleBinding that let a project's MLOps engineers edit it."""
    return f"floe-project-{project}-mlops"


def mlops_project_access(project: str, members: Iterable[ProjectMember], owner: dict | None = None) -> list[dict]:
    """A ClusterRole allowing get/patch on this one Project and its binding to the MLOps members;
    empty when the project has none (the handler then deletes both)."""
    subjects = sorted({(m.kind, m.name) for m in members if m.persona == MLOPS_PERSONA})
    if not subjects:
        return []
    name = project_editor_name(project)
    metadata: dict = {"name": name, "labels": {**MANAGED_BY, PERSONA_LABEL: MLOPS_PERSONA, PROJECT_LABEL: project}}
    if owner:
        metadata["ownerReferences"] = [owner]
    role = {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": metadata,
        "rules": [
            {
                "apiGroups": ["floe.dev"],
                "resources": ["projects"],
                "resourceNames": [project],
                "verbs": PROJECT_EDITOR_VERBS,
            }
        ],
    }
    binding = {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": dict(metadata),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": kind, "name": subject} for kind, subject in subjects],
    }
    return [role, binding]


def stale_bindings(desired: list[dict], existing_names: Iterable[str]) -> list[str]:
    """Names of existing persona RoleBindings that no member needs any more."""
    wanted = {binding["metadata"]["name"] for binding in desired}
    return sorted(name for name in existing_names if name not in wanted)


def project_owner(project: dict) -> dict:
    """An ownerReference to a Project, so its bindings go when it goes."""
    return {
        "apiVersion": project["apiVersion"],
        "kind": "Project",
        "name": project["metadata"]["name"],
        "uid": project["metadata"]["uid"],
        "controller": False,
        "blockOwnerDeletion": False,
    }
