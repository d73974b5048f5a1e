"""A tiny T5 trained from scratch on the news sample through the real CLI, and exact resume after a kill or a
SIGTERM."""

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from floe_trainer import data, prefetch
from floe_trainer.artifacts import content_digest
from floe_trainer.batching import PREFIX
from floe_trainer.config import ScratchShape, parse_config
from floe_trainer.modeling import scratch_model, train_tokenizer
from floe_trainer.progress import PHASES
from floe_trainer.train import EXIT_PREEMPTED, main
from floe_trainer.trainer import train
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from dev.controlplane import wait_until

from .conftest import NEWS_CSV, job_config, write_config


def floe_train(config: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "floe_trainer.train", "--config", str(config)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_tiny_t5_learns_and_leaves_a_complete_model_dir(tmp_path, capsys, monkeypatch):
    cfg = job_config(tmp_path, evaluation={"rouge": True, "every": {"epochs": 1}, "maxSamples": 4, "numBeams": 1,
                                           "maxNewTokens": 24},
                     job={"namespace": "team-a", "name": "t5-news"})
    term = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(term))
    assert main(["--config", str(write_config(tmp_path, cfg))]) == 0
    out = capsys.readouterr().out

    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    steps = [e for e in events if e["event"] == "step"]
    assert steps and {"step", "epoch", "loss", "samplesPerSecond", "etaSeconds"} <= steps[-1].keys()
    evaluations = [e for e in events if e["event"] == "evaluation"]
    # after epoch 1 on maxSamples rows; the final one (end of epoch 2) on the whole validation split
    assert [(e["epoch"], e["rougeSamples"]) for e in evaluations] == [(1, 4), (2, 40)]
    phases = next(e for e in events if e["event"] == "phases")
    assert list(phases["seconds"]) == list(PHASES)
    assert phases["seconds"]["train"] > 0 and phases["seconds"]["evaluate"] > 0 and phases["seconds"]["export"] > 0
    assert phases["trainSamples"] == 2 * 44 * 8 and phases["loopSamplesPerSecond"] > 0  # no compilation on CPU
    assert [e["phase"] for e in events if e["event"] == "phase"] == [
        "preparing", "evaluating", "training", "evaluating", "training", "checkpointing", "evaluating", "exporting"]

    model_dir = tmp_path / "model"
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # held-out loss falls clearly (ROUGE of a model this small is not meaningful; it is reported, not gated)
    assert metrics["validationLoss"] < metrics["initialValidationLoss"] - 0.5, metrics
    assert {"rouge1", "rouge2", "rougeL"} <= metrics.keys()
    assert metrics["rowsDropped"] == 5 and len(metrics["history"]) == 2 and metrics["epochs"] == 2

    assert metrics["modelDigest"] == content_digest(model_dir)
    for f in model_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f"{f.name} not group/other-readable"
    assert "t5-news" in (model_dir / "README.md").read_text()
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tokenizer)

    message = json.loads(term.read_text())
    assert message["outcome"] == "Succeeded" and message["modelDigest"] == metrics["modelDigest"]
    assert message["metrics"]["validationLoss"] == metrics["validationLoss"]


def test_bad_data_fails_with_a_termination_message(tmp_path, capsys, monkeypatch):
    cfg = job_config(tmp_path, dataset={"file": {"path": str(tmp_path / "missing.csv")}})
    term = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(term))
    assert main(["--config", str(write_config(tmp_path, cfg))]) == 1
    assert "dataset.file.path" in capsys.readouterr().err
    message = json.loads(term.read_text())
    assert "does not exist" in message["message"] and message["reason"] == "DataError"


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory) -> Path:
    """A tiny T5 and its tokenizer in a directory, as model.path names one."""
    out = tmp_path_factory.mktemp("pretrained")
    pairs = data.load(parse_config(job_config(out)).dataset).train
    tokenizer = train_tokenizer([PREFIX + d for d in pairs.documents] + pairs.summaries, 2000, out / "spm")
    tokenizer.save_pretrained(out)
    scratch_model(ScratchShape.tiny, tokenizer, seed=0).save_pretrained(out)
    return out


def test_data_read_beside_the_imports_trains_the_same_model(tmp_path, capsys, monkeypatch, pretrained_dir):
    """floe-train reads and tokenizes the data of a model.path job in a process forked before its heavy imports;
    in line (train() alone) the same data gives the same weights."""
    def config(root: Path) -> dict:
        return job_config(root, model={"path": str(pretrained_dir)},
                          dataset={"file": {"path": str(NEWS_CSV)}, "maxRows": 120})

    waited = []
    result = prefetch.Prefetch.result
    monkeypatch.setattr(prefetch.Prefetch, "result", lambda self: waited.append(self) or result(self))
    assert main(["--config", str(write_config(tmp_path, config(tmp_path / "prefetched")))]) == 0
    assert len(waited) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    seconds = next(e for e in events if e["event"] == "prefetched")["seconds"]
    assert seconds.keys() == {"fork", "read", "tokenizer", "tokenize", "send", "exit", "asked"}
    assert all(value >= 0 for value in seconds.values())  # one clock for both processes
    train(parse_config(config(tmp_path / "in-line")))
    prefetched = load_file(tmp_path / "prefetched" / "model" / "model.safetensors")
    in_line = load_file(tmp_path / "in-line" / "model" / "model.safetensors")
    assert prefetched.keys() == in_line.keys()
    assert all(torch.equal(prefetched[k], in_line[k]) for k in prefetched)


