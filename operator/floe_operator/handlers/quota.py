"""QuotaExceeded on FineTuneJobs and Workspaces whose pods the namespace's ResourceQuota refuses.

The Job and StatefulSet controllers keep retrying pod creation with back-off, so raising the quota is
enough for a workload to proceed; this timer notices both the refusal and the recovery.
"""

from __future__ import annotations

import kopf
from kubernetes import client

from floe_operator import GROUP, VERSION
from floe_operator.builders.finetunejob import trainer_object_name
from floe_operator.builders.quota import QUOTA_CONDITION, QuotaProblem, quota_problem
from floe_operator.conditions import condition, get_condition, merge_conditions

CHECK_INTERVAL_S = 5.0


def _events_of(namespace: str, uid: str) -> list[dict]:
    events = client.CoreV1Api().list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid}")
    return client.ApiClient().sanitize_for_serialization(events.items)


def record_quota(plural, namespace, name, body, problem: QuotaProblem | None) -> None:
    """Set QuotaExceeded True with the explanation, or False once pods exist again."""
    previous = get_condition((body.get("status") or {}).get("conditions"), QUOTA_CONDITION)
    if problem is None and (previous is None or previous.get("status") != "True"):
        return
    if problem:
        update = condition(QUOTA_CONDITION, True, "QuotaExceeded", problem.message)
    else:
        update = condition(QUOTA_CONDITION, False, "WithinQuota", "all pods were created once the quota allowed them")
    if previous and all(previous.get(k) == update[k] for k in ("status", "reason", "message")):
        return
    conditions = merge_conditions((body.get("status") or {}).get("conditions"), [update])
    # Only onto the version these conditions were merged into: the list is replaced whole, and the status
    # handlers write it too. A newer version is checked again at the next tick.
    version = {"resourceVersion": body["metadata"]["resourceVersion"]}
    try:
        client.CustomObjectsApi().patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"metadata": version, "status": {"conditions": conditions}}
        )
    except client.ApiException as error:
        if error.status == 409:
            return
        raise
    if problem:
        kopf.warn(body, reason="QuotaExceeded", message=problem.message)
    else:
        kopf.info(body, reason="WithinQuota", message=update["message"])


def _waiting_for_pods(status, **_) -> bool:
    """Only a workload still waiting for its pods can be held back by the quota (or was, and recovers): a
    running or finished one costs no checks at all."""
    status = status or {}
    refused = (get_condition(status.get("conditions"), QUOTA_CONDITION) or {}).get("status") == "True"
    return status.get("phase") in (None, "Pending") or refused


# The first check one interval after creation: most jobs have their pods by then and are never checked.
@kopf.timer(
    GROUP, VERSION, "finetunejobs", interval=CHECK_INTERVAL_S, initial_delay=CHECK_INTERVAL_S, when=_waiting_for_pods
)
def finetunejob_quota(name, namespace, uid, body, **_):
    try:  # the trainer Job by its name, not a list of the namespace's Jobs
        job = client.BatchV1Api().read_namespaced_job(trainer_object_name(name), namespace)
    except client.ApiException as error:
        if error.status == 404:
            return
        raise
    owned = any(o.uid == uid for o in job.metadata.owner_references or ())
    if not owned or job.spec.suspend:
        return
    remaining = (job.spec.completions or 1) - (job.status.succeeded or 0)
    wanted = min(job.spec.parallelism if job.spec.parallelism is not None else 1, remaining)
    problem = quota_problem(wanted, job.status.active or 0, _events_of(namespace, job.metadata.uid))
    record_quota("finetunejobs", namespace, name, body, problem)


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
    problem = quota_problem(sts.spec.replicas or 0, sts.status.replicas or 0, _events_of(namespace, sts.metadata.uid))
    record_quota("workspaces", namespace, name, body, problem)
