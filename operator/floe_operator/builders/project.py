"""Project -> its Namespace, ResourceQuota, LimitRange and trainer ServiceAccount."""

from __future__ import annotations

from typing import Any

from floe_operator.api.project import ProjectSpec
from floe_operator.builders.common import metadata

PROJECT_LABEL = "floe.dev/project"
TRAINER_SERVICE_ACCOUNT = "floe-trainer"
GPU_RESOURCE = "nvidia.com/gpu"


def namespace_name(project_name: str) -> str:
    return project_name


def namespace(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    labels = {
        PROJECT_LABEL: name,
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(namespace_name(name), owner, labels)}


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


def project_objects(name: str, spec: ProjectSpec, owner: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything a Project owns, the Namespace first."""
    return [
        namespace(name, owner),
        resource_quota(name, spec, owner),
        limit_range(name, owner),
        trainer_service_account(name, owner),
    ]



