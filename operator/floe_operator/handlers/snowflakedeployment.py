"""SnowflakeDeployment -> gates, deploy Job; status follows the gates and the Job; a finalizer drops the UDF.

The deployments, their FineTuneJobs, deploy Jobs and pods are kept in kopf indexes fed by the operator's watches:
a re-sync reads nothing from the API server. No lock: FineTuneJob, Job, pod and SnowflakeDeployment events
re-sync a deployment on several threads, and what they may do concurrently is harmless. The deploy Job has a
fixed name (a second apply of the same Job changes nothing), an outdated one is deleted only if it is still the
one seen, and the status is written on the condition that the deployment is still at the resourceVersion it was
computed from (a phase's Event follows only a write that succeeded); the deployment's event of a newer write
recomputes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ConflictError, ForbiddenError, NotFoundError
from pydantic import ValidationError

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.snowflakedeployment import SnowflakeDeploymentSpec
from floe_operator.builders.snowflakedeployment import (
    DEPLOYMENT_LABEL,
    JOB_UID_LABEL,
    KIND,
    REVISION_ANNOTATION,
    DeployTarget,
    InvalidDeployment,
    connection_secret,
    deploy_job_summary,
    deploy_objects,
    deploy_pod_summary,
    deploy_report,
    deployer_started,
    drop_objects,
    evaluate_gates,
    job_finished,
    models_claim,
    observe,
)
from floe_operator.conditions import applied_conditions, merge_conditions, status_conditions
from floe_operator.settings import OperatorSettings

PLURAL = "snowflakedeployments"
DROP_POLL_SECONDS = 5
DROP_RETRY_SECONDS = 60


@kopf.index(GROUP, VERSION, PLURAL)
async def snowflakedeployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    meta = body["metadata"]
    kept = {
        key: meta.get(key) for key in ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
    }
    return {
        (namespace, name): {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": kept,
            "spec": body["spec"],
            "status": body.get("status") or {},
        }
    }


@kopf.index(GROUP, VERSION, PLURAL)
async def deployments_of_finetunejobs(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict:
    """The deployments of each FineTuneJob (by namespace and name), so that its events list nothing."""
    ref = (spec.get("source") or {}).get("fineTuneJobRef") or {}
    return {(namespace, ref["name"]): name} if ref.get("name") else {}


@kopf.index("batch", "v1", "jobs", labels={DEPLOYMENT_LABEL: kopf.PRESENT})
async def deploy_jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    """Each deployment's deploy and drop Jobs, from the operator's watch."""
    return {(namespace, labels[DEPLOYMENT_LABEL]): deploy_job_summary(body)}


@kopf.index("", "v1", "pods", labels={DEPLOYMENT_LABEL: kopf.PRESENT})
async def deploy_pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict:
    """The pods of each deployment's Jobs: whether the scheduler can place them, the deployer's outcome."""
    return {(namespace, labels[DEPLOYMENT_LABEL]): deploy_pod_summary(body)}


# Retried on errors, as event handlers are not.
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@metrics.reconciled(KIND)
def reconcile_snowflakedeployment(
    body: kopf.Body, finetunejobs: kopf.Index, deploy_jobs: kopf.Index, deploy_pods: kopf.Index, **_: Any
) -> None:
    sync(body, finetunejobs, deploy_jobs, deploy_pods)


@kopf.on.event(GROUP, VERSION, PLURAL)
@metrics.reconciled(KIND)
def follow_snowflakedeployment(
    type: str, body: kopf.Body, finetunejobs: kopf.Index, deploy_jobs: kopf.Index, deploy_pods: kopf.Index, **_: Any
) -> None:
    """Every write of the deployment (its status too): a status computed from an older view was refused."""
    if type != "DELETED":
        sync(body, finetunejobs, deploy_jobs, deploy_pods)


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def follow_finetunejob(
    name: str,
    namespace: str,
    deployments_of_finetunejobs: kopf.Index,
    snowflakedeployments: kopf.Index,
    finetunejobs: kopf.Index,
    deploy_jobs: kopf.Index,
    deploy_pods: kopf.Index,
    **_: Any,
) -> None:
    """A FineTuneJob moved: re-check the deployments waiting for (or built from) it. On the event loop: most
    FineTuneJobs have no deployment, and a handler thread for each of their events cost more than the event."""
    for deployment in deployments_of_finetunejobs.get((namespace, name), ()):
        for sfd in snowflakedeployments.get((namespace, deployment), ()):
            await asyncio.to_thread(sync, sfd, finetunejobs, deploy_jobs, deploy_pods)


@kopf.on.event("batch", "v1", "jobs", labels={DEPLOYMENT_LABEL: kopf.PRESENT})
# A pending pod: being placed or not is news the Job does not bring (a running one's are the Job's).
@kopf.on.event(
    "", "v1", "pods", labels={DEPLOYMENT_LABEL: kopf.PRESENT}, when=lambda status, **_: status.get("phase") == "Pending"
)
@metrics.reconciled("DeployWorkload")
def follow_deploy_job(
    namespace: str,
    labels: kopf.Labels,
    snowflakedeployments: kopf.Index,
    finetunejobs: kopf.Index,
    deploy_jobs: kopf.Index,
    deploy_pods: kopf.Index,
    **_: Any,
) -> None:
    for sfd in snowflakedeployments.get((namespace, labels[DEPLOYMENT_LABEL]), ()):
        sync(sfd, finetunejobs, deploy_jobs, deploy_pods)


def _target(sfd: Mapping[str, Any], spec: SnowflakeDeploymentSpec) -> DeployTarget:
    meta = sfd["metadata"]
    settings = OperatorSettings.from_env()
    project = kube.get(API_VERSION, "Project", meta["namespace"]) if spec.snowflake.mode != "local" else None
    return DeployTarget(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        image=settings.trainer_image,
        connection_secret=connection_secret(spec, project),
        image_pull_policy=settings.image_pull_policy,
    )


def sync(sfd: Mapping[str, Any], finetunejobs: kopf.Index, deploy_jobs: kopf.Index, deploy_pods: kopf.Index) -> None:
    """Bring a SnowflakeDeployment in line: check its gates, run the deploy Job of the current revision,
    and reflect both in its status; post an Event on each phase change. The FineTuneJob, the deploy Job and
    its pods come from the indexes, as the watches last saw them."""
    meta = sfd["metadata"]
    if meta.get("deletionTimestamp"):
        return  # deletion is the finalizer's business
    namespace, name = meta["namespace"], meta["name"]
    status = dict(sfd.get("status") or {})
    generation = meta.get("generation")
    try:
        spec = SnowflakeDeploymentSpec.model_validate(dict(sfd["spec"]))
    except ValidationError as error:
        _report(sfd, status, _invalid(status, generation, f"invalid SnowflakeDeployment spec: {error}"))
        return
    ftj = None
    if spec.source.fine_tune_job_ref is not None:
        ftj = next(iter(finetunejobs.get((namespace, spec.source.fine_tune_job_ref.name), ())), None)
    gates = evaluate_gates(spec, ftj, generation)
    job, pods, rev = None, [], None
    if gates.blocked is None:
        try:
            target = _target(sfd, spec)
            rev, objects = deploy_objects(target, spec, gates.model, status.get("functionName"))
        except InvalidDeployment as error:
            _report(sfd, status, _invalid(status, generation, str(error)))
            return
        jobs = deploy_jobs.get((namespace, name), ())
        job = next((found for found in jobs if found["metadata"]["name"] == target.deploy_name), None)
        if job is not None and job["metadata"]["annotations"].get(REVISION_ANNOTATION) != rev:
            # a new model or config: deploy again
            kube.delete("batch/v1", "Job", target.deploy_name, namespace, uid=job["metadata"]["uid"])
            job = None
        if job is None:
            kube.apply(objects[0])  # the ConfigMap first: the Job's pod reads it
            try:
                job = kube.apply(objects[1])
            except kube.REFUSED:
                if kube.get("batch/v1", "Job", target.deploy_name, namespace) is None:
                    raise
                return  # the outdated Job of that name is still going (its template cannot change); its end re-syncs
        uid = job["metadata"].get("uid")
        indexed = deploy_pods.get((namespace, name), ())
        pods = [pod for pod in indexed if pod["metadata"]["labels"][JOB_UID_LABEL] == uid]
        if job_finished(job) and deploy_report(pods) is None:
            # The pod watch may bring the deployer's outcome after the Job watch brings the Job's end.
            pods = kube.list_objects("v1", "Pod", namespace, f"{JOB_UID_LABEL}={uid}")
    _report(sfd, status, observe(gates, job, pods, rev, status, generation))


def _invalid(status: dict[str, Any], generation: int | None, message: str) -> dict[str, Any]:
    conditions = merge_conditions(status.get("conditions"), status_conditions("Failed", False, "InvalidSpec", message,
                                                                           generation))
    return {"observedGeneration": generation, "phase": "Failed", "message": message, "conditions": conditions}


def _report(sfd: Mapping[str, Any], status: dict[str, Any], update: dict[str, Any]) -> None:
    metrics.observe_phase(KIND, sfd["metadata"]["uid"], update["phase"])
    if all(status.get(key) == value for key, value in update.items()):
        return
    meta = sfd["metadata"]
    try:
        kube.apply_status(API_VERSION, KIND, meta["name"], meta["namespace"], update,
                          resource_version=meta["resourceVersion"])
    except (ConflictError, NotFoundError):
        return  # computed from an older view (the event of the newer one recomputes it), or it is gone
    if status.get("phase") != update["phase"]:
        kind = "Warning" if update["phase"] == "Failed" else "Normal"
        kopf.event(sfd, type=kind, reason=update["phase"], message=update["message"][:1024])


@kopf.on.delete(GROUP, VERSION, PLURAL)
def drop_function(body: kopf.Body, status: kopf.Status, name: str, namespace: str, uid: str, **_: Any) -> None:
    """The finalizer: with deletionPolicy Delete, drop the UDF from the account before the object goes
    (in local mode, from the local account on the deploy Job's models volume). Retain lets go at once."""
    metrics.observe_phase(KIND, uid, None)
    try:
        spec = SnowflakeDeploymentSpec.model_validate(dict(body["spec"]))
    except ValidationError:
        return  # never deployable, so nothing to drop
    if spec.deletion_policy == "Retain":
        return
    deploy_job = kube.get("batch/v1", "Job", f"{name}-deploy", namespace)
    if not status.get("functionName") and not deployer_started(deploy_job):
        return  # no deployer ever ran (no Job, or its pod never started, e.g. no node could take it): nothing to drop
    target = _target(dict(body), spec)
    account_claim = models_claim(deploy_job) if target.local else None
    if target.local and account_claim is None:
        return  # the local account is on the deploy Job's models volume: no deploy Job, no account
    job = kube.get("batch/v1", "Job", target.drop_name, namespace)
    if job is None:
        # A terminating namespace takes no new objects, and may already have lost the operator's rights.
        if _terminating(namespace):
            if not target.local:  # a local account goes with the namespace's volumes
                _drop_blocked(body, status, spec, namespace)
            return
        try:
            for obj in drop_objects(target, spec, status.get("functionName"), account_claim):
                kube.apply(obj)
        except ForbiddenError:
            if not _terminating(namespace):
                raise
            if not target.local:
                _drop_blocked(body, status, spec, namespace)
            return
        _deleting(body, status, f"dropping {spec.snowflake.function_name} (the drop Job {target.drop_name} runs)")
        raise kopf.TemporaryError("waiting for the drop Job", delay=DROP_POLL_SECONDS)
    outcome = job_finished(job)
    if outcome == "Complete":
        kopf.event(body, type="Normal", reason="Dropped", message=f"dropped the function of {name}")
        return
    if outcome == "Failed":
        message = (
            f"the drop Job {target.drop_name} failed; retrying in {DROP_RETRY_SECONDS}s "
            "(set spec.deletionPolicy: Retain to delete without dropping the function)"
        )
        _deleting(body, status, message)
        kopf.event(body, type="Warning", reason="DropFailed", message=message)
        kube.delete("batch/v1", "Job", target.drop_name, namespace)
        raise kopf.TemporaryError(message, delay=DROP_RETRY_SECONDS)
    raise kopf.TemporaryError("waiting for the drop Job", delay=DROP_POLL_SECONDS)


def _terminating(namespace: str) -> bool:
    found = kube.get("v1", "Namespace", namespace)
    return found is None or bool(found["metadata"].get("deletionTimestamp"))


def _drop_blocked(body: kopf.Body, status: kopf.Status, spec: SnowflakeDeploymentSpec, namespace: str) -> None:
    """The namespace is going away, so no drop Job can run: say which function stays behind, on the
    SnowflakeDeployment and (as its namespace cannot take new Events) on its Project, and let go."""
    function = f"{spec.snowflake.database}.{spec.snowflake.schema_}.{spec.snowflake.function_name}"
    message = (
        f"namespace {namespace} is being deleted, so the function {function} of SnowflakeDeployment "
        f"{body['metadata']['name']} could not be dropped: drop it by hand"
    )
    generation = body["metadata"].get("generation")
    verdict = status_conditions("Deleting", False, "DropBlocked", message, generation)
    update = {"conditions": applied_conditions(status.get("conditions"), verdict), "message": message}
    kube.apply_status(API_VERSION, KIND, body["metadata"]["name"], namespace, update,
                      field_manager=kube.FINALIZER_MANAGER)
    project = kube.get(API_VERSION, "Project", namespace)
    kopf.event(project or body, type="Warning", reason="DropBlocked", message=message)


def _deleting(body: kopf.Body, status: kopf.Status, message: str) -> None:
    generation = body["metadata"].get("generation")
    verdict = status_conditions("Deleting", False, "Deleting", message, generation)
    update = {"phase": "Deleting", "message": message, "conditions": applied_conditions(status.get("conditions"),
                                                                                         verdict)}
    kube.apply_status(API_VERSION, KIND, body["metadata"]["name"], body["metadata"]["namespace"], update,
                      field_manager=kube.FINALIZER_MANAGER)
