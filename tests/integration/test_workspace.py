"""Workspaces on a real API server: objects, stop/start, retention, bad input."""

from __future__ import annotations

import pytest

PROJECT = "ws-lab"


def home_volume(claim: str, size: str = "10Gi") -> dict:
    # No storage provisioner here: a volume pre-bound to the claim lets the notebook pod schedule.
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{PROJECT}-{claim}"},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": f"/tmp/{PROJECT}-{claim}"},
            "claimRef": {"namespace": PROJECT, "name": claim},
            "persistentVolumeReclaimPolicy": "Retain",
        },
    }


def workspace(name: str, **spec) -> dict:
    return {
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": PROJECT},
        # The gpu profile places the pod on a simulated GPU node, which reports it running.
        "spec": {"template": "snowflake", "computeProfile": "gpu", **spec},
    }


def status(cluster, name) -> dict:
    return (cluster.get("workspace", name, "-n", PROJECT) or {}).get("status") or {}


def condition(cluster, name, type_) -> dict:
    return next((c for c in status(cluster, name).get("conditions", []) if c["type"] == type_), {})


@pytest.fixture(scope="module")
def lab(cluster, floe_operator):
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": PROJECT},
            "spec": {
                "repository": {"url": "https://git.example.org/team/models.git", "branch": "dev"},
                "snowflake": {"connectionSecretRef": {"name": "snowflake-deploy"},
                              "trainingConnectionSecretRef": {"name": "snowflake"}},
                "members": [{"kind": "User", "name": "ana", "persona": "DataScientist"},
                            {"kind": "User", "name": "omar", "persona": "MLOpsEngineer"}],
            },
        }
    ).check_returncode()
    cluster.wait_for(lambda: cluster.get("namespace", PROJECT), 60, "the project namespace")
    yield
    cluster.kubectl("delete", "project", PROJECT, "--wait=false")


def test_workspace_runs_with_home_volume_repo_and_snowflake_secret(cluster, lab):
    cluster.apply(home_volume("nb-home"), workspace("nb")).check_returncode()
    # A pod the scheduler first found unschedulable (its claim not yet bound) can wait for the scheduler's
    # periodic retry of unschedulable pods (5 minutes).
    cluster.wait_for(lambda: status(cluster, "nb").get("phase") == "Running", 360, "the notebook to run")
    assert condition(cluster, "nb", "Ready")["status"] == "True"
    assert status(cluster, "nb")["url"] == f"http://nb.{PROJECT}.svc:8888/lab"

    pod = cluster.get("pod", "nb-0", "-n", PROJECT)["spec"]
    clone = pod["initContainers"][0]
    assert {"name": "FLOE_REPO_BRANCH", "value": "dev"} in clone["env"]
    jupyter = pod["containers"][0]
    assert {"name": "snowflake", "mountPath": "/var/run/floe/snowflake", "readOnly": True} in jupyter["volumeMounts"]
    assert cluster.get("service", "nb", "-n", PROJECT)["spec"]["ports"][0]["port"] == 8888
    assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {"snowflake"}  # never deploy's
    assert cluster.get("secret", "nb-jupyter", "-n", PROJECT)["data"]["token"]


def test_the_projects_data_scientists_read_the_notebook_token_and_no_other_secret(cluster, lab):
    cluster.wait_for(lambda: cluster.get("rolebinding", "nb-jupyter", "-n", PROJECT), 60, "the token binding")

    def can_get(user, secret):
        answer = cluster.kubectl("auth", "can-i", "get", f"secret/{secret}", "-n", PROJECT, as_user=user)
        return answer.stdout.strip() == "yes"

    assert can_get("ana", "nb-jupyter")
    assert not can_get("ana", "snowflake-deploy") and not can_get("ana", "snowflake")
    assert not can_get("omar", "nb-jupyter")


def test_stop_scales_to_zero_keeps_the_volume_and_start_resumes(cluster, lab):
    cluster.apply(home_volume("stopper-home"), workspace("stopper")).check_returncode()
    cluster.wait_for(lambda: status(cluster, "stopper").get("phase") == "Running", 120, "running")
    cluster.apply(workspace("stopper", stopped=True)).check_returncode()
    cluster.wait_for(
        lambda: (
            status(cluster, "stopper").get("phase") == "Stopped"
            and condition(cluster, "stopper", "Ready").get("reason") == "Stopped"
        ),
        120,
        "the notebook to stop",
    )
    assert cluster.get("statefulset", "stopper", "-n", PROJECT)["spec"]["replicas"] == 0
    assert cluster.get("pvc", "stopper-home", "-n", PROJECT)["status"]["phase"] == "Bound"
    cluster.apply(workspace("stopper", stopped=False)).check_returncode()
    cluster.wait_for(lambda: status(cluster, "stopper").get("phase") == "Running", 120, "running again")


@pytest.mark.parametrize(("retain", "kept"), [(True, True), (False, False)])
def test_deletion_keeps_the_home_volume_only_when_retained(cluster, lab, retain, kept):
    name = f"keep-{str(retain).lower()}"
    cluster.apply(home_volume(f"{name}-home"), workspace(name, storage={"retain": retain})).check_returncode()
    cluster.wait_for(lambda: status(cluster, name).get("phase") == "Running", 120, "running")
    cluster.kubectl("delete", "workspace", name, "-n", PROJECT, check=True)
    cluster.wait_for(lambda: cluster.get("statefulset", name, "-n", PROJECT) is None, 60, "the StatefulSet to go")
    if kept:
        assert cluster.get("pvc", f"{name}-home", "-n", PROJECT) is not None
    else:
        cluster.wait_for(lambda: cluster.get("pvc", f"{name}-home", "-n", PROJECT) is None, 60, "the PVC to go")


@pytest.mark.parametrize(
    ("spec", "field", "valid"),
    [
        ({"template": "tensorflow"}, "spec.template", "valid: pytorch, snowflake"),
        ({"computeProfile": "tpu"}, "spec.computeProfile", "valid: cpu, gpu, memory-optimized"),
    ],
)
def test_unknown_catalog_name_fails_with_the_valid_names(cluster, lab, spec, field, valid):
    name = f"bad-{field.split('.')[-1].lower()}"
    cluster.apply(workspace(name, **spec)).check_returncode()
    cluster.wait_for(lambda: status(cluster, name).get("phase") == "Failed", 60, "the Workspace to fail")
    ready = condition(cluster, name, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith(f"{field}: unknown") and ready["message"].endswith(valid)
    assert cluster.get("statefulset", name, "-n", PROJECT) is None


def test_bad_repository_url_is_refused_at_admission(cluster):
    result = cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "bad-repo"},
            "spec": {"repository": {"url": "ftp://example.org/repo.git"}},
        }
    )
    assert result.returncode != 0
    assert "spec.repository.url" in result.stderr


def test_home_volume_can_grow_but_not_shrink(cluster, lab):
    cluster.apply(workspace("sized", stopped=True, storage={"size": "10Gi"})).check_returncode()
    shrink = cluster.apply(workspace("sized", stopped=True, storage={"size": "5Gi"}))
    assert shrink.returncode != 0 and "size can grow but not shrink" in shrink.stderr
    cluster.apply(workspace("sized", stopped=True, storage={"size": "20Gi"})).check_returncode()
    assert cluster.get("workspace", "sized", "-n", PROJECT)["spec"]["storage"]["size"] == "20Gi"
