"""Two processes (DDP over gloo) with batch 4 make the same updates as one process with batch 8."""

import os
import socket

import torch
import torch.multiprocessing as mp
from floe_trainer import data
from floe_trainer.config import parse_config
from floe_trainer.modeling import SHAPES, train_tokenizer
from floe_trainer.trainer import train
from safetensors.torch import load_file
from transformers import T5Config, T5ForConditionalGeneration

from .conftest import NEWS_CSV, job_config


def make_dropout_free_model(root):
    """A local model dir (the air-gapped source): tiny T5 with dropout off, so the runs differ only in how
    the batch is split, not in dropout masks."""
    spec = parse_config({"version": "v1", "model": {"scratch": {}}, "dataset": {"file": {"path": str(NEWS_CSV)}}})
    prepared = data.load(spec.dataset)
    tokenizer = train_tokenizer(prepared.train.documents[:150] + prepared.train.summaries[:150], 800, root / "tok")
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      dropout_rate=0.0, **SHAPES["tiny"])
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root / "base"


def run_config(root, model_dir, batch_size):
    return job_config(root, model={"path": str(model_dir)},
                      dataset={"file": {"path": str(NEWS_CSV)}, "maxRows": 120},
                      training={"epochs": 1, "batchSize": batch_size, "learningRate": 1e-3, "sourceMaxLength": 64,
                                "targetMaxLength": 32, "maxSteps": 6})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, cfg):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(parse_config(cfg))
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    model_dir = make_dropout_free_model(tmp_path)
    single = run_config(tmp_path / "single", model_dir, batch_size=8)
    train(parse_config(single))

    double = run_config(tmp_path / "double", model_dir, batch_size=4)
    mp.spawn(_worker, args=(2, free_port(), double), nprocs=2, join=True)

    start = load_file(model_dir / "model.safetensors")
    one = load_file(tmp_path / "single" / "model" / "model.safetensors")
    two = load_file(tmp_path / "double" / "model" / "model.safetensors")
    assert one.keys() == two.keys()
    moved = 0
    for name in one:
        # Float sums in another order differ by ~1e-6; one Adam step at this lr moves a weight by ~1e-3,
        # so a tolerance of 1e-5 still fails on any real difference in data, loss scaling or averaging.
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)
        moved += not torch.equal(one[name], start[name])
    assert moved == len(one)  # training changed every tensor, so the comparison means something
