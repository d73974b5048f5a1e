"""Progress reporting: JSON lines on stdout, Prometheus gauges, the FineTuneJob's status, the termination message.

The trainer writes only `status.progress` of its FineTuneJob (the operator owns the rest of the status and
copies the final metrics from the termination message): the phase it is in, step counts, loss, throughput,
ETA, the latest evaluation and the last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from floe_contract import GROUP, VERSION
from floe_contract.paths import TERMINATION_LOG

log = logging.getLogger("floe_trainer")

PLURAL = "finetunejobs"
TERMINATION_LOG_DEFAULT = TERMINATION_LOG
TERMINATION_LIMIT = 4096  # bytes the kubelet keeps of a termination message


def emit(event: str, **fields) -> None:
    """One JSON line on stdout, in one write: the checkpoint writer's thread emits too, and print's two writes
    (text, then newline) of two threads could interleave into one line."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


# Where the wall time of a run goes; `seconds` of the `phases` event has one entry for each.
PHASES = ("startup", "tokenize", "compile", "train", "evaluate", "checkpoint", "export")
# What status.progress.phase says during each: the words a user reads in `kubectl get ftj`.
STATUS_PHASE = {"startup": "preparing", "tokenize": "preparing", "compile": "compiling", "train": "training",
                "evaluate": "evaluating", "checkpoint": "checkpointing", "export": "exporting"}
# Evaluation results that go into status.progress.
EVALUATION_KEYS = ("validationLoss", "rouge1", "rouge2", "rougeL")


def progress_patch(step: int, total_steps: int, epoch: int, loss: float | None, samples_per_second: float,
                   eta_seconds: float | None, **more) -> dict:
    """The merge patch of a FineTuneJob's status.progress (`more`: further progress fields, camelCase)."""
    return {"status": {"progress": {
        "step": step, "totalSteps": total_steps, "epoch": epoch,
        "percent": round(100.0 * step / total_steps, 1) if total_steps else 0.0,
        "loss": None if loss is None else round(loss, 5),
        "samplesPerSecond": round(samples_per_second, 2),
        "etaSeconds": None if eta_seconds is None else int(eta_seconds),
        **more,
    }}}


def evaluation_patch(metrics: dict) -> dict:
    """status.progress fields of an evaluation's results (the step they were taken at as evaluatedStep)."""
    fields = {k: metrics[k] for k in EVALUATION_KEYS if metrics.get(k) is not None}
    if "step" in metrics:
        fields["evaluatedStep"] = metrics["step"]
    return {"status": {"progress": fields}}


