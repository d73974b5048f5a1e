"""FineTuneJob builders: the objects the operator creates, and the status it derives from Job and pods."""

import json

import pytest
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.project import Repository
from floe_operator.builders import finetunejob as b
from floe_operator.builders.common import APP_NAME_LABEL
from floe_operator.catalog import DEFAULT_CATALOG
from floe_operator.handlers import trainer_workloads
from floe_trainer.config import parse_config
from floe_trainer.train import EXIT_BAD_CONFIG

UID = "0f5e-uid"


def target(**kw):
    return b.TrainerTarget(namespace="team-a", name="t5-news", uid=UID, image="registry/trainer:1", **kw)


def spec(**overrides):
    base = {"model": {"scratch": {"shape": "tiny"}}, "dataset": {"file": {"path": "/data/news.csv"}}}
    return FineTuneJobSpec.model_validate({**base, **overrides})


def pod_spec(job):
    return job["spec"]["template"]["spec"]


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_object_has_the_deterministic_name_and_a_controller_owner():
    objects = b.trainer_objects(target(), spec())
    assert [o["kind"] for o in objects] == ["ServiceAccount", "RoleBinding", "Job"]
    for obj in objects:
        assert obj["metadata"]["name"] == "t5-news-train"
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["labels"]["floe.dev/finetunejob"] == "t5-news"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "floe.dev/v1alpha1",
            "kind": "FineTuneJob",
            "name": "t5-news",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_the_trainer_account_is_bound_to_the_trainer_cluster_role():
    # No Role per job: the tenancy policy keeps each trainer to its own job's status.
    binding = b.role_binding(target())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "floe-trainer"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "t5-news-train", "namespace": "team-a"}]


def test_gpus_become_limits_with_toleration_and_node_selector():
    job = b.job(target(), spec(resources={"gpus": 2, "gpuProduct": "NVIDIA-H100-80GB-HBM3"}))
    pod = pod_spec(job)
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_cpu_only_jobs_do_not_ask_for_gpu_nodes():
    pod = pod_spec(b.job(target(), spec(resources={"gpus": 0})))
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert pod["containers"][0]["command"] == ["floe-train", "--config", "/etc/floe/job.json"]


def test_pod_passes_pod_security_restricted():
    pod = pod_spec(b.job(target(), spec()))
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/tmp", "/var/cache/floe", "/etc/floe", "/var/run/floe/output"} <= mounts
    assert not any("hostPath" in v for v in pod["volumes"])


def test_job_spec_carries_lifecycle_settings_and_the_trainer_contract():
    job = b.job(target(), spec(backoffLimit=1, activeDeadlineSeconds=3600, ttlSecondsAfterFinished=60, suspend=True))
    assert job["metadata"]["name"] == "t5-news-train"
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (1, 3600)
    assert (job["spec"]["ttlSecondsAfterFinished"], job["spec"]["suspend"]) == (60, True)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (1, 1)
    assert "completionMode" not in job["spec"]
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "t5-news-train"
    container = pod["containers"][0]
    assert container["image"] == "registry/trainer:1"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = env_of(container)
    assert (env["FLOE_JOB_NAMESPACE"], env["FLOE_JOB_NAME"]) == ("team-a", "t5-news")
    # The config travels in the pod template (no ConfigMap): the kubelet writes the annotation to job.json.
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume == {"name": "config", "downwardAPI": {"items": [
        {"path": "job.json", "fieldRef": {"fieldPath": "metadata.annotations['floe.dev/trainer-config']"}}]}}
    config = job["spec"]["template"]["metadata"]["annotations"]["floe.dev/trainer-config"]
    assert json.loads(config) == b.trainer_config(target(), spec())
    assert job["spec"]["template"]["metadata"]["labels"]["floe.dev/finetunejob"] == "t5-news"


