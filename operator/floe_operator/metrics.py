"""Prometheus metrics of the operator, served on FLOE_METRICS_PORT (default 8000)."""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from floe_operator.catalog import CatalogError, UnknownName, load_catalog

RECONCILES = Counter("floe_reconcile_total", "Reconcile handler runs by resource kind and result.", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "floe_reconcile_duration_seconds",
    "Time spent in reconcile handlers by resource kind.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESOURCES = Gauge("floe_resources", "floe resources by kind and phase.", ["kind", "phase"])

# kind -> object uid -> phase, and kind -> phase -> count. Handlers of many objects run on several threads at
# once, so every update holds the lock, and costs O(1): no pass over all objects per event.
_lock = threading.Lock()
_phases: dict[str, dict[str, str]] = {}
_phase_counts: dict[str, dict[str, int]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def _result(error: BaseException | None) -> str:
    if error is None:
        return "success"
    if isinstance(error, kopf.TemporaryError):
        return "retry"
    return "error"


def reconciled(kind: str) -> Callable[[F], F]:
    """Count and time a handler (sync or async) under ``kind``."""

    def decorate(handler: F) -> F:
        def record(started: float, error: BaseException | None) -> None:
            RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
            RECONCILES.labels(kind, _result(error)).inc()

        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    result = await handler(*args, **kwargs)
                except BaseException as error:
                    record(started, error)
                    raise
                record(started, None)
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = handler(*args, **kwargs)
            except BaseException as error:
                record(started, error)
                raise
            record(started, None)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def observe_phase(kind: str, uid: str, phase: str | None) -> None:
    """Record an object's phase (None: the object is gone)."""
    with _lock:
        phases, counts = _phases.setdefault(kind, {}), _phase_counts.setdefault(kind, {})
        previous = phases.pop(uid, None) if phase is None else phases.get(uid)
        if previous == phase:
            return
        if previous is not None:
            counts[previous] -= 1
            RESOURCES.labels(kind, previous).set(counts[previous])
        if phase is not None:
            phases[uid] = phase
            counts[phase] = counts.get(phase, 0) + 1
            RESOURCES.labels(kind, phase).set(counts[phase])


@functools.cache  # a standby replica serves before it leads; kopf's start-up then finds it served
def serve(port: int) -> None:
    start_http_server(port)


# ---- Per-object series, kept up to date from watch events ------------------------------------
# Each watch event on a FineTuneJob or SnowflakeDeployment replaces that object's series from its
# spec and status, so the numbers follow what the trainer and deployer write, not only what the
# operator's own handlers see. Deleted objects drop out.

FINETUNEJOB_PHASE = Gauge(
    "floe_finetunejob_phase", "1 for the current phase of each FineTuneJob.", ["namespace", "name", "phase"]
)
FINETUNEJOB_PROGRESS = Gauge(
    "floe_finetunejob_progress_ratio", "Share of training steps done (0..1).", ["namespace", "name"]
)
FINETUNEJOB_LOSS = Gauge("floe_finetunejob_loss", "Last training loss the trainer reported.", ["namespace", "name"])
FINETUNEJOB_ROUGE_L = Gauge("floe_finetunejob_rouge_l", "ROUGE-L of the last evaluation.", ["namespace", "name"])
GPUS_REQUESTED = Gauge(
    "floe_gpus_requested", "GPUs asked for by FineTuneJobs that are pending or running.", ["namespace"]
)
GPUS_IN_USE = Gauge("floe_gpus_in_use", "GPUs held by running FineTuneJobs.", ["namespace"])
SNOWFLAKEDEPLOYMENT_PHASE = Gauge(
    "floe_snowflakedeployment_phase",
    "1 for the current phase of each SnowflakeDeployment.",
    ["namespace", "name", "phase"],
)
DEPLOYMENT_OUTCOMES = Counter(
    "floe_snowflake_deployments_total",
    "SnowflakeDeployments this operator saw reach an outcome (Deployed or Failed).",
    ["outcome"],
)

_job_series: dict[str, tuple[str, str, str, int]] = {}  # uid -> (namespace, name, phase, gpus)
_deployment_phases: dict[str, tuple[str, str, str]] = {}  # uid -> (namespace, name, phase)
_gpus_requested: dict[str, int] = {}  # namespace -> GPUs of its pending and running jobs
_gpus_in_use: dict[str, int] = {}  # namespace -> GPUs of its running jobs


def _replace_phase_series(known: dict, gauge, uid: str, phase: str, deleted: bool) -> tuple | None:
    """Forgets an object's last (namespace, name, phase, ...) and drops its phase series when the phase
    changed or the object is gone; returns what was known."""
    previous = known.pop(uid, None)
    if previous and (deleted or previous[2] != phase):
        gauge.remove(*previous[:3])
    return previous


def _job_gpus(spec: dict) -> int:
    resources = spec.get("resources") or {}
    gpus = int(resources.get("gpus", 1))
    if spec.get("computeProfile"):  # the profile's GPU count replaces spec.resources.gpus
        try:
            gpus = load_catalog().profile(spec["computeProfile"]).gpus
        except (UnknownName, CatalogError):
            pass
    return gpus * int(resources.get("workers", 1))


def observe_finetunejob(body: dict, deleted: bool = False) -> None:
    """Update a FineTuneJob's series from its object (``deleted``: remove them)."""
    meta, status = body.get("metadata", {}), body.get("status") or {}
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    phase = status.get("phase") or "Pending"
    with _lock:
        previous = _replace_phase_series(_job_series, FINETUNEJOB_PHASE, uid, phase, deleted)
        if previous:
            _count_gpus(previous[0], previous[2], -previous[3])
        if deleted:
            for gauge in (FINETUNEJOB_PROGRESS, FINETUNEJOB_LOSS, FINETUNEJOB_ROUGE_L):
                try:
                    gauge.remove(namespace, name)
                except KeyError:
                    pass
            return
        gpus = _job_gpus(body.get("spec") or {})
        _job_series[uid] = (namespace, name, phase, gpus)
        _count_gpus(namespace, phase, gpus)
        FINETUNEJOB_PHASE.labels(namespace, name, phase).set(1)
        progress, metrics = status.get("progress") or {}, status.get("metrics") or {}
        percent = 100.0 if phase == "Succeeded" else progress.get("percent")
        if percent is not None:
            FINETUNEJOB_PROGRESS.labels(namespace, name).set(float(percent) / 100.0)
        if progress.get("loss") is not None:
            FINETUNEJOB_LOSS.labels(namespace, name).set(float(progress["loss"]))
        if metrics.get("rougeL") is not None:
            FINETUNEJOB_ROUGE_L.labels(namespace, name).set(float(metrics["rougeL"]))


def _count_gpus(namespace: str, phase: str, gpus: int) -> None:
    """Add (or with negative ``gpus``, take away) one job's GPUs in ``phase`` to its namespace's gauges."""
    if phase in ("Pending", "Running"):
        _gpus_requested[namespace] = _gpus_requested.get(namespace, 0) + gpus
    if phase == "Running":
        _gpus_in_use[namespace] = _gpus_in_use.get(namespace, 0) + gpus
    GPUS_REQUESTED.labels(namespace).set(_gpus_requested.get(namespace, 0))
    GPUS_IN_USE.labels(namespace).set(_gpus_in_use.get(namespace, 0))


def observe_snowflakedeployment(body: dict, deleted: bool = False) -> None:
    """Update a SnowflakeDeployment's series; count an outcome when its phase changes to one."""
    meta, status = body.get("metadata", {}), body.get("status") or {}
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    phase = status.get("phase") or "Pending"
    with _lock:
        previous = _replace_phase_series(_deployment_phases, SNOWFLAKEDEPLOYMENT_PHASE, uid, phase, deleted)
        if deleted:
            return
        _deployment_phases[uid] = (namespace, name, phase)
        SNOWFLAKEDEPLOYMENT_PHASE.labels(namespace, name, phase).set(1)
        # Only transitions seen by this process count: a restart does not count old outcomes again.
        if previous and previous[2] != phase and phase in ("Deployed", "Failed"):
            DEPLOYMENT_OUTCOMES.labels(phase).inc()


@kopf.on.event("floe.dev", "v1alpha1", "snowflakedeployments")
async def _snowflakedeployment_event(event: dict, body: kopf.Body, **_: Any) -> None:
    deleted = event.get("type") == "DELETED"
    observe_snowflakedeployment(dict(body), deleted=deleted)
    if deleted:
        observe_phase("SnowflakeDeployment", body["metadata"]["uid"], None)
