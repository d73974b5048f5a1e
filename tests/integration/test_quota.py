"""A workload that exceeds its project's quota says so, and proceeds once the quota is raised."""

from __future__ import annotations

PROJECT = "quota-lab"


def project(gpus: int, memory: str, storage: str = "100Gi") -> dict:
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": PROJECT},
        "spec": {"quota": {"gpus": gpus, "memory": memory, "storage": storage}},
    }


def condition(cluster, kind, name, type_) -> dict:
    obj = cluster.get(kind, name, "-n", PROJECT) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def quota_condition(cluster, kind: str, name: str, status: str, timeout: float) -> dict:
    """Waits until the QuotaExceeded condition of kind/name reads `status`, and returns it."""
    cluster.wait_for(
        lambda: condition(cluster, kind, name, "QuotaExceeded").get("status") == status,
        timeout,
        f"QuotaExceeded={status} on {kind} {name}",
    )
    return condition(cluster, kind, name, "QuotaExceeded")


def test_quota_exceeded_is_explained_and_raising_the_quota_recovers(cluster, floe_operator):
    cluster.apply(project(gpus=1, memory="16Gi")).check_returncode()
    cluster.wait_for(lambda: cluster.get("resourcequota", "floe-quota", "-n", PROJECT), 60, "the quota")
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "big", "namespace": PROJECT},
            "spec": {
                "model": {"scratch": {"shape": "tiny"}},
                "dataset": {"file": {"path": "/var/run/floe/data/news.csv"}},
                "resources": {"gpus": 2, "memory": "8Gi"},
            },
        }
    ).check_returncode()

    message = quota_condition(cluster, "finetunejob", "big", "True", 90)["message"]
    assert "ResourceQuota floe-quota is exceeded" in message
    assert "requests.nvidia.com/gpu used 0, asked 2, limit 1" in message

    cluster.apply(project(gpus=2, memory="16Gi")).check_returncode()
    assert quota_condition(cluster, "finetunejob", "big", "False", 150)["reason"] == "WithinQuota"
    events = cluster.kubectl("get", "events", "-n", PROJECT, "--field-selector=reason=WithinQuota").stdout
    assert "big" in events


def test_workspace_over_memory_quota_is_explained(cluster, floe_operator):
    cluster.apply(project(gpus=2, memory="16Gi")).check_returncode()
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "roomy", "namespace": PROJECT},
            "spec": {"computeProfile": "memory-optimized", "storage": {"retain": False}},
        }
    ).check_returncode()
    message = quota_condition(cluster, "workspace", "roomy", "True", 90)["message"]
    assert "requests.memory used" in message and "limit 16Gi" in message

    cluster.apply(project(gpus=2, memory="128Gi")).check_returncode()
    assert quota_condition(cluster, "workspace", "roomy", "False", 150)["reason"] == "WithinQuota"


def test_home_volume_over_storage_quota_is_explained_and_recovers(cluster, floe_operator):
    cluster.apply(project(gpus=2, memory="16Gi", storage="5Gi")).check_returncode()
    cluster.wait_for(
        lambda: (cluster.get("resourcequota", "floe-quota", "-n", PROJECT) or {}).get("spec", {}).get("hard", {})
        .get("requests.storage") == "5Gi",
        60,
        "the 5Gi storage quota",
    )
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "hoarder", "namespace": PROJECT},
            "spec": {"computeProfile": "cpu", "storage": {"size": "10Gi", "retain": False}, "stopped": True},
        }
    ).check_returncode()
    message = quota_condition(cluster, "workspace", "hoarder", "True", 90)["message"]
    assert "requests.storage" in message and "asked 10Gi" in message and "limit 5Gi" in message
    assert cluster.get("pvc", "hoarder-home", "-n", PROJECT) is None

    cluster.apply(project(gpus=2, memory="16Gi", storage="20Gi")).check_returncode()
    cluster.wait_for(lambda: cluster.get("pvc", "hoarder-home", "-n", PROJECT), 90, "the home volume once it fits")
    quota_condition(cluster, "workspace", "hoarder", "False", 60)
