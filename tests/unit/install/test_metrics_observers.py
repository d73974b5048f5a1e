"""Per-object series follow FineTuneJob and SnowflakeDeployment objects through their lifecycle."""

import threading
import uuid

from floe_operator import metrics
from prometheus_client import REGISTRY


def sample(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def job(namespace: str, name: str, uid: str, phase: str | None, **status) -> dict:
    return {
        "metadata": {"uid": uid, "namespace": namespace, "name": name},
        "spec": {"resources": {"gpus": 2, "workers": 3}},
        "status": {"phase": phase, **status} if phase else {},
    }


def test_finetunejob_series_follow_phase_progress_and_deletion():
    ns, uid = f"ns-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    metrics.observe_finetunejob(job(ns, "t5", uid, None))
    assert sample("floe_finetunejob_phase", namespace=ns, name="t5", phase="Pending") == 1
    assert sample("floe_gpus_requested", namespace=ns) == 6
    assert sample("floe_gpus_in_use", namespace=ns) == 0

    running = job(ns, "t5", uid, "Running", progress={"percent": 25.0, "loss": 2.5}, metrics={"rougeL": 0.2})
    metrics.observe_finetunejob(running)
    assert sample("floe_finetunejob_phase", namespace=ns, name="t5", phase="Pending") is None
    assert sample("floe_finetunejob_phase", namespace=ns, name="t5", phase="Running") == 1
    assert sample("floe_finetunejob_progress_ratio", namespace=ns, name="t5") == 0.25
    assert sample("floe_finetunejob_loss", namespace=ns, name="t5") == 2.5
    assert sample("floe_finetunejob_rouge_l", namespace=ns, name="t5") == 0.2
    assert sample("floe_gpus_in_use", namespace=ns) == 6

    metrics.observe_finetunejob(job(ns, "t5", uid, "Succeeded", progress={"percent": 99.0}))
    assert sample("floe_finetunejob_progress_ratio", namespace=ns, name="t5") == 1.0
    assert sample("floe_gpus_requested", namespace=ns) == 0

    metrics.observe_finetunejob(job(ns, "t5", uid, "Succeeded"), deleted=True)
    for name in ("floe_finetunejob_phase", "floe_finetunejob_progress_ratio", "floe_finetunejob_loss"):
        assert not [
            s for m in REGISTRY.collect() for s in m.samples if s.name == name and s.labels.get("namespace") == ns
        ]


def test_deployment_outcomes_count_transitions_only():
    ns, uid = f"ns-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    before = sample("floe_snowflake_deployments_total", outcome="Deployed") or 0.0
    sfd = {"metadata": {"uid": uid, "namespace": ns, "name": "s"}, "status": {"phase": "Deploying"}}
    metrics.observe_snowflakedeployment(sfd)
    metrics.observe_snowflakedeployment({**sfd, "status": {"phase": "Deployed"}})
    metrics.observe_snowflakedeployment({**sfd, "status": {"phase": "Deployed"}})  # resync, no new outcome
    assert sample("floe_snowflake_deployments_total", outcome="Deployed") == before + 1
    assert sample("floe_snowflakedeployment_phase", namespace=ns, name="s", phase="Deployed") == 1
    assert sample("floe_snowflakedeployment_phase", namespace=ns, name="s", phase="Deploying") is None
    # First sight of an already deployed object (an operator restart) is not a new outcome.
    other = {"metadata": {"uid": str(uuid.uuid4()), "namespace": ns, "name": "t"}, "status": {"phase": "Deployed"}}
    metrics.observe_snowflakedeployment(other)
    assert sample("floe_snowflake_deployments_total", outcome="Deployed") == before + 1
    metrics.observe_snowflakedeployment({**sfd, "status": {"phase": "Deployed"}}, deleted=True)
    assert sample("floe_snowflakedeployment_phase", namespace=ns, name="s", phase="Deployed") is None


def test_requested_gpus_come_from_the_compute_profile_a_job_names():
    ns = f"ns-{uuid.uuid4().hex[:6]}"
    on_cpu = job(ns, "t5", str(uuid.uuid4()), "Pending")
    on_cpu["spec"]["computeProfile"] = "cpu"  # the built-in catalog's cpu profile has no GPUs
    metrics.observe_finetunejob(on_cpu)
    assert sample("floe_gpus_requested", namespace=ns) == 0


def test_phase_counts_stay_exact_when_handlers_update_them_from_many_threads():
    kind, uids = f"Kind{uuid.uuid4().hex[:6]}", [str(uuid.uuid4()) for _ in range(400)]

    def churn(chunk):
        for uid in chunk:
            metrics.observe_phase(kind, uid, "Running")
            metrics.observe_phase(kind, uid, "Succeeded")

    threads = [threading.Thread(target=churn, args=(uids[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sample("floe_resources", kind=kind, phase="Succeeded") == 400
    assert sample("floe_resources", kind=kind, phase="Running") == 0
    for uid in uids[:100]:  # deleted objects stop counting
        metrics.observe_phase(kind, uid, None)
    assert sample("floe_resources", kind=kind, phase="Succeeded") == 300
