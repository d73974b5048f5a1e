"""The demo's pipeline end to end on the test cluster: apply the example manifests, train for real on the
local runner node, approve, deploy to the Snowpark emulator, and get summaries back from the UDF with
`floe predict` after the deploy Job has ended."""

import subprocess
import sys

import pytest

from dev import cluster as fixture
from dev import demo


@pytest.fixture
def example(cluster, floe_operator):
    fixture.install_personas(cluster)
    yield
    # The Project owns the namespace: deleting it removes everything the example made.
    cluster.kubectl("delete", "project", demo.NAMESPACE, "--timeout=120s")


def test_example_trains_deploys_and_the_udf_summarizes(cluster, example, tmp_path):
    deployment = demo.run_pipeline(cluster, timeout=1200)

    job = cluster.get("ftj", demo.JOB, "-n", demo.NAMESPACE)["status"]
    assert job["progress"]["percent"] == 100
    metrics = job["metrics"]
    assert metrics["validationLoss"] < metrics["initialValidationLoss"], "training lowered held-out loss"
    assert "rougeL" in metrics and job["modelDigest"].startswith("sha256:")
    assert deployment["modelDigest"] == job["modelDigest"], "the deployed model is the trained one"

    assert deployment["functionName"] == '"NEWS"."PUBLIC"."SUMMARIZE"'
    conditions = {c["type"]: c["status"] for c in deployment["conditions"]}
    assert all(conditions[t] == "True" for t in ("ModelReady", "QualityPassed", "Approved", "Deployed",
                                                  "Verified", "Ready")), conditions
    sample = deployment["verifiedSample"]
    assert len(sample) == 3
    assert all(isinstance(row["summary"], str) and row["summary"].strip() for row in sample)
    assert all(row["text"] for row in sample)

    # The function outlives the deploy Job: `floe predict` calls it on articles of the sample.
    predicted = demo.predict(cluster)
    assert len(predicted) == demo.PREDICT_ROWS
    assert all(row["text"] and row["summary"].strip() for row in predicted)

    # The loss curve, from the trainer pod's log read through the API server.
    plot = subprocess.run(
        [sys.executable, "-m", "floe_operator.cli", "plot", f"ftj/{demo.JOB}", "-n", demo.NAMESPACE,
         "-o", str(tmp_path / "loss.png"), f"--kubeconfig={cluster.kubeconfig}"],
        capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