def test_rendered_config_is_what_the_trainer_accepts():
    s = spec(
        model={"hub": {"id": "t5-small"}},
        dataset={"file": {"path": "news.csv", "claimName": "datasets"}, "maxRows": 100},
        training={"epochs": 1, "batchSize": 16, "precision": "bf16"},
    )
    data = json.loads(b.job(target(), s)["spec"]["template"]["metadata"]["annotations"]["floe.dev/trainer-config"])
    assert data == {
        "version": "v1",
        "job": {"namespace": "team-a", "name": "t5-news"},
        "model": {"hub": {"id": "t5-small"}},
        "dataset": {
            "file": {"path": "news.csv", "claimName": "datasets"},
            "textColumn": "ctext",
            "summaryColumn": "text",
            "validationFraction": 0.1,
            "seed": 42,
            "maxRows": 100,
        },
        "training": {
            "epochs": 1,
            "batchSize": 16,
            "learningRate": 1e-4,
            "warmupRatio": 0.06,
            "maxGradNorm": 1.0,
            "sourceMaxLength": 512,
            "targetMaxLength": 150,
            "precision": "bf16",
            "compile": "auto",
            "seed": 42,
        },
        "evaluation": {"rouge": True, "every": {}, "maxSamples": 64, "numBeams": 2, "maxNewTokens": 150,
                       "batchSize": "auto"},
        "checkpoint": {"dir": f"/var/run/floe/output/t5-news-{UID}/checkpoints", "everyMinutes": 10.0, "keep": 2},
        "output": {"dir": f"/var/run/floe/output/t5-news-{UID}/model"},
        "metricsPort": 9090,
    }
    parsed = parse_config(data)  # the trainer's own validation (extra keys forbidden)
    assert parsed.dataset.file.local_path == "/var/run/floe/data/news.csv"  # where the claim is mounted


@pytest.mark.parametrize(
    "overrides",
    [
        {"model": {"scratch": {"shape": "t5-small", "vocabSize": 4000}}},
        {"model": {"path": "/models/t5"}},
        {"dataset": {"snowflake": {"query": "SELECT * FROM NEWS"}}},
        {"dataset": {"file": {"uri": "s3://bucket/news.parquet"}}},
    ],
)
def test_every_source_renders_a_config_the_trainer_accepts(overrides):
    parse_config(b.trainer_config(target(), spec(**overrides)))


def test_data_claim_is_read_only_and_output_claim_is_used():
    s = spec(dataset={"file": {"path": "news.csv", "claimName": "datasets"}}, storage={"claimName": "models"})
    pod = pod_spec(b.job(target(), s))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "models"}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": "/var/run/floe/data", "readOnly": True}
    assert b.model_uri(s.storage.claim_name, "t5-news", UID) == f"pvc://models/t5-news-{UID}/model"


def test_without_output_claim_the_output_is_an_empty_dir():
    pod = pod_spec(b.job(target(), spec()))
    assert {"name": "output", "emptyDir": {}} in pod["volumes"]
    assert b.model_uri(spec().storage.claim_name, "t5-news", UID) == f"file:///var/run/floe/output/t5-news-{UID}/model"


def test_snowflake_connection_secret_is_mounted_read_only():
    pod = pod_spec(b.job(target(snowflake_secret="sf-conn"), spec(dataset={"snowflake": {"table": "NEWS"}})))
    assert {"name": "snowflake", "secret": {"secretName": "sf-conn", "defaultMode": 0o440}} in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "snowflake")
    assert mount == {"name": "snowflake", "mountPath": "/var/run/floe/snowflake", "readOnly": True}
    # the secret's content never reaches the config or the environment
    assert "sf-conn" not in json.dumps(pod["containers"][0]["env"])


def test_multiple_workers_make_an_indexed_job_with_a_headless_service():
    s = spec(resources={"workers": 3, "gpus": 8})
    objects = b.trainer_objects(target(), s)
    assert [o["kind"] for o in objects][-2:] == ["Service", "Job"]
    service = objects[-2]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"floe.dev/finetunejob": "t5-news"}
    job = objects[-1]
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 3)
    pod = pod_spec(job)
    assert pod["subdomain"] == "t5-news-train"
    container = pod["containers"][0]
    env = env_of(container)
    assert env["MASTER_ADDR"] == "t5-news-train-0.t5-news-train"
    assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("3", "8", "24")
    assert env["NODE_RANK"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
    }
    assert container["command"][0] == "torchrun"
    assert container["command"][-3:] == ["floe-train", "--config", "/etc/floe/job.json"]
    assert "--node-rank=$(NODE_RANK)" in container["command"]


# --- status -------------------------------------------------------------------------------------------

NOW = "2025-01-01T00:00:00Z"


def a_job(conditions=(), suspend=False, **status):
    return {
        "metadata": {
            "name": "t5-news-train",
            "ownerReferences": [b.owner_reference(b.API_VERSION, "FineTuneJob", "t5-news", UID)],
        },
        "spec": {"suspend": suspend},
        "status": {"conditions": [{"type": t, "status": "True", **extra} for t, extra in conditions], **status},
    }


