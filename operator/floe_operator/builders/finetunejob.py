"""FineTuneJob -> trainer config, ServiceAccount and RoleBinding, (headless Service,) batch/v1 Job; Job -> status.

The trainer's config travels in an annotation of the Job's pod template, which a downwardAPI volume mounts at
TRAINER_CONFIG_PATH: no ConfigMap per job (admission bounds its size, api/finetunejob.py)."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from floe_contract import API_VERSION
from floe_contract.paths import (
    CACHE_DIR,
    CONFIG_DIR,
    DATA_DIR,
    OUTPUT_DIR,
    SNOWFLAKE_DIR,
    TERMINATION_LOG,
    TRAINER_CONFIG_FILE,
    TRAINER_CONFIG_PATH,
)

from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.project import Repository
from floe_operator.builders.common import (
    APP_NAME_LABEL,
    metadata,
    owner_reference,
    pod_failure_policy,
    restricted_container_security,
    restricted_pod_security,
    unschedulable,
)
from floe_operator.builders.repository import (
    GIT_IMAGE,
    clone_container,
    clone_failure,
    credentials_volume,
    repo_dir,
)
from floe_operator.catalog import ComputeProfile
from floe_operator.conditions import condition, merge_conditions, status_conditions

KIND = "FineTuneJob"
JOB_LABEL = "floe.dev/finetunejob"
TRAINER_CONFIG_ANNOTATION = "floe.dev/trainer-config"  # the trainer's job.json, on the pod template
TRAINER_ROLE = "floe-trainer"  # helm/floe/files/trainer-role.yaml
TRAINER_APP = "floe-trainer"  # the APP_NAME_LABEL of trainer Jobs and pods
CONFIG_VERSION = "v1"

CODE_DIR = "/var/run/floe/code"
TRAINER_METRICS_PORT = 9090
RENDEZVOUS_PORT = 29500
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "nvidia.com/gpu.present"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TRAINER_CONTAINER = "trainer"
# A condition reason as the API requires it (metav1.Condition): CamelCase, no spaces.
REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


@dataclass(frozen=True)
class TrainerTarget:
    """Who the objects are for and what the spec alone does not say."""

    namespace: str
    name: str
    uid: str
    image: str
    snowflake_secret: str | None = None
    image_pull_policy: str = "IfNotPresent"
    queue_name: str | None = None
    profile: ComputeProfile | None = None  # spec.computeProfile from the catalog
    repository: Repository | None = None  # the Project's, for spec.code
    identity: dict[str, Any] | None = None  # the Project's trainer ServiceAccount (its annotations, pull secrets)
    git_image: str = GIT_IMAGE

    def gpus(self, spec: FineTuneJobSpec) -> int:
        """GPUs per worker: the compute profile's when the job names one, else spec.resources.gpus."""
        return self.profile.gpus if self.profile is not None else spec.resources.gpus

    @property
    def object_name(self) -> str:
        """Name of every object built for the job (Job, Service, ServiceAccount, RoleBinding)."""
        return trainer_object_name(self.name)

    @property
    def owner(self) -> dict[str, Any]:
        return owner_reference(API_VERSION, KIND, self.name, self.uid)

    @property
    def labels(self) -> dict[str, str]:
        return {JOB_LABEL: self.name, APP_NAME_LABEL: TRAINER_APP}

    def meta(self) -> dict[str, Any]:
        return metadata(self.object_name, self.owner, self.labels, self.namespace)

    @property
    def run_dir(self) -> str:
        return job_run_dir(self.name, self.uid)


TRAINER_SUFFIX = "-train"


def trainer_object_name(job: str) -> str:
    return f"{job}{TRAINER_SUFFIX}"


def finetunejob_of(trainer_object: str) -> str | None:
    """The FineTuneJob a trainer object's name belongs to (None for another name)."""
    return trainer_object.removesuffix(TRAINER_SUFFIX) if trainer_object.endswith(TRAINER_SUFFIX) else None


def job_run_dir(name: str, uid: str) -> str:
    """Where one job's checkpoints and model live on the output volume: by uid, so a namesake job (or another
    job on the same claim) never resumes from or overwrites them."""
    return f"{name}-{uid}"


