"""FineTuneJob -> trainer RBAC, (Service,) Job (the trainer's config in its pod template); status follows the Job
and its pods.

One reconcile per FineTuneJob (`reconcile`), run from a work queue (workqueue.py) that every event of the
FineTuneJob, its trainer Job and its pods adds the job to: however many events arrive while it waits, it runs
once, from the newest views, and never twice at once for one job. The FineTuneJobs and the Projects' trainer
ServiceAccounts are kept in kopf indexes (kopf fills them before any handler runs), the trainer Jobs and their
pods by informers (trainer_workloads.py; a reconcile waits for their first listings, so a restart finds every
Job): creating and following a job reads nothing from the API server, and its status is written only when it
changes. A view that does not yet show this process's last write of the status writes only if the FineTuneJob is
still at that view (a resourceVersion precondition; refused, the FineTuneJob event of the newer write queues it
again).

Writers of the status, each under its own field manager (server-side apply merges the conditions by type):
this module (phase, message, Ready, Reconciling, Stalled, Running, Failed...), handlers/quota.py
(QuotaExceeded) and the trainer (status.progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError
from pydantic import ValidationError

from floe_operator import API_VERSION, GROUP, VERSION, kube, metrics
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.api.project import Repository
from floe_operator.builders.finetunejob import (
    KIND,
    QUEUE_LABEL,
    SpecFacts,
    TrainerTarget,
    observe,
    trainer_object_name,
    trainer_objects,
    trainer_pods_wanted_and_created,
)
from floe_operator.builders.project import PROJECT_LABEL, TRAINER_SERVICE_ACCOUNT
from floe_operator.builders.quota import QUOTA_CONDITION, quota_recovery
from floe_operator.catalog import UnknownName, load_catalog
from floe_operator.conditions import applied_conditions, condition, is_terminal, status_conditions, status_unchanged
from floe_operator.handlers import trainer_workloads
from floe_operator.handlers.quota import record_quota
from floe_operator.settings import OperatorSettings
from floe_operator.workqueue import WorkQueue

PLURAL = "finetunejobs"
# The status this process last wrote to each FineTuneJob (by uid), without transition times, and the
# resourceVersion of the view it was computed from. The watch brings a write back only after a while; until
# then every Job and pod event recomputes it from the older view, and would send it again only to be refused.
_written: dict[str, tuple[dict[str, Any], str]] = {}
# What each FineTuneJob's status follows of its spec, as parsed at its generation (by uid): every run reads it.
_specs: dict[str, tuple[int | None, SpecFacts]] = {}
# The FineTuneJobs (by uid) whose trainer objects this process applied, or whose spec it failed for good: their
# Job is on its way through the watch (or never comes), and is not applied again meanwhile.
_applied: set[str] = set()
# Reconciles run at once (each waits on the API server in a thread when it writes): as many as kube's threads.
RECONCILE_WORKERS = kube.API_THREADS
_queue: WorkQueue[tuple[str, str]] | None = None


@kopf.index("", "v1", "serviceaccounts", labels={PROJECT_LABEL: kopf.PRESENT},
            when=lambda name, **_: name == TRAINER_SERVICE_ACCOUNT)
async def trainer_identities(namespace: str, body: kopf.Body, **_: Any) -> dict:
    """Each Project's trainer ServiceAccount, which every job's own account inherits from."""
    return {namespace: {"metadata": {"annotations": dict(body["metadata"].get("annotations") or {})},
                        "imagePullSecrets": list(body.get("imagePullSecrets") or ())}}


@kopf.index(GROUP, VERSION, PLURAL)
async def finetunejobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict:
    meta = body["metadata"]
    kept = {key: meta.get(key) for key in ("name", "namespace", "uid", "generation", "resourceVersion", "labels")}
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


@dataclass(frozen=True)
class Views:
    """What kopf's watches last showed, live: the FineTuneJobs and the Projects' trainer ServiceAccounts (the
    trainer Jobs and pods are trainer_workloads' stores)."""

    finetunejobs: kopf.Index
    trainer_identities: kopf.Index


def _enqueue(key: tuple[str, str], indexes: Mapping[str, Any]) -> None:
    """Queue a FineTuneJob's reconcile (`indexes`: a FineTuneJob event handler's kwargs, kopf's indexes among
    them). The first call starts the workers and the trainer Jobs' and pods' watches, from kopf's handling of an
    event: the reconciles post their Events through what kopf keeps in that context."""
    global _queue
    if _queue is None:
        views = Views(indexes["finetunejobs"], indexes["trainer_identities"])
        _queue = WorkQueue(KIND, lambda queued: reconcile(views, queued), RECONCILE_WORKERS, _reference)
        _queue.start()
        trainer_workloads.start(_queue.add)
    _queue.add(key)


def _reference(key: tuple[str, str]) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": KIND, "namespace": key[0], "name": key[1]}


@kopf.on.cleanup()
async def stop_reconciling(**_: Any) -> None:
    global _queue
    if _queue is not None:
        trainer_workloads.stop()
        await _queue.stop()
        _queue = None


@kopf.on.event(GROUP, VERSION, PLURAL)
async def finetunejob_event(type: str, body: kopf.Body, namespace: str, name: str, uid: str, **indexes: Any) -> None:
    deleted = type == "DELETED"
    metrics.observe_finetunejob(dict(body), deleted=deleted)
    if deleted:  # without a finalizer no delete handler is sure to run; the watch always tells
        metrics.observe_phase(KIND, uid, None)
        _written.pop(uid, None)
        _specs.pop(uid, None)
        _applied.discard(uid)
        if _queue is not None:
            _queue.forget((namespace, name))
        return
    _enqueue((namespace, name), indexes)


@metrics.reconciled(KIND)
async def reconcile(views: Views, key: tuple[str, str]) -> None:
    """Bring one FineTuneJob about, from the newest views: its trainer's objects applied while it has no Job,
    the Job's suspend flag following the spec, the status following the Job and pods. On the event loop: most
    runs change nothing, and a thread for each cost more than the run; only writes wait in threads. Raises
    kopf.TemporaryError to be queued again after its delay."""
    await trainer_workloads.synced()  # a Job not yet listed is not a missing Job
    namespace, name = key
    ftj = next(iter(views.finetunejobs.get(key, ())), None)
    if ftj is None:
        return  # gone
    meta, status = ftj["metadata"], ftj["status"]
    uid, terminal = meta["uid"], is_terminal(status.get("phase"))
    job = trainer_workloads.own_job(namespace, name, uid)
    if job is None:
        # a finished job's Job may be gone (ttlSecondsAfterFinished): never start it again
        if not terminal and uid not in _applied:
            identity = next(iter(views.trainer_identities.get(namespace, ())), None)
            await asyncio.to_thread(_create_children, ftj, identity)
            _applied.add(uid)
        return
    try:
        facts = _spec_facts(ftj)
    except ValidationError as error:
        await asyncio.to_thread(_fail, ftj, "InvalidSpec", f"invalid FineTuneJob spec: {error}")
        return
    queued = bool((meta.get("labels") or {}).get(QUEUE_LABEL))
    if not terminal and _suspend_change(job, facts.suspend, queued=queued):
        suspend = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"suspend": facts.suspend},
                   "metadata": {"name": trainer_object_name(name), "namespace": namespace}}
        await asyncio.to_thread(kube.apply, suspend, kube.SUSPEND_MANAGER)
    await sync_status(ftj, facts, job, list(trainer_workloads.PODS.get(key)))


