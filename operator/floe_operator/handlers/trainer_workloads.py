"""The trainer Jobs and pods as the operator follows them: each kept by an informer (informer.py) under its
FineTuneJob's key (namespace, name), as much of it as the reconcile reads (builders.finetunejob's summaries).

The API server sends only trainer objects (by label). The watches run only while the FineTuneJob reconcile does,
in the replica that leads: it starts them with its workers, and its workers wait for both first listings, so a
restarted operator knows every existing Job before it decides whether one is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from floe_operator.builders.common import APP_NAME_LABEL
from floe_operator.builders.finetunejob import JOB_LABEL, TRAINER_APP, controlled_by, job_summary, pod_summary
from floe_operator.informer import Informer, Key, Store

SELECTOR = f"{APP_NAME_LABEL}={TRAINER_APP},{JOB_LABEL}"


def _finetunejob_key(obj: dict[str, Any]) -> Key | None:
    meta = obj["metadata"]
    name = (meta.get("labels") or {}).get(JOB_LABEL)
    return (meta["namespace"], name) if name else None


JOBS = Store(_finetunejob_key, job_summary)
PODS = Store(_finetunejob_key, pod_summary)
_informers: list[Informer] = []


def own_job(namespace: str, name: str, uid: str) -> dict[str, Any] | None:
    """The FineTuneJob's trainer Job (not a namesake's still being collected), as last seen by the watch."""
    return next((job for job in JOBS.get((namespace, name)) if controlled_by(job, uid)), None)


def start(on_change: Callable[[Key], None]) -> None:
    """Start both watches on the running loop; `on_change(key)` after a FineTuneJob's Job or pods changed."""
    _informers[:] = [
        Informer(client.ApiClient(), "/apis/batch/v1/jobs", SELECTOR, JOBS, on_change),
        Informer(client.ApiClient(), "/api/v1/pods", SELECTOR, PODS, on_change),
    ]
    for informer in _informers:
        informer.start()


async def synced() -> None:
    for informer in _informers:
        await informer.synced.wait()


def stop() -> None:
    for informer in _informers:
        informer.stop()
    _informers.clear()