def trainer_config(target: TrainerTarget, spec: FineTuneJobSpec) -> dict[str, Any]:
    """The trainer's job.json (floe_trainer.config, version v1): the spec's training settings as stored (the
    contract's models, unset optionals left out), and where this job's checkpoints and model go."""
    settings = spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"model", "dataset", "training", "evaluation"}
    )
    return {
        "version": CONFIG_VERSION,
        "job": {"namespace": target.namespace, "name": target.name},
        **settings,
        "checkpoint": {
            "dir": f"{OUTPUT_DIR}/{target.run_dir}/checkpoints",
            **spec.checkpoint.to_k8s(),
        },
        "output": {"dir": f"{OUTPUT_DIR}/{target.run_dir}/model"},
        "metricsPort": TRAINER_METRICS_PORT,
    }


def trainer_config_json(target: TrainerTarget, spec: FineTuneJobSpec) -> str:
    """The config as the trainer reads it: compact, and UTF-8 as it is (the annotation's size counts bytes)."""
    return json.dumps(trainer_config(target, spec), separators=(",", ":"), ensure_ascii=False)


def service_account(target: TrainerTarget) -> dict[str, Any]:
    """The job's own identity, inheriting what an admin set on the Project's trainer ServiceAccount:
    its annotations (workload identity for object stores, e.g. eks.amazonaws.com/role-arn) and
    imagePullSecrets. Kubernetes' own annotations stay behind."""
    identity = target.identity or {}
    meta = target.meta()
    inherited = {
        key: value
        for key, value in ((identity.get("metadata") or {}).get("annotations") or {}).items()
        if not key.split("/")[0].endswith("kubernetes.io")
    }
    if inherited:
        meta["annotations"] = inherited
    account: dict[str, Any] = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
    if identity.get("imagePullSecrets"):
        account["imagePullSecrets"] = identity["imagePullSecrets"]
    return account


def role_binding(target: TrainerTarget) -> dict[str, Any]:
    """Lets the trainer report progress on its own FineTuneJob, nothing else: floe-trainer grants patch on any
    FineTuneJob's status, and the floe-tenancy policy admits only its own job's status.progress (no Role per
    job)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": target.meta(),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TRAINER_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": target.object_name, "namespace": target.namespace}],
    }


def headless_service(target: TrainerTarget) -> dict[str, Any]:
    """Stable DNS names <job>-<index>.<service> for the workers of a multi-node job."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": target.meta(),
        "spec": {
            "clusterIP": "None",
            "selector": {JOB_LABEL: target.name},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def _env(target: TrainerTarget, spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "FLOE_JOB_NAMESPACE", "value": target.namespace},
        {"name": "FLOE_JOB_NAME", "value": target.name},
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        {"name": "TORCHINDUCTOR_CACHE_DIR", "value": f"{CACHE_DIR}/torchinductor"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_DIR}/triton"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    resources = spec.resources
    if _distributed(target, spec):
        processes = max(target.gpus(spec), 1)
        master = f"{target.object_name}-0.{target.object_name}" if resources.workers > 1 else "127.0.0.1"
        node_rank: dict[str, Any] = (
            {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}}
            if resources.workers > 1
            else {"value": "0"}
        )
        env += [
            {"name": "MASTER_ADDR", "value": master},
            {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
            {"name": "NNODES", "value": str(resources.workers)},
            {"name": "NPROC_PER_NODE", "value": str(processes)},
            {"name": "WORLD_SIZE", "value": str(resources.workers * processes)},
            {"name": "NODE_RANK", **node_rank},
        ]
    return env


def _distributed(target: TrainerTarget, spec: FineTuneJobSpec) -> bool:
    return spec.resources.workers > 1 or target.gpus(spec) > 1


def _command(target: TrainerTarget, spec: FineTuneJobSpec) -> list[str]:
    train = list(spec.code.command) if spec.code else ["floe-train", "--config", TRAINER_CONFIG_PATH]
    if not _distributed(target, spec):
        return train
    return [
        "torchrun",
        "--nnodes=$(NNODES)",
        "--nproc-per-node=$(NPROC_PER_NODE)",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "--no-python",
        *train,
    ]


def _repository(target: TrainerTarget) -> Repository:
    if target.repository is None:  # the handler resolves it before building
        raise ValueError("spec.code needs the Project's repository")
    return target.repository


def _volumes(target: TrainerTarget, spec: FineTuneJobSpec) -> tuple[list[dict], list[dict]]:
    """(volumes, volumeMounts) of the trainer pod."""
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "downwardAPI": {
                "items": [
                    {
                        "path": TRAINER_CONFIG_FILE,
                        "fieldRef": {"fieldPath": f"metadata.annotations['{TRAINER_CONFIG_ANNOTATION}']"},
                    }
                ]
            },
        },
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory"}},  # DataLoader workers and NCCL need a real /dev/shm
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "output", "mountPath": OUTPUT_DIR},
    ]
    claim = spec.storage.claim_name
    volumes.append(
        {"name": "output", "persistentVolumeClaim": {"claimName": claim}}
        if claim
        else {"name": "output", "emptyDir": {}}
    )
    if spec.code is not None:
        volumes.append({"name": "code", "emptyDir": {}})
        mounts.append({"name": "code", "mountPath": CODE_DIR})
        if credentials := credentials_volume(_repository(target)):
            volumes.append(credentials)
    file = spec.dataset.file
    if file is not None and file.claim_name is not None:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": file.claim_name, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": True})
    if target.snowflake_secret is not None:
        volumes.append({"name": "snowflake", "secret": {"secretName": target.snowflake_secret, "defaultMode": 0o440}})
        mounts.append({"name": "snowflake", "mountPath": SNOWFLAKE_DIR, "readOnly": True})
    return volumes, mounts


