"""Operator start-up: kopf settings, Kubernetes client config, metrics server."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import socket
from typing import Any

import kopf

from floe_operator import GROUP, kube, metrics
from floe_operator.builders.common import APP_NAME_LABEL
from floe_operator.builders.project import PROJECT_LABEL
from floe_operator.builders.snowflakedeployment import DEPLOY_APP
from floe_operator.builders.workspace import WORKSPACE_APP
from floe_operator.settings import OperatorSettings

# kopf's INFO line after every successful handler run (each watch event of each Job and pod) and after each
# resume: they report no change, and there is one per watch event of every Job and pod kopf follows.
_ROUTINE = re.compile(r"^(\w+ '[^']*' succeeded|Resuming is processed: \d+ succeeded; 0 failed)\.$")


def _not_routine(record: logging.LogRecord) -> bool:
    return record.levelno != logging.INFO or not _ROUTINE.match(record.getMessage())


# What kopf's handlers follow of the cluster's pods, Jobs and StatefulSets (by APP_NAME_LABEL) and ServiceAccounts,
# selected by the API server: the handlers' own label filters run in the operator, after every object of the
# cluster, floe's or not, has been sent to it and parsed, on each of its changes. Trainer Jobs and pods are
# followed by informers of their own (handlers/trainer_workloads.py).
WATCHED_APPS = {
    ("", "v1", "pods"): (DEPLOY_APP, WORKSPACE_APP),
    ("batch", "v1", "jobs"): (DEPLOY_APP,),
    ("apps", "v1", "statefulsets"): (WORKSPACE_APP,),
}
WATCHED_SERVICE_ACCOUNTS = PROJECT_LABEL  # each Project's trainer account, not each job's


# Python's cyclic collector runs after every 700 objects allocated net and, now and then, scans every object of the
# heap, which holds each watched object as kopf and the indexes keep it: in a burst of 5,000 FineTuneJobs it took 14%
# of the operator's CPU (py-spy --native). Freezing what start-up made (modules, schemas) keeps it out of every
# scan, and a collection every 10,000 objects makes them rarer; what refcounting frees never reaches the collector.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_garbage_collection() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation storage of the last-handled spec, cheaper to build. kopf builds the essence of every
    watched object on each of its events (each pod and Job event too) by deep-copying all of it,
    managedFields and status included, and then dropping most: an eighth of the operator's CPU in a burst of
    1,000 FineTuneJobs. Only floe's own kinds have creation and update handlers, which are what read it: theirs is
    built from a copy of what it keeps, the others' not at all."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("apiVersion", "").split("/")[0] != GROUP:
            return kopf.BodyEssence()
        meta = body.get("metadata", {})
        kept = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        # labels and annotations are the essence's; ownerReferences name its key (kopf's Deployment case)
        kept["metadata"] = {key: meta[key] for key in ("labels", "annotations", "ownerReferences") if key in meta}
        if extra_fields and "status" in body:  # handlers that follow fields outside the spec
            kept["status"] = body["status"]
        return super().build(body=kopf.Body(kept), extra_fields=extra_fields)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Handler progress and the last-handled spec live in annotations: status belongs to floe.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    for resource, apps in WATCHED_APPS.items():
        settings.watching.label_selectors[resource] = f"{APP_NAME_LABEL} in ({','.join(apps)})"
    settings.watching.label_selectors["", "v1", "serviceaccounts"] = WATCHED_SERVICE_ACCOUNTS
    # Only explicit kopf.event() calls become Kubernetes Events; log lines (which may quote
    # arbitrary API errors) never do.
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    # Events say they come from floe (`kubectl describe`'s From column), not from the framework.
    settings.posting.reporting_component = "floe-operator"
    settings.posting.reporting_instance = socket.gethostname()  # the pod's name in a cluster
    settings.posting.event_name_prefix = "floe-event-"
    settings.watching.server_timeout = 300
    # Handlers that write wait on the API server in threads: asyncio's default pool (CPUs + 4 threads) let a
    # burst of creations queue behind a handful of round trips. Async handlers hand their writes to the same pool.
    settings.execution.max_workers = kube.API_THREADS
    asyncio.get_running_loop().set_default_executor(settings.execution.executor)
    logging.getLogger("kopf.objects").addFilter(_not_routine)
    kube.load_config()
    operator_settings = OperatorSettings.from_env()
    metrics.serve(operator_settings.metrics_port)
    tune_garbage_collection()  # last: what start-up made is frozen
    logger.info(
        "floe operator configured: trainer image %s, metrics on :%d",
        operator_settings.trainer_image,
        operator_settings.metrics_port,
    )