def a_pod(phase, terminated=None, waiting=None, scheduled=None):
    state = {}
    if terminated is not None:
        state["terminated"] = terminated
    if waiting is not None:
        state["waiting"] = waiting
    pod = {"metadata": {"name": "t5-news-train-abcde", "annotations": {}}, "status": {"phase": phase}}
    pod["status"]["containerStatuses"] = [{"name": "trainer", "state": state}]
    if scheduled:
        reason = "Unschedulable" if "available" in scheduled else "SchedulingGated"
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": reason,
                                        "message": scheduled}]
    return pod


def observe(job, pods, status=None, s=None):
    return b.observe(b.SpecFacts.of(s or spec()), job, pods, status or {}, 1, now=NOW)


def cond(update, type_):
    return next(c for c in update["conditions"] if c["type"] == type_)


def test_no_job_yet_is_pending():
    update = observe(None, [])
    assert update["phase"] == "Pending"
    assert cond(update, "Ready")["status"] == "False"


def test_unschedulable_pod_explains_why_it_is_pending():
    update = observe(
        a_job(active=1), [a_pod("Pending", scheduled="0/4 nodes are available: Insufficient nvidia.com/gpu")]
    )
    assert update["phase"] == "Pending"
    assert update["message"] == (
        "pod t5-news-train-abcde cannot be scheduled: 0/4 nodes are available: Insufficient nvidia.com/gpu"
    )
    assert (cond(update, "Ready")["reason"], cond(update, "Reconciling")["reason"]) == ("Unschedulable",) * 2


def test_a_gated_pod_is_pending_not_unschedulable():
    update = observe(a_job(active=1), [a_pod("Pending", scheduled="waiting for the queue")])
    assert cond(update, "Ready")["reason"] == "PodsPending" and "waiting for the queue" in update["message"]


def test_a_retry_no_node_can_take_is_unschedulable():
    pods = [a_pod("Failed", terminated={"exitCode": 1}), a_pod("Pending", scheduled="0/4 nodes are available: x")]
    update = observe(a_job(active=1, failed=1), pods)
    assert (update["phase"], cond(update, "Ready")["reason"]) == ("Running", "Unschedulable")
    assert "0/4 nodes are available: x" in update["message"]


def test_the_jobs_start_alone_changes_no_status():
    """The Job controller stamps startTime as it creates the pods: the FineTuneJob waits for a running pod to
    show it, so that step costs no status write; once shown it is kept, even back in Pending (a retry)."""
    before = observe(a_job(), [])
    started = observe(a_job(active=1, startTime=NOW), [a_pod("Pending")])
    assert started == before and "startTime" not in started
    assert observe(a_job(active=1, startTime=NOW), [a_pod("Pending")], status={"startTime": NOW})["startTime"] == NOW


def test_running_pod_makes_the_job_running():
    update = observe(a_job(active=1, startTime="2025-01-01T00:00:00Z"), [a_pod("Running")])
    assert (update["phase"], update["jobName"], update["startTime"]) == ("Running", "t5-news-train", NOW)
    assert cond(update, "Running")["status"] == "True"
    assert cond(update, "Ready")["status"] == "False"
    assert (cond(update, "Reconciling")["status"], cond(update, "Stalled")["status"]) == ("True", "False")


def test_completed_job_records_model_metrics_and_digest_from_the_termination_message():
    report = {
        "outcome": "Succeeded",
        "metrics": {"evalLoss": 2.5, "rougeL": 0.31},
        "modelDigest": "sha256:abc",
        "message": "trained 3 epochs",
    }
    job = a_job([("Complete", {"lastTransitionTime": NOW})], succeeded=1, completionTime=NOW)
    update = observe(
        job,
        [a_pod("Succeeded", terminated={"exitCode": 0, "message": json.dumps(report)})],
        s=spec(storage={"claimName": "models"}),
    )
    assert update["phase"] == "Succeeded"
    assert update["metrics"] == {"evalLoss": 2.5, "rougeL": 0.31}
    assert update["modelDigest"] == "sha256:abc"
    assert update["modelUri"] == f"pvc://models/t5-news-{UID}/model"
    assert update["completionTime"] == NOW
    assert cond(update, "Ready") == {
        "type": "Ready",
        "status": "True",
        "reason": "Completed",
        "message": "trained 3 epochs",
        "observedGeneration": 1,
        "lastTransitionTime": NOW,
    }