def test_bad_data_read_beside_the_imports_fails_with_its_own_message(tmp_path, capsys, monkeypatch, pretrained_dir):
    cfg = job_config(tmp_path, model={"path": str(pretrained_dir)},
                     dataset={"file": {"path": str(tmp_path / "missing.csv")}})
    term = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(term))
    assert main(["--config", str(write_config(tmp_path, cfg))]) == 1
    assert "dataset.file.path" in capsys.readouterr().err
    message = json.loads(term.read_text())
    assert "does not exist" in message["message"] and message["reason"] == "DataError"


def test_tokenizer_that_does_not_load_beside_the_reading_fails_with_its_own_message(tmp_path, capsys, monkeypatch):
    """The prefetch loads the tokenizer in a process of its own: its error is the job's, naming model.path."""
    (tmp_path / "empty-model").mkdir()
    cfg = job_config(tmp_path, model={"path": str(tmp_path / "empty-model")})
    term = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(term))
    assert main(["--config", str(write_config(tmp_path, cfg))]) == 1
    assert f"model.path: cannot load model/tokenizer from {tmp_path / 'empty-model'}" in capsys.readouterr().err
    assert json.loads(term.read_text())["reason"] == "ModelSourceError"


def test_killed_run_resumes_to_the_same_weights(tmp_path, capsys):
    def config(root: Path) -> dict:
        root.mkdir()
        return job_config(root, dataset={"file": {"path": str(NEWS_CSV)}, "maxRows": 200},
                          training={"epochs": 2, "batchSize": 8, "learningRate": 3e-3, "sourceMaxLength": 64,
                                    "targetMaxLength": 32},
                          checkpoint={"dir": str(root / "checkpoints"), "everySteps": 5, "keep": 2})

    reference = config(tmp_path / "reference")
    train(parse_config(reference))

    interrupted = config(tmp_path / "interrupted")
    config_path = write_config(tmp_path / "interrupted", interrupted)
    checkpoints = tmp_path / "interrupted" / "checkpoints"
    proc = floe_train(config_path, start_new_session=True)
    try:
        # Poll often: the kill must land soon after the first checkpoint, mid-epoch.
        wait_until(lambda: any(checkpoints.glob("step-*")) or proc.poll() is not None, 180,
                   "the first checkpoint", interval=0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "interrupted" / "model").exists()

    capsys.readouterr()
    train(parse_config(interrupted))  # the restarted pod
    out = capsys.readouterr().out
    resumed_event = next(json.loads(line) for line in out.splitlines() if '"resumed"' in line)
    assert 0 < resumed_event["step"] < 44  # resumed mid-run (2 epochs x 22 steps)

    expected = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "interrupted" / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_sigterm_checkpoints_exits_and_the_restart_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch):
    def config(root: Path) -> dict:
        root.mkdir()
        # No periodic checkpoints: the only one is the SIGTERM's.
        return job_config(root, dataset={"file": {"path": str(NEWS_CSV)}, "maxRows": 200},
                          training={"epochs": 3, "batchSize": 8, "learningRate": 3e-3, "sourceMaxLength": 64,
                                    "targetMaxLength": 32},
                          checkpoint={"dir": str(root / "checkpoints"), "everyMinutes": 600, "keep": 2})

    reference = config(tmp_path / "reference")
    train(parse_config(reference))

    interrupted = config(tmp_path / "interrupted")
    term = tmp_path / "interrupted" / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(term))
    proc = floe_train(write_config(tmp_path / "interrupted", interrupted))
    try:
        for line in proc.stdout:  # every step is logged here (66 steps): signal once training is under way
            if line.startswith('{"event": "step"') and json.loads(line)["step"] >= 3:
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    preempted = next(json.loads(line) for line in out.splitlines() if '"preempted"' in line)
    assert 3 <= preempted["step"] < 66
    message = json.loads(term.read_text())
    assert (message["outcome"], message["reason"]) == ("Preempted", "Preempted")
    checkpoints = sorted(p.name for p in (tmp_path / "interrupted" / "checkpoints").glob("step-*"))
    assert checkpoints == [f"step-{preempted['step']:08d}"]
    assert not (tmp_path / "interrupted" / "model").exists()

    capsys.readouterr()
    train(parse_config(interrupted))  # the restarted pod
    resumed = next(json.loads(line) for line in capsys.readouterr().out.splitlines() if '"resumed"' in line)
    assert resumed["step"] == preempted["step"]  # nothing lost

    expected = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    actual = load_file(tmp_path / "interrupted" / "model" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_batch_settings_the_run_cannot_meet_fail_at_once_naming_the_field(tmp_path, monkeypatch):
    cfg = job_config(tmp_path, training={"epochs": 1, "batchSize": 8, "effectiveBatchSize": 12})
    term = tmp_path / "termination-log"
    monkeypatch.setenv("FLOE_TERMINATION_LOG", str(term))
    assert main(["--config", str(write_config(tmp_path, cfg))]) == 2  # the Job's pod failure policy: no retry
    message = json.loads(term.read_text())
    assert message["reason"] == "InvalidConfig"
    assert message["message"].startswith("spec.training.effectiveBatchSize: 12 is not a multiple of")