def rfc3339(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PhaseClock:
    """Wall time per phase (PHASES). `sync` waits for queued GPU work, so a phase is charged for its kernels."""

    def __init__(self, sync: Callable[[], None], on_change: Callable[[str], None] | None = None):
        self.sync, self.on_change = sync, on_change
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.current = "startup"
        self._since = time.perf_counter()

    def switch(self, phase: str) -> None:
        """End the current phase now and start `phase`."""
        if phase == self.current:
            return
        self.sync()
        now = time.perf_counter()
        self.seconds[self.current] += now - self._since
        self.current, self._since = phase, now
        if self.on_change is not None:
            self.on_change(phase)

    def charge(self, phase: str, since: float) -> None:
        """Charge the time from `since` (a perf_counter reading inside the current phase) to `phase`
        instead: a training step that turned out to compile."""
        self.sync()
        now = time.perf_counter()
        self.seconds[self.current] += since - self._since
        self.seconds[phase] += now - since
        self._since = now

    def totals(self) -> dict[str, float]:
        now = time.perf_counter()
        return {k: round(v + (now - self._since if k == self.current else 0.0), 3) for k, v in self.seconds.items()}


# Each progress write wakes the operator's watch of the job: routine ones (a step's numbers) at most this often.
PROGRESS_INTERVAL_S = 30.0
FIELD_MANAGER = "floe-trainer"  # the trainer's name in status.progress's managedFields


class ProgressThrottle:
    """Which progress patches go out: none that repeats the last one sent; a routine one at most every
    `min_interval_s`; a forced one (phase change, evaluation, checkpoint, the last step) at once."""

    def __init__(self, min_interval_s: float = PROGRESS_INTERVAL_S):
        self.min_interval_s = min_interval_s
        self._last_time = float("-inf")
        self._last_body: dict | None = None

    def admit(self, body: dict, force: bool, now: float) -> bool:
        if body == self._last_body or (not force and now - self._last_time < self.min_interval_s):
            return False
        self._last_time, self._last_body = now, body
        return True


class StatusPatcher:
    """Applies the job's status.progress (server-side apply on the status subresource, under FIELD_MANAGER);
    throttled, and failures are logged, never raised."""

    def __init__(self, api_client, namespace: str, name: str, min_interval_s: float = PROGRESS_INTERVAL_S):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace, self.name = namespace, name
        self._throttle = ProgressThrottle(min_interval_s)
        self._lock = threading.Lock()  # the checkpoint writer's thread reports too
        self._progress: dict = {}  # all the progress reported so far

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
        """Report `body` (a merge patch of status.progress: a null removes a field)."""
        with self._lock:
            if not self._throttle.admit(body, force, time.monotonic()):
                return False
            # An apply states all that its field manager owns (a field it leaves out, it gives up), so each one
            # carries all the progress reported so far.
            for key, value in body["status"]["progress"].items():
                if value is None:
                    self._progress.pop(key, None)
                else:
                    self._progress[key] = value
            applied = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob",
                       "metadata": {"name": self.name, "namespace": self.namespace},
                       "status": {"progress": dict(self._progress)}}
        try:
            # force: status.progress is the trainer's by design (the operator sets only percent 100 at the end)
            self._api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, applied, field_manager=FIELD_MANAGER, force=True,
                _content_type="application/apply-patch+yaml", _request_timeout=10)
            return True
        except Exception as err:  # noqa: BLE001 - progress reporting must never stop training
            log.warning("applying %s/%s status.progress failed: %s", self.namespace, self.name, err)
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
        self.last_checkpoint = gauge("last_checkpoint_timestamp_seconds", "when the last checkpoint was in place")
        if port:
            start_http_server(port, registry=self.registry)


class Reporter:
    """What rank 0 tells the world about a run."""

    def __init__(self, total_steps: int, metrics_port: int, patcher: StatusPatcher | None, batch_size: int,
                 accumulation: int):
        self.total_steps = total_steps
        # the batch the run uses (chosen by `batchSize: auto` or given), sent with the first patch
        self.unsent = {"batchSize": batch_size, "gradientAccumulationSteps": accumulation}
        self.gauges = PrometheusGauges(metrics_port)
        self.gauges.total_steps.set(total_steps)
        self.patcher = patcher
        self.phase_name: str | None = None

    def phase(self, name: str) -> None:
        """The status phase (preparing, compiling, training, evaluating, checkpointing, exporting) changed."""
        if name == self.phase_name:
            return
        self.phase_name = name
        emit("phase", phase=name)
        if self.patcher:
            self.patcher.patch({"status": {"progress": {"phase": name, **self.unsent}}}, force=True)
            self.unsent = {}

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
            self.patcher.patch(progress_patch(step, self.total_steps, epoch, loss, samples_per_second, eta_seconds,
                                              phase=self.phase_name), force=last)

    def evaluation(self, metrics: dict):
        emit("evaluation", **metrics)
        if metrics.get("validationLoss") is not None:
            self.gauges.validation_loss.set(metrics["validationLoss"])
        if metrics.get("rougeL") is not None:
            self.gauges.rouge_l.set(metrics["rougeL"])
        if self.patcher:
            self.patcher.patch(evaluation_patch(metrics), force=True)

    def checkpoint_saved(self, step: int, path: Path, write_seconds: float) -> None:
        """A checkpoint is in place (called on the checkpoint writer's thread)."""
        now = time.time()
        emit("checkpoint", step=step, path=str(path), writeSeconds=round(write_seconds, 2), time=rfc3339(now))
        self.gauges.last_checkpoint.set(now)
        if self.patcher:
            self.patcher.patch({"status": {"progress": {"lastCheckpointTime": rfc3339(now),
                                                        "lastCheckpointStep": step}}}, force=True)


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