def test_failed_job_takes_reason_and_message_from_the_pod():
    report = {"outcome": "Failed", "message": "dataset: column 'ctext' is missing", "reason": "DataError"}
    job = a_job([("Failed", {"reason": "BackoffLimitExceeded", "lastTransitionTime": NOW})])
    update = observe(
        job, [a_pod("Failed", terminated={"exitCode": 2, "reason": "Error", "message": json.dumps(report)})]
    )
    assert update["phase"] == "Failed"
    assert update["message"] == "dataset: column 'ctext' is missing"
    failed = cond(update, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "DataError")
    stalled = cond(update, "Stalled")
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", "DataError", update["message"])
    assert cond(update, "Reconciling")["status"] == "False"


@pytest.mark.parametrize("reason", [None, "not a reason", ""])
def test_failed_job_without_a_usable_reason_in_the_report_keeps_the_jobs(reason):
    report = {"outcome": "Failed", "message": "boom", "reason": reason}
    job = a_job([("Failed", {"reason": "BackoffLimitExceeded", "lastTransitionTime": NOW})])
    pod = a_pod("Failed", terminated={"exitCode": 1, "reason": "Error", "message": json.dumps(report)})
    update = observe(job, [pod])
    assert cond(update, "Failed")["reason"] == "BackoffLimitExceeded"


def test_failed_job_with_plain_text_or_oom_termination():
    job = a_job([("Failed", {"reason": "BackoffLimitExceeded"})])
    plain = observe(job, [a_pod("Failed", terminated={"exitCode": 1, "message": "Traceback ...\nValueError: boom"})])
    assert plain["message"].endswith("ValueError: boom")
    oom = observe(job, [a_pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})])
    assert cond(oom, "Failed")["reason"] == "OOMKilled"
    assert "137" in oom["message"]


def test_deadline_exceeded_without_pod_message_uses_the_job_condition():
    job = a_job(
        [("Failed", {"reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"})]
    )
    update = observe(job, [])
    assert (update["phase"], update["message"]) == ("Failed", "Job was active longer than specified deadline")


def test_suspended_job():
    assert observe(a_job(suspend=True), [])["phase"] == "Suspended"


def test_a_job_suspended_by_its_spec_is_not_reconciling_and_a_queued_one_is():
    paused = observe(a_job(suspend=True), [], s=spec(suspend=True))
    queued = observe(a_job(suspend=True), [])  # Kueue holds the Job; the FineTuneJob asked to run
    assert cond(paused, "Reconciling")["status"] == "False"
    assert cond(queued, "Reconciling")["status"] == "True"
    assert cond(paused, "Stalled")["status"] == cond(queued, "Stalled")["status"] == "False"


def test_transition_time_only_moves_when_a_condition_flips():
    first = observe(a_job(active=1), [a_pod("Running")])
    later = b.observe(b.SpecFacts.of(spec()), a_job(active=1), [a_pod("Running")], first, 1, now="2025-01-02T00:00:00Z")
    assert cond(later, "Running")["lastTransitionTime"] == NOW
    done = b.observe(b.SpecFacts.of(spec()), a_job([("Complete", {})]), [], later, 1, now="2025-01-03T00:00:00Z")
    assert cond(done, "Running")["lastTransitionTime"] == "2025-01-03T00:00:00Z"


def test_finished_pods_keep_the_job_running_until_the_job_decides():
    # kwok and the Job controller mark the pod Succeeded before the Job is Complete
    update = observe(a_job([("SuccessCriteriaMet", {})], succeeded=1), [a_pod("Succeeded")])
    assert update["phase"] == "Running"
    failing = observe(a_job([("FailureTarget", {})], failed=1), [a_pod("Failed")])
    assert failing["phase"] == "Running"


def test_a_retry_after_a_failed_pod_is_running_not_pending():
    update = observe(a_job(active=1, failed=1), [a_pod("Failed"), a_pod("Pending")])
    assert (update["phase"], update["message"]) == ("Running", "a trainer pod failed; retrying")