def _create_children(ftj: Mapping[str, Any], identity: dict | None) -> None:
    """Apply the trainer's objects, the Job last: once it exists, so does everything it needs. A spec that can
    never work fails the FineTuneJob; a missing Project setting raises kopf.TemporaryError."""
    meta = ftj["metadata"]
    namespace = meta["namespace"]
    try:
        parsed = FineTuneJobSpec.model_validate(dict(ftj["spec"]))
    except ValidationError as error:
        _fail(ftj, "InvalidSpec", f"invalid FineTuneJob spec: {error}")
        return
    settings = OperatorSettings.from_env()
    catalog = load_catalog()
    try:
        template = catalog.template(parsed.template) if parsed.template else None
        profile = catalog.profile(parsed.compute_profile) if parsed.compute_profile else None
    except UnknownName as error:
        field = "spec.template" if error.kind == "template" else "spec.computeProfile"
        _fail(ftj, "InvalidSpec", f"{field}: {error}")
        return
    target = TrainerTarget(
        namespace=namespace,
        name=meta["name"],
        uid=meta["uid"],
        image=parsed.image or (template.trainer_image if template else settings.trainer_image),
        profile=profile,
        repository=_repository(ftj, namespace) if parsed.code else None,
        identity=identity,
        snowflake_secret=_snowflake_secret(ftj, parsed, namespace),
        image_pull_policy=settings.image_pull_policy,
        queue_name=(meta.get("labels") or {}).get(QUEUE_LABEL),
    )
    for obj in trainer_objects(target, parsed):
        try:
            kube.apply(obj)
        except kube.REFUSED as error:  # the spec asks for what the API server will never accept: no retry
            _fail(ftj, "InvalidSpec", f"the API server refused the trainer {obj['kind']}: {kube.server_message(error)}")
            return


