"""The floe CLI against the real API server: status, watch and approve (with the admission policy
deciding who may approve)."""

import json
import subprocess
import sys
import threading
import uuid

import pytest
import yaml

from hack.chart import REPO, helm_template


def floe(command: str, *args: str, kubeconfig, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "floe_operator.cli", command, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


DIGEST = "sha256:" + "c" * 64
JOB_SPEC = {
    "model": {"scratch": {"shape": "tiny"}},
    "dataset": {"file": {"path": "/data/news.csv"}},
    "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"},
}
DEPLOYMENT_SPEC = {
    "source": {"fineTuneJobRef": {"name": "t5"}},
    "snowflake": {
        "mode": "local",
        "database": "NEWS",
        "schema": "PUBLIC",
        "stage": "MODELS",
        "functionName": "SUMMARIZE",
    },
}


@pytest.fixture
def namespace(cluster, floe_operator):
    """A Project's namespace: floe's resources live in no other."""
    name = f"floe-cli-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": "floe.dev/v1alpha1", "kind": "Project", "metadata": {"name": name},
                   "spec": {}}).check_returncode()
    cluster.wait_for(lambda: (cluster.get("project", name) or {}).get("status", {}).get("phase") == "Ready", 90,
                     f"Project {name} Ready")
    yield name
    cluster.kubectl("delete", "project", name, "--wait=false")


def set_status(cluster, namespace: str, plural: str, name: str, status: dict) -> None:
    cluster.kubectl(
        "patch",
        plural,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump({"status": status}),
        check=True,
    )


def test_status_lists_the_namespace_resources(cluster, namespace):
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "t5", "namespace": namespace},
            "spec": JOB_SPEC,
        },
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "SnowflakeDeployment",
            "metadata": {"name": "summarize", "namespace": namespace},
            "spec": DEPLOYMENT_SPEC,
        },
    ).check_returncode()
    set_status(
        cluster,
        namespace,
        "finetunejobs",
        "t5",
        {"phase": "Running", "progress": {"percent": 40.0, "loss": 2.5, "step": 4, "totalSteps": 10}},
    )
    result = floe("status", "-n", namespace, kubeconfig=cluster.kubeconfig)
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:3]): line.split() for line in result.stdout.splitlines()[1:]}
    assert rows[("ftj", namespace, "t5")][3:6] == ["Running", "40%", "loss=2.5"]
    assert ("sfd", namespace, "summarize") in rows
    empty = floe("status", "-n", f"{namespace}-nothing", kubeconfig=cluster.kubeconfig)
    assert empty.returncode == 0 and "No floe resources in namespace" in empty.stdout


KWOK_COMPLETE_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"
KWOK_COMPLETE_JITTER = "pod-complete.stage.kwok.x-k8s.io/jitter-delay"


def gpu_job(namespace: str, **pod_metadata) -> dict:
    """A FineTuneJob on a kwok GPU node, whose pod kwok runs, completes or fails as pod_metadata says."""
    spec = {**JOB_SPEC, "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"}, "backoffLimit": 0,
            "podMetadata": pod_metadata}
    metadata = {"name": "t5", "namespace": namespace}
    return {"apiVersion": "floe.dev/v1alpha1", "kind": "FineTuneJob", "metadata": metadata, "spec": spec}


def test_watch_follows_progress_until_the_job_ends(cluster, namespace, floe_operator):
    # kwok completes the pod 20 s after it runs. The watch starts before that, so its start-up on a loaded
    # machine does not race the timer; the progress is reported once it shows the job Running.
    cluster.apply(gpu_job(namespace, annotations={KWOK_COMPLETE_DELAY: "20s", KWOK_COMPLETE_JITTER: "20s"}))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "floe_operator.cli", "watch", "ftj/t5", "-n", namespace,
         "--kubeconfig", str(cluster.kubeconfig), "--width", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines: list[str] = []
    shown_running, shown_progress = threading.Event(), threading.Event()

    def read() -> None:
        for line in watcher.stdout:
            lines.append(line.rstrip())
            if line.startswith("Running"):
                shown_running.set()
            if "step 5/10" in line:
                shown_progress.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert shown_running.wait(60), f"watch did not show the job running: {lines}"
    set_status(cluster, namespace, "finetunejobs", "t5",
               {"progress": {"step": 5, "totalSteps": 10, "percent": 50.0, "loss": 1.25, "etaSeconds": 75}})
    assert shown_progress.wait(30), f"watch did not show the progress: {lines}"
    assert watcher.wait(90) == 0, watcher.stderr.read()
    reader.join(5)
    assert any("[#####.....]" in line and "eta 1m15s" in line and "loss 1.25" in line for line in lines), lines
    assert lines[-1].startswith("Succeeded") and "100.0%" in lines[-1]


