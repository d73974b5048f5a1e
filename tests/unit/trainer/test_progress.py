import json

from floe_trainer import progress
from floe_trainer.progress import (
    PHASES,
    STATUS_PHASE,
    TERMINATION_LIMIT,
    PhaseClock,
    ProgressThrottle,
    evaluation_patch,
    progress_patch,
    rfc3339,
    termination_message,
)


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


def test_evaluation_results_go_into_progress_only():
    body = evaluation_patch({"epoch": 2, "step": 120, "validationLoss": 2.1, "rouge1": 0.3, "rouge2": 0.1,
                             "rougeL": 0.25, "rougeSamples": 64})
    assert body == {"status": {"progress": {"validationLoss": 2.1, "rouge1": 0.3, "rouge2": 0.1, "rougeL": 0.25,
                                            "evaluatedStep": 120}}}


def test_progress_patch_carries_the_phase():
    body = progress_patch(1, 10, 1, None, 0.0, None, phase="compiling")
    assert body["status"]["progress"]["phase"] == "compiling"
    assert set(STATUS_PHASE) == set(PHASES)


def test_progress_patches_go_out_on_change_at_most_every_30_s_and_at_once_when_forced():
    throttle = ProgressThrottle()

    def step(n: int) -> dict:
        return progress_patch(n, 100, 1, 1.0, 10.0, 60.0, phase="training")

    assert throttle.admit(step(1), force=False, now=0.0)
    assert not throttle.admit(step(2), force=False, now=29.0)  # routine: one per 30 s
    assert throttle.admit({"status": {"progress": {"phase": "evaluating"}}}, force=True, now=29.5)  # phase change
    assert not throttle.admit(step(3), force=False, now=40.0)
    assert throttle.admit(step(3), force=False, now=59.5)
    assert not throttle.admit(step(3), force=True, now=500.0)  # nothing new to say, even when forced
    assert throttle.admit(step(100), force=True, now=500.0)  # the last step


def test_phase_clock_charges_a_compiling_step_to_compile(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    synced = []
    clock = PhaseClock(lambda: synced.append(now[0]))
    now[0] += 5.0  # start-up
    clock.switch("train")
    now[0] += 2.0  # training steps
    step_started = now[0]
    now[0] += 30.0  # a step that compiled
    clock.charge("compile", step_started)
    now[0] += 1.0
    clock.switch("export")
    now[0] += 0.5
    assert clock.totals() == {"startup": 5.0, "tokenize": 0.0, "compile": 30.0, "train": 3.0, "evaluate": 0.0,
                              "checkpoint": 0.0, "export": 0.5}
    assert synced == [105.0, 137.0, 138.0]  # each boundary first waits for queued GPU work


def test_rfc3339_is_utc():
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
