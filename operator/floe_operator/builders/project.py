"""Project -> its Namespace, ResourceQuota, LimitRange and trainer ServiceAccount."""

from __future__ import annotations

from typing import Any

from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import ServiceAccountName, metadata

PROJECT_LABEL = "floe.dev/project"
TRAINER_SERVICE_ACCOUNT = "floe-trainer"
GPU_RESOURCE = "nvidia.com/gpu"
OPERATOR_PROJECT_ROLE = "floe-operator-project"  # helm/floe/files/operator-project-role.yaml
ADOPT_ANNOTATION = "floe.dev/adopt"  # set to "true" by an admin: a Project may take over this namespace
TRAINING_SECRETS_ANNOTATION = "floe.dev/training-secrets"
DEPLOY_SECRETS_ANNOTATION = "floe.dev/deploy-secrets"
REPOSITORY_SECRET_ANNOTATION = "floe.dev/repository-secret"
# The image the operator runs deploy Jobs with; floe-predict-jobs (personas.yaml) admits a user's predict Job
# only with this image.
DEPLOY_IMAGE_ANNOTATION = "floe.dev/deploy-image"


def namespace_name(project_name: str) -> str:
    return project_name


def mountable_secrets(spec: ProjectSpec) -> dict[str, str]:
    """The namespace annotations that name, per use, the Secrets the Project's workloads may read; admission
    policies (helm/floe/files/tenancy.yaml, operator-guard.yaml) check every reference against them."""
    snowflake, repository = spec.snowflake, spec.repository
    training = snowflake.training_connection_secret_ref if snowflake else None
    credentials = repository.credentials_secret_ref if repository else None
    return {
        TRAINING_SECRETS_ANNOTATION: training.name if training else "",
        DEPLOY_SECRETS_ANNOTATION: snowflake.connection_secret_ref.name if snowflake else "",
        REPOSITORY_SECRET_ANNOTATION: credentials.name if credentials else "",
    }


def namespace(name: str, spec: ProjectSpec, owner: dict[str, Any], deploy_image: str) -> dict[str, Any]:
    labels = {
        PROJECT_LABEL: name,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    meta = metadata(namespace_name(name), owner, labels)
    meta["annotations"] = {**mountable_secrets(spec), DEPLOY_IMAGE_ANNOTATION: deploy_image}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def operator_role_binding(name: str, operator: ServiceAccountName, owner: dict[str, Any]) -> dict[str, Any]:
    """What the operator may do in this namespace (and, since only Projects bind it, nowhere else)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(OPERATOR_PROJECT_ROLE, owner, {PROJECT_LABEL: name}, namespace_name(name)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": OPERATOR_PROJECT_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": operator.name, "namespace": operator.namespace}],
    }


def resource_quota(name: str, spec: ProjectSpec, owner: dict[str, Any]) -> dict[str, Any]:
    quota = spec.quota
    hard = {
        "requests.cpu": quota.cpu,
        "requests.memory": quota.memory,
        f"requests.{GPU_RESOURCE}": str(quota.gpus),
        "requests.storage": quota.storage,
    }
    if quota.max_workspaces is not None:
        hard["count/workspaces.floe.dev"] = str(quota.max_workspaces)
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata("floe-quota", owner, {PROJECT_LABEL: name}, namespace_name(name)),
        "spec": {"hard": hard},
    }


def limit_range(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    # Containers without requests still count against the quota with these defaults.
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata("floe-defaults", owner, {PROJECT_LABEL: name}, namespace_name(name)),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
                    "default": {"memory": "2Gi"},
                }
            ]
        },
    }


def trainer_service_account(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(TRAINER_SERVICE_ACCOUNT, owner, {PROJECT_LABEL: name}, namespace_name(name)),
        "automountServiceAccountToken": False,
    }


def project_objects(
    name: str, spec: ProjectSpec, owner: dict[str, Any], operator: ServiceAccountName | None, deploy_image: str
) -> list[dict[str, Any]]:
    """Everything a Project owns: the Namespace first, then the operator's rights in it (when it runs as a
    ServiceAccount), then what those rights create. ``deploy_image``: the operator's trainer image, which
    its deploy Jobs run."""
    rights = [operator_role_binding(name, operator, owner)] if operator else []
    return [
        namespace(name, spec, owner, deploy_image),
        *rights,
        resource_quota(name, spec, owner),
        limit_range(name, owner),
        trainer_service_account(name, owner),
    ]