def test_watch_of_a_failed_job_exits_non_zero_with_the_reason(cluster, namespace, floe_operator):
    cluster.apply(gpu_job(
        namespace,
        labels={"pod-container-running-failed.stage.kwok.x-k8s.io": "true"},
        annotations={"pod-container-running-failed.stage.kwok.x-k8s.io/message": "dataset column ctext missing"},
    )).check_returncode()
    result = floe("watch", "ftj/t5", "-n", namespace, kubeconfig=cluster.kubeconfig, timeout=120)
    assert result.returncode == 1
    assert "t5 failed" in result.stderr and "dataset column ctext missing" in result.stderr


def test_watch_of_a_missing_job_says_so(cluster, namespace):
    result = floe("watch", "ftj/nope", "-n", namespace, kubeconfig=cluster.kubeconfig)
    assert result.returncode == 1 and "not found" in result.stderr.lower()


def account_kubeconfig(cluster, namespace: str, account: str, path):
    cluster.kubectl("create", "serviceaccount", account, "-n", namespace, check=True)
    return cluster.service_account_kubeconfig(namespace, account, path)


def test_approve_is_for_governance_officers_only(cluster, namespace, tmp_path):
    # The persona roles and the approval policy, as the chart installs them.
    personas = [
        o
        for o in helm_template()
        if o["kind"]
        in ("ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        and o["metadata"]["name"] not in ("floe-operator", "floe-catalog-names")  # the catalog's is another test's
    ]
    cluster.apply(*personas).check_returncode()
    cluster.apply(
        {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "SnowflakeDeployment",
            "metadata": {"name": "summarize", "namespace": namespace},
            "spec": DEPLOYMENT_SPEC,
        }
    ).check_returncode()
    officer = account_kubeconfig(cluster, namespace, "officer", tmp_path / "officer")
    engineer = account_kubeconfig(cluster, namespace, "engineer", tmp_path / "engineer")
    for account, role in (("officer", "floe-governance-officer"), ("engineer", "floe-ml-engineer")):
        cluster.kubectl(
            "create",
            "rolebinding",
            account,
            "-n",
            namespace,
            f"--clusterrole={role}",
            f"--serviceaccount={namespace}:{account}",
            check=True,
        )

    # The policy takes effect once the API server has loaded it: wait on a dry run being refused.
    def policy_refuses() -> bool:
        dry_run = cluster.kubectl(
            "patch",
            "sfd",
            "summarize",
            "-n",
            namespace,
            "--type=merge",
            "--dry-run=server",
            "-p",
            json.dumps({"spec": {"approval": {"approved": True, "approvedBy": "x", "modelDigest": DIGEST,
                                              "target": "NEWS.PUBLIC.SUMMARIZE"}}}),
            as_user=f"system:serviceaccount:{namespace}:engineer",
        )
        return dry_run.returncode != 0 and "ValidatingAdmissionPolicy" in dry_run.stderr

    cluster.wait_for(policy_refuses, timeout=30, what="the approval policy to be in force")
    refused = floe("approve", "sfd/summarize", "--digest", DIGEST, kubeconfig=engineer)
    assert refused.returncode == 1
    assert "governance officer" in refused.stderr and "ValidatingAdmissionPolicy" in refused.stderr
    assert f"system:serviceaccount:{namespace}:engineer" in refused.stderr
    approval = cluster.get("sfd", "summarize", "-n", namespace)["spec"].get("approval", {})
    assert not approval.get("approved")

    result = floe("approve", "sfd/summarize", "--digest", DIGEST, "--comment", "ROUGE checked", kubeconfig=officer)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f"sfd/summarize approved by system:serviceaccount:{namespace}:officer: "
                                     f"{DIGEST} for NEWS.PUBLIC.SUMMARIZE")
    approval = cluster.get("sfd", "summarize", "-n", namespace)["spec"]["approval"]
    assert approval == {
        "approved": True,
        "approvedBy": f"system:serviceaccount:{namespace}:officer",
        "modelDigest": DIGEST,
        "target": "NEWS.PUBLIC.SUMMARIZE",
        "comment": "ROUGE checked",
    }

    # An admin acting as a governance officer, as with kubectl --as: the identity recorded is the
    # impersonated one, and the policy judges that identity, not the admin's.
    as_engineer = floe("approve", "sfd/summarize", "-n", namespace, "--as", "erin", "--as-group", "ml-engineers",
                       "--digest", DIGEST, kubeconfig=cluster.kubeconfig)
    assert as_engineer.returncode == 1 and "erin" in as_engineer.stderr
    as_officer = floe("approve", "sfd/summarize", "-n", namespace, "--as", "olga",
                      "--as-group", "floe:governance-officers", "--digest", DIGEST,
                      kubeconfig=cluster.kubeconfig)
    assert as_officer.returncode == 0, as_officer.stderr
    assert cluster.get("sfd", "summarize", "-n", namespace)["spec"]["approval"]["approvedBy"] == "olga"
