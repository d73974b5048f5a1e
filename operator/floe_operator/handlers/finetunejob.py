"""FineTuneJob -> trainer RBAC, (Service,) Job (the trainer's config in its pod template); status follows the Job
and its pods.

The trainer Jobs, their pods, the FineTuneJobs and the Projects' trainer ServiceAccounts are kept in kopf
indexes fed by the operator's watches: creating and following a job reads nothing from the API server, and its
status is written only when it changes. No lock: a view that does not yet show this process's last write of the
status writes only if the FineTuneJob is still at that view (a resourceVersion precondition; refused, the
FineTuneJob event of the newer write recomputes it). The first write takes no precondition: kopf's own patch
after the creation handler raced the first Job event and had half the jobs' first writes refused.

Writers of the status, each under its own field manager (server-side apply merges the conditions by type):
this module (phase, message, Ready, Reconciling, Stalled, Running, Failed...), handlers/quota.py
(QuotaExceeded) and the trainer (status.progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError
from pydantic import ValidationError

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.project import Repository
from floe_operator.builders.finetunejob import (
    JOB_LABEL,
    KIND,
    QUEUE_LABEL,
    TrainerTarget,
    controlled_by,
    job_summary,
    observe,
    pod_summary,
    trainer_object_name,
    trainer_objects,
    trainer_pods_wanted_and_created,
)
from floe_operator.builders.project import PROJECT_LABEL, TRAINER_SERVICE_ACCOUNT
from floe_operator.builders.quota import QUOTA_CONDITION, quota_recovery
from floe_operator.catalog import UnknownName, load_catalog
from floe_operator.conditions import applied_conditions, condition, is_terminal, status_conditions, status_unchanged
from floe_operator.handlers.quota import record_quota
from floe_operator.settings import OperatorSettings

PLURAL = "finetunejobs"
# The status this process last wrote to each FineTuneJob (by uid), without transition times, and the
# resourceVersion of the view it was computed from. The watch brings a write back only after a while; until
# then every Job and pod event recomputes it from the older view, and would send it again only to be refused.
_written: dict[str, tuple[dict[str, Any], str]] = {}
# The write on its way to each FineTuneJob (by uid), and whether it got there.
_sending: dict[str, tuple[dict[str, Any], asyncio.Future[bool]]] = {}
# Each FineTuneJob's spec as parsed at its generation (by uid): every Job and pod event of the job reads it.
_specs: dict[str, tuple[int | None, FineTuneJobSpec]] = {}


@kopf.index("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT})
async def trainer_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[JOB_LABEL]): job_summary(body)}


@kopf.index("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
async def trainer_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    return {(namespace, labels[JOB_LABEL]): pod_summary(body)}


@kopf.index("", "v1", "serviceaccounts", labels={PROJECT_LABEL: kopf.PRESENT},
            when=lambda name, **_: name == TRAINER_SERVICE_ACCOUNT)
async def trainer_identities(namespace: str, body: kopf.Body, **_: Any) -> dict:
    """Each Project's trainer ServiceAccount, which every job's own account inherits from."""
    return {namespace: {"metadata": {"annotations": dict(body["metadata"].get("annotations") or {})},
                        "imagePullSecrets": list(body.get("imagePullSecrets") or ())}}


@kopf.index(GROUP, VERSION, PLURAL)
async def finetunejobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    meta = body["metadata"]
    kept = {key: meta.get(key) for key in ("name", "namespace", "uid", "generation", "resourceVersion")}
    status = body.get("status") or {}
    return {
        (namespace, name): {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": kept,
            "spec": body["spec"],
            "status": status,
        }
    }


def _own_job(jobs: kopf.Index, namespace: str, name: str, uid: str) -> dict | None:
    """The FineTuneJob's trainer Job (not a namesake's still being collected), as last seen by the watch."""
    return next((job for job in jobs.get((namespace, name), ()) if controlled_by(job, uid)), None)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@metrics.reconciled(KIND)
def reconcile_finetunejob(
    body: kopf.Body,
    spec: kopf.Spec,
    name: str,
    namespace: str,
    uid: str,
    status: kopf.Status,
    trainer_jobs: kopf.Index,
    trainer_identities: kopf.Index,
    **_: Any,
) -> None:
    if is_terminal(status.get("phase")):
        return  # its Job may be gone (ttlSecondsAfterFinished); never start a finished job again
    try:
        parsed = FineTuneJobSpec.model_validate(dict(spec))
    except ValidationError as error:
        _fail(body, status, "InvalidSpec", f"invalid FineTuneJob spec: {error}")
        raise kopf.PermanentError(f"invalid FineTuneJob spec: {error}") from error
    queued = bool(body["metadata"].get("labels", {}).get(QUEUE_LABEL))
    # The Job is applied last: once it exists, so does everything it needs, and a resume or an update
    # costs no request (a suspend change one).
    job = _own_job(trainer_jobs, namespace, name, uid) or _create_children(
        body, status, parsed, namespace, next(iter(trainer_identities.get(namespace, ())), None))
    if _suspend_change(job, parsed.suspend, queued=queued):
        suspend = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"suspend": parsed.suspend},
                   "metadata": {"name": trainer_object_name(name), "namespace": namespace}}
        kube.apply(suspend, field_manager=kube.SUSPEND_MANAGER)


def _create_children(body: kopf.Body, status: kopf.Status, parsed: FineTuneJobSpec, namespace: str,
                     identity: dict | None) -> dict:
    """Apply the trainer's objects; returns its Job."""
    meta = body["metadata"]
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
        name=meta["name"],
        uid=meta["uid"],
        image=parsed.image or (template.trainer_image if template else settings.trainer_image),
        profile=profile,
        repository=_repository(body, status, namespace) if parsed.code else None,
        identity=identity,
        snowflake_secret=_snowflake_secret(body, status, parsed, namespace),
        image_pull_policy=settings.image_pull_policy,
        queue_name=meta.get("labels", {}).get(QUEUE_LABEL),
    )
    created: dict = {}
    for obj in trainer_objects(target, parsed):
        try:
            created = kube.apply(obj)
        except kube.REFUSED as error:  # the spec asks for what the API server will never accept: no retry
            message = f"the API server refused the trainer {obj['kind']}: {kube.server_message(error)}"
            _fail(body, status, "InvalidSpec", message)
            raise kopf.PermanentError(message) from error
    return created


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
    _write_phase(body, status, "Pending", "MissingConnection", message)
    raise kopf.TemporaryError(message, delay=30)


