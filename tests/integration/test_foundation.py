"""The foundation on a real control plane: CRDs, admission, Project and FineTuneJob reconciliation,
garbage collection and adoption after an operator restart."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid

import pytest

API = "floe.dev/v1alpha1"
# kwok's chaos and delay stages read these from the pod (see dev/build.sh).
KWOK_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
KWOK_FAIL_MESSAGE = "pod-container-running-failed.stage.kwok.x-k8s.io/message"
KWOK_COMPLETE_DELAY = "pod-complete.stage.kwok.x-k8s.io/delay"


def finetunejob(name: str, namespace: str, **spec) -> dict:
    base = {
        "model": {"scratch": {"shape": "tiny"}},
        "dataset": {"file": {"path": "/data/news.csv"}},
        "resources": {"gpus": 1, "cpu": "1", "memory": "1Gi"},
    }
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {**base, **spec}}


def phase(cluster, kind: str, name: str, namespace: str | None = None) -> str | None:
    args = [kind, name] + (["-n", namespace] if namespace else [])
    return ((cluster.get(*args) or {}).get("status") or {}).get("phase")


@pytest.fixture(scope="module")
def project(cluster, floe_operator):
    name = f"found-{uuid.uuid4().hex[:6]}"
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": name},
                   "spec": {"quota": {"gpus": 16, "cpu": "64", "memory": "256Gi"}}}).check_returncode()
    cluster.wait_for(lambda: phase(cluster, "project", name) == "Ready", 90, f"Project {name} Ready")
    yield name
    cluster.kubectl("delete", "project", name, "--wait=false")


def test_crds_are_served_with_descriptions_short_names_and_category(cluster):
    explain = cluster.kubectl("explain", "finetunejobs.spec.resources.gpus", check=True).stdout
    assert "GPUs per worker" in explain and "defaults to 1" in explain
    # kubectl explain shows no schema defaults: the descriptions state them.
    for field, default in (("gpus", "4"), ("cpu", "32"), ("memory", "128Gi")):
        quota = cluster.kubectl("explain", f"projects.spec.quota.{field}", check=True).stdout
        assert f"defaults to {default}." in " ".join(quota.split()), quota
    for short in ("proj", "ws", "ftj", "sfd"):
        assert cluster.kubectl("get", short, "-A").returncode == 0, short
    assert cluster.kubectl("get", "floe", "-A").returncode == 0


VALID_FTJ = finetunejob("bad", "default")


def mutated(path: str, value, base: dict = VALID_FTJ) -> dict:
    obj = copy.deepcopy(base)
    node = obj
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return obj


VALID_SFD = {
    "apiVersion": API, "kind": "SnowflakeDeployment", "metadata": {"name": "bad", "namespace": "default"},
    "spec": {"source": {"fineTuneJobRef": {"name": "t5"}},
             "snowflake": {"database": "ML", "schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"}},
}
VALID_PROJECT = {"apiVersion": API, "kind": "Project", "metadata": {"name": "bad-project"}, "spec": {}}
VALID_WORKSPACE = {"apiVersion": API, "kind": "Workspace", "metadata": {"name": "bad", "namespace": "default"},
                   "spec": {}}

INVALID = {
    "two model sources": (mutated("spec.model", {"scratch": {"shape": "tiny"}, "hub": {"id": "t5-small"}}),
                          "spec.model"),
    "no model source": (mutated("spec.model", {}), "spec.model"),
    "no dataset source": (mutated("spec.dataset", {"textColumn": "ctext"}), "spec.dataset"),
    "file path and uri": (mutated("spec.dataset.file", {"path": "a.csv", "uri": "s3://b/a.csv"}), "spec.dataset.file"),
    "no workers": (mutated("spec.resources.workers", 0), "spec.resources.workers"),
    "negative gpus": (mutated("spec.resources.gpus", -1), "spec.resources.gpus"),
    "validation fraction 1": (mutated("spec.dataset.validationFraction", 1), "spec.dataset.validationFraction"),
    "zero epochs": (mutated("spec.training.epochs", 0), "spec.training.epochs"),
    "unknown precision": (mutated("spec.training.precision", "fp8"), "spec.training.precision"),
    "batch size a word": (mutated("spec.training.batchSize", "max"), "spec.training.batchSize"),
    "batch size zero": (mutated("spec.training.batchSize", 0), "spec.training.batchSize"),
    "two ways to accumulate": (mutated("spec.training", {"gradientAccumulationSteps": 2, "effectiveBatchSize": 64}),
                               "spec.training"),
    "cpu not a quantity": (mutated("spec.resources.cpu", "four"), "spec.resources.cpu"),
    "SQL in a table name": (mutated("spec.dataset", {"snowflake": {"table": "news; DROP TABLE x"}}),
                            "spec.dataset.snowflake.table"),
    "unknown scratch shape": (mutated("spec.model", {"scratch": {"shape": "t5-xxl"}}), "spec.model.scratch.shape"),
    "deployment with two sources": (
        mutated("spec.source", {"fineTuneJobRef": {"name": "t5"}, "modelUri": "pvc://m/model"}, VALID_SFD),
        "spec.source"),
    # Required by the deployer, so required at admission: it used to fail only after training and approval.
    "deployment without a database": (
        mutated("spec.snowflake", {"schema": "PUBLIC", "stage": "MODELS", "functionName": "SUMMARIZE"}, VALID_SFD),
        "spec.snowflake.database"),
    "deployment without a stage": (
        mutated("spec.snowflake", {"database": "ML", "schema": "PUBLIC", "functionName": "SUMMARIZE"}, VALID_SFD),
        "spec.snowflake.stage"),
    "deployment without a function name": (
        mutated("spec.snowflake", {"database": "ML", "schema": "PUBLIC", "stage": "MODELS"}, VALID_SFD),
        "spec.snowflake.functionName"),
    "function name injection": (mutated("spec.snowflake.functionName", 'x"; DROP TABLE y; --', VALID_SFD),
                                "spec.snowflake.functionName"),
    # Deleting a Project deletes its namespace: a system namespace, floe's own included, is never a Project's.
    "project named floe-system": (mutated("metadata.name", "floe-system", VALID_PROJECT), "metadata.name"),
    "project named kube-system": (mutated("metadata.name", "kube-system", VALID_PROJECT), "metadata.name"),
    "project named default": (mutated("metadata.name", "default", VALID_PROJECT), "metadata.name"),
    "project member a ServiceAccount": (
        mutated("spec.members", [{"kind": "User", "name": "system:serviceaccount:team:bot", "persona": "MLEngineer"}],
                VALID_PROJECT), "spec.members[0].name"),
    "plain-http repository": (mutated("spec.repository", {"url": "http://example.com/repo.git"}, VALID_PROJECT),
                              "spec.repository.url"),
    "workspace negative size": (mutated("spec.storage", {"size": "-5Gi"}, VALID_WORKSPACE), "spec.storage.size"),
    "code outside the checkout": (mutated("spec.code", {"command": ["python", "t.py"], "workingDir": "../etc"}),
                                  "spec.code"),
    "code without a command": (mutated("spec.code", {"command": []}), "spec.code.command"),
    # Limits of the objects the operator builds, checked before anything is built.
    "job name over 50 characters": (mutated("metadata.name", "j" * 51), "metadata.name"),
    "job label key with a space": (mutated("spec.podMetadata", {"labels": {"cost center": "ml"}}),
                                   "spec.podMetadata.labels"),
    "job label key prefix over 253 characters": (
        mutated("spec.podMetadata", {"labels": {"a" * 254 + "/team": "ml"}}), "spec.podMetadata.labels"),
    "job label value over 63 characters": (mutated("spec.podMetadata", {"labels": {"team": "x" * 64}}),
                                           "spec.podMetadata.labels.team"),
    "job label value with a space": (mutated("spec.podMetadata", {"labels": {"team": "ml ops"}}),
                                     "spec.podMetadata.labels.team"),
    "job annotation key with two slashes": (mutated("spec.podMetadata", {"annotations": {"a/b/c": "x"}}),
                                            "spec.podMetadata.annotations"),
    "job annotations over 191 KiB": (
        mutated("spec.podMetadata", {"annotations": {f"note-{i}": "x" * 65536 for i in range(4)}}),
        "spec.podMetadata.annotations"),
    # The trainer's config, with the query, travels in the pods' annotations (256 KiB in all).
    "job annotations and query over the pods' annotations": (
        mutated("spec", {**VALID_FTJ["spec"], "dataset": {"snowflake": {"query": "SELECT " + "x" * 30000}},
                         "podMetadata": {"annotations": {"note": "x" * 150000}}}),
        "spec.podMetadata.annotations: Invalid value"),
    "query with a control character": (mutated("spec.dataset", {"snowflake": {"query": "SELECT \x01 FROM news"}}),
                                       "spec.dataset.snowflake.query"),
    "ttlSecondsAfterFinished over int32": (mutated("spec.ttlSecondsAfterFinished", 2**31),
                                           "spec.ttlSecondsAfterFinished"),
    "gpu product no node label can hold": (mutated("spec.resources.gpuProduct", "NVIDIA H100"),
                                           "spec.resources.gpuProduct"),
    # only a pod's validation checks it, so the Job's pods would never be created
    "image with a trailing space": (mutated("spec.image", "ghcr.io/floe-dev/floe-trainer:0.1.0 "), "spec.image"),
    "workspace image with a space": (mutated("spec.image", "jupyter lab", VALID_WORKSPACE), "spec.image"),
    "workspace name over 52 characters": (mutated("metadata.name", "w" * 53, VALID_WORKSPACE), "metadata.name"),
    "workspace name starting with a digit": (mutated("metadata.name", "1-lab", VALID_WORKSPACE), "metadata.name"),
    "workspace size zero": (mutated("spec.storage", {"size": 0}, VALID_WORKSPACE), "spec.storage.size"),
    "deployment name over 56 characters": (mutated("metadata.name", "d" * 57, VALID_SFD), "metadata.name"),
    "function name too long for its staging name": (mutated("spec.snowflake.functionName", "F" * 229, VALID_SFD),
                                                    "spec.snowflake.functionName"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_specs_are_rejected_naming_the_field(cluster, case):
    obj, field = INVALID[case]
    result = cluster.kubectl("create", "-f", "-", input=json.dumps(obj))
    assert result.returncode != 0, f"{case}: accepted"
    assert field in result.stderr, f"{case}: {result.stderr}"
    kind = obj["kind"].lower()
    ns = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
    assert cluster.kubectl("get", kind, obj["metadata"]["name"], *ns).returncode != 0, "nothing is created"


# What the operator cannot apply to the Job it has created: each change is refused at admission, naming the field
# (an unset field being set too).
IMMUTABLE = {
    "spec.training": {"training": {"epochs": 9}},
    "spec.image": {"image": "registry.example.com/trainer:2"},
    "spec.storage": {"storage": {"claimName": "models"}},
    "spec.backoffLimit": {"backoffLimit": 0},
    "spec.code": {"code": {"command": ["python", "train.py"]}},
    "spec.podMetadata": {"podMetadata": {"labels": {"team": "ml"}}},
    "spec.ttlSecondsAfterFinished": {"ttlSecondsAfterFinished": 60},
}


def test_started_job_spec_is_immutable_but_suspend_is_not(cluster, project):
    cluster.apply(finetunejob("immutable", project, suspend=True)).check_returncode()
    for field, change in IMMUTABLE.items():
        patch = cluster.kubectl("patch", "ftj", "immutable", "-n", project, "--type=merge",
                                "-p", json.dumps({"spec": change}))
        assert patch.returncode != 0 and f"{field} is immutable" in patch.stderr, (field, patch.stderr)
    resume = cluster.kubectl("patch", "ftj", "immutable", "-n", project, "--type=merge",
                             "-p", '{"spec": {"suspend": false}}')
    assert resume.returncode == 0, resume.stderr
    assert cluster.get("ftj", "immutable", "-n", project)["spec"]["training"].get("epochs", 3) == 3


def test_project_yields_its_namespace_objects_and_enforces_restricted_pods(cluster, project):
    ns = cluster.get("namespace", project)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = cluster.get("resourcequota", "-n", project)["items"][0]
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "16"
    assert cluster.get("limitrange", "-n", project)["items"], "a LimitRange"
    assert cluster.get("serviceaccount", "floe-trainer", "-n", project)
    status = cluster.get("project", project)["status"]
    assert status["namespace"] == project
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])

    privileged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root", "namespace": project},
                  "spec": {"containers": [{"name": "c", "image": "busybox",
                                           "securityContext": {"privileged": True}}]}}
    result = cluster.apply(privileged)
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr


def test_finetunejob_runs_on_a_gpu_node_and_succeeds(cluster, project):
    cluster.apply(finetunejob("gpu-ok", project)).check_returncode()
    cluster.wait_for(lambda: phase(cluster, "ftj", "gpu-ok", project) == "Succeeded", 120, "gpu-ok Succeeded")
    job = cluster.get("job", "gpu-ok-train", "-n", project)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("FineTuneJob", "gpu-ok", True)
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    pods = cluster.get("pods", "-n", project, "-l", "floe.dev/finetunejob=gpu-ok")["items"]
    assert pods and all(p["spec"]["nodeName"].startswith("gpu-node-") for p in pods)

    status = cluster.get("ftj", "gpu-ok", "-n", project)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == status["observedGeneration"]
    events = cluster.kubectl("get", "events", "-n", project, "--field-selector",
                             "involvedObject.kind=FineTuneJob,involvedObject.name=gpu-ok",
                             "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "Running" in events and "Succeeded" in events


def test_failing_pod_fails_the_job_with_the_pods_message(cluster, project):
    ftj = finetunejob("gpu-oom", project, backoffLimit=0, podMetadata={
        "labels": {KWOK_FAIL_LABEL: "true"}, "annotations": {KWOK_FAIL_MESSAGE: "CUDA out of memory"}})
    cluster.apply(ftj).check_returncode()
    cluster.wait_for(lambda: phase(cluster, "ftj", "gpu-oom", project) == "Failed", 120, "gpu-oom Failed")
    status = cluster.get("ftj", "gpu-oom", "-n", project)["status"]
    assert "CUDA out of memory" in status["message"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "CUDA out of memory" in ready["message"]


def test_real_trainer_failure_reaches_the_status(cluster, project):
    """A CPU job runs the real trainer on the local runner node; its termination message is the status."""
    ftj = finetunejob("cpu-missing-data", project, backoffLimit=0,
                      dataset={"file": {"path": "/var/run/floe/data/missing.csv"}},
                      resources={"gpus": 0, "cpu": "1", "memory": "2Gi"})
    cluster.apply(ftj).check_returncode()
    cluster.wait_for(lambda: phase(cluster, "ftj", "cpu-missing-data", project) == "Failed", 180,
                     "cpu-missing-data Failed")
    pod = cluster.get("pods", "-n", project, "-l", "floe.dev/finetunejob=cpu-missing-data")["items"][0]
    assert pod["spec"]["nodeName"] == "local-runner"
    status = cluster.get("ftj", "cpu-missing-data", "-n", project)["status"]
    assert "missing.csv" in status["message"]
    # the reason is the trainer's, from the pod's termination message
    assert next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "DataError"

    # Its logs come through the API server, as from a kubelet: kubectl logs and floe logs.
    logs = cluster.kubectl("logs", "-n", project, pod["metadata"]["name"], check=True).stdout
    assert "missing.csv" in logs
    floe_logs = subprocess.run(
        [sys.executable, "-m", "floe_operator.cli", "logs", "ftj/cpu-missing-data", "-n", project,
         f"--kubeconfig={cluster.kubeconfig}"], capture_output=True, text=True, timeout=60)
    assert floe_logs.returncode == 0 and "missing.csv" in floe_logs.stdout, floe_logs.stderr


def test_deleting_the_finetunejob_collects_its_job_and_pods(cluster, project):
    cluster.apply(finetunejob("gc", project, podMetadata={"annotations": {KWOK_COMPLETE_DELAY: "600s"}}))
    cluster.wait_for(lambda: phase(cluster, "ftj", "gc", project) == "Running", 120, "gc Running")
    cluster.kubectl("delete", "ftj", "gc", "-n", project, check=True)
    cluster.wait_for(lambda: cluster.kubectl("get", "job", "gc-train", "-n", project).returncode != 0, 60,
                     "the Job to be garbage-collected")
    cluster.wait_for(
        lambda: not cluster.get("pods", "-n", project, "-l", "floe.dev/finetunejob=gc")["items"], 60,
        "the pods to be garbage-collected",
    )


def test_restarted_operator_adopts_the_running_job(cluster, project, floe_operator):
    cluster.apply(finetunejob("adopt", project, podMetadata={"annotations": {KWOK_COMPLETE_DELAY: "25s"}}))
    cluster.wait_for(lambda: phase(cluster, "ftj", "adopt", project) == "Running", 120, "adopt Running")
    uid = cluster.get("job", "adopt-train", "-n", project)["metadata"]["uid"]
    floe_operator.kill()
    floe_operator.start()
    cluster.wait_for(lambda: phase(cluster, "ftj", "adopt", project) == "Succeeded", 180, "adopt Succeeded")
    jobs = cluster.get("jobs", "-n", project, "-l", "floe.dev/finetunejob=adopt")["items"]
    assert [j["metadata"]["uid"] for j in jobs] == [uid], "the same Job, no duplicate"


def test_finetunejob_takes_its_image_and_resources_from_the_catalog(cluster, project):
    # Suspended: only the Job's pod template matters here, no pod needs to run.
    cluster.apply(finetunejob("catalog", project, template="pytorch", computeProfile="cpu", suspend=True))
    cluster.wait_for(lambda: cluster.get("job", "catalog-train", "-n", project), 60, "the catalog Job")
    pod = cluster.get("job", "catalog-train", "-n", project)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # the built-in catalog's cpu profile, not spec.resources (1 GPU, 1 CPU, 1Gi)
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert container["image"] == "ghcr.io/floe-dev/floe-trainer:0.1.0"  # the pytorch template's trainerImage


def test_finetunejob_with_an_unknown_profile_fails_with_the_valid_names(cluster, project):
    # The operator's own check, for names the catalog dropped after admission: no catalog policy in front of it.
    cluster.kubectl("delete", "validatingadmissionpolicybinding", "floe-catalog-names", "--ignore-not-found")
    cluster.wait_for(lambda: cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(
        finetunejob("no-profile", project, computeProfile="tpu"))).returncode == 0, 30, "no catalog policy")
    cluster.apply(finetunejob("no-profile", project, computeProfile="tpu")).check_returncode()
    cluster.wait_for(lambda: phase(cluster, "ftj", "no-profile", project) == "Failed", 60, "no-profile Failed")
    status = cluster.get("ftj", "no-profile", "-n", project)["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert status["observedGeneration"] == 1  # GitOps tools see the operator has judged this spec
    assert status["message"] == "spec.computeProfile: unknown compute profile 'tpu'; valid: cpu, gpu, memory-optimized"
    assert cluster.get("job", "no-profile-train", "-n", project) is None


# Specs that admission accepts but the API server refuses in the trainer objects the operator builds from them
# (case: spec fields, words of the server's message). Each ends Failed with reason InvalidSpec, the server's
# message and an Event, at once instead of a retry every minute. What Kubernetes itself would refuse is refused
# at admission (INVALID); what is left is the cluster's own policies, such as this one.
REFUSE_LABEL = "policy.example.com/refuse"
REFUSED_CHILDREN = {
    "a cluster policy refuses the trainer Job": ({"podMetadata": {"labels": {REFUSE_LABEL: "yes"}}},
                                                 "this cluster refuses Jobs labelled policy.example.com/refuse"),
}


@pytest.fixture
def refusing_policy(cluster, project):
    """A ValidatingAdmissionPolicy of the cluster's, in the project's namespace only: Jobs whose pods carry
    REFUSE_LABEL are refused (422)."""
    name = f"refuse-{project}"
    cluster.apply(
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                          "operations": ["CREATE"], "resources": ["jobs"]}]},
                  "validations": [{"expression": "!has(object.spec.template.metadata.labels) || "
                                                 f"!('{REFUSE_LABEL}' in object.spec.template.metadata.labels)",
                                   "message": f"this cluster refuses Jobs labelled {REFUSE_LABEL}"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": project}}}}},
    ).check_returncode()
    probe = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe", "namespace": project},
             "spec": {"template": {"metadata": {"labels": {REFUSE_LABEL: "yes"}},
                                   "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}
    cluster.wait_for(lambda: cluster.kubectl("create", "--dry-run=server", "-f", "-",
                                             input=json.dumps(probe)).returncode != 0, 30, "the policy to refuse Jobs")
    yield
    cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name)


def test_specs_the_api_server_refuses_fail_with_its_message_and_an_event(cluster, project, refusing_policy):
    names = {case: f"refused-{i}" for i, case in enumerate(sorted(REFUSED_CHILDREN))}
    cluster.apply(*(finetunejob(names[case], project, **fields) for case, (fields, _) in REFUSED_CHILDREN.items()))
    for case, (_, words) in REFUSED_CHILDREN.items():
        name = names[case]
        cluster.wait_for(lambda n=name: phase(cluster, "ftj", n, project) == "Failed", 30, f"{case}: Failed")
        status = cluster.get("ftj", name, "-n", project)["status"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec"), case
        assert words in status["message"] and "refused the trainer" in status["message"], (case, status["message"])
        events = cluster.kubectl("get", "events", "-n", project, "--field-selector",
                                 f"involvedObject.kind=FineTuneJob,involvedObject.name={name},type=Warning",
                                 "-o", "jsonpath={.items[*].message}").stdout
        assert words in events, (case, events)


def test_pods_no_node_can_take_are_reported_unschedulable_with_the_schedulers_words(cluster, project):
    """A trainer pod asking for a GPU model no node has, a deploy pod whose model claim does not exist: the
    scheduler's verdict reaches the status (Ready False, reason Unschedulable) instead of a silent Pending."""
    resources = {"gpus": 1, "cpu": "1", "memory": "1Gi", "gpuProduct": "NVIDIA-NO-SUCH-GPU"}
    deployment = mutated("metadata.namespace", project, mutated("metadata.name", "no-claim", VALID_SFD))
    deployment["spec"].update(
        source={"modelUri": "pvc://no-such-claim/model"},
        approval={"approved": True, "approvedBy": cluster.username(), "modelDigest": "sha256:" + "1" * 64,
                  "target": "ML.PUBLIC.SUMMARIZE"})
    deployment["spec"]["snowflake"]["mode"] = "local"
    cluster.apply(finetunejob("no-gpu-model", project, resources=resources), deployment).check_returncode()
    for kind, name, words in (("ftj", "no-gpu-model", "didn't match Pod's node affinity/selector"),
                              ("sfd", "no-claim", 'persistentvolumeclaim "no-such-claim" not found')):
        def unschedulable(kind=kind, name=name):
            status = (cluster.get(kind, name, "-n", project) or {}).get("status") or {}
            ready = next((c for c in status.get("conditions") or () if c["type"] == "Ready"), {})
            return ready.get("reason") == "Unschedulable" and (status, ready)

        status, ready = cluster.wait_for(unschedulable, 90, f"{kind} {name} to be Unschedulable")
        assert ready["status"] == "False" and words in ready["message"] and words in status["message"], status
        assert status["phase"] == ("Pending" if kind == "ftj" else "Deploying")
    # No deployer ever ran, so nothing is dropped: the deployment goes at once (its drop Job would wait for
    # the same missing claim, and so would the deletion of its Project).
    cluster.kubectl("delete", "ftj/no-gpu-model", "sfd/no-claim", "-n", project, "--wait=false")
    cluster.wait_for(lambda: cluster.get("sfd", "no-claim", "-n", project) is None, 60, "sfd no-claim to go")
    assert cluster.get("job", "no-claim-drop", "-n", project) is None


