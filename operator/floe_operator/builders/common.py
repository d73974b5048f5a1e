"""Helpers shared by the builders: owner references, labels, the restricted security profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MANAGED_BY = {"app.kubernetes.io/managed-by": "floe-operator", "app.kubernetes.io/part-of": "floe"}
# Names each kind of floe workload (trainer, deployer, notebook) on its Jobs, StatefulSets and pods.
APP_NAME_LABEL = "app.kubernetes.io/name"
NON_ROOT_UID = 1000


@dataclass(frozen=True)
class ServiceAccountName:
    namespace: str
    name: str


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    """The controller owner reference: deleting the owner garbage-collects the object."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(name: str, owner: dict[str, Any], labels: dict[str, str], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**MANAGED_BY, **labels}, "ownerReferences": [owner]}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def restricted_pod_security() -> dict[str, Any]:
    """Pod-level securityContext that passes Pod Security `restricted`."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security(read_only_root: bool = True) -> dict[str, Any]:
    """Container-level securityContext that passes Pod Security `restricted`."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
    }


EXIT_BAD_CONFIG = 2  # floe-train's and floe-deploy's exit code for a config they refuse
# floe-deploy's for a failure a retry would repeat: the model's own output, its speed, its packages
EXIT_WOULD_FAIL_AGAIN = 3


def pod_failure_policy(container: str, final_exit_codes: tuple[int, ...] = (EXIT_BAD_CONFIG,)) -> dict[str, Any]:
    """A pod the cluster disrupted (preemption, eviction, a drained node) is retried without counting against
    backoffLimit (the trainer checkpoints on SIGTERM); an exit of ``container`` in ``final_exit_codes`` (a
    config it refuses, say) can never succeed, so it fails the Job at once instead of being retried."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob",
             "onExitCodes": {"containerName": container, "operator": "In", "values": list(final_exit_codes)}},
        ]
    }


def unschedulable(pods: list[dict[str, Any]]) -> str | None:
    """What the scheduler says of the first of ``pods`` it cannot place (PodScheduled False, reason
    Unschedulable: no node has what it asks for), else None."""
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or ():
            if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
                return f"pod {pod['metadata']['name']} cannot be scheduled: {cond.get('message') or 'no node fits'}"
    return None