def _repository(body: kopf.Body, status: kopf.Status, namespace: str) -> Repository:
    """The Project's repository, which spec.code runs code from."""
    project = kube.get(API_VERSION, "Project", namespace) or {}
    repository = (project.get("spec") or {}).get("repository")
    if repository:
        return Repository.model_validate(repository)
    message = f"spec.code runs code from the Project's repository, and the Project {namespace} has no spec.repository"
    _write_phase(body, status, "Pending", "MissingRepository", message)
    raise kopf.TemporaryError(message, delay=30)


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
    if phase == "Failed":
        verdict.append(condition("Failed", True, reason, message, generation))
    # observedGeneration too: without it GitOps tools wait forever for the operator to see the spec
    update = {"phase": phase, "message": message, "conditions": applied_conditions(status.get("conditions"), verdict),
              "observedGeneration": generation}
    kube.apply_status(API_VERSION, KIND, body["metadata"]["name"], body["metadata"]["namespace"], update)


async def sync_status(ftj: Mapping[str, Any], job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
    """Bring the FineTuneJob's status in line with its Job and pods (as the watches last saw them); post an
    Event on each phase change. Until its Job exists, the status is the reconcile handler's.

    Runs on the event loop: most Job and pod events change nothing, and a handler thread per event cost more
    than the event. Only a write waits in a thread."""
    meta, status = ftj["metadata"], ftj.get("status") or {}
    update = observe(_parsed_spec(ftj), job, pods, status, meta.get("generation"))
    # A trainer Job the quota held back has recovered once its pods exist: handlers/quota.py's condition.
    if quota_recovery(status.get("conditions"), *trainer_pods_wanted_and_created(job)):
        await asyncio.to_thread(record_quota, PLURAL, meta["namespace"], meta["name"], ftj, None)
    metrics.observe_phase(KIND, meta["uid"], update["phase"])
    update["conditions"] = [c for c in update["conditions"] if c["type"] != QUOTA_CONDITION]
    # The trainer reports progress too: what this module writes is the rest.
    view, written = _timeless(status), _timeless({key: value for key, value in update.items() if key != "progress"})
    if status_unchanged(view, written):
        return
    uid = meta["uid"]
    # The Job's and the pod's events of one change, handled while its write waits in a thread, wait for that
    # write instead of sending it (and its Event) again; if it was refused, their view may be the newer one.
    sending = _sending.get(uid)
    if sending is not None and sending[0] == written and await asyncio.shield(sending[1]):
        return
    last, last_view = _written.get(uid, (None, None))
    if last == written:
        return
    # A view that does not show this process's last write yet (a Job or pod event ahead of the FineTuneJob's
    # own) may be older than that write: it writes only if the FineTuneJob is still at that view, so a status
    # cannot step back (e.g. Running, then Pending from a pod index one event behind).
    behind = last is not None and not status_unchanged(view, last)
    if behind and meta["resourceVersion"] == last_view:
        # The very view the last write was computed from: that write moved the FineTuneJob on, so a write
        # conditional on this view would be refused. The FineTuneJob's event of that write recomputes this.
        return
    sent: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    _sending[uid] = (written, sent)
    delivered = False
    try:
        await asyncio.to_thread(kube.apply_status, API_VERSION, KIND, meta["name"], meta["namespace"], update,
                                resource_version=meta["resourceVersion"] if behind else "")
        delivered = True
        _written[uid] = (written, meta["resourceVersion"])
    except ConflictError:
        return  # the FineTuneJob's event of the newer write recomputes it
    except NotFoundError:
        return  # it is gone
    finally:
        sent.set_result(delivered)
        if _sending.get(uid, (None, None))[1] is sent:
            del _sending[uid]
    # An Event for each change of phase, but the first Pending: no news.
    if status.get("phase") != update["phase"] and (status.get("phase"), update["phase"]) != (None, "Pending"):
        kopf.event(
            ftj,
            type="Warning" if update["phase"] == "Failed" else "Normal",
            reason=update["phase"],
            message=update["message"][:1024],
        )


def _parsed_spec(ftj: Mapping[str, Any]) -> FineTuneJobSpec:
    meta = ftj["metadata"]
    known = _specs.get(meta["uid"])
    if known is None or known[0] != meta.get("generation"):
        known = _specs[meta["uid"]] = (meta.get("generation"), FineTuneJobSpec.model_validate(dict(ftj["spec"])))
    return known[1]


def _timeless(update: Mapping[str, Any]) -> dict[str, Any]:
    """A status less its conditions' transition times, which a recomputation from an older view stamps anew."""
    conditions = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in update.get("conditions") or ()]
    return {**update, "conditions": conditions}


