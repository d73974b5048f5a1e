import threading

import pytest
import torch
from floe_trainer import checkpoint


def test_snapshot_is_a_copy_that_training_cannot_change():
    weights = torch.ones(3)
    state = {"model": {"w": weights}, "optimizer": {"state": [{"exp_avg": torch.zeros(2)}], "lr": 1e-4},
             "rng": (torch.ByteTensor([1, 2]),)}
    snap = checkpoint.snapshot(state)
    weights.add_(1)
    state["optimizer"]["state"][0]["exp_avg"].add_(5)
    assert torch.equal(snap["model"]["w"], torch.ones(3))
    assert torch.equal(snap["optimizer"]["state"][0]["exp_avg"], torch.zeros(2))
    assert snap["optimizer"]["lr"] == 1e-4 and isinstance(snap["rng"], tuple)


def test_background_writer_puts_checkpoints_in_place_and_keeps_the_last(tmp_path):
    saved = []
    writer = checkpoint.BackgroundWriter(tmp_path, keep=2, on_saved=lambda step, path, s: saved.append(
        (step, path.name, threading.current_thread() is threading.main_thread())))
    for step in (10, 20, 30):
        writer.submit(step, {"w": torch.full((2,), float(step))}, {"step": step})
    writer.wait()
    assert saved == [(10, "step-00000010", False), (20, "step-00000020", False), (30, "step-00000030", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000020", "step-00000030"]
    model_state, state = checkpoint.load(checkpoint.latest(tmp_path))
    assert torch.equal(model_state["w"], torch.full((2,), 30.0)) and state["step"] == 30


def test_a_failed_background_write_is_raised_on_the_training_thread(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    writer = checkpoint.BackgroundWriter(tmp_path / "file", keep=1, on_saved=lambda *a: None)
    writer.submit(1, {}, {})
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # raised once
