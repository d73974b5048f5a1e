import json

from floe_trainer.progress import TERMINATION_LIMIT, progress_patch, termination_message


def test_progress_patch_shape():
    body = progress_patch(step=50, total_steps=200, epoch=1, loss=2.345678, samples_per_second=123.456,
                          eta_seconds=99.9)
    assert body == {"status": {"progress": {"step": 50, "totalSteps": 200, "epoch": 1, "percent": 25.0,
                                            "loss": 2.34568, "samplesPerSecond": 123.46, "etaSeconds": 99}}}


def test_termination_message_keeps_scalar_metrics_and_digest():
    text = termination_message("Succeeded", "trained 10 steps", {"rougeL": 0.312, "history": [{"a": 1}]},
                               "sha256:abc")
    body = json.loads(text)
    assert body == {"outcome": "Succeeded", "message": "trained 10 steps", "metrics": {"rougeL": 0.312},
                    "modelDigest": "sha256:abc"}


def test_termination_message_fits_the_kubelet_limit():
    text = termination_message("Failed", "x" * 10_000 + "é" * 3000, {"validationLoss": 1.0})
    assert len(text.encode()) < TERMINATION_LIMIT
    body = json.loads(text)
    assert body["outcome"] == "Failed" and body["message"].endswith("[truncated]")
