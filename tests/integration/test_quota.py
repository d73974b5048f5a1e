"""A workload that exceeds its project's quota says so, and proceeds once the quota is raised."""

from __future__ import annotations

import re
import uuid

import yaml

PROJECT = "quota-lab"


def project(gpus: int, memory: str, storage: str = "100Gi") -> dict:
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": PROJECT},
        "spec": {"quota": {"gpus": gpus, "memory": memory, "storage": storage}},
    }


def two_gpu_job(name: str) -> dict:
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": PROJECT},
        "spec": {
            "model": {"scratch": {"shape": "tiny"}},
            "dataset": {"file": {"path": "/var/run/floe/data/news.csv"}},
            "resources": {"gpus": 2, "memory": "8Gi"},
        },
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
    cluster.apply(two_gpu_job("big")).check_returncode()

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


def core_events_sent_to_watchers(cluster) -> int:
    """How many core Events the API server has sent down watch streams so far, all watchers together."""
    total = 0
    for line in cluster.kubectl("get", "--raw", "/metrics", check=True).stdout.splitlines():
        if line.startswith("apiserver_watch_events_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if (labels.get("group"), labels.get("version"), labels.get("resource")) == ("", "v1", "events"):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def bystander_event(kind: str, reason: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"bystander.{uuid.uuid4().hex}", "namespace": PROJECT},
        "involvedObject": {"apiVersion": "v1", "kind": kind, "name": "bystander", "namespace": PROJECT},
        "reason": reason,
        "message": "somebody else's news",
        "type": "Normal",
        "source": {"component": "bystander"},
    }


def test_the_operator_is_sent_only_the_events_it_acts_on(cluster, floe_operator):
    """Unrelated Events never reach the operator: its Events watch is narrowed by the API server, so its cost
    does not grow with the cluster's other activity. The trainer Job's refusal, created after them, is the
    marker: once the operator has acted on it, it has been sent everything before it on the same stream."""
    cluster.apply(project(gpus=1, memory="16Gi")).check_returncode()
    cluster.wait_for(
        lambda: (cluster.get("resourcequota", "floe-quota", "-n", PROJECT) or {}).get("spec", {}).get("hard", {})
        .get("requests.nvidia.com/gpu") == "1",
        60,
        "the 1-GPU quota",
    )
    bystanders = [bystander_event("Pod", "Scheduled") for _ in range(20)]
    bystanders += [bystander_event("ReplicaSet", "FailedCreate") for _ in range(20)]  # not a Job's
    before = core_events_sent_to_watchers(cluster)
    cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all(bystanders), check=True)
    cluster.apply(two_gpu_job("narrow")).check_returncode()

    quota_condition(cluster, "finetunejob", "narrow", "True", 90)
    sent = core_events_sent_to_watchers(cluster) - before
    assert sent < len(bystanders), f"{sent} Events sent to watchers for {len(bystanders)} unrelated ones"
    cluster.kubectl("delete", "finetunejob", "narrow", "-n", PROJECT, "--wait=false", check=True)