def test_pod_metadata_is_added_but_floe_labels_win():
    job = b.job(
        target(),
        spec(podMetadata={"labels": {"team": "news", "floe.dev/finetunejob": "spoofed"},
                          "annotations": {"sidecar.istio.io/inject": "false"}}),
    )
    template = job["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "news"
    assert template["labels"]["floe.dev/finetunejob"] == "t5-news"
    assert template["annotations"] == {"sidecar.istio.io/inject": "false",
                                       b.TRAINER_CONFIG_ANNOTATION: b.trainer_config_json(target(), spec())}


def test_kueue_queue_name_reaches_the_job_so_kueue_can_admit_it():
    labels = b.job(target(queue_name="gpu-queue"), spec())["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "kueue.x-k8s.io/queue-name" not in b.job(target(), spec())["metadata"]["labels"]


def test_a_queued_job_starts_suspended_for_kueue_to_admit():
    assert b.job(target(queue_name="gpu-queue"), spec())["spec"]["suspend"] is True
    assert b.job(target(), spec())["spec"]["suspend"] is False


def test_a_compute_profile_replaces_the_resources_and_places_the_pods():
    profile = DEFAULT_CATALOG.profile("gpu").model_copy(update={"gpus": 2, "node_selector": {"pool": "h100"}})
    job = b.job(target(profile=profile), spec(computeProfile="gpu", resources={"gpus": 0, "cpu": "1"}))
    pod = pod_spec(job)
    (container,) = pod["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "2"},
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "2"},
    }
    assert pod["nodeSelector"] == {"pool": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # two GPUs from the profile: one torchrun process per GPU, though spec.resources said none
    assert container["command"][0] == "torchrun" and env_of(container)["NPROC_PER_NODE"] == "2"


def test_a_cpu_profile_schedules_without_gpus_or_their_toleration():
    job = b.job(target(profile=DEFAULT_CATALOG.profile("cpu")), spec(computeProfile="cpu"))
    pod = pod_spec(job)
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert pod["containers"][0]["command"][0] == "floe-train"


REPOSITORY = Repository(url="https://git.example.com/team/models.git", branch="main",
                        credentialsSecretRef={"name": "git-creds"})


def test_code_from_the_repository_is_cloned_by_an_init_container_and_run_in_the_checkout():
    job = b.job(target(repository=REPOSITORY), spec(code={"command": ["python", "train.py"], "workingDir": "t5",
                                                             "branch": "experiment"}))
    pod = pod_spec(job)
    (clone,) = pod["initContainers"]
    clone_env = env_of(clone)
    assert clone_env["FLOE_REPO_URL"] == REPOSITORY.url and clone_env["FLOE_REPO_BRANCH"] == "experiment"
    assert {m["name"]: m["mountPath"] for m in clone["volumeMounts"]}["code"] == "/var/run/floe/code"
    (container,) = pod["containers"]
    assert container["command"] == ["python", "train.py"]
    assert container["workingDir"] == "/var/run/floe/code/models/t5"
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["code"] == "/var/run/floe/code"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["code"] == {"name": "code", "emptyDir": {}}
    assert volumes["git-credentials"]["secret"]["secretName"] == "git-creds"


def test_code_runs_under_torchrun_once_per_process():
    job = b.job(target(repository=REPOSITORY), spec(code={"command": ["python", "train.py"]},
                                                    resources={"gpus": 4}))
    command = pod_spec(job)["containers"][0]["command"]
    assert command[0] == "torchrun" and command[-3:] == ["--no-python", "python", "train.py"]
    assert pod_spec(job)["containers"][0]["workingDir"] == "/var/run/floe/code/models"


def test_without_code_the_pod_clones_nothing():
    pod = pod_spec(b.job(target(repository=REPOSITORY), spec()))
    assert "initContainers" not in pod and "workingDir" not in pod["containers"][0]
    assert "code" not in {v["name"] for v in pod["volumes"]}


def test_the_jobs_account_inherits_workload_identity_and_pull_secrets_from_the_projects():
    identity = {
        "metadata": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/news",
                                     "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "imagePullSecrets": [{"name": "regcred"}],
    }
    account = b.service_account(target(identity=identity))
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/news"}
    assert account["imagePullSecrets"] == [{"name": "regcred"}]
    assert account["metadata"]["name"] == "t5-news-train"
    bare = b.service_account(target())
    assert "annotations" not in bare["metadata"] and "imagePullSecrets" not in bare


def test_a_refused_config_fails_the_job_at_once_and_a_disrupted_pod_is_retried_for_free():
    policy = b.job(target(), spec())["spec"]["podFailurePolicy"]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in policy["rules"]
    fail = next(r for r in policy["rules"] if r["action"] == "FailJob")
    assert fail["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [EXIT_BAD_CONFIG]}


def test_the_operators_index_keeps_all_that_status_is_derived_from():
    # The operator follows Jobs and pods from what its watches keep (job_summary, pod_summary), not from reads.
    job = b.job(target(), spec())
    job["metadata"]["uid"] = "job-uid"
    report = {"outcome": "Succeeded", "metrics": {"rougeL": 0.3}, "modelDigest": "sha256:abc", "message": "done"}
    finished = {
        **a_pod("Succeeded", terminated={"exitCode": 0, "message": json.dumps(report)}),
        "spec": pod_spec(job),
    }
    finished["metadata"] = {"name": "t5-news-train-0-x", "labels": {"a": "b"}, "annotations": {
        b.COMPLETION_INDEX_ANNOTATION: "0", "other": "x"}}
    states = [
        ({"active": 1}, [], [a_pod("Pending", scheduled="0/4 nodes are available")]),
        ({"ready": 1, "startTime": NOW}, [], [a_pod("Running")]),
        ({"succeeded": 1, "completionTime": NOW}, [("Complete", {"lastTransitionTime": NOW})], [finished]),
        ({"failed": 1}, [("Failed", {"reason": "BackoffLimitExceeded"})],
         [a_pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})]),
    ]
    for status, conditions, pods in states:
        job["status"] = {**status, "conditions": [{"type": t, "status": "True", **c} for t, c in conditions]}
        summary = b.job_summary(job)
        assert b.controlled_by(summary, UID) and not b.controlled_by(summary, "a-namesake")
        assert observe(summary, [b.pod_summary(p) for p in pods]) == observe(job, pods)


def test_a_refused_job_recovers_once_the_pods_it_wants_exist():
    from floe_operator.builders.quota import quota_recovery

    refused = [{"type": "QuotaExceeded", "status": "True", "reason": "QuotaExceeded", "message": "over"}]
    job = b.job(target(), spec(resources={"workers": 2, "gpus": 1}))
    job["status"] = {"active": 1}
    assert b.trainer_pods_wanted_and_created(job) == (2, 1)
    assert quota_recovery(refused, *b.trainer_pods_wanted_and_created(job)) is None
    job["status"] = {"active": 2}
    assert quota_recovery(refused, *b.trainer_pods_wanted_and_created(job))["reason"] == "WithinQuota"
    assert quota_recovery([], 2, 2) is None  # never refused: nothing to say
    job["spec"]["suspend"], job["status"] = True, {}
    assert b.trainer_pods_wanted_and_created(job) == (0, 0)  # a suspended Job wants no pods
    assert b.finetunejob_of(b.trainer_object_name("t5-news")) == "t5-news"
    assert b.finetunejob_of("t5-news-deploy") is None


def leaves(node, path=()):
    """(dotted path, value) of every leaf of a rendered config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield ".".join(path), node


def spec_has(spec_dump: dict, dotted: str) -> bool:
    node = spec_dump
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_the_trainers_names_for_config_fields_are_the_specs():
    """A config the trainer refuses is reported naming the FineTuneJob's field: each rendered field that comes
    from the spec is named by its spec path, which exists, and only the operator's own fields are not."""
    from floe_trainer.field_errors import TRAINER_FIELDS, field_name

    s = spec(dataset={"file": {"path": "news.csv", "claimName": "datasets"}},
             model={"scratch": {"shape": "tiny", "vocabSize": 256}})
    dumped = {"spec": s.model_dump(mode="json", by_alias=True)}
    operators = set()
    for path, _ in leaves(b.trainer_config(target(), s)):
        name = field_name(tuple(path.split(".")), TRAINER_FIELDS, "trainer config")
        if name.startswith("spec."):
            assert spec_has(dumped, name), f"{path} is named {name}, which the spec does not have"
        else:
            operators.add(path)
    assert operators == {"version", "job.namespace", "job.name", "checkpoint.dir", "output.dir", "metricsPort"}


def test_the_operators_watches_select_the_trainer_job_and_its_pods():
    """The API server sends the operator only the pods and Jobs it selects: a trainer outside the selection
    would never leave Pending."""
    (job,) = [o for o in b.trainer_objects(target(), spec()) if o["kind"] == "Job"]

    def selected(labels: dict) -> bool:  # the selector's syntax as trainer_workloads writes it: key=value, key
        return all(labels.get(k) == v if v else k in labels for k, _, v in
                   (term.partition("=") for term in trainer_workloads.SELECTOR.split(",")))

    assert selected(job["metadata"]["labels"])
    assert selected(job["spec"]["template"]["metadata"]["labels"])
    assert not selected({APP_NAME_LABEL: job["metadata"]["labels"][APP_NAME_LABEL]})