def test_finetunejob_runs_code_from_the_project_repository(cluster, project):
    code = {"command": ["python", "train.py"], "workingDir": "t5"}
    cluster.apply(finetunejob("from-repo", project, code=code, suspend=True)).check_returncode()
    # The Project has no repository yet: the job waits, saying why.
    cluster.wait_for(
        lambda: (cluster.get("ftj", "from-repo", "-n", project) or {}).get("status", {}).get("message", "").endswith(
            "has no spec.repository"),
        60, "from-repo to wait for the repository")
    assert phase(cluster, "ftj", "from-repo", project) == "Pending"
    assert cluster.get("job", "from-repo-train", "-n", project) is None
    events = cluster.get("events", "-n", project, "--field-selector",
                         "involvedObject.name=from-repo,reason=MissingRepository")["items"]
    assert [e["type"] for e in events] == ["Warning"]  # once, though the job is retried until it has one

    repository = {"url": "https://git.example.com/team/models.git", "branch": "main"}
    cluster.kubectl("patch", "project", project, "--type=merge", "-p",
                    json.dumps({"spec": {"repository": repository}}), check=True)
    cluster.wait_for(lambda: cluster.get("job", "from-repo-train", "-n", project), 90, "the from-repo Job")
    pod = cluster.get("job", "from-repo-train", "-n", project)["spec"]["template"]["spec"]
    (clone,) = pod["initContainers"]
    assert {e["name"]: e["value"] for e in clone["env"]}["FLOE_REPO_URL"] == repository["url"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "train.py"]
    assert container["workingDir"] == "/var/run/floe/code/models/t5"