def _suspend_change(job: dict, suspend: bool, queued: bool) -> bool:
    """Whether the Job's suspend flag must follow the spec. A queued Job is unsuspended by Kueue on
    admission, never by floe; suspending it is always honoured."""
    suspended = bool(job["spec"].get("suspend"))
    return (suspend and not suspended) or (not suspend and suspended and not queued)


def _snowflake_secret(ftj: Mapping[str, Any], spec: FineTuneJobSpec, namespace: str) -> str | None:
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
    _write_phase(ftj, "Pending", "MissingConnection", message)
    raise kopf.TemporaryError(message, delay=30)


def _repository(ftj: Mapping[str, Any], namespace: str) -> Repository:
    """The Project's repository, which spec.code runs code from."""
    project = kube.get(API_VERSION, "Project", namespace) or {}
    repository = (project.get("spec") or {}).get("repository")
    if repository:
        return Repository.model_validate(repository)
    message = f"spec.code runs code from the Project's repository, and the Project {namespace} has no spec.repository"
    _write_phase(ftj, "Pending", "MissingRepository", message)
    raise kopf.TemporaryError(message, delay=30)


def _fail(ftj: Mapping[str, Any], reason: str, message: str) -> None:
    _write_phase(ftj, "Failed", reason, message)


def _write_phase(ftj: Mapping[str, Any], phase: str, reason: str, message: str) -> None:
    """Phase and message, with Ready false (Stalled and Failed true when failed, else Reconciling) for `reason`;
    an Event when they change (a waiting job is retried every 30 s and must not repeat it)."""
    meta, status = ftj["metadata"], ftj["status"]
    if (status.get("phase"), status.get("message")) != (phase, message):
        event_reason = "Failed" if phase == "Failed" else reason
        kopf.event(ftj, type="Warning", reason=event_reason, message=message[:1024])
    generation = meta.get("generation")
    verdict = status_conditions(phase, False, reason, message, generation)
    if phase == "Failed":
        verdict.append(condition("Failed", True, reason, message, generation))
    # observedGeneration too: without it GitOps tools wait forever for the operator to see the spec
    update = {"phase": phase, "message": message, "conditions": applied_conditions(status.get("conditions"), verdict),
              "observedGeneration": generation}
    kube.apply_status(API_VERSION, KIND, meta["name"], meta["namespace"], update)


async def sync_status(ftj: Mapping[str, Any], facts: SpecFacts, job: dict[str, Any],
                      pods: list[dict[str, Any]]) -> None:
    """Bring the FineTuneJob's status in line with its Job and pods (as the watches last saw them); post an
    Event on each phase change. Until its Job exists, the status is the creation's."""
    meta, status = ftj["metadata"], ftj["status"]
    update = observe(facts, job, pods, status, meta.get("generation"))
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
    last, last_view = _written.get(uid, (None, None))
    if last == written:
        return
    # A view that does not show this process's last write yet (a Job or pod event ahead of the FineTuneJob's
    # own) may be older than that write: it writes only if the FineTuneJob is still at that view, so a status
    # cannot step back (e.g. Running, then Pending from a pod index one event behind).
    behind = last is not None and not status_unchanged(view, last)
    if behind and meta["resourceVersion"] == last_view:
        # The very view the last write was computed from: that write moved the FineTuneJob on, so a write
        # conditional on this view would be refused. The FineTuneJob's event of that write queues it again.
        return
    try:
        await asyncio.to_thread(kube.apply_status, API_VERSION, KIND, meta["name"], meta["namespace"], update,
                                resource_version=meta["resourceVersion"] if behind else "")
    except ConflictError:
        return  # the FineTuneJob's event of the newer write queues it again
    except NotFoundError:
        return  # it is gone
    _written[uid] = (written, meta["resourceVersion"])
    # An Event for each change of phase, but the first Pending: no news.
    if status.get("phase") != update["phase"] and (status.get("phase"), update["phase"]) != (None, "Pending"):
        kopf.event(
            ftj,
            type="Warning" if update["phase"] == "Failed" else "Normal",
            reason=update["phase"],
            message=update["message"][:1024],
        )


def _spec_facts(ftj: Mapping[str, Any]) -> SpecFacts:
    meta = ftj["metadata"]
    known = _specs.get(meta["uid"])
    if known is None or known[0] != meta.get("generation"):
        facts = SpecFacts.of(FineTuneJobSpec.model_validate(dict(ftj["spec"])))
        known = _specs[meta["uid"]] = (meta.get("generation"), facts)
    return known[1]


def _timeless(update: Mapping[str, Any]) -> dict[str, Any]:
    """A status less its conditions' transition times, which a recomputation from an older view stamps anew."""
    conditions = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in update.get("conditions") or ()]
    return {**update, "conditions": conditions}
