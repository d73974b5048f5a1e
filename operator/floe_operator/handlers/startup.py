"""Operator start-up: kopf settings, Kubernetes client config, metrics server."""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

import kopf

from floe_operator import GROUP, kube, metrics
from floe_operator.settings import OperatorSettings

# kopf's INFO line after every successful handler run (each watch event of each Job and pod) and after each
# resume: they report no change, and there is one per watch event of every trainer Job and pod.
_ROUTINE = re.compile(r"^(\w+ '[^']*' succeeded|Resuming is processed: \d+ succeeded; 0 failed)\.$")


def _not_routine(record: logging.LogRecord) -> bool:
    return record.levelno != logging.INFO or not _ROUTINE.match(record.getMessage())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Handler progress and the last-handled spec live in annotations: status belongs to floe.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Only explicit kopf.event() calls become Kubernetes Events; log lines (which may quote
    # arbitrary API errors) never do.
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    # Events say they come from floe (`kubectl describe`'s From column), not from the framework.
    settings.posting.reporting_component = "floe-operator"
    settings.posting.reporting_instance = socket.gethostname()  # the pod's name in a cluster
    settings.posting.event_name_prefix = "floe-event-"
    settings.watching.server_timeout = 300
    # Handlers are synchronous and mostly wait on the API server: asyncio's default pool (CPUs + 4 threads)
    # let a burst of creations queue behind a handful of round trips.
    settings.execution.max_workers = kube.API_THREADS
    logging.getLogger("kopf.objects").addFilter(_not_routine)
    kube.load_config()
    operator_settings = OperatorSettings.from_env()
    metrics.serve(operator_settings.metrics_port)
    logger.info(
        "floe operator configured: trainer image %s, metrics on :%d",
        operator_settings.trainer_image,
        operator_settings.metrics_port,
    )