@kopf.on.event(GROUP, VERSION, PLURAL)
@metrics.reconciled(KIND)
async def follow_finetunejob(
    type: str,
    body: kopf.Body,
    namespace: str,
    name: str,
    uid: str,
    trainer_jobs: kopf.Index,
    trainer_pods: kopf.Index,
    **_: Any,
) -> None:
    if type == "DELETED":
        _written.pop(uid, None)
        _specs.pop(uid, None)
        return
    job = _own_job(trainer_jobs, namespace, name, uid)
    if job is not None:
        await sync_status(body, job, list(trainer_pods.get((namespace, name), ())))


@kopf.on.event("batch", "v1", "jobs", labels={JOB_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
@metrics.reconciled("TrainerWorkload")
async def follow_workload(
    namespace: str,
    labels: kopf.Labels,
    finetunejobs: kopf.Index,
    trainer_jobs: kopf.Index,
    trainer_pods: kopf.Index,
    **_: Any,
) -> None:
    name = labels[JOB_LABEL]
    ftj = next(iter(finetunejobs.get((namespace, name), ())), None)
    job = _own_job(trainer_jobs, namespace, name, ftj["metadata"]["uid"]) if ftj else None
    if job is not None:
        await sync_status(ftj, job, list(trainer_pods.get((namespace, name), ())))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget_finetunejob(uid: str, **_: Any) -> None:
    metrics.observe_phase(KIND, uid, None)
