"""Helpers for the trainer's CPU tests: small configs over the committed news sample."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# One intra-op thread: on a small shared CI machine, torch's thread pool spinning against other
# processes made these runs ten times slower. Subprocesses inherit it; resume equality needs equal counts.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

torch.set_num_threads(1)

NEWS_CSV = Path(__file__).resolve().parents[1] / "data" / "news_summary.csv"


def job_config(tmp_path: Path, **sections) -> dict:
    """A fast CPU config: tiny T5 from scratch, 128/48 tokens, no ROUGE; `sections` override whole sections."""
    cfg = {
        "version": "v1",
        "model": {"scratch": {"shape": "tiny", "vocabSize": 2000}},
        "dataset": {"file": {"path": str(NEWS_CSV)}},
        "training": {"epochs": 2, "batchSize": 8, "learningRate": 3e-3, "sourceMaxLength": 128,
                     "targetMaxLength": 48},
        "evaluation": {"rouge": False},
        "checkpoint": {"dir": str(tmp_path / "checkpoints"), "everySteps": 1000, "keep": 2},
        "output": {"dir": str(tmp_path / "model")},
        "metricsPort": 0,
    }
    cfg.update(sections)
    return cfg


def write_config(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture
def news_csv() -> Path:
    return NEWS_CSV
