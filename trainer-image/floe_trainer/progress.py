"""Progress reporting: JSON lines on stdout, Prometheus gauges, the FineTuneJob's status, the termination message."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("floe_trainer")

GROUP, VERSION, PLURAL = "floe.dev", "v1alpha1", "finetunejobs"
TERMINATION_LOG_DEFAULT = "/dev/termination-log"
TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message


def emit(event: str, **fields) -> None:
    """One JSON line on stdout."""
    print(json.dumps({"event": event, **fields}), file=sys.stdout, flush=True)


def progress_patch(step: int, total_steps: int, epoch: int, loss: float | None, samples_per_second: float,
                   eta_seconds: float | None) -> dict:
    """The merge patch of a FineTuneJob's status.progress."""
    return {"status": {"progress": {
        "step": step, "totalSteps": total_steps, "epoch": epoch,
        "percent": round(100.0 * step / total_steps, 1) if total_steps else 0.0,
        "loss": None if loss is None else round(loss, 5),
        "samplesPerSecond": round(samples_per_second, 2),
        "etaSeconds": None if eta_seconds is None else int(eta_seconds),
    }}}


class StatusPatcher:
    """Merge-patches the job's status subresource; throttled, and failures are logged, never raised."""

    def __init__(self, api_client, namespace: str, name: str, min_interval_s: float = 5.0):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace, self.name, self.min_interval_s = namespace, name, min_interval_s
        self._last = float("-inf")

    @classmethod
    def from_environment(cls) -> StatusPatcher | None:
        """In a pod of a FineTuneJob (FLOE_JOB_NAMESPACE, FLOE_JOB_NAME and in-cluster config), else None."""
        namespace, name = os.environ.get("FLOE_JOB_NAMESPACE"), os.environ.get("FLOE_JOB_NAME")
        if not (namespace and name):
            return None
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException as err:
            log.warning("not patching FineTuneJob status: %s", err)
            return None
        return cls(client.ApiClient(), namespace, name)

    def patch(self, body: dict, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return False
        self._last = now
        try:
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body,
                _content_type="application/merge-patch+json", _request_timeout=10)
            return True
        except Exception as err:  # noqa: BLE001 - progress reporting must never stop training
            log.warning("patching %s/%s status failed: %s", self.namespace, self.name, err)
            return False


class PrometheusGauges:
    def __init__(self, port: int):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()

        def gauge(name: str, doc: str):
            return Gauge(f"floe_trainer_{name}", doc, registry=self.registry)

        self.step = gauge("step", "optimizer steps done")
        self.total_steps = gauge("total_steps", "optimizer steps planned")
        self.epoch = gauge("epoch", "current epoch (1-based)")
        self.loss = gauge("loss", "training loss (mean token cross-entropy) of the last logged step")
        self.samples_per_second = gauge("samples_per_second", "training throughput, all processes")
        self.eta_seconds = gauge("eta_seconds", "estimated seconds to the end of training")
        self.validation_loss = gauge("validation_loss", "last validation loss")
        self.rouge_l = gauge("rouge_l", "last validation ROUGE-L F1")
        if port:
            start_http_server(port, registry=self.registry)


class Reporter:
    """What rank 0 tells the world about a run."""

    def __init__(self, total_steps: int, metrics_port: int, patcher: StatusPatcher | None):
        self.total_steps = total_steps
        self.gauges = PrometheusGauges(metrics_port)
        self.gauges.total_steps.set(total_steps)
        self.patcher = patcher

    def step(self, step: int, epoch: int, loss: float, samples_per_second: float, eta_seconds: float | None):
        emit("step", step=step, totalSteps=self.total_steps, epoch=epoch, loss=round(loss, 5),
             samplesPerSecond=round(samples_per_second, 2),
             etaSeconds=None if eta_seconds is None else round(eta_seconds, 1))
        g = self.gauges
        g.step.set(step)
        g.epoch.set(epoch)
        g.loss.set(loss)
        g.samples_per_second.set(samples_per_second)
        if eta_seconds is not None:
            g.eta_seconds.set(eta_seconds)
        if self.patcher:
            # The throttle may skip steps, never the last one: the status must end at 100%.
            last = step >= self.total_steps
            self.patcher.patch(progress_patch(step, self.total_steps, epoch, loss, samples_per_second, eta_seconds),
                               force=last)

    def evaluation(self, metrics: dict):
        emit("evaluation", **metrics)
        if metrics.get("validationLoss") is not None:
            self.gauges.validation_loss.set(metrics["validationLoss"])
        if metrics.get("rougeL") is not None:
            self.gauges.rouge_l.set(metrics["rougeL"])
        if self.patcher:
            self.patcher.patch({"status": {"metrics": status_metrics(metrics)}}, force=True)


def status_metrics(metrics: dict) -> dict:
    """The scalar metrics that go into status.metrics (no history)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}


def termination_message(outcome: str, message: str, metrics: dict | None = None,
                        model_digest: str | None = None, reason: str | None = None) -> str:
    """JSON for the pod's termination message, cut to fit the kubelet's 4096 bytes. `reason`: a failure's
    kind (the error's class, e.g. DataError), which the operator puts on the FineTuneJob's conditions."""
    body = {"outcome": outcome, "message": message, "metrics": status_metrics(metrics or {}),
            "modelDigest": model_digest}
    if reason:
        body["reason"] = reason
    text = json.dumps(body)
    if len(text.encode()) >= TERMINATION_LIMIT:
        body["metrics"] = {}
        room = TERMINATION_LIMIT - len(json.dumps({**body, "message": ""}).encode()) - 64
        body["message"] = message.encode()[:max(room, 0)].decode(errors="ignore") + " [truncated]"
        text = json.dumps(body)
    return text


def write_termination_message(outcome: str, message: str, metrics: dict | None = None,
                              model_digest: str | None = None, reason: str | None = None) -> None:
    path = Path(os.environ.get("FLOE_TERMINATION_LOG", TERMINATION_LOG_DEFAULT))
    try:
        path.write_text(termination_message(outcome, message, metrics, model_digest, reason))
    except OSError as err:
        log.warning("cannot write termination message to %s: %s", path, err)
