"""The trainer's FineTuneJob status patches against a real API server (CRD schema, status subresource).

The trainer writes only status.progress: phase, steps, loss, the latest evaluation and the last checkpoint.
"""

import re
import uuid
from pathlib import Path

import pytest
from floe_trainer.progress import GROUP, PLURAL, VERSION, Reporter, StatusPatcher, progress_patch
from kubernetes import client

SPEC = {"model": {"scratch": {"shape": "tiny", "vocabSize": 2000}},
        "dataset": {"file": {"claimName": "news-data", "path": "news_summary.csv"}},
        "training": {"epochs": 1, "batchSize": 8}}


@pytest.fixture
def job(cluster):
    namespace = f"trainer-{uuid.uuid4().hex[:6]}"
    # Marked as a Project's namespace (floe's resources live in no other); no operator needed here.
    cluster.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": namespace, "labels": {"floe.dev/project": namespace}}}).check_returncode()
    api = client.CustomObjectsApi(cluster.api())
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob",
        "metadata": {"name": "t5-news", "namespace": namespace}, "spec": SPEC})
    yield api, namespace, "t5-news"
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def test_progress_and_evaluation_are_merged_into_status_progress(cluster, job):
    api, namespace, name = job
    patcher = StatusPatcher(cluster.api(), namespace, name, min_interval_s=3600)
    assert patcher.patch(progress_patch(step=10, total_steps=40, epoch=1, loss=2.5, samples_per_second=80.0,
                                        eta_seconds=30.0, phase="training"))
    assert not patcher.patch(progress_patch(11, 40, 1, 2.4, 80.0, 29.0))  # throttled
    reporter = Reporter(total_steps=40, metrics_port=0, patcher=patcher, batch_size=64, accumulation=2)
    reporter.evaluation({"epoch": 1, "step": 10, "validationLoss": 2.1, "rougeL": 0.125, "rougeSamples": 64})
    reporter.phase("checkpointing")
    reporter.checkpoint_saved(10, Path("/ckpt/step-00000010"), 0.5)
    status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["status"]
    progress = status.pop("progress")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", progress.pop("lastCheckpointTime"))
    assert progress == {"step": 10, "totalSteps": 40, "epoch": 1, "percent": 25.0, "loss": 2.5,
                        "samplesPerSecond": 80.0, "etaSeconds": 30, "phase": "checkpointing",
                        "validationLoss": 2.1, "rougeL": 0.125, "evaluatedStep": 10, "lastCheckpointStep": 10,
                        "batchSize": 64, "gradientAccumulationSteps": 2}
    assert "metrics" not in status  # the operator's, from the termination message


def test_a_failed_patch_is_reported_not_raised(cluster, job):
    _, namespace, _ = job
    assert not StatusPatcher(cluster.api(), namespace, "no-such-job").patch({"status": {"progress": {"step": 1}}})


def test_the_last_step_reaches_the_status_through_the_throttle(cluster, job):
    api, namespace, name = job
    reporter = Reporter(total_steps=40, metrics_port=0,
                        patcher=StatusPatcher(cluster.api(), namespace, name, min_interval_s=3600), batch_size=8,
                        accumulation=1)
    reporter.step(10, 1, 2.5, 80.0, 30.0)
    reporter.step(39, 1, 2.0, 80.0, 1.0)  # throttled
    reporter.step(40, 1, 1.9, 80.0, 0.0)
    progress = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)["status"]["progress"]
    assert (progress["step"], progress["percent"]) == (40, 100.0)
