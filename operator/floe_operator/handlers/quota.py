"""QuotaExceeded on FineTuneJobs and Workspaces whose pods the namespace's ResourceQuota refuses.

The Job and StatefulSet controllers keep retrying pod creation with back-off, so raising the quota is
enough for a workload to proceed. A trainer Job's refusals arrive as FailedCreate Events through a watch
that the API server narrows to them (its recovery is seen by the FineTuneJob's status handler when the pods
appear); a Workspace's StatefulSet is checked by a timer while the Workspace waits for its pod. The Job
controller records a refusal only as an Event: no condition of the Job says so.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client

from floe_operator import API_VERSION, GROUP, VERSION, kube
from floe_operator.builders.finetunejob import finetunejob_of, trainer_pods_wanted_and_created
from floe_operator.builders.quota import (
    QUOTA_CONDITION,
    RECOVERED_MESSAGE,
    QuotaProblem,
    parse_quota_error,
    quota_problem,
)
from floe_operator.conditions import applied_conditions, condition, get_condition
from floe_operator.handlers import trainer_workloads

CHECK_INTERVAL_S = 5.0
KINDS = {"finetunejobs": "FineTuneJob", "workspaces": "Workspace"}
# The only Events the operator acts on, selected by the API server: kopf's own field= filter runs in the
# operator, after every Event of the cluster has been sent to it.
REFUSED_POD_EVENTS = "reason=FailedCreate,involvedObject.kind=Job"


@kopf.on.startup()
def watch_refused_pod_events_only(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.field_selectors["", "v1", "events"] = REFUSED_POD_EVENTS


def _events_of(namespace: str, uid: str) -> list[dict]:
    events = client.CoreV1Api().list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid}")
    return client.ApiClient().sanitize_for_serialization(events.items)


def record_quota(plural: str, namespace: str, name: str, body: Any, problem: QuotaProblem | None) -> None:
    """Set QuotaExceeded True with the explanation, or False once pods exist again. The condition is this
    module's alone (its own field manager): the API server merges it with the status handlers' conditions."""
    status = body.get("status") or {}
    previous = get_condition(status.get("conditions"), QUOTA_CONDITION)
    if problem is None and (previous is None or previous.get("status") != "True"):
        return
    if problem:
        update = condition(QUOTA_CONDITION, True, "QuotaExceeded", problem.message)
    else:
        update = condition(QUOTA_CONDITION, False, "WithinQuota", RECOVERED_MESSAGE)
    if previous and all(previous.get(k) == update[k] for k in ("status", "reason", "message")):
        return
    conditions = applied_conditions(status.get("conditions"), [update])
    kind = KINDS[plural]
    kube.apply_status(API_VERSION, kind, name, namespace, {"conditions": conditions}, kube.QUOTA_MANAGER)
    if problem:
        kopf.warn(body, reason="QuotaExceeded", message=problem.message)
    else:
        kopf.info(body, reason="WithinQuota", message=RECOVERED_MESSAGE)


@kopf.on.event("", "v1", "events")
def refused_trainer_pods(body: kopf.Body, namespace: str, finetunejobs: kopf.Index, **_: Any) -> None:
    """A trainer Job could not create a pod: QuotaExceeded on its FineTuneJob when the quota is why and the
    pod is still missing (an old Event, e.g. seen again at start-up, says nothing about now)."""
    involved = body.get("involvedObject") or {}
    name = finetunejob_of(involved.get("name") or "")
    problem = parse_quota_error(body.get("message") or "") if name else None
    ftj = next(iter(finetunejobs.get((namespace, name), ())), None) if problem else None
    if ftj is None:
        return
    job = trainer_workloads.own_job(namespace, name, ftj["metadata"]["uid"])
    if job is None or job["metadata"]["uid"] != involved.get("uid"):
        return
    wanted, created = trainer_pods_wanted_and_created(job)
    if created < wanted:
        record_quota("finetunejobs", namespace, name, ftj, problem)


def _waiting_for_pods(status, **_) -> bool:
    """Only a workload still waiting for its pods can be held back by the quota (or was, and recovers): a
    running or stopped one costs no checks at all."""
    status = status or {}
    refused = (get_condition(status.get("conditions"), QUOTA_CONDITION) or {}).get("status") == "True"
    return status.get("phase") in (None, "Pending") or refused


@kopf.timer(
    GROUP, VERSION, "workspaces", interval=CHECK_INTERVAL_S, initial_delay=CHECK_INTERVAL_S, when=_waiting_for_pods
)
def workspace_quota(name, namespace, body, **_):
    apps = client.AppsV1Api()
    try:
        sts = apps.read_namespaced_stateful_set(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return
        raise
    wanted, created = sts.spec.replicas or 0, sts.status.replicas or 0
    events = _events_of(namespace, sts.metadata.uid) if created < wanted else []
    record_quota("workspaces", namespace, name, body, quota_problem(wanted, created, events))
