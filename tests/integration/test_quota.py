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

    cluster.wait_for(
        lambda: condition(cluster, "finetunejob", "big", "QuotaExceeded").get("status") == "True",
        90,
        "QuotaExceeded on the FineTuneJob",
    )
    message = condition(cluster, "finetunejob", "big", "QuotaExceeded")["message"]
    assert "ResourceQuota floe-quota is exceeded" in message
    assert "requests.nvidia.com/gpu used 0, asked 2, limit 1" in message

    cluster.apply(project(gpus=2, memory="16Gi")).check_returncode()
    cluster.wait_for(
        lambda: condition(cluster, "finetunejob", "big", "QuotaExceeded").get("status") == "False",
        150,
        "the FineTuneJob to get its pod once the quota allows it",
    )
    assert condition(cluster, "finetunejob", "big", "QuotaExceeded")["reason"] == "WithinQuota"
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
    cluster.wait_for(
        lambda: condition(cluster, "workspace", "roomy", "QuotaExceeded").get("status") == "True",
        90,
        "QuotaExceeded on the Workspace",
    )
    assert "requests.memory used" in condition(cluster, "workspace", "roomy", "QuotaExceeded")["message"]
    assert "limit 16Gi" in condition(cluster, "workspace", "roomy", "QuotaExceeded")["message"]

    cluster.apply(project(gpus=2, memory="128Gi")).check_returncode()
    cluster.wait_for(
        lambda: condition(cluster, "workspace", "roomy", "QuotaExceeded").get("status") == "False",
        150,
        "the Workspace to get its pod once the quota allows it",
    )
    assert condition(cluster, "workspace", "roomy", "QuotaExceeded")["reason"] == "WithinQuota"


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
    cluster.wait_for(
        lambda: condition(cluster, "workspace", "hoarder", "QuotaExceeded").get("status") == "True",
        90,
        "QuotaExceeded for the home volume",
    )
    message = condition(cluster, "workspace", "hoarder", "QuotaExceeded")["message"]
    assert "requests.storage" in message and "asked 10Gi" in message and "limit 5Gi" in message
    assert cluster.get("pvc", "hoarder-home", "-n", PROJECT) is None

    cluster.apply(project(gpus=2, memory="16Gi", storage="20Gi")).check_returncode()
    cluster.wait_for(lambda: cluster.get("pvc", "hoarder-home", "-n", PROJECT), 90, "the home volume once it fits")
    cluster.wait_for(
        lambda: condition(cluster, "workspace", "hoarder", "QuotaExceeded").get("status") == "False",
        60,
        "QuotaExceeded to clear",
    )
