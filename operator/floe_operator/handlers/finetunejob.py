"""FineTuneJob -> trainer ConfigMap, RBAC, (Service,) Job; status follows the Job and its pods."""

from __future__ import annotations

import threading
from typing import Any

import kopf
from pydantic import ValidationError

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.project import Repository
from floe_operator.builders.finetunejob import (
    JOB_LABEL,
    KIND,
    QUEUE_LABEL,
    TrainerTarget,
    observe,
    trainer_object_name,
    trainer_objects,
)
from floe_operator.builders.project import TRAINER_SERVICE_ACCOUNT
from floe_operator.catalog import UnknownName, load_catalog
from floe_operator.conditions import condition, is_terminal, merge_conditions, set_condition, status_conditions
from floe_operator.settings import OperatorSettings

PLURAL = "finetunejobs"
# Job and pod events of one FineTuneJob arrive on several threads; one sync at a time keeps
# phase transitions (and their Events) from being reported twice.
_sync_lock = threading.Lock()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@metrics.reconciled(KIND)
def reconcile_finetunejob(
    body: kopf.Body, spec: kopf.Spec, name: str, namespace: str, uid: str, status: kopf.Status, **_: Any
) -> None:
    if is_terminal(status.get("phase")):
        return  # its Job may be gone (ttlSecondsAfterFinished); never start a finished job again
    try:
        parsed = FineTuneJobSpec.model_validate(dict(spec))
    except ValidationError as error:
        _fail(body, status, "InvalidSpec", f"invalid FineTuneJob spec: {error}")
        raise kopf.PermanentError(f"invalid FineTuneJob spec: {error}") from error
    settings = OperatorSettings.from_env()
    catalog = load_catalog()
    try:
        template = catalog.template(parsed.template) if parsed.template else None
        profile = catalog.profile(parsed.compute_profile) if parsed.compute_profile else None
    except UnknownName as error:
        field = "spec.template" if error.kind == "template" else "spec.computeProfile"
        _fail(body, status, "InvalidSpec", f"{field}: {error}")
        raise kopf.PermanentError(f"{field}: {error}") from error
    target = TrainerTarget(
        namespace=namespace,
        name=name,
        uid=uid,
        image=parsed.image or (template.trainer_image if template else settings.trainer_image),
        profile=profile,
        repository=_repository(body, status, namespace) if parsed.code else None,
        identity=kube.get("v1", "ServiceAccount", TRAINER_SERVICE_ACCOUNT, namespace),
        snowflake_secret=_snowflake_secret(body, status, parsed, namespace),
        image_pull_policy=settings.image_pull_policy,
        queue_name=body["metadata"].get("labels", {}).get(QUEUE_LABEL),
    )
    for obj in trainer_objects(target, parsed):
        created = kube.ensure(obj, update=obj["kind"] != "Job")
        if obj["kind"] == "Job" and _suspend_change(created, parsed.suspend, queued=bool(target.queue_name)):
            kube.patch("batch/v1", "Job", target.object_name, {"spec": {"suspend": parsed.suspend}}, namespace)
    sync_status(namespace, name)


def _suspend_change(job: dict, suspend: bool, queued: bool) -> bool:
    """Whether the Job's suspend flag must follow the spec. A queued Job is unsuspended by Kueue on
    admission, never by floe; suspending it is always honoured."""
    suspended = bool(job["spec"].get("suspend"))
    return (suspend and not suspended) or (not suspend and suspended and not queued)


def _snowflake_secret(body: kopf.Body, status: kopf.Status, spec: FineTuneJobSpec, namespace: str) -> str | None:
    """The connection Secret a Snowflake dataset reads through: its own (admission lets it name only the
    Project's training connection), else the Project's training connection, never the deploy one."""
    source = spec.dataset.snowflake
    if source is None:
        return None
    if source.connection_secret_ref is not None:
        return source.connection_secret_ref.name
    project = kube.get(API_VERSION, "Project", namespace) or {}
    ref = (project.get("spec", {}).get("snowflake") or {}).get("trainingConnectionSecretRef")
    if ref:
        return ref["name"]
    message = (
        "spec.dataset.snowflake.connectionSecretRef is unset and the Project of namespace "
        f"{namespace} has no spec.snowflake.trainingConnectionSecretRef (the read-only connection jobs train from)"
    )
    _set_pending(body, status, "MissingConnection", message)
    raise kopf.TemporaryError(message, delay=30)