def test_deleting_a_project_deletes_its_namespace_and_what_is_in_it(cluster, floe_operator):
    name = f"gone-{uuid.uuid4().hex[:6]}"
    # A namespace that exists first, and that an admin lets the Project adopt, goes with the Project all the same.
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": name, "annotations": {"floe.dev/adopt": "true"}}}).check_returncode()
    cluster.apply({"apiVersion": API, "kind": "Project", "metadata": {"name": name}, "spec": {}}).check_returncode()
    cluster.wait_for(lambda: phase(cluster, "project", name) == "Ready", 90, f"Project {name} Ready")
    owners = cluster.get("namespace", name)["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"]) for o in owners] == [("Project", name)]
    cluster.apply(finetunejob("doomed", name, suspend=True)).check_returncode()
    cluster.wait_for(lambda: cluster.get("job", "doomed-train", "-n", name), 60, "the doomed Job")

    cluster.kubectl("delete", "project", name, check=True)
    cluster.wait_for(lambda: cluster.get("namespace", name) is None, 120, f"namespace {name} to go")
    assert cluster.kubectl("get", "ftj", "doomed", "-n", name).returncode != 0


def test_operator_logs_are_json_lines_naming_the_object(cluster, project, floe_operator):
    # Every line is one JSON object, so a log pipeline indexes it without parsing free text.
    lines = [line for line in floe_operator.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert records and all({"message", "timestamp", "severity"} <= r.keys() for r in records)
    about_project = [r for r in records if (r.get("object") or {}).get("name") == project]
    assert about_project and about_project[0]["object"]["kind"] == "Project"


def test_trainer_accounts_inherit_what_the_project_account_is_given(cluster, project):
    role = "arn:aws:iam::123456789012:role/news-data"
    cluster.kubectl("annotate", "serviceaccount", "floe-trainer", "-n", project, f"eks.amazonaws.com/role-arn={role}",
                    check=True)
    cluster.kubectl("patch", "serviceaccount", "floe-trainer", "-n", project, "--type=merge", "-p",
                    json.dumps({"imagePullSecrets": [{"name": "regcred"}]}), check=True)
    cluster.apply(finetunejob("identity", project, suspend=True)).check_returncode()
    cluster.wait_for(lambda: cluster.get("serviceaccount", "identity-train", "-n", project), 60, "the job's account")
    account = cluster.get("serviceaccount", "identity-train", "-n", project)
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == role
    assert account["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.fixture(scope="module")
def reporting_job(cluster, project, tmp_path_factory):
    """A running FineTuneJob whose trainer (its own ServiceAccount's token) has reported progress."""
    from floe_trainer.progress import StatusPatcher
    from kubernetes import config

    cluster.apply(finetunejob("writers", project, podMetadata={"annotations": {KWOK_COMPLETE_DELAY: "600s"}}))
    cluster.wait_for(lambda: phase(cluster, "ftj", "writers", project) == "Running", 120, "writers Running")
    account = cluster.get("job", "writers-train", "-n", project)["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = cluster.service_account_kubeconfig(project, account, tmp_path_factory.mktemp("trainer") / "config")
    trainer = StatusPatcher(config.new_client_from_config(str(kubeconfig)), project, "writers", min_interval_s=0)
    assert trainer.patch({"status": {"progress": {"phase": "training", "step": 5, "totalSteps": 40}}})
    yield trainer
    cluster.kubectl("delete", "ftj", "writers", "-n", project, "--wait=false")


def managed_fields(cluster, kind: str, name: str, namespace: str) -> dict[tuple[str, str, str], dict]:
    """The object's writers: (manager, operation, subresource) -> the fields they own."""
    from kubernetes import dynamic

    api = dynamic.DynamicClient(cluster.api()).resources.get(api_version=API if kind == "FineTuneJob" else "batch/v1",
                                                             kind=kind)
    entries = api.get(name=name, namespace=namespace).to_dict()["metadata"]["managedFields"]
    return {(e["manager"], e["operation"], e.get("subresource", "")): e["fieldsV1"] for e in entries}


def test_each_writer_applies_under_its_own_field_manager(cluster, project, reporting_job):
    """The operator applies the Job and the status it observes, the trainer only status.progress: who wrote
    what is in managedFields, and the API server merges their writes."""
    job = managed_fields(cluster, "Job", "writers-train", project)
    assert {"f:template", "f:backoffLimit"} <= set(job[("floe-operator", "Apply", "")]["f:spec"])
    assert "f:ownerReferences" in job[("floe-operator", "Apply", "")]["f:metadata"]

    ftj = managed_fields(cluster, "FineTuneJob", "writers", project)
    operator = ftj[("floe-operator", "Apply", "status")]["f:status"]
    assert {"f:phase", "f:message", "f:observedGeneration"} <= set(operator) and "f:progress" not in operator
    assert {'k:{"type":"Ready"}', 'k:{"type":"Running"}'} <= set(operator["f:conditions"])
    trainer = ftj[("floe-trainer", "Apply", "status")]
    assert set(trainer) == {"f:status"} and set(trainer["f:status"]) == {"f:progress"}
    assert {"f:phase", "f:step", "f:totalSteps"} <= set(trainer["f:status"]["f:progress"])


def test_operator_conditions_and_trainer_progress_do_not_overwrite_each_other(cluster, project, reporting_job):
    cluster.kubectl("patch", "ftj", "writers", "-n", project, "--type=merge", "-p", '{"spec": {"suspend": true}}',
                    check=True)
    cluster.wait_for(lambda: phase(cluster, "ftj", "writers", project) == "Suspended", 60, "writers Suspended")
    status = cluster.get("ftj", "writers", "-n", project)["status"]
    assert status["progress"] == {"phase": "training", "step": 5, "totalSteps": 40}  # the operator's write kept it
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert reporting_job.patch({"status": {"progress": {"step": 6}}})
    after = cluster.get("ftj", "writers", "-n", project)["status"]
    assert after["progress"] == {"phase": "training", "step": 6, "totalSteps": 40}
    assert after["conditions"] == status["conditions"] and after["phase"] == "Suspended"
    assert (ready["reason"], ready["status"]) == ("Suspended", "False")
    # The Job's suspend flag is the one field its own writer took over.
    job = managed_fields(cluster, "Job", "writers-train", project)
    assert set(job[("floe-operator-suspend", "Apply", "")]["f:spec"]) == {"f:suspend"}
    assert "f:suspend" not in job[("floe-operator", "Apply", "")]["f:spec"]
