"""A tiny T5 (d_model 64, 2+2 layers) with a SentencePiece tokenizer trained on the sample news data,
saved the way the trainer saves a model, for deploying to Snowpark's local testing emulator."""

import json
from pathlib import Path

import pandas as pd
import pytest
from floe_trainer.config import ScratchShape
from floe_trainer.modeling import scratch_model, train_tokenizer

DATA = Path(__file__).resolve().parents[1] / "data" / "news_summary.csv"


@pytest.fixture(scope="session")
def news() -> pd.DataFrame:
    return pd.read_csv(DATA).dropna(subset=["ctext", "text"])


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, news) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer([*news["ctext"], *news["text"]], 600, directory)
    return directory


def save_model(directory: Path, tokenizer_dir: Path, seed: int) -> Path:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    model = scratch_model(ScratchShape.tiny, tokenizer, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "metrics.json").write_text(json.dumps({"rougeL": 0.0, "seed": seed}))
    return directory


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return save_model(tmp_path_factory.mktemp("model-a"), tokenizer_dir, seed=1)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    return save_model(tmp_path_factory.mktemp("model-b"), tokenizer_dir, seed=2)


@pytest.fixture(scope="session")
def mute_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A model that loads and generates, but only padding: its output layer is zero, so every step's
    greedy choice is token 0 (pad), which decodes to an empty string."""
    import torch
    from transformers import T5ForConditionalGeneration

    directory = save_model(tmp_path_factory.mktemp("model-mute"), tokenizer_dir, seed=3)
    model = T5ForConditionalGeneration.from_pretrained(directory, local_files_only=True)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(directory)
    return directory