def _repository(body: kopf.Body, status: kopf.Status, namespace: str) -> Repository:
    """The Project's repository, which spec.code runs code from."""
    project = kube.get(API_VERSION, "Project", namespace) or {}
    repository = (project.get("spec") or {}).get("repository")
    if repository:
        return Repository.model_validate(repository)
    message = f"spec.code runs code from the Project's repository, and the Project {namespace} has no spec.repository"
    _set_pending(body, status, "MissingRepository", message)
    raise kopf.TemporaryError(message, delay=30)


def _set_pending(body: kopf.Body, status: kopf.Status, reason: str, message: str) -> None:
    _write_phase(body, status, "Pending", reason, message)


def _fail(body: kopf.Body, status: kopf.Status, reason: str, message: str) -> None:
    _write_phase(body, status, "Failed", reason, message)


def _write_phase(body: kopf.Body, status: kopf.Status, phase: str, reason: str, message: str) -> None:
    """Phase and message, with Ready false (Stalled and Failed true when failed, else Reconciling) for `reason`;
    an Event when they change (a waiting job is retried every 30 s and must not repeat it)."""
    if (status.get("phase"), status.get("message")) != (phase, message):
        event_reason = "Failed" if phase == "Failed" else reason
        kopf.event(body, type="Warning", reason=event_reason, message=message[:1024])
    generation = body["metadata"].get("generation")
    verdict = status_conditions(phase, False, reason, message, generation)
    conditions = merge_conditions(status.get("conditions"), verdict)
    if phase == "Failed":
        conditions = set_condition(conditions, condition("Failed", True, reason, message, generation))
    kube.patch_status(
        API_VERSION,
        KIND,
        body["metadata"]["name"],
        # observedGeneration too: without it GitOps tools wait forever for the operator to see the spec
        {"phase": phase, "message": message, "conditions": conditions, "observedGeneration": generation},
        body["metadata"]["namespace"],
    )


def sync_status(namespace: str, name: str) -> None:
    """Bring the FineTuneJob's status in line with its Job and pods; post an Event on each phase change."""
    with _sync_lock:
        ftj = kube.get(API_VERSION, KIND, name, namespace)
        if ftj is None:
            return
        status = ftj.get("status") or {}
        job = kube.get("batch/v1", "Job", trainer_object_name(name), namespace)
        if job is not None and job["metadata"].get("labels", {}).get(JOB_LABEL) != name:
            job = None
        if job is None and is_terminal(status.get("phase")):
            return
        pods = kube.list_objects("v1", "Pod", namespace, f"{JOB_LABEL}={name}")
        spec = FineTuneJobSpec.model_validate(ftj["spec"])
        update = observe(spec, job, pods, status, ftj["metadata"].get("generation"))
        metrics.observe_phase(KIND, ftj["metadata"]["uid"], update["phase"])
        if all(status.get(key) == value for key, value in update.items() if key != "progress"):
            return
        kube.patch_status(API_VERSION, KIND, name, update, namespace)
        if status.get("phase") != update["phase"]:
            kopf.event(
                ftj,
                type="Warning" if update["phase"] == "Failed" else "Normal",
                reason=update["phase"],
                message=update["message"][:1024],
            )


@kopf.on.event("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
@metrics.reconciled("TrainerWorkload")
def follow_workload(namespace: str, labels: kopf.Labels, **_: Any) -> None:
    sync_status(namespace, labels[JOB_LABEL])


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget_finetunejob(uid: str, **_: Any) -> None:
    metrics.observe_phase(KIND, uid, None)
