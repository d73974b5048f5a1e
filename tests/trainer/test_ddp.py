"""Two torchrun workers (DDP over gloo), started as the operator's Indexed Job starts them, with batch 4 make
the same updates as one process with batch 8."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import torch
from floe_operator.api.finetunejob import FineTuneJobSpec
from floe_operator.builders import finetunejob as b
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
    spec = parse_config({"version": "v1", "model": {"scratch": {"shape": "tiny"}},
                         "dataset": {"file": {"path": str(NEWS_CSV)}}})
    prepared = data.load(spec.dataset)
    tokenizer = train_tokenizer(prepared.train.documents[:150] + prepared.train.summaries[:150], 800, root / "tok")
    config = T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      dropout_rate=0.0, **SHAPES["tiny"])
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    return root / "base"


TRAINING = {"epochs": 1, "learningRate": 1e-3, "sourceMaxLength": 64, "targetMaxLength": 32, "maxSteps": 6}


def run_config(root, model_dir, batch_size):
    return job_config(root, model={"path": str(model_dir)},
                      dataset={"file": {"path": str(NEWS_CSV)}, "maxRows": 120},
                      training={**TRAINING, "batchSize": batch_size})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of a container's command."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def rendered_worker(job: dict, index: int, config: Path, volumes: Path, port: int) -> tuple[list[str], dict]:
    """One worker of the operator's Indexed Job as its pod would run it: the container's command and env, with
    the completion index the Job controller gives the pod, its volumes under `volumes`, and the headless
    Service's DNS name of worker 0 (no cluster DNS here) on loopback."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:  # the node rank, from the pod's completion-index annotation
            assert var["valueFrom"]["fieldRef"]["fieldPath"].endswith(f"['{b.COMPLETION_INDEX_ANNOTATION}']")
            env[var["name"]] = str(index)
        else:
            env[var["name"]] = var["value"].replace(b.CACHE_DIR, str(volumes / "cache"))
    assert env["MASTER_ADDR"] == f"{job['spec']['template']['spec']['subdomain']}-0.{job['metadata']['name']}"
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HOME=str(volumes / "home"))
    command = [expand(arg, env).replace(b.TRAINER_CONFIG_PATH, str(config)) for arg in container["command"]]
    return command, env


def test_two_torchrun_workers_as_the_operator_renders_them_equal_one_process(tmp_path):
    """The multi-node path end to end on CPU: the Indexed Job's command and env (torchrun, rendezvous on
    worker 0, node rank from the completion index), two nodes of one gloo process each with batch 4, train
    the same model as one process with batch 8."""
    model_dir = make_dropout_free_model(tmp_path)
    single = run_config(tmp_path / "single", model_dir, batch_size=8)
    train(parse_config(single))

    spec = FineTuneJobSpec.model_validate({
        "model": {"path": str(model_dir)}, "dataset": {"file": {"path": str(NEWS_CSV)}, "maxRows": 120},
        "training": {**TRAINING, "batchSize": 4}, "evaluation": {"rouge": False},
        "resources": {"workers": 2, "gpus": 0}})
    target = b.TrainerTarget(namespace="team-a", name="ddp", uid="uid-1", image="trainer")
    config = b.trainer_config(target, spec)
    config.update(checkpoint={**config["checkpoint"], "dir": str(tmp_path / "double" / "checkpoints")},
                  output={"dir": str(tmp_path / "double" / "model")}, metricsPort=0)
    config_file = tmp_path / "job.json"
    config_file.write_text(json.dumps(config))
    job = b.job(target, spec)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2

    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # floe-train and torchrun
    workers = []
    for index in range(2):
        command, env = rendered_worker(job, index, config_file, tmp_path / f"node{index}", port)
        assert command[:2] == ["torchrun", "--nnodes=2"] and f"--node-rank={index}" in command
        workers.append(subprocess.Popen(command, env={**os.environ, **env, "PATH": path}, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

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