def _placement(target: TrainerTarget, spec: FineTuneJobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(container resources, pod nodeSelector/tolerations): the compute profile's when the job names one
    (it replaces spec.resources' cpu, memory and gpus), else from spec.resources."""
    resources = spec.resources
    if target.profile is not None:
        placement = target.profile.scheduling()
        container_resources = target.profile.container_resources()
    else:
        requests: dict[str, str] = {"cpu": resources.cpu, "memory": resources.memory}
        limits: dict[str, str] = {"memory": resources.memory}
        placement = {}
        if resources.gpus > 0:
            limits[GPU_RESOURCE] = str(resources.gpus)
            placement = {
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                "nodeSelector": {GPU_NODE_LABEL: "true"},
            }
        container_resources = {"requests": requests, "limits": limits}
    if resources.gpu_product and target.gpus(spec) > 0:
        placement["nodeSelector"] = {**placement.get("nodeSelector", {}), GPU_PRODUCT_LABEL: resources.gpu_product}
    return container_resources, placement


def job(target: TrainerTarget, spec: FineTuneJobSpec) -> dict[str, Any]:
    resources = spec.resources
    container_resources, placement = _placement(target, spec)
    volumes, mounts = _volumes(target, spec)
    container = {
        "name": TRAINER_CONTAINER,
        "image": target.image,
        "imagePullPolicy": target.image_pull_policy,
        "command": _command(target, spec),
        "env": _env(target, spec),
        "resources": container_resources,
        "ports": [{"name": "metrics", "containerPort": TRAINER_METRICS_PORT}],
        "volumeMounts": mounts,
        "securityContext": restricted_container_security(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": target.object_name,
        "automountServiceAccountToken": True,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(),
        "containers": [container],
        "volumes": volumes,
        **placement,
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "podFailurePolicy": pod_failure_policy(TRAINER_CONTAINER),
        "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
        "suspend": spec.suspend or bool(target.queue_name),  # Kueue unsuspends a queued Job on admission
        "completions": resources.workers,
        "parallelism": resources.workers,
        "template": {
            "metadata": {
                "labels": {**spec.pod_metadata.labels, **target.labels},
                "annotations": {
                    **spec.pod_metadata.annotations,
                    TRAINER_CONFIG_ANNOTATION: trainer_config_json(target, spec),
                },
            },
            "spec": pod_spec,
        },
    }
    if spec.code is not None:
        repository = _repository(target)
        pod_spec["initContainers"] = [
            clone_container(repository, image=target.git_image, volume="code", root=CODE_DIR, branch=spec.code.branch)
        ]
        container["workingDir"] = posixpath.normpath(
            posixpath.join(CODE_DIR, repo_dir(repository.url), spec.code.working_dir)
        )
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if resources.workers > 1:
        job_spec["completionMode"] = "Indexed"
        pod_spec["subdomain"] = target.object_name
    meta = target.meta()
    if target.queue_name:  # Kueue admits the Job by this label and unsuspends it
        meta["labels"] = {**meta["labels"], QUEUE_LABEL: target.queue_name}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def trainer_objects(target: TrainerTarget, spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    """Everything a FineTuneJob owns, in creation order (the Job last, once its dependencies exist)."""
    objects = [service_account(target), role_binding(target)]
    if spec.resources.workers > 1:
        objects.append(headless_service(target))
    objects.append(job(target, spec))
    return objects


def model_uri(claim: str | None, name: str, uid: str) -> str:
    """Where a job's model is written: on its output claim (spec.storage.claimName), else in the pod."""
    model = f"{job_run_dir(name, uid)}/model"
    return f"pvc://{claim}/{model}" if claim else f"file://{OUTPUT_DIR}/{model}"


@dataclass(frozen=True, slots=True)
class SpecFacts:
    """What a FineTuneJob's status follows of its spec. The operator keeps these for each job, not the parsed
    spec, which takes about 7 KB."""

    suspend: bool
    claim_name: str | None

    @classmethod
    def of(cls, spec: FineTuneJobSpec) -> SpecFacts:
        return cls(spec.suspend, spec.storage.claim_name)


# --- status: what the Job and its pods say about the FineTuneJob -------------------------------------


def job_summary(job_obj: dict[str, Any]) -> dict[str, Any]:
    """The part of a trainer Job that ``observe`` and the reconciler read (kept in the operator's index)."""
    meta, spec = job_obj["metadata"], job_obj.get("spec") or {}
    return {
        "metadata": {key: meta.get(key) for key in ("name", "uid", "ownerReferences")},
        "spec": {key: spec.get(key) for key in ("suspend", "parallelism", "completions")},
        "status": job_obj.get("status") or {},
    }


def pod_summary(pod: dict[str, Any]) -> dict[str, Any]:
    """The part of a trainer pod that ``observe`` reads (kept in the operator's index)."""
    annotations = pod["metadata"].get("annotations") or {}
    kept = {key: value for key, value in annotations.items() if key == COMPLETION_INDEX_ANNOTATION}
    return {"metadata": {"name": pod["metadata"]["name"], "annotations": kept}, "status": pod.get("status") or {}}


def trainer_pods_wanted_and_created(job_obj: dict[str, Any]) -> tuple[int, int]:
    """How many pods the Job wants now and how many exist (a quota may refuse the rest)."""
    spec, status = job_obj.get("spec") or {}, job_obj.get("status") or {}
    remaining = (spec.get("completions") or 1) - (status.get("succeeded") or 0)
    parallelism = spec["parallelism"] if spec.get("parallelism") is not None else 1
    wanted = 0 if spec.get("suspend") else min(parallelism, remaining)
    return wanted, status.get("active") or 0


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("controller") and ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or ())


def _job_condition(job_obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in job_obj.get("status", {}).get("conditions") or ():
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for status in pod.get("status", {}).get("containerStatuses") or ():
        if status.get("name") == TRAINER_CONTAINER:
            state = status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated")
            if state:
                return state
    return None


def termination_report(pods: list[dict[str, Any]], pod_phase: str) -> dict[str, Any] | None:
    """The trainer's outcome from the termination message of the latest pod in ``pod_phase``.

    Returns {"exitCode", "reason", "message", "report"} where report is the trainer's JSON
    (outcome, metrics, modelDigest, message) when the message is JSON, else None.
    """
    finished = [(p, t) for p in pods if p.get("status", {}).get("phase") == pod_phase and (t := _terminated(p))]
    if not finished:
        return None
    # Rank 0 (completion index 0) writes the outcome of a multi-node job; otherwise take the latest.
    finished.sort(
        key=lambda pt: (
            pt[0].get("metadata", {}).get("annotations", {}).get(COMPLETION_INDEX_ANNOTATION, "0") == "0",
            pt[1].get("finishedAt") or "",
        )
    )
    _, state = finished[-1]
    raw = (state.get("message") or "").strip()
    report = None
    if raw.startswith("{"):
        try:
            parsed = json.loads(raw)
            report = parsed if isinstance(parsed, dict) else None
        except json.JSONDecodeError:
            report = None
    return {"exitCode": state.get("exitCode"), "reason": state.get("reason"), "message": raw, "report": report}


def _pending_message(pods: list[dict[str, Any]]) -> str:
    for pod in pods:
        for cond in pod.get("status", {}).get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("message"):
                return f"pod {pod['metadata']['name']} is not scheduled: {cond['message']}"
        for status in pod.get("status", {}).get("containerStatuses") or ():
            waiting = status.get("state", {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                return f"pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message', '')}".strip()
    return "waiting for the trainer pod to start"


def _failure_message(job_obj: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str]:
    failed = _job_condition(job_obj, "Failed") or {}
    reason = failed.get("reason") or "JobFailed"
    term = termination_report(pods, "Failed")
    if term is None:
        if clone := clone_failure(pods):
            return "RepositoryCloneFailed", f"cloning the Project's repository failed: {clone}"
        return reason, failed.get("message") or "the training Job failed"
    if term["report"] and term["report"].get("message"):
        detail = str(term["report"]["message"])
    elif term["message"]:
        detail = term["message"]
    else:
        detail = f"trainer exited with code {term['exitCode']} ({term['reason']})"
    if term.get("reason") == "OOMKilled":
        reason = "OOMKilled"
    elif term["report"] and REASON_PATTERN.match(str(term["report"].get("reason") or "")):
        reason = term["report"]["reason"]  # the trainer's own: InvalidConfig, DataError, ...
    return reason, detail[-2048:]


def _started(job_obj: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """Whether training has begun: once it has, the job stays Running until the Job is Complete or Failed
    (pods that finished before the Job controller decides must not look Pending again)."""
    job_status = job_obj.get("status", {})
    if job_status.get("ready") or job_status.get("succeeded") or job_status.get("failed"):
        return True
    if _job_condition(job_obj, "SuccessCriteriaMet") or _job_condition(job_obj, "FailureTarget"):
        return True
    return any(p.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed") for p in pods)


def _running_message(job_obj: dict[str, Any], pods: list[dict[str, Any]]) -> str:
    if any(p.get("status", {}).get("phase") == "Running" for p in pods):
        return "the trainer is running"
    if job_obj.get("status", {}).get("failed") and not _job_condition(job_obj, "FailureTarget"):
        return "a trainer pod failed; retrying"
    return "the trainer pods have finished; waiting for the Job's verdict"


def observe(
    spec: SpecFacts,
    job_obj: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    status: dict[str, Any],
    generation: int | None,
    now: str | None = None,
) -> dict[str, Any]:
    """The FineTuneJob status patch that follows from its Job and pods (``status``: the current status)."""
    patch: dict[str, Any] = {"observedGeneration": generation}
    running = False
    if job_obj is None:
        phase, reason, message = "Pending", "Creating", "creating the training Job"
    else:
        job_status = job_obj.get("status", {})
        patch["jobName"] = job_obj["metadata"]["name"]
        complete = _job_condition(job_obj, "Complete")
        if complete is not None:
            phase, reason, message = "Succeeded", "Completed", "training finished"
            patch["completionTime"] = job_status.get("completionTime") or complete.get("lastTransitionTime")
            owner = next(ref for ref in job_obj["metadata"]["ownerReferences"] if ref.get("controller"))
            patch["modelUri"] = model_uri(spec.claim_name, owner["name"], owner["uid"])
            term = termination_report(pods, "Succeeded")
            report = (term or {}).get("report") or {}
            if isinstance(report.get("metrics"), dict):
                patch["metrics"] = report["metrics"]
            if report.get("modelDigest"):
                patch["modelDigest"] = report["modelDigest"]
            if report.get("message"):
                message = str(report["message"])
            patch["progress"] = {"percent": 100}
        elif _job_condition(job_obj, "Failed") is not None:
            phase = "Failed"
            reason, message = _failure_message(job_obj, pods)
            patch["completionTime"] = _job_condition(job_obj, "Failed").get("lastTransitionTime")
        elif job_obj.get("spec", {}).get("suspend") or _job_condition(job_obj, "Suspended"):
            phase, reason, message = "Suspended", "Suspended", "the job is suspended"
        elif _started(job_obj, pods):
            phase, reason, message = "Running", "Training", _running_message(job_obj, pods)
            running = True
        else:
            phase, reason, message = "Pending", "PodsPending", _pending_message(pods)
        # A pod no node can take (a retry's too, or one worker's of several) waits for good: say so.
        if phase in ("Pending", "Running") and (unplaced := unschedulable(pods)):
            reason, message = "Unschedulable", unplaced
        # The Job's start (its pods created, none running yet) is no news of its own: waiting for a running pod
        # spares every job a status write. Once shown, it stays (an apply without it would remove it).
        if job_status.get("startTime") and (phase != "Pending" or "startTime" in status):
            patch["startTime"] = job_status["startTime"]
    patch["phase"] = phase
    patch["message"] = message
    patch["conditions"] = merge_conditions(
        status.get("conditions"),
        [
            # Suspended by spec.suspend it waits on a person; queued by Kueue it is still being worked on.
            *status_conditions(
                phase, phase == "Succeeded", reason, message, generation, paused=phase == "Suspended" and spec.suspend
            ),
            condition("Running", running, reason, message, generation),
            condition("Failed", phase == "Failed", reason, message if phase == "Failed" else "", generation),
        ],
        now,
    )
    return patch
